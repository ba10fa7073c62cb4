"""Volumes: grids, NIfTI in and out, display windows, slice stacks, grid comparison."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from covid19_images.process.ct.volume import (
    WINDOWS,
    Volume,
    VolumeError,
    read_nifti,
    read_slice_stack,
    same_grid,
    window,
    write_nifti,
)


def ct_volume(direction: np.ndarray | None = None, dtype: type = np.int16) -> Volume:
    rng = np.random.default_rng(7)
    array = rng.integers(-1024, 3000, size=(5, 6, 7)).astype(dtype)
    return Volume(
        array,
        (0.7, 0.8, 2.5),
        (-120.5, -80.25, -300.0),
        np.eye(3) if direction is None else direction,
        hu=True,
    )


def world_values(volume: Volume) -> dict[tuple[float, float, float], int]:
    """Every voxel's value keyed by its LPS position (rounded to 1e-3 mm)."""
    z, y, x = np.indices(volume.array.shape)
    index = np.stack([x.ravel(), y.ravel(), z.ravel(), np.ones(x.size)])
    points = (volume.affine_lps() @ index)[:3].T
    return {
        tuple(np.round(p, 3).tolist()): int(v)
        for p, v in zip(points, volume.array.ravel(), strict=True)
    }


# --- Volume -------------------------------------------------------------------------------------


def test_affines_follow_itk_conventions() -> None:
    direction = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    vol = Volume(np.zeros((2, 3, 4), np.int16), (0.5, 0.6, 3.0), (1.0, 2.0, 3.0), direction)
    # voxel (x=1, y=2, z=1) -> origin + D @ (spacing * index)
    expected = np.array([1.0, 2.0, 3.0]) + direction @ (np.array([0.5, 0.6, 3.0]) * [1, 2, 1])
    np.testing.assert_allclose((vol.affine_lps() @ [1, 2, 1, 1])[:3], expected)
    np.testing.assert_allclose(
        (vol.affine_ras() @ [1, 2, 1, 1])[:3], expected * np.array([-1, -1, 1])
    )
    assert vol.shape_xyz == (4, 3, 2)


def test_volume_rejects_bad_arrays_and_spacing() -> None:
    with pytest.raises(VolumeError) as err:
        Volume(np.zeros((3, 3)), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert err.value.kind == "bad-value"
    with pytest.raises(VolumeError):
        Volume(np.zeros((1, 3, 3)), (1.0, 0.0, 1.0), (0.0, 0.0, 0.0))


# --- NIfTI --------------------------------------------------------------------------------------


def test_to_nifti_is_canonical_with_a_fresh_header() -> None:
    img = ct_volume().to_nifti()
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    header = img.header
    assert header["descrip"].item() == b""
    assert header["aux_file"].item() == b""
    assert header["db_name"].item() == b""
    assert header.get_xyzt_units()[0] == "mm"
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), img.affine, atol=1e-5)
    np.testing.assert_allclose(img.get_sform(), img.affine, atol=1e-6)
    assert img.get_data_dtype() == np.int16
    # LPS identity becomes RAS+ by flipping x and y: the data are the same voxels.
    data = np.asanyarray(img.dataobj)
    assert data.shape == (7, 6, 5)
    assert np.array_equal(data, ct_volume().array.transpose(2, 1, 0)[::-1, ::-1, :])


def test_nifti_round_trip_keeps_array_and_grid(tmp_path: Path) -> None:
    volume = ct_volume()
    for name in ("ct.nii.gz", "ct.nii"):
        write_nifti(volume, tmp_path / name)
        back = read_nifti(tmp_path / name, hu=True)
        assert back.array.dtype == np.int16
        assert np.array_equal(back.array, volume.array)
        assert same_grid(back, volume, tol=1e-4) is None
        assert back.hu is True
    assert (tmp_path / "ct.nii.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "ct.nii").read_bytes()[:2] != b"\x1f\x8b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii", "ct.nii.gz"]  # no temp files
    (tmp_path / "plain.txt").write_text("x")  # the usual permissions, not a temp file's 0600
    usual = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert (tmp_path / "ct.nii.gz").stat().st_mode & 0o777 == usual


def test_nifti_bytes_are_reproducible(tmp_path: Path) -> None:
    write_nifti(ct_volume(), tmp_path / "a.nii.gz")
    write_nifti(ct_volume(), tmp_path / "b.nii.gz")
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    with gzip.open(tmp_path / "a.nii.gz") as fh:
        assert len(fh.read()) > 0


@pytest.mark.parametrize(
    "direction",
    [
        np.diag([1.0, 1.0, -1.0]),  # slices from head to feet
        np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),  # sagittal
        np.array(  # oblique: 20 degrees about x
            [[1.0, 0.0, 0.0], [0.0, 0.9396926, -0.3420201], [0.0, 0.3420201, 0.9396926]]
        ),
    ],
)
def test_any_orientation_round_trips_to_the_same_voxels_in_space(
    tmp_path: Path, direction: np.ndarray
) -> None:
    volume = ct_volume(direction)
    write_nifti(volume, tmp_path / "v.nii.gz")
    back = read_nifti(tmp_path / "v.nii.gz")
    assert world_values(back) == world_values(volume)
    # The axes come back in the order closest to LPS.
    assert np.all(np.abs(back.direction).argmax(axis=0) == [0, 1, 2])
    assert np.all(np.diag(back.direction) > 0)


def test_mask_dtypes_are_kept(tmp_path: Path) -> None:
    mask = Volume(np.zeros((2, 3, 4), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    mask.array[1, 2, 3] = 5
    write_nifti(mask, tmp_path / "m.nii.gz")
    assert nib.load(tmp_path / "m.nii.gz").get_data_dtype() == np.uint8
    back = read_nifti(tmp_path / "m.nii.gz")
    assert back.array.dtype == np.uint8 and back.array[1, 2, 3] == 5

    flags = Volume(np.zeros((2, 3, 4), bool), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert flags.to_nifti().get_data_dtype() == np.uint8


def test_upstream_header_text_is_not_copied(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.diag([-0.8, -0.8, 5.0, 1.0]))
    img.header["descrip"] = b"Time=234114.350"
    img.header["aux_file"] = b"scanner.txt"
    nib.save(img, tmp_path / "upstream.nii.gz")
    write_nifti(read_nifti(tmp_path / "upstream.nii.gz"), tmp_path / "ours.nii.gz")
    header = nib.load(tmp_path / "ours.nii.gz").header
    assert header["descrip"].item() == b"" and header["aux_file"].item() == b""
    assert b"Time=" not in gzip.decompress((tmp_path / "ours.nii.gz").read_bytes())


def test_read_nifti_applies_scaling_only_when_present(tmp_path: Path) -> None:
    raw = np.arange(24, dtype=np.int16).reshape(4, 3, 2)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])

    plain = nib.Nifti1Image(raw, affine)
    nib.save(plain, tmp_path / "plain.nii")
    assert read_nifti(tmp_path / "plain.nii").array.dtype == np.int16

    shifted = nib.Nifti1Image(raw, affine)
    shifted.header.set_slope_inter(1.0, -1024.0)
    nib.save(shifted, tmp_path / "shifted.nii")
    vol = read_nifti(tmp_path / "shifted.nii")
    assert vol.array.dtype == np.int16
    assert vol.array.min() == -1024 and vol.array.max() == 23 - 1024

    wide = nib.Nifti1Image(raw, affine)
    wide.header.set_slope_inter(2000.0, 0.0)
    nib.save(wide, tmp_path / "wide.nii")
    assert read_nifti(tmp_path / "wide.nii").array.dtype == np.int32

    halves = nib.Nifti1Image(raw, affine)
    halves.header.set_slope_inter(0.5, 0.0)
    nib.save(halves, tmp_path / "halves.nii")
    vol = read_nifti(tmp_path / "halves.nii")
    assert vol.array.dtype.kind == "f" and vol.array.max() == pytest.approx(11.5)


def test_read_nifti_shapes(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2, 1), np.int16), np.eye(4)), tmp_path / "a.nii")
    assert read_nifti(tmp_path / "a.nii").array.shape == (2, 3, 4)
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2, 2), np.int16), np.eye(4)), tmp_path / "b.nii")
    with pytest.raises(VolumeError) as err:
        read_nifti(tmp_path / "b.nii")
    assert err.value.kind == "bad-value"


def test_read_nifti_bad_files(tmp_path: Path) -> None:
    write_nifti(ct_volume(), tmp_path / "whole.nii.gz")
    data = (tmp_path / "whole.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.nii").write_text("not a volume")
    for name in ("cut.nii.gz", "text.nii", "absent.nii.gz"):
        with pytest.raises(VolumeError) as err:
            read_nifti(tmp_path / name)
        assert err.value.kind == "unreadable-file"
        assert name in str(err.value)


def test_write_nifti_leaves_no_temp_file_on_failure(tmp_path: Path) -> None:
    class Broken(Volume):
        def to_nifti(self) -> nib.Nifti1Image:
            img = super().to_nifti()
            img.to_stream = _raise  # type: ignore[method-assign]
            return img

    def _raise(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    volume = Broken(np.zeros((1, 2, 2), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(OSError, match="disk full"):
        write_nifti(volume, tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


# --- window -------------------------------------------------------------------------------------


def test_window() -> None:
    hu = np.array([-1350.0, -600.0, 150.0, -2000.0, 5000.0])
    assert window(hu).tolist() == [0, 128, 255, 0, 255]
    assert window(hu).dtype == np.uint8
    center, width = WINDOWS["mediastinum"]
    assert window(
        np.array([center - width / 2, center, center + width / 2]), center, width
    ).tolist() == [
        0,
        128,
        255,
    ]
    assert window(np.zeros((2, 3, 4), np.int16)).shape == (2, 3, 4)
    with pytest.raises(VolumeError):
        window(hu, 0.0, 0.0)


# --- slice stacks -------------------------------------------------------------------------------


def test_slice_stack_of_16_bit_tiffs(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(3)
    slices = [rng.integers(0, 5000, size=(12, 10)).astype(np.uint16) for _ in range(4)]
    paths = []
    for index, pixels in enumerate(slices):
        path = tmp_path / f"{index}.tif"
        compression = None if index % 2 else "zlib"
        tifffile.imwrite(path, pixels, compression=compression, byteorder="<>"[index % 2])
        paths.append(path)
    plain = read_slice_stack(paths, spacing=(0.7, 0.7, 3.0))
    assert plain.array.dtype == np.uint16 and plain.hu is None
    assert np.array_equal(plain.array, np.stack(slices))
    assert plain.spacing == (0.7, 0.7, 3.0)

    hu = read_slice_stack(paths, hu_offset=-1024)
    assert hu.array.dtype == np.int16 and hu.hu is True
    assert np.array_equal(hu.array, np.stack(slices).astype(np.int32) - 1024)
    assert hu.spacing == (1.0, 1.0, 1.0) and hu.origin == (0.0, 0.0, 0.0)


def test_slice_stack_of_pillow_tiffs_and_pngs(tmp_path: Path) -> None:
    sixteen = np.arange(120, dtype=np.uint16).reshape(12, 10) * 40
    Image.fromarray(sixteen).save(tmp_path / "a.tif")
    Image.fromarray(sixteen).save(tmp_path / "a.png")
    assert np.array_equal(read_slice_stack([tmp_path / "a.tif"]).array[0], sixteen)
    assert np.array_equal(read_slice_stack([tmp_path / "a.png"]).array[0], sixteen)

    eight = [np.full((12, 10), i * 60, np.uint8) for i in range(3)]
    paths = []
    for index, pixels in enumerate(eight):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(pixels).save(paths[-1])
    vol = read_slice_stack(paths)
    assert vol.array.dtype == np.uint8 and vol.array[:, 0, 0].tolist() == [0, 60, 120]
    # Colour images are taken as greyscale.
    Image.fromarray(np.dstack([eight[1]] * 3)).save(tmp_path / "rgb.png")
    assert read_slice_stack([tmp_path / "rgb.png"]).array[0, 0, 0] == 60


def test_slice_stack_errors(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(VolumeError) as err:
        read_slice_stack([tmp_path / "a.png", tmp_path / "b.png"])
    assert err.value.kind == "bad-value" and "b.png" in str(err.value)
    with pytest.raises(VolumeError) as err:
        read_slice_stack([tmp_path / "a.png", tmp_path / "c.png"])
    assert err.value.kind == "unreadable-file" and "c.png" in str(err.value)
    with pytest.raises(VolumeError) as err:
        read_slice_stack([])
    assert err.value.kind == "bad-value"


# --- same_grid ----------------------------------------------------------------------------------


def test_same_grid() -> None:
    a = ct_volume()
    assert same_grid(a, ct_volume(dtype=np.uint8)) is None
    shifted = ct_volume()
    shifted.origin = (-120.5, -80.25, -299.0)
    assert "origin differs" in (same_grid(a, shifted) or "")
    assert same_grid(a, shifted, tol=2.0) is None
    other = Volume(np.zeros((5, 6, 8)), a.spacing, a.origin)
    assert "shape differs" in (same_grid(a, other) or "")
    spaced = Volume(np.zeros((5, 6, 7)), (0.7, 0.8, 3.0), a.origin)
    assert "spacing differs" in (same_grid(a, spaced) or "")
    turned = Volume(np.zeros((5, 6, 7)), a.spacing, a.origin, np.diag([1.0, 1.0, -1.0]))
    assert "direction differs" in (same_grid(a, turned) or "")
