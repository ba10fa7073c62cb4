"""What the copy search keeps of each image: hashes of several views and local keypoints.

Copies of one film across collections are not only re-encoded or resized: they gain or lose
borders (any side, up to half the frame), are cropped (up to a quarter per side), squeezed to
another aspect ratio, and carry burnt-in text. One hash of the whole frame misses most of those.
A :class:`Signature` holds three things, all computed from one decode:

- **The content box**: the frame with uniform edge lines (black, white or grey padding, with
  JPEG noise) trimmed repeatedly, as fractions of the frame. A padded copy and its original have
  the same content.
- **View hashes**: 64-bit DCT hashes of the whole frame, of the content, and of the content's
  centre at 90, 80, 70, 60 and 50 % (each squeezed to a square, so a copy resized without
  keeping its aspect ratio hashes alike). A symmetric crop of a film is the original's centre
  view; with the ladder on both sides, some pair of views is within a few per cent of any crop
  factor from 0.5 to 1.
- **Keypoints**: up to :data:`KEYPOINTS` SIFT keypoints of the content at 96 px (upright,
  RootSIFT descriptors reduced to 64 bits by fixed random hyperplanes), with their positions.
  A copy cropped on one side shares its keypoints with the original, at the same places up to a
  scale and a shift.

The content itself (long side :data:`CONTENT` px, or its own size when smaller: it is never
enlarged) is written beside the signature, so that a
candidate pair can be aligned and compared on pixels (:mod:`covid19_images.dedup.align`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fftpack
from PIL import Image

CONTENT = 256
"""Long side of the content image kept for aligned comparison."""
KEYPOINTS = 64
"""Most keypoints kept per image (the strongest)."""
KEYPOINT_SIDE = 96
"""Long side of the content when its keypoints are found."""
ZOOMS = (0.9, 0.8, 0.7, 0.6, 0.5)
"""Centre views of the content, as fractions of its sides, hashed besides the whole content."""
VIEWS = ("frame", "content", *(f"centre-{z}" for z in ZOOMS))
_WORK = 256
_TOLERANCE = 12
_UNIFORM = 0.98
_PROJECTION = np.random.default_rng(20200311).standard_normal((128, 64)).astype(np.float32)


@dataclass
class Signature:
    """The hashes, content box and keypoints of one image (see the module's text)."""

    box: tuple[float, float, float, float]
    """Content box (left, top, right, bottom) as fractions of the frame."""
    views: tuple[int, ...]
    """64-bit hashes of :data:`VIEWS`, in that order."""
    codes: np.ndarray
    """uint64 keypoint descriptors."""
    points: np.ndarray
    """float32 (n, 2) keypoint positions, as fractions of the content's long side."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (hex hashes, base64 keypoints).

        Example:
            >>> s = Signature((0.0, 0.0, 1.0, 1.0), (1, 2, 3, 4, 5), np.zeros(0, np.uint64),
            ...               np.zeros((0, 2), np.float32))
            >>> Signature.from_json(s.to_json()).views
            (1, 2, 3, 4, 5)
        """
        blob = self.codes.astype(">u8").tobytes() + self.points.astype("<f2").tobytes()
        return {
            "box": [round(v, 5) for v in self.box],
            "views": [f"{v:016x}" for v in self.views],
            "keypoints": base64.b64encode(blob).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature:
        """The inverse of :meth:`to_json`."""
        blob = base64.b64decode(data["keypoints"])
        n = len(blob) // 12
        codes = np.frombuffer(blob[: 8 * n], dtype=">u8").astype(np.uint64)
        points = np.frombuffer(blob[8 * n :], dtype="<f2").astype(np.float32).reshape(n, 2)
        box = tuple(float(v) for v in data["box"])
        return cls(
            (box[0], box[1], box[2], box[3]),
            tuple(int(v, 16) for v in data["views"]),
            codes,
            points,
        )


def dct_hash(pixels: np.ndarray) -> int:
    """The 64-bit perceptual hash of a 32 x 32 grey array (imagehash's phash rule: the signs of
    the 8 x 8 lowest DCT frequencies against their median).

    Example:
        >>> f"{dct_hash(np.tile(np.arange(32.0), (32, 1))):016x}"
        '8000000000000000'

    """
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels.astype(np.float64), axis=0), axis=1)
    low = dct[:8, :8]
    return int.from_bytes(np.packbits(low > np.median(low)).tobytes(), "big")


def content_box(frame: Image.Image) -> tuple[float, float, float, float]:
    """The frame without uniform edge lines, as fractions (left, top, right, bottom).

    Give it a small frame (a few hundred pixels: the work is per line). An edge line is uniform
    when at least 98 % of its pixels lie within 12 grey levels of its median; lines are trimmed
    from every side in turn until none is uniform, so a white border
    around a black one goes too. At least an eighth of each side always stays.

    Example:
        >>> noise = np.random.default_rng(0).integers(0, 256, (50, 100), dtype=np.uint8)
        >>> img = Image.new("L", (200, 100), 0)
        >>> img.paste(Image.fromarray(noise), (50, 25))
        >>> [round(v, 2) for v in content_box(img)]
        [0.25, 0.25, 0.75, 0.75]
    """
    a = np.asarray(frame, dtype=np.int16)
    h, w = a.shape
    top, bottom, left, right = 0, h, 0, w
    min_h, min_w = max(1, h // 8), max(1, w // 8)

    def uniform(line: np.ndarray) -> bool:
        return bool(np.mean(np.abs(line - np.median(line)) <= _TOLERANCE) >= _UNIFORM)

    changed = True
    while changed:
        changed = False
        while bottom - top > min_h and uniform(a[top, left:right]):
            top, changed = top + 1, True
        while bottom - top > min_h and uniform(a[bottom - 1, left:right]):
            bottom, changed = bottom - 1, True
        while right - left > min_w and uniform(a[top:bottom, left]):
            left, changed = left + 1, True
        while right - left > min_w and uniform(a[top:bottom, right - 1]):
            right, changed = right - 1, True
    return left / w, top / h, right / w, bottom / h


def _reduced(frame: Image.Image, side: int) -> Image.Image:
    """``frame`` shrunk by box averaging so that its long side is at most about ``side``."""
    factor = max(frame.size) // side
    return frame.reduce(factor) if factor > 1 else frame


def content_thumbnail(content: np.ndarray, side: int = 64) -> np.ndarray:
    """The content squeezed to ``side`` x ``side`` (box averaging): the whole-content test's view.

    Example:
        >>> content_thumbnail(np.zeros((256, 200), np.uint8)).shape
        (64, 64)
    """
    image = Image.fromarray(content)
    return np.asarray(image.resize((side, side), Image.Resampling.BOX))


def compute_signature(frame: Image.Image) -> tuple[Signature, np.ndarray, Image.Image]:
    """The signature of an 8-bit grey frame, its content (long side at most 256 px) and the
    frame reduced to about 256 px (see :func:`content_image`).

    Example:
        >>> frame = Image.linear_gradient("L").resize((300, 200)).rotate(20)
        >>> signature, content, small = compute_signature(frame)
        >>> len(signature.views), content.dtype.name, max(content.shape)
        (7, 'uint8', 256)
    """
    cv2 = opencv()  # SIFT keypoints

    box, content, small = content_image(frame)
    size = content.size
    views = [_hash_of(small, None)]
    for zoom in (1.0, *ZOOMS):
        mx, my = size[0] * (1 - zoom) / 2, size[1] * (1 - zoom) / 2
        views.append(_hash_of(content, (mx, my, size[0] - mx, size[1] - my)))
    pixels = np.asarray(content)
    # Keypoints on the content at one scale whatever its size.
    factor = KEYPOINT_SIDE / max(size)
    scaled = cv2.resize(
        pixels,
        (max(8, round(size[0] * factor)), max(8, round(size[1] * factor))),
        interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR,
    )
    codes, points = _keypoints(cv2, scaled, KEYPOINT_SIDE)
    return Signature(box, tuple(views), codes, points), pixels, small


def content_image(
    frame: Image.Image,
) -> tuple[tuple[float, float, float, float], Image.Image, Image.Image]:
    """The content box, the content (long side at most 256 px) and the frame reduced to ~256 px.

    Example:
        >>> noise = np.random.default_rng(0).integers(0, 256, (600, 800), dtype=np.uint8)
        >>> frame = Image.new("L", (1000, 600), 0)  # a black border 100 px wide left and right
        >>> frame.paste(Image.fromarray(noise), (100, 0))
        >>> box, content, small = content_image(frame)
        >>> [round(v, 2) for v in box], content.size, small.size
        ([0.1, 0.0, 0.9, 1.0], (256, 192), (334, 200))
    """
    if frame.mode != "L":
        frame = frame.convert("L")
    small = _reduced(frame, _WORK)
    left, top, right, bottom = content_box(small)
    w, h = frame.size
    box = (left * w, top * h, right * w, bottom * h)
    cw, ch = box[2] - box[0], box[3] - box[1]
    # Never enlarged: an enlarged image has no fine detail, and the pixel test compares detail.
    scale = min(1.0, CONTENT / max(cw, ch))
    size = (max(8, round(cw * scale)), max(8, round(ch * scale)))
    content = frame.resize(size, Image.Resampling.BOX, box=box, reducing_gap=2.0)
    return (left, top, right, bottom), content, small


def _hash_of(image: Image.Image, box: tuple[float, float, float, float] | None) -> int:
    # Box averaging to 32 x 32 (imagehash resamples with Lanczos: five times the cost here, and
    # averaging is as robust to noise and re-encoding).
    small = image.resize((32, 32), Image.Resampling.BOX, box=box)
    return dct_hash(np.asarray(small))


_SIFT: Any = None
_SINGLE_THREADED = False


def opencv() -> Any:
    """OpenCV, with its own thread pool off.

    A build runs in processes (one image per process at a time), so OpenCV's threads would
    only compete. And a process that has run OpenCV's pool and then forks workers leaves them
    hanging at their first parallel OpenCV call: a fork copies no threads.

    Example:
        >>> opencv().getNumThreads()
        1
    """
    global _SINGLE_THREADED
    import cv2

    if not _SINGLE_THREADED:
        cv2.setNumThreads(1)
        _SINGLE_THREADED = True
    return cv2


def _keypoints(cv2: Any, pixels: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    global _SIFT
    if _SIFT is None:
        _SIFT = cv2.SIFT_create(nfeatures=KEYPOINTS, contrastThreshold=0.02)
    found = sorted(_SIFT.detect(pixels, None), key=lambda k: -k.response)[:KEYPOINTS]
    for k in found:
        k.angle = 0.0  # upright: copies are not rotated, and orientation costs distinctiveness
    found, desc = _SIFT.compute(pixels, found)
    if desc is None or not len(found):
        return np.zeros(0, np.uint64), np.zeros((0, 2), np.float32)
    root = np.sqrt(desc / (desc.sum(axis=1, keepdims=True) + 1e-7))  # RootSIFT
    root -= root.mean(axis=1, keepdims=True)
    bits = np.packbits((root @ _PROJECTION) > 0, axis=1)
    codes = bits.view(">u8").ravel().astype(np.uint64)
    points = (np.array([k.pt for k in found], dtype=np.float32) / side).astype(np.float32)
    return codes, points
