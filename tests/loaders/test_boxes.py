"""Boxes and instance masks under augmentation: the same draw as the image (loaders.boxes)."""

from __future__ import annotations

import numpy as np
import pytest

from covid19_images.loaders.augment import PRESETS, Draw, Preset, draw, rng_for
from covid19_images.loaders.boxes import instance_masks, move_boxes, pack_bits, unpack_bits
from covid19_images.loaders.warp import augment_batch, warp_labels

SIDE = 96
RECT = (30, 20, 62, 71)
"""x0, y0, x1, y1 of the bright rectangle (pixel edges)."""


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.full((SIDE, SIDE), 40, np.uint8)
    x0, y0, x1, y1 = RECT
    image[y0:y1, x0:x1] = 220
    mask = np.zeros_like(image)
    mask[y0:y1, x0:x1] = 1
    return image, mask, np.array([RECT], np.float32)


@pytest.mark.parametrize("name", ["light", "standard"])
def test_box_and_mask_still_cover_the_bright_rectangle(name: str) -> None:
    image, mask, boxes = _scene()
    for index in range(40):
        d = draw(PRESETS[name], rng_for(7, 0, index))
        out, _ = augment_batch(image[None], [d])
        moved, kept = move_boxes(boxes, d, SIDE, SIDE)
        moved_mask = warp_labels(mask[None], d)[0].astype(bool)
        valid = warp_labels(np.ones((1, SIDE, SIDE), np.uint8), d)[0].astype(bool)
        bright = (out[0] > 0.5) & valid
        assert kept.all() and bright.any()
        rows, cols = np.nonzero(bright)
        x0, y0, x1, y1 = moved[0]
        assert cols.min() >= np.floor(x0) - 1 and cols.max() + 1 <= np.ceil(x1) + 1
        assert rows.min() >= np.floor(y0) - 1 and rows.max() + 1 <= np.ceil(y1) + 1
        shared = (moved_mask & bright).sum()
        assert shared / moved_mask.sum() > 0.9 and shared / bright.sum() > 0.9
        # and the box is the tight one: the rectangle's corners reach each of its sides
        assert cols.min() - x0 < 2 and x1 - cols.max() - 1 < 2


def test_a_box_pushed_out_of_the_image_is_dropped() -> None:
    _, _, boxes = _scene()
    far = Draw(0.0, 1.0, 0.7, 0.0, 0.0, 1.0)  # 70 % of the width to the right
    _, kept = move_boxes(boxes, far, SIDE, SIDE)
    assert not kept.any()
    shifted, kept = move_boxes(boxes, Draw(0.0, 1.0, 0.25, 0.0, 0.0, 1.0), SIDE, SIDE)
    assert kept.all() and shifted[0].tolist() == [54.0, 20.0, 86.0, 71.0]
    partly, kept = move_boxes(boxes, Draw(0.0, 1.0, 0.5, 0.0, 0.0, 1.0), SIDE, SIDE)
    assert kept.all() and partly[0].tolist() == [78.0, 20.0, 96.0, 71.0]  # clipped


def test_rotation_grows_the_box_to_the_turned_corners() -> None:
    _, _, boxes = _scene()
    moved, _ = move_boxes(boxes, Draw(10.0, 1.0, 0.0, 0.0, 0.0, 1.0), SIDE, SIDE)
    x0, y0, x1, y1 = RECT
    w, h = x1 - x0, y1 - y0
    angle = np.radians(10)
    width = w * np.cos(angle) + h * np.sin(angle)
    height = w * np.sin(angle) + h * np.cos(angle)
    assert moved[0, 2] - moved[0, 0] == pytest.approx(width, abs=1e-3)
    assert moved[0, 3] - moved[0, 1] == pytest.approx(height, abs=1e-3)


def test_instance_masks_and_bit_planes() -> None:
    mask = np.ones((6, 6), np.uint8)
    boxes = np.array([[0, 0, 3, 6], [2, 0, 6, 6]] * 5, np.float32)  # 10 overlapping boxes
    inst = instance_masks(mask, boxes)
    assert inst.shape == (10, 6, 6) and inst[0].sum() == 18 and inst[1].sum() == 24
    assert (inst[0] & inst[1]).sum() == 6  # a pixel in two boxes belongs to both
    planes = pack_bits(inst)
    assert planes.shape == (2, 6, 6)
    assert np.array_equal(unpack_bits(planes, 10), inst)
    nowhere = Preset("x", degrees=0.0)
    assert np.array_equal(
        unpack_bits(warp_labels(planes, draw(nowhere, rng_for(0, 0, 0))), 10), inst
    )
