"""MedSeg datasets nr. 1 (slices) and nr. 2 (volumes) on generated upstream layouts."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from covid19_images.problems import ProblemLog
from covid19_images.process.ct.pipeline import process_volumes
from covid19_images.records import make_uid
from covid19_images.sources import get_adapter

AFFINE = np.diag([-0.7, -0.7, 5.0, 1.0])


def _nifti(path: Path, shape: tuple[int, ...], values: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = values if values is not None else np.zeros(shape, np.int16)
    nib.save(nib.Nifti1Image(data, AFFINE), path)


def _sorted_problems(log: ProblemLog) -> list[tuple[str, str, str]]:
    return sorted((p.kind, p.action, p.file) for p in log)


def test_slices_one_record_per_slice(tmp_path: Path) -> None:
    _nifti(tmp_path / "tr_im.nii.gz", (8, 8, 4))
    _nifti(tmp_path / "tr_mask.nii.gz", (8, 8, 4))
    _nifti(tmp_path / "tr_lungmasks_updated.nii.gz", (8, 8, 4))
    _nifti(tmp_path / "val_im.nii.gz", (8, 8, 2))
    (tmp_path / "Test-Images-Clinical-Details.csv").write_text("a,b\n1,2\n")
    log = ProblemLog()
    records = get_adapter("medseg-slices").records(tmp_path, log)
    assert len(log) == 0
    assert len(records) == 6
    assert len({r.uid for r in records}) == 6
    train = [r for r in records if r.upstream_split == "train"]
    test = [r for r in records if r.upstream_split == "test"]
    assert [r.attributes["slice_index"] for r in train] == [0, 1, 2, 3]
    assert [r.attributes["slice_index"] for r in test] == [0, 1]
    for record in train:
        k = record.attributes["slice_index"]
        assert record.path_raw == "tr_im.nii.gz"
        assert record.uid == make_uid("medseg-slices", f"tr_im.nii.gz#{k}")
        assert record.mask_paths == ["tr_lungmasks_updated.nii.gz", "tr_mask.nii.gz"]
        assert record.attributes["mask_maps"] == ["medseg-lung", "medseg"]
    for record in test:
        assert record.path_raw == "val_im.nii.gz" and record.mask_paths == []
        assert record.attributes["mask_maps"] == []
    for record in records:
        assert (record.modality, record.view, record.label) == ("CT", "AXIAL", "covid19")
        assert (record.finding_raw, record.label_origin) == ("COVID-19", "metadata")
        assert record.patient_id is None
        assert record.tags == ["patient-unknown", "approximate-hu"]
        assert record.attributes["format"] == "nifti" and record.attributes["hu"] is True
        assert record.license == "CC0-1.0"


def test_slices_mask_without_image_and_image_without_mask(tmp_path: Path) -> None:
    _nifti(tmp_path / "tr_mask.nii.gz", (8, 8, 4))
    _nifti(tmp_path / "val_im.nii.gz", (8, 8, 2))
    log = ProblemLog()
    records = get_adapter("medseg-slices").records(tmp_path, log)
    assert [r.path_raw for r in records] == ["val_im.nii.gz"] * 2
    assert _sorted_problems(log) == [("missing-study", "skipped", "tr_mask.nii.gz")]

    other = tmp_path / "images-only"
    _nifti(other / "tr_im.nii.gz", (8, 8, 3))
    log = ProblemLog()
    records = get_adapter("medseg-slices").records(other, log)
    assert len(records) == 3 and all(r.mask_paths == [] for r in records)
    assert _sorted_problems(log) == [("missing-file", "kept", "tr_mask.nii.gz")]


def test_slices_mismatched_mask_corrupt_stack_and_strays(tmp_path: Path) -> None:
    _nifti(tmp_path / "tr_im.nii.gz", (8, 8, 4))
    _nifti(tmp_path / "tr_mask.nii.gz", (8, 8, 5))  # one slice too many
    _nifti(tmp_path / "tr_lungmasks_updated.nii.gz", (8, 8, 4))
    (tmp_path / "val_im.nii.gz").write_bytes(b"not a nifti file at all")
    _nifti(tmp_path / "extra" / "copy.nii.gz", (8, 8, 4))
    log = ProblemLog()
    records = get_adapter("medseg-slices").records(tmp_path, log)
    assert len(records) == 4
    assert all(r.mask_paths == ["tr_lungmasks_updated.nii.gz"] for r in records)
    assert all(r.attributes["mask_maps"] == ["medseg-lung"] for r in records)
    assert _sorted_problems(log) == [
        ("mask-mismatch", "kept", "tr_mask.nii.gz"),
        ("orphan-file", "skipped", "extra/copy.nii.gz"),
        ("unreadable-file", "skipped", "val_im.nii.gz"),
    ]


def test_slices_through_the_ct_pipeline(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    image = np.full((8, 8, 3), -700, np.int16)
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[2:4, 2:4, 1] = 1  # ground-glass on slice 1
    mask[5, 5, 1] = 3  # effusion
    mask[0, 0, 2] = 2  # consolidation on slice 2
    _nifti(raw / "tr_im.nii.gz", image.shape, image)
    _nifti(raw / "tr_mask.nii.gz", mask.shape, mask)
    records = get_adapter("medseg-slices").records(raw, ProblemLog())
    log = ProblemLog()
    kept = process_volumes(records, {"medseg-slices": raw}, tmp_path / "cache", log=log)
    assert len(log) == 0 and len(kept) == 3
    labels = {r.attributes["slice_index"]: r.attributes["mask_labels"] for r in kept}
    assert labels == {0: [0], 1: [0, 4, 6], 2: [0, 5]}
    assert all(r.depth == 1 and r.attributes["hu"] is True for r in kept)


def _volumes_layout(root: Path, names: list[str]) -> None:
    for name in names:
        for folder in ("rp_im", "rp_msk", "rp_lung_msk"):
            _nifti(root / folder / name, (6, 6, 3))


def test_volumes_one_record_per_volume(tmp_path: Path) -> None:
    _volumes_layout(tmp_path, ["1.nii.gz", "2.nii.gz", "10.nii.gz"])
    log = ProblemLog()
    records = get_adapter("medseg-volumes").records(tmp_path, log)
    assert len(log) == 0
    assert [r.path_raw for r in records] == ["rp_im/1.nii.gz", "rp_im/2.nii.gz", "rp_im/10.nii.gz"]
    assert [r.study_id for r in records] == ["1", "2", "10"]
    for record in records:
        name = Path(record.path_raw).name
        assert record.uid == make_uid("medseg-volumes", record.path_raw)
        assert record.mask_paths == [f"rp_lung_msk/{name}", f"rp_msk/{name}"]
        assert record.attributes == {
            "format": "nifti",
            "hu": False,
            "mask_maps": ["medseg-lung", "medseg"],
        }
        assert record.tags == ["patient-unknown", "not-hu"]
        assert (record.label, record.modality, record.view) == ("covid19", "CT", "AXIAL")
        assert record.patient_id is None and record.license is None


def test_volumes_missing_masks_and_orphan_masks(tmp_path: Path) -> None:
    _volumes_layout(tmp_path, ["1.nii.gz"])
    _nifti(tmp_path / "rp_im" / "2.nii.gz", (6, 6, 3))  # no masks at all
    _nifti(tmp_path / "rp_lung_msk" / "3.nii.gz", (6, 6, 3))  # no image
    _nifti(tmp_path / "rp_msk" / "3.nii.gz", (6, 6, 3))
    _nifti(tmp_path / "other" / "4.nii.gz", (6, 6, 3))
    log = ProblemLog()
    records = {r.path_raw: r for r in get_adapter("medseg-volumes").records(tmp_path, log)}
    assert sorted(records) == ["rp_im/1.nii.gz", "rp_im/2.nii.gz"]
    assert records["rp_im/2.nii.gz"].mask_paths == []
    assert records["rp_im/2.nii.gz"].attributes["mask_maps"] == []
    assert _sorted_problems(log) == [
        ("missing-file", "kept", "rp_lung_msk/2.nii.gz"),
        ("missing-file", "kept", "rp_msk/2.nii.gz"),
        ("missing-study", "skipped", "rp_lung_msk/3.nii.gz"),
        ("missing-study", "skipped", "rp_msk/3.nii.gz"),
        ("orphan-file", "skipped", "other/4.nii.gz"),
    ]


def test_empty_folders_give_no_records(tmp_path: Path) -> None:
    log = ProblemLog()
    assert get_adapter("medseg-volumes").records(tmp_path, log) == []
    assert len(log) == 0
    assert get_adapter("medseg-slices").records(tmp_path / "absent", log) == []
