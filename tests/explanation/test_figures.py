"""Overlays and montages: valid PNGs of the right size, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covid19_images.explanation import (
    ExplainError,
    caption,
    class_montages,
    montage,
    overlay,
    save_overlays,
)

pytest.importorskip("matplotlib")


def _hot_corner(n: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    images = np.full((n, size, size), 100, np.uint8)
    cams = np.zeros((n, size, size), np.float32)
    cams[:, : size // 4, : size // 4] = 1.0
    return images, cams


def _png(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.verify()  # a complete, uncorrupted PNG
    img = Image.open(path)
    assert img.format == "PNG"
    return img


def test_overlay_is_red_where_the_map_is_hot_and_blue_where_cold() -> None:
    images, cams = _hot_corner(1)
    rgb = overlay(images[0], cams[0])
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    hot, cold = rgb[0, 0].astype(int), rgb[15, 15].astype(int)
    assert hot[0] > hot[2] + 50  # red
    assert cold[2] > cold[0] + 50  # blue
    small = overlay(images[0], cams[0][::4, ::4])  # a map at another size is resized
    assert small.shape == (16, 16, 3) and small[0, 0, 0] > small[15, 15, 0]
    assert np.array_equal(overlay(images[0], cams[0], alpha=0.0)[..., 0], np.full((16, 16), 255))
    with pytest.raises(ExplainError, match="uint8"):
        overlay(images[0].astype(np.float32), cams[0])


def test_overlays_are_one_png_per_image(tmp_path: Path) -> None:
    images, cams = _hot_corner(3)
    paths = save_overlays(tmp_path / "overlays", images, cams, ["a-1", "b_2", "c.3"])
    assert [p.name for p in paths] == ["a-1.png", "b_2.png", "c.3.png"]
    for path, cam in zip(paths, cams, strict=True):
        img = _png(path)
        assert img.size == (16, 16) and img.mode == "RGB"
        assert np.array_equal(np.asarray(img), overlay(np.full((16, 16), 100, np.uint8), cam))
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == [p.name for p in paths]
    with pytest.raises(ExplainError, match="cannot be a file name"):
        save_overlays(tmp_path, images[:1], cams[:1], ["../escape"])
    with pytest.raises(ExplainError, match="unique"):
        save_overlays(tmp_path, images[:2], cams[:2], ["same", "same"])
    with pytest.raises(ExplainError, match="2 names for 3 maps"):
        save_overlays(tmp_path, images, cams, ["x", "y"])


def test_montages_per_class(tmp_path: Path) -> None:
    images, cams = _hot_corner(5)
    true = ["covid19", "covid19", "covid19", "normal", "covid19"]
    predicted = ["covid19", "normal", "covid19", "normal", "covid19"]
    paths = class_montages(tmp_path, images, cams, true, predicted, [0.9, 0.6, 0.7, 0.8, 0.55])
    assert sorted(paths) == ["covid19", "normal"]
    assert paths["covid19"] == tmp_path / "montage_covid19.png"
    big, small = _png(paths["covid19"]), _png(paths["normal"])
    assert big.size[0] > small.size[0]  # four tiles in a row against one
    pixels = np.asarray(big.convert("RGB")).astype(int)
    assert ((pixels[..., 0] > 200) & (pixels[..., 2] < 150)).any()  # the hot corners are drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "montage_covid19.png",
        "montage_normal.png",
    ]
    assert caption("covid19", "normal", 0.8312) == "true covid19\npred normal (0.83)"
    assert caption(None, "normal", 0.5) == "pred normal (0.50)"
    capped = class_montages(
        tmp_path / "capped", images, cams, true, predicted, [0.5] * 5, max_tiles=2, columns=2
    )
    assert small.size[0] < _png(capped["covid19"]).size[0] < big.size[0]  # two tiles of four
    with pytest.raises(ExplainError, match="at least one"):
        montage(tmp_path / "empty.png", images[:0], cams[:0], [])
