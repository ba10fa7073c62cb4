"""The expected calibration error against torchmetrics' MulticlassCalibrationError."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from covid19_images.evaluation.calibration import (
    expected_calibration_error,
    reliability_bins,
    top_label,
)


def _frame(n: int, k: int, seed: int, exact_ones: int = 0) -> tuple[pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    classes = [f"c{j}" for j in range(k)]
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) * 2.0 + 1.2 * np.eye(k)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[:exact_ones] = np.eye(k)[rng.integers(0, k, size=exact_ones)]  # confidence exactly 1
    frame = pd.DataFrame({"class": np.array(classes)[labels]})
    for j, name in enumerate(classes):
        frame[f"prob_{name}"] = probs[:, j]
    return frame, classes


def _torchmetrics_ece(frame: pd.DataFrame, classes: list[str], n_bins: int = 15) -> float:
    probs = torch.tensor(frame[[f"prob_{c}" for c in classes]].to_numpy())
    target = torch.tensor(frame["class"].map({c: i for i, c in enumerate(classes)}).to_numpy())
    metric = MulticlassCalibrationError(num_classes=len(classes), n_bins=n_bins, norm="l1")
    return float(metric(probs, target))


@pytest.mark.parametrize(
    ("n", "k", "seed", "ones"), [(500, 3, 0, 0), (300, 3, 1, 25), (200, 2, 2, 10), (50, 4, 3, 0)]
)
def test_ece_equals_torchmetrics(n: int, k: int, seed: int, ones: int) -> None:
    frame, classes = _frame(n, k, seed, ones)
    expected = _torchmetrics_ece(frame, classes)
    assert expected > 0.01  # not a degenerate comparison
    assert expected_calibration_error(frame, classes) == pytest.approx(expected, abs=1e-6)


def test_ece_with_other_bin_counts_equals_torchmetrics() -> None:
    frame, classes = _frame(400, 3, 5, 5)
    for bins in (1, 5, 10, 30):
        assert expected_calibration_error(frame, classes, bins) == pytest.approx(
            _torchmetrics_ece(frame, classes, bins), abs=1e-6
        )


def test_reliability_bins_partition_the_rows() -> None:
    frame, classes = _frame(300, 3, 7, 12)
    confidence, correct = top_label(frame, classes)
    table = reliability_bins(confidence, correct)
    assert len(table) == 16
    assert table["count"].sum() == 300
    assert table["count"].iloc[-1] == 12  # the exactly-1 confidences
    # every non-empty bin's mean confidence lies within its edges
    used = table[table["count"] > 0]
    assert ((used["confidence"] >= used["lower"]) & (used["confidence"] <= used["upper"])).all()
    # and the accuracy weighted by the counts is the overall accuracy
    assert (used["accuracy"] * used["count"]).sum() / 300 == pytest.approx(correct.mean())


def test_perfect_calibration_has_zero_ece() -> None:
    frame = pd.DataFrame(
        {"class": ["a", "a", "b", "b"], "prob_a": [1.0, 1.0, 0.0, 0.0], "prob_b": [0, 0, 1.0, 1.0]}
    )
    assert expected_calibration_error(frame, ["a", "b"]) == 0.0
