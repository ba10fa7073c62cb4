"""Tests of covid19_images.evaluation.metrics against independent oracles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from covid19_images.evaluation.metrics import (
    bootstrap_ci,
    bootstrap_cis,
    one_vs_rest,
    operating_point,
    per_patient,
)

CLASSES = ["normal", "pneumonia", "covid"]


def _predictions(n: int = 300, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"uid": [f"u{i}" for i in range(n)], "class": np.array(CLASSES)[labels]})
    for j, name in enumerate(CLASSES):
        frame[f"prob_{name}"] = probs[:, j]
    return frame


def test_one_vs_rest_matches_sklearn_auroc_and_boolean_rates() -> None:
    frame = _predictions()
    thresholds = {"normal": 0.5, "pneumonia": 0.3, "covid": 0.42}
    result = one_vs_rest(frame, CLASSES, thresholds)
    assert set(result) == set(CLASSES)
    for name in CLASSES:
        y = (frame["class"] == name).to_numpy()
        s = frame[f"prob_{name}"].to_numpy()
        pred = s >= thresholds[name]
        tp, fp = np.sum(pred & y), np.sum(pred & ~y)
        fn, tn = np.sum(~pred & y), np.sum(~pred & ~y)
        got = result[name]
        assert got["auroc"] == pytest.approx(roc_auc_score(y, s))
        assert got["sensitivity"] == pytest.approx(tp / (tp + fn))
        assert got["specificity"] == pytest.approx(tn / (tn + fp))
        assert got["ppv"] == pytest.approx(tp / (tp + fp))
        assert got["npv"] == pytest.approx(tn / (tn + fn))
        assert got["n_positive"] == y.sum()
        assert got["n_negative"] == (~y).sum()


def test_one_vs_rest_undefined_values_are_nan() -> None:
    frame = _predictions(30)
    frame["class"] = "normal"
    result = one_vs_rest(frame, CLASSES, {c: 2.0 for c in CLASSES})  # nothing called positive
    assert math.isnan(result["covid"]["auroc"])
    assert math.isnan(result["covid"]["sensitivity"])  # no covid row
    assert math.isnan(result["normal"]["ppv"])  # nothing predicted positive
    assert result["covid"]["specificity"] == 1.0


def test_one_vs_rest_refuses_missing_columns_and_unknown_classes() -> None:
    frame = _predictions(20)
    with pytest.raises(ValueError, match="prob_other"):
        one_vs_rest(
            frame.assign(**{"class": "normal"}), ["normal", "other"], {"normal": 0.5, "other": 0.5}
        )
    with pytest.raises(ValueError, match="not in"):
        one_vs_rest(frame, ["normal", "covid"], {"normal": 0.5, "covid": 0.5})


def test_operating_point_youden_is_argmax_of_j_on_sklearn_roc() -> None:
    frame = _predictions(400, seed=3)
    y = (frame["class"] == "covid").to_numpy()
    s = frame["prob_covid"].to_numpy()
    fpr, tpr, thr = roc_curve(y, s)
    expected = thr[np.argmax(tpr - fpr)]
    assert operating_point(y, s) == pytest.approx(expected)
    assert operating_point(y, s, "youden") == pytest.approx(expected)

    # J at the chosen threshold, from boolean arithmetic, is the best J over all cut points
    def j(t: float) -> float:
        pred = s >= t
        return float(np.mean(pred[y]) - np.mean(pred[~y]))

    assert j(operating_point(y, s)) == pytest.approx(max(j(t) for t in np.unique(s)))


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 1.0])
def test_operating_point_sensitivity_reaches_target(target: float) -> None:
    frame = _predictions(400, seed=4)
    y = (frame["class"] == "pneumonia").to_numpy()
    s = frame["prob_pneumonia"].to_numpy()
    t = operating_point(y, s, f"sensitivity:{target}")
    assert np.mean(s[y] >= t) >= target
    # and it is the highest such threshold: the next score above it misses the target
    higher = np.unique(s[s > t])
    if higher.size:
        assert np.mean(s[y] >= higher[0]) < target


def test_operating_point_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="both"):
        operating_point([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="unknown rule"):
        operating_point([0, 1], [0.2, 0.3], "f1")
    with pytest.raises(ValueError, match="target"):
        operating_point([0, 1], [0.2, 0.3], "sensitivity:1.5")


def _small() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uid": ["a", "b", "c", "d", "e", "f"],
            "patient_id": ["p1", "p1", "p2", None, "p1", ""],
            "class": ["normal", "covid", "pneumonia", "normal", "normal", "covid"],
            "prob_normal": [0.6, 0.2, 0.1, 0.7, 0.4, 0.3],
            "prob_pneumonia": [0.3, 0.2, 0.8, 0.2, 0.1, 0.1],
            "prob_covid": [0.1, 0.6, 0.1, 0.1, 0.5, 0.6],
        }
    )


def test_per_patient_mean_hand_computed() -> None:
    out = per_patient(_small(), "mean", severity=CLASSES)
    assert len(out) == 4
    assert out["patient_id"].tolist()[:2] == ["p1", "p2"]
    assert out["patient_id"].isna().tolist() == [False, False, True, True]
    assert out["uid"].tolist()[2:] == ["d", "f"]
    assert out["uid"].isna().tolist() == [True, True, False, False]
    assert out["n_images"].tolist() == [3, 1, 1, 1]
    # p1: images a, b, e disagree (normal, covid, normal): covid is the most severe
    assert out["class"].tolist() == ["covid", "pneumonia", "normal", "covid"]
    assert out["prob_normal"].tolist() == pytest.approx([1.2 / 3, 0.1, 0.7, 0.3])
    assert out["prob_pneumonia"].tolist() == pytest.approx([0.6 / 3, 0.8, 0.2, 0.1])
    assert out["prob_covid"].tolist() == pytest.approx([1.2 / 3, 0.1, 0.1, 0.6])


def test_per_patient_max_and_severity_order() -> None:
    out = per_patient(_small(), "max", severity=["covid", "pneumonia", "normal"])
    assert out["prob_normal"].tolist() == pytest.approx([0.6, 0.1, 0.7, 0.3])
    assert out["prob_covid"].tolist() == pytest.approx([0.6, 0.1, 0.1, 0.6])
    assert out["class"].tolist()[0] == "normal"  # normal ranked most severe here
    # default order: the prob_* columns' order (normal, pneumonia, covid)
    assert per_patient(_small(), "max")["class"].tolist()[0] == "covid"
    with pytest.raises(ValueError, match="severity"):
        per_patient(_small(), severity=["normal"])
    with pytest.raises(ValueError, match="how"):
        per_patient(_small(), "median")  # type: ignore[arg-type]


def _auroc(frame: pd.DataFrame) -> float:
    return float(roc_auc_score(frame["class"] == "covid", frame["prob_covid"]))


def test_bootstrap_skips_undefined_resamples_and_reports_them() -> None:
    frame = pd.DataFrame(
        {
            "uid": list("abcdef"),
            "patient_id": ["p1", "p1", "p2", "p2", "p3", "p3"],
            "class": ["covid", "covid", "normal", "normal", "normal", "normal"],
            "prob_covid": [0.9, 0.4, 0.5, 0.2, 0.1, 0.3],
        }
    )
    ci = bootstrap_ci(frame, _auroc, n=300, seed=1)
    point, low, high = ci
    assert point == pytest.approx(_auroc(frame))
    assert low <= point <= high
    # P(no covid patient drawn) = (2/3)^3 ~ 0.30, P(only covid) = (1/3)^3 ~ 0.04
    assert 0.2 * 300 < ci.skipped < 0.45 * 300
    assert ci.n == 300
    again = bootstrap_ci(frame, _auroc, n=300, seed=1)
    assert again == ci


def test_bootstrap_rows_without_patient_are_own_groups() -> None:
    # no patient ids at all: the patient bootstrap is the row bootstrap
    frame = _predictions(80, seed=5).assign(patient_id=None)
    by_patient = bootstrap_ci(frame, _auroc, n=100, seed=2)
    by_row = bootstrap_ci(frame, _auroc, groups=None, n=100, seed=2)
    assert tuple(by_patient) == pytest.approx(tuple(by_row))


def _fast_auroc(frame: pd.DataFrame) -> float:
    """AUROC as the Mann-Whitney statistic (an oracle independent of sklearn, and fast)."""
    y = frame["class"].to_numpy() == "covid"
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(frame["prob_covid"].to_numpy())
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def test_patient_bootstrap_covers_true_auroc_and_image_bootstrap_does_not() -> None:
    """Images of a patient share a strong patient effect: only the cluster bootstrap is honest.

    score = mu * covid + u_patient + e_image, u ~ N(0, su^2), e ~ N(0, se^2); each patient has
    one label. The image-level AUROC is P(score of a covid image > score of a normal image) =
    Phi(mu / sqrt(2 (su^2 + se^2))), which the sample AUROC estimates without bias.
    """
    mu, su, se = 1.5, 1.0, 0.3
    patients, per = 60, 5
    true_auc = norm.cdf(mu / math.sqrt(2 * (su**2 + se**2)))
    rng = np.random.default_rng(20240601)
    covid = np.repeat(np.arange(patients) < patients // 2, per)
    patient_id = np.repeat([f"p{i}" for i in range(patients)], per)
    covered = {"patient_id": 0, None: 0}
    datasets = 200
    for d in range(datasets):
        u = np.repeat(rng.normal(0.0, su, patients), per)
        score = mu * covid + u + rng.normal(0.0, se, patients * per)
        frame = pd.DataFrame(
            {
                "patient_id": patient_id,
                "uid": np.arange(patients * per).astype(str),
                "class": np.where(covid, "covid", "normal"),
                "prob_covid": score,
            }
        )
        for groups in covered:
            ci = bootstrap_ci(frame, _fast_auroc, groups=groups, n=200, seed=d)  # type: ignore[arg-type]
            covered[groups] += ci.low <= true_auc <= ci.high
    patient_cov = covered["patient_id"] / datasets
    image_cov = covered[None] / datasets
    assert 0.88 <= patient_cov <= 0.99, (patient_cov, image_cov)
    assert image_cov <= patient_cov - 0.08 or image_cov < 0.85, (patient_cov, image_cov)


def test_bootstrap_cis_equal_bootstrap_ci_metric_by_metric() -> None:
    frame = _predictions(120, seed=8)
    frame["patient_id"] = [f"p{i // 3}" if i % 5 else None for i in range(len(frame))]
    frame.loc[frame.index[:40], "class"] = "normal"  # some resamples lack covid: skipped

    def auroc(name: str, f: pd.DataFrame) -> float:
        return float(roc_auc_score(f["class"] == name, f[f"prob_{name}"]))

    def mean_covid(f: pd.DataFrame) -> float:
        return float(f["prob_covid"].mean())

    fns = {"normal": lambda f: auroc("normal", f), "covid": lambda f: auroc("covid", f)}
    fns["mean"] = mean_covid
    together = bootstrap_cis(frame, lambda f: {k: fn(f) for k, fn in fns.items()}, n=60, seed=3)
    assert sorted(together) == ["covid", "mean", "normal"]
    for name, fn in fns.items():
        alone = bootstrap_ci(frame, fn, n=60, seed=3)
        assert together[name] == alone


def test_bootstrap_cis_counts_each_metric_undefined_draws() -> None:
    frame = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "x": [1.0, 2.0, 3.0, 4.0]})
    cis = bootstrap_cis(
        frame,
        lambda f: {"always": 1.0, "some": math.nan if f["x"].min() > 1 else 0.0, "never": math.nan},
        n=200,
    )
    assert cis["always"].skipped == 0 and cis["always"].low == cis["always"].high == 1.0
    # a resample lacks patient "a" with probability (3/4)^4
    assert 0 < cis["some"].skipped < 200
    assert abs(cis["some"].skipped / 200 - 0.75**4) < 0.1
    assert math.isnan(cis["never"].point) and math.isnan(cis["never"].low)
