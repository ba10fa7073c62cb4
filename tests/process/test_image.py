"""Decoding once: formats, depths, reduced JPEG decoding, hashes and bad files."""

from __future__ import annotations

import io
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from covid19_images.process.image import DecodeError, decode_image, encode_png


def _radiograph(size: tuple[int, int] = (900, 700), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    lungs = 120 + 60 * np.sin(x / 70.0) * np.cos(y / 90.0)
    return np.clip(lungs + rng.normal(0, 8, lungs.shape), 0, 255).astype(np.uint8)


def test_jpeg_is_decoded_reduced_but_reports_its_true_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.fromarray(_radiograph((2400, 2000))).save(path, quality=92)
    decoded = decode_image(path, sizes=(224, 512))
    assert (decoded.width, decoded.height, decoded.bits_stored) == (2400, 2000, 8)
    assert decoded.copies[224].shape == (224, 224)
    assert decoded.copies[512].shape == (512, 512)
    assert decoded.format == "JPEG" and decoded.format_mismatch is None


def test_same_pixels_same_hashes_and_reencoding_keeps_phash_close(tmp_path: Path) -> None:
    pixels = _radiograph()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).save(tmp_path / "b.png", compress_level=9)
    Image.fromarray(pixels).save(tmp_path / "c.jpg", quality=75)
    a, b, c = (decode_image(tmp_path / n) for n in ("a.png", "b.png", "c.jpg"))
    assert a.sha256_pixels == b.sha256_pixels  # other bytes, same pixels
    assert a.sha256_pixels != c.sha256_pixels
    distance = imagehash.hex_to_hash(a.phash) - imagehash.hex_to_hash(c.phash)
    assert distance <= 4
    other = tmp_path / "other.png"
    Image.fromarray(_radiograph(seed=1)[:, ::-1]).save(other)
    assert imagehash.hex_to_hash(a.phash) - imagehash.hex_to_hash(decode_image(other).phash) > 4


def test_sixteen_bit_png_keeps_its_depth(tmp_path: Path) -> None:
    pixels = (_radiograph().astype(np.uint16) * 16 + 100).astype(np.uint16)
    path = tmp_path / "bimcv.png"
    Image.fromarray(pixels).save(path)
    decoded = decode_image(path)
    assert decoded.bits_stored == 16
    assert decoded.copies[224].dtype == np.uint8
    assert decoded.copies[224].max() > 200 and decoded.copies[224].min() < 50


def test_rgb_and_transparent_figures_become_grey(tmp_path: Path) -> None:
    grey = _radiograph()
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb.png")
    rgba = np.dstack([grey] * 3 + [np.full_like(grey, 255)])
    rgba[:50, :, 3] = 0  # a transparent strip
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert decode_image(tmp_path / "rgb.png").sha256_pixels == decode_image_l(grey, tmp_path)
    strip = decode_image(tmp_path / "rgba.png", sizes=(700,)).copies[700]
    assert strip[0].min() == 255  # transparent is paper-white


def decode_image_l(pixels: np.ndarray, folder: Path) -> str:
    Image.fromarray(pixels).save(folder / "l.png")
    return decode_image(folder / "l.png").sha256_pixels


def test_png_named_jpg_is_decoded_and_flagged(tmp_path: Path) -> None:
    path = tmp_path / "really-a-png.jpg"
    Image.fromarray(_radiograph()).save(path, format="PNG")
    decoded = decode_image(path)
    assert decoded.format == "PNG"
    assert decoded.format_mismatch == "content is PNG but the name says JPEG"


@pytest.mark.parametrize(
    ("content", "kind"),
    [(b"", "empty-file"), (b"not an image at all", "unreadable-file")],
)
def test_empty_and_garbage_files(tmp_path: Path, content: bytes, kind: str) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(DecodeError) as info:
        decode_image(path)
    assert info.value.kind == kind


def test_truncated_jpeg_is_unreadable(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jpg"
    Image.fromarray(_radiograph((1200, 1000))).save(whole, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    with pytest.raises(DecodeError) as info:
        decode_image(cut)
    assert info.value.kind == "unreadable-file"


def test_real_ieee8023_images_decode(shared_sources: Path) -> None:
    images = sorted((shared_sources / "ieee8023-covid-chestxray" / "images").iterdir())[:20]
    for path in images:
        decoded = decode_image(path)
        assert decoded.width > 100 and decoded.height > 100
        assert len(decoded.phash) == 16 and len(decoded.sha256_pixels) == 64


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (224, 224), (37, 512)])
def test_encode_png_gives_back_the_same_pixels(shape: tuple[int, int]) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png(pixels))) as img:
        assert img.mode == "L" and img.size == (shape[1], shape[0])
        assert np.array_equal(np.asarray(img), pixels)


def test_encode_png_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), dtype=np.uint16))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 3), dtype=np.uint8))


def test_bytes_passed_in_are_decoded_without_reopening(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    Image.fromarray(_radiograph()).save(path, quality=90)
    data = path.read_bytes()
    path.unlink()  # only the bytes are left
    decoded = decode_image(path, data=data)
    assert (decoded.width, decoded.height, decoded.format) == (900, 700, "JPEG")
    with pytest.raises(DecodeError) as info:
        decode_image(path, data=b"")
    assert info.value.kind == "empty-file"


def test_statistics_match_numpy(tmp_path: Path) -> None:
    pixels = _radiograph()
    Image.fromarray(pixels).save(tmp_path / "s.png")
    decoded = decode_image(tmp_path / "s.png")
    assert decoded.mean == pytest.approx(float(pixels.mean()), abs=1e-12)
    assert decoded.std == pytest.approx(float(pixels.std()), abs=1e-9)


def test_a_decode_error_crosses_processes_whole() -> None:
    import pickle

    error = DecodeError("too-small", "a 1 x 1 image is no radiograph")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, DecodeError)
    assert (copy.kind, str(copy)) == ("too-small", "a 1 x 1 image is no radiograph")
