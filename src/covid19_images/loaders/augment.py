"""Augmentation presets for chest images, defined once and applied by every framework's loader.

A preset says how far an image may be rotated, scaled and shifted and how much its brightness
and contrast may change. :func:`draw` picks one set of values for a sample from a generator
seeded by (seed, epoch, sample index), so an epoch is the same whatever the number of loader
workers or the framework, and no global random state is touched. Each framework applies the
same draw with its own ops (:func:`theta` gives the affine matrix in the normalised coordinates
of ``torch.nn.functional.affine_grid``; :func:`apply_numpy` is the reference).

Why these presets:

- **No horizontal flip.** A chest radiograph or CT slice has a side: the heart, aortic arch and
  stomach bubble are on the patient's left, and the side markers (``L``/``R``) are printed on the
  film. A flipped image shows an anatomy (situs inversus, dextrocardia) that is rare, and a model
  can learn the flip. No vertical flip either.
- **Small rotations, scale and shifts**: patients are positioned by hand, so films differ by a few
  degrees and a few per cent of the field; ``light`` stays inside that range, ``standard`` goes
  to about twice it (10 degrees, 10 %), a common choice for chest X-ray models.
- **Brightness and contrast**: exposure and window settings vary between machines and sites;
  changes of 5-10 % mimic that without hiding opacities.
- **No elastic deformation, noise, blur or cut-out** in the presets: they can erase or invent the
  faint opacities the labels are about.

Example:
    >>> import numpy as np
    >>> d = draw(PRESETS["light"], rng_for(seed=0, epoch=0, index=7))
    >>> abs(d.angle) <= 5 and 0.95 <= d.scale <= 1.05
    True
    >>> draw(PRESETS["light"], rng_for(0, 0, 7)) == d  # the same sample draws the same values
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Preset:
    """How much a sample may change: rotation (degrees, +/-), scale range, shift (fraction of
    the side, +/-), brightness (added, on a 0-1 scale, +/-), contrast (factor - 1, +/-)."""

    name: str
    degrees: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0

    @property
    def identity(self) -> bool:
        """True when the preset changes nothing."""
        return (
            self.degrees == 0
            and self.scale == (1.0, 1.0)
            and self.translate == 0
            and self.brightness == 0
            and self.contrast == 0
        )


PRESETS: Final[dict[str, Preset]] = {
    "none": Preset("none"),
    "light": Preset(
        "light", degrees=5.0, scale=(0.95, 1.05), translate=0.03, brightness=0.05, contrast=0.05
    ),
    "standard": Preset(
        "standard", degrees=10.0, scale=(0.9, 1.1), translate=0.06, brightness=0.1, contrast=0.1
    ),
}


@dataclass(frozen=True)
class Draw:
    """The values drawn for one sample."""

    angle: float
    """Degrees, counter-clockwise."""
    scale: float
    shift_x: float
    """Fraction of the width, positive to the right."""
    shift_y: float
    """Fraction of the height, positive downwards."""
    brightness: float
    contrast: float


IDENTITY: Final = Draw(0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def preset(name: str | Preset | None) -> Preset:
    """A preset by name (``none``, ``light``, ``standard``); None means ``none``.

    Example:
        >>> preset("standard").degrees
        10.0
    """
    if name is None:
        return PRESETS["none"]
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown augmentation preset {name!r}; presets: {', '.join(PRESETS)}"
        ) from None


def rng_for(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample in one epoch: independent of workers and of global state."""
    return np.random.default_rng([seed, epoch, index])


def draw(p: Preset, rng: np.random.Generator) -> Draw:
    """One sample's values, uniformly within the preset's ranges."""
    if p.identity:
        return IDENTITY
    u = rng.uniform(-1.0, 1.0, size=5)
    log_lo, log_hi = math.log(p.scale[0]), math.log(p.scale[1])
    scale = math.exp(log_lo + (u[1] + 1) / 2 * (log_hi - log_lo))
    return Draw(
        angle=float(u[0] * p.degrees),
        scale=float(scale),
        shift_x=float(u[2] * p.translate),
        shift_y=float(u[3] * p.translate),
        brightness=float(u[4] * p.brightness),
        contrast=float(1.0 + rng.uniform(-1.0, 1.0) * p.contrast),
    )


def theta(d: Draw) -> np.ndarray:
    """2 x 3 matrix from output to input coordinates, both normalised to [-1, 1] (x right,
    y down), as ``torch.nn.functional.affine_grid`` takes it (``align_corners=False``).

    Example:
        >>> theta(IDENTITY).tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    a = math.radians(d.angle)
    cos, sin = math.cos(a) / d.scale, math.sin(a) / d.scale
    # output = S R input + t  =>  input = R^-1 S^-1 (output - t); y points down, so a
    # counter-clockwise turn on screen is a clockwise one in these coordinates.
    inverse = np.array([[cos, -sin], [sin, cos]])
    shift = np.array([2 * d.shift_x, 2 * d.shift_y])
    return np.concatenate([inverse, (-inverse @ shift)[:, None]], axis=1) + 0.0  # no -0.0


def apply_numpy(image: np.ndarray, d: Draw) -> np.ndarray:
    """The reference: one uint8 (H, W) image → float32 (H, W) in 0-1, augmented by ``d``.

    Bilinear resampling; outside the image is black. Frameworks' own ops give the same values
    up to interpolation rounding.
    """
    pixels = image.astype(np.float32) / 255.0
    if d != IDENTITY:
        h, w = pixels.shape
        t = theta(d)
        # pixel centres: x_n = (2 x + 1) / w - 1, the same convention as align_corners=False
        to_norm = np.array([[2.0 / h, 0, 1.0 / h - 1], [0, 2.0 / w, 1.0 / w - 1], [0, 0, 1]])
        from_norm = np.linalg.inv(to_norm)
        swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])  # (row, col) <-> (x, y)
        full = np.vstack([t, [0, 0, 1]])
        m = from_norm @ swap @ full @ swap @ to_norm
        pixels = ndimage.affine_transform(
            pixels, m[:2, :2], offset=m[:2, 2], order=1, mode="constant", cval=0.0
        )
        pixels = (pixels - pixels.mean()) * d.contrast + pixels.mean() + d.brightness
        pixels = np.clip(pixels, 0.0, 1.0)
    return pixels.astype(np.float32)
