"""Where a square copy sits on its radiograph, so that masks and boxes follow the image exactly.

A build's square copies (:mod:`covid19_images.process.image`) are made in three steps: a JPEG is
decoded at a reduced scale (1/2, 1/4 or 1/8, the smallest that still covers the largest copy),
the frame is cut to its centred square, and the square is resized to ``size`` x ``size``. A
:class:`SquareGrid` holds that geometry and maps the radiograph's own pixel coordinates onto the
copy's and back, so a lung mask is sampled (nearest neighbour) and a box is mapped on exactly the
grid the image was resampled on.

Coordinates are continuous, with pixel edges at whole numbers (pixel ``i`` covers ``[i, i + 1)``,
its centre is ``i + 0.5``), as COCO boxes are given.

Example:
    >>> grid = SquareGrid(width=600, height=400, scale=1, left=100, top=0, side=400, size=100)
    >>> grid.to_copy(100.0, 0.0), grid.to_copy(500.0, 400.0)
    ((0.0, 0.0), (100.0, 100.0))
    >>> grid.box_to_copy((150.0, 40.0, 350.0, 240.0))
    (12.5, 10.0, 62.5, 60.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from covid19_images.process.image import MAX_PIXELS, open_image, reduce_for, square_box

ASPECT_TOLERANCE = 0.01
"""How far (relative) a mask's aspect ratio may differ from its image's and still be scaled
onto it: 1 %, i.e. rounding of a side to whole pixels (the COVID-19 Radiography Database keeps
256 x 256 masks of 299 x 299 images)."""


@dataclass(frozen=True)
class SquareGrid:
    """The geometry of one square copy of one radiograph.

    ``width`` x ``height`` is the file's own size; ``scale`` the reduction the JPEG decoder
    used (1, 2, 4 or 8; 1 for other formats); ``left``, ``top`` and ``side`` the centred square
    in the reduced frame; ``size`` the copy's side.
    """

    width: int
    height: int
    scale: int
    left: int
    top: int
    side: int
    size: int

    def to_copy(self, x: float, y: float) -> tuple[float, float]:
        """A point of the radiograph in the copy's coordinates (may lie outside the copy)."""
        k = self.size / self.side
        return (x / self.scale - self.left) * k, (y / self.scale - self.top) * k

    def box_to_copy(
        self, box: tuple[float, float, float, float]
    ) -> tuple[float, float, float, float]:
        """A box ``(x0, y0, x1, y1)`` of the radiograph in the copy's coordinates, unclipped."""
        x0, y0 = self.to_copy(box[0], box[1])
        x1, y1 = self.to_copy(box[2], box[3])
        return x0, y0, x1, y1

    def sample(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` (``H x W`` of the radiograph, or another size of the same aspect, which is
        stretched onto it) at the copy's grid: ``size`` x ``size``, nearest neighbour, so no
        value is invented.

        Example:
            >>> grid = SquareGrid(4, 2, 1, 1, 0, 2, 4)
            >>> grid.sample(np.array([[0, 1, 2, 3], [4, 5, 6, 7]])).tolist()[0]
            [1, 1, 2, 2]
        """
        rows_in, cols_in = mask.shape[:2]
        centres = (np.arange(self.size) + 0.5) * (self.side / self.size)
        xs = (centres + self.left) * self.scale  # the radiograph's own coordinates
        ys = (centres + self.top) * self.scale
        cols = np.clip(np.floor(xs * cols_in / self.width).astype(np.int64), 0, cols_in - 1)
        rows = np.clip(np.floor(ys * rows_in / self.height).astype(np.int64), 0, rows_in - 1)
        out: np.ndarray = np.ascontiguousarray(mask[np.ix_(rows, cols)])
        return out


def aspect_matches(width: int, height: int, other_width: int, other_height: int) -> bool:
    """Whether two frames have the same aspect ratio, within :data:`ASPECT_TOLERANCE`.

    Example:
        >>> aspect_matches(299, 299, 256, 256), aspect_matches(2000, 1000, 1000, 1000)
        (True, False)
    """
    if min(width, height, other_width, other_height) <= 0:
        return False
    return abs((width / height) / (other_width / other_height) - 1.0) <= ASPECT_TOLERANCE


def square_grid(
    data: bytes, size: int, sizes: tuple[int, ...], max_pixels: int = MAX_PIXELS
) -> SquareGrid:
    """The grid of the square copy of side ``size`` of the image in ``data`` (its bytes), made
    with the copies ``sizes`` (the processing parameters: the largest decides a JPEG's reduced
    decoding scale). Only the header is parsed.

    Raises:
        covid19_images.process.image.DecodeError: The header cannot be read.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> buffer = io.BytesIO()
        >>> Image.new("L", (2200, 1831)).save(buffer, "JPEG")
        >>> square_grid(buffer.getvalue(), 64, (64, 224, 512))
        SquareGrid(width=2200, height=1831, scale=2, left=92, top=0, side=916, size=64)
    """
    with open_image(data, max_pixels) as img:
        width, height = img.size
        reduce_for(img, sizes)
        reduced = img.size
    return grid_of(width, height, reduced, size)


def grid_of(width: int, height: int, reduced: tuple[int, int], size: int) -> SquareGrid:
    """The grid of a ``width`` x ``height`` radiograph decoded at ``reduced`` size.

    Example:
        >>> grid_of(2200, 1831, (1100, 916), 64)
        SquareGrid(width=2200, height=1831, scale=2, left=92, top=0, side=916, size=64)
    """
    scale = next(
        (s for s in (1, 2, 4, 8) if (-(-width // s), -(-height // s)) == tuple(reduced)),
        max(1, round(width / max(reduced[0], 1))),
    )
    left, top, side = square_box(*reduced)
    return SquareGrid(width, height, scale, left, top, side, size)


__all__ = ["SquareGrid", "aspect_matches", "grid_of", "square_grid"]
