"""`build ct-lesion-seg` on the documented MedSeg and Zenodo layouts (generated fixtures).

The mirror here holds neither collection, so small volumes and masks are written in their
upstream layouts in ``tmp_path``; the build must pair them, keep image and label on one grid,
and write an nnU-Net raw dataset that nnU-Net's own ``verify_dataset_integrity`` accepts.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from covid19_images.assemble.build import BuildResult, build
from covid19_images.audit import audit_dataset
from covid19_images.process.executor import LocalExecutor

SHAPE = (24, 20, 6)


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if affine is None:
        affine = np.diag([0.8, 0.8, 5.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), path)  # type: ignore[no-untyped-call]


def _ct(rng: np.random.Generator, hu: bool) -> np.ndarray:
    if hu:
        return rng.integers(-1024, 600, SHAPE).astype(np.int16)
    return rng.integers(0, 256, SHAPE).astype(np.uint8)  # Radiopaedia-derived: scaled 0-255


def _lesion(rng: np.random.Generator, values: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    for value in values:
        x, y, z = (int(rng.integers(0, s - 4)) for s in SHAPE)
        mask[x : x + 4, y : y + 4, z : z + 2] = value
    return mask


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    rng = np.random.default_rng(0)
    zen = root / "zenodo-ct-seg"
    for name, hu in [
        ("coronacases_001", True),
        ("coronacases_002", True),
        ("coronacases_003", True),
        ("radiopaedia_4_85506_1", False),
        ("radiopaedia_7_85703_0", False),
    ]:
        _save(zen / "COVID-19-CT-Seg_20cases" / f"{name}.nii.gz", _ct(rng, hu))
        lungs = np.zeros(SHAPE, dtype=np.uint8)
        lungs[:12], lungs[12:] = 1, 2
        infection = _lesion(rng, (1,))
        _save(zen / "Lung_Mask" / f"{name}.nii.gz", lungs)
        _save(zen / "Infection_Mask" / f"{name}.nii.gz", infection)
        _save(zen / "Lung_and_Infection_Mask" / f"{name}.nii.gz", np.where(infection, 3, lungs))
    med = root / "medseg-volumes"
    for n in (1, 2, 3, 4):
        _save(med / "rp_im" / f"{n}.nii.gz", _ct(rng, False).astype(np.int16))
        _save(med / "rp_msk" / f"{n}.nii.gz", _lesion(rng, (1, 2, 3)))
        lungs = np.zeros(SHAPE, dtype=np.uint8)
        lungs[:12], lungs[12:] = 1, 2
        _save(med / "rp_lung_msk" / f"{n}.nii.gz", lungs)
    # a mask on another grid than its image: a problem, the rest of the build goes on
    _save(med / "rp_im" / "5.nii.gz", _ct(rng, False).astype(np.int16))
    _save(med / "rp_msk" / "5.nii.gz", np.zeros((10, 10, 3), dtype=np.uint8))
    _save(med / "rp_lung_msk" / "5.nii.gz", np.zeros((10, 10, 3), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def seg(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    work = tmp_path_factory.mktemp("seg")
    return build(
        "ct-lesion-seg",
        out=work / "out",
        mirror=mirror,
        root=work / "root",
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
    )


def test_pairs_share_one_grid_and_the_lesion_label(seg: BuildResult) -> None:
    manifest = seg.manifest
    assert len(manifest) == 9  # 5 Zenodo + 4 MedSeg; case 5's mask does not fit
    assert set(manifest["source"]) == {"zenodo-ct-seg", "medseg-volumes"}
    for row in manifest.itertuples():
        image = nib.load(seg.path / str(row.path))
        label = nib.load(seg.path / str(row.mask_path))
        assert image.shape == label.shape == SHAPE  # type: ignore[attr-defined]
        np.testing.assert_allclose(image.affine, label.affine)  # type: ignore[attr-defined]
        values = set(np.unique(np.asarray(label.dataobj)))  # type: ignore[attr-defined]
        assert values <= {0, 1} and 1 in values
    not_hu = manifest[manifest["tags"].map(lambda t: "not-hu" in list(t))]
    assert set(not_hu["source"]) == {"zenodo-ct-seg", "medseg-volumes"}
    assert len(not_hu) == 6  # the Radiopaedia-derived ones, never treated as HU


def test_a_mask_on_another_grid_is_a_problem(seg: BuildResult) -> None:
    problems = pd.read_csv(seg.path / "problems.csv")
    bad = problems[problems["kind"] == "mask-mismatch"]
    assert len(bad) == 1 and "5.nii.gz" in bad.iloc[0]["file"]


def test_nnunet_folder_is_complete(seg: BuildResult) -> None:
    target = seg.path / "nnunet" / "Dataset501_COVID19Lesion"
    dataset = json.loads((target / "dataset.json").read_text(encoding="utf-8"))
    assert dataset["labels"] == {"background": 0, "lesion": 1}
    assert dataset["channel_names"] == {"0": "CT"} and dataset["file_ending"] == ".nii.gz"
    train = sorted(p.name for p in (target / "imagesTr").iterdir())
    labels = sorted(p.name for p in (target / "labelsTr").iterdir())
    assert dataset["numTraining"] == len(train) == len(labels) > 0
    assert [n.replace("_0000", "") for n in train] == labels
    test_cases = seg.manifest[seg.manifest["split"] == "test"]
    assert len(list((target / "imagesTs").glob("*_0000.nii.gz"))) == len(test_cases)
    folds = json.loads((target / "splits_final.json").read_text(encoding="utf-8"))
    assert sorted(folds[0]["train"] + folds[0]["val"]) == [n[: -len(".nii.gz")] for n in labels]


def test_nnunet_accepts_the_dataset(seg: BuildResult) -> None:
    verify = pytest.importorskip(
        "nnunetv2.experiment_planning.verify_dataset_integrity",
        reason="nnunetv2 is not installed (pip install '.[nnunet]'): nnU-Net's check not run",
    )
    verify.verify_dataset_integrity(
        str(seg.path / "nnunet" / "Dataset501_COVID19Lesion"), num_processes=1
    )


def test_audit_and_datalist(seg: BuildResult) -> None:
    report = audit_dataset(seg.path)
    assert not report.leakage and not report.broken
    datalist = json.loads((seg.path / "datalist.json").read_text(encoding="utf-8"))
    items = datalist["training"] + datalist["validation"] + datalist["test"]
    assert len(items) == len(seg.manifest)
    for item in items:
        assert (seg.path / item["image"]).is_file() and (seg.path / item["label"]).is_file()


def test_export_nnunet_again_elsewhere(seg: BuildResult, tmp_path: Path) -> None:
    from covid19_images.assemble.export import export

    target = export(seg.path, "nnunet", tmp_path / "raw")
    built = seg.path / "nnunet" / "Dataset501_COVID19Lesion"
    again = target / "Dataset501_COVID19Lesion"
    assert (again / "dataset.json").read_text() == (built / "dataset.json").read_text()
    assert sorted(p.name for p in (again / "labelsTr").iterdir()) == sorted(
        p.name for p in (built / "labelsTr").iterdir()
    )


def test_packed_slices_and_label_maps_feed_pytorch(seg: BuildResult) -> None:
    from covid19_images.loaders import open_split

    total = 0
    for split in ("train", "val", "test"):
        packed = open_split(seg.path, split)
        assert packed.masks is not None and packed.masks.shape == packed.images.shape
        total += len(packed)
        if len(packed):
            assert set(np.unique(packed.masks)) <= {0, 1}
    assert total == SHAPE[2] * len(seg.manifest)  # every axial slice of every pair
    train = open_split(seg.path, "train")
    assert int(train.masks.sum()) > 0  # type: ignore[union-attr]
    torch = pytest.importorskip("torch")
    import covid19_images as ci

    ds = ci.load(seg.path, "train", framework="torch", augment="standard")
    assert ds.segmentation
    image, mask = ds[0]
    assert image.shape == (1, 224, 224) and mask.shape == (224, 224) and mask.dtype == torch.int64
    images, masks = next(iter(ds.loader(batch_size=4)))
    assert images.shape == (4, 1, 224, 224) and masks.shape == (4, 224, 224)
    assert set(torch.unique(masks).tolist()) <= {0, 1}
