"""Decode a 2-D image once and derive everything later stages need from that one decode.

JPEGs are decoded in the DCT domain at the smallest scale (1/2, 1/4, 1/8) that still covers the
largest output size, straight to greyscale (libjpeg's draft mode through Pillow), so a 2,000 px
radiograph costs a fraction of a full decode. Other formats are decoded whole. From the decoded
pixels come the pixel hash, the perceptual hash, intensity statistics and the square uint8 copies
(centre crop to the short side, then area resampling: the anatomy stays undistorted, and no
padding border appears that a model could learn as a source marker).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

THUMB = 64
"""Side of the whole-frame thumbnail kept for pixel-level duplicate checks."""

_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"RIFF": "WEBP",
}
_SUFFIX_FORMAT = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".gif": "GIF",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}


class DecodeError(Exception):
    """The file is empty, truncated, corrupt or not an image; the message says which."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass
class Decoded:
    """What one decode of one image gives."""

    width: int
    height: int
    bits_stored: int
    format: str
    format_mismatch: str | None
    """Set when the content's format differs from what the file name says."""
    sha256_pixels: str
    phash: str
    mean: float
    std: float
    copies: dict[int, np.ndarray] = field(default_factory=dict)
    """Square uint8 greyscale copies by side length."""
    thumb: np.ndarray | None = None
    """The whole frame squeezed to THUMB x THUMB (aspect not kept), for comparing copies."""


def sniff_format(head: bytes) -> str | None:
    """The image format from a file's first bytes.

    Example:
        >>> sniff_format(b"\\x89PNG\\r\\n\\x1a\\n...."), sniff_format(b"hello")
        ('PNG', None)
    """
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def extension_mismatch(name: str, actual: str | None) -> str | None:
    """Why the content format ``actual`` contradicts the file name, or None.

    Example:
        >>> extension_mismatch("a.jpg", "PNG"), extension_mismatch("a.JPEG", "JPEG")
        ('content is PNG but the name says JPEG', None)
    """
    expected = _SUFFIX_FORMAT.get(Path(name).suffix.lower())
    if actual and expected and actual != expected:
        return f"content is {actual} but the name says {expected}"
    return None


def decode_image(path: Path, sizes: tuple[int, ...] = (224, 512)) -> Decoded:
    """Decode ``path`` once (reduced where the format allows) and derive hashes and copies.

    Args:
        path: An image file (JPEG, PNG, 8- or 16-bit greyscale or colour, BMP, TIFF, GIF).
        sizes: Side lengths of the square uint8 copies to make.

    Raises:
        DecodeError: With ``kind`` ``empty-file`` or ``unreadable-file``.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> tmp = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("L", (600, 400), 128).save(tmp)
        >>> d = decode_image(tmp)
        >>> (d.width, d.height, d.copies[224].shape, d.copies[224].dtype.name)
        (600, 400, (224, 224), 'uint8')
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise DecodeError("unreadable-file", f"cannot read: {exc}") from exc
    if size == 0:
        raise DecodeError("empty-file", "zero-byte file")
    mismatch = extension_mismatch(path.name, sniff_format(head))
    try:
        with Image.open(path) as img:
            width, height = img.size
            fmt = img.format or sniff_format(head) or "unknown"
            largest = max(sizes) if sizes else min(width, height)
            if fmt == "JPEG":
                img.draft("L", (largest, largest))
            img.load()
            grey, bits = _to_grey(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DecodeError("unreadable-file", f"cannot decode: {exc}") from exc
    pixels = np.asarray(grey)
    sha = hashlib.sha256(pixels.tobytes()).hexdigest()
    grey8 = _to_uint8(pixels)
    square = _centre_square(Image.fromarray(grey8))
    copies = {
        s: np.asarray(
            square.resize(
                (s, s), Image.Resampling.BOX if s < square.width else Image.Resampling.BICUBIC
            )
        )
        for s in sizes
    }
    # Copies of an image across collections are often resized without keeping the aspect ratio
    # (the COVID-19 Radiography Database squeezes everything to 299 x 299): the perceptual hash
    # and the thumbnail compare whole frames squeezed to a square, like that.
    frame = Image.fromarray(grey8)
    thumb = np.asarray(frame.resize((THUMB, THUMB), Image.Resampling.BOX))
    return Decoded(
        width=width,
        height=height,
        bits_stored=bits,
        format=fmt,
        format_mismatch=mismatch,
        sha256_pixels=sha,
        phash=str(imagehash.phash(frame)),
        mean=float(grey8.mean()),
        std=float(grey8.std()),
        copies=copies,
        thumb=thumb,
    )


def _to_grey(img: Image.Image) -> tuple[Image.Image, int]:
    """Greyscale at the image's own depth: 8-bit ``L`` or 16-bit ``I;16``."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        if arr.dtype != np.uint16:
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
        return Image.fromarray(arr), 16
    if img.mode == "L":
        return img, 8
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels of figures cut from papers are paper-white, not black.
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("L"), 8


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    lo, hi = np.percentile(pixels, (0.5, 99.5))
    if hi <= lo:
        return np.zeros(pixels.shape, dtype=np.uint8)
    scaled = (pixels.astype(np.float32) - lo) * (255.0 / (hi - lo))
    out: np.ndarray = np.clip(scaled, 0, 255).astype(np.uint8)
    return out


def _centre_square(img: Image.Image) -> Image.Image:
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))
