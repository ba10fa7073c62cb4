"""Overlay montages: the truth's outline is green and the prediction's red, exactly on the
borders of the regions and boxes drawn into generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_erosion

from covid19_images.training.overlays import (
    PREDICTED,
    TRUTH,
    box_montage,
    boxed,
    mask_montage,
    outline,
)


def _square(side: int, top: int, left: int, size: int) -> np.ndarray:
    labels = np.zeros((side, side), np.uint8)
    labels[top : top + size, left : left + size] = 1
    return labels


def _colour(tile: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(tile == np.array(colour, np.uint8), axis=-1)


def test_outlines_follow_the_border_of_each_region() -> None:
    image = np.full((32, 32), 90, np.uint8)
    truth, predicted = _square(32, 4, 4, 10), _square(32, 18, 18, 8)
    tile = outline(image, truth, predicted)
    green, red = _colour(tile, TRUTH), _colour(tile, PREDICTED)
    # the outline is the region's one-pixel border: inside stays grey, outside untouched
    border = truth.astype(bool) & ~binary_erosion(truth.astype(bool))
    assert np.array_equal(green, border)
    assert red.sum() == 4 * 8 - 4 and red[18, 18] and red[25, 25] and not red[21, 21]
    assert np.all(tile[~(green | red)] == 90)


def test_a_label_map_of_another_size_is_resized_to_the_image() -> None:
    tile = outline(np.zeros((32, 32), np.uint8), _square(16, 2, 2, 5), np.zeros((16, 16)))
    green = _colour(tile, TRUTH)
    rows, cols = np.nonzero(green)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 13, 4, 13)


def test_boxes_are_drawn_by_colour_and_low_scores_are_left_out() -> None:
    image = np.zeros((40, 40), np.uint8)
    truth = np.array([[2, 3, 20, 30]])
    predicted = np.array([[5, 5, 25, 25], [30, 30, 38, 38]])
    tile = boxed(image, truth, predicted, scores=np.array([0.9, 0.2]), threshold=0.5)
    green, red = _colour(tile, TRUTH), _colour(tile, PREDICTED)
    # x1, y1 are past the box: its outline is its outermost pixels (columns 2..19, rows 3..29)
    assert green[3, 2] and green[29, 19] and green[3, 10] and not green[10, 10]
    assert not green[30, 20] and not green[29, 20] and not green[30, 19]
    assert red[5, 5] and red[24, 24] and not red[25, 25] and not red[30, 30]
    assert not red[34, 34]


def test_a_box_that_reaches_the_image_edge_keeps_that_side() -> None:
    tile = boxed(np.zeros((16, 16), np.uint8), np.array([[4, 2, 16, 16]]), np.zeros((0, 4)))
    green = _colour(tile, TRUTH)
    assert green[2:, 15].all() and green[15, 4:].all()  # right and bottom sides drawn
    assert green[2, 4:].all() and green[2:, 4].all() and not green[8, 8]


def test_montages_write_one_png_grid(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 255, (6, 24, 24), dtype=np.uint8)
    maps = np.stack([_square(24, k, k, 6) for k in range(6)])
    out = mask_montage(
        images, maps, maps, [f"img {k}" for k in range(6)], tmp_path / "m.png", columns=3, limit=5
    )
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > png.height  # 2 rows of 3 tiles
    boxes = [np.array([[2.0, 2.0, 10.0, 10.0]])] * 2
    out = box_montage(
        images[:2], boxes, boxes, [np.array([0.9])] * 2, ["a", "b"], tmp_path / "b.png"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png", "m.png"]


def test_mismatched_inputs_are_one_clear_error(tmp_path: Path) -> None:
    maps = np.zeros((2, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="titles for"):
        mask_montage(maps, maps, maps, ["only one"], tmp_path / "m.png")
    with pytest.raises(ValueError, match="fewer box lists"):
        box_montage(maps, [np.zeros((0, 4))], [], None, ["a", "b"], tmp_path / "b.png")
    assert not any(tmp_path.iterdir())
