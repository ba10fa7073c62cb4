"""Regression metrics for severity scores: MAE, R² and Pearson r, with patient-bootstrap intervals.

:func:`regression_scores` gives scikit-learn's mean absolute error and R² and SciPy's Pearson
correlation of one score; :func:`summarize_regression` scores every target column of a frame of
predictions, per image or per patient, overall and per source, with patient-bootstrap
intervals. Rows where the target or the prediction is missing are left out of that target. No
torch.

R² is scikit-learn's with ``force_finite=False``: on rows whose targets are all equal it is
undefined (NaN), not scikit-learn's default of 0 or 1, so a bootstrap resample of one severity
grade is skipped rather than scored. Pearson r is NaN where either side is constant.

Example:
    >>> scores = regression_scores([0.0, 2.0, 4.0, 6.0], [1.0, 2.0, 3.0, 7.0])
    >>> {k: round(v, 3) for k, v in scores.items()}
    {'mae': 0.75, 'r2': 0.85, 'pearson_r': 0.933}
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import mean_absolute_error, r2_score

from covid19_images.evaluation.summary import summarize

__all__ = ["PREDICTION_PREFIX", "regression_scores", "summarize_regression"]

PREDICTION_PREFIX = "pred_"
"""The default prediction column of a target column: ``pred_<target>``."""


def regression_scores(y_true: Any, y_pred: Any) -> dict[str, float]:
    """``mae``, ``r2`` and ``pearson_r`` of predictions against targets (NaN pairs left out).

    MAE is :func:`sklearn.metrics.mean_absolute_error`, R² :func:`sklearn.metrics.r2_score`
    (``force_finite=False``: NaN on constant targets), Pearson r :func:`scipy.stats.pearsonr`.
    A value undefined on these rows (fewer than two pairs, a constant side) is NaN.

    Example:
        >>> regression_scores([1.0, 1.0], [0.5, 1.5])
        {'mae': 0.5, 'r2': nan, 'pearson_r': nan}
    """
    true = np.asarray(y_true, dtype=float).reshape(-1)
    pred = np.asarray(y_pred, dtype=float).reshape(-1)
    if true.shape != pred.shape:
        raise ValueError(f"{true.size} targets for {pred.size} predictions")
    keep = ~(np.isnan(true) | np.isnan(pred))
    true, pred = true[keep], pred[keep]
    if true.size == 0:
        return {"mae": math.nan, "r2": math.nan, "pearson_r": math.nan}
    mae = float(mean_absolute_error(true, pred))
    r2 = pearson = math.nan
    if true.size >= 2:
        with warnings.catch_warnings():  # constant input: scipy and sklearn warn, we say NaN
            warnings.simplefilter("ignore")
            r2 = float(r2_score(true, pred, force_finite=False))
            if np.ptp(true) > 0 and np.ptp(pred) > 0:
                pearson = float(stats.pearsonr(true, pred).statistic)
    return {
        "mae": mae,
        "r2": r2 if math.isfinite(r2) else math.nan,
        "pearson_r": pearson,
    }


def summarize_regression(
    frame: pd.DataFrame,
    targets: str | Sequence[str],
    predictions: str | Sequence[str] | None = None,
    *,
    unit: Literal["image", "patient"] = "image",
    by_source: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """MAE, R² and Pearson r of every target, with patient-bootstrap intervals.

    Args:
        frame: one row per image: the target and prediction columns, ``patient_id`` (and
            ``uid``, ``source``).
        targets: the target column(s), e.g. ``"geographic_extent"``.
        predictions: the prediction column of each target; default ``pred_<target>``.
        unit: ``"image"``, or ``"patient"``: targets and predictions averaged over each
            patient's images first.
        by_source: also one block of rows per source.
        n_boot: bootstrap resamples (whole patients are resampled).
        seed: the resampling seed.
        level: the interval's coverage.

    Returns:
        :func:`~covid19_images.evaluation.summary.summarize`'s table with metrics
        ``mae_<target>``, ``r2_<target>`` and ``pearson_r_<target>``.

    Example:
        >>> f = pd.DataFrame({"patient_id": ["p", "q", "r", "s"], "extent": [0.0, 2.0, 4.0, 6.0],
        ...                   "pred_extent": [1.0, 2.0, 3.0, 7.0]})
        >>> t = summarize_regression(f, "extent", n_boot=50)
        >>> t[["metric", "value", "n"]].round(3)
                     metric  value  n
        0        mae_extent  0.750  4
        1         r2_extent  0.850  4
        2  pearson_r_extent  0.933  4
    """
    names = [targets] if isinstance(targets, str) else list(targets)
    if predictions is None:
        preds = [PREDICTION_PREFIX + name for name in names]
    else:
        preds = [predictions] if isinstance(predictions, str) else list(predictions)
    if len(preds) != len(names):
        raise ValueError(f"{len(preds)} prediction columns for {len(names)} targets")
    missing = [c for c in [*names, *preds] if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame has no columns {missing}")

    def metrics(rows: pd.DataFrame) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pred in zip(names, preds, strict=True):
            for key, value in regression_scores(rows[name], rows[pred]).items():
                out[f"{key}_{name}"] = value
        return out

    return summarize(
        frame,
        metrics,
        unit=unit,
        mean_columns=[*names, *preds],
        by_source=by_source,
        n_boot=n_boot,
        seed=seed,
        level=level,
    )
