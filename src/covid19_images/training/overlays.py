"""Overlay montages of a run's predictions: label-map outlines and boxes over the images.

Every tile shows the packed image in grey with the **truth in green** and the **prediction in
red** (outlines of each label region, or box edges), so a reader sees at a glance where a model
misses or spills over. The drawing is OpenCV's (``findContours``/``drawContours``,
``rectangle``); matplotlib (Agg, no pyplot) lays the tiles out with their titles; the PNG is
written atomically. No torch.

Example:
    >>> import numpy as np
    >>> image = np.zeros((16, 16), np.uint8)
    >>> truth = np.zeros((16, 16), np.uint8); truth[4:12, 4:12] = 1
    >>> tile = outline(image, truth, truth)
    >>> tile.shape, tile[4, 4].tolist()
    ((16, 16, 3), [255, 0, 0])
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from covid19_images.atomic import write_bytes

TRUTH = (0, 200, 0)
"""RGB of the truth's outlines and boxes (green)."""
PREDICTED = (255, 0, 0)
"""RGB of the prediction's outlines and boxes (red, drawn over the truth)."""


def _rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"an image must be H x W, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(array[..., None], 3, axis=2))


def _edges(tile: np.ndarray, labels: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Draw the outline of every non-zero label region of ``labels`` onto ``tile``."""
    for value in np.unique(labels):
        if value == 0:
            continue
        region = (labels == value).astype(np.uint8)
        contours, _ = cv2.findContours(region, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(tile, contours, -1, colour, 1)


def outline(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``image`` (H x W) as RGB with the outlines of ``truth`` (green) and ``predicted`` (red)
    label maps (H x W; 0 is background); a map of another size is resized to the image
    (nearest)."""
    tile = _rgb(image)
    side = tile.shape[:2]
    for labels, colour in ((truth, TRUTH), (predicted, PREDICTED)):
        array = np.asarray(labels)
        if array.shape != side:
            array = cv2.resize(
                array.astype(np.uint8), (side[1], side[0]), interpolation=cv2.INTER_NEAREST
            )
        _edges(tile, array.astype(np.uint8), colour)
    return tile


def boxed(
    image: np.ndarray,
    truth: np.ndarray,
    predicted: np.ndarray,
    scores: np.ndarray | None = None,
    threshold: float = 0.5,
) -> np.ndarray:
    """``image`` (H x W) as RGB with ``truth`` boxes (green) and ``predicted`` boxes (red;
    those scoring at least ``threshold`` where ``scores`` are given), each (K, 4) as
    ``x0, y0, x1, y1`` in pixels with edges at whole numbers (``x1`` is past the last column,
    as in ``boxes.parquet``): each box's outline is its outermost covered pixels.

    Example:
        >>> tile = boxed(np.zeros((8, 8), np.uint8), np.array([[1, 1, 6, 6]]), np.zeros((0, 4)))
        >>> tile[1, 3].tolist()
        [0, 200, 0]
    """
    tile = _rgb(image)
    shown = np.asarray(predicted, dtype=float).reshape(-1, 4)
    if scores is not None:
        shown = shown[np.asarray(scores, dtype=float).reshape(-1) >= threshold]
    for boxes, colour in (
        (np.asarray(truth, dtype=float).reshape(-1, 4), TRUTH),
        (shown, PREDICTED),
    ):
        # Boxes have pixel edges at whole numbers (a box over columns 2 to 5 is x0 = 2,
        # x1 = 6); OpenCV's corners are inclusive pixels: the last column is ceil(x1) - 1.
        for x0, y0, x1, y1 in boxes:
            left, top = int(np.floor(x0)), int(np.floor(y0))
            right, bottom = max(int(np.ceil(x1)) - 1, left), max(int(np.ceil(y1)) - 1, top)
            cv2.rectangle(tile, (left, top), (right, bottom), colour, 1)
    return tile


def _grid(
    tiles: Sequence[np.ndarray], titles: Sequence[str], path: Path, columns: int, title: str
) -> Path:
    from matplotlib.figure import Figure

    if len(titles) != len(tiles):
        raise ValueError(f"{len(titles)} titles for {len(tiles)} images")
    if not tiles:
        raise ValueError("a montage needs at least one image")
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    figure = Figure(figsize=(2.2 * columns, 2.4 * rows + 0.5), dpi=100)
    axes = figure.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k < len(tiles):
            ax.imshow(tiles[k], interpolation="nearest")
            ax.set_title(titles[k], fontsize=7)
    figure.suptitle(f"{title}: truth green, prediction red", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def mask_montage(
    images: np.ndarray | Sequence[np.ndarray],
    truth: np.ndarray | Sequence[np.ndarray],
    predicted: np.ndarray | Sequence[np.ndarray],
    titles: Sequence[str],
    path: Path | str,
    *,
    columns: int = 4,
    limit: int = 16,
    title: str = "segmentation",
) -> Path:
    """One PNG grid of the first ``limit`` images with truth and predicted label-map outlines.

    Args:
        images: N x H x W uint8 images.
        truth: N x H x W label maps (0 background).
        predicted: N x H x W predicted label maps.
        titles: One caption per image (e.g. its uid and Dice).
        path: The PNG to write (atomically).
        columns: Tiles per row.
        limit: At most this many tiles.
        title: The figure's title.

    Example:
        >>> import tempfile
        >>> maps = np.zeros((2, 8, 8), np.uint8)
        >>> mask_montage(maps, maps, maps, ["a", "b"], Path(tempfile.mkdtemp()) / "m.png").name
        'm.png'
    """
    n = min(len(images), limit)
    if len(truth) < n or len(predicted) < n:
        raise ValueError(f"{len(images)} images, {len(truth)} truths, {len(predicted)} predictions")
    tiles = [outline(images[k], truth[k], predicted[k]) for k in range(n)]
    return _grid(tiles, list(titles)[:n], Path(path), columns, title)


def box_montage(
    images: np.ndarray | Sequence[np.ndarray],
    truth: Sequence[np.ndarray],
    predicted: Sequence[np.ndarray],
    scores: Sequence[np.ndarray] | None,
    titles: Sequence[str],
    path: Path | str,
    *,
    threshold: float = 0.5,
    columns: int = 4,
    limit: int = 16,
    title: str = "detection",
) -> Path:
    """One PNG grid of the first ``limit`` images with true and predicted boxes.

    Args:
        images: N x H x W uint8 images.
        truth: Per image, its true boxes (K x 4, ``x0, y0, x1, y1`` in pixels of the image).
        predicted: Per image, its predicted boxes (K x 4).
        scores: Per image, the predicted boxes' scores (or ``None`` to draw them all).
        titles: One caption per image.
        path: The PNG to write (atomically).
        threshold: Predicted boxes scoring below it are not drawn.
        columns: Tiles per row.
        limit: At most this many tiles.
        title: The figure's title.

    Example:
        >>> import tempfile
        >>> box = [np.array([[1.0, 1.0, 6.0, 6.0]])]
        >>> out = Path(tempfile.mkdtemp()) / "b.png"
        >>> box_montage(np.zeros((1, 8, 8), np.uint8), box, box, None, ["a"], out).name
        'b.png'
    """
    n = min(len(images), limit)
    if len(truth) < n or len(predicted) < n or (scores is not None and len(scores) < n):
        raise ValueError(f"{len(images)} images but fewer box lists")
    tiles = [
        boxed(images[k], truth[k], predicted[k], None if scores is None else scores[k], threshold)
        for k in range(n)
    ]
    return _grid(tiles, list(titles)[:n], Path(path), columns, title)
