"""Severity regression metrics against scikit-learn and SciPy, with patient-bootstrap intervals."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, r2_score

from covid19_images.evaluation.metrics import bootstrap_ci
from covid19_images.evaluation.regression import regression_scores, summarize_regression


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 40
    extent = rng.integers(0, 9, n).astype(float)  # geographic extent, 0-8
    opacity = rng.integers(0, 7, n).astype(float)  # opacity, 0-6
    return pd.DataFrame(
        {
            "uid": [f"img{i}" for i in range(n)],
            "patient_id": [f"p{i // 3}" if i < 30 else None for i in range(n)],
            "source": ["a" if i % 4 else "b" for i in range(n)],
            "extent": extent,
            "opacity": opacity,
            "pred_extent": extent + rng.normal(0.0, 1.2, n),
            "pred_opacity": 0.5 * opacity + rng.normal(1.0, 1.0, n),
        }
    )


def test_scores_equal_sklearn_and_scipy() -> None:
    frame = _frame()
    ours = regression_scores(frame["extent"], frame["pred_extent"])
    assert ours["mae"] == mean_absolute_error(frame["extent"], frame["pred_extent"])
    assert ours["r2"] == r2_score(frame["extent"], frame["pred_extent"])
    assert ours["pearson_r"] == pytest.approx(
        stats.pearsonr(frame["extent"], frame["pred_extent"]).statistic, abs=1e-15
    )
    assert 0.5 < ours["r2"] < ours["pearson_r"] ** 2 + 0.2


def test_missing_pairs_and_undefined_values() -> None:
    y = [1.0, float("nan"), 3.0, 5.0]
    p = [1.5, 2.0, float("nan"), 4.0]
    assert regression_scores(y, p)["mae"] == pytest.approx(0.75)  # two complete pairs
    constant = regression_scores([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert constant["mae"] == pytest.approx(2 / 3)
    assert math.isnan(constant["r2"]) and math.isnan(constant["pearson_r"])
    single = regression_scores([2.0], [3.0])
    assert single["mae"] == 1.0 and math.isnan(single["r2"])
    with pytest.raises(ValueError, match="3 targets for 2 predictions"):
        regression_scores([1.0, 2.0, 3.0], [1.0, 2.0])


def test_summary_uses_patient_bootstrap_per_source() -> None:
    frame = _frame()
    table = summarize_regression(frame, ["extent", "opacity"], n_boot=300, seed=4)
    assert set(table["metric"]) == {
        f"{m}_{t}" for m in ("mae", "r2", "pearson_r") for t in ("extent", "opacity")
    }
    row = table[(table["source"] == "all") & (table["metric"] == "r2_opacity")].iloc[0]
    assert row["value"] == r2_score(frame["opacity"], frame["pred_opacity"])
    assert row["groups"] == 20  # ten patients of three images, ten images without a patient
    oracle = bootstrap_ci(frame, lambda f: r2_score(f["opacity"], f["pred_opacity"]), n=300, seed=4)
    assert (row["low"], row["high"]) == pytest.approx((oracle.low, oracle.high), abs=1e-12)
    b = table[(table["source"] == "b") & (table["metric"] == "mae_extent")].iloc[0]
    rows_b = frame[frame["source"] == "b"]
    assert b["value"] == mean_absolute_error(rows_b["extent"], rows_b["pred_extent"])
    assert b["n"] == 10

    patients = summarize_regression(frame, "extent", unit="patient", by_source=False, n_boot=50)
    keys = frame["patient_id"].fillna(frame["uid"])
    means = frame.groupby(keys)[["extent", "pred_extent"]].mean()
    mae = patients.set_index("metric").loc["mae_extent"]
    assert mae["value"] == pytest.approx(mean_absolute_error(means["extent"], means["pred_extent"]))
    assert mae["n"] == 20
    with pytest.raises(ValueError, match="no columns"):
        summarize_regression(frame, "severity")


def test_evaluation_imports_no_torch_monai_or_pycocotools() -> None:
    code = textwrap.dedent(
        """
        import sys
        import covid19_images.evaluation
        import covid19_images.evaluation.segmentation, covid19_images.evaluation.detection
        import covid19_images.models
        heavy = ("torch", "monai", "pycocotools", "torchvision", "timm")
        print(sorted(m for m in heavy if m in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_no_resamples_gives_the_values_without_intervals() -> None:
    frame = _frame()
    table = summarize_regression(frame, ["extent"], n_boot=0)
    overall = table[table["source"] == "all"].set_index("metric")
    rows = frame.dropna(subset=["extent", "pred_extent"])
    assert overall.loc["mae_extent", "value"] == pytest.approx(
        mean_absolute_error(rows["extent"], rows["pred_extent"])
    )
    assert overall[["low", "high"]].isna().all().all()
    assert (overall["skipped"] == 0).all()
