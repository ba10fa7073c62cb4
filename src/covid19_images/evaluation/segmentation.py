"""Segmentation metrics per image: Dice, IoU and HD95 from MONAI, with a stated empty-mask policy.

:func:`segmentation_scores` compares predicted and reference label maps image by image (2-D
radiographs and slices, or 3-D volumes) with MONAI's ``compute_dice``, ``compute_iou`` and
``compute_hausdorff_distance(percentile=95)``, per class and for the foreground (the union of
the classes); :func:`ct_lesion_scores` does it per CT volume on the lesion label only.
:func:`summarize_segmentation` averages the scores per image or per patient, overall and per
source, with patient-bootstrap intervals.

**Empty masks.** For each image and class:

- reference and prediction both empty: Dice 1 and IoU 1 (nothing there, nothing predicted: a
  correct answer, and an image without lesion stays in the average), HD95 NaN;
- exactly one of them empty: Dice 0 and IoU 0 (a missed or an invented structure), HD95 NaN;
- both present: MONAI's values.

HD95 is a distance between two surfaces; with a surface missing there is nothing to measure. It
is NaN there, as MONAI returns, rather than 0 (which would reward an empty image with a perfect
boundary) or an arbitrary maximum such as the image diagonal (which would make the mean depend
on the image size): its mean runs over the images where both masks exist, and the summary's
``defined`` column says how many. Misses and false alarms show in Dice and IoU, and the
``n_target_*``/``n_pred_*`` pixel counts show which images were empty.

MONAI (the ``monai`` extra) and torch are imported when scores are computed, not at import.
HD95 is in pixels, or in millimetres with ``spacing``.

Example:
    >>> import numpy as np
    >>> target = np.zeros((1, 8, 8), dtype=np.uint8)
    >>> target[0, 2:6, 2:6] = 1
    >>> pred = np.zeros_like(target)
    >>> pred[0, 2:6, 2:5] = 1
    >>> scores = segmentation_scores(pred, target, ["background", "lesion"])
    >>> scores[["dice_lesion", "iou_lesion", "hd95_lesion"]].round(3).to_dict("records")
    [{'dice_lesion': 0.857, 'iou_lesion': 0.75, 'hd95_lesion': 1.0}]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from covid19_images.errors import EvaluationError
from covid19_images.evaluation.summary import blocks, nanmean, summarize

__all__ = [
    "FOREGROUND",
    "ct_lesion_scores",
    "metric_columns",
    "segmentation_scores",
    "summarize_segmentation",
]

MONAI_MISSING = (
    "segmentation metrics need torch and MONAI, and {} is not installed: "
    "pip install 'covid19-images[monai]'"
)

FOREGROUND = "foreground"
"""The name of the union of every scored class (a column suffix: ``dice_foreground``)."""

Labels = Sequence[str] | Mapping[str, int | Sequence[int]]
"""Class names by label value (the first, label 0, is the background and is not scored), or
class name → the label value(s) it covers."""

Spacing = float | Sequence[float] | Sequence[Sequence[float]] | None
"""Pixel or voxel size: one number, one per axis, or one of those per image."""


def _classes(labels: Labels) -> dict[str, tuple[int, ...]]:
    if isinstance(labels, Mapping):
        classes = {
            str(name): (int(v),) if isinstance(v, int | np.integer) else tuple(int(x) for x in v)
            for name, v in labels.items()
        }
    elif isinstance(labels, str):
        raise ValueError("labels must be class names by label value, or a mapping, not a string")
    else:
        classes = {str(name): (value,) for value, name in enumerate(labels) if value > 0}
    if not classes:
        raise ValueError("no class to score: labels name only the background")
    empty = [name for name, values in classes.items() if not values]
    if empty:
        raise ValueError(f"classes without label values: {empty}")
    if FOREGROUND in classes:
        raise ValueError(f"{FOREGROUND!r} is reserved for the union of the classes")
    return classes


def _array(value: Any) -> np.ndarray[Any, Any]:
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"label maps must hold integer labels, got {array.dtype} (take the argmax of the "
            "logits first)"
        )
    return array


def _images(value: Any) -> list[np.ndarray[Any, Any]]:
    if isinstance(value, list | tuple):
        return [_array(v) for v in value]
    array = _array(value)
    if array.ndim not in (3, 4):
        raise ValueError(
            f"expected N label maps (N x H x W or N x D x H x W), got shape {array.shape}"
        )
    return list(array)


def _spacings(spacing: Spacing, n: int) -> list[Any]:
    if spacing is None or isinstance(spacing, int | float):
        return [spacing] * n
    items: list[Any] = list(spacing)
    if items and isinstance(items[0], Sequence):
        if len(items) != n:
            raise ValueError(f"{len(items)} spacings for {n} images")
        return [tuple(float(x) for x in item) for item in items]
    return [tuple(float(x) for x in items)] * n


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The Dice, IoU and HD columns of a :func:`segmentation_scores` frame, in their order.

    Example:
        >>> columns = ["uid", "dice_lesion", "hd95_lesion", "n_pred_lesion"]
        >>> metric_columns(pd.DataFrame(columns=columns))
        ['dice_lesion', 'hd95_lesion']
    """
    prefixes = ("dice_", "iou_", "hd")
    return [str(c) for c in frame.columns if str(c).startswith(prefixes)]


def segmentation_scores(
    pred: Any,
    target: Any,
    labels: Labels,
    *,
    spacing: Spacing = None,
    percentile: float = 95.0,
    foreground: bool | None = None,
    meta: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Dice, IoU and HD95 per image and class, with the module's empty-mask policy.

    Args:
        pred: predicted label maps, one per image: an ``N x H x W`` or ``N x D x H x W`` array
            or tensor of integer labels, or a list of 2-D or 3-D maps of any shapes.
        target: the reference label maps, the same shapes.
        labels: class names by label value (``["background", "lung"]``; label 0 is not
            scored), or a mapping of class names to label values
            (``{"lesion": 1}``, ``{"lesion": [3, 4, 5]}``: several values scored as one class).
        spacing: pixel/voxel size for HD (one number, one per axis, or one per image);
            ``None``: pixels.
        percentile: the Hausdorff percentile (95: HD95; 100: the Hausdorff distance).
        foreground: also score the union of the classes (``*_foreground``); default: when
            there is more than one class.
        meta: one row per image (``uid``, ``patient_id``, ``source``, ...), kept as the first
            columns.

    Returns:
        One row per image: ``meta``'s columns, then per class ``c`` (and the foreground)
        ``dice_c``, ``iou_c``, ``hd95_c`` (``hd<percentile>_c``), ``n_target_c`` and
        ``n_pred_c`` (pixels or voxels in each mask).

    Example:
        >>> import numpy as np
        >>> t = np.array([[[0, 1, 1, 2]]])  # one 1 x 4 image: lung 1, lesion 2
        >>> p = np.array([[[0, 1, 2, 2]]])
        >>> s = segmentation_scores(p, t, {"lung": 1, "lesion": 2})
        >>> s[["dice_lung", "dice_lesion", "dice_foreground"]].round(3).to_dict("records")
        [{'dice_lung': 0.667, 'dice_lesion': 0.667, 'dice_foreground': 1.0}]
    """
    try:
        import torch

        with warnings.catch_warnings():  # MONAI's import warns about torch APIs it probes
            warnings.simplefilter("ignore")
            from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou
    except ImportError as error:
        raise EvaluationError(MONAI_MISSING.format(error.name or "monai")) from error

    classes = _classes(labels)
    if foreground is None:
        foreground = len(classes) > 1
    if foreground:
        union = tuple(sorted({v for values in classes.values() for v in values}))
        classes = {**classes, FOREGROUND: union}
    preds, targets = _images(pred), _images(target)
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} reference maps")
    if meta is not None and len(meta) != len(preds):
        raise ValueError(f"meta has {len(meta)} rows for {len(preds)} images")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    spacings = _spacings(spacing, len(preds))
    hd_name = f"hd{percentile:g}"
    rows: list[dict[str, float]] = []
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        if p.shape != t.shape or p.ndim not in (2, 3):
            raise ValueError(
                f"image {i}: prediction {p.shape} and reference {t.shape} must be the same "
                "2-D or 3-D shape"
            )
        yp = torch.from_numpy(np.stack([np.isin(p, v) for v in classes.values()])[None])
        yt = torch.from_numpy(np.stack([np.isin(t, v) for v in classes.values()])[None])
        n_pred = yp.flatten(2).sum(-1)[0].tolist()
        n_target = yt.flatten(2).sum(-1)[0].tolist()
        dice = compute_dice(yp, yt, include_background=True, ignore_empty=False)[0].tolist()
        iou = compute_iou(yp, yt, include_background=True, ignore_empty=False)[0].tolist()
        both = [k for k in range(len(classes)) if n_pred[k] and n_target[k]]
        hd = [math.nan] * len(classes)
        if both:
            with warnings.catch_warnings():  # MONAI's own deprecation notices
                warnings.simplefilter("ignore", FutureWarning)
                distances = compute_hausdorff_distance(
                    yp[:, both].float(),
                    yt[:, both].float(),
                    include_background=True,
                    percentile=percentile,
                    spacing=spacings[i],
                )[0].tolist()
            for k, value in zip(both, distances, strict=True):
                hd[k] = float(value)
        row: dict[str, float] = {}
        for k, name in enumerate(classes):
            empty_p, empty_t = n_pred[k] == 0, n_target[k] == 0
            if empty_p and empty_t:
                dice[k], iou[k] = 1.0, 1.0
            elif empty_p or empty_t:
                dice[k], iou[k] = 0.0, 0.0
            row[f"dice_{name}"] = float(dice[k])
            row[f"iou_{name}"] = float(iou[k])
            row[f"{hd_name}_{name}"] = hd[k]
            row[f"n_target_{name}"] = int(n_target[k])
            row[f"n_pred_{name}"] = int(n_pred[k])
        rows.append(row)
    scores = pd.DataFrame.from_records(rows, index=pd.RangeIndex(len(rows)))
    if meta is None:
        return scores
    return pd.concat([meta.reset_index(drop=True), scores], axis=1)


def ct_lesion_scores(
    pred: Any,
    target: Any,
    *,
    lesion: int | Sequence[int] = 1,
    spacing: Spacing = None,
    percentile: float = 95.0,
    meta: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per CT volume, Dice, IoU and HD95 of the lesion label only (lungs are background).

    ``lesion`` is the lesion's label value(s): 1 in ``ct-lesion-seg``'s label maps, ``[3, 4, 5]``
    (lesion, ground glass, consolidation) in harmonised maps. Give ``spacing`` (the volumes'
    voxel sizes in mm, one per volume where they differ) for HD95 in millimetres. Columns:
    ``dice_lesion``, ``iou_lesion``, ``hd95_lesion``, ``n_target_lesion``, ``n_pred_lesion``.

    Example:
        >>> import numpy as np
        >>> t = np.zeros((1, 4, 8, 8), dtype=np.uint8)
        >>> t[0, 1:3, 2:6, 2:6] = 3  # lesion, in a harmonised map
        >>> t[0, 1:3, 0:2, 0:2] = 1  # a lung: not scored
        >>> float(ct_lesion_scores(t, t, lesion=[3, 4, 5])["dice_lesion"][0])
        1.0
    """
    return segmentation_scores(
        pred,
        target,
        {"lesion": lesion},
        spacing=spacing,
        percentile=percentile,
        foreground=False,
        meta=meta,
    )


def summarize_segmentation(
    scores: pd.DataFrame,
    *,
    unit: Literal["image", "patient"] = "image",
    metrics: Sequence[str] | None = None,
    by_source: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Mean scores with patient-bootstrap intervals, overall and per source.

    Args:
        scores: :func:`segmentation_scores`' frame with ``patient_id`` (and ``uid``,
            ``source``) columns from its ``meta``.
        unit: ``"image"``: the mean over images; ``"patient"``: each patient's images are
            averaged first (per source within a source's block), then the patients.
        metrics: the columns to average; default every Dice, IoU and HD column.
        by_source: also one block of rows per source.
        n_boot: bootstrap resamples (whole patients are resampled).
        seed: the resampling seed.
        level: the interval's coverage.

    Returns:
        :func:`~covid19_images.evaluation.summary.summarize`'s table (``source``, ``metric``,
        ``value``, ``low``, ``high``, ``n``, ``groups``, ``skipped``) and ``defined``: the rows
        (images or patients) where the metric is defined (HD95 is NaN where a mask is empty).
        Every mean leaves NaN out.

    Example:
        >>> f = pd.DataFrame({"patient_id": ["p1", "p1", "p2"], "source": ["a", "a", "b"],
        ...                   "dice_lesion": [0.8, 0.6, 1.0], "hd95_lesion": [2.0, 4.0, None]})
        >>> t = summarize_segmentation(f, unit="patient", n_boot=50)
        >>> t[["source", "metric", "value", "n", "defined"]]
          source       metric  value  n  defined
        0    all  dice_lesion   0.85  2        2
        1    all  hd95_lesion   3.00  2        1
        2      a  dice_lesion   0.70  1        1
        3      a  hd95_lesion   3.00  1        1
        4      b  dice_lesion   1.00  1        1
        5      b  hd95_lesion    NaN  1        0
    """
    columns = list(metrics) if metrics is not None else metric_columns(scores)
    if not columns:
        raise ValueError("no metric columns to summarise (dice_*, iou_*, hd*)")
    missing = [c for c in columns if c not in scores.columns]
    if missing:
        raise ValueError(f"scores have no columns {missing}")

    def means(frame: pd.DataFrame) -> dict[str, float]:
        return {column: nanmean(frame[column]) for column in columns}

    table = summarize(
        scores,
        means,
        unit=unit,
        mean_columns=columns,
        by_source=by_source,
        n_boot=n_boot,
        seed=seed,
        level=level,
    )
    scored = blocks(scores, unit=unit, mean_columns=columns, by_source=by_source)
    defined = {
        (source, column): int(block[column].notna().sum())
        for source, block in scored.items()
        for column in columns
    }
    table["defined"] = [
        defined[(s, m)] for s, m in zip(table["source"], table["metric"], strict=True)
    ]
    return table
