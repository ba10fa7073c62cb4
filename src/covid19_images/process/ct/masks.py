"""One label map for every CT mask: upstream values mapped to shared names, on the image's grid.

Upstream masks use their own numbers (MosMedData: 1 = lesion; MedSeg: 1 ground-glass,
2 consolidation, 3 pleural effusion; Zenodo COVID-19-CT-Seg: 1 left lung, 2 right lung,
3 infection). :data:`MASK_MAPS` says, per mask family, which upstream value means which
harmonised name of :data:`LABELS`; :func:`harmonise` turns the masks of one image into one uint8
label map on that image's grid. Lesion classes (``lesion``, ``ggo``, ``consolidation``,
``effusion``) override lungs where they overlap, so a lesion inside the lung keeps its class.

MedSeg's lung masks (``rp_lung_msk/``, ``tr_lungmasks_updated.nii.gz``) are credited to Johannes
Hofmanninger's ``lungmask`` tool, whose two-label output is 1 = right lung, 2 = left lung; the
``medseg-lung`` map follows that convention (MedSeg documents no values of its own). Zenodo's
masks are documented as 1 = left lung, 2 = right lung.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from covid19_images.process.ct.volume import Volume, VolumeError, same_grid

LABELS: Final[dict[str, int]] = {
    "background": 0,
    "lung_left": 1,
    "lung_right": 2,
    "lesion": 3,
    "ggo": 4,
    "consolidation": 5,
    "effusion": 6,
}
"""Harmonised mask values. ``lesion`` is any COVID-19 lesion where upstream does not say which."""

MASK_MAPS: Final[dict[str, dict[int, str]]] = {
    "mosmed": {1: "lesion"},
    "medseg": {1: "ggo", 2: "consolidation", 3: "effusion"},
    "zenodo-lung": {1: "lung_left", 2: "lung_right"},
    "zenodo-infection": {1: "lesion"},
    "zenodo-lung-infection": {1: "lung_left", 2: "lung_right", 3: "lesion"},
    "medseg-lung": {1: "lung_right", 2: "lung_left"},
}
"""Mask family → upstream value → harmonised name (0 is always background).

``medseg-lung`` follows the ``lungmask`` tool that made MedSeg's lung masks: 1 right, 2 left.
"""

LUNG_LABELS: Final = frozenset({LABELS["lung_left"], LABELS["lung_right"]})
LESION_LABELS: Final = frozenset({LABELS["lesion"], LABELS["ggo"], LABELS["consolidation"]})
"""The labels :func:`lesion_only` keeps (pleural effusion is not a lung lesion)."""

LOOSE_GRID: Final = 0.01
"""A mask grid off the image's by less than this fraction of a voxel is taken as the same."""


def _label_values(mask: Volume, map_id: str) -> np.ndarray[Any, Any]:
    """The mask's upstream values as a non-negative integer array, checked against its map."""
    if map_id not in MASK_MAPS:
        raise VolumeError(
            f"unknown mask map {map_id!r}; known: {', '.join(sorted(MASK_MAPS))}", "bad-value"
        )
    array = np.asarray(mask.array)
    if np.issubdtype(array.dtype, np.bool_):
        return array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)):
            raise VolumeError(f"{map_id} mask holds NaN or infinite values", "bad-value")
        rounded = np.rint(array)
        off = np.abs(array - rounded) > 1e-3
        if np.any(off):
            sample = sorted({float(v) for v in np.unique(array[off])[:5]})
            raise VolumeError(f"{map_id} mask holds non-integer values {sample}", "bad-value")
        array = rounded.astype(np.int64)
    allowed = {0, *MASK_MAPS[map_id]}
    top = max(allowed)
    unexpected: set[int] = set()
    if array.size and (int(array.min()) < 0 or int(array.max()) > top):
        outside = (array < 0) | (array > top)
        unexpected = {int(v) for v in np.unique(array[outside])}
    else:
        gaps = set(range(top + 1)) - allowed  # values inside the range the map does not list
        unexpected = {v for v in gaps if np.any(array == v)}
    if unexpected:
        raise VolumeError(
            f"{map_id} mask holds values {sorted(unexpected)} outside its map {sorted(allowed)}",
            "bad-value",
        )
    return array


def _aligned(mask: Volume, image: Volume, map_id: str, warnings: list[str]) -> None:
    """Raise ``mask-mismatch`` unless the mask lies on the image's grid (or within 1% of a
    voxel of it, which is noted in ``warnings``)."""
    differs = same_grid(mask, image)
    if differs is None:
        return
    if mask.array.shape == image.array.shape:
        loose = same_grid(mask, image, tol=LOOSE_GRID * min(image.spacing))
        if loose is None:
            warnings.append(
                f"{map_id} mask grid is off the image's by less than 1% of a voxel ({differs}); "
                "taken as the image's grid"
            )
            return
    raise VolumeError(f"{map_id} mask does not fit its image: {differs}", "mask-mismatch")


def harmonise(masks: Sequence[tuple[Volume, str]], image: Volume) -> tuple[Volume, list[str]]:
    """Combine the masks of one image into one uint8 label map of :data:`LABELS`.

    Each ``(mask, map id)`` is mapped through :data:`MASK_MAPS`; lung labels are written first
    and lesion labels (lesion, ggo, consolidation, effusion) over them, each in the given order,
    so a lesion overrides the lung it lies in and a later mask wins over an earlier one of the
    same kind. The result lies on ``image``'s grid.

    Returns:
        The label map (``hu`` None) and warnings: voxels two masks label differently (two lung
        sides, or two lesion classes), or a mask grid within 1% of a voxel of the image's.

    Raises:
        VolumeError: ``mask-mismatch`` when a mask's shape, spacing, origin or direction differs
            from the image's; ``bad-value`` when a mask holds values its map does not list (the
            message names them) or the map id is unknown.

    Example:
        >>> grid = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
        >>> image = Volume(np.zeros((1, 2, 3), np.int16), *grid)
        >>> lungs = Volume(np.array([[[1, 1, 2], [0, 2, 2]]], np.uint8), *grid)
        >>> lesion = Volume(np.array([[[0, 1, 0], [0, 0, 0]]], np.uint8), *grid)
        >>> out, warnings = harmonise([(lungs, "zenodo-lung"), (lesion, "zenodo-infection")], image)
        >>> out.array.tolist(), out.array.dtype.name, warnings
        ([[[1, 3, 2], [0, 2, 2]]], 'uint8', [])
    """
    warnings: list[str] = []
    mapped: list[tuple[str, np.ndarray[Any, Any], dict[int, int]]] = []
    for mask, map_id in masks:
        values = _label_values(mask, map_id)
        _aligned(mask, image, map_id, warnings)
        table = {value: LABELS[name] for value, name in MASK_MAPS[map_id].items()}
        mapped.append((map_id, values, table))
    out = np.zeros(image.array.shape, dtype=np.uint8)
    for kind in ("lung", "lesion"):
        written = np.zeros(image.array.shape, dtype=bool)
        for map_id, values, table in mapped:
            lut = np.zeros(max(table) + 1, dtype=np.uint8)
            for value, label in table.items():
                if (label in LUNG_LABELS) == (kind == "lung"):
                    lut[value] = label
            if not lut.any():
                continue
            layer = lut[values]
            present = layer > 0
            clash = present & written & (out != layer)
            if np.any(clash):
                warnings.append(
                    f"{int(clash.sum())} voxels get another {kind} label from the {map_id} mask "
                    "than from an earlier mask; the later one is kept"
                )
            out[present] = layer[present]
            written |= present
    return Volume(out, image.spacing, image.origin, image.direction.copy(), hu=None), warnings


def lesion_only(mask: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """1 where a harmonised label map says lesion, ground-glass or consolidation, else 0 (uint8).

    Example:
        >>> lesion_only(np.array([0, 1, 2, 3, 4, 5, 6])).tolist()
        [0, 0, 0, 1, 1, 1, 0]
    """
    keep = np.isin(np.asarray(mask), sorted(LESION_LABELS))
    return keep.astype(np.uint8)
