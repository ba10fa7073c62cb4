"""MosMedData adapter on the real registry and masks, and on tiny NIfTI fixtures."""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from covid19_images.problems import ProblemLog
from covid19_images.sources import get_adapter, ingest

FOLDER = "mosmeddata"


@pytest.fixture(scope="module")
def result(shared_sources: Path):  # type: ignore[no-untyped-def]
    return ingest("mosmeddata", mirror=shared_sources)


def test_real_mirror_without_studies_gives_one_problem_per_row(
    shared_sources: Path, result
) -> None:  # type: ignore[no-untyped-def]
    assert result.records == []
    problems = list(result.problems)
    missing = [p for p in problems if p.kind == "missing-study"]
    assert len(missing) == 1110
    assert all(p.action == "skipped" and p.row is not None for p in missing)
    with_mask = [p for p in missing if "mask" in p.detail]
    assert len(with_mask) == 50
    assert all("is present" in p.detail for p in with_mask)
    masks = {
        p.relative_to(shared_sources / FOLDER).as_posix()
        for p in (shared_sources / FOLDER / "masks").iterdir()
    }
    assert {p.detail.split("its mask ")[1].split(" ")[0] for p in with_mask} == masks
    assert [(p.kind, p.action) for p in problems if p.kind != "missing-study"] == [
        ("bom", "repaired")
    ]
    assert {p.file for p in missing} >= {"studies/CT-0/study_0001.nii.gz"}


def _nifti(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(values, np.diag([0.8, 0.8, 8.0, 1.0])), str(path))


def _mirror(root: Path, registry: str, *, name: str = "dataset_registry.csv") -> Path:
    _nifti(root / "studies/CT-0/study_0001.nii.gz", np.full((4, 4, 2), -1000, np.int16))
    _nifti(root / "studies/CT-1/study_0002.nii.gz", np.full((4, 4, 2), -800, np.int16))
    _nifti(root / "masks/study_0002_mask.nii.gz", np.ones((4, 4, 2), np.int16))
    _nifti(root / "masks/study_0009_mask.nii.gz", np.zeros((4, 4, 2), np.int16))
    if name.endswith(".csv"):
        (root / name).write_bytes(registry.encode("utf-8"))
    else:
        frame = pd.read_csv(io.StringIO(registry), dtype=str, keep_default_na=False)
        frame.to_excel(root / name, index=False)
    return root


REGISTRY = (
    "study_id,category,study_file,mask_file\r\n"
    "1,CT-0,/studies/CT-0/study_0001.nii.gz,\r\n"
    "2,CT-1,/studies/CT-1/study_0002.nii.gz,/masks/study_0002_mask.nii.gz\r\n"
    "3,CT-2,/studies/CT-2/study_0003.nii.gz,\r\n"
)


@pytest.mark.parametrize("name", ["dataset_registry.csv", "dataset_registry.xlsx"])
def test_present_studies_become_volume_records(tmp_path: Path, name: str) -> None:
    root = _mirror(tmp_path, REGISTRY, name=name)
    log = ProblemLog()
    records = {r.path_raw: r for r in get_adapter("mosmeddata").records(root, log)}
    assert set(records) == {"studies/CT-0/study_0001.nii.gz", "studies/CT-1/study_0002.nii.gz"}
    normal = records["studies/CT-0/study_0001.nii.gz"]
    covid = records["studies/CT-1/study_0002.nii.gz"]
    assert (normal.label, normal.severity, normal.patient_id) == ("normal", "ct0", "mosmeddata:1")
    assert (covid.label, covid.severity, covid.label_origin) == ("covid19", "ct1", "metadata")
    assert covid.mask_paths == ["masks/study_0002_mask.nii.gz"]
    assert covid.attributes["mask_maps"] == ["mosmed"]
    assert normal.mask_paths == [] and "mask_maps" not in normal.attributes
    for record in records.values():
        assert record.modality == "CT" and record.view == "AXIAL"
        assert record.attributes["format"] == "nifti" and record.attributes["hu"] is True
        assert record.license == "CC-BY-NC-ND-3.0"
        assert (root / record.path_raw).is_file()
    kinds = sorted((p.kind, p.file, p.action) for p in log)
    assert kinds == [
        ("missing-study", "studies/CT-2/study_0003.nii.gz", "skipped"),
        ("orphan-file", "masks/study_0009_mask.nii.gz", "skipped"),
    ]
    assert "mask" not in next(p.detail for p in log if p.kind == "missing-study")


def test_bad_rows_are_problems_not_crashes(tmp_path: Path) -> None:
    registry = (
        "\ufeffstudy_id,category,study_file,mask_file\n"
        "1,CT-9,/studies/CT-0/study_0001.nii.gz,/masks/study_0001_mask.nii.gz\n"
        "1,CT-0,/studies/CT-0/study_0001.nii.gz,\n"
        "7,CT-1,,\n"
    )
    root = _mirror(tmp_path, registry)
    log = ProblemLog()
    records = get_adapter("mosmeddata").records(root, log)
    assert [(r.path_raw, r.label, r.severity) for r in records] == [
        ("studies/CT-0/study_0001.nii.gz", "unknown", None)
    ]
    assert records[0].problems == ["unmapped-finding", "missing-file"]
    assert sorted((p.kind, p.row) for p in log) == [
        ("bad-value", 3),
        ("bom", None),
        ("duplicate-row", 2),
        ("missing-file", 1),
        ("orphan-file", None),
        ("orphan-file", None),
        ("orphan-file", None),
        ("unmapped-finding", 1),
    ]


def test_missing_or_broken_registry(tmp_path: Path) -> None:
    root = tmp_path / "none"
    _nifti(root / "masks/study_0002_mask.nii.gz", np.ones((2, 2, 1), np.int16))
    log = ProblemLog()
    assert get_adapter("mosmeddata").records(root, log) == []
    assert sorted(p.kind for p in log) == ["orphan-file", "unreadable-metadata"]

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dataset_registry.csv").write_text("id,what\n1,2\n")
    log = ProblemLog()
    assert get_adapter("mosmeddata").records(broken, log) == []
    assert [p.kind for p in log] == ["missing-column"]
