"""How much of a Grad-CAM map lies inside the lungs: lung masks at the map's size, shares, a table.

No torch here: numpy, pandas and Pillow.

**Where the masks are.** A manifest row's ``mask_paths`` lists mask files **relative to the
folder of its source's raw files** (the same folder ``path_raw`` is relative to), as upstream
lays them out: ieee8023's lung masks are ``annotations/lungVAE-masks/<image stem>_mask.png``
(binary 0/255 PNGs at the radiograph's own width and height), the COVID-19 Radiography
Database's ``<class>/masks/<name>.png``. That folder is found like a build finds it
(:func:`covid19_images.fetch.locate`: the mirror, a registered folder, or a fetch), or given.

**At the packed size.** A build's square copies are the radiograph's centred square (cut to the
short side), resampled to ``size`` x ``size`` (:mod:`covid19_images.process.image`). A mask
goes the same way: stretched to the radiograph's width and height if it is stored at another
size (the Radiography Database keeps 256 px masks of 299 px images), cut to the same centred
square, then resized to the map's size with nearest-neighbour sampling, so it stays binary.

Example:
    >>> import numpy as np
    >>> cams = np.array([[[1.0, 3.0], [0.0, 0.0]]])
    >>> energy_inside(cams, [np.array([[False, True], [False, False]])])
    array([0.75])
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from PIL import Image

from covid19_images.errors import Covid19ImagesError


class ExplainError(Covid19ImagesError):
    """An explanation cannot be made: an unreadable mask, a source folder not found, bad shapes."""


def energy_inside(cams: np.ndarray, masks: Sequence[np.ndarray | None]) -> np.ndarray:
    """The share of each map's energy inside its mask: sum of the map inside / sum of the map.

    Args:
        cams: ``B x H x W`` non-negative maps (as
            :func:`~covid19_images.explanation.grad_cam` gives).
        masks: one ``H x W`` mask per map (non-zero is inside), or None where there is none.

    Returns:
        ``B`` float64 shares in [0, 1]; NaN where there is no mask or the map is all zeros (no
        energy to share out).

    Raises:
        ExplainError: a count or a mask shape that does not match the maps.

    Example:
        >>> cams = np.ones((2, 2, 2))
        >>> energy_inside(cams, [np.eye(2, dtype=bool), None])
        array([0.5, nan])
    """
    cams = np.asarray(cams, dtype=np.float64)
    if cams.ndim != 3:
        raise ExplainError(f"maps must be B x H x W, got shape {cams.shape}")
    if len(masks) != len(cams):
        raise ExplainError(f"{len(masks)} masks for {len(cams)} maps")
    shares = np.full(len(cams), np.nan)
    for i, (cam, mask) in enumerate(zip(cams, masks, strict=True)):
        if mask is None:
            continue
        inside = np.asarray(mask) != 0
        if inside.shape != cam.shape:
            raise ExplainError(
                f"mask {i} is {inside.shape[0]}x{inside.shape[1]}, its map {cam.shape[0]}x"
                f"{cam.shape[1]}: resize masks to the map size first (load_masks does)"
            )
        total = float(cam.sum())
        if total > 0:
            shares[i] = float(cam[inside].sum()) / total
    return shares


def mask_area(masks: Sequence[np.ndarray | None]) -> np.ndarray:
    """The share of each mask's pixels that are inside (NaN where there is no mask).

    The share of energy a map spread evenly over the image would have inside: the baseline
    for :func:`energy_inside`.

    Example:
        >>> mask_area([np.array([[1, 0], [0, 0]]), None])
        array([0.25,  nan])
    """
    return np.array(
        [np.nan if m is None else float(np.mean(np.asarray(m) != 0)) for m in masks],
        dtype=np.float64,
    )


def _mask_list(value: Any) -> list[str]:
    """A row's ``mask_paths`` (a list, a numpy array from parquet, None or NaN) as strings."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value if v is not None and str(v)]


def _square_mask(
    path: Path, width: int | None, height: int | None, size: tuple[int, int]
) -> np.ndarray:
    """One mask file at ``size`` (rows, columns): stretched to the radiograph, centre square."""
    with Image.open(path) as img:
        img.load()
        mask = img.convert("L")
    if width and height and mask.size != (width, height):
        mask = mask.resize((width, height), Image.Resampling.NEAREST)
    w, h = mask.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = mask.crop((left, top, left + side, top + side))
    small = square.resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(small) > 0


def _int_or_none(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def load_masks(
    rows: pd.DataFrame,
    size: int | tuple[int, int],
    *,
    root: str | os.PathLike[str] | None = None,
    mirror: str | os.PathLike[str] | None = None,
    folders: Mapping[str, str | os.PathLike[str]] | None = None,
    on_error: Literal["raise", "warn"] = "raise",
) -> list[np.ndarray | None]:
    """The lung masks of manifest ``rows`` as boolean ``size`` masks, aligned with the packed image.

    Args:
        rows: manifest rows (``source``, ``mask_paths``, and ``width``/``height`` where known).
        size: the map size: ``size`` x ``size`` or (rows, columns).
        root: the data root for :func:`covid19_images.fetch.locate` (default as a build).
        mirror: a mirror folder for ``locate`` (default ``$COVID19_IMAGES_MIRROR``).
        folders: source id → its raw folder, used before ``locate``.
        on_error: ``"raise"`` an :class:`ExplainError` naming the image, the file and the cause
            where a mask cannot be read (or its source folder is not found), or ``"warn"`` and
            give None for that row.

    Returns:
        One entry per row: the union of its 2-D mask files (True inside), or None where the row
        has no mask. NIfTI masks (CT) are not lung masks of a 2-D image and count as none.

    Example:
        >>> rows = pd.DataFrame({"source": ["x"], "mask_paths": [[]]})
        >>> load_masks(rows, 64)
        [None]
    """
    shape = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    given = {key: Path(value) for key, value in (folders or {}).items()}
    located: dict[str, Path | None] = {}
    out: list[np.ndarray | None] = []
    for row in rows.to_dict("records"):
        files = [
            f for f in _mask_list(row.get("mask_paths")) if not f.endswith((".nii", ".nii.gz"))
        ]
        if not files:
            out.append(None)
            continue
        source = str(row.get("source"))
        what = f"image {row.get('uid', '?')} ({source})"
        folder = given.get(source)
        if folder is None:
            if source not in located:
                located[source] = _locate(source, root, mirror)
            folder = located[source]
        if folder is None:
            _fail(
                on_error,
                f"{what}: the raw files of source {source!r}, where its masks are, are not "
                f"found; pass the mirror or its folder, or fetch it (covid19-images fetch "
                f"{source})",
            )
            out.append(None)
            continue
        width, height = _int_or_none(row.get("width")), _int_or_none(row.get("height"))
        union: np.ndarray | None = None
        for rel in files:
            path = folder / rel
            try:
                mask = _square_mask(path, width, height, shape)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                _fail(on_error, f"{what}: cannot read its mask {path}: {error}")
                union = None
                break
            union = mask if union is None else union | mask
        out.append(union)
    return out


def _locate(
    source: str,
    root: str | os.PathLike[str] | None,
    mirror: str | os.PathLike[str] | None,
) -> Path | None:
    from covid19_images.fetch import locate

    try:
        found = locate(
            source,
            root=None if root is None else Path(root),
            mirror=None if mirror is None else Path(mirror),
        )
    except (Covid19ImagesError, KeyError):
        return None
    return found.path if found is not None else None


def _fail(on_error: str, message: str) -> None:
    if on_error == "raise":
        raise ExplainError(message)
    warnings.warn(message, stacklevel=3)


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def energy_table(
    shares: npt.ArrayLike,
    classes: Sequence[str],
    area: npt.ArrayLike | None = None,
) -> str:
    """A markdown table of CAM energy inside the lungs per class, and over all images.

    Args:
        shares: per image, its :func:`energy_inside` share (NaN: no mask or no energy); a
            list, an array or a pandas Series.
        classes: per image, the class to group by (the true class, say).
        area: per image, its :func:`mask_area` (the share an even map would have): adds a
            column to compare with.

    Columns: the class, its images, those with a share (a mask and a map with energy), the mean
    and median share; with ``area``, the mean lung area of the same images. A class without
    masks shows ``n/a``.

    Example:
        >>> print(energy_table([0.75, float("nan"), 0.25], ["covid19", "covid19", "normal"]))
        | class | images | with mask | energy in mask (mean) | (median) |
        |---|---:|---:|---:|---:|
        | covid19 | 2 | 1 | 0.75 | 0.75 |
        | normal | 1 | 1 | 0.25 | 0.25 |
        | all | 3 | 2 | 0.50 | 0.50 |
    """
    values = np.asarray(shares, dtype=np.float64).reshape(-1)
    labels = [str(c) for c in classes]
    if len(labels) != len(values):
        raise ExplainError(f"{len(labels)} classes for {len(values)} shares")
    areas = None if area is None else np.asarray(area, dtype=np.float64).reshape(-1)
    if areas is not None and len(areas) != len(values):
        raise ExplainError(f"{len(areas)} areas for {len(values)} shares")
    header = "| class | images | with mask | energy in mask (mean) | (median) |"
    rule = "|---|---:|---:|---:|---:|"
    if areas is not None:
        header += " mask area (mean) |"
        rule += "---:|"
    lines = [header, rule]
    groups = [*sorted(set(labels)), None]
    for group in groups:
        chosen = np.array([group is None or label == group for label in labels], dtype=bool)
        picked = values[chosen]
        valid = ~np.isnan(picked)
        mean = float(picked[valid].mean()) if valid.any() else math.nan
        median = float(np.median(picked[valid])) if valid.any() else math.nan
        line = (
            f"| {'all' if group is None else group} | {int(chosen.sum())} | {int(valid.sum())} "
            f"| {_fmt(mean)} | {_fmt(median)} |"
        )
        if areas is not None:
            chosen_area = areas[chosen][valid]
            chosen_area = chosen_area[~np.isnan(chosen_area)]
            line += f" {_fmt(float(chosen_area.mean()) if chosen_area.size else math.nan)} |"
        lines.append(line)
    return "\n".join(lines)
