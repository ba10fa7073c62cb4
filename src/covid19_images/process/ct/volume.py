"""CT volumes on a physical grid: one in-memory form, NIfTI in and out, windows, slice stacks.

A :class:`Volume` holds a 3-D array in SimpleITK's ``GetArrayFromImage`` order, ``(z, y, x)`` =
(slices, rows, columns), and the grid that places it in patient space the way DICOM and ITK do:
``spacing`` and ``origin`` in millimetres, ``origin`` and ``direction`` in LPS (x towards the
patient's left, y towards the posterior, z towards the head). Column ``k`` of ``direction`` is the
LPS unit vector of index axis ``k`` (x, y, z), so voxel ``array[k, j, i]`` sits at
``origin + direction @ (spacing * (i, j, k))``.

NIfTI files are written in nibabel's canonical RAS+ orientation with a fresh header (nothing of an
upstream header is copied: their ``descrip`` fields may hold acquisition times). They are read in
any orientation.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import nibabel as nib
import numpy as np
from nibabel import orientations
from PIL import Image, UnidentifiedImageError

from covid19_images.errors import Covid19ImagesError
from covid19_images.process.image import MAX_PIXELS

WINDOWS: Final[dict[str, tuple[float, float]]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
}
"""Display windows as (center, width) in HU."""

GZIP_LEVEL: Final = 6
"""zlib level of ``.nii.gz`` files written by :func:`write_nifti`."""

_LPS_TO_RAS: Final = np.diag([-1.0, -1.0, 1.0, 1.0])
_LPS_ORNT: Final = np.array([[0, -1], [1, -1], [2, 1]], dtype=np.float64)
"""nibabel's orientation of axes pointing L, P, S (RAS axes 0, 1, 2; flipped, flipped, kept)."""
_INT16_MIN: Final = int(np.iinfo(np.int16).min)
_INT16_MAX: Final = int(np.iinfo(np.int16).max)

MIN_SLICES: Final = 3
"""The fewest slices a CT series, NIfTI volume or slice stack needs to be a volume of a dataset.

One or two slices are a stray image (a single slice exported on its own, a series cut down to a
pair), not a volume: there is no median slice step to check a gap or uneven spacing against,
and 3-D models (MONAI, nnU-Net) need depth. Every real volume of the mirror has many more
(COVID-CT-MD P001 148, covid-19-pos-case's reformatted series 23); three is also the size from
which images of a minority orientation form their own DICOM group. Records that are one slice
of a NIfTI stack of 2-D cases (``slice_index``; MedSeg's ``tr_im.nii.gz``) and 2-D slice images
(UCSD COVID-CT) are not volumes and are not held to this."""


VOXELS_PER_PIXEL: Final = 8
"""How many times a build's pixel limit (``--max-pixels``) a volume may hold, in voxels.

A NIfTI or DICOM header, like an image's, is a few bytes that can declare any size, and the
readers allocate the whole declared array before reading a voxel: a 300-byte ``.nii.gz`` that
declares 4096 x 4096 x 4096 int16 voxels asks for 128 GiB. The limit is tied to the 2-D one, so
``--max-pixels`` moves both, and with the default of 150 million pixels it is 1.2 billion voxels
(2.4 GB as int16): more than four times the largest real chest CT (512 x 512 x 1000 slices is
0.26 billion voxels; the mirrored volumes have at most a few hundred slices), yet a size that a
worker can hold while it writes the volume and its slices. A larger volume is a ``too-large``
problem and is not read."""

MAX_VOXELS: Final = VOXELS_PER_PIXEL * MAX_PIXELS
"""The voxel limit of a build with the default pixel limit (:func:`voxel_limit`)."""


def voxel_limit(max_pixels: int) -> int:
    """The most voxels a volume may hold in a build whose pixel limit is ``max_pixels``.

    Example:
        >>> voxel_limit(150_000_000)
        1200000000
    """
    return VOXELS_PER_PIXEL * max_pixels


class VolumeError(Covid19ImagesError):
    """A volume or mask that cannot be read or used; ``kind`` is a :data:`problems.KINDS` key.

    Example:
        >>> err = VolumeError("scan.nii.gz is truncated")
        >>> err.kind, str(err)
        ('unreadable-file', 'scan.nii.gz is truncated')
    """

    def __init__(self, message: str, kind: str = "unreadable-file") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(eq=False)
class Volume:
    """A 3-D image and its grid in LPS patient space.

    Example:
        >>> vol = Volume(np.zeros((2, 3, 4), np.int16), (0.5, 0.5, 2.0), (10.0, 20.0, 30.0),
        ...              np.eye(3), hu=True)
        >>> vol.shape_xyz
        (4, 3, 2)
        >>> vol.affine_lps() @ [1, 1, 1, 1]
        array([10.5, 20.5, 32. ,  1. ])
        >>> vol.affine_ras() @ [0, 0, 0, 1]
        array([-10., -20.,  30.,   1.])
    """

    array: np.ndarray[Any, Any]
    """``(z, y, x)`` = (slices, rows, columns), as SimpleITK's ``GetArrayFromImage``."""
    spacing: tuple[float, float, float]
    """Millimetres between voxel centres along x (columns), y (rows) and z (slices)."""
    origin: tuple[float, float, float]
    """LPS position in mm of the centre of voxel ``[0, 0, 0]``."""
    direction: np.ndarray[Any, Any] = field(default_factory=lambda: np.eye(3))
    """3x3; column ``k`` is the LPS unit vector of index axis ``k`` (x, y, z), as in ITK."""
    hu: bool | None = None
    """True: Hounsfield units; False: known not to be HU (e.g. rescaled 0-255); None: unknown."""

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise VolumeError(f"a volume needs a 3-D array, not {self.array.ndim}-D", "bad-value")
        self.spacing = _triple(self.spacing)
        self.origin = _triple(self.origin)
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if min(self.spacing) <= 0 or not np.all(np.isfinite(self.spacing)):
            raise VolumeError(f"spacing must be positive, not {self.spacing}", "bad-value")

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        """The number of voxels along x, y and z."""
        z, y, x = self.array.shape
        return int(x), int(y), int(z)

    def affine_lps(self) -> np.ndarray[Any, Any]:
        """4x4 matrix taking a voxel index ``(x, y, z, 1)`` to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        affine[:3, 3] = self.origin
        return affine

    def affine_ras(self) -> np.ndarray[Any, Any]:
        """4x4 matrix taking a voxel index ``(x, y, z, 1)`` to RAS millimetres (nibabel)."""
        affine: np.ndarray[Any, Any] = _LPS_TO_RAS @ self.affine_lps()
        return affine

    def to_nifti(self) -> nib.Nifti1Image:
        """The volume as a canonical RAS+ NIfTI-1 image with a fresh header.

        The data keep their dtype (int16 HU, uint8 masks; bool becomes uint8). The header has
        empty ``descrip``, ``aux_file`` and ``db_name``, units of mm, and qform and sform code 1
        (scanner) holding the same affine.

        Example:
            >>> vol = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), (1.0, 1.0, 2.0),
            ...              (0.0, 0.0, 0.0), np.eye(3))
            >>> img = vol.to_nifti()
            >>> img.shape, img.get_data_dtype().name, nib.aff2axcodes(img.affine)
            ((4, 3, 2), 'int16', ('R', 'A', 'S'))
        """
        data = self.array
        if data.dtype == np.bool_:
            data = data.astype(np.uint8)
        xyz = np.ascontiguousarray(data.transpose(2, 1, 0))
        original = nib.Nifti1Image(xyz, self.affine_ras())  # type: ignore[no-untyped-call]
        canonical = nib.as_closest_canonical(original)  # type: ignore[no-untyped-call]
        out_data = np.asanyarray(canonical.dataobj)
        affine = canonical.affine
        header = nib.Nifti1Header()  # type: ignore[no-untyped-call]
        header.set_data_dtype(out_data.dtype)  # type: ignore[no-untyped-call]
        img = nib.Nifti1Image(out_data, affine, header)  # type: ignore[no-untyped-call]
        img.header["descrip"] = b""
        img.header["aux_file"] = b""
        img.header["db_name"] = b""
        img.header.set_xyzt_units(xyz="mm")  # type: ignore[no-untyped-call]
        img.set_qform(affine, code=1)  # type: ignore[no-untyped-call]
        img.set_sform(affine, code=1)  # type: ignore[no-untyped-call]
        return img

    @classmethod
    def from_nifti(cls, img: nib.Nifti1Image, hu: bool | None = None) -> Volume:
        """A volume from a NIfTI image of any orientation (its ``img.affine``, RAS).

        The voxel axes are flipped and permuted to the order closest to LPS (x to the left,
        y to the back, z to the head; what SimpleITK's ``DICOMOrient(img, "LPS")`` gives), so
        a volume read from a usual axial DICOM series comes back from :func:`write_nifti` with
        the same array, origin and direction. Oblique grids stay oblique: nothing is resampled.

        Integer data with an integral ``scl_slope``/``scl_inter`` (or none) stay integers: int16
        when the scaled values fit, else int32. Any other scaling gives float64, as nibabel does.
        A 4-D image with one volume is taken as 3-D; a 2-D image as one slice.

        Example:
            >>> img = nib.Nifti1Image(np.zeros((4, 3, 2), np.int16), np.diag([-1.0, -1, 2, 1]))
            >>> vol = Volume.from_nifti(img)
            >>> vol.array.shape, vol.spacing, vol.direction.diagonal().tolist()
            ((2, 3, 4), (1.0, 1.0, 2.0), [1.0, 1.0, 1.0])
        """
        data = _scaled_data(img)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        elif data.ndim == 2:
            data = data[..., None]
        if data.ndim != 3:
            raise VolumeError(f"a NIfTI of shape {data.shape} is not one 3-D volume", "bad-value")
        ras = np.asarray(img.affine, dtype=np.float64)
        if not np.all(np.isfinite(ras)) or abs(float(np.linalg.det(ras[:3, :3]))) < 1e-12:
            raise VolumeError("the NIfTI affine is singular or not finite", "bad-value")
        current = orientations.io_orientation(ras)  # type: ignore[no-untyped-call]
        transform = orientations.ornt_transform(current, _LPS_ORNT)  # type: ignore[no-untyped-call]
        shape = data.shape
        data = orientations.apply_orientation(data, transform)  # type: ignore[no-untyped-call]
        ras = ras @ orientations.inv_ornt_aff(transform, shape)  # type: ignore[no-untyped-call]
        lps = _LPS_TO_RAS @ ras
        columns = lps[:3, :3]
        spacing = np.linalg.norm(columns, axis=0)
        direction = columns / spacing[None, :]
        array = np.ascontiguousarray(data.transpose(2, 1, 0))
        return cls(
            array,
            (float(spacing[0]), float(spacing[1]), float(spacing[2])),
            (float(lps[0, 3]), float(lps[1, 3]), float(lps[2, 3])),
            direction,
            hu,
        )


def _triple(values: Sequence[float] | np.ndarray[Any, Any]) -> tuple[float, float, float]:
    items = [float(v) for v in values]
    if len(items) != 3:
        raise VolumeError(f"expected 3 values, got {len(items)}", "bad-value")
    return items[0], items[1], items[2]


def _scaled_data(img: nib.Nifti1Image) -> np.ndarray[Any, Any]:
    """The image data with ``scl_slope``/``scl_inter`` applied when the header sets them."""
    dataobj: Any = img.dataobj
    slope = float(getattr(dataobj, "slope", 1.0))
    inter = float(getattr(dataobj, "inter", 0.0))
    raw_dtype = np.dtype(img.get_data_dtype())  # type: ignore[no-untyped-call]
    integral = (
        np.issubdtype(raw_dtype, np.integer)
        and hasattr(dataobj, "get_unscaled")
        and np.isfinite(slope)
        and np.isfinite(inter)
        and slope == round(slope)
        and inter == round(inter)
    )
    if not integral:
        data: np.ndarray[Any, Any] = np.asanyarray(dataobj)
        return data
    raw: np.ndarray[Any, Any] = np.asanyarray(dataobj.get_unscaled())
    if slope == 1.0 and inter == 0.0:
        return raw
    scaled = raw.astype(np.int64) * int(slope) + int(inter)
    for dtype in (np.int16, np.int32):
        info = np.iinfo(dtype)
        if scaled.size == 0 or (scaled.min() >= info.min and scaled.max() <= info.max):
            return scaled.astype(dtype)
    return scaled


def repair_values(volume: Volume) -> str | None:
    """Make the voxels finite and, for a Hounsfield-unit volume, int16; say what was changed.

    NaN and -inf become the volume's lowest finite value, +inf its highest (NaN in CT volumes
    is padding outside the reconstruction circle or a failed conversion, so the lowest value,
    air or padding, is the neutral fill). A volume with ``hu`` True is then rounded and clipped
    to the int16 range and stored as int16, whatever its dtype was (float NIfTI, int32 after
    scaling). Other volumes keep their values; float ones become float32. Works in place on
    ``volume.array`` (a copy where it is read-only) and never emits a numpy RuntimeWarning.

    Returns:
        None when nothing had to change, else one sentence for a ``bad-value`` problem row:
        how many voxels were not finite (NaN, +inf, -inf) or outside the int16 range, and the
        values they got.

    Raises:
        VolumeError: ``bad-value`` when no voxel is finite (nothing to repair from).

    Example:
        >>> vol = Volume(np.array([[[np.nan, -900.4], [np.inf, 40000.0]]], np.float32),
        ...              (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), hu=True)
        >>> for part in repair_values(vol).split("; "):
        ...     print(part)
        2 voxels are not finite (1 NaN, 1 +inf, 0 -inf): NaN and -inf set to -900, +inf to 32767
        2 voxels outside the int16 range clipped to [-32768, 32767]
        >>> vol.array.dtype.name, vol.array.ravel().tolist()
        ('int16', [-900, -900, 32767, 32767])
    """
    array = volume.array
    notes: list[str] = []
    if array.dtype.kind == "f":
        nan = np.isnan(array)
        pos = np.isposinf(array)
        neg = np.isneginf(array)
        counts = int(nan.sum()), int(pos.sum()), int(neg.sum())
        bad = sum(counts)
        if bad == array.size:
            raise VolumeError(
                f"no voxel is finite ({counts[0]} NaN, {counts[1]} +inf, {counts[2]} -inf): "
                "nothing to repair the volume from",
                "bad-value",
            )
        if bad:
            finite = ~(nan | pos | neg)
            low = array.min(where=finite, initial=np.inf)
            high = array.max(where=finite, initial=-np.inf)
            if not array.flags.writeable:
                array = array.copy()
            np.copyto(array, low, where=nan | neg)
            np.copyto(array, high, where=pos)
            if volume.hu is True:  # say the values the int16 volume holds
                low, high = (np.clip(np.rint(v), _INT16_MIN, _INT16_MAX) for v in (low, high))
            notes.append(
                f"{bad} voxel{'s' if bad != 1 else ''} {'are' if bad != 1 else 'is'} not finite "
                f"({counts[0]} NaN, {counts[1]} +inf, {counts[2]} -inf): NaN and -inf set to "
                f"{_number(low)}, +inf to {_number(high)}"
            )
    if volume.hu is True and array.dtype != np.int16:
        if array.dtype.kind not in "fiub":
            raise VolumeError(f"voxels of type {array.dtype} are not numbers", "bad-value")
        outside = int(np.count_nonzero((array < _INT16_MIN) | (array > _INT16_MAX)))
        if outside:
            notes.append(
                f"{outside} voxel{'s' if outside != 1 else ''} outside the int16 range clipped "
                f"to [{_INT16_MIN}, {_INT16_MAX}]"
            )
        if array.dtype.kind == "f":
            array = np.clip(np.rint(array), _INT16_MIN, _INT16_MAX).astype(np.int16)
        else:
            array = np.clip(array, _INT16_MIN, _INT16_MAX).astype(np.int16)
    elif array.dtype.kind == "f" and array.dtype != np.float32:
        array = array.astype(np.float32)
    volume.array = array
    return "; ".join(notes) or None


def _number(value: Any) -> str:
    """A voxel value for a message: an integer where it is one."""
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:.6g}"


def check_size(
    shape: Sequence[int], dtype: Any, max_voxels: int, what: str = "the header declares"
) -> None:
    """Refuse an array whose declared ``shape`` holds more than ``max_voxels`` voxels.

    Called with a header's shape before anything of that size is allocated.

    Raises:
        VolumeError: kind ``too-large``, saying the shape, the voxel count, the memory it would
            take as ``dtype`` and the limit.

    Example:
        >>> check_size((512, 512, 300), np.int16, MAX_VOXELS) is None
        True
        >>> try:
        ...     check_size((4096, 4096, 4096), np.int16, MAX_VOXELS)
        ... except VolumeError as err:
        ...     print(err.kind, *str(err).split(", over "), sep="\\n")
        too-large
        the header declares 4096 x 4096 x 4096 = 68,719,476,736 voxels (128.0 GiB as int16)
        the limit of 1,200,000,000 voxels (8 x --max-pixels); not read
    """
    dims = [int(n) for n in shape]
    voxels = math.prod(dims)
    if voxels <= max_voxels:
        return
    kind = np.dtype(dtype)
    gib = voxels * kind.itemsize / 2**30
    raise VolumeError(
        f"{what} {' x '.join(str(n) for n in dims)} = {voxels:,} voxels ({gib:,.1f} GiB as "
        f"{kind.name}), over the limit of {max_voxels:,} voxels ({VOXELS_PER_PIXEL} x "
        "--max-pixels); not read",
        "too-large",
    )


def load_nifti(path: Path, max_voxels: int = MAX_VOXELS, *, slices: int | None = None) -> Any:
    """Open a NIfTI file after checking the size its header declares; read no voxel.

    nibabel allocates the whole declared array when the data are first read, so the header's
    shape is checked against ``max_voxels`` first (:func:`check_size`). With ``slices`` only
    that many slices along the third axis will be read (one slice of a stack of 2-D cases), and
    only they count.

    Raises:
        VolumeError: ``too-large`` over the limit; ``unreadable-file`` when the file is missing,
            not NIfTI or its header cannot be read.
    """
    path = Path(path)
    try:
        img: Any = nib.load(path)
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise VolumeError(f"{path.name} is not a NIfTI image", "unreadable-file")
        header: Any = img.header
        shape = tuple(int(n) for n in header.get_data_shape())
        dtype = header.get_data_dtype()
    except VolumeError:
        raise
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise VolumeError(f"{path.name}: cannot read NIfTI ({exc})", "unreadable-file") from exc
    if slices is not None and len(shape) >= 3:
        shape = (*shape[:2], min(slices, shape[2]), *shape[3:])
    check_size(shape, dtype, max_voxels, f"{path.name}: the header declares")
    return img


def read_nifti(path: Path, *, hu: bool | None = None, max_voxels: int = MAX_VOXELS) -> Volume:
    """Read a ``.nii`` or ``.nii.gz`` file into a :class:`Volume` (any orientation).

    The header's shape is checked against ``max_voxels`` before any voxel is read
    (:func:`load_nifti`): a tiny file can declare a volume that would not fit in memory.

    Raises:
        VolumeError: kind ``unreadable-file`` when the file is missing, truncated or not NIfTI;
            ``bad-value`` when it is not one 3-D volume; ``too-large`` when its header declares
            more than ``max_voxels`` voxels.

    Example:
        >>> read_nifti(Path("no-such-file.nii.gz"))
        Traceback (most recent call last):
        ...
        covid19_images.process.ct.volume.VolumeError: no-such-file.nii.gz: cannot read NIfTI ...
    """
    path = Path(path)
    img = load_nifti(path, max_voxels)
    try:
        return Volume.from_nifti(img, hu=hu)
    except VolumeError:
        raise
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise VolumeError(f"{path.name}: cannot read NIfTI ({exc})", "unreadable-file") from exc


def write_nifti(volume: Volume, path: Path) -> None:
    """Write ``volume`` as a canonical RAS+ NIfTI-1 file, gzip-compressed when ``path`` ends in .gz.

    The file is written next to ``path`` under a temporary name, then renamed over it, so a
    reader never sees half a file. The gzip stream holds no file name and no time stamp, so the
    same volume always gives the same bytes.

    Example:
        >>> import tempfile
        >>> vol = Volume(np.ones((2, 3, 4), np.int16), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_nifti(vol, Path(tmp) / "ct.nii.gz")
        ...     back = read_nifti(Path(tmp) / "ct.nii.gz")
        >>> back.array.shape, back.array.dtype.name, back.spacing
        ((2, 3, 4), 'int16', (1.0, 1.0, 2.0))
    """
    path = Path(path)
    img = volume.to_nifti()
    compressed = path.name.endswith(".gz")
    # A unique name beside the target; opened with "x" so it gets the usual permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with tmp.open("xb") as raw:
            if compressed:
                with gzip.GzipFile(
                    filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0
                ) as gz:
                    img.to_stream(gz)
            else:
                img.to_stream(raw)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def window(
    array: np.ndarray[Any, Any], center: float = -600.0, width: float = 1500.0
) -> np.ndarray[Any, Any]:
    """Map HU to 0-255 (uint8) through a display window; the default is the lung window.

    Values at or below ``center - width / 2`` become 0, at or above ``center + width / 2`` 255,
    linearly in between (rounded).

    Example:
        >>> window(np.array([-2000, -1350, -600, 150, 3000]))
        array([  0,   0, 128, 255, 255], dtype=uint8)
        >>> window(np.array([40]), *WINDOWS["mediastinum"])
        array([128], dtype=uint8)
    """
    if width <= 0:
        raise VolumeError(f"window width must be positive, not {width}", "bad-value")
    low = center - width / 2.0
    scaled = (np.asarray(array, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / width)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    out: np.ndarray[Any, Any] = np.rint(scaled).astype(np.uint8)
    return out


def _read_slice(path: Path) -> np.ndarray[Any, Any]:
    """One 2-D greyscale slice: uint8, uint16, int32 or float32 as stored."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
                return np.asarray(img).astype(np.uint16, copy=False)
            if mode == "I":  # Pillow reads 16-bit PNGs as 32-bit integers
                wide = np.asarray(img)
                if wide.size and wide.min() >= 0 and wide.max() <= np.iinfo(np.uint16).max:
                    return wide.astype(np.uint16)
                return wide
            if mode in ("F", "L"):
                return np.asarray(img)
            return np.asarray(img.convert("L"))
    except Image.DecompressionBombError as exc:
        raise VolumeError(f"{path.name}: {exc}", "too-large") from exc
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise VolumeError(f"{path.name}: cannot decode image ({exc})", "unreadable-file") from exc


def read_slice_stack(
    paths: Sequence[Path],
    *,
    spacing: tuple[float, float, float] | None = None,
    hu_offset: float | None = None,
    max_voxels: int = MAX_VOXELS,
) -> Volume:
    """Stack 2-D slice images (16-bit TIFF, PNG, JPEG), in the given order, into a volume.

    The array is ``(z, y, x)`` with one z per path; the grid is the identity direction at the
    origin with ``spacing`` (default 1 mm each). Colour images are taken as greyscale. With
    ``hu_offset`` the values become int16 HU (value + offset, clipped to int16) and ``hu`` is
    True; without it the stored values and dtype are kept and ``hu`` is None (unknown). Float
    slices (TIFF mode ``F``) with ``hu_offset`` stay float32 (value + offset), so that NaN and
    infinite values reach :func:`repair_values` instead of a cast to int16.

    Raises:
        VolumeError: ``bad-value`` when there is no path or the slices differ in shape;
            ``unreadable-file`` when a slice cannot be decoded; ``too-large`` when the
            slices would make more than ``max_voxels`` voxels (checked from the first one,
            before the stack is allocated) or one is over Pillow's decompression-bomb limit.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     files = [Path(tmp) / f"{i}.png" for i in range(3)]
        ...     for i, f in enumerate(files):
        ...         Image.fromarray(np.full((4, 5), i, np.uint8)).save(f)
        ...     vol = read_slice_stack(files, spacing=(0.7, 0.7, 5.0))
        >>> vol.array.shape, vol.array.dtype.name, vol.array[:, 0, 0].tolist(), vol.hu
        ((3, 4, 5), 'uint8', [0, 1, 2], None)
    """
    if not paths:
        raise VolumeError("a slice stack needs at least one slice", "bad-value")
    first = _read_slice(Path(paths[0]))
    if first.ndim != 2:
        raise VolumeError(f"{Path(paths[0]).name} is not a 2-D image", "bad-value")
    dtype = first.dtype
    if hu_offset is not None:
        dtype = np.dtype(np.float32 if first.dtype.kind == "f" else np.int16)
    check_size((len(paths), *first.shape), dtype, max_voxels, "the slices make")
    out = np.empty((len(paths), *first.shape), dtype=dtype)
    for index, path in enumerate(paths):
        pixels = first if index == 0 else _read_slice(Path(path))
        if pixels.shape != first.shape:
            raise VolumeError(
                f"{Path(path).name} is {pixels.shape[1]}x{pixels.shape[0]} pixels, "
                f"the stack's first slice {first.shape[1]}x{first.shape[0]}",
                "bad-value",
            )
        if hu_offset is not None:
            if pixels.dtype.kind == "f" and out.dtype.kind != "f":
                out = out.astype(np.float32)  # a float slice among integer ones
            if out.dtype.kind == "f":
                out[index] = pixels.astype(np.float32) + np.float32(hu_offset)
                continue
            shifted = pixels.astype(np.float64) + hu_offset
            np.clip(np.rint(shifted), _INT16_MIN, _INT16_MAX, out=shifted)
            out[index] = shifted
        else:
            if not np.can_cast(pixels.dtype, out.dtype, "safe"):
                out = out.astype(np.result_type(out.dtype, pixels.dtype))
            out[index] = pixels
    return Volume(
        out,
        spacing if spacing is not None else (1.0, 1.0, 1.0),
        (0.0, 0.0, 0.0),
        np.eye(3),
        hu=True if hu_offset is not None else None,
    )


def same_grid(a: Volume, b: Volume, tol: float = 1e-3) -> str | None:
    """None when two volumes share shape, spacing, origin and direction; else what differs.

    Example:
        >>> a = Volume(np.zeros((2, 3, 4)), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
        >>> same_grid(a, Volume(np.zeros((2, 3, 4), np.uint8), a.spacing, a.origin)) is None
        True
        >>> same_grid(a, Volume(np.zeros((2, 3, 4)), (1.0, 1.0, 2.5), a.origin))
        'spacing differs: (1.0, 1.0, 2.0) mm vs (1.0, 1.0, 2.5) mm'
    """
    if a.array.shape != b.array.shape:
        return f"shape differs: {a.shape_xyz} vs {b.shape_xyz} voxels (x, y, z)"
    if not np.allclose(a.spacing, b.spacing, rtol=0.0, atol=tol):
        return f"spacing differs: {_fmt(a.spacing)} mm vs {_fmt(b.spacing)} mm"
    if not np.allclose(a.origin, b.origin, rtol=0.0, atol=tol):
        return f"origin differs: {_fmt(a.origin)} mm vs {_fmt(b.origin)} mm"
    if not np.allclose(a.direction, b.direction, rtol=0.0, atol=tol):
        return (
            f"direction differs: {np.round(a.direction, 4).tolist()} "
            f"vs {np.round(b.direction, 4).tolist()}"
        )
    return None


def _fmt(values: tuple[float, float, float]) -> str:
    return "(" + ", ".join(repr(round(float(v), 6)) for v in values) + ")"
