"""COVID-CT-MD adapter on the real sample series and label arrays, and on small DICOM fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from covid19_images.problems import ProblemLog
from covid19_images.records import make_uid
from covid19_images.sources import get_adapter, ingest
from tests.ct_dicom import make_ct

FOLDER = "covid-ct-md"
P001 = "Sample data/COVID-19 subjects/P001"


@pytest.fixture(scope="module")
def result(shared_sources: Path):  # type: ignore[no-untyped-def]
    return ingest("covid-ct-md", mirror=shared_sources)


def test_the_sample_subject_is_one_volume_record(shared_sources: Path, result) -> None:  # type: ignore[no-untyped-def]
    root = shared_sources / FOLDER
    assert len(result.records) == 1
    record = result.records[0]
    assert record.path_raw == P001
    assert record.uid == make_uid("covid-ct-md", f"{P001}#{record.series_id}")
    assert (record.patient_id, record.label, record.finding_raw, record.label_origin) == (
        "covid-ct-md:P001",
        "covid19",
        "COVID-19 subjects",
        "folder",
    )
    assert (record.modality, record.view, record.age, record.sex) == ("CT", "AXIAL", 39.0, "M")
    attrs = record.attributes
    assert attrs["format"] == "dicom-series" and attrs["hu"] is True and attrs["derived"] is False
    assert attrs["slice_spacing"] == pytest.approx(2.0)
    assert len(attrs["files"]) == 148
    assert {f for f in attrs["files"]} == {
        p.relative_to(root).as_posix() for p in (root / P001).glob("*.dcm")
    }
    assert record.source_row == 1 and attrs["label_row"] == 0 and attrs["label_index"] == "0"


def test_index_subjects_without_folders_are_missing_files(result) -> None:  # type: ignore[no-untyped-def]
    problems = list(result.problems)
    assert {p.kind for p in problems} == {"missing-file"}
    assert len(problems) == 78
    assert all(p.action == "skipped" for p in problems)
    assert sorted(p.row for p in problems if p.row is not None) == list(range(2, 80))
    files = {p.file for p in problems}
    assert "COVID-19 subjects/P002" in files and "CAP subjects/cap025" in files


def _slice_locations(root: Path, files: list[str]) -> list[float]:
    return [float(pydicom.dcmread(root / f, stop_before_pixels=True).SliceLocation) for f in files]


def test_slice_labels_are_aligned_with_the_files(shared_sources: Path, result) -> None:  # type: ignore[no-untyped-def]
    """Upstream column k is the k-th slice from the head (Slice Location descending)."""
    root = shared_sources / FOLDER
    record = result.records[0]
    files = record.attributes["files"]
    raw = np.load(root / "Slice-level-labels.npy")[0]
    lobes = np.load(root / "Lobe-level-labels.npy")[0]
    locations = _slice_locations(root, files)
    assert locations == sorted(locations)  # files and labels run from the feet to the head
    rank = {loc: k for k, loc in enumerate(sorted(locations, reverse=True))}
    assert record.attributes["slice_labels"] == [int(raw[rank[loc]]) for loc in locations]
    assert record.attributes["lobe_labels"] == [
        lobes[rank[loc]].astype(int).tolist() for loc in locations
    ]
    assert record.attributes["slice_labels_order"] == "inferior-to-superior"
    assert sum(record.attributes["slice_labels"]) == int(raw.sum()) == 39
    assert record.attributes["lobe_names"] == ["LLL", "LUL", "RLL", "RML", "RUL"]
    assert "slice-labels" in record.tags and "labels-update-1" not in record.tags


def test_label_columns_run_from_head_to_feet(shared_sources: Path) -> None:
    """The evidence for the order: lower-lobe labels sit in later columns than upper-lobe ones."""
    lobes = np.load(shared_sources / FOLDER / "Lobe-level-labels.npy")
    later = earlier = 0
    for case in lobes:
        lower = np.flatnonzero(case[:, [0, 2]].any(axis=1))
        upper = np.flatnonzero(case[:, [1, 4]].any(axis=1))
        if lower.size and upper.size:
            later += lower.mean() > upper.mean()
            earlier += lower.mean() < upper.mean()
    assert (later, earlier) == (47, 0)


def test_file_names_do_not_follow_the_slice_order(shared_sources: Path) -> None:
    folder = shared_sources / FOLDER / P001
    header = pydicom.dcmread(folder / "98C14734-ASSH_2.dcm", stop_before_pixels=True)
    assert int(header.InstanceNumber) == 10


# Fixtures -------------------------------------------------------------------------------------


def _dicom(path: Path, series: str, z: float, *, age: str = "045Y", sex: str = "F") -> None:
    make_ct(
        path,
        series_uid=series,
        z=z,
        size=(4, 4),
        series_number=2,
        PatientAge=age,
        PatientSex=sex,
        InstanceNumber=int(100 - z),
        SliceLocation=z,
    )


def _subject(folder: Path, slices: int, **header: str) -> None:
    series = generate_uid()
    for k in range(slices):  # names in reverse position order, as the names are not the order
        _dicom(folder / f"X_{slices - k}.dcm", series, 2.0 * k, **header)


INDEX = (
    "Label Index,Diagnosis,Relative Path,Folder/ID\n"
    "0,COVID-19,./COVID-19/,P001\n"
    "2,CAP,./CAP/,cap001\n"
    "3,CAP,./CAP/,cap002\n"
    "4,COVID-19,./COVID-19/,P009\n"
)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "COVID-CT-MD"
    _subject(root / "COVID-19 subjects" / "P001", 4, age="061Y", sex="M")
    _subject(root / "Sample data" / "COVID-19 subjects" / "P001", 2)
    _subject(root / "CAP subjects" / "cap001", 3)
    _subject(root / "Normal subjects" / "cap002", 3)
    _subject(root / "Normal subjects" / "normal001", 3)
    _dicom(root / "stray.dcm", generate_uid(), 0.0)
    (root / "Index.csv").write_text(INDEX)
    original = np.zeros((4, 6), np.int64)
    updated = np.zeros((4, 6), np.int64)
    updated[0, :4] = [1, 1, 0, 0]  # P001: the two most superior slices
    updated[1, :3] = [0, 1, 0]
    updated[2, 4] = 1  # cap002: a label past its 3 slices
    lobes = np.zeros((4, 6, 5))
    lobes[0, 0, 4] = 1  # P001: RUL in the most superior slice
    np.save(root / "Slice-level-labels.npy", original)
    np.save(root / "Slice-level-labels-updated-1.npy", updated)
    np.save(root / "Lobe-level-labels.npy", lobes)
    return root


def test_full_layout_labels_classes_and_problems(dataset: Path) -> None:
    log = ProblemLog()
    records = {r.patient_id: r for r in get_adapter("covid-ct-md").records(dataset, log)}
    assert set(records) == {
        "covid-ct-md:P001",
        "covid-ct-md:cap001",
        "covid-ct-md:cap002",
        "covid-ct-md:normal001",
    }
    p001 = records["covid-ct-md:P001"]
    assert p001.path_raw == "COVID-19 subjects/P001"
    assert (p001.label, p001.age, p001.sex) == ("covid19", 61.0, "M")
    files = p001.attributes["files"]
    locations = _slice_locations(dataset, files)
    assert locations == sorted(locations)  # inferior to superior
    assert p001.attributes["slice_labels"] == [0, 0, 1, 1]
    assert p001.attributes["lobe_labels"][-1] == [0, 0, 0, 0, 1]
    assert "labels-update-1" in p001.tags
    assert p001.attributes["label_files"] == [
        "Slice-level-labels-updated-1.npy",
        "Lobe-level-labels.npy",
    ]
    cap = records["covid-ct-md:cap001"]
    assert (cap.label, cap.attributes["label_row"], cap.attributes["label_index"]) == (
        "cap",
        1,
        "2",
    )
    assert cap.attributes["slice_labels"] == [0, 1, 0]
    normal = records["covid-ct-md:normal001"]
    assert normal.label == "normal" and "slice_labels" not in normal.attributes
    mismatch = records["covid-ct-md:cap002"]
    assert mismatch.label == "normal" and mismatch.problems.count("bad-value") == 2
    assert sorted((p.kind, p.file, p.action) for p in log) == [
        ("bad-value", "Normal subjects/cap002", "kept"),
        ("bad-value", "Normal subjects/cap002", "kept"),
        ("duplicate", "Sample data/COVID-19 subjects/P001", "skipped"),
        ("missing-file", "COVID-19 subjects/P009", "skipped"),
        ("orphan-file", "stray.dcm", "skipped"),
    ]


def test_broken_label_files_and_index_are_problems(dataset: Path) -> None:
    (dataset / "Slice-level-labels-updated-1.npy").write_bytes(b"not numpy")
    (dataset / "Lobe-level-labels.npy").unlink()
    (dataset / "Index.csv").write_text("Folder/ID\nP001\n")
    log = ProblemLog()
    records = get_adapter("covid-ct-md").records(dataset, log)
    assert len(records) == 4
    assert not any("slice_labels" in r.attributes for r in records)
    kinds = sorted(p.kind for p in log)
    assert kinds == ["duplicate", "missing-column", "orphan-file", "unreadable-metadata"]


def test_empty_source_folder(tmp_path: Path) -> None:
    log = ProblemLog()
    assert get_adapter("covid-ct-md").records(tmp_path, log) == []
    assert [p.kind for p in log] == ["unreadable-metadata"]
