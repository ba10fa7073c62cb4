"""DICOM series: grouping, ordering, HU decoding and every kind of bad file.

Small CT files are generated with pydicom in ``tmp_path``; the real series of the mirror
(covid-ct-md P001, covid-19-pos-case) are compared with SimpleITK, the reference reader.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    generate_uid,
)

from covid19_images.problems import KINDS
from covid19_images.process.ct import dicom_series
from covid19_images.process.ct.dicom_series import SeriesGroup, read_series, scan_series
from covid19_images.process.ct.volume import VolumeError, write_nifti
from tests.ct_dicom import make_ct, series

P001 = Path("covid-ct-md/Sample data/COVID-19 subjects/P001")
POS_CASE = Path("covid-19-pos-case/COVID-19-pos-case")
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def kinds(problems: Sequence[Any]) -> dict[str, str]:
    return {p.file: p.kind for p in problems}


def sitk_series(folder: Path) -> Any:
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK (the test oracle) is not installed")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.fixture(params=["imagecodecs", "pydicom"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both decoding paths: imagecodecs' libjpeg-turbo (when installed) and pydicom's plugins."""
    if request.param == "imagecodecs":
        if dicom_series._TURBO is None:
            pytest.skip("imagecodecs is not installed (optional fast JPEG decoder)")
    else:
        monkeypatch.setattr(dicom_series, "_TURBO", None)
    return str(request.param)


# --- real series --------------------------------------------------------------------------------


def test_p001_equals_simpleitk(shared_sources: Path, decoder: str) -> None:
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK (the test oracle) is not installed")
    folder = shared_sources / P001
    groups, problems = scan_series(folder)
    assert problems == []
    assert len(groups) == 1
    group = groups[0]
    assert (group.orientation, group.derived, group.rows, group.columns) == (
        "AXIAL",
        False,
        512,
        512,
    )
    assert len(group.files) == 148 and group.problems == []
    volume = read_series(folder, group)
    assert volume.array.shape == (148, 512, 512) and volume.array.dtype == np.int16
    assert volume.hu is True

    reference = sitk_series(folder)
    expected = sitk.GetArrayFromImage(reference)
    assert np.array_equal(volume.array, expected.astype(np.int16))
    assert expected.min() >= -32768 and expected.max() <= 32767  # the cast above loses nothing
    np.testing.assert_allclose(volume.spacing, reference.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(volume.origin, reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(
        volume.direction, np.asarray(reference.GetDirection()).reshape(3, 3), atol=1e-4
    )
    # Same order as GDCM's sorter.
    reader = sitk.ImageSeriesReader()
    names = [Path(n).name for n in reader.GetGDCMSeriesFileNames(str(folder))]
    assert [Path(f).name for f in group.files] == names


def test_p001_nifti_is_the_same_volume_in_space(shared_sources: Path, tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK (the test oracle) is not installed")
    folder = shared_sources / P001
    groups, _ = scan_series(folder)
    volume = read_series(folder, groups[0])
    target = tmp_path / "p001.nii.gz"
    write_nifti(volume, target)

    ours = sitk.DICOMOrient(sitk.ReadImage(str(target)), "LPS")
    reference = sitk.DICOMOrient(sitk_series(folder), "LPS")
    assert ours.GetSize() == reference.GetSize()
    assert np.array_equal(
        sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(reference).astype(np.int16)
    )
    np.testing.assert_allclose(ours.GetSpacing(), reference.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(ours.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(ours.GetDirection(), reference.GetDirection(), atol=1e-6)


def test_pos_case_localizers_reformat_and_derived_axial(shared_sources: Path) -> None:
    folder = shared_sources / POS_CASE
    groups, problems = scan_series(folder)
    by_file = kinds(problems)
    assert by_file == {"IM000116": "localizer", "IM000117": "localizer", "IM001062": "non-axial"}
    assert len(groups) == 1
    group = groups[0]
    assert group.orientation == "AXIAL" and group.derived is True
    assert group.series_number == 605
    assert group.files == [f"IM{n:06d}" for n in range(1063, 1086)]  # ascending along the normal
    assert "IM001062" not in group.files
    assert group.slice_spacing == pytest.approx(15.0, abs=1e-2)
    assert group.label() == "series 605, axial, derived, 23 slices"
    assert (
        group.key
        == hashlib.sha256(f"{_series_uid(folder)}|AXIAL|512|512".encode()).hexdigest()[:12]
    )
    # No personal data in the problems.
    for problem in problems:
        assert problem.kind in KINDS
        assert "^" not in problem.detail and "1.2.840" not in problem.detail

    volume = read_series(folder, group)
    assert volume.array.shape == (23, 512, 512)
    assert volume.spacing[2] == pytest.approx(15.0, abs=1e-2)
    np.testing.assert_allclose(volume.origin, (-210.8, -159.6, -272.524), atol=1e-3)

    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK (the test oracle) is not installed")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(folder / f) for f in group.files])
    reference = reader.Execute()
    assert np.array_equal(volume.array, sitk.GetArrayFromImage(reference).astype(np.int16))
    np.testing.assert_allclose(volume.origin, reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(volume.spacing, reference.GetSpacing(), atol=1e-2)


def _series_uid(folder: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(folder / "IM001063", stop_before_pixels=True).SeriesInstanceUID)


# --- generated series ---------------------------------------------------------------------------


def test_generated_series_matches_simpleitk(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK (the test oracle) is not installed")
    uid = series(tmp_path / "ct", 6, step=2.5)
    groups, problems = scan_series(tmp_path / "ct")
    assert problems == [] and len(groups) == 1
    group = groups[0]
    assert group.files == [f"s{6 - i:03d}.dcm" for i in range(6)]  # sorted by position, not name
    assert group.key == hashlib.sha256(f"{uid}|AXIAL|16|16".encode()).hexdigest()[:12]
    assert group.slice_spacing == pytest.approx(2.5)
    volume = read_series(tmp_path / "ct", group)
    reference = sitk_series(tmp_path / "ct")
    assert np.array_equal(volume.array, sitk.GetArrayFromImage(reference))
    assert volume.spacing == pytest.approx(reference.GetSpacing())
    assert volume.spacing == pytest.approx((0.75, 0.5, 2.5))
    assert volume.origin == pytest.approx(reference.GetOrigin())
    assert volume.array[0, 0, 0] == -1024 and volume.array[0, -1, -1] == 1000 + 16 - 1024


@pytest.mark.parametrize(
    ("iop", "orientation"),
    [
        (CORONAL, "CORONAL"),
        ((0.0, 1.0, 0.0, 0.0, 0.0, -1.0), "SAGITTAL"),
        ((1.0, 0.0, 0.0, 0.0, 0.7071068, -0.7071068), "OBLIQUE"),
        ((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0), "AXIAL"),  # prone
    ],
)
def test_orientations_and_direction_match_simpleitk(
    tmp_path: Path, iop: tuple[float, ...], orientation: str
) -> None:
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK (the test oracle) is not installed")
    row, col = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(row, col)
    folder = tmp_path / "ct"
    folder.mkdir()
    uid = generate_uid()
    for index in range(4):
        position = np.array([5.0, -7.0, 11.0]) + normal * 3.0 * (3 - index)
        make_ct(folder / f"{index}.dcm", series_uid=uid, z=0.0, iop=iop, position=position)
    groups, problems = scan_series(folder)
    assert problems == [] and [g.orientation for g in groups] == [orientation]
    assert groups[0].files == ["3.dcm", "2.dcm", "1.dcm", "0.dcm"]
    volume = read_series(folder, groups[0])
    reference = sitk_series(folder)
    assert np.array_equal(volume.array, sitk.GetArrayFromImage(reference))
    np.testing.assert_allclose(volume.spacing, reference.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(volume.origin, reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(
        volume.direction, np.asarray(reference.GetDirection()).reshape(3, 3), atol=1e-4
    )


def test_implicit_vr_files(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK (the test oracle) is not installed")
    series(tmp_path, 4, syntax=ImplicitVRLittleEndian)
    cut = tmp_path / "s001.dcm"
    series(tmp_path / "cut", 1, syntax=ImplicitVRLittleEndian)
    (tmp_path / "cut" / "s001.dcm").write_bytes(cut.read_bytes()[:-10])
    groups, problems = scan_series(tmp_path)
    assert kinds(problems) == {"cut/s001.dcm": "unreadable-file"}
    [group] = groups
    volume = read_series(tmp_path, group)
    reference = sitk.ReadImage([str(tmp_path / f) for f in group.files])
    assert np.array_equal(volume.array, sitk.GetArrayFromImage(reference))


def test_missing_slice_is_a_gap_and_still_reads(tmp_path: Path) -> None:
    series(tmp_path, 8, skip=[4])
    groups, problems = scan_series(tmp_path)
    assert problems == [] and len(groups) == 1
    group = groups[0]
    assert len(group.files) == 7 and group.slice_spacing == pytest.approx(2.0)
    assert [p.kind for p in group.problems] == ["slice-gap"]
    gap = group.problems[0]
    assert gap.file == "s003.dcm" and "4.000 mm" in gap.detail and "1 slice missing" in gap.detail
    volume = read_series(tmp_path, group)
    assert volume.array.shape == (7, 16, 16) and volume.spacing[2] == pytest.approx(2.0)


def test_uneven_spacing_is_a_slice_gap_problem(tmp_path: Path) -> None:
    uid = generate_uid()
    for index, z in enumerate([0.0, 2.0, 4.1, 6.0, 8.2, 10.0]):
        make_ct(tmp_path / f"{index}.dcm", series_uid=uid, z=z)
    groups, _ = scan_series(tmp_path)
    [problem] = groups[0].problems
    assert problem.kind == "slice-gap" and "uneven" in problem.detail


def test_duplicate_position_is_left_out(tmp_path: Path) -> None:
    uid = series(tmp_path, 4)
    make_ct(tmp_path / "zz-copy.dcm", series_uid=uid, z=2.0)
    groups, problems = scan_series(tmp_path)
    assert len(groups[0].files) == 4
    assert kinds(problems) == {"zz-copy.dcm": "duplicate"}


def test_two_series_in_one_folder_are_never_stacked(tmp_path: Path) -> None:
    first = series(tmp_path, 4, series_number=2, prefix="a")
    second = series(tmp_path, 5, series_number=7, prefix="b", step=1.0)
    groups, problems = scan_series(tmp_path)
    assert problems == []
    assert [(g.series_number, len(g.files)) for g in groups] == [(2, 4), (7, 5)]
    assert all(f.startswith("a") for f in groups[0].files)
    assert all(f.startswith("b") for f in groups[1].files)
    assert groups[0].key != groups[1].key
    assert groups[0].key == hashlib.sha256(f"{first}|AXIAL|16|16".encode()).hexdigest()[:12]
    assert groups[1].key == hashlib.sha256(f"{second}|AXIAL|16|16".encode()).hexdigest()[:12]
    assert read_series(tmp_path, groups[1]).array.shape == (5, 16, 16)


def test_one_series_with_two_image_sizes_is_split(tmp_path: Path) -> None:
    uid = series(tmp_path, 5, prefix="big")
    series(tmp_path, 3, prefix="small", size=(8, 12), series_uid=uid)
    groups, problems = scan_series(tmp_path)
    assert sorted((g.rows, g.columns, len(g.files)) for g in groups) == [(8, 12, 3), (16, 16, 5)]
    assert [p.kind for p in problems] == ["mixed-series"]
    assert problems[0].file.startswith("small")
    for group in groups:
        assert read_series(tmp_path, group).array.shape == (
            len(group.files),
            group.rows,
            group.columns,
        )


def test_minority_orientation_forms_its_own_group_from_three_images(tmp_path: Path) -> None:
    uid = series(tmp_path, 6, prefix="ax")
    for index in range(3):
        position = (-10.0, -5.0 + 3.0 * index, 0.0)
        make_ct(tmp_path / f"cor{index}.dcm", series_uid=uid, z=0, iop=CORONAL, position=position)
    groups, problems = scan_series(tmp_path)
    assert sorted(g.orientation for g in groups) == ["AXIAL", "CORONAL"]
    assert [p.kind for p in problems] == ["mixed-series"]


def test_file_changed_after_scan_is_a_mixed_series_error(tmp_path: Path) -> None:
    uid = series(tmp_path, 3)
    groups, _ = scan_series(tmp_path)
    make_ct(tmp_path / groups[0].files[1], series_uid=uid, z=2.0, size=(8, 8))
    with pytest.raises(VolumeError) as err:
        read_series(tmp_path, groups[0])
    assert err.value.kind == "mixed-series"


def test_dicomdir_and_dicom_without_pixels(tmp_path: Path) -> None:
    series(tmp_path, 3)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.1.3.10")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dicomdir = Dataset()
    dicomdir.file_meta = meta
    dicomdir.FileSetID = "TEST"
    dicomdir.DirectoryRecordSequence = []
    dicomdir.save_as(tmp_path / "DICOMDIR", enforce_file_format=True)

    make_ct(tmp_path / "nopix.dcm", series_uid=generate_uid(), z=0.0)
    import pydicom

    ds = pydicom.dcmread(tmp_path / "nopix.dcm")
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm", enforce_file_format=True)

    groups, problems = scan_series(tmp_path)
    assert kinds(problems) == {"DICOMDIR": "no-pixel-data", "nopix.dcm": "no-pixel-data"}
    assert len(groups) == 1 and len(groups[0].files) == 3


def test_truncated_files(tmp_path: Path) -> None:
    series(tmp_path, 8)
    header_cut = tmp_path / "s002.dcm"
    header_cut.write_bytes(header_cut.read_bytes()[:700])
    pixels_cut = tmp_path / "s004.dcm"
    pixels_cut.write_bytes(pixels_cut.read_bytes()[:-100])
    groups, problems = scan_series(tmp_path)
    assert kinds(problems) == {"s002.dcm": "unreadable-file", "s004.dcm": "unreadable-file"}
    assert "header" in problems[0].detail and "pixel data" in problems[1].detail
    assert len(groups) == 1 and len(groups[0].files) == 6
    assert [p.kind for p in groups[0].problems] == ["slice-gap", "slice-gap"]
    assert read_series(tmp_path, groups[0]).array.shape == (6, 16, 16)


def test_pixels_cut_after_the_scan_raise_at_read(tmp_path: Path) -> None:
    series(tmp_path, 3)
    groups, _ = scan_series(tmp_path)
    victim = tmp_path / groups[0].files[1]
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(VolumeError) as err:
        read_series(tmp_path, groups[0])
    assert err.value.kind == "unreadable-file"
    assert groups[0].files[1] in str(err.value)


def test_compressed_file_cut_short(tmp_path: Path, shared_sources: Path) -> None:
    source = shared_sources / P001
    names = sorted(p.name for p in source.iterdir())[:3]
    for name in names:
        (tmp_path / name).write_bytes((source / name).read_bytes())
    groups, _ = scan_series(tmp_path)
    # Cut inside the JPEG stream: the scan sees no end delimiter.
    victim = tmp_path / groups[0].files[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    _, problems = scan_series(tmp_path)
    assert kinds(problems) == {groups[0].files[1]: "unreadable-file"}
    # After the scan: reading says so, with no traceback from the decoder.
    with pytest.raises(VolumeError) as err:
        read_series(tmp_path, groups[0])
    assert err.value.kind == "unreadable-file"


def test_non_dicom_and_empty_files_are_problems(tmp_path: Path) -> None:
    series(tmp_path, 3)
    (tmp_path / "README.txt").write_text("series exported from a viewer\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (tmp_path / "empty").write_bytes(b"")
    groups, problems = scan_series(tmp_path)
    assert kinds(problems) == {
        "README.txt": "unreadable-file",
        "image.png": "unreadable-file",
        "empty": "empty-file",
    }
    assert all("not a DICOM file" in p.detail for p in problems if p.kind == "unreadable-file")
    assert len(groups) == 1


def test_scan_of_given_files_only(tmp_path: Path) -> None:
    series(tmp_path, 4)
    (tmp_path / "README.txt").write_text("notes")
    groups, problems = scan_series(tmp_path, [Path("s001.dcm"), tmp_path / "s002.dcm"])
    assert problems == [] and sorted(groups[0].files) == ["s001.dcm", "s002.dcm"]


def test_localizer_and_colour_and_positionless_images(tmp_path: Path) -> None:
    uid = series(tmp_path, 3)
    make_ct(
        tmp_path / "scout.dcm",
        series_uid=uid,
        z=0.5,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    import pydicom

    path = make_ct(tmp_path / "nopos.dcm", series_uid=uid, z=9.0)
    ds = pydicom.dcmread(path)
    del ds.ImagePositionPatient
    ds.save_as(path, enforce_file_format=True)
    groups, problems = scan_series(tmp_path)
    assert kinds(problems) == {"nopos.dcm": "bad-value", "scout.dcm": "localizer"}
    assert len(groups[0].files) == 3


def _unsupported_syntax() -> UID:
    for syntax in (JPEGLSLossless, JPEG2000Lossless, HTJ2KLossless):
        if not get_decoder(syntax).is_available:
            return syntax
    pytest.skip("every tested compressed transfer syntax has a decoder installed here")


def test_unsupported_transfer_syntax_names_the_package(tmp_path: Path) -> None:
    syntax = _unsupported_syntax()
    uid = generate_uid()
    for index in range(2):
        path = make_ct(tmp_path / f"{index}.dcm", series_uid=uid, z=float(index))
        import pydicom

        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = syntax
        # A stand-in codestream; the decoder is missing, so it is never parsed.
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60) + b"\xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
    groups, problems = scan_series(tmp_path)
    assert problems == [] and len(groups) == 1
    with pytest.raises(VolumeError) as err:
        read_series(tmp_path, groups[0])
    assert err.value.kind == "unsupported-transfer-syntax"
    package = "pylibjpeg-openjpeg" if syntax != JPEGLSLossless else "pylibjpeg-libjpeg"
    assert f"pip install pylibjpeg {package}" in str(err.value)
    assert syntax in str(err.value)


def test_unknown_transfer_syntax(tmp_path: Path) -> None:
    path = make_ct(tmp_path / "a.dcm", series_uid=generate_uid(), z=0.0)
    import pydicom

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = UID("1.2.826.0.1.3680043.2.1143.999")
    ds.save_as(path, enforce_file_format=True)
    groups, _ = scan_series(tmp_path)
    with pytest.raises(VolumeError) as err:
        read_series(tmp_path, groups[0])
    assert err.value.kind == "unsupported-transfer-syntax"


# --- pixel values -------------------------------------------------------------------------------


def test_signed_12_bit_with_garbage_high_bits(tmp_path: Path) -> None:
    stored = np.array([[-2048, -1, 0, 2047]], dtype=np.int16).repeat(4, axis=0)
    garbage = (stored.view(np.uint16) & 0x0FFF) | 0xA000  # overlay bits set above BitsStored
    make_ct(
        tmp_path / "a.dcm",
        series_uid="1.2.3",
        z=0.0,
        size=(4, 4),
        pixels=garbage.astype(np.uint16),
        signed=True,
        intercept=0.0,
    )
    groups, _ = scan_series(tmp_path)
    volume = read_series(tmp_path, groups[0])
    assert volume.array[0].tolist() == stored.tolist()
    assert volume.hu is True


def test_signed_16_bit(tmp_path: Path) -> None:
    stored = np.array([[-32768, -1, 0, 32767]], dtype=np.int16).repeat(4, axis=0)
    make_ct(
        tmp_path / "a.dcm",
        series_uid="1.2.3",
        z=0.0,
        size=(4, 4),
        pixels=stored,
        signed=True,
        bits_stored=16,
        intercept=0.0,
    )
    make_ct(
        tmp_path / "b.dcm",
        series_uid="1.2.4",
        z=0.0,
        size=(4, 4),
        pixels=stored,
        signed=True,
        bits_stored=16,
        intercept=-1024.0,
    )
    groups, _ = scan_series(tmp_path)
    assert read_series(tmp_path, groups[0]).array[0, 0].tolist() == [-32768, -1, 0, 32767]
    assert read_series(tmp_path, groups[1]).array[0, 0].tolist() == [-32768, -1025, -1024, 31743]


def test_unsigned_12_bit_high_bits_are_cleared(tmp_path: Path) -> None:
    pixels = np.array([[0x0000, 0x0FFF, 0xF400, 0x1001]], dtype=np.uint16).repeat(4, axis=0)
    make_ct(tmp_path / "a.dcm", series_uid="1.2.3", z=0.0, size=(4, 4), pixels=pixels)
    groups, _ = scan_series(tmp_path)
    volume = read_series(tmp_path, groups[0])
    assert volume.array[0, 0].tolist() == [-1024, 4095 - 1024, 0x400 - 1024, 1 - 1024]


def test_16_bit_values_are_clipped_and_fractional_slopes_rounded(tmp_path: Path) -> None:
    pixels = np.array([[0, 1, 3, 65535]], dtype=np.uint16).repeat(4, axis=0)
    make_ct(
        tmp_path / "a.dcm", series_uid="1.2.3", z=0.0, size=(4, 4), pixels=pixels, bits_stored=16
    )
    make_ct(
        tmp_path / "b.dcm",
        series_uid="1.2.4",
        z=0.0,
        size=(4, 4),
        pixels=pixels,
        bits_stored=16,
        slope=0.5,
        intercept=-1000.0,
    )
    groups, _ = scan_series(tmp_path)
    clipped = read_series(tmp_path, groups[0]).array[0, 0].tolist()
    rounded = read_series(tmp_path, groups[1]).array[0, 0].tolist()
    assert clipped == [-1024, -1023, -1021, 32767]
    assert rounded == [-1000, -1000, -998, 31768]  # -999.5, -998.5, 31767.5: half to even


def test_hu_flag(tmp_path: Path) -> None:
    make_ct(tmp_path / "ct.dcm", series_uid="1.2.3", z=0.0, slope=None, intercept=None)
    make_ct(tmp_path / "mr.dcm", series_uid="1.2.4", z=0.0, modality="MR")
    groups, _ = scan_series(tmp_path)
    assert [read_series(tmp_path, g).hu for g in groups] == [None, None]


def test_empty_group_is_an_error() -> None:
    with pytest.raises(VolumeError) as err:
        read_series(Path(), SeriesGroup("k", [], "AXIAL", False, 4, 4, None, None))
    assert err.value.kind == "no-pixel-data"


def test_relative_root_with_files_named_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    series(tmp_path / "raw" / "study", 4)
    monkeypatch.chdir(tmp_path)
    root = Path("raw")
    names = sorted(p.name for p in (tmp_path / "raw" / "study").iterdir())
    from_cwd = [root / "study" / n for n in names]  # as a folder walk from a relative root gives
    from_root = [Path("study") / n for n in names]  # relative to the root
    for files in (from_cwd, from_root, None):
        groups, problems = scan_series(root, files)
        assert problems == [] and len(groups) == 1
        assert len(groups[0].files) == 4 and groups[0].files[0].startswith("study/")
