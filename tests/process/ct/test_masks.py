"""Mask harmonisation: every upstream map, overlaps, grids, bad values, real MosMedData masks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from covid19_images.process.ct.masks import LABELS, MASK_MAPS, harmonise, lesion_only
from covid19_images.process.ct.volume import Volume, VolumeError, read_nifti

SPACING = (0.8, 0.8, 5.0)
ORIGIN = (-200.0, -180.0, -300.0)


def _volume(array: np.ndarray, **grid: object) -> Volume:
    return Volume(
        np.asarray(array),
        grid.get("spacing", SPACING),  # type: ignore[arg-type]
        grid.get("origin", ORIGIN),  # type: ignore[arg-type]
        grid.get("direction", np.eye(3)),  # type: ignore[arg-type]
    )


@pytest.fixture
def image() -> Volume:
    return _volume(np.full((2, 3, 4), -800, np.int16))


def test_labels_are_distinct_and_every_map_names_known_labels() -> None:
    assert len(set(LABELS.values())) == len(LABELS)
    assert LABELS["background"] == 0
    for table in MASK_MAPS.values():
        assert 0 not in table
        assert set(table.values()) <= set(LABELS)


@pytest.mark.parametrize("map_id", sorted(MASK_MAPS))
def test_each_map_converts_every_value(map_id: str, image: Volume) -> None:
    table = MASK_MAPS[map_id]
    raw = np.zeros(image.array.shape, np.int16)
    for i, value in enumerate(sorted(table)):
        raw[0, 0, i] = value
    out, warnings = harmonise([(_volume(raw), map_id)], image)
    assert warnings == []
    assert out.array.dtype == np.uint8 and out.hu is None
    expected = np.zeros(image.array.shape, np.uint8)
    for i, value in enumerate(sorted(table)):
        expected[0, 0, i] = LABELS[table[value]]
    np.testing.assert_array_equal(out.array, expected)
    assert out.spacing == image.spacing and out.origin == image.origin
    np.testing.assert_array_equal(out.direction, image.direction)


def test_specific_maps(image: Volume) -> None:
    raw = np.zeros(image.array.shape, np.uint8)
    raw[0, 0, :4] = [0, 1, 2, 3]
    medseg, _ = harmonise([(_volume(raw), "medseg")], image)
    assert medseg.array[0, 0, :4].tolist() == [0, 4, 5, 6]  # ggo, consolidation, effusion
    both, _ = harmonise([(_volume(raw), "zenodo-lung-infection")], image)
    assert both.array[0, 0, :4].tolist() == [0, 1, 2, 3]  # left, right, lesion
    lungs = raw.copy()
    lungs[0, 0, 3] = 0
    medseg_lung, _ = harmonise([(_volume(lungs), "medseg-lung")], image)
    assert medseg_lung.array[0, 0, :3].tolist() == [0, 2, 1]  # lungmask: 1 right, 2 left
    binary = (raw > 0).astype(np.int16)
    mosmed, _ = harmonise([(_volume(binary), "mosmed")], image)
    assert sorted(np.unique(mosmed.array).tolist()) == [0, 3]


def test_lesion_overrides_lung_whatever_the_order(image: Volume) -> None:
    lungs = np.zeros(image.array.shape, np.uint8)
    lungs[:, :, :2] = 1  # left lung
    lungs[:, :, 2:] = 2  # right lung
    infection = np.zeros(image.array.shape, np.uint8)
    infection[1, 1, 1] = 1
    infection[1, 1, 3] = 1
    for order in (
        ((lungs, "zenodo-lung"), (infection, "zenodo-infection")),
        (
            (infection, "zenodo-infection"),
            (lungs, "zenodo-lung"),
        ),
    ):
        out, warnings = harmonise([(_volume(a), m) for a, m in order], image)
        assert warnings == []
        assert out.array[1, 1, 1] == out.array[1, 1, 3] == LABELS["lesion"]
        assert out.array[0, 0, 0] == LABELS["lung_left"]
        assert out.array[0, 0, 3] == LABELS["lung_right"]


def test_conflicting_masks_warn_and_the_later_wins(image: Volume) -> None:
    left = np.zeros(image.array.shape, np.uint8)
    left[0, 0, 0] = 1
    right = np.zeros(image.array.shape, np.uint8)
    right[0, 0, 0] = 2
    out, warnings = harmonise(
        [(_volume(left), "zenodo-lung"), (_volume(right), "zenodo-lung")], image
    )
    assert out.array[0, 0, 0] == LABELS["lung_right"]
    assert len(warnings) == 1 and "1 voxels" in warnings[0] and "lung" in warnings[0]
    ggo = np.zeros(image.array.shape, np.uint8)
    ggo[0, 1, 1] = 1
    lesion = ggo.copy()
    out, warnings = harmonise([(_volume(ggo), "medseg"), (_volume(lesion), "mosmed")], image)
    assert out.array[0, 1, 1] == LABELS["lesion"]
    assert len(warnings) == 1 and "lesion" in warnings[0]


def test_lesion_only() -> None:
    labels = np.arange(7, dtype=np.uint8).reshape(1, 1, 7)
    out = lesion_only(labels)
    assert out.dtype == np.uint8
    assert out.ravel().tolist() == [0, 0, 0, 1, 1, 1, 0]


@pytest.mark.parametrize(
    "grid",
    [
        {"spacing": (0.8, 0.8, 2.5)},
        {"origin": (-200.0, -180.0, -295.0)},
        {"direction": np.diag([-1.0, 1.0, 1.0])},
    ],
    ids=["spacing", "origin", "direction"],
)
def test_mask_off_the_image_grid_is_a_mismatch(grid: dict[str, object], image: Volume) -> None:
    mask = _volume(np.zeros(image.array.shape, np.uint8), **grid)
    with pytest.raises(VolumeError) as info:
        harmonise([(mask, "mosmed")], image)
    assert info.value.kind == "mask-mismatch"


def test_mask_of_another_shape_is_a_mismatch(image: Volume) -> None:
    with pytest.raises(VolumeError) as info:
        harmonise([(_volume(np.zeros((3, 3, 4), np.uint8)), "mosmed")], image)
    assert info.value.kind == "mask-mismatch"
    assert "shape" in str(info.value)


def test_float_rounding_of_a_mask_header_is_tolerated(image: Volume) -> None:
    nudged = (ORIGIN[0] + 0.004, ORIGIN[1], ORIGIN[2])  # 0.5% of a 0.8 mm voxel
    out, warnings = harmonise(
        [(_volume(np.ones(image.array.shape, np.uint8), origin=nudged), "mosmed")], image
    )
    assert out.origin == image.origin
    assert len(warnings) == 1 and "less than 1% of a voxel" in warnings[0]


def test_unexpected_values_are_bad_values(image: Volume) -> None:
    raw = np.zeros(image.array.shape, np.int16)
    raw[0, 0, 0] = 3
    raw[0, 0, 1] = 255
    with pytest.raises(VolumeError) as info:
        harmonise([(_volume(raw), "zenodo-lung")], image)
    assert info.value.kind == "bad-value"
    assert "[3, 255]" in str(info.value)
    fractional = np.full(image.array.shape, 0.5, np.float32)
    with pytest.raises(VolumeError) as info:
        harmonise([(_volume(fractional), "mosmed")], image)
    assert info.value.kind == "bad-value"
    with pytest.raises(VolumeError) as info:
        harmonise([(_volume(raw), "no-such-map")], image)
    assert info.value.kind == "bad-value"


def test_float_and_bool_masks_with_integral_values(image: Volume) -> None:
    floats = np.zeros(image.array.shape, np.float32)
    floats[0, 0, 0] = 1.0
    out, _ = harmonise([(_volume(floats), "mosmed")], image)
    assert out.array[0, 0, 0] == LABELS["lesion"] and out.array.sum() == LABELS["lesion"]
    out, _ = harmonise([(_volume(floats > 0), "mosmed")], image)
    assert out.array[0, 0, 0] == LABELS["lesion"]


def test_masks_read_from_nifti_files(tmp_path: Path, image: Volume) -> None:
    lungs = np.zeros(image.array.shape, np.uint8)
    lungs[:, :, :2] = 1
    nib.save(image.to_nifti(), tmp_path / "image.nii.gz")
    nib.save(_volume(lungs).to_nifti(), tmp_path / "mask.nii.gz")
    back = read_nifti(tmp_path / "image.nii.gz")
    out, warnings = harmonise([(read_nifti(tmp_path / "mask.nii.gz"), "zenodo-lung")], back)
    assert warnings == []
    assert int((out.array == LABELS["lung_left"]).sum()) == 2 * 3 * 2
    other = nib.Nifti1Image(np.zeros((4, 3, 2), np.uint8), np.diag([0.8, 0.8, 5.0, 1.0]))
    nib.save(other, tmp_path / "other.nii.gz")
    with pytest.raises(VolumeError) as info:
        harmonise([(read_nifti(tmp_path / "other.nii.gz"), "mosmed")], back)
    assert info.value.kind == "mask-mismatch"


def test_real_mosmeddata_masks(shared_sources: Path) -> None:
    paths = sorted((shared_sources / "mosmeddata" / "masks").glob("study_*_mask.nii.gz"))
    assert len(paths) == 50
    for path in paths:
        mask = read_nifti(path)
        ones = int(np.count_nonzero(mask.array == 1))
        zeros = int(np.count_nonzero(mask.array == 0))
        assert ones > 0 and ones + zeros == mask.array.size, path.name  # only 0 and 1
        image = Volume(
            np.zeros(mask.array.shape, np.int16), mask.spacing, mask.origin, mask.direction
        )
        out, warnings = harmonise([(mask, "mosmed")], image)
        assert warnings == []
        lesion = int(np.count_nonzero(out.array == LABELS["lesion"]))
        assert lesion == ones == int(np.count_nonzero(out.array)), path.name  # only 0 and 3
