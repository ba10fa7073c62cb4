"""The fast path: each split of a dataset as one memory-mappable uint8 array.

A build writes, beside the split folders, ``<split>_<size>.npy`` (``(N, size, size)`` uint8, one
image or CT slice per row), ``packed.parquet`` (one row per array row: ``split``, ``index``,
``uid``, ``slice``, ``class``, ``label``, ``path``) and ``packed.json`` (format version, classes,
size, counts, the train split's mean and standard deviation). Loaders map the arrays read-only:
reading a batch is a memory copy, with no file opened or image decoded per sample.

Example:
    >>> split = open_split("datasets/xray-covid", "train")  # doctest: +SKIP
    >>> split.images.shape, split.labels[:3], split.classes  # doctest: +SKIP
    ((408, 224, 224), array([0, 2, 1]), ['covid19', 'normal', 'pneumonia'])
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np
import pandas as pd
from PIL import Image

from covid19_images.errors import Covid19ImagesError
from covid19_images.loaders.boxes import SplitBoxes, read_boxes
from covid19_images.progress import track

PACKED_VERSION: Final = 1
"""Bump when the arrays or their index change shape or meaning; loaders refuse other versions."""
META: Final = "packed.json"
INDEX: Final = "packed.parquet"
SPLITS: Final = ("train", "val", "test")
_STATS_SAMPLE: Final = 2000


class LoadError(Covid19ImagesError):
    """A dataset folder cannot be loaded (not a dataset, older format, missing split, damage)."""


def array_name(split: str, size: int) -> str:
    """The file of one split's packed array.

    Example:
        >>> array_name("train", 224)
        'train_224.npy'
    """
    return f"{split}_{size}.npy"


def write_packed(
    folder: Path,
    items: pd.DataFrame,
    classes: Sequence[str],
    size: int,
    tool: str,
    masks: Callable[[str, int], np.ndarray] | None = None,
    progress: bool = False,
    *,
    targets: Sequence[str] = (),
    task: str | None = None,
) -> dict[str, Any]:
    """Pack the square PNGs ``items`` names (``split``, ``path``, ``uid``, ``class``, and
    optionally ``slice``) into one array per split, in ``items`` order; returns the metadata.

    ``classes`` fixes the label numbers (their order); the PNGs must be ``size`` x ``size``
    greyscale, as a build writes them. ``masks(uid, slice)`` gives each row's label map
    (``size`` x ``size`` uint8) for segmentation datasets, packed as ``<split>_<size>_mask.npy``.
    A ``path`` is relative to ``folder`` (not to the working directory), or absolute: a path
    outside ``folder`` (a cached slice) is read but not listed in the index. ``progress``
    shows a bar per split (on stderr). ``targets`` names columns of ``items`` (numbers) that
    the index keeps as float64 regression targets; ``task`` (``segmentation``, ``detection``,
    ``regression``) is recorded in ``packed.json`` for the loaders.

    Raises:
        LoadError: a PNG is missing or not ``size`` x ``size``.
    """
    names = list(classes)
    meta: dict[str, Any] = {
        "version": PACKED_VERSION,
        "tool": tool,
        "size": size,
        "classes": names,
        "splits": {},
    }
    if task is not None:
        meta["task"] = task
    if targets:
        meta["targets"] = list(targets)
    rows = []
    for split in SPLITS:
        part = items[items["split"] == split].reset_index(drop=True)
        name = array_name(split, size)
        tmp = folder / f".{name}.tmp"
        mask_name = f"{split}_{size}_mask.npy"
        mask_tmp = folder / f".{mask_name}.tmp"
        # Rows are appended to the files as they are read (no memory map: the build's memory
        # stays flat however many images it packs); the train split's statistics come from a
        # histogram of evenly spaced rows.
        step = max(1, len(part) // _STATS_SAMPLE)
        histogram = np.zeros(256, dtype=np.int64)
        with ExitStack() as files:
            out = files.enter_context(_npy_writer(tmp, (len(part), size, size)))
            mask_out = (
                files.enter_context(_npy_writer(mask_tmp, (len(part), size, size)))
                if masks is not None
                else None
            )
            slices_of = part["slice"] if "slice" in part else pd.Series([0] * len(part))
            rows_of = zip(part["path"], part["uid"], slices_of, strict=True)
            for i, (rel, uid, k) in enumerate(
                track(rows_of, len(part), f"packing {split} arrays", progress)
            ):
                try:
                    with Image.open(folder / str(rel)) as img:
                        pixels = np.asarray(img.convert("L"))
                except FileNotFoundError:
                    raise LoadError(
                        f"{rel} is not in {folder}: cannot pack it (a relative path is read "
                        "from the dataset folder; a slice elsewhere needs an absolute path)"
                    ) from None
                if pixels.shape != (size, size):
                    raise LoadError(f"{rel} is {pixels.shape}, not {size} x {size}: cannot pack it")
                out.write(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
                if i % step == 0:
                    histogram += np.bincount(pixels.ravel(), minlength=256)
                if mask_out is not None and masks is not None:
                    mask = masks(str(uid), 0 if pd.isna(k) else int(k))
                    mask_out.write(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
        if split == "train":
            meta["mean"], meta["std"] = _stats(histogram)
        tmp.replace(folder / name)
        meta["splits"][split] = {"file": name, "count": len(part)}
        if masks is not None:
            mask_tmp.replace(folder / mask_name)
            meta["splits"][split]["mask_file"] = mask_name
        slices = part["slice"] if "slice" in part else pd.Series([None] * len(part))
        for i, (uid, name_, rel, k) in enumerate(
            zip(part["uid"], part["class"], part["path"], slices, strict=True)
        ):
            rows.append(
                {
                    "split": split,
                    "index": i,
                    "uid": uid,
                    "slice": None if pd.isna(k) else int(k),
                    "class": name_,
                    "label": names.index(str(name_)),
                    "path": None if Path(str(rel)).is_absolute() else rel,
                    **{
                        t: float(v)
                        for t, v in zip(targets, part.loc[i, list(targets)], strict=True)
                    },
                }
            )
    columns = ["split", "index", "uid", "slice", "class", "label", "path", *targets]
    index = pd.DataFrame(rows, columns=columns)
    index["slice"] = index["slice"].astype("Int64")
    index["label"] = index["label"].astype("int64")
    for target in targets:
        index[target] = index[target].astype("float64")
    index.to_parquet(folder / INDEX, index=False)
    (folder / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


@contextmanager
def _npy_writer(path: Path, shape: tuple[int, ...]) -> Iterator[BinaryIO]:
    """A ``.npy`` file of uint8 ``shape``, its header written, for its rows to be appended in
    order (C order); checked complete when closed, and removed when the writing fails."""
    try:
        with path.open("wb") as f:
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                "fortran_order": False,
                "shape": shape,
            }
            np.lib.format.write_array_header_1_0(f, header)
            start = f.tell()
            yield f
            written = f.tell() - start
        if written != int(np.prod(shape)):
            raise LoadError(f"{path.name}: {written} bytes written for an array of {shape}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _stats(histogram: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation (0-1 scale) of pixels counted in a 256-bin histogram.

    Example:
        >>> _stats(np.bincount([0, 255], minlength=256))
        (0.5, 0.5)
    """
    total = int(histogram.sum())
    if total == 0:
        return 0.5, 0.25
    values = np.arange(256, dtype=np.float64) / 255.0
    mean = float((values * histogram).sum() / total)
    var = float((((values - mean) ** 2) * histogram).sum() / total)
    return mean, max(var**0.5, 1e-6)


@dataclass
class PackedSplit:
    """One split of a dataset, read through the packed arrays.

    ``images`` is a read-only memory map; ``labels`` and ``uids`` follow its rows.
    """

    folder: Path
    split: str
    size: int
    images: np.ndarray
    labels: np.ndarray
    uids: list[str]
    slices: list[int | None]
    classes: list[str]
    mean: float
    std: float
    masks: np.ndarray | None = None
    """Segmentation and detection datasets: the label map of each row (same shape as
    ``images``; zeros where a detection image has no mask)."""
    task: str = "classification"
    """``classification``, ``segmentation``, ``detection`` or ``regression``."""
    targets: np.ndarray | None = None
    """Regression datasets: ``(N, T)`` float32, one column per name of ``target_names``."""
    target_names: list[str] = field(default_factory=list)
    boxes: SplitBoxes | None = None
    """Detection datasets: the boxes of each row (:mod:`covid19_images.loaders.boxes`)."""

    def __len__(self) -> int:
        return len(self.labels)


def open_split(folder: Path | str, split: str = "train", size: int | None = None) -> PackedSplit:
    """Open one split of an assembled dataset for reading.

    Raises:
        LoadError: The folder is not a dataset, was built by a version without (or with another
            format of) packed arrays, has no such split or size, or an array is truncated.

    Example:
        >>> try:
        ...     open_split("/nonexistent")
        ... except LoadError as exc:
        ...     print(exc)
        /nonexistent is not a dataset folder of covid19-images (no manifest.parquet)
    """
    folder = Path(folder)
    meta = read_meta(folder)
    built = int(meta["size"])
    if size is not None and size != built:
        raise LoadError(
            f"{folder} is packed at {built} px, not {size}: rebuild it with "
            f"`covid19-images build RECIPE --size {size}` (or load size={built})"
        )
    if split not in meta["splits"]:
        raise LoadError(f"{folder} has no split {split!r}; its splits: {', '.join(meta['splits'])}")
    info = meta["splits"][split]
    path = folder / str(info["file"])
    count = int(info["count"])
    images = _map(path, count, built)
    masks = _map(folder / str(info["mask_file"]), count, built) if "mask_file" in info else None
    try:
        index = pd.read_parquet(folder / INDEX)
    except (OSError, ValueError) as exc:
        raise LoadError(f"{folder / INDEX} cannot be read ({exc}): rebuild with --force") from exc
    rows = index[index["split"] == split].sort_values("index")
    if len(rows) != count:
        raise LoadError(
            f"{folder / INDEX} lists {len(rows)} rows for {split}, the array holds {count}: "
            "rebuild with --force"
        )
    names = [str(t) for t in meta.get("targets", [])]
    missing = [t for t in names if t not in rows]
    if missing:
        raise LoadError(f"{folder / INDEX} lacks the targets {missing}: rebuild with --force")
    return PackedSplit(
        folder=folder,
        split=split,
        size=built,
        images=images,
        labels=rows["label"].to_numpy(dtype=np.int64),
        uids=[str(u) for u in rows["uid"]],
        slices=[None if pd.isna(k) else int(k) for k in rows["slice"]],
        classes=[str(c) for c in meta["classes"]],
        mean=float(meta.get("mean", 0.5)),
        std=float(meta.get("std", 0.25)),
        masks=masks,
        task=str(meta.get("task", "segmentation" if masks is not None else "classification")),
        targets=rows[names].to_numpy(np.float32) if names else None,
        target_names=names,
        boxes=read_boxes(folder, split, count) if meta.get("task") == "detection" else None,
    )


def read_meta(folder: Path) -> dict[str, Any]:
    """``packed.json`` of a dataset folder, checked for this version's format."""
    if not (folder / "manifest.parquet").is_file():
        raise LoadError(f"{folder} is not a dataset folder of covid19-images (no manifest.parquet)")
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LoadError(
            f"{folder} was built by an older covid19-images, without packed arrays: rebuild it "
            "with `covid19-images build RECIPE --force`"
        ) from None
    except (OSError, ValueError) as exc:
        raise LoadError(f"{folder / META} cannot be read ({exc}): rebuild with --force") from exc
    if not isinstance(meta, dict) or meta.get("version") != PACKED_VERSION:
        found = meta.get("version") if isinstance(meta, dict) else None
        raise LoadError(
            f"{folder} has packed arrays of format {found}, this covid19-images reads format "
            f"{PACKED_VERSION}: rebuild it with `covid19-images build RECIPE --force`"
        )
    return meta


def _map(path: Path, count: int, size: int) -> np.ndarray:
    """The array file memory-mapped read-only, after checking it is whole."""
    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
    except FileNotFoundError:
        raise LoadError(f"{path} is missing: rebuild the dataset with --force") from None
    except (OSError, ValueError) as exc:
        raise LoadError(f"{path} is not a readable array ({exc}): rebuild with --force") from exc
    expected = (count, size, size)
    if tuple(shape) != expected or dtype != np.uint8:
        raise LoadError(f"{path} holds {dtype} {shape}, expected uint8 {expected}: rebuild")
    need = offset + count * size * size
    have = path.stat().st_size
    if have < need:
        raise LoadError(
            f"{path} is truncated ({have:,} of {need:,} bytes): rebuild the dataset with --force"
        )
    if count == 0:
        return np.zeros(expected, dtype=np.uint8)
    mapped: np.ndarray = np.load(path, mmap_mode="r")
    return mapped
