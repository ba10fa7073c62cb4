"""The square-copy grid: masks and boxes land where the image's own copy puts its pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covid19_images.process.grid import SquareGrid, aspect_matches, square_grid
from covid19_images.process.image import decode_image

SIZES = (64, 224, 512)


def _picture(width: int, height: int, rect: tuple[int, int, int, int]) -> np.ndarray:
    pixels = np.full((height, width), 30, np.uint8)
    x0, y0, x1, y1 = rect
    pixels[y0:y1, x0:x1] = 230
    return pixels


@pytest.mark.parametrize(
    ("fmt", "width", "height", "scale"),
    [("JPEG", 2200, 1831, 2), ("JPEG", 4100, 2300, 4), ("PNG", 700, 460, 1), ("PNG", 300, 520, 1)],
)
def test_the_grid_is_the_copys_own(
    tmp_path: Path, fmt: str, width: int, height: int, scale: int
) -> None:
    rect = (width // 3, height // 4, width // 3 + width // 5, height // 4 + height // 3)
    pixels = _picture(width, height, rect)
    path = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(pixels).save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    decoded = decode_image(path, SIZES)
    for size in SIZES:
        grid = square_grid(path.read_bytes(), size, SIZES)
        assert grid.scale == scale and (grid.width, grid.height) == (width, height)
        copy = decoded.copies[size] > 130
        mask = grid.sample((pixels > 130).astype(np.uint8)).astype(bool)
        assert mask.shape == (size, size)
        assert (mask & copy).sum() / (mask | copy).sum() > 0.9
        x0, y0, x1, y1 = grid.box_to_copy(rect)  # the bright pixels fill the mapped box
        rows, cols = np.nonzero(copy)
        assert abs(cols.min() - x0) <= 1 and abs(cols.max() + 1 - x1) <= 1
        assert abs(rows.min() - y0) <= 1 and abs(rows.max() + 1 - y1) <= 1


def test_a_mask_of_another_size_is_stretched_onto_the_image() -> None:
    grid = SquareGrid(width=299, height=299, scale=1, left=0, top=0, side=299, size=64)
    mask = np.zeros((256, 256), np.uint8)
    mask[64:192, 32:96] = 1  # a quarter in from the top, an eighth in from the left
    sampled = grid.sample(mask)
    rows, cols = np.nonzero(sampled)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (16, 48, 8, 24)


def test_aspect_tolerance() -> None:
    assert aspect_matches(299, 299, 256, 256)
    assert aspect_matches(2000, 1000, 1000, 500)
    assert not aspect_matches(2000, 1000, 1000, 520)
    assert not aspect_matches(100, 100, 0, 100)


def test_an_unreadable_header_is_a_decode_error() -> None:
    from covid19_images.process.image import DecodeError

    with pytest.raises(DecodeError):
        square_grid(b"not an image", 64, SIZES)
    buffer = io.BytesIO()
    Image.new("L", (600, 300)).save(buffer, "PNG")
    assert square_grid(buffer.getvalue(), 64, SIZES).left == 150
