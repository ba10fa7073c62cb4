"""Calibration of top-label confidence: reliability bins and the expected calibration error.

The **expected calibration error** (ECE) here is the one of Guo et al. (2017) and of
``torchmetrics.classification.MulticlassCalibrationError(n_bins=15, norm="l1")``:

- each row's *confidence* is its largest class probability and it is *correct* when that class
  (the argmax, the first one on a tie) is the row's true class;
- the confidences fall into ``n_bins`` (15) equal-width bins ``[k/15, (k+1)/15)``, closed on the
  left; a confidence of exactly 1 falls into a last bin of its own (``[1, 1]``), as in
  torchmetrics' ``torch.bucketize(..., right=True)`` binning;
- ECE = sum over bins of ``(n_bin / n) * |accuracy_bin - mean confidence_bin|``, the L1 gap
  weighted by the share of rows in the bin (empty bins weigh nothing).

0 is perfect calibration; the largest possible value is 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ECE_BINS", "expected_calibration_error", "reliability_bins", "top_label"]

ECE_BINS = 15
"""Bins of the reported ECE (torchmetrics' and most papers' default)."""


def top_label(
    frame: pd.DataFrame, classes: Sequence[str]
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.bool_]]]:
    """Each row's top-label confidence and whether its argmax class is its ``class``.

    The probabilities are the ``prob_<class>`` columns in the order of ``classes``; a tie goes
    to the first of them.

    Example:
        >>> f = pd.DataFrame({"class": ["a", "b"], "prob_a": [0.7, 0.6], "prob_b": [0.3, 0.4]})
        >>> confidence, correct = top_label(f, ["a", "b"])
        >>> confidence.tolist(), correct.tolist()
        ([0.7, 0.6], [True, False])
    """
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    if len(probs) == 0:
        return np.empty(0), np.empty(0, dtype=bool)
    best = probs.argmax(axis=1)
    correct = np.asarray(classes, dtype=object)[best] == frame["class"].to_numpy(dtype=object)
    return probs.max(axis=1), np.asarray(correct, dtype=bool)


def _bin_index(confidence: np.ndarray[Any, Any], n_bins: int) -> np.ndarray[Any, Any]:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin k holds edges[k] <= c < edges[k+1]; c == 1 lands in bin n_bins, a bin of its own
    index = np.searchsorted(edges, confidence, side="right") - 1
    return np.clip(index, 0, n_bins)


def reliability_bins(confidence: Any, correct: Any, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """The reliability table: one row per bin, the ``n_bins`` equal-width ones and ``[1, 1]``.

    Columns: ``lower``, ``upper`` (the bin's edges), ``count``, ``confidence`` (mean confidence
    in the bin), ``accuracy`` (share correct in the bin); the last two are NaN in an empty bin.

    Example:
        >>> table = reliability_bins([0.95, 0.97, 0.5, 1.0], [True, False, True, True], n_bins=2)
        >>> table["count"].tolist(), table["accuracy"].round(3).tolist()
        ([0, 3, 1], [nan, 0.667, 1.0])
    """
    c = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if c.shape != ok.shape or c.ndim != 1:
        raise ValueError(f"confidence and correct differ in shape: {c.shape} vs {ok.shape}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    index = _bin_index(c, n_bins)
    count = np.bincount(index, minlength=n_bins + 1).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=c, minlength=n_bins + 1) / count
        accuracy = np.bincount(index, weights=ok, minlength=n_bins + 1) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame(
        {
            "lower": np.append(edges[:-1], 1.0),
            "upper": np.append(edges[1:], 1.0),
            "count": count,
            "confidence": mean_confidence,
            "accuracy": accuracy,
        }
    )


def expected_calibration_error(
    frame: pd.DataFrame, classes: Sequence[str], n_bins: int = ECE_BINS
) -> float:
    """The ECE of a predictions frame (module docstring): top label, ``n_bins`` bins, L1.

    NaN for an empty frame.

    Example:
        >>> f = pd.DataFrame({"class": ["a", "a", "b", "b"],
        ...                   "prob_a": [0.9, 0.8, 0.3, 0.6], "prob_b": [0.1, 0.2, 0.7, 0.4]})
        >>> round(expected_calibration_error(f, ["a", "b"]), 4)
        0.3
    """
    confidence, correct = top_label(frame, classes)
    if len(confidence) == 0:
        return float("nan")
    table = reliability_bins(confidence, correct, n_bins)
    used = table["count"].to_numpy() > 0
    gap = np.abs(table["accuracy"].to_numpy()[used] - table["confidence"].to_numpy()[used])
    weight = table["count"].to_numpy()[used] / len(confidence)
    return float(np.sum(weight * gap))
