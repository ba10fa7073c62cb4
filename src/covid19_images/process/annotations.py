"""Layer 2 for X-ray annotations: each image's square-copy grid and its lung mask on that grid.

For every annotated record a worker finds the :class:`~covid19_images.process.grid.SquareGrid`
of its square copy (from the image header and the processing parameters) and, where the record
has a mask, reads the mask, checks it and samples it onto the copy's grid by nearest neighbour
(binary: 1 where the mask is at least half its largest value). Results are cached by content in
``<cache>/<key[:2]>/<key>/`` (``mask.png`` with values 0/1, and ``meta.json``), keyed by the
image's processed key, the mask file's bytes and the size, so a rebuild reads no image again.

A mask is checked against its image:

- another size with the same aspect ratio (within 1 %): scaled onto the image (the COVID-19
  Radiography Database keeps 256 px masks of 299 px images); ``meta["mask_scaled_from"]``
  keeps its own size;
- another aspect ratio: ``mask-mismatch``, the mask is not used;
- no pixel set, or none inside the image's centred square: ``empty-mask``, not used;
- unreadable: ``unreadable-file`` (or the size kinds of :func:`~covid19_images.process.image.
  open_image`), not used.

Example:
    >>> results = grid_and_masks(tasks, executor)  # doctest: +SKIP
    >>> results[0]["grid"], results[0].get("mask")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from covid19_images.process.executor import Executor, fails_as
from covid19_images.process.grid import SquareGrid, aspect_matches, square_grid
from covid19_images.process.image import (
    MAX_PIXELS,
    DecodeError,
    describe_error,
    encode_png,
    open_image,
)

ANNOTATION_VERSION: Final = 1
"""Bump when what is written for an annotation changes: every key changes."""
MASK: Final = "mask.png"
SIZE_KINDS: Final = frozenset({"too-large", "implausible-size"})


@dataclass(frozen=True)
class AnnotationTask:
    """One image to place: its file, processed key and size, and its mask file (or None)."""

    image: str
    key: str
    size: int
    sizes: tuple[int, ...]
    cache: str
    mask: str | None = None
    max_pixels: int = MAX_PIXELS


def grid_and_masks(tasks: list[AnnotationTask], executor: Executor) -> list[dict[str, Any]]:
    """Run :func:`place` over ``tasks`` (in the executor's workers), results in task order."""
    return list(executor.map(place, tasks, "placing masks and boxes"))


def _place_failed(task: AnnotationTask, reason: str) -> dict[str, Any]:
    """An image an engine gave up on placing: no grid, so the image is skipped (a problem)."""
    return {"error_kind": "unreadable-file", "error": reason}


@fails_as(_place_failed)
def place(task: AnnotationTask) -> dict[str, Any]:
    """The grid of one image's copy and, if it has one, its mask on that grid (cached).

    Returns ``grid`` (the :class:`SquareGrid` fields), and for a mask either ``mask`` (the
    cached PNG's path) or ``error_kind`` and ``error``; ``mask_scaled_from`` when the mask was
    stored at another size. Never raises on bad input.
    """
    try:
        mask_bytes = Path(task.mask).read_bytes() if task.mask is not None else b""
    except OSError as exc:
        mask_bytes, read_error = b"", f"cannot read the mask: {describe_error(exc)}"
    else:
        read_error = ""
    token = json.dumps(
        [ANNOTATION_VERSION, task.key, task.size, list(task.sizes), task.mask is not None]
    ).encode()
    key = hashlib.sha256(token + hashlib.sha256(mask_bytes).digest()).hexdigest()[:32]
    folder = Path(task.cache) / key[:2] / key
    if not read_error and (folder / "meta.json").is_file():
        meta: dict[str, Any] = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if "mask" in meta:
            meta["mask"] = str(folder / MASK)
        return meta
    try:
        grid = square_grid(Path(task.image).read_bytes(), task.size, task.sizes, task.max_pixels)
    except (OSError, DecodeError) as exc:
        return {"error_kind": "unreadable-file", "error": f"image: {describe_error(exc)}"}
    meta = {"grid": grid_fields(grid)}
    pixels = None
    if task.mask is not None:
        if read_error:
            return {**meta, "error_kind": "unreadable-file", "error": read_error}
        try:
            pixels, scaled = _mask_on_grid(mask_bytes, grid, task.max_pixels)
        except DecodeError as exc:
            meta.update(error_kind=exc.kind, error=str(exc))
        else:
            if scaled is not None:
                meta["mask_scaled_from"] = scaled
            meta["mask"] = MASK
    if meta.get("error_kind") not in SIZE_KINDS:  # a limit, not the key, decides those
        _store(folder, meta, pixels)
    if "mask" in meta:
        meta["mask"] = str(folder / MASK)
    return meta


def grid_fields(grid: SquareGrid) -> dict[str, int]:
    """A grid as JSON-ready numbers.

    Example:
        >>> grid_fields(SquareGrid(4, 2, 1, 1, 0, 2, 4))["side"]
        2
    """
    return {
        "width": grid.width,
        "height": grid.height,
        "scale": grid.scale,
        "left": grid.left,
        "top": grid.top,
        "side": grid.side,
        "size": grid.size,
    }


def _mask_on_grid(
    data: bytes, grid: SquareGrid, max_pixels: int
) -> tuple[np.ndarray, list[int] | None]:
    """The mask in ``data`` as 0/1 on ``grid``, and its own size when it was scaled."""
    if not data:
        raise DecodeError("empty-mask", "a zero-byte mask file")
    try:
        with open_image(data, max_pixels) as img:
            img.load()
            pixels = np.asarray(img.convert("L") if img.mode not in ("L", "I;16", "I") else img)
    except DecodeError:
        raise
    except Exception as exc:  # any decoder failure is a problem row, never a crash
        raise DecodeError("unreadable-file", f"cannot decode the mask: {exc}") from exc
    rows, cols = pixels.shape[:2]
    scaled: list[int] | None = None
    if (cols, rows) != (grid.width, grid.height):
        if not aspect_matches(grid.width, grid.height, cols, rows):
            raise DecodeError(
                "mask-mismatch",
                f"the mask is {cols} x {rows} px, its image {grid.width} x {grid.height}: "
                "another aspect ratio, so it cannot be scaled onto the image",
            )
        scaled = [cols, rows]
    top = int(pixels.max()) if pixels.size else 0
    if top == 0:
        raise DecodeError("empty-mask", "no pixel of the mask is set")
    binary = (pixels >= (top + 1) // 2).astype(np.uint8)
    on_grid = grid.sample(binary)
    if not on_grid.any():
        raise DecodeError("empty-mask", "no pixel of the mask lies inside the image's square copy")
    return on_grid, scaled


def _store(folder: Path, meta: dict[str, Any], pixels: np.ndarray | None) -> None:
    """Write ``meta.json`` (and ``mask.png``) into ``folder`` through a temporary folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if pixels is not None:
            (tmp / MASK).write_bytes(encode_png(pixels))
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
        try:
            tmp.rename(folder)
        except OSError:  # another worker wrote the same key first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = [
    "ANNOTATION_VERSION",
    "AnnotationTask",
    "grid_and_masks",
    "grid_fields",
    "place",
]
