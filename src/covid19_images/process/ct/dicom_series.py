"""DICOM CT series: find the volumes in a folder of slice files, then read one into HU.

:func:`scan_series` reads headers only and sorts every file of a folder into
:class:`SeriesGroup` objects, each a stack of slices that can be read as one volume: same series,
same orientation, same size. What cannot be part of a volume becomes a :class:`SeriesProblem`
instead: a file that is not DICOM, is cut short or has no pixels (a DICOMDIR), a localizer
(scout), a lone reformatted image of another orientation than the rest of its series. A group
keeps the problems that do not stop it from being read (a missing slice, uneven spacing).

:func:`read_series` decodes a group's pixels into an int16 Hounsfield-unit :class:`Volume`,
voxel for voxel what SimpleITK's ``ImageSeriesReader`` gives for the same files:

* slices are ordered along the slice normal ``n = row_cosine x column_cosine`` by
  ``dot(ImagePositionPatient, n)``, ascending, as GDCM's ``IPPSorter`` does;
* ``origin`` is the position of the first slice, ``direction`` has the row cosine, the column
  cosine and ``n`` as its columns, ``spacing`` is (PixelSpacing column, PixelSpacing row, z);
* z is the median distance between consecutive slices. For evenly spaced slices this equals
  SimpleITK's value. For a series with a gap or uneven spacing (a ``slice-gap`` problem on the
  group) the slices are stacked as they are, without resampling, so the volume's grid is only
  approximate there; SimpleITK would do the same with its own single spacing;
* HU = stored value x RescaleSlope + RescaleIntercept, computed exactly in integers when both
  are integral, else in float64 and rounded half to even; then clipped to the int16 range. The
  stored value is first taken from its BitsStored low bits (unused high bits are cleared) and
  sign-extended when PixelRepresentation is 1.

Given a list for the slices it leaves out, :func:`read_series` drops a slice that cannot be
read (damaged, or pixels that disagree with the header, such as ``BitsAllocated`` 8 over
16-bit pixel data) with a ``slice-gap`` problem naming it, and stacks the rest without it on the
median spacing, so the positions of the slices after it are approximate.

Compressed pixels are decoded by pydicom's decoders (pylibjpeg-libjpeg for JPEG and JPEG-LS,
pylibjpeg-openjpeg or Pillow for JPEG 2000, pydicom itself for RLE). Where the optional
``imagecodecs`` package is installed, JPEG (baseline, extended and lossless) frames are decoded
with its libjpeg-turbo instead, about four times faster, on a small thread pool (it releases the
GIL). A missing decoder is a :class:`VolumeError` of kind ``unsupported-transfer-syntax`` that
names the package to install; a file that cannot be decoded is one of kind ``unreadable-file``.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import os
import statistics
import struct
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from covid19_images.process.ct.volume import MAX_VOXELS, Volume, VolumeError, check_size

ORIENTATIONS: Final = ("AXIAL", "CORONAL", "SAGITTAL", "OBLIQUE")
_AXIS_NAMES: Final = ("SAGITTAL", "CORONAL", "AXIAL")  # the main LPS axis of the slice normal
MAIN_AXIS_MIN: Final = 0.8
"""Smallest |component| of the unit slice normal along its main axis for the slices to count
as axial, coronal or sagittal (about 37 degrees of tilt at most); below it they are oblique."""

SAME_ORIENTATION_TOL: Final = 1e-3
"""Largest difference of any ImageOrientationPatient value for two images to share a group."""
DUPLICATE_TOL_MM: Final = 1e-3
"""Two slices of a group closer than this along the normal are at the same position."""
GAP_FACTOR: Final = 1.5
"""A step longer than this many median steps is a gap (a missing slice)."""
UNEVEN_SPREAD: Final = 0.01
"""Steps whose (max - min) / median exceeds this are uneven spacing."""
MIN_OWN_GROUP: Final = 3
"""Images of a minority orientation in a series form their own group from this many on."""

_DICOMDIR_CLASS: Final = "1.2.840.10008.1.3.10"
_TAIL_BYTES: Final = 4096
_SEQUENCE_END: Final = {True: b"\xfe\xff\xdd\xe0\0\0\0\0", False: b"\xff\xfe\xe0\xdd\0\0\0\0"}
_FRAME_END_SYNTAXES: Final = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)
"""Codestreams (JPEG, JPEG-LS, JPEG 2000) that end with the marker FFD9 (EOI or EOC)."""
_PIXEL_TAG_BYTES: Final = b"\xe0\x7f\x10\x00"
_PIXEL_TAGS: Final = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_LONG_VRS: Final = frozenset({b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UN", b"UC"})
_DECODER_PACKAGES: Final[dict[str, str]] = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",
}
"""The packages to ``pip install`` for each compressed transfer syntax."""
_TURBO_SYNTAXES: Final = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
    }
)
"""JPEG processes libjpeg-turbo 3 decodes (baseline, extended, lossless)."""


def _load_turbo() -> Callable[[bytes], np.ndarray[Any, Any]] | None:
    """imagecodecs' libjpeg-turbo decoder, where installed (an optional speed-up)."""
    try:
        codecs: Any = importlib.import_module("imagecodecs")
        if not codecs.JPEG8.available:
            return None
        decode: Callable[[bytes], np.ndarray[Any, Any]] = codecs.jpeg8_decode
        return decode
    except (ImportError, AttributeError):
        return None


_TURBO = _load_turbo()
DECODE_THREADS: Final = 2
"""Threads that decode slices when the decoder releases the GIL (imagecodecs)."""


@dataclass(frozen=True)
class SeriesProblem:
    """A file that is not part of any volume, or a flaw of a group that is kept.

    Example:
        >>> p = SeriesProblem("IM000116", "localizer", "a localizer (scout) image of series 1")
        >>> p.kind
        'localizer'
    """

    file: str
    """Path relative to the scan root (POSIX)."""
    kind: str
    """A :data:`covid19_images.problems.KINDS` key."""
    detail: str
    """One sentence; nothing that identifies a person, a place or a date."""


@dataclass
class SeriesGroup:
    """Slices that make one volume: one series, one orientation, one image size.

    Example:
        >>> g = SeriesGroup("0123456789ab", ["a", "b"], "AXIAL", True, 512, 512, 605, 15.0)
        >>> g.label()
        'series 605, axial, derived, 2 slices'
    """

    key: str
    """Stable id: sha256 of SeriesInstanceUID|orientation|rows|columns, 12 hex digits."""
    files: list[str]
    """Relative POSIX paths in slice order (ascending along the slice normal)."""
    orientation: str
    """``AXIAL``, ``CORONAL``, ``SAGITTAL`` or ``OBLIQUE``."""
    derived: bool
    """ImageType's first value is DERIVED, or REFORMATTED is one of its values."""
    rows: int
    columns: int
    series_number: int | None
    slice_spacing: float | None
    """Median distance in mm between consecutive slice positions (None for one slice)."""
    problems: list[SeriesProblem] = field(default_factory=list)
    """Gaps and uneven spacing found in this group; the group is still read."""

    def label(self) -> str:
        """A short description for messages and logs."""
        number = "?" if self.series_number is None else str(self.series_number)
        parts = [f"series {number}", self.orientation.lower()]
        if self.derived:
            parts.append("derived")
        count = len(self.files)
        parts.append(f"{count} slice{'s' if count != 1 else ''}")
        return ", ".join(parts)


@dataclass
class _Header:
    """What :func:`scan_series` keeps of one image file's header."""

    file: str
    series_uid: str
    series_number: int | None
    rows: int
    columns: int
    iop: tuple[float, ...]
    normal: np.ndarray[Any, Any]
    position: float
    orientation: str
    derived: bool


# --- scanning -----------------------------------------------------------------------------------


def scan_series(
    root: Path, files: Iterable[Path] | None = None
) -> tuple[list[SeriesGroup], list[SeriesProblem]]:
    """Sort the DICOM files under ``root`` into volumes (groups) and problems; headers only.

    ``files`` (absolute, or relative to ``root``) defaults to every file under ``root``, with any
    name or none (``IM000123``). Never raises on bad files: each becomes a problem.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (Path(tmp) / "notes.txt").write_text("not an image")
        ...     groups, problems = scan_series(Path(tmp))
        >>> groups, [(p.file, p.kind) for p in problems]
        ([], [('notes.txt', 'unreadable-file')])
    """
    root = Path(root)
    if files is None:
        paths = sorted(p for p in root.rglob("*") if p.is_file())
    else:
        paths = [p if _under(p, root) else root / p for p in map(Path, files)]
    headers: list[_Header] = []
    problems: list[SeriesProblem] = []
    with warnings.catch_warnings():  # pydicom warns on damaged files; they become problems
        warnings.simplefilter("ignore")
        for path in paths:
            rel = _relative(path, root)
            header = _read_header(path, rel, problems)
            if header is not None:
                headers.append(header)
    groups = _group(headers, problems)
    problems.sort(key=lambda p: (p.file, p.kind))
    return groups, problems


def _under(path: Path, root: Path) -> bool:
    """Whether ``path`` already names a place under ``root`` (absolute, or starting with it)."""
    if path.is_absolute():
        return True
    return root.parts != () and path.parts[: len(root.parts)] == root.parts


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _read_header(path: Path, rel: str, problems: list[SeriesProblem]) -> _Header | None:
    """The header of one file, or None with a problem added."""

    def problem(kind: str, detail: str) -> None:
        problems.append(SeriesProblem(rel, kind, detail))

    try:
        size = path.stat().st_size
        if size == 0:
            problem("empty-file", "a zero-byte file")
            return None
        with path.open("rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
            stop = fh.tell()
            next_bytes = fh.read(12)
            fh.seek(max(stop, size - _TAIL_BYTES))
            tail = fh.read()
    except Exception as exc:  # pydicom raises many types on damaged files
        problem("unreadable-file", f"cannot read the DICOM header ({type(exc).__name__})")
        return None
    try:
        return _header_from(ds, rel, size, stop, next_bytes, tail, problem)
    except Exception as exc:  # a value that cannot be parsed, deep in the header
        problem("unreadable-file", f"a DICOM header value cannot be read ({type(exc).__name__})")
        return None


def _header_from(
    ds: Dataset,
    rel: str,
    size: int,
    stop: int,
    next_bytes: bytes,
    tail: bytes,
    problem: Callable[[str, str], None],
) -> _Header | None:
    meta = getattr(ds, "file_meta", None)
    media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    has_preamble = getattr(ds, "preamble", None) is not None
    if not has_preamble and not any(
        tag in ds for tag in (0x00080016, 0x00080060, 0x00280010, 0x0020000E)
    ):
        problem("unreadable-file", "not a DICOM file")
        return None
    if media_class == _DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        problem("no-pixel-data", "a DICOMDIR (an index of other files), no image")
        return None
    little = _little_endian(ds)
    pixel_tag = _element_tag(next_bytes, little)
    if pixel_tag not in _PIXEL_TAGS:
        sop = str(ds.get("SOPClassUID", "") or media_class)
        if _cut_short(ds, size):
            problem("unreadable-file", "the file is cut short inside its header")
        elif len(ds) == 0:
            problem(
                "unreadable-file",
                f"the file ends after {size} bytes, before its first data element: cut short",
            )
        elif "Image Storage" in UID(sop).name or "Rows" in ds:
            problem(
                "no-pixel-data",
                f"an image ({UID(sop).name or 'Rows in the header'}) without its pixel data: "
                "stripped, or cut short before them",
            )
        else:
            problem("no-pixel-data", "a DICOM file without pixel data")
        return None
    image_type = [str(v).upper() for v in _as_list(ds.get("ImageType", []))]
    series_number = _int_or_none(ds.get("SeriesNumber"))
    series_text = f"series {series_number}" if series_number is not None else "its series"
    if "LOCALIZER" in image_type:
        problem("localizer", f"a localizer (scout) image of {series_text}, not part of a volume")
        return None
    rows, columns = _int_or_none(ds.get("Rows")), _int_or_none(ds.get("Columns"))
    if not rows or not columns:
        problem("bad-value", "no Rows or Columns in the header")
        return None
    samples = _int_or_none(ds.get("SamplesPerPixel")) or 1
    if samples != 1:
        problem("bad-value", f"{samples} samples per pixel (a colour image), not a CT slice")
        return None
    frames = _int_or_none(ds.get("NumberOfFrames")) or 1
    if frames != 1:
        problem("bad-value", f"a multi-frame image ({frames} frames), not a slice of a series")
        return None
    bits = _int_or_none(ds.get("BitsAllocated"))
    if bits not in (8, 16, 32):
        problem("bad-value", f"BitsAllocated {bits} is not 8, 16 or 32")
        return None
    expected = rows * columns * bits // 8
    cut = _pixels_cut(next_bytes, little, _implicit_vr(ds), size - stop, expected, tail)
    if cut:
        problem("unreadable-file", cut)
        return None
    iop_raw = _as_list(ds.get("ImageOrientationPatient", []))
    ipp_raw = _as_list(ds.get("ImagePositionPatient", []))
    if len(iop_raw) != 6 or len(ipp_raw) != 3:
        problem(
            "bad-value",
            "no ImageOrientationPatient or ImagePositionPatient: cannot be placed in a volume",
        )
        return None
    iop = tuple(float(v) for v in iop_raw)
    geometry = _geometry(iop)
    if geometry is None:
        problem("bad-value", "ImageOrientationPatient does not hold two directions")
        return None
    _, _, normal = geometry
    position = float(np.dot(np.asarray([float(v) for v in ipp_raw]), normal))
    if not np.isfinite(position):
        problem("bad-value", "ImagePositionPatient is not a finite position")
        return None
    return _Header(
        file=rel,
        series_uid=str(ds.get("SeriesInstanceUID", "")) or f"no-uid:{series_number}",
        series_number=series_number,
        rows=int(rows),
        columns=int(columns),
        iop=iop,
        normal=normal,
        position=position,
        orientation=_orientation(normal),
        derived=(image_type[:1] == ["DERIVED"] or "REFORMATTED" in image_type),
    )


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _little_endian(ds: Dataset) -> bool:
    encoding = getattr(ds, "original_encoding", None)
    if encoding and encoding[1] is not None:
        return bool(encoding[1])
    return True


def _implicit_vr(ds: Dataset) -> bool:
    encoding = getattr(ds, "original_encoding", None)
    if encoding and encoding[0] is not None:
        return bool(encoding[0])
    return False


def _element_tag(data: bytes, little: bool) -> int | None:
    """The tag of the element starting at ``data`` (where pydicom stopped), if any."""
    if len(data) < 4:
        return None
    group, element = struct.unpack("<HH" if little else ">HH", data[:4])
    return int((group << 16) | element)


def _pixels_cut(
    data: bytes, little: bool, implicit: bool, left: int, expected: int, tail: bytes
) -> str | None:
    """Why the pixel data element is cut short or too small, or None.

    ``data`` holds the first bytes of the element, ``left`` the bytes from its start to the end
    of the file, ``tail`` the file's last bytes (where compressed pixel data end with a
    sequence delimiter).
    """
    order = "<" if little else ">"
    if implicit:
        if len(data) < 8:
            return "the file is cut short at its pixel data"
        (length,) = struct.unpack(order + "I", data[4:8])
        header = 8
    else:
        if len(data) < 8:
            return "the file is cut short at its pixel data"
        if data[4:6] in _LONG_VRS:
            if len(data) < 12:
                return "the file is cut short at its pixel data"
            (length,) = struct.unpack(order + "I", data[8:12])
            header = 12
        else:
            (length,) = struct.unpack(order + "H", data[6:8])
            header = 8
    if length == 0xFFFFFFFF:  # encapsulated (compressed) frames end with a sequence delimiter
        if _SEQUENCE_END[little] in tail:
            return None
        return "the file is cut short in its compressed pixel data (no end delimiter)"
    present = left - header
    if present < min(length, expected):
        return f"the pixel data are cut short ({max(present, 0)} of {length} bytes)"
    if length < expected:
        return f"the pixel data hold {length} bytes, the image needs {expected}"
    return None


def _cut_short(ds: Dataset, size: int) -> bool:
    """Whether the header read to the end of the file ends inside an element."""
    last_end = 0
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        value_tell = getattr(raw, "value_tell", None)
        length = getattr(raw, "length", None)
        value = getattr(raw, "value", None)
        if value_tell is None or length is None or length == 0xFFFFFFFF:
            continue
        if isinstance(value, bytes) and len(value) < length:
            return True
        last_end = max(last_end, int(value_tell) + int(length))
    return last_end != 0 and size > last_end


def _geometry(
    iop: Sequence[float],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]] | None:
    """Unit row and column cosines and the slice normal, or None when degenerate."""
    row = np.asarray(iop[:3], dtype=np.float64)
    col = np.asarray(iop[3:], dtype=np.float64)
    if not (np.all(np.isfinite(row)) and np.all(np.isfinite(col))):
        return None
    row_norm, col_norm = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    if row_norm < 1e-6 or col_norm < 1e-6:
        return None
    normal = np.cross(row, col)
    normal_norm = float(np.linalg.norm(normal))
    if normal_norm < 1e-6:
        return None
    return row / row_norm, col / col_norm, normal / normal_norm


def _orientation(normal: np.ndarray[Any, Any]) -> str:
    axis = int(np.argmax(np.abs(normal)))
    return _AXIS_NAMES[axis] if abs(float(normal[axis])) >= MAIN_AXIS_MIN else "OBLIQUE"


def _group(headers: list[_Header], problems: list[SeriesProblem]) -> list[SeriesGroup]:
    """Split headers into groups; add non-axial, mixed-series and duplicate problems."""
    by_series: dict[str, list[_Header]] = defaultdict(list)
    for header in headers:
        by_series[header.series_uid].append(header)
    groups: list[SeriesGroup] = []
    used_keys: set[str] = set()
    for uid, members in by_series.items():
        clusters: list[list[_Header]] = []
        for header in members:
            for cluster in clusters:
                first = cluster[0]
                if (first.rows, first.columns, first.derived) == (
                    header.rows,
                    header.columns,
                    header.derived,
                ) and max(
                    abs(a - b) for a, b in zip(first.iop, header.iop, strict=True)
                ) <= SAME_ORIENTATION_TOL:
                    cluster.append(header)
                    break
            else:
                clusters.append([header])
        counts = Counter(h.orientation for h in members)
        majority = max(counts, key=lambda o: (counts[o], o == "AXIAL"))
        clusters.sort(key=lambda c: (-len(c), c[0].orientation != majority, c[0].file))
        main = clusters[0]
        number = main[0].series_number
        series_text = f"series {number}" if number is not None else "a series"
        for cluster in clusters:
            first = cluster[0]
            if first.orientation != majority and len(cluster) < MIN_OWN_GROUP:
                for header in cluster:
                    problems.append(
                        SeriesProblem(
                            header.file,
                            "non-axial",
                            f"{_article(header.orientation)} {header.orientation.lower()} image "
                            f"in {series_text}, whose "
                            f"volume is {majority.lower()}; left out of it",
                        )
                    )
                continue
            group = _make_group(uid, cluster, used_keys, problems)
            groups.append(group)
            if cluster is main:
                continue
            if (first.rows, first.columns, first.iop) == (
                main[0].rows,
                main[0].columns,
                main[0].iop,
            ):
                kind, what = "derived-series", "ORIGINAL and DERIVED images"
            else:
                kind, what = "mixed-series", "images of several sizes or orientations"
            problems.append(
                SeriesProblem(
                    group.files[0],
                    kind,
                    f"{series_text} holds {what}; these {len(group.files)} "
                    f"({first.columns}x{first.rows}, {first.orientation.lower()}) are read as a "
                    "separate volume",
                )
            )
    groups.sort(
        key=lambda g: (g.series_number is None, g.series_number or 0, g.files[0] if g.files else "")
    )
    return groups


def _article(word: str) -> str:
    return "an" if word[:1].upper() in "AEIOU" else "a"


def _make_group(
    uid: str, cluster: list[_Header], used_keys: set[str], problems: list[SeriesProblem]
) -> SeriesGroup:
    first = cluster[0]
    material = f"{uid}|{first.orientation}|{first.rows}|{first.columns}"
    key = hashlib.sha256(material.encode()).hexdigest()[:12]
    if key in used_keys:  # same series, label and size: tell the groups apart
        extra = "|".join(f"{v:.4f}" for v in first.iop) + f"|derived={first.derived}"
        key = hashlib.sha256(f"{material}|{extra}".encode()).hexdigest()[:12]
    used_keys.add(key)
    ordered = sorted(cluster, key=lambda h: (h.position, h.file))
    kept: list[_Header] = []
    for header in ordered:
        if kept and abs(header.position - kept[-1].position) < DUPLICATE_TOL_MM:
            problems.append(
                SeriesProblem(
                    header.file,
                    "duplicate",
                    f"a second image at the position of {kept[-1].file}; left out of the volume",
                )
            )
            continue
        kept.append(header)
    steps = [b.position - a.position for a, b in itertools.pairwise(kept)]
    spacing = float(statistics.median(steps)) if steps else None
    group = SeriesGroup(
        key=key,
        files=[h.file for h in kept],
        orientation=first.orientation,
        derived=first.derived,
        rows=first.rows,
        columns=first.columns,
        series_number=first.series_number,
        slice_spacing=spacing,
    )
    if spacing is not None and spacing > 0:
        regular: list[float] = []
        for step, header in zip(steps, kept[1:], strict=True):
            if step > GAP_FACTOR * spacing:
                missing = round(step / spacing) - 1
                group.problems.append(
                    SeriesProblem(
                        header.file,
                        "slice-gap",
                        f"a gap of {step:.3f} mm before this slice where the median step is "
                        f"{spacing:.3f} mm (about {missing} slice{'s' if missing != 1 else ''} "
                        "missing)",
                    )
                )
            else:
                regular.append(step)
        if regular and (max(regular) - min(regular)) / spacing > UNEVEN_SPREAD:
            group.problems.append(
                SeriesProblem(
                    group.files[0],
                    "slice-gap",
                    f"uneven slice spacing: steps from {min(regular):.3f} to {max(regular):.3f} mm"
                    f" (median {spacing:.3f} mm); the volume uses the median",
                )
            )
    return group


# --- reading ------------------------------------------------------------------------------------


@dataclass
class _Slice:
    """What :func:`read_series` needs of one file besides its pixels."""

    position: np.ndarray[Any, Any]
    iop: tuple[float, ...]
    pixel_spacing: tuple[float, float] | None
    hu: bool | None


def read_series(
    root: Path,
    group: SeriesGroup,
    dropped: list[SeriesProblem] | None = None,
    *,
    max_voxels: int = MAX_VOXELS,
) -> Volume:
    """Decode a group's slices into an int16 HU :class:`Volume` on the series' grid.

    ``hu`` is True when the modality is CT and a rescale is present (or the pixels are signed),
    None otherwise.

    Without ``dropped`` one slice that cannot be read fails the whole series. With a list, each
    such slice (damaged, cut short, pixels that disagree with the header: ``BitsAllocated`` 8
    in a 16-bit series, a size other than its group's) is left out of the volume and one
    ``slice-gap`` :class:`SeriesProblem` naming it and why is appended; the other slices are
    stacked without it, one median step apart. Nothing is left empty in its place: the slices
    after it sit one step nearer the first slice than in the scan, so their positions in the
    volume's grid are approximate (the ``slice-gap`` problem says which file was dropped). Only
    when no slice can be read does the first slice's error stop the series.

    The volume is allocated once, from the headers (slices x Rows x Columns), before any
    pixel is decoded; over ``max_voxels`` voxels (:data:`~.volume.VOXELS_PER_PIXEL` times the
    build's pixel limit) the series is not read.

    Raises:
        VolumeError: ``unsupported-transfer-syntax`` (naming the package to install),
            ``unreadable-file`` (a damaged or truncated file), ``no-pixel-data`` or
            ``mixed-series`` (a file that changed since the scan); ``too-large`` over
            ``max_voxels``.

    Example:
        >>> read_series(Path("."), SeriesGroup("k", [], "AXIAL", False, 1, 1, None, None))
        Traceback (most recent call last):
        ...
        covid19_images.process.ct.volume.VolumeError: series ?, axial, 0 slices has no slice
    """
    root = Path(root)
    if not group.files:
        raise VolumeError(f"{group.label()} has no slice", "no-pixel-data")
    check_size(
        (len(group.files), group.rows, group.columns),
        np.int16,
        max_voxels,
        f"{group.label()}: slices x Rows x Columns are",
    )
    out = np.empty((len(group.files), group.rows, group.columns), dtype=np.int16)

    def one(index: int) -> _Slice | VolumeError:
        try:
            return _read_slice_into(root, group.files[index], group, out[index])
        except VolumeError as exc:
            if dropped is None:
                raise
            return exc

    count = len(group.files)
    threads = min(DECODE_THREADS, os.cpu_count() or 1) if _TURBO is not None else 1
    with warnings.catch_warnings():  # pydicom warns on damaged files; they raise VolumeError
        warnings.simplefilter("ignore")
        if threads > 1 and count > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                results = list(pool.map(one, range(count)))
        else:
            results = [one(index) for index in range(count)]
    failed = [(i, r) for i, r in enumerate(results) if isinstance(r, VolumeError)]
    slices = [r for r in results if not isinstance(r, VolumeError)]
    if failed:
        if not slices:
            raise failed[0][1]
        for index, exc in failed:
            rel = group.files[index]
            why = str(exc).removeprefix(f"{rel}: ")
            if dropped is not None:
                dropped.append(
                    SeriesProblem(
                        rel,
                        "slice-gap",
                        f"left out of its volume ({exc.kind}: {why}); the other "
                        f"{len(slices)} slices are kept, stacked without it, so the positions "
                        "of the slices after it are approximate",
                    )
                )
        keep = [i for i, r in enumerate(results) if not isinstance(r, VolumeError)]
        out = out[keep]
        count = len(keep)
    first = slices[0]
    geometry = _geometry(first.iop)
    if geometry is None:  # checked by the scan; the file changed since
        raise VolumeError(f"{group.files[0]}: ImageOrientationPatient is degenerate", "bad-value")
    row, col, normal = geometry
    z_spacing = group.slice_spacing
    if z_spacing is None or z_spacing <= 0:
        if count > 1:
            steps = np.diff([float(np.dot(s.position, normal)) for s in slices])
            z_spacing = float(np.median(steps)) if np.median(steps) > 0 else 1.0
        else:
            z_spacing = 1.0
    col_spacing, row_spacing = first.pixel_spacing or (1.0, 1.0)
    hu_flags = {s.hu for s in slices}
    return Volume(
        array=out,
        spacing=(col_spacing, row_spacing, float(z_spacing)),
        origin=(float(first.position[0]), float(first.position[1]), float(first.position[2])),
        direction=np.stack([row, col, normal], axis=1),
        hu=True if hu_flags == {True} else None,
    )


def _read_slice_into(
    root: Path, rel: str, group: SeriesGroup, target: np.ndarray[Any, Any]
) -> _Slice:
    """Read one file, decode it and write its HU values into ``target`` (rows x columns)."""
    path = root / rel
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise VolumeError(f"{rel}: cannot read the DICOM file ({type(exc).__name__})") from exc
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        if (rows, columns) != (group.rows, group.columns):
            raise VolumeError(
                f"{rel} is {columns}x{rows} pixels, its group {group.columns}x{group.rows}",
                "mixed-series",
            )
        if "PixelData" not in ds:
            if _PIXEL_TAG_BYTES in path.read_bytes():
                raise VolumeError(f"{rel}: the file is cut short in its pixel data")
            raise VolumeError(f"{rel}: no pixel data", "no-pixel-data")
        bits_allocated = int(ds.BitsAllocated)
        bits_stored = int(ds.get("BitsStored") or bits_allocated)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        has_rescale = "RescaleIntercept" in ds or "RescaleSlope" in ds
        iop = tuple(float(v) for v in ds.ImageOrientationPatient)
        position = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
        spacing_raw = _as_list(ds.get("PixelSpacing"))
        pixel_spacing = (
            (float(spacing_raw[1]), float(spacing_raw[0])) if len(spacing_raw) == 2 else None
        )
        modality = str(ds.get("Modality", "")).upper()
    except VolumeError:
        raise
    except Exception as exc:
        raise VolumeError(f"{rel}: a header value cannot be read ({type(exc).__name__})") from exc
    _check_native_length(ds, rel, rows, columns, bits_allocated)
    pixels = _decode(ds, rel)
    if pixels.shape != (rows, columns):
        raise VolumeError(
            f"{rel}: decoded pixels are {pixels.shape}, the header says {(rows, columns)}",
            "unreadable-file",
        )
    if pixels.dtype.kind in "iu" and pixels.dtype.itemsize * 8 > bits_allocated:
        raise VolumeError(
            f"{rel}: decoded pixels are {pixels.dtype.itemsize * 8}-bit, the header says "
            f"BitsAllocated {bits_allocated}",
            "unreadable-file",
        )
    if not _rescale_16_bit_into(pixels, bits_stored, signed, slope, intercept, target):
        values = _stored_values(pixels, bits_stored, signed)
        _rescale_into(values, slope, intercept, bits_stored, signed, target)
    hu = True if modality == "CT" and (has_rescale or signed) else None
    return _Slice(position, iop, pixel_spacing, hu)


def _check_native_length(
    ds: Dataset, rel: str, rows: int, columns: int, bits_allocated: int
) -> None:
    """Raise when uncompressed pixel data cannot be the image the header describes.

    Shorter than rows x columns x BitsAllocated / 8 is a cut file; twice as long or more is
    pixel data of another bit depth than the header says (``BitsAllocated`` 8 over 16-bit
    pixels). A little more (padding) is what pydicom reads past, and is accepted.
    """
    try:
        compressed = _transfer_syntax(ds).is_compressed
    except ValueError:  # not a transfer syntax pydicom knows: _decode says so
        return
    if compressed:
        return
    expected = rows * columns * bits_allocated // 8
    data = ds.PixelData
    length = len(data) if isinstance(data, bytes | bytearray) else 0
    if length < expected:
        raise VolumeError(
            f"{rel}: the pixel data hold {length} bytes, {columns}x{rows} pixels of "
            f"BitsAllocated {bits_allocated} need {expected}"
        )
    if expected and length >= 2 * expected:
        raise VolumeError(
            f"{rel}: the pixel data hold {length} bytes, {length / expected:g} times what "
            f"{columns}x{rows} pixels of BitsAllocated {bits_allocated} need: the header does "
            "not describe them"
        )


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    if value:
        return UID(str(value))
    implicit = _implicit_vr(ds)
    return UID("1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1")


def _unsupported(rel: str, syntax: UID) -> VolumeError:
    name = syntax.name if syntax.is_transfer_syntax else "an unknown transfer syntax"
    package = _DECODER_PACKAGES.get(str(syntax))
    if package is None:
        hint = "no decoder for it is known to pydicom"
    else:
        hint = f"no decoder for it is installed: pip install {package}"
    return VolumeError(
        f"{rel}: pixel data compressed as {name} ({syntax}); {hint}",
        "unsupported-transfer-syntax",
    )


def _decode(ds: Dataset, rel: str) -> np.ndarray[Any, Any]:
    """The 2-D stored pixel values of a single-frame dataset, decoded."""
    syntax = _transfer_syntax(ds)
    try:
        compressed = syntax.is_compressed
    except ValueError:  # not a transfer syntax pydicom knows
        raise _unsupported(rel, syntax) from None
    if compressed:
        turbo = _TURBO if str(syntax) in _TURBO_SYNTAXES else None
        if turbo is None:
            try:
                available = get_decoder(syntax).is_available
            except NotImplementedError:
                available = False
            if not available:
                raise _unsupported(rel, syntax)
        try:
            frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        except Exception as exc:
            raise VolumeError(
                f"{rel}: the compressed pixel data cannot be split into frames ({_short(exc)})"
            ) from exc
        if str(syntax) in _FRAME_END_SYNTAXES and not frame.rstrip(b"\0").endswith(b"\xff\xd9"):
            raise VolumeError(f"{rel}: the compressed image is cut short (no end marker)")
        if turbo is not None:
            try:
                return turbo(frame)
            except Exception:  # pydicom's decoders below say what is wrong
                pass
    try:
        pixels: np.ndarray[Any, Any] = ds.pixel_array
    except (NotImplementedError, ImportError) as exc:
        raise _unsupported(rel, syntax) from exc
    except Exception as exc:
        raise VolumeError(
            f"{rel}: the pixel data cannot be decoded ({type(exc).__name__}: {_short(exc)})",
            "unreadable-file",
        ) from exc
    return pixels


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _rescale_16_bit_into(
    pixels: np.ndarray[Any, Any],
    bits_stored: int,
    signed: bool,
    slope: float,
    intercept: float,
    target: np.ndarray[Any, Any],
) -> bool:
    """The common case without temporary arrays; False when it does not apply.

    16-bit pixels, unit slope, an integral intercept, and stored values that fit in int16 before
    and after the intercept (e.g. unsigned 12-bit with intercept -1024): the masked stored
    values are written straight into ``target``, then the intercept is added there.
    """
    if pixels.dtype.itemsize != 2 or pixels.dtype.kind not in "iu" or slope != 1.0:
        return False
    if intercept != round(intercept) or bits_stored > 16 or bits_stored < 1:
        return False
    if signed:
        if bits_stored != 16:
            return False
        low, high = -32768, 32767
    else:
        if bits_stored > 15:
            return False
        low, high = 0, (1 << bits_stored) - 1
    if low + intercept < -32768 or high + intercept > 32767:
        return False
    unsigned = pixels.view(np.uint16)
    if signed:
        target.view(np.uint16)[...] = unsigned
    else:
        np.bitwise_and(unsigned, np.uint16((1 << bits_stored) - 1), out=target.view(np.uint16))
    if intercept:
        np.add(target, np.int16(intercept), out=target)
    return True


def _stored_values(
    pixels: np.ndarray[Any, Any], bits_stored: int, signed: bool
) -> np.ndarray[Any, Any]:
    """The stored values: BitsStored low bits of each pixel, sign-extended when signed."""
    if pixels.dtype.kind not in "iu":
        raise VolumeError(f"pixel data of type {pixels.dtype} are not integers", "bad-value")
    width = pixels.dtype.itemsize * 8
    unsigned = pixels.view(np.dtype(f"u{pixels.dtype.itemsize}"))
    if bits_stored >= width:
        same: np.ndarray[Any, Any] = (
            unsigned.view(np.dtype(f"i{pixels.dtype.itemsize}")) if signed else unsigned
        )
        return same
    masked: np.ndarray[Any, Any] = unsigned & np.array((1 << bits_stored) - 1, dtype=unsigned.dtype)
    if not signed:
        return masked
    sign = 1 << (bits_stored - 1)
    wide = masked.astype(np.int32)
    wide ^= sign
    wide -= sign
    return wide


def _rescale_into(
    values: np.ndarray[Any, Any],
    slope: float,
    intercept: float,
    bits_stored: int,
    signed: bool,
    target: np.ndarray[Any, Any],
) -> None:
    """``target[:] = clip(round(values * slope + intercept))`` as int16, exactly where possible."""
    low = -(1 << (bits_stored - 1)) if signed else 0
    high = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    ends = (low * slope + intercept, high * slope + intercept)
    fits = min(ends) >= -32768 and max(ends) <= 32767
    if slope == round(slope) and intercept == round(intercept):
        if fits and slope == 1.0:
            np.add(values, np.int32(intercept), out=target, dtype=np.int32, casting="unsafe")
            return
        wide = values.astype(np.int64 if bits_stored > 16 else np.int32)
        if slope != 1.0:
            np.multiply(wide, int(slope), out=wide)
        np.add(wide, int(intercept), out=wide)
    else:
        wide = values.astype(np.float64)
        np.multiply(wide, slope, out=wide)
        np.add(wide, intercept, out=wide)
        np.rint(wide, out=wide)
    if not fits:
        np.clip(wide, -32768, 32767, out=wide)
    target[...] = wide
