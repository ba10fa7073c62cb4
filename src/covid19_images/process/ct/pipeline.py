"""Layer 2 for CT volumes: HU NIfTI, harmonised mask and windowed slices, cached by content.

Every volume record (a DICOM series, a NIfTI file or one slice of it, a stack of slice files) is
read once into a :class:`~covid19_images.process.ct.volume.Volume` and written to
``<cache>/<key[:2]>/<key>/``:

- ``image.nii.gz``: the volume, RAS+ canonical, int16 Hounsfield units where the source is in HU
  (volumes known not to be in HU keep their values and are marked ``hu: false``);
- ``mask.nii.gz``: the record's masks on one label map (:mod:`~covid19_images.process.ct.masks`),
  uint8, on the image's grid, where the record has masks that fit;
- ``slices/<size>/<k>.png``: axial slice ``k`` (inferior to superior) through the recipe's
  window, as a radiologist views it (patient's right on the left, anterior at the top), resized
  to ``size`` x ``size`` after a centre crop;
- ``meta.json``: shape, spacing, HU flag, digests, mask labels, warnings, repairs and the
  slices left out.

The key is the digest of every input file's bytes (images and masks) and of the parameters, so a
changed file or parameter gives new outputs and an unchanged one reuses them.

Hostile input never stops the other volumes and never leaves a partial output folder:

- NaN and infinite voxels are repaired by
  :func:`~covid19_images.process.ct.volume.repair_values` (a ``bad-value`` row, action
  ``repaired``, with the counts); HU volumes are always written as int16; a volume with no
  finite voxel is skipped (``bad-value``);
- a DICOM slice that cannot be read (damaged, pixels that disagree with its header) is left out
  of its series with a ``slice-gap`` row naming it; the rest of the series, stacked without
  it, is the volume (the positions of the slices after it are approximate);
- a volume with fewer than :data:`~covid19_images.process.ct.volume.MIN_SLICES` slices (a stray
  slice) is a ``too-few-slices`` row and no volume;
- a volume whose header (NIfTI shape, DICOM slices x Rows x Columns) declares more voxels than
  the build's limit (:func:`~covid19_images.process.ct.volume.voxel_limit`) is a ``too-large``
  row and is never read, as is one whose reading or writing runs out of memory; the limit is
  checked again for a volume already in the cache, so a lower limit takes effect at once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from covid19_images.problems import ProblemLog
from covid19_images.process.ct.masks import harmonise
from covid19_images.process.ct.volume import (
    MAX_VOXELS,
    MIN_SLICES,
    WINDOWS,
    Volume,
    VolumeError,
    check_size,
    load_nifti,
    read_nifti,
    read_slice_stack,
    repair_values,
    window,
    write_nifti,
)
from covid19_images.process.executor import Executor, LocalExecutor, fails_as
from covid19_images.process.image import encode_png
from covid19_images.records import Record

CT_PROCESS_VERSION = 2
"""Bump when what is written for a volume changes: every key changes. 2: non-finite voxels
repaired and HU volumes always int16, unreadable DICOM slices left out of their series."""

VOLUME_FORMATS = frozenset({"dicom-series", "nifti", "slice-stack"})


@dataclass(frozen=True)
class CtParams:
    """Processing parameters that are part of every CT cache key."""

    size: int = 224
    window: str = "lung"
    version: int = CT_PROCESS_VERSION

    def token(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


@dataclass(frozen=True)
class _VolumeTask:
    root: str
    path_raw: str
    fmt: str
    files: tuple[str, ...]
    slice_index: int | None
    hu: bool | None
    hu_offset: float | None
    spacing: tuple[float, float, float] | None
    masks: tuple[tuple[str, str], ...]
    cache: str
    params: CtParams = field(default_factory=CtParams)
    max_voxels: int = MAX_VOXELS
    """Not in the cache key: it changes which volumes are used, never what is written."""


def is_volume(record: Record) -> bool:
    """True for a CT record that is a volume (or one slice of a NIfTI stack), not a 2-D image.

    Example:
        >>> is_volume(Record(source="x", path_raw="a.nii.gz", attributes={"format": "nifti"}))
        True
    """
    return record.attributes.get("format") in VOLUME_FORMATS


def volume_dir(cache: Path, key: str) -> Path:
    """The folder of one processed volume."""
    return cache / key[:2] / key


def slice_path(cache: Path, key: str, size: int, k: int) -> Path:
    """The windowed PNG of slice ``k`` of a processed volume."""
    return volume_dir(cache, key) / "slices" / str(size) / f"{k:04d}.png"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_image(task: _VolumeTask) -> tuple[Volume, list[dict[str, Any]]]:
    """The volume and the slices left out of it (DICOM: file, index in ``files``, why)."""
    root = Path(task.root)
    if task.fmt == "dicom-series":
        from covid19_images.process.ct.dicom_series import (
            SeriesProblem,
            read_series,
            scan_series,
        )

        groups, problems = scan_series(root, [Path(f) for f in task.files])  # relative
        if len(groups) != 1:
            why = "; ".join(p.detail for p in problems[:3]) or f"{len(groups)} series found"
            raise VolumeError(f"the series no longer reads as one volume: {why}", "mixed-series")
        dropped: list[SeriesProblem] = []
        volume = read_series(root, groups[0], dropped, max_voxels=task.max_voxels)
        position = {f: i for i, f in enumerate(task.files)}
        left_out = [
            {"file": p.file, "index": position.get(p.file), "detail": p.detail} for p in dropped
        ]
        return volume, left_out
    if task.fmt == "slice-stack":
        stack = read_slice_stack(
            [root / f for f in task.files],
            spacing=task.spacing,
            hu_offset=task.hu_offset,
            max_voxels=task.max_voxels,
        )
        return stack, []
    return _read_nifti_slice(root / task.path_raw, task.slice_index, task.hu, task.max_voxels), []


def _read_nifti_slice(
    path: Path, index: int | None, hu: bool | None, max_voxels: int = MAX_VOXELS
) -> Volume:
    """A NIfTI volume, or only its slice ``index`` along the third axis (a stack of 2-D cases).

    The size the header declares (of the volume, or of the one slice) is checked against
    ``max_voxels`` before anything is read.
    """
    if index is None:
        return read_nifti(path, hu=hu, max_voxels=max_voxels)
    img: Any = load_nifti(path, max_voxels, slices=1)
    try:
        data = np.asanyarray(img.dataobj[..., index : index + 1])
    except (OSError, ValueError, IndexError, EOFError) as exc:
        raise VolumeError(f"cannot read slice {index} of {path.name}: {exc}") from exc
    shift = np.eye(4)
    shift[2, 3] = index
    one = nib.Nifti1Image(data, img.affine @ shift)  # type: ignore[no-untyped-call]
    return Volume.from_nifti(one, hu=hu)


def display_array(volume: Volume) -> np.ndarray:
    """The volume as (z, y, x) with z inferior→superior, y anterior→posterior, x right→left."""
    img = volume.to_nifti()
    data = np.asanyarray(img.dataobj)
    orient: Any = nib.orientations
    current = orient.io_orientation(img.affine)
    transform = orient.ornt_transform(current, orient.axcodes2ornt(("L", "P", "S")))
    lps: np.ndarray = orient.apply_orientation(data, transform)
    return np.ascontiguousarray(np.transpose(lps, (2, 1, 0)))


def to_uint8(array: np.ndarray, hu: bool | None, window_name: str = "lung") -> np.ndarray:
    """A volume's intensities as 0-255, as every packed slice and every 3-D model sees them: HU
    through the display window, anything else stretched between its 0.5th and 99.5th
    percentiles (uint8 kept as it is).

    Example:
        >>> to_uint8(np.array([[[-1350, -600, 150]]]), True).tolist()
        [[[0, 128, 255]]]
    """
    if hu:
        center, width = WINDOWS[window_name]
        return window(array, center, width)
    if array.dtype == np.uint8:
        return array.copy()
    lo, hi = (float(v) for v in np.percentile(array, (0.5, 99.5)))
    if hi <= lo:
        return np.zeros(array.shape, dtype=np.uint8)
    scaled = (array.astype(np.float32) - lo) * (255.0 / (hi - lo))
    out: np.ndarray = np.clip(scaled, 0, 255).astype(np.uint8)
    return out


def square(pixels: np.ndarray, size: int, *, labels: bool = False) -> np.ndarray:
    """A uint8 slice centre-cropped to a square and resized to ``size``; ``labels=True``
    resizes a label map by nearest neighbour, so no value is invented."""
    h, w = pixels.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = Image.fromarray(pixels[top : top + side, left : left + side])
    if side != size:
        if labels:
            resample = Image.Resampling.NEAREST
        elif side > size:
            resample = Image.Resampling.LANCZOS
        else:
            resample = Image.Resampling.BICUBIC
        img = img.resize((size, size), resample)
    out: np.ndarray = np.asarray(img)
    return out


def _failed(task: _VolumeTask, reason: str) -> dict[str, Any]:
    """A volume an engine gave up on (it failed on every attempt): not used, a problem row."""
    return {"path_raw": task.path_raw, "error_kind": "unreadable-file", "error": reason}


@fails_as(_failed)
def _process_volume(task: _VolumeTask) -> dict[str, Any]:
    """Worker: digest the inputs, reuse outputs with the same key, else read and write them.

    A volume that does not fit in memory (a ``MemoryError`` anywhere in reading, repairing or
    writing it) is a ``too-large`` result; nothing of it is left in the cache.
    """
    try:
        return _process_one(task)
    except MemoryError:
        return {
            "path_raw": task.path_raw,
            "error_kind": "too-large",
            "error": "out of memory while reading or writing the volume; not used",
        }


def _process_one(task: _VolumeTask) -> dict[str, Any]:
    root, cache = Path(task.root), Path(task.cache)
    result: dict[str, Any] = {"path_raw": task.path_raw}
    inputs = [task.path_raw] if task.fmt == "nifti" else list(task.files)
    try:
        image_digests = [_file_digest(root / f) for f in inputs]
        mask_digests = [_file_digest(root / m) for m, _ in task.masks]
    except OSError as exc:
        return {**result, "error_kind": "missing-file", "error": f"cannot read: {exc}"}
    sha_files = hashlib.sha256("\n".join(image_digests).encode()).hexdigest()
    token = json.dumps(
        [
            task.spacing,
            task.fmt,
            task.slice_index,
            task.hu,
            task.hu_offset,
            image_digests,
            mask_digests,
            [m for _, m in task.masks],
        ]
    ).encode()
    key = hashlib.sha256(task.params.token() + token).hexdigest()[:32]
    result.update(key=key, sha256_file=sha_files)
    folder = volume_dir(cache, key)
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        cached = json.loads(meta_path.read_text(encoding="utf-8"))
        try:  # the limit may be lower than when the volume was written
            check_size(
                cached.get("shape", ()),
                cached.get("dtype", "int16"),
                task.max_voxels,
                "the volume holds",
            )
        except VolumeError as exc:
            return {**result, "error_kind": exc.kind, "error": str(exc)}
        return {**result, **cached}
    try:
        volume, left_out = _read_image(task)
        if volume.hu is None:
            volume.hu = task.hu
        repaired = repair_values(volume)
    except VolumeError as exc:
        return {**result, "error_kind": exc.kind, "error": str(exc)}
    depth = int(volume.array.shape[0])
    if task.slice_index is None and depth < MIN_SLICES:
        why = f" after {len(left_out)} unreadable slices were left out" if left_out else ""
        return {
            **result,
            "error_kind": "too-few-slices",
            "error": f"{depth} slice{'s' if depth != 1 else ''}{why}: a volume needs at least "
            f"{MIN_SLICES} (a stray slice, not a scan)",
        }
    meta: dict[str, Any] = {
        "shape": list(volume.array.shape),
        "spacing": [float(s) for s in volume.spacing],
        "hu": volume.hu,
        "dtype": str(volume.array.dtype),
        "sha256_pixels": hashlib.sha256(
            str(volume.array.shape).encode() + np.ascontiguousarray(volume.array).tobytes()
        ).hexdigest(),
        "warnings": [],
        "repairs": [repaired] if repaired else [],
        "left_out": left_out,
    }
    mask: Volume | None = None
    if task.masks:
        try:
            parts = [
                (_read_nifti_slice(root / m, task.slice_index, None, task.max_voxels), name)
                for m, name in task.masks
            ]
            mask, warnings = harmonise(parts, volume)
            meta["warnings"].extend(warnings)
        except VolumeError as exc:
            meta["mask_error_kind"], meta["mask_error"] = exc.kind, str(exc)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".tmp-"))
    try:
        write_nifti(volume, tmp / "image.nii.gz")
        if mask is not None:
            write_nifti(mask, tmp / "mask.nii.gz")
            meta["mask_labels"] = sorted(int(v) for v in np.unique(mask.array))
        display = to_uint8(display_array(volume), volume.hu, task.params.window)
        out = tmp / "slices" / str(task.params.size)
        out.mkdir(parents=True)
        for k, plane in enumerate(display):
            (out / f"{k:04d}.png").write_bytes(encode_png(square(plane, task.params.size)))
        meta["slices"] = int(display.shape[0])
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.rename(folder)
        except OSError:  # another worker wrote the same key first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**result, **meta}


def _drop_slice_labels(record: Record, indexes: list[int | None]) -> None:
    """Remove the labels of slices left out of a volume (label ``i`` belongs to ``files[i]``).

    Labels that no longer line up (an index unknown, a length other than the file count) are
    removed with their slices rather than kept misaligned.
    """
    files = record.attributes.get("files")
    count = len(files) if isinstance(files, list) else None
    gone = {i for i in indexes if i is not None}
    for key in ("slice_labels", "lobe_labels"):
        labels = record.attributes.get(key)
        if not isinstance(labels, list):
            continue
        if count is None or len(labels) != count or None in indexes:
            del record.attributes[key]
            continue
        record.attributes[key] = [v for i, v in enumerate(labels) if i not in gone]


def _spacing(value: object) -> tuple[float, float, float] | None:
    """An adapter's ``spacing`` attribute (x, y, z mm) for slice stacks, when it has three."""
    if isinstance(value, (list, tuple)) and len(value) == 3:
        try:
            return (float(value[0]), float(value[1]), float(value[2]))
        except (TypeError, ValueError):
            return None
    return None


def process_volumes(
    records: list[Record],
    roots: dict[str, Path],
    cache: Path,
    *,
    params: CtParams | None = None,
    executor: Executor | None = None,
    log: ProblemLog | None = None,
    max_voxels: int = MAX_VOXELS,
) -> list[Record]:
    """Process every volume record; return the usable ones (each with ``processed_key``).

    A volume that cannot be read is left out with one problem; a mask that does not fit its
    image is dropped with a ``mask-mismatch`` problem and the image is kept. A volume (or mask)
    of more than ``max_voxels`` voxels is not read: a ``too-large`` problem (a build passes
    :func:`~covid19_images.process.ct.volume.voxel_limit` of its ``--max-pixels``).

    Example:
        >>> kept = process_volumes(records, {"covid-ct-md": raw}, cache)  # doctest: +SKIP
    """
    params = params or CtParams()
    executor = executor or LocalExecutor()
    log = log if log is not None else ProblemLog()
    tasks = [
        _VolumeTask(
            root=str(Path(roots[r.source]).absolute()),  # a worker may not share the cwd
            path_raw=r.path_raw,
            fmt=str(r.attributes["format"]),
            files=tuple(r.attributes.get("files", ())),
            slice_index=r.attributes.get("slice_index"),
            hu=r.attributes.get("hu"),
            hu_offset=r.attributes.get("hu_offset"),
            spacing=_spacing(r.attributes.get("spacing")),
            masks=tuple(zip(r.mask_paths, r.attributes.get("mask_maps", ()), strict=False)),
            cache=str(Path(cache).absolute()),
            params=params,
            max_voxels=max_voxels,
        )
        for r in records
    ]
    kept: list[Record] = []
    for r, meta in zip(records, executor.map(_process_volume, tasks, "reading CT"), strict=True):
        if meta.get("error_kind"):
            log.add(
                r.source,
                r.path_raw,
                r.source_row,
                meta["error_kind"],
                "skipped",
                meta.get("error", ""),
            )
            continue
        if meta.get("mask_error_kind"):
            log.add(
                r.source,
                r.path_raw,
                r.source_row,
                meta["mask_error_kind"],
                "kept",
                f"mask left out: {meta['mask_error']}",
            )
            r.problems.append(str(meta["mask_error_kind"]))
        for warning in meta.get("warnings", []):
            log.add(r.source, r.path_raw, r.source_row, "bad-value", "kept", str(warning))
        for repair in meta.get("repairs", []):
            log.add(r.source, r.path_raw, r.source_row, "bad-value", "repaired", str(repair))
            r.problems.append("bad-value")
        left_out = meta.get("left_out", [])
        for item in left_out:
            log.add(r.source, str(item["file"]), None, "slice-gap", "skipped", str(item["detail"]))
        if left_out:
            r.problems.append("slice-gap")
            _drop_slice_labels(r, [item.get("index") for item in left_out])
        r.depth, r.height, r.width = (int(v) for v in meta["shape"])
        r.spacing = [float(v) for v in meta["spacing"]]
        r.sha256_file = meta["sha256_file"]
        r.sha256_pixels = meta["sha256_pixels"]
        r.processed_key = meta["key"]
        r.bits_stored = 8 if meta["dtype"] == "uint8" else 16
        r.attributes["hu"] = meta["hu"]
        r.attributes["slices"] = meta["slices"]
        r.attributes["has_mask"] = "mask_labels" in meta
        r.attributes["mask_labels"] = meta.get("mask_labels", [])
        if meta["hu"] is False and "not-hu" not in r.tags:
            r.tags.append("not-hu")
        kept.append(r)
    return kept
