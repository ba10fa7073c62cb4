"""Grad-CAM figures: an overlay per image and a montage per class, written atomically as PNGs.

No torch here: numpy, OpenCV (the colour map), Pillow (PNG) and matplotlib (montages, Agg
without pyplot). An overlay is the blend pytorch-grad-cam's ``show_cam_on_image`` makes: the
map coloured with OpenCV's JET map (blue = none, red = most) over the greyscale image.

Every file is written to a temporary name in its folder and renamed into place, so a reader
never sees half a PNG and an interrupted run leaves no broken file under the final name.

Example:
    >>> import numpy as np
    >>> overlay(np.zeros((4, 4), np.uint8), np.ones((4, 4))).shape
    (4, 4, 3)
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from covid19_images.atomic import write_bytes
from covid19_images.explanation.energy import ExplainError

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _grey_uint8(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        raise ExplainError(f"images must be uint8 (as packed), got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.ndim == 3 and array.shape[-1] == 3:
        return array
    raise ExplainError(f"an image must be H x W (or H x W x 3), got shape {array.shape}")


def overlay(image_uint8: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The map ``cam`` (in [0, 1]) in JET colours over ``image_uint8``, as ``H x W x 3`` RGB uint8.

    ``image_uint8`` is ``H x W`` greyscale (or ``H x W x 3``); a map of another size is resized
    to the image (bilinear). ``alpha`` is the weight of the colour map (pytorch-grad-cam's
    ``1 - image_weight``); the blend is then scaled so its brightest pixel is 255, as there.

    Example:
        >>> rgb = overlay(np.full((2, 2), 128, np.uint8), np.array([[0.0, 0.0], [0.0, 1.0]]))
        >>> bool(rgb[1, 1, 0] > rgb[0, 0, 0])  # the hot corner is red, the rest blue
        True
    """
    rgb = _grey_uint8(image_uint8)
    heat: np.ndarray = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0.0, 1.0)
    if heat.ndim != 2:
        raise ExplainError(f"a map must be H x W, got shape {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ExplainError(f"alpha must be in [0, 1], got {alpha}")
    if heat.shape != rgb.shape[:2]:
        heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    levels = np.round(255 * heat).astype(np.uint8)
    colours = cv2.applyColorMap(levels, cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    blend = alpha * colours + (1.0 - alpha) * rgb.astype(np.float32) / 255.0
    blend /= max(float(blend.max()), 1e-7)
    out: np.ndarray = np.round(255.0 * blend).astype(np.uint8)
    return out


def _check_name(name: str) -> str:
    if not _SAFE_NAME.match(name) or name in (".", ".."):
        raise ExplainError(
            f"{name!r} cannot be a file name here (letters, digits, '.', '_', '+', '-' only)"
        )
    return name


def _check_batch(images: Sequence[np.ndarray] | np.ndarray, cams: np.ndarray) -> None:
    if len(images) != len(cams):
        raise ExplainError(f"{len(images)} images for {len(cams)} maps")


def save_overlays(
    folder: str | os.PathLike[str],
    images: Sequence[np.ndarray] | np.ndarray,
    cams: np.ndarray,
    names: Sequence[str],
    alpha: float = 0.5,
) -> list[Path]:
    """Write one overlay PNG per image, ``<folder>/<name>.png`` (a uid, say); returns the paths.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     paths = save_overlays(folder, np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8)),
        ...                           ["img-1"])
        ...     print([p.name for p in paths])
        ['img-1.png']
    """
    _check_batch(images, cams)
    if len(names) != len(cams):
        raise ExplainError(f"{len(names)} names for {len(cams)} maps")
    target = Path(folder)
    checked = [_check_name(n) for n in names]
    if len(set(checked)) != len(checked):
        raise ExplainError("names must be unique (one file each)")
    paths = []
    for image, cam, name in zip(images, cams, checked, strict=True):
        write_bytes(target / f"{name}.png", _png(overlay(image, cam, alpha)))
        paths.append(target / f"{name}.png")
    return paths


def caption(true: str | None, predicted: str, probability: float) -> str:
    """A montage tile's caption: the true and predicted class and the predicted probability.

    Example:
        >>> caption("covid19", "normal", 0.8312)
        'true covid19\\npred normal (0.83)'
    """
    head = f"true {true}\n" if true is not None else ""
    return f"{head}pred {predicted} ({probability:.2f})"


def montage(
    path: str | os.PathLike[str],
    images: Sequence[np.ndarray] | np.ndarray,
    cams: np.ndarray,
    captions: Sequence[str],
    title: str | None = None,
    columns: int = 4,
    alpha: float = 0.5,
) -> Path:
    """One grid PNG of overlays, each tile titled with its caption (see :func:`caption`).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> montage(folder / "m.png", np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8)),
        ...         ["a", "b"]).name  # doctest: +SKIP
        'm.png'
    """
    from matplotlib.figure import Figure

    _check_batch(images, cams)
    if len(captions) != len(cams):
        raise ExplainError(f"{len(captions)} captions for {len(cams)} maps")
    if len(cams) == 0:
        raise ExplainError("a montage needs at least one image")
    columns = max(1, min(columns, len(cams)))
    rows = -(-len(cams) // columns)
    fig = Figure(figsize=(2.2 * columns, 2.5 * rows + (0.4 if title else 0.0)), dpi=100)
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k < len(cams):
            ax.imshow(overlay(images[k], cams[k], alpha), interpolation="nearest")
            ax.set_title(captions[k], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def class_montages(
    folder: str | os.PathLike[str],
    images: Sequence[np.ndarray] | np.ndarray,
    cams: np.ndarray,
    true: Sequence[str],
    predicted: Sequence[str],
    probability: Sequence[float] | np.ndarray,
    max_tiles: int = 16,
    columns: int = 4,
) -> dict[str, Path]:
    """One montage per true class, ``<folder>/montage_<class>.png``, of its first ``max_tiles``.

    Each tile's caption gives the true and predicted class and the predicted class's
    probability. Returns class → path.

    Example:
        >>> import tempfile
        >>> paths = class_montages(tempfile.mkdtemp(), np.zeros((2, 8, 8), np.uint8),
        ...     np.zeros((2, 8, 8)), ["a", "b"], ["a", "a"], [0.9, 0.6])  # doctest: +SKIP
        >>> sorted(paths)  # doctest: +SKIP
        ['a', 'b']
    """
    _check_batch(images, cams)
    if not len(true) == len(predicted) == len(probability) == len(cams):
        raise ExplainError("true, predicted and probability need one entry per map")
    out: dict[str, Path] = {}
    for label in sorted(set(true)):
        chosen = [i for i, t in enumerate(true) if t == label][:max_tiles]
        out[label] = montage(
            Path(folder) / f"montage_{_check_name(label)}.png",
            [images[i] for i in chosen],
            np.asarray(cams)[chosen],
            [caption(true[i], predicted[i], float(probability[i])) for i in chosen],
            title=f"Grad-CAM, true class {label} ({len(chosen)} of "
            f"{sum(t == label for t in true)})",
            columns=columns,
        )
    return out
