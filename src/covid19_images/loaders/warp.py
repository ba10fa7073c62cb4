"""Augmentation of uint8 batches on the CPU with OpenCV: the presets' draws, applied fast.

:func:`augment_batch` applies one :class:`~covid19_images.loaders.augment.Draw` to each image
of a batch, in two passes over the pixels per image:

1. ``cv2.warpAffine`` on the uint8 image (bilinear, black outside: the same resampling as
   ``grid_sample(..., padding_mode="zeros", align_corners=False)``), with :func:`pixel_matrix`,
   which is :func:`~covid19_images.loaders.augment.theta` in pixel coordinates. Label maps use
   nearest-neighbour with the same matrix, so they move with their image and no label is invented.
2. ``cv2.LUT`` from the warped uint8 image to float32: a 256-entry table per image holds the
   contrast and brightness step around the warped image's mean, the clip to 0-1 and the
   normalisation, so the conversion to float is the last pass and the only float one.

OpenCV runs single-threaded (:func:`covid19_images.process.signature.opencv`): a loader's
parallelism is its worker processes, and a forked worker would hang on a pool its parent had
started. The values agree with :func:`~covid19_images.loaders.augment.apply_numpy` and with the
``grid_sample`` path up to interpolation rounding: the warped image is rounded to whole grey
levels (at most 0.5/255 from the exact bilinear value), and OpenCV resamples at 1/32 of a pixel.

Example:
    >>> import numpy as np
    >>> from covid19_images.loaders.augment import PRESETS, draw, rng_for
    >>> images = np.full((2, 32, 32), 128, np.uint8)
    >>> draws = [draw(PRESETS["light"], rng_for(0, 0, i)) for i in range(2)]
    >>> out, _ = augment_batch(images, draws)
    >>> out.shape, out.dtype, bool(0.0 <= out.min() and out.max() <= 1.0)
    ((2, 32, 32), dtype('float32'), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from covid19_images.loaders.augment import Draw

_LEVELS = np.arange(256, dtype=np.float64) / 255.0


def pixel_matrix(d: Draw, height: int, width: int) -> np.ndarray:
    """The 2 x 3 matrix from output to input pixel coordinates (x right, y down, pixel centres
    at whole numbers) of :func:`~covid19_images.loaders.augment.theta`, for
    ``cv2.warpAffine(..., flags=WARP_INVERSE_MAP)``.

    ``theta`` works in normalised coordinates with ``align_corners=False``: pixel ``x`` of a
    side ``w`` is at ``(2 x + 1) / w - 1``.

    Example:
        >>> from covid19_images.loaders.augment import IDENTITY
        >>> pixel_matrix(IDENTITY, 4, 4).tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
        >>> float(pixel_matrix(Draw(0.0, 1.0, 0.25, 0.0, 0.0, 1.0), 8, 8)[0, 2])  # a quarter right
        -2.0
    """
    # theta(d), without building arrays: this runs once per image of every batch
    angle = math.radians(d.angle)
    a, d_ = math.cos(angle) / d.scale, math.sin(angle) / d.scale
    b, e = -d_, a
    c = -(a * 2 * d.shift_x + b * 2 * d.shift_y)
    f = -(d_ * 2 * d.shift_x + e * 2 * d.shift_y)
    w, h = float(width), float(height)
    # input = from_norm(theta(to_norm(output))), to_norm(x) = (2 x + 1) / w - 1
    x0 = w / 2 * (a * (1 / w - 1) + b * (1 / h - 1) + c + 1) - 0.5
    y0 = h / 2 * (d_ * (1 / w - 1) + e * (1 / h - 1) + f + 1) - 0.5
    return np.array([[a, b * w / h, x0], [d_ * h / w, e, y0]]) + 0.0  # no -0.0


def augment_batch(
    images: np.ndarray | Sequence[np.ndarray],
    draws: Sequence[Draw],
    *,
    mean: float = 0.0,
    std: float = 1.0,
    masks: np.ndarray | Sequence[np.ndarray] | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Augment uint8 images ``(B, H, W)`` by one draw each: float32 ``(B, H, W)``.

    Each output is ``(clip((x - m) * contrast + m + brightness, 0, 1) - mean) / std``, where
    ``x`` is the warped image on a 0-1 scale and ``m`` its mean: the formula of
    :func:`~covid19_images.loaders.augment.apply_numpy`, normalised (``mean=0, std=1`` leaves
    values in 0-1).

    Args:
        images: The batch, one uint8 ``H x W`` image per draw (an array or a list of them).
        draws: One draw per image.
        mean: Subtracted after augmentation (0-1 scale).
        std: Divides after subtracting ``mean``.
        masks: Label maps (uint8) moved with their images by nearest-neighbour, or None.
        out: A float32 ``(B, H, W)`` array to write into (each image C-contiguous), or None.

    Returns:
        The augmented images (``out`` when given) and the moved label maps (uint8) or None.

    Example:
        >>> import numpy as np
        >>> from covid19_images.loaders.augment import IDENTITY
        >>> image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4) * 16
        >>> out, _ = augment_batch(image, [IDENTITY])
        >>> bool(np.allclose(out * 255, image))  # no change draws a plain copy
        True
    """
    from covid19_images.process.signature import opencv

    cv2 = opencv()
    count = len(draws)
    if len(images) != count or (masks is not None and len(masks) != count):
        raise ValueError(f"{len(images)} images, {count} draws: one draw per image")
    if count == 0:
        empty = np.empty((0, 0, 0), np.float32) if out is None else out
        return empty, None if masks is None else np.empty((0, 0, 0), np.uint8)
    height, width = np.shape(images[0])
    if out is None:
        out = np.empty((count, height, width), np.float32)
    warped = np.empty((count, height, width), np.uint8)
    moved = None if masks is None else np.empty((count, height, width), np.uint8)
    sums = np.empty(count, np.float64)
    linear = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    nearest = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    for i, d in enumerate(draws):
        m = pixel_matrix(d, height, width)
        cv2.warpAffine(
            np.ascontiguousarray(images[i]),
            m,
            (width, height),
            dst=warped[i],
            flags=linear,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        sums[i] = cv2.sumElems(warped[i])[0]
        if masks is not None and moved is not None:
            cv2.warpAffine(
                np.ascontiguousarray(masks[i]),
                m,
                (width, height),
                dst=moved[i],
                flags=nearest,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
    # one table per image: level v -> normalised value of (v / 255 - m) * c + m + b, clipped
    means = (sums / (255.0 * height * width))[:, None]
    contrast = np.array([d.contrast for d in draws])[:, None]
    brightness = np.array([d.brightness for d in draws])[:, None]
    tables = np.clip((_LEVELS - means) * contrast + means + brightness, 0.0, 1.0)
    tables = ((tables - mean) / std).astype(np.float32)
    for i in range(count):
        result = cv2.LUT(warped[i], tables[i], dst=out[i])
        if not np.may_share_memory(result, out):  # ``out[i]`` was not usable in place
            out[i] = result
    return out, moved


def warp_labels(labels: np.ndarray, d: Draw) -> np.ndarray:
    """Label maps ``(K, H, W)`` uint8 of one image moved by its draw ``d``: nearest neighbour
    with the matrix :func:`augment_batch` warps the image with, black outside.

    Example:
        >>> from covid19_images.loaders.augment import Draw
        >>> labels = np.zeros((1, 8, 8), np.uint8)
        >>> labels[0, 2:4, 2:4] = 1
        >>> moved = warp_labels(labels, Draw(0.0, 1.0, 0.25, 0.0, 0.0, 1.0))
        >>> np.argwhere(moved[0]).min(axis=0).tolist()  # two pixels to the right
        [2, 4]
    """
    from covid19_images.process.signature import opencv

    cv2 = opencv()
    count, height, width = labels.shape
    out = np.empty_like(labels)
    m = pixel_matrix(d, height, width)
    for k in range(count):
        cv2.warpAffine(
            np.ascontiguousarray(labels[k]),
            m,
            (width, height),
            dst=out[k],
            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    return out
