"""COVID-19-CT-Seg (Zenodo 3757476) adapter on generated upstream layouts."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from covid19_images.problems import ProblemLog
from covid19_images.process.ct.pipeline import process_volumes
from covid19_images.records import Record
from covid19_images.sources import get_adapter

IMAGES = "COVID-19-CT-Seg_20cases"
MASK_FOLDERS = ("Lung_Mask", "Infection_Mask", "Lung_and_Infection_Mask")
AFFINE = np.diag([-0.8, -0.8, 2.5, 1.0])


def _nifti(path: Path, data: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = data if data is not None else np.zeros((6, 6, 3), np.int16)
    nib.save(nib.Nifti1Image(array, AFFINE), path)


def _case(root: Path, name: str, folders: tuple[str, ...] = MASK_FOLDERS) -> None:
    _nifti(root / IMAGES / name)
    for folder in folders:
        _nifti(root / folder / name, np.zeros((6, 6, 3), np.uint8))


def _by_name(root: Path, log: ProblemLog) -> dict[str, Record]:
    return {Path(r.path_raw).name: r for r in get_adapter("zenodo-ct-seg").records(root, log)}


def test_full_layout(tmp_path: Path) -> None:
    names = [
        "coronacases_001.nii.gz",
        "coronacases_010.nii.gz",
        "radiopaedia_10_85902_1.nii.gz",
        "radiopaedia_10_85902_3.nii.gz",
        "radiopaedia_29_86490_1.nii.gz",
        "radiopaedia_29_86491_1.nii.gz",
    ]
    for name in names:
        _case(tmp_path, name)
    log = ProblemLog()
    records = {
        Path(r.path_raw).name: r for r in get_adapter("zenodo-ct-seg").records(tmp_path, log)
    }
    assert len(log) == 0
    assert sorted(records) == names
    got = {
        name: (r.patient_id, r.study_id, r.series_id, r.attributes["hu"], r.tags)
        for name, r in records.items()
    }
    assert got == {
        "coronacases_001.nii.gz": ("zenodo-ct-seg:coronacases_001", None, None, True, []),
        "coronacases_010.nii.gz": ("zenodo-ct-seg:coronacases_010", None, None, True, []),
        "radiopaedia_10_85902_1.nii.gz": (
            "zenodo-ct-seg:radiopaedia_10",
            "10_85902",
            "1",
            False,
            ["not-hu"],
        ),
        "radiopaedia_10_85902_3.nii.gz": (
            "zenodo-ct-seg:radiopaedia_10",
            "10_85902",
            "3",
            False,
            ["not-hu"],
        ),
        "radiopaedia_29_86490_1.nii.gz": (
            "zenodo-ct-seg:radiopaedia_29",
            "29_86490",
            "1",
            False,
            ["not-hu"],
        ),
        "radiopaedia_29_86491_1.nii.gz": (
            "zenodo-ct-seg:radiopaedia_29",
            "29_86491",
            "1",
            False,
            ["not-hu"],
        ),
    }
    for name, record in records.items():
        assert record.path_raw == f"{IMAGES}/{name}"
        assert record.mask_paths == [f"{folder}/{name}" for folder in MASK_FOLDERS]
        assert record.attributes["mask_maps"] == [
            "zenodo-lung",
            "zenodo-infection",
            "zenodo-lung-infection",
        ]
        assert record.attributes["format"] == "nifti"
        assert (record.label, record.label_origin, record.finding_raw) == (
            "covid19",
            "metadata",
            "COVID-19",
        )
        assert (record.modality, record.view, record.license) == ("CT", "AXIAL", "CC-BY-4.0")
    assert records["radiopaedia_10_85902_1.nii.gz"].attributes["scaled_from_window"] == [
        -1250.0,
        250.0,
    ]
    assert "scaled_from_window" not in records["coronacases_001.nii.gz"].attributes


def test_missing_masks_orphans_and_odd_names(tmp_path: Path) -> None:
    _case(tmp_path, "coronacases_001.nii.gz", ("Lung_and_Infection_Mask", "Lung_Mask"))
    _case(tmp_path, "coronacases_002.nii.gz", ("Lung_Mask",))  # required mask set absent
    _case(tmp_path, "scan.nii.gz", ("Lung_and_Infection_Mask",))  # name of neither form
    _nifti(tmp_path / "Lung_Mask" / "coronacases_003.nii.gz")  # mask, no image
    _nifti(tmp_path / "Infection_Mask.nii.gz")  # a stray file at the top
    log = ProblemLog()
    records = {
        Path(r.path_raw).name: r for r in get_adapter("zenodo-ct-seg").records(tmp_path, log)
    }
    assert sorted(records) == ["coronacases_001.nii.gz", "coronacases_002.nii.gz", "scan.nii.gz"]
    first = records["coronacases_001.nii.gz"]
    assert first.mask_paths == [
        "Lung_Mask/coronacases_001.nii.gz",
        "Lung_and_Infection_Mask/coronacases_001.nii.gz",
    ]
    assert first.attributes["mask_maps"] == ["zenodo-lung", "zenodo-lung-infection"]
    assert records["coronacases_002.nii.gz"].attributes["mask_maps"] == ["zenodo-lung"]
    odd = records["scan.nii.gz"]
    assert (odd.patient_id, odd.attributes["hu"], odd.problems) == (None, None, ["bad-value"])
    assert odd.label == "covid19"
    assert sorted((p.kind, p.action, p.file) for p in log) == [
        ("bad-value", "kept", f"{IMAGES}/scan.nii.gz"),
        ("missing-file", "kept", "Lung_Mask/scan.nii.gz"),
        ("missing-file", "kept", "Lung_and_Infection_Mask/coronacases_002.nii.gz"),
        ("missing-study", "skipped", "Lung_Mask/coronacases_003.nii.gz"),
        ("orphan-file", "skipped", "Infection_Mask.nii.gz"),
    ]


def test_volumes_and_masks_through_the_ct_pipeline(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _nifti(raw / IMAGES / "coronacases_001.nii.gz", np.full((6, 6, 3), -900, np.int16))
    both = np.zeros((6, 6, 3), np.uint8)
    both[:3, :, :] = 2  # right lung (upstream 2)
    both[3:, :, :] = 1  # left lung (upstream 1)
    both[1, 1, 1] = 3  # infection
    _nifti(raw / "Lung_and_Infection_Mask" / "coronacases_001.nii.gz", both)
    lungs = np.where(both == 3, 2, both).astype(np.uint8)
    _nifti(raw / "Lung_Mask" / "coronacases_001.nii.gz", lungs)
    _nifti(
        raw / IMAGES / "radiopaedia_4_85506_1.nii.gz",
        np.linspace(0, 255, 108).reshape(6, 6, 3).astype(np.float32),
    )
    _nifti(raw / "Lung_and_Infection_Mask" / "radiopaedia_4_85506_1.nii.gz", both)
    records = get_adapter("zenodo-ct-seg").records(raw, ProblemLog())
    log = ProblemLog()
    kept = {
        Path(r.path_raw).name: r
        for r in process_volumes(records, {"zenodo-ct-seg": raw}, tmp_path / "cache", log=log)
    }
    assert len(log) == 0
    corona = kept["coronacases_001.nii.gz"]
    assert corona.attributes["mask_labels"] == [1, 2, 3] and corona.attributes["hu"] is True
    radio = kept["radiopaedia_4_85506_1.nii.gz"]
    assert radio.attributes["hu"] is False and radio.tags == ["not-hu"]
    assert radio.attributes["mask_labels"] == [1, 2, 3]
