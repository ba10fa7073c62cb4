"""MedSeg and Zenodo 3757476 layouts with a planted lesion, generated for the CT lesion trainer.

Every volume is noise around lung parenchyma with one brighter sphere, the "lesion", at a random
place; its infection mask is exactly the sphere. A model that learns the brightness learns the
mask, so a short training at a tiny size must find it: the tests can ask for a Dice no random or
constant prediction reaches. The layouts are the upstream ones that ``build ct-lesion-seg``
reads (see ``tests/assemble/test_ct_seg_build.py``): Zenodo's Coronacases volumes are in
Hounsfield units, its Radiopaedia volumes and MedSeg's ``rp_im`` volumes are scaled to 0-255
(``not-hu``), so both intensity paths are trained on.

Example:
    >>> mirror = write_layouts(Path("mirror"))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (40, 40, 36)
"""Voxels along x, y and z: larger than a 32-voxel patch on every axis."""
SPACING = (0.8, 0.8, 2.0)
"""Millimetres per voxel along x, y and z."""
LUNG_HU, LESION_HU, NOISE_HU = -850.0, -250.0, 60.0
"""Parenchyma and lesion means, and the noise's standard deviation (HU)."""
SCALED_FROM = (-1250.0, 250.0)
"""The window Radiopaedia-derived volumes were scaled to 0-255 from (Zenodo's README)."""
HU_CASES = tuple(f"coronacases_{n:03d}" for n in range(1, 8))
NOT_HU_CASES = ("radiopaedia_4_85506_1", "radiopaedia_7_85703_0")
MEDSEG_CASES = (1, 2, 3)


def sphere(rng: np.random.Generator, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A uint8 ball (radius 5-7 voxels) at a random place inside ``shape``, 1 inside."""
    radius = int(rng.integers(5, 8))
    centre = [int(rng.integers(radius + 1, s - radius - 1)) for s in shape]
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    distance = sum((axis - c) ** 2 for axis, c in zip(grid, centre, strict=True))
    ball: np.ndarray = (distance <= radius**2).astype(np.uint8)
    return ball


def hu_volume(rng: np.random.Generator, lesion: np.ndarray) -> np.ndarray:
    """int16 HU: parenchyma with noise, the lesion brighter."""
    values = np.where(lesion > 0, LESION_HU, LUNG_HU) + rng.normal(0, NOISE_HU, lesion.shape)
    out: np.ndarray = np.rint(values).astype(np.int16)
    return out


def scaled_volume(rng: np.random.Generator, lesion: np.ndarray) -> np.ndarray:
    """The same in 0-255, as Radiopaedia-derived volumes are (not HU)."""
    low, high = SCALED_FROM
    scaled = (hu_volume(rng, lesion).astype(np.float64) - low) * 255.0 / (high - low)
    out: np.ndarray = np.clip(np.rint(scaled), 0, 255).astype(np.int16)
    return out


def _save(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*SPACING, 1.0])
    nib.save(nib.Nifti1Image(data, affine), path)  # type: ignore[no-untyped-call]


def write_layouts(root: Path, seed: int = 0) -> Path:
    """``root/zenodo-ct-seg`` (7 HU and 2 scaled volumes) and ``root/medseg-volumes`` (3
    scaled volumes), each with its lung and infection masks; returns ``root``."""
    rng = np.random.default_rng(seed)
    lungs = np.zeros(SHAPE, dtype=np.uint8)
    lungs[: SHAPE[0] // 2], lungs[SHAPE[0] // 2 :] = 1, 2
    zen = root / "zenodo-ct-seg"
    for name in (*HU_CASES, *NOT_HU_CASES):
        lesion = sphere(rng)
        image = hu_volume(rng, lesion) if name in HU_CASES else scaled_volume(rng, lesion)
        _save(zen / "COVID-19-CT-Seg_20cases" / f"{name}.nii.gz", image)
        _save(zen / "Lung_Mask" / f"{name}.nii.gz", lungs)
        _save(zen / "Infection_Mask" / f"{name}.nii.gz", lesion)
        _save(zen / "Lung_and_Infection_Mask" / f"{name}.nii.gz", np.where(lesion, 3, lungs))
    med = root / "medseg-volumes"
    for n in MEDSEG_CASES:
        lesion = sphere(rng)
        _save(med / "rp_im" / f"{n}.nii.gz", scaled_volume(rng, lesion))
        _save(med / "rp_msk" / f"{n}.nii.gz", lesion)  # 1: ground glass
        _save(med / "rp_lung_msk" / f"{n}.nii.gz", lungs)
    return root
