"""Boxes of a detection dataset: ``boxes.parquet``, instance masks, and boxes moved by a draw.

A detection build (``xray-lung-boxes``) writes ``boxes.parquet`` beside the packed arrays: one
row per box with the packed row it belongs to (``split``, ``index``, ``uid``), its number within
the image (``box``), ``label`` and ``category_id`` (1-based, the recipe's ``box_labels`` order),
``x0 y0 x1 y1`` in the packed images' pixels (continuous coordinates, pixel edges at whole
numbers, so a box over pixel columns 2 to 5 is ``x0 = 2, x1 = 6``), and ``mask`` (whether the
image has a mask, from which the box's instance mask is cut).

An instance mask is the image's mask inside its box (pixels whose centre lies in the box).
Under augmentation a box moves as its four corners do through the draw's affine map: the moved
box is their bounding box, clipped to the image; a box with less than a pixel of width or height
left inside is dropped. Instance masks move with the image by nearest neighbour.

No framework here: NumPy and OpenCV (:mod:`covid19_images.loaders.warp`).

Example:
    >>> mask = np.ones((4, 4), np.uint8)
    >>> instance_masks(mask, np.array([[0.0, 0.0, 2.0, 4.0]], np.float32))[0].sum()
    np.uint64(8)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from covid19_images.loaders.augment import Draw

BOXES: Final = "boxes.parquet"
BOX_COLUMNS: Final = (
    "split",
    "index",
    "uid",
    "box",
    "label",
    "category_id",
    "x0",
    "y0",
    "x1",
    "y1",
    "mask",
)
MIN_SIDE: Final = 1.0
"""A moved box keeping less than this (pixels) of width or height inside the image is dropped."""


@dataclass
class SplitBoxes:
    """The boxes of one split, per packed row: ``boxes[i]`` is ``(N_i, 4)`` float32 xyxy,
    ``labels[i]`` ``(N_i,)`` int64 category ids (1-based), ``masked[i]`` whether row ``i``
    has a mask to cut instance masks from."""

    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    masked: np.ndarray
    names: list[str]
    """Category names, in category id order (id 1 first)."""


def read_boxes(folder: Path | str, split: str, rows: int) -> SplitBoxes | None:
    """The boxes of ``split`` (``rows`` packed rows), or None when the dataset has none.

    Example:
        >>> read_boxes("/nonexistent", "train", 0) is None
        True
    """
    path = Path(folder) / BOXES
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    names = (
        frame.drop_duplicates("category_id")
        .sort_values("category_id")["label"]
        .astype(str)
        .tolist()
    )
    part = frame[frame["split"] == split].sort_values(["index", "box"])
    boxes = [np.zeros((0, 4), np.float32) for _ in range(rows)]
    labels = [np.zeros(0, np.int64) for _ in range(rows)]
    masked = np.zeros(rows, bool)
    for index, group in part.groupby("index", sort=True):
        i = int(str(index))
        boxes[i] = group[["x0", "y0", "x1", "y1"]].to_numpy(np.float32)
        labels[i] = group["category_id"].to_numpy(np.int64)
        masked[i] = bool(group["mask"].iloc[0])
    return SplitBoxes(boxes, labels, masked, names)


def instance_masks(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` uint8: ``mask`` (non-zero is inside) within each box of ``boxes`` (xyxy).

    Example:
        >>> m = instance_masks(np.ones((3, 3), np.uint8), np.array([[1.0, 1.0, 3.0, 2.0]]))
        >>> m[0].tolist()
        [[0, 0, 0], [0, 1, 1], [0, 0, 0]]
    """
    height, width = mask.shape
    inside = (np.asarray(mask) != 0).astype(np.uint8)
    out = np.zeros((len(boxes), height, width), np.uint8)
    centres_x, centres_y = np.arange(width) + 0.5, np.arange(height) + 0.5
    for n, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64)):
        cols = (centres_x >= x0) & (centres_x < x1)
        rows = (centres_y >= y0) & (centres_y < y1)
        out[n] = inside * (rows[:, None] & cols[None, :])
    return out


def move_boxes(
    boxes: np.ndarray, d: Draw, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(N, 4)`` xyxy moved by the draw ``d`` as its image is, and which are kept.

    Each box's four corners go through the forward map of
    :func:`~covid19_images.loaders.warp.pixel_matrix`; the moved box is their bounding box,
    clipped to the image. Boxes keeping less than :data:`MIN_SIDE` of width or height are
    dropped (``kept`` is False for them).

    Example:
        >>> from covid19_images.loaders.augment import Draw
        >>> right = Draw(0.0, 1.0, 0.25, 0.0, 0.0, 1.0)  # a quarter of the width to the right
        >>> moved, kept = move_boxes(np.array([[2.0, 2.0, 4.0, 4.0]]), right, 8, 8)
        >>> moved.tolist(), kept.tolist()
        ([[4.0, 2.0, 6.0, 4.0]], [True])
    """
    from covid19_images.loaders.warp import pixel_matrix

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    inverse = np.vstack([pixel_matrix(d, height, width), [0.0, 0.0, 1.0]])
    forward = np.linalg.inv(inverse)
    x0, y0, x1, y1 = boxes.T
    xs = np.stack([x0, x1, x1, x0], axis=1) - 0.5  # pixel centres at whole numbers
    ys = np.stack([y0, y0, y1, y1], axis=1) - 0.5
    mx = forward[0, 0] * xs + forward[0, 1] * ys + forward[0, 2] + 0.5
    my = forward[1, 0] * xs + forward[1, 1] * ys + forward[1, 2] + 0.5
    moved = np.stack(
        [
            np.clip(mx.min(axis=1), 0, width),
            np.clip(my.min(axis=1), 0, height),
            np.clip(mx.max(axis=1), 0, width),
            np.clip(my.max(axis=1), 0, height),
        ],
        axis=1,
    )
    kept = ((moved[:, 2] - moved[:, 0]) >= MIN_SIDE) & ((moved[:, 3] - moved[:, 1]) >= MIN_SIDE)
    return moved.astype(np.float32), kept


def pack_bits(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` 0/1 masks as ``(ceil(N / 8), H, W)`` uint8 planes, bit ``n % 8`` of plane
    ``n // 8`` for mask ``n``: one nearest-neighbour warp per plane moves up to eight masks.

    Example:
        >>> planes = pack_bits(np.array([[[1, 0]], [[1, 1]]], np.uint8))
        >>> planes.tolist(), unpack_bits(planes, 2).tolist()
        ([[[3, 2]]], [[[1, 0]], [[1, 1]]])
    """
    count, height, width = masks.shape
    planes = np.zeros(((count + 7) // 8, height, width), np.uint8)
    for n in range(count):
        planes[n // 8] |= (masks[n] != 0).astype(np.uint8) << (n % 8)
    return planes


def unpack_bits(planes: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` masks :func:`pack_bits` packed, as ``(count, H, W)`` uint8 0/1."""
    height, width = planes.shape[1:]
    out = np.zeros((count, height, width), np.uint8)
    for n in range(count):
        out[n] = (planes[n // 8] >> (n % 8)) & 1
    return out
