"""De-identified Secondary Capture DICOM: both pixel paths, the header, and what must not leak."""

from __future__ import annotations

import hashlib
import io
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from covid19_images.process.dicom import (
    SECONDARY_CAPTURE,
    _clean_jpeg,
    pseudonym,
    write_secondary_capture,
)
from covid19_images.process.image import DecodeError, decode_image
from covid19_images.records import Record

SALT = b"test-salt"
RAW_PATIENT = "unit:PX-4711-Q"
FAKE_NAME = "Jane Doe"
FAKE_DATE = "2020:03:14 09:26:53"


def _radiograph(size: tuple[int, int] = (400, 300), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    lungs = 120 + 60 * np.sin(x / 40.0) * np.cos(y / 50.0)
    return np.clip(lungs + rng.normal(0, 8, lungs.shape), 0, 255).astype(np.uint8)


def _colour(size: tuple[int, int] = (400, 300), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    planes = [
        120 + 60 * np.sin(x / 30),
        100 + 50 * np.cos(y / 20),
        90 + 40 * np.sin((x + y) / 25),
    ]
    rgb = np.stack(planes, axis=-1) + rng.normal(0, 10, (size[1], size[0], 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _record(**changes: object) -> Record:
    values: dict[str, object] = {
        "source": "unit",
        "path_raw": "images/a.jpg",
        "patient_id": RAW_PATIENT,
        "modality": "XR",
        "view": "PA",
        "sex": "F",
        "age": 65.0,
        "license": "CC BY 4.0",
    }
    values.update(changes)
    return Record(**values)  # type: ignore[arg-type]


def _write(image: Path, tmp_path: Path, record: Record | None = None) -> tuple[Path, Dataset]:
    out = tmp_path / "out" / (image.name + ".dcm")
    write_secondary_capture(image, record or _record(), out, salt=SALT)
    return out, dcmread(out)


def _markers(stream: bytes) -> list[int]:
    """Markers of a JPEG's header segments, up to the first SOS."""
    pos, found = 2, []
    while True:
        marker = stream[pos + 1]
        found.append(marker)
        if marker == 0xDA:
            return found
        pos += 2 + struct.unpack_from(">H", stream, pos + 2)[0]


def _decode(source: Path | bytes, mode: str | None = None) -> np.ndarray:
    """Pillow's decode of a file or of JPEG bytes, optionally converted to ``mode``."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        return np.asarray(img.convert(mode) if mode else img)


def _frame(ds: Dataset) -> bytes:
    return next(generate_frames(ds.PixelData, number_of_frames=1))


def _assert_clean(data: bytes) -> None:
    """None of the personal values planted in the inputs may be anywhere in the output."""
    for needle in (
        FAKE_NAME,
        FAKE_DATE,
        "2020:03:14",
        "20200314",
        "2020-03-14",
        RAW_PATIENT,
        "PX-4711-Q",
    ):
        assert needle.encode() not in data, needle
        assert needle.encode("utf-16-le") not in data, needle
    for marker in (b"Exif\x00", b"http://ns.adobe.com", b"Photoshop 3.0", b"ICC_PROFILE"):
        assert marker not in data


# --- pseudonyms -------------------------------------------------------------------------------


def test_pseudonym_is_keyed_stable_and_short() -> None:
    a = pseudonym("ieee8023:2", SALT)
    assert a == pseudonym("ieee8023:2", SALT)
    assert a != pseudonym("ieee8023:2", b"another salt")
    assert a != pseudonym("ieee8023:3", SALT)
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != hashlib.sha256(b"ieee8023:2").hexdigest()[:16]  # not an unkeyed hash
    with pytest.raises(ValueError, match="salt"):
        pseudonym("ieee8023:2", b"")


# --- JPEG kept compressed ---------------------------------------------------------------------


def test_grey_jpeg_is_encapsulated_without_decoding(tmp_path: Path) -> None:
    path = tmp_path / "grey.jpg"
    Image.fromarray(_radiograph()).save(path, quality=90)
    out, ds = _write(path, tmp_path)
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.SOPClassUID == SecondaryCaptureImageStorage == SECONDARY_CAPTURE
    assert ds.file_meta.MediaStorageSOPClassUID == SECONDARY_CAPTURE
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (300, 400, 1)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (8, 8, 7, 0)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.LossyImageCompression == "01"
    original = _decode(path)
    # The stored stream decodes to exactly the original's pixels ...
    assert np.array_equal(_decode(_frame(ds)), original)
    # ... through pydicom with Pillow, exactly; with pylibjpeg's libjpeg, within IDCT rounding.
    assert np.array_equal(pixel_array(out, decoding_plugin="pillow"), original)
    other = pixel_array(out, decoding_plugin="pylibjpeg").astype(int)
    assert np.abs(other - original).max() <= 1


@pytest.mark.parametrize("subsampling", [2, 1, 0], ids=["4:2:0", "4:2:2", "4:4:4"])
def test_colour_jpeg_is_ybr_full_422_and_decodes_to_the_same_colours(
    tmp_path: Path, subsampling: int
) -> None:
    path = tmp_path / "colour.jpg"
    Image.fromarray(_colour()).save(path, quality=90, subsampling=subsampling)
    out, ds = _write(path, tmp_path)
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert (ds.SamplesPerPixel, ds.PhotometricInterpretation) == (3, "YBR_FULL_422")
    assert ds.PlanarConfiguration == 0
    with Image.open(path) as img:
        img.draft("YCbCr", img.size)
        ycbcr = np.asarray(img)
    rgb = _decode(path, "RGB").astype(int)
    assert np.array_equal(_decode(_frame(ds)), rgb)
    # The components as stored: identical to Pillow's decode.
    assert np.array_equal(pixel_array(out, decoding_plugin="pillow", raw=True), ycbcr)
    # As RGB, pydicom's colour conversion rounds differently from libjpeg-turbo's by at most 1.
    assert np.abs(pixel_array(out, decoding_plugin="pillow").astype(int) - rgb).max() <= 1
    # Another JPEG implementation (pylibjpeg-libjpeg) upsamples and rounds its own way.
    libjpeg = pixel_array(out, decoding_plugin="pylibjpeg").astype(int)
    assert np.abs(libjpeg - rgb).max() <= 8
    assert np.abs(libjpeg - rgb).mean() < 0.5


def test_exif_comments_and_trailers_are_stripped(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x013B] = FAKE_NAME  # Artist
    exif[0x0132] = FAKE_DATE  # DateTime
    exif[0x010E] = f"patient {RAW_PATIENT}"  # ImageDescription
    xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>{FAKE_NAME}</dc:creator></x:xmpmeta>'
    path = tmp_path / "exif.jpg"
    Image.fromarray(_radiograph()).save(
        path,
        quality=90,
        exif=exif.tobytes(),
        comment=f"{FAKE_NAME} {FAKE_DATE}",
        xmp=xmp.encode(),
        restart_marker_blocks=3,
    )
    with path.open("ab") as fh:  # a trailer after EOI, as some cameras and editors append
        fh.write(f"{FAKE_NAME} {RAW_PATIENT}".encode())
    raw = path.read_bytes()
    assert FAKE_NAME.encode() in raw and FAKE_DATE.encode() in raw

    out, ds = _write(path, tmp_path)
    data = out.read_bytes()
    _assert_clean(data)
    frame = _frame(ds)
    assert _markers(frame)[0] == 0xE0  # JFIF kept ...
    assert not set(_markers(frame)) & ({0xFE} | set(range(0xE1, 0xF0)))  # ... nothing else
    assert frame.rstrip(b"\x00").endswith(b"\xff\xd9")  # ends at EOI (one pad byte at most)
    assert frame.count(b"\xff\xd0") > 0  # restart markers inside the scan survive
    original = _decode(path)
    assert np.array_equal(pixel_array(out, decoding_plugin="pillow"), original)
    assert ds.PatientID == ds.PatientName == pseudonym(RAW_PATIENT, SALT)


def test_extended_sequential_jpeg_gets_the_extended_transfer_syntax(tmp_path: Path) -> None:
    path = tmp_path / "sof1.jpg"
    Image.fromarray(_radiograph()).save(path, quality=90)
    data = path.read_bytes()
    sof0 = data.index(b"\xff\xc0")
    path.write_bytes(data[:sof0] + b"\xff\xc1" + data[sof0 + 2 :])  # same coding, SOF1 header
    out, ds = _write(path, tmp_path)
    assert ds.file_meta.TransferSyntaxUID == JPEGExtended12Bit
    assert (ds.BitsAllocated, ds.BitsStored) == (8, 8)
    original = _decode(tmp_path / "sof1.jpg")
    assert np.array_equal(pixel_array(out, decoding_plugin="pillow"), original)


def test_adobe_ycbcr_stream_is_not_converted_twice(tmp_path: Path) -> None:
    """A YCbCr stream marked by Adobe APP14 instead of JFIF (as in ieee8023's 2-chest-filmc)."""
    path = tmp_path / "adobe.jpg"
    Image.fromarray(_colour()).save(path, quality=90)
    data = path.read_bytes()
    app0_end = 4 + struct.unpack_from(">H", data, 4)[0]
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x01"  # transform 1: YCbCr
    path.write_bytes(b"\xff\xd8" + adobe + data[app0_end:])
    with Image.open(path) as img:
        assert img.info.get("adobe_transform") == 1
    out, ds = _write(path, tmp_path)
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    rgb = _decode(path, "RGB").astype(int)
    for plugin in ("pillow", "pylibjpeg"):
        assert np.abs(pixel_array(out, decoding_plugin=plugin).astype(int) - rgb).mean() < 0.5


def test_clean_jpeg_refuses_what_it_cannot_keep(tmp_path: Path) -> None:
    grey = _radiograph()
    progressive, cmyk = io.BytesIO(), io.BytesIO()
    Image.fromarray(grey).save(progressive, "JPEG", progressive=True)
    Image.fromarray(grey).convert("CMYK").save(cmyk, "JPEG")
    good = io.BytesIO()
    Image.fromarray(grey).save(good, "JPEG")
    for data in (progressive.getvalue(), cmyk.getvalue(), good.getvalue()[:-500], b"\xff\xd8"):
        with pytest.raises(Exception, match=r".") as info:
            _clean_jpeg(data)
        assert type(info.value).__name__ == "_NotEncapsulableError"
    cleaned = _clean_jpeg(good.getvalue() + b"\x00trailing garbage")
    assert cleaned.stream.endswith(b"\xff\xd9")
    assert (cleaned.rows, cleaned.columns, cleaned.precision) == (300, 400, 8)


# --- everything else, decoded -------------------------------------------------------------------


def test_progressive_jpeg_is_decoded_to_grey(tmp_path: Path) -> None:
    path = tmp_path / "progressive.jpg"
    Image.fromarray(_colour()).save(path, quality=90, progressive=True, comment=FAKE_NAME)
    out, ds = _write(path, tmp_path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsStored) == (
        1,
        "MONOCHROME2",
        8,
    )
    assert ds.LossyImageCompression == "01"  # decoded from a lossy original
    assert np.array_equal(ds.pixel_array, _decode(path, "L"))
    _assert_clean(out.read_bytes())


def test_png_8_bit_is_stored_losslessly_without_its_text_chunks(tmp_path: Path) -> None:
    path = tmp_path / "eight.png"
    info = PngInfo()
    info.add_text("Author", FAKE_NAME)
    info.add_itxt("Creation Time", FAKE_DATE)
    info.add_text("Comment", RAW_PATIENT, zip=True)
    Image.fromarray(_radiograph()).save(path, pnginfo=info)
    out, ds = _write(path, tmp_path, _record(path_raw="images/eight.png", bits_stored=8))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (8, 8, 7)
    assert "LossyImageCompression" not in ds
    assert np.array_equal(ds.pixel_array, _radiograph())
    _assert_clean(out.read_bytes())


def test_png_16_bit_keeps_its_depth_and_values(tmp_path: Path) -> None:
    pixels = (_radiograph().astype(np.uint16) * 16 + 7).astype(np.uint16)  # 12-bit values
    path = tmp_path / "sixteen.png"
    Image.fromarray(pixels).save(path)
    _, ds = _write(path, tmp_path, _record(path_raw="images/sixteen.png", bits_stored=16))
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)  # from the data
    assert ds.pixel_array.dtype == np.uint16
    assert np.array_equal(ds.pixel_array, pixels)
    assert ds.WindowWidth > 0
    _, stated = _write(path, tmp_path, _record(path_raw="images/sixteen.png", bits_stored=13))
    assert stated.BitsStored == 13  # upstream's stated depth wins where the values fit


def test_decoded_pixels_are_the_ones_the_pipeline_hashes(tmp_path: Path) -> None:
    grey = _radiograph()
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 200)])
    paths = {"rgb.png": np.stack([grey] * 3, axis=-1), "rgba.png": rgba, "grey.bmp": grey}
    for name, pixels in paths.items():
        Image.fromarray(pixels).save(tmp_path / name)
        _, ds = _write(tmp_path / name, tmp_path)
        expected = decode_image(tmp_path / name).sha256_pixels
        assert hashlib.sha256(ds.pixel_array.tobytes()).hexdigest() == expected, name


def test_dicom_input_gives_only_its_pixels(tmp_path: Path) -> None:
    pixels = (_radiograph().astype(np.uint16) * 4).astype(np.uint16)
    src = Dataset()
    src.PatientName = FAKE_NAME
    src.PatientID = RAW_PATIENT
    src.StudyDate = "20200314"
    src.InstitutionName = "St Elsewhere"
    src.SOPClassUID = SecondaryCaptureImageStorage
    src.SOPInstanceUID = generate_uid()
    src.file_meta = FileMetaDataset()
    src.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    src.set_pixel_data(pixels, "MONOCHROME1", 10)
    path = tmp_path / "IM000123"
    src.save_as(path, enforce_file_format=True)
    out, ds = _write(path, tmp_path)
    data = out.read_bytes()
    _assert_clean(data)
    assert b"St Elsewhere" not in data and src.SOPInstanceUID.encode() not in data
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert np.array_equal(ds.pixel_array, 1023 - pixels)  # MONOCHROME1 inverted


# --- header -------------------------------------------------------------------------------------


def test_header_says_what_the_record_says_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    Image.fromarray(_radiograph()).save(path)
    out, ds = _write(path, tmp_path, _record(license="CC BY-NC-SA 4.0"))
    assert ds.Modality == "OT" and ds.ConversionType == "WSD"
    assert (ds.ViewPosition, ds.BodyPartExamined) == ("PA", "CHEST")
    assert (ds.PatientSex, ds.PatientAge) == ("F", "065Y")
    assert ds.PatientID == pseudonym(RAW_PATIENT, SALT) == str(ds.PatientName)
    assert ds.PatientIdentityRemoved == "YES"
    assert "PS3.15" in ds.DeidentificationMethod[0]
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113108"]
    assert ds.ImageComments == "source: unit; licence: CC BY-NC-SA 4.0; research use only"
    assert ds.BurnedInAnnotation == "YES"
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    for absent in ("Manufacturer", "InstitutionName", "InstitutionAddress", "OtherPatientIDs"):
        assert absent not in ds
    for element in ds.iterall():
        if element.VR in ("DA", "TM", "DT"):
            assert not element.value, element  # dates and times: present only where required
    assert all(len(uid) <= 64 and uid.is_valid for uid in _uids(ds))
    assert b"ieee" not in out.read_bytes() and RAW_PATIENT.encode() not in out.read_bytes()


def _uids(ds: Dataset) -> list[str]:
    return [ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID]


@pytest.mark.parametrize(
    ("modality", "view", "age", "expected"),
    [
        ("CR", "AP", 34.9, ("CR", "AP", "034Y")),
        ("DX", "AP_SUPINE", 0.5, ("DX", "AP", "006M")),
        ("XR", "LATERAL", 95.0, ("OT", "LL", "090Y")),
        (None, "UNKNOWN", None, ("OT", None, None)),
        ("CT", "AXIAL", float("nan"), ("CT", None, None)),
    ],
)
def test_modality_view_and_age_mapping(
    tmp_path: Path,
    modality: str | None,
    view: str,
    age: float | None,
    expected: tuple[str, str | None, str | None],
) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(_radiograph()).save(path)
    _, ds = _write(path, tmp_path, _record(modality=modality, view=view, age=age, sex=None))
    assert (ds.Modality, ds.get("ViewPosition"), ds.get("PatientAge")) == expected
    assert ds.PatientSex == ""
    if view == "AP_SUPINE":
        assert "supine" in ds.SeriesDescription


def test_rebuilds_are_byte_identical_and_uids_group_as_upstream_does(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    Image.fromarray(_radiograph()).save(path)
    first = tmp_path / "one.dcm"
    write_secondary_capture(path, _record(study_id="s1"), first, salt=SALT)
    again = tmp_path / "again" / "one.dcm"
    write_secondary_capture(path, _record(study_id="s1"), again, salt=SALT)
    assert first.read_bytes() == again.read_bytes()
    write_secondary_capture(path, _record(study_id="s1"), first, salt=SALT)  # overwrite in place
    assert first.read_bytes() == again.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    a = dcmread(first)
    b = dcmread(_write(path, tmp_path, _record(path_raw="images/b.jpg", study_id="s1"))[0])
    c = dcmread(_write(path, tmp_path, _record(path_raw="images/c.jpg"))[0])
    d = dcmread(_write(path, tmp_path, _record(path_raw="images/c.jpg", patient_id="unit:9"))[0])
    assert a.StudyInstanceUID == b.StudyInstanceUID  # same patient, same upstream study
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.SeriesInstanceUID != b.SeriesInstanceUID  # no series id: one series per image
    assert c.StudyInstanceUID not in (a.StudyInstanceUID, c.SeriesInstanceUID)
    assert d.PatientID != c.PatientID
    salted = tmp_path / "salted.dcm"
    write_secondary_capture(path, _record(study_id="s1"), salted, salt=b"other")
    e = dcmread(salted)
    assert set(_uids(e)).isdisjoint(_uids(a)) and e.PatientID != a.PatientID


def test_bad_inputs_raise_decode_errors_and_leave_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(_radiograph()).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    out = tmp_path / "out"
    with pytest.raises(DecodeError) as info:
        write_secondary_capture(empty, _record(), out / "e.dcm", salt=SALT)
    assert info.value.kind == "empty-file"
    for bad in (garbage, truncated, tmp_path / "missing.png"):
        with pytest.raises(DecodeError) as info:
            write_secondary_capture(bad, _record(), out / "x.dcm", salt=SALT)
        assert info.value.kind == "unreadable-file"
    with pytest.raises(ValueError, match="salt"):
        write_secondary_capture(garbage, _record(), out / "x.dcm", salt=b"")
    assert not out.exists() or list(out.iterdir()) == []


def test_simpleitk_reads_the_same_pixels(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    jpeg, png = tmp_path / "a.jpg", tmp_path / "b.png"
    Image.fromarray(_radiograph()).save(jpeg)
    Image.fromarray((_radiograph().astype(np.uint16) * 16).astype(np.uint16)).save(png)
    for path in (jpeg, png):
        out, ds = _write(path, tmp_path)
        theirs = np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(str(out)))).astype(int)
        assert np.abs(theirs - ds.pixel_array.astype(int)).max() <= 1


# --- real upstream files ------------------------------------------------------------------------

REAL = (
    "000001-17.jpg",  # grey baseline
    "4C4DEFD8-F55D-4588-AAD6-C59017F55966.jpeg",  # colour 4:2:2 with EXIF
    "2-chest-filmc.jpg",  # colour, Adobe APP14 instead of JFIF, EXIF and XMP
    "0b1cb8905fd8839a001d7a707f0c3f_jumbo.jpg",  # progressive
    "000001-3.png",  # RGB PNG
    "fff49165-b22d-4bb4-b9d1-d5d62c52436c.annot.original.png",
)


def test_real_ieee8023_images(shared_sources: Path, tmp_path: Path) -> None:
    images = shared_sources / "ieee8023-covid-chestxray" / "images"
    names = [name for name in REAL if (images / name).is_file()]
    if not names:
        pytest.skip("none of the sample ieee8023 images is present")
    timings: dict[bool, list[float]] = {True: [], False: []}
    for name in names:
        src = images / name
        raw = src.read_bytes()
        out = tmp_path / f"{name}.dcm"
        record = _record(source="ieee8023", path_raw=f"images/{name}", patient_id=RAW_PATIENT)
        start = time.perf_counter()
        write_secondary_capture(src, record, out, salt=SALT)
        ds = dcmread(out)
        encapsulated = ds.file_meta.TransferSyntaxUID.is_compressed
        timings[encapsulated].append(time.perf_counter() - start)
        data = out.read_bytes()
        _assert_clean(data)
        with Image.open(src) as img:
            comment = img.info.get("comment")
            decoded = np.asarray(img.convert("RGB" if img.mode != "L" else "L"))
        if comment and len(comment) > 8:
            assert comment not in data, name
        if encapsulated:
            assert raw.startswith(b"\xff\xd8")
            frame_pixels = _decode(_frame(ds))
            assert np.array_equal(frame_pixels, decoded), name
            ours = pixel_array(out, decoding_plugin="pillow").astype(int)
            assert np.abs(ours - decoded.astype(int)).max() <= 1, name
        else:
            assert ds.PhotometricInterpretation == "MONOCHROME2"
            if not raw.startswith(b"\xff\xd8"):  # lossless: exactly the pipeline's pixels
                expected = decode_image(src).sha256_pixels
                assert hashlib.sha256(ds.pixel_array.tobytes()).hexdigest() == expected
    assert timings[True] and timings[False]
