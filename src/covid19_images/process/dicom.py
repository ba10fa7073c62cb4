"""One de-identified DICOM Secondary Capture per 2-D image: the minimally processed layer.

Two paths, chosen from the file's content (never its name):

* **JPEG, sequential (SOF0 baseline or SOF1 extended), 8-bit, 1 or 3 components**: the pixels are
  not decoded. The original entropy-coded bitstream is encapsulated as it is (JPEG Baseline
  ``1.2.840.10008.1.2.4.50`` or JPEG Extended ``1.2.840.10008.1.2.4.51``), so the DICOM holds
  exactly the film upstream published, with no second generation of lossy compression. Before
  that, a marker walker rebuilds the stream keeping only what a decoder needs: every APPn segment
  except a JFIF APP0 (its thumbnail dropped) and an Adobe APP14 where that is what marks the
  components as RGB, every COM segment, and anything after EOI are removed. EXIF, XMP, IPTC,
  ICC profiles, comments and appended trailers can carry names, dates and places.
* **Anything else** (PNG 8/16-bit, progressive or arithmetic-coded JPEG, BMP, TIFF, GIF, WEBP,
  a DICOM file; a 12-bit or CMYK JPEG where Pillow can decode it): decoded once with Pillow
  (pydicom for DICOM) to greyscale at native resolution and depth with the conversion of
  :func:`covid19_images.process.image.decode_image` (for a non-JPEG file, the very pixels whose
  hash is ``sha256_pixels``), and stored uncompressed (Explicit VR Little Endian, readable by
  every viewer), MONOCHROME2.
  Only the pixel values are taken from the input; none of its metadata reaches the output.

The header is built from the :class:`~covid19_images.records.Record` alone and follows the DICOM
PS3.15 Annex E Basic Application Level Confidentiality Profile with the Retain Patient
Characteristics option (sex and age kept; ages of 90 and over written as ``090Y``, as the HIPAA
Safe Harbor rule asks). Patient, study, series and instance identifiers are keyed hashes
(HMAC-SHA256 with a secret salt), so the same record always gives the same bytes and nobody
without the salt can link a file back to an upstream id, even by trying every id a source uses.
No date or time has a value: the Type 2 date attributes of the IOD are present and empty (the
profile's ``Z`` action), and ``LongitudinalTemporalInformationModified`` says ``REMOVED``.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    generate_uid,
)

from covid19_images.deid import keyed_hash
from covid19_images.process.image import DecodeError, _to_grey
from covid19_images.records import Record

SECONDARY_CAPTURE: Final = UID("1.2.840.10008.5.1.4.1.1.7")
"""SOP Class UID of the Secondary Capture Image Storage."""

PSEUDONYM_HEX: Final = 16
"""Hex digits kept of the HMAC-SHA256 (64 bits: a collision is unlikely below ~10^8 patients)."""

DEIDENTIFICATION_METHOD: Final = (
    "DICOM PS3.15 E.1 Basic Application Confidentiality Profile",
    "Retain Patient Characteristics Option",
    "ids: salted HMAC-SHA256 pseudonyms",
    "no metadata of the source file kept (covid19-images)",
)
"""Values of DeidentificationMethod (LO, at most 64 characters each)."""

_MODALITY: Final[dict[str, str]] = {"CR": "CR", "DX": "DX", "CT": "CT", "XR": "OT"}
_VIEW_POSITION: Final[dict[str, str]] = {"PA": "PA", "AP": "AP", "AP_SUPINE": "AP", "LATERAL": "LL"}
_DESCRIPTION: Final[dict[str, str]] = {
    "PA": "chest X-ray PA",
    "AP": "chest X-ray AP",
    "AP_SUPINE": "chest X-ray AP supine",
    "LATERAL": "chest X-ray lateral",
}

# JPEG markers (ITU-T T.81 table B.1).
_SOI, _EOI, _SOS, _COM, _APP0, _APP14 = 0xD8, 0xD9, 0xDA, 0xFE, 0xE0, 0xEE
_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE: Final = frozenset(range(0xD0, 0xD8)) | {0x01}
_RGB_IDS: Final = ([82, 71, 66], [114, 103, 98])
"""Component ids ``R G B`` or ``r g b``: the components are RGB (libjpeg's rule)."""
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""The next marker after entropy-coded data: not a stuffed 0xFF00, a restart marker or fill."""


class _NotEncapsulableError(Exception):
    """The JPEG cannot be stored as it is; the caller decodes it instead."""


@dataclass
class _Jpeg:
    """A cleaned JPEG stream and what its frame header says."""

    stream: bytes
    sof: int
    precision: int
    rows: int
    columns: int
    components: list[tuple[int, int, int]] = field(default_factory=list)
    """(component id, horizontal sampling factor, vertical sampling factor) per component."""
    jfif: bool = False
    adobe_transform: int | None = None


def pseudonym(value: str, salt: bytes) -> str:
    """A pseudonym for ``value``: HMAC-SHA256 keyed with ``salt``, first 16 hex digits.

    The same value and salt always give the same pseudonym; without the salt nobody can tell
    which value a pseudonym stands for, even by hashing every id a source could use.

    Raises:
        ValueError: If ``salt`` is empty (an unkeyed hash of a small id space is reversible).

    Example:
        >>> pseudonym("ieee8023:2", b"secret")
        'eb6ef00284e1f982'
        >>> pseudonym("ieee8023:2", b"secret") == pseudonym("ieee8023:2", b"other")
        False
    """
    return keyed_hash(value, salt)


def write_secondary_capture(
    image_path: Path, record: Record, out_path: Path, *, salt: bytes
) -> None:
    """Write ``image_path`` as a de-identified DICOM Secondary Capture Image to ``out_path``.

    A sequential 8-bit JPEG keeps its compressed bitstream (cleaned of APPn segments other than
    JFIF/Adobe, comments and trailing bytes); any other image is decoded to greyscale at its own
    resolution and bit depth and stored uncompressed. The header holds only what the record says
    (see the module docstring): pseudonymous PatientID/PatientName, sex, age, modality, view,
    body part CHEST, and ``ImageComments`` "source: <id>; licence: <licence>; research use only".

    Header choices:

    * Modality: CR, DX and CT as recorded; ``XR`` (a radiograph whose acquisition upstream does
      not state) and unknown become ``OT``. Modality claims a kind of acquisition device and
      viewers pick hanging protocols by it, so a guess of CR or DX would be a false statement;
      every viewer displays ``OT``, and BodyPartExamined, ViewPosition and SeriesDescription
      still say it is a chest radiograph.
    * ViewPosition: PA and AP as recorded, AP_SUPINE as ``AP`` (SeriesDescription keeps
      "supine"), LATERAL as ``LL``, the convention for chest laterals; absent when unknown.
    * BurnedInAnnotation ``YES``: many published films carry burned-in letters, markers or
      hospital text and nothing has cleaned the pixels, so tools must not assume otherwise.
    * ConversionType ``WSD`` (workstation), as dcmtk's img2dcm writes.

    The file is written to a temporary name beside ``out_path`` and renamed into place; writing
    the same record and image again gives byte-identical output.

    Args:
        image_path: The upstream image (any format Pillow reads, or a DICOM file).
        record: The image's record: uid, source, patient, study, series, modality, view, sex,
            age, licence and bits_stored are used.
        out_path: Where the ``.dcm`` file goes (its folder is created if needed).
        salt: Secret key of the pseudonyms and UIDs (keep it per source and out of the dataset).

    Raises:
        DecodeError: ``empty-file`` or ``unreadable-file`` when the image cannot be used.
        ValueError: If ``salt`` is empty.

    Example:
        >>> import tempfile
        >>> from pydicom import dcmread
        >>> folder = Path(tempfile.mkdtemp())
        >>> Image.new("L", (64, 48), 100).save(folder / "x.jpg")
        >>> record = Record(source="demo", path_raw="x.jpg", patient_id="demo:7",
        ...                 modality="XR", view="PA", sex="F", age=65.0, license="CC BY 4.0")
        >>> write_secondary_capture(folder / "x.jpg", record, folder / "x.dcm", salt=b"k")
        >>> ds = dcmread(folder / "x.dcm")
        >>> ds.Modality, ds.ViewPosition, ds.PatientAge, ds.PatientID == pseudonym("demo:7", b"k")
        ('OT', 'PA', '065Y', True)
        >>> ds.file_meta.TransferSyntaxUID.name, ds.pixel_array.shape
        ('JPEG Baseline (Process 1)', (48, 64))
    """
    if not salt:
        raise ValueError("the pseudonym salt must not be empty")
    try:
        data = image_path.read_bytes()
    except OSError as exc:
        raise DecodeError("unreadable-file", f"cannot read: {exc}") from exc
    if not data:
        raise DecodeError("empty-file", "zero-byte file")

    ds = _header(record, salt, hashlib.sha256(data).digest())
    transfer_syntax = ExplicitVRLittleEndian
    jpeg: _Jpeg | None = None
    if data.startswith(b"\xff\xd8"):
        try:
            jpeg = _clean_jpeg(data)
        except _NotEncapsulableError:
            jpeg = None
    if jpeg is not None:
        transfer_syntax = JPEGBaseline8Bit if jpeg.sof == 0xC0 else JPEGExtended12Bit
        _set_jpeg_pixels(ds, jpeg)
    else:
        _set_native_pixels(ds, _decode_grey(data), record.bits_stored)
        if record.attributes.get("photometric_interpretation") == "MONOCHROME1":
            ds.PhotometricInterpretation = "MONOCHROME1"  # the pixels as upstream stored them
        if data.startswith(b"\xff\xd8"):  # decoded from a lossy JPEG: the loss is in the pixels
            ds.LossyImageCompression = "01"
            ds.LossyImageCompressionMethod = "ISO_10918_1"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    _write_atomic(ds, out_path)


# --- header ---------------------------------------------------------------------------------


def _keyed_uid(salt: bytes, *parts: str) -> UID:
    """A UID from a keyed hash of ``parts``: stable, and unlinkable to them without the salt."""
    digest = hmac.new(salt, "\x00".join(parts).encode("utf-8"), hashlib.sha256).hexdigest()
    return generate_uid(entropy_srcs=[digest])


def _patient_age(age: float | None) -> str | None:
    """DICOM AS: ``065Y``; under a year in months; 90 and over as ``090Y``; None if unknown."""
    if age is None or age != age or age < 0:
        return None
    if age >= 90:
        return "090Y"
    if age < 1:
        return f"{int(age * 12):03d}M"
    return f"{int(age):03d}Y"


def _header(record: Record, salt: bytes, content_sha: bytes) -> Dataset:
    """The de-identified header of one image, from its record alone."""
    subject = record.patient_id or record.uid
    patient = pseudonym(subject, salt)
    # Study and series ids are scoped by patient (upstream often numbers studies per patient);
    # without them every image is its own study and series, never grouped by guess.
    if record.study_id:
        study: tuple[str, ...] = ("study", record.source, subject, record.study_id)
    elif record.series_id:
        study = ("study-of-series", record.source, subject, record.series_id)
    else:
        study = ("study-of-image", record.uid)
    if record.series_id:
        series: tuple[str, ...] = ("series", *study[1:], record.series_id)
    else:
        series = ("series-of-image", record.uid)
    text = f"source: {record.source}; licence: {record.license or 'unknown'}; research use only"
    modality = _MODALITY.get((record.modality or "").upper(), "OT")
    description = (
        "chest CT slice" if modality == "CT" else _DESCRIPTION.get(record.view, "chest X-ray")
    )

    ds = Dataset()
    if not (text + description).isascii():
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = _keyed_uid(salt, "instance", record.uid, content_sha.hex())
    # Type 2 attributes of the IOD are present and empty (PS3.15 action Z): no dates, no times.
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = description
    ds.SecondaryCaptureDeviceManufacturer = "covid19-images"
    ds.PatientName = patient
    ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.PatientSex = record.sex if record.sex in ("M", "F") else ""
    age = _patient_age(record.age)
    if age is not None:
        ds.PatientAge = age
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = list(DEIDENTIFICATION_METHOD)
    ds.DeidentificationMethodCodeSequence = Sequence(
        [
            _code("113100", "Basic Application Confidentiality Profile"),
            _code("113108", "Retain Patient Characteristics Option"),
        ]
    )
    ds.BodyPartExamined = "CHEST"
    view = _VIEW_POSITION.get(record.view)
    if view and modality != "CT":
        ds.ViewPosition = view
    ds.StudyInstanceUID = _keyed_uid(salt, *study)
    ds.SeriesInstanceUID = _keyed_uid(salt, *series)
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ImageComments = text
    ds.BurnedInAnnotation = "YES"
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    return ds


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


# --- JPEG, kept compressed ------------------------------------------------------------------


def _clean_jpeg(data: bytes) -> _Jpeg:
    """Rebuild a sequential JPEG with only the segments a decoder needs.

    Raises:
        _NotEncapsulableError: For progressive, lossless, hierarchical, arithmetic-coded, 12-bit,
            CMYK, height-in-DNL or malformed streams, and streams without an EOI marker.
    """
    out = [b"\xff\xd8"]
    pos, size = 2, len(data)
    sof: _Jpeg | None = None
    jfif = scanned = False
    adobe: int | None = None
    adobe_at = 0
    while True:
        if pos + 1 >= size or data[pos] != 0xFF:
            raise _NotEncapsulableError("no marker where one is due (truncated or corrupt)")
        while pos + 1 < size and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 1 >= size:
            raise _NotEncapsulableError("truncated")
        marker = data[pos + 1]
        if marker == _EOI:
            out.append(b"\xff\xd9")
            break  # whatever follows EOI (trailers, appended thumbnails) is left out
        if marker in _STANDALONE or marker == _SOI:
            raise _NotEncapsulableError(f"unexpected marker 0xFF{marker:02X}")
        if pos + 4 > size:
            raise _NotEncapsulableError("truncated")
        length = struct.unpack_from(">H", data, pos + 2)[0]
        end = pos + 2 + length
        if length < 2 or end > size:
            raise _NotEncapsulableError("truncated")
        segment = data[pos:end]
        body = segment[4:]
        if marker == _APP0:
            if body.startswith(b"JFIF\x00") and len(body) >= 14 and not jfif:
                jfif = True
                out.append(b"\xff\xe0\x00\x10" + body[:12] + b"\x00\x00")  # no thumbnail
        elif marker == _APP14:
            if body.startswith(b"Adobe") and len(body) >= 12 and adobe is None:
                adobe, adobe_at = body[11], len(out)  # placed below if it matters
        elif 0xE1 <= marker <= 0xEF or marker == _COM:
            pass  # EXIF, XMP, ICC, IPTC, comments: dropped
        elif marker in _SOF_MARKERS:
            if sof is not None or marker not in (0xC0, 0xC1):
                raise _NotEncapsulableError(f"not sequential Huffman (SOF 0xFF{marker:02X})")
            sof = _parse_sof(marker, body)
            out.append(segment)
        elif marker == _SOS:
            if sof is None:
                raise _NotEncapsulableError("scan before frame header")
            out.append(segment)
            found = _SCAN_END.search(data, end)
            if found is None:
                raise _NotEncapsulableError("no EOI after the scan (truncated)")
            out.append(data[end : found.start()])
            scanned = True
            pos = found.start()
            continue
        else:  # DQT, DHT, DRI, DNL, EXP and the like
            out.append(segment)
        pos = end
    if sof is None or not scanned:
        raise _NotEncapsulableError("no frame or no scan")
    sof.jfif = jfif
    sof.adobe_transform = adobe
    ids = [c[0] for c in sof.components]
    if not jfif and adobe not in (None, 0) and ids in _RGB_IDS:
        raise _NotEncapsulableError("Adobe says YCbCr, component ids say RGB")
    if len(sof.components) == 3 and _colour_space(sof) == "RGB" and adobe == 0:
        # The Adobe marker is what says "RGB" here; for grey and YCbCr streams it is left out,
        # as decoders then agree on YCbCr (pydicom's Pillow decoder would convert twice).
        out.insert(adobe_at, b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00")
    sof.stream = b"".join(out)
    return sof


def _parse_sof(marker: int, body: bytes) -> _Jpeg:
    if len(body) < 6:
        raise _NotEncapsulableError("short frame header")
    precision, rows, columns, count = struct.unpack_from(">BHHB", body)
    if precision != 8 or count not in (1, 3) or rows == 0 or columns == 0:
        raise _NotEncapsulableError(f"{precision}-bit, {count} components, {columns}x{rows}")
    if len(body) < 6 + 3 * count:
        raise _NotEncapsulableError("short frame header")
    components = [
        (body[6 + 3 * i], body[7 + 3 * i] >> 4, body[7 + 3 * i] & 0x0F) for i in range(count)
    ]
    return _Jpeg(b"", marker, precision, rows, columns, components)


def _colour_space(jpeg: _Jpeg) -> str:
    """Photometric interpretation of a 3-component stream, decided as libjpeg decides.

    A JFIF stream is YCbCr; otherwise an Adobe APP14 marker says (transform 0: RGB);
    otherwise component ids ``R``, ``G``, ``B`` mean RGB; anything else is YCbCr. YCbCr is
    written ``YBR_FULL_422`` whatever the chroma subsampling (4:2:0, 4:2:2 or 4:4:4), the value
    the standard gives for JPEG Baseline colour (DICOM CP 1653) and the one pydicom and dcmtk
    expect.
    """
    if jpeg.jfif:
        return "YBR_FULL_422"
    if jpeg.adobe_transform is not None:
        return "RGB" if jpeg.adobe_transform == 0 else "YBR_FULL_422"
    ids = [c[0] for c in jpeg.components]
    return "RGB" if ids in _RGB_IDS else "YBR_FULL_422"


def _set_jpeg_pixels(ds: Dataset, jpeg: _Jpeg) -> None:
    samples = len(jpeg.components)
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else _colour_space(jpeg)
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.Rows = jpeg.rows
    ds.Columns = jpeg.columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg.stream])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True


# --- everything else, decoded -----------------------------------------------------------------


def _decode_grey(data: bytes) -> np.ndarray:
    """Greyscale pixels (uint8 or uint16) of an image file's bytes, at native resolution."""
    if len(data) > 132 and data[128:132] == b"DICM":
        return _dicom_grey(data)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            grey, _ = _to_grey(img)
            pixels = np.asarray(grey)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DecodeError("unreadable-file", f"cannot decode: {exc}") from exc
    return pixels


def _dicom_grey(data: bytes) -> np.ndarray:
    """Only the pixels of a single-frame greyscale DICOM (MONOCHROME1 inverted); no header."""
    from pydicom import dcmread

    try:
        src = dcmread(io.BytesIO(data))
        if int(src.get("SamplesPerPixel", 1)) != 1 or int(src.get("NumberOfFrames", 1)) != 1:
            raise ValueError("only single-frame greyscale DICOM images are supported")
        if int(src.get("PixelRepresentation", 0)) != 0:
            raise ValueError("signed pixel data is not supported for 2-D images")
        pixels = np.asarray(src.pixel_array)
        bits = int(src.BitsStored)
        if src.PhotometricInterpretation == "MONOCHROME1":
            pixels = (2**bits - 1) - pixels
    except Exception as exc:
        raise DecodeError("unreadable-file", f"cannot decode DICOM: {exc}") from exc
    return pixels.astype(np.uint8 if bits <= 8 else np.uint16)


def _set_native_pixels(ds: Dataset, pixels: np.ndarray, bits_hint: int | None) -> None:
    if pixels.ndim != 2:
        raise DecodeError("unreadable-file", f"not a 2-D image (shape {pixels.shape})")
    rows, columns = pixels.shape
    if rows > 0xFFFF or columns > 0xFFFF or rows == 0 or columns == 0:
        raise DecodeError("unreadable-file", f"{columns}x{rows} px cannot be a DICOM image")
    wide = pixels.dtype.itemsize > 1
    allocated = 16 if wide else 8
    top = int(pixels.max())
    if not wide:
        stored = 8
    elif bits_hint is not None and 8 < bits_hint < 16 and top < 2**bits_hint:
        stored = bits_hint  # the detector's depth, as upstream states it (e.g. BIMCV's 12)
    else:
        stored = max(top.bit_length(), 1)  # from the data: 12-bit values in 16-bit PNGs
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = allocated
    ds.BitsStored = stored
    ds.HighBit = stored - 1
    ds.PixelRepresentation = 0
    if wide:  # without a window many viewers show 12-bit data in 16-bit as near black
        low = int(pixels.min())
        ds.WindowCenter = (low + top) // 2
        ds.WindowWidth = max(top - low, 1)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2" if wide else "u1").tobytes()
    ds["PixelData"].VR = "OW" if wide else "OB"


def _write_atomic(ds: Dataset, out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with tmp.open("xb") as fh:
            ds.save_as(fh, enforce_file_format=True)
        tmp.replace(out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
