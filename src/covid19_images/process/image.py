"""Decode a 2-D image once and derive everything later stages need from that one decode.

JPEGs are decoded in the DCT domain at the smallest scale (1/2, 1/4, 1/8) that still covers the
largest output size, straight to greyscale (libjpeg's draft mode through Pillow), so a 2,000 px
radiograph costs a fraction of a full decode. Other formats are decoded whole. From the decoded
pixels come the pixel hash, the perceptual hash, intensity statistics and the square uint8 copies
(centre crop to the short side, then area resampling: the anatomy stays undistorted, and no
padding border appears that a model could learn as a source marker).

The per-image path is the build's hot loop (``benchmarks/build_xray.py`` measures it against a bare
OpenCV decode), so it avoids work that does not change a result: the file is read once (the caller
may pass the bytes it already hashed), 8-bit greyscale images are not copied back and forth
between Pillow and numpy, the statistics come from a 256-bin histogram, the hashes and keypoints
of the copy search work on the frame reduced to about 256 px, and :func:`encode_png` writes the
copies with the PNG "up" filter and Huffman-only deflate instead of Pillow's per-row adaptive
filter search (same pixels, files of the same size, a quarter of the time).
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from covid19_images.process.signature import Signature, compute_signature

THUMB = 64
"""Side of the whole-frame thumbnail kept for pixel-level duplicate checks."""

MAX_PIXELS = 150_000_000
"""Default limit on the pixel count an image's header may declare (``build --max-pixels``).

A header is a few bytes that can declare any size: a PNG of a few hundred bytes that declares
40,000 x 40,000 pixels would take gigabytes to decode (a decompression bomb). The largest real
radiographs are about 50 million pixels (7,000 x 7,000 px); 150 million leaves three times
that, and stays under the hard limit of Pillow (twice ``PIL.Image.MAX_IMAGE_PIXELS``, about
179 million), so that this limit, not Pillow's, decides by default. An image over it is a
``too-large`` problem and is not decoded. Pillow's global limit is left as it is: a larger
``max_pixels`` lets images through only up to Pillow's limit, which a program can raise itself.
"""

MIN_SIDE = 48
"""Shortest side (pixels) of an image that can be a chest radiograph or a CT slice.

A 1 x 1 or 20 x 20 px "image" (a tracking pixel, an icon, a cut-off strip of a figure) holds
no anatomy a model could learn from, and upsampling it to the 224 px copies would only make up
pixels. The smallest image of the mirrored sources is a 148 x 61 px CT crop from a paper
(UCSD-AI4H), so the limit sits below that; real radiographs are at least a few hundred px.
"""

MAX_ASPECT = 4.0
"""Largest ratio of the long side to the short side of a plausible image.

Chest radiographs and CT slices are roughly square (detectors are 35 x 43 cm at most, CT
slices square); the widest image of the mirrored sources is 2.4 : 1. A 20,000 x 20 px image is
a strip (a banner, a scale bar, a corrupt header), and its centre-square copy would show a
sliver of it.
"""

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
    """The file is empty, truncated, corrupt, not an image, or of a size no radiograph has;
    ``kind`` is the problem kind and the message says which."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, str]]:
        # Rebuilt with both arguments where it crosses processes (a worker's error).
        return (type(self), (self.kind, str(self)))


_ADDRESS = re.compile(r"\s+at 0x[0-9a-fA-F]+")


def describe_error(exc: BaseException) -> str:
    """An exception as ``Class: message``, the same in every run: object reprs lose their
    memory addresses (``<_io.BytesIO object at 0x7f...>`` becomes ``<_io.BytesIO object>``).

    Example:
        >>> describe_error(ValueError("cannot identify image file <_io.BytesIO object at 0x7f3>"))
        'ValueError: cannot identify image file <_io.BytesIO object>'
    """
    return f"{type(exc).__name__}: {without_addresses(str(exc))}"


def without_addresses(text: str) -> str:
    """``text`` without the ``at 0x...`` memory addresses of object reprs.

    Example:
        >>> without_addresses("<PIL.PngImagePlugin.PngImageFile object at 0x7fa1b2c3>")
        '<PIL.PngImagePlugin.PngImageFile object>'
    """
    return _ADDRESS.sub("", text)


def size_problem(width: int, height: int, max_pixels: int = MAX_PIXELS) -> DecodeError | None:
    """Why an image of ``width`` x ``height`` pixels is not used, or None when it can be.

    Over ``max_pixels`` it is ``too-large`` (a decompression bomb, or no radiograph); a side
    under :data:`MIN_SIDE` or an aspect ratio over :data:`MAX_ASPECT` is ``implausible-size``.

    Example:
        >>> size_problem(2000, 2500) is None
        True
        >>> size_problem(40000, 40000).kind, size_problem(1, 1).kind, size_problem(20000, 20).kind
        ('too-large', 'implausible-size', 'implausible-size')
    """
    pixels = width * height
    if pixels > max_pixels:
        return DecodeError(
            "too-large",
            f"the header declares {width} x {height} = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} (--max-pixels); not decoded",
        )
    short, long = min(width, height), max(width, height)
    if short < MIN_SIDE:
        return DecodeError(
            "implausible-size",
            f"{width} x {height} px: a side under {MIN_SIDE} px cannot be a radiograph or a "
            "CT slice",
        )
    if long > MAX_ASPECT * short:
        return DecodeError(
            "implausible-size",
            f"{width} x {height} px: an aspect ratio of {long / short:.1f} : 1, over "
            f"{MAX_ASPECT:g} : 1, is no radiograph or CT slice",
        )
    return None


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image in ``data``, opened (its header read, no pixel decoded) and checked with
    :func:`size_problem` before anything is decoded.

    Pillow's own decompression-bomb warning (over ``PIL.Image.MAX_IMAGE_PIXELS``) is silenced
    for this call only, as ``max_pixels`` decides; Pillow's global limit is not changed, and
    its error (over twice that, about 179 million pixels by default) still refuses larger
    headers: that refusal is a ``too-large`` problem too.

    Raises:
        DecodeError: ``too-large``, ``implausible-size`` or ``unreadable-file``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        size = _declared_size(data)
        ours = size_problem(*size, max_pixels) if size is not None else None
        raise (ours or _pillow_refuses(exc)) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DecodeError("unreadable-file", f"cannot decode: {_decode_failure(exc)}") from exc
    problem = size_problem(*img.size, max_pixels)
    if problem is not None:
        img.close()
        raise problem
    return img


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """The size a header declares, read by its format's Pillow plugin without Pillow's
    decompression-bomb check (which :func:`PIL.Image.open` applies); None if unknown."""
    fmt = sniff_format(data[:16])
    opener = Image.OPEN.get(fmt) if fmt else None
    if opener is None:
        return None
    try:
        with opener[0](io.BytesIO(data), "") as img:
            width, height = img.size
    except Exception:  # any failure: the caller falls back on Pillow's own message
        return None
    return int(width), int(height)


def _pillow_refuses(exc: Image.DecompressionBombError) -> DecodeError:
    return DecodeError(
        "too-large",
        f"over Pillow's own limit (PIL.Image.MAX_IMAGE_PIXELS); not decoded: {exc}",
    )


def _decode_failure(exc: BaseException) -> str:
    """What went wrong decoding, the same in every run."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image format Pillow can read"
    return describe_error(exc)


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
    signature: Signature | None = None
    """View hashes, content box and keypoints, for finding copies (:mod:`covid19_images.dedup`)."""
    content: np.ndarray | None = None
    """The frame without uniform borders, long side 256 px, aspect kept."""


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


def decode_image(
    path: Path,
    sizes: tuple[int, ...] = (224, 512),
    data: bytes | None = None,
    invert: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> Decoded:
    """Decode ``path`` once (reduced where the format allows) and derive hashes and copies.

    Args:
        path: An image file (JPEG, PNG, 8- or 16-bit greyscale or colour, BMP, TIFF, GIF).
        sizes: Side lengths of the square uint8 copies to make.
        data: The file's bytes, when the caller has already read them (the file is then not
            opened again); ``path`` still names the file for the extension check.
        invert: The pixels are MONOCHROME1 (white is the lowest value, as some BIMCV PNGs
            keep it): invert them within their own range so that, as everywhere else, air is
            dark and bone bright. Hashes and copies are of the inverted image.
        max_pixels: The most pixels the header may declare; a larger image is not decoded.

    Raises:
        DecodeError: With ``kind`` ``empty-file``, ``unreadable-file``, ``too-large`` (over
            ``max_pixels``) or ``implausible-size`` (see :func:`size_problem`); the size is
            checked from the header, before any pixel is decoded.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> tmp = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("L", (600, 400), 128).save(tmp)
        >>> d = decode_image(tmp)
        >>> (d.width, d.height, d.copies[224].shape, d.copies[224].dtype.name)
        (600, 400, (224, 224), 'uint8')
    """
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DecodeError("unreadable-file", f"cannot read: {describe_error(exc)}") from exc
    if not data:
        raise DecodeError("empty-file", "zero-byte file")
    sniffed = sniff_format(data[:16])
    mismatch = extension_mismatch(path.name, sniffed)
    try:
        return _decode(data, sizes, invert, max_pixels, sniffed, mismatch)
    except Image.DecompressionBombError as exc:  # Pillow checks again in crop and resize
        raise _pillow_refuses(exc) from exc


def _decode(
    data: bytes,
    sizes: tuple[int, ...],
    invert: bool,
    max_pixels: int,
    sniffed: str | None,
    mismatch: str | None,
) -> Decoded:
    """The work of :func:`decode_image` once the bytes are read."""
    try:
        with open_image(data, max_pixels) as img:
            width, height = img.size
            fmt = img.format or sniffed or "unknown"
            reduce_for(img, sizes)
            img.load()
            grey, bits = _to_grey(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DecodeError("unreadable-file", f"cannot decode: {_decode_failure(exc)}") from exc
    pixels = np.ascontiguousarray(grey)
    if invert:
        lo, hi = int(pixels.min()), int(pixels.max())
        pixels = (lo + hi - pixels.astype(np.int64)).astype(pixels.dtype)
    sha = hashlib.sha256(pixels.data).hexdigest()
    if pixels.dtype == np.uint8 and grey.mode == "L" and not invert:
        frame = grey  # already the 8-bit picture: no copy back from numpy
    else:
        frame = Image.fromarray(_to_uint8(pixels))
    mean, std = _stats(frame)
    square = _centre_square(frame)
    copies = {
        s: np.asarray(
            square.resize(
                (s, s), Image.Resampling.BOX if s < square.width else Image.Resampling.BICUBIC
            )
        )
        for s in sizes
    }
    # Copies of an image across collections are often resized without keeping the aspect ratio
    # (the COVID-19 Radiography Database squeezes everything to 299 x 299): the thumbnail and
    # the perceptual hash (of the frame box-reduced to about 256 px: the signature's first view)
    # compare contents and whole frames squeezed to a square, like that.
    signature, content, small = compute_signature(frame)
    thumb = np.asarray(small.resize((THUMB, THUMB), Image.Resampling.BOX))
    return Decoded(
        width=width,
        height=height,
        bits_stored=bits,
        format=fmt,
        format_mismatch=mismatch,
        sha256_pixels=sha,
        phash=f"{signature.views[0]:016x}",
        mean=mean,
        std=std,
        copies=copies,
        thumb=thumb,
        signature=signature,
        content=content,
    )


_LEVELS = np.arange(256, dtype=np.int64)


def _stats(frame: Image.Image) -> tuple[float, float]:
    """Mean and (population) standard deviation of an 8-bit image, from its histogram.

    Exact integer sums: the mean is the one numpy gives, the deviation the correctly rounded one.
    """
    counts = np.asarray(frame.histogram(), dtype=np.int64)
    n = int(counts.sum())
    total = int(counts @ _LEVELS)
    squares = int(counts @ (_LEVELS * _LEVELS))
    return total / n, math.sqrt((n * squares - total * total) / (n * n))


def encode_png(pixels: np.ndarray) -> bytes:
    """A greyscale 8-bit PNG of a 2-D uint8 array, fast.

    Every row uses the PNG "up" filter (the difference to the row above: neighbouring rows of a
    radiograph are alike) and the deflate stream is Huffman-only, which compresses such residuals
    about as well as Pillow's ``compress_level=1`` in a fraction of its time (Pillow tries all
    five filters on every row). Any PNG reader gives back exactly ``pixels``.

    Example:
        >>> a = np.arange(12, dtype=np.uint8).reshape(3, 4)
        >>> np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(a)))), a)
        True
    """
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 array, got {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape
    rows = np.empty((height, width + 1), dtype=np.uint8)
    rows[:, 0] = 2  # filter type "up"; the row above the first counts as zeros
    rows[0, 1:] = pixels[0]
    np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    idat = packer.compress(rows.data) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"".join(
        (b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"IDAT", idat), _chunk(b"IEND", b""))
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


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


def reduce_for(img: Image.Image, sizes: tuple[int, ...]) -> None:
    """Let a JPEG decode at the smallest scale (1/2, 1/4, 1/8) that still covers the largest
    copy of ``sizes`` (``img.size`` becomes the reduced size); other formats stay as they are.

    Example:
        >>> img = Image.new("L", (2000, 1600))
        >>> reduce_for(img, (224, 512))
        >>> img.size  # not a JPEG: unchanged
        (2000, 1600)
    """
    if img.format == "JPEG":
        largest = max(sizes) if sizes else min(img.size)
        img.draft("L", (largest, largest))


def square_box(width: int, height: int) -> tuple[int, int, int]:
    """``(left, top, side)`` of the centred square a frame of ``width`` x ``height`` is cut to.

    Example:
        >>> square_box(600, 400)
        (100, 0, 400)
    """
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def _centre_square(img: Image.Image) -> Image.Image:
    left, top, side = square_box(*img.size)
    return img.crop((left, top, left + side, top + side))
