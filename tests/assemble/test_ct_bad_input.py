"""A CT build over bad DICOM input: each bad case is a problem with a reason, the rest is built.

The COVID-CT-MD layout is generated in ``tmp_path`` with one subject per kind of trouble: a
missing slice in the middle, two series in one folder, a truncated file and a file without pixel
data beside a good series, and a series in a transfer syntax nothing here decodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    generate_uid,
)

from covid19_images.assemble.build import BuildResult, build
from covid19_images.audit import audit_dataset
from covid19_images.process.executor import LocalExecutor
from tests.ct_dicom import make_ct, series

SUBJECTS = {
    "P001": "COVID-19",
    "P002": "COVID-19",
    "P003": "COVID-19",
    "P004": "CAP",
    "P005": "CAP",
    "P006": "Normal",
}


def _dicomdir(path: Path) -> None:
    """A DICOMDIR: an index of a media's files, a DICOM file with no image."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "CT"
    ds.DirectoryRecordSequence = []
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror") / "covid-ct-md"
    base = root / "Sample data"
    folder = {s: base / f"{d} subjects" / s for s, d in SUBJECTS.items()}
    rows = ["Label Index,Diagnosis,Relative Path,Folder/ID"]
    rows += [f"{i},{d},./{d}/,{s}" for i, (s, d) in enumerate(SUBJECTS.items())]
    root.mkdir(parents=True)
    (root / "Index.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    np.save(root / "Slice-level-labels.npy", np.zeros((len(SUBJECTS), 40), dtype=np.int64))
    np.save(root / "Lobe-level-labels.npy", np.zeros((len(SUBJECTS), 40, 5), dtype=np.int64))

    series(folder["P001"], 8)
    series(folder["P002"], 9, skip=[4])  # a slice missing in the middle
    series(folder["P003"], 6, prefix="a")  # two series mixed in one folder
    series(folder["P003"], 5, prefix="b", series_number=4)
    series(folder["P004"], 7)
    truncated = folder["P004"] / "cut.dcm"  # the header ends mid-element
    make_ct(truncated, series_uid=generate_uid(), z=100.0)
    truncated.write_bytes(truncated.read_bytes()[:300])
    cut_pixels = folder["P004"] / "cut-pixels.dcm"  # the pixel data ends early
    make_ct(cut_pixels, series_uid=generate_uid(), z=100.0)
    cut_pixels.write_bytes(cut_pixels.read_bytes()[:-100])
    _dicomdir(folder["P004"] / "DICOMDIR")
    uid = series(folder["P005"], 4)
    for path in folder["P005"].iterdir():
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = UID("1.2.826.0.1.3680043.2.1143.999")
        ds.save_as(path, enforce_file_format=True)
    assert uid
    series(folder["P006"], 8, pixels=np.arange(256, dtype=np.uint16).reshape(16, 16))
    return root.parent


@pytest.fixture(scope="module")
def built(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    work = tmp_path_factory.mktemp("work")
    return build(
        "ct-covid",
        out=work / "out",
        mirror=mirror,
        root=work / "root",
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
    )


def test_the_good_volumes_are_built(built: BuildResult) -> None:
    volumes = built.manifest[built.manifest["level"] == "volume"]
    per_patient = volumes.groupby("patient_id")["depth"].apply(sorted).to_dict()
    assert per_patient == {
        "covid-ct-md:P001": [8],
        "covid-ct-md:P002": [8],  # read across the gap, with a problem
        "covid-ct-md:P003": [5, 6],  # two volumes, never one stack
        "covid-ct-md:P004": [7],
        "covid-ct-md:P006": [8],
    }
    p003 = volumes[volumes["patient_id"] == "covid-ct-md:P003"]
    assert p003["split"].nunique() == 1
    assert not audit_dataset(built.path).leakage


def test_every_bad_case_is_a_problem_with_a_reason(built: BuildResult) -> None:
    problems = pd.read_csv(built.path / "problems.csv")
    ours = problems[problems["source"] == "covid-ct-md"]

    def one(kind: str, where: str) -> pd.Series:
        rows = ours[(ours["kind"] == kind) & ours["file"].str.contains(where, regex=False)]
        assert len(rows) >= 1, f"no {kind} problem for {where}: {ours.to_dict('records')}"
        return rows.iloc[0]

    assert one("slice-gap", "P002")["action"] == "kept"
    assert one("unreadable-file", "P004/cut.dcm")["action"] == "skipped"
    assert one("unreadable-file", "P004/cut-pixels.dcm")["action"] == "skipped"
    assert one("no-pixel-data", "P004/DICOMDIR")["action"] == "skipped"
    unsupported = one("unsupported-transfer-syntax", "P005")
    assert unsupported["action"] == "skipped"
    assert "1.2.826.0.1.3680043.2.1143.999" in unsupported["detail"]
