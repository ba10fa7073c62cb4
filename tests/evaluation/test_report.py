"""evaluate_predictions against scikit-learn, torchmetrics and hand aggregation with pandas."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)
from torchmetrics.classification import MulticlassCalibrationError

from covid19_images import RESEARCH_USE_NOTICE
from covid19_images.errors import Covid19ImagesError, EvaluationError
from covid19_images.evaluation import (
    Overlap,
    evaluate_predictions,
    headline,
    render_report,
    summary_row,
)
from covid19_images.evaluation.metrics import bootstrap_ci

CLASSES = ["covid19", "normal", "pneumonia"]
SEVERITY = ["normal", "pneumonia", "covid19"]
N_BOOT = 30


def _predictions(seed: int = 0) -> pd.DataFrame:
    """Val and test rows of four sources: 'clinic' (patients with 1-3 images, every class),
    'kaggle' (no patient ids), 'mono' (covid19 only) and 'tiny' (two classes, 4 patients)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []

    def add(split: str, source: str, patient: str | None, label: int, images: int) -> None:
        effect = rng.normal(size=3) * 0.8  # a patient effect shared by its images
        for _ in range(images):
            logits = rng.normal(size=3) + effect + 1.6 * np.eye(3)[label]
            rows.append(
                {
                    "uid": f"{source}-{len(rows)}",
                    "split": split,
                    "source": source,
                    "patient_id": patient,
                    "class": CLASSES[label],
                    "logits": logits,
                }
            )

    for split, scale in (("val", 1), ("test", 2)):
        for p in range(18 * scale):
            add(split, "clinic", f"clinic:{split}{p}", p % 3, 1 + p % 3)
        for _ in range(20 * scale):
            add(split, "kaggle", None, int(rng.integers(0, 3)), 1)
        for p in range(3 * scale):
            add(split, "mono", f"mono:{split}{p}", 0, 2)
        for p in range(4):
            add(split, "tiny", f"tiny:{split}{p}", 1 + p % 2, 1)
    # one test patient whose images disagree (covid19, then normal): covid19 is the most severe
    add("test", "clinic", "clinic:mixed", 0, 1)
    add("test", "clinic", "clinic:mixed", 1, 2)
    logits = np.stack([r.pop("logits") for r in rows])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = pd.DataFrame(rows)
    for j, name in enumerate(CLASSES):
        frame[f"prob_{name}"] = probs[:, j]
    frame.loc[0, "prob_covid19"] = 0.0  # a probability at a bin edge is fine
    frame[[f"prob_{c}" for c in CLASSES]] = frame[[f"prob_{c}" for c in CLASSES]].div(
        frame[[f"prob_{c}" for c in CLASSES]].sum(axis=1), axis=0
    )
    return frame


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict[str, Any], Path]:
    frame = _predictions()
    out = tmp_path_factory.mktemp("run")
    metrics = evaluate_predictions(
        frame,
        classes=CLASSES,
        out=out,
        split="test",
        title="resnet18 on synthetic",
        facts={"model": "resnet18", "epochs": 3, "lock sha256": "ab|cd"},
        sections=["## Probes\n\nfirst extra", "## Grad-CAM\n\nsecond extra"],
        n_boot=N_BOOT,
        seed=0,
        severity=SEVERITY,
        external_overlap=Overlap(copies=("x", "y"), same_patient=("z",), near="pixels"),
    )
    return frame, metrics, out


def _labels(frame: pd.DataFrame) -> np.ndarray:
    return frame["class"].to_numpy(dtype=object)


def _argmax(frame: pd.DataFrame) -> np.ndarray:
    probs = frame[[f"prob_{c}" for c in CLASSES]].to_numpy()
    return np.array(CLASSES, dtype=object)[probs.argmax(axis=1)]


def _by_patient(frame: pd.DataFrame) -> pd.DataFrame:
    """Hand aggregation: a patient's mean probabilities and its most severe class."""
    key = frame["patient_id"].where(frame["patient_id"].notna(), "image:" + frame["uid"])
    rank = {c: i for i, c in enumerate(SEVERITY)}
    grouped = frame.groupby(key, sort=False)
    out = grouped[[f"prob_{c}" for c in CLASSES]].mean()
    out["class"] = grouped["class"].agg(lambda s: max(s, key=rank.__getitem__))
    return out.reset_index(drop=True)


def _youden(frame: pd.DataFrame, name: str) -> float:
    y = (frame["class"] == name).to_numpy()
    fpr, tpr, thr = roc_curve(y, frame[f"prob_{name}"].to_numpy())
    return float(thr[np.argmax(tpr - fpr)])


def _ece(frame: pd.DataFrame) -> float:
    probs = torch.tensor(frame[[f"prob_{c}" for c in CLASSES]].to_numpy())
    target = torch.tensor(frame["class"].map(CLASSES.index).to_numpy())
    return float(MulticlassCalibrationError(num_classes=3, n_bins=15, norm="l1")(probs, target))


def test_image_level_equals_sklearn_and_torchmetrics(run: Any) -> None:
    frame, metrics, _ = run
    test = frame[frame["split"] == "test"]
    m = metrics["image"]
    for name in CLASSES:
        y = (test["class"] == name).to_numpy()
        assert m["classes"][name]["auroc"]["value"] == pytest.approx(
            roc_auc_score(y, test[f"prob_{name}"])
        )
    assert m["balanced_accuracy"]["value"] == pytest.approx(
        balanced_accuracy_score(_labels(test), _argmax(test))
    )
    expected = confusion_matrix(_labels(test), _argmax(test), labels=CLASSES)
    assert m["confusion"]["counts"] == expected.tolist()
    assert np.allclose(m["confusion"]["normalized"], expected / expected.sum(axis=1, keepdims=True))
    assert m["ece"]["value"] == pytest.approx(_ece(test), abs=1e-6)
    assert m["n_images"] == len(test)
    assert m["n_patients"] == test["patient_id"].nunique()
    assert m["n_without_patient"] == test["patient_id"].isna().sum()


def test_operating_point_comes_from_val_and_rates_from_test(run: Any) -> None:
    frame, metrics, _ = run
    val, test = frame[frame["split"] == "val"], frame[frame["split"] == "test"]
    for name in CLASSES:
        point = metrics["image"]["operating_point"]["classes"][name]
        assert point["source"] == "val"
        assert point["threshold"] == pytest.approx(_youden(val, name))
        called = test[f"prob_{name}"].to_numpy() >= point["threshold"]
        y = (test["class"] == name).to_numpy()
        entry = metrics["image"]["classes"][name]
        assert entry["sensitivity"]["value"] == pytest.approx(called[y].mean())
        assert entry["specificity"]["value"] == pytest.approx((~called[~y]).mean())
        assert entry["ppv"]["value"] == pytest.approx(y[called].mean())
        assert entry["npv"]["value"] == pytest.approx((~y[~called]).mean())


def test_perturbing_test_labels_leaves_the_operating_point(run: Any) -> None:
    frame, metrics, _ = run

    def thresholds(f: pd.DataFrame) -> dict[str, dict[str, float]]:
        m = evaluate_predictions(f, classes=CLASSES, n_boot=0, severity=SEVERITY)
        return {
            lvl: {c: p["threshold"] for c, p in m[lvl]["operating_point"]["classes"].items()}
            for lvl in ("image", "patient")
        }

    base = thresholds(frame)
    assert base["image"] == {
        c: p["threshold"] for c, p in metrics["image"]["operating_point"]["classes"].items()
    }
    test = frame["split"] == "test"
    shuffled = frame.copy()
    rng = np.random.default_rng(5)
    shuffled.loc[test, "class"] = rng.permutation(frame.loc[test, "class"].to_numpy())
    assert thresholds(shuffled) == base
    # the same perturbation of the validation labels does move it (the check can fail)
    val = frame["split"] == "val"
    moved = frame.copy()
    moved.loc[val, "class"] = rng.permutation(frame.loc[val, "class"].to_numpy())
    assert thresholds(moved) != base


def test_patient_level_equals_hand_aggregation(run: Any) -> None:
    frame, metrics, _ = run
    val = _by_patient(frame[frame["split"] == "val"])
    test = _by_patient(frame[frame["split"] == "test"])
    m = metrics["patient"]
    assert m["n_rows"] == len(test)
    assert m["n_mixed_class_patients"] == 1
    for name in CLASSES:
        y = (test["class"] == name).to_numpy()
        entry = m["classes"][name]
        assert entry["auroc"]["value"] == pytest.approx(roc_auc_score(y, test[f"prob_{name}"]))
        threshold = m["operating_point"]["classes"][name]["threshold"]
        assert threshold == pytest.approx(_youden(val, name))
        called = test[f"prob_{name}"].to_numpy() >= threshold
        assert entry["sensitivity"]["value"] == pytest.approx(called[y].mean())
        assert entry["specificity"]["value"] == pytest.approx((~called[~y]).mean())
    assert m["balanced_accuracy"]["value"] == pytest.approx(
        balanced_accuracy_score(_labels(test), _argmax(test))
    )
    assert m["confusion"]["counts"] == (
        confusion_matrix(_labels(test), _argmax(test), labels=CLASSES).tolist()
    )
    assert m["ece"]["value"] == pytest.approx(_ece(test), abs=1e-6)


def test_intervals_are_the_patient_bootstrap(run: Any) -> None:
    frame, metrics, _ = run
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    ci = bootstrap_ci(
        test,
        lambda f: roc_auc_score(f["class"] == "normal", f["prob_normal"]),
        n=N_BOOT,
        seed=0,
    )
    got = metrics["image"]["classes"]["normal"]["auroc"]
    assert (got["value"], got["low"], got["high"], got["skipped"]) == pytest.approx(
        (ci.point, ci.low, ci.high, ci.skipped)
    )
    for lvl in ("image", "patient"):
        m = metrics[lvl]
        entries = [m["balanced_accuracy"], m["ece"]]
        entries += [m["classes"][c][k] for c in CLASSES for k in ("auroc", "sensitivity")]
        for e in entries:
            assert e["low"] <= e["value"] <= e["high"] or math.isclose(e["low"], e["high"])
            assert 0 <= e["skipped"] < N_BOOT
    assert metrics["bootstrap"] == {"n": N_BOOT, "seed": 0, "level": 0.95, "unit": "patient"}


def test_per_source_table(run: Any) -> None:
    frame, metrics, _ = run
    test = frame[frame["split"] == "test"]
    rows = {r["source"]: r for r in metrics["per_source"]}
    assert sorted(rows) == ["clinic", "kaggle", "mono", "tiny"]
    clinic = test[test["source"] == "clinic"]
    assert rows["clinic"]["n_images"] == len(clinic)
    assert rows["clinic"]["n_patients"] == clinic["patient_id"].nunique()
    for name in CLASSES:
        y = (clinic["class"] == name).to_numpy()
        auroc = rows["clinic"]["auroc"][name]
        assert auroc["value"] == pytest.approx(roc_auc_score(y, clinic[f"prob_{name}"]))
        assert auroc["low"] is not None  # 37 patients: an interval
    assert rows["clinic"]["balanced_accuracy"]["value"] == pytest.approx(
        balanced_accuracy_score(_labels(clinic), _argmax(clinic))
    )
    assert rows["mono"]["classes"] == {"covid19": 12}
    assert rows["mono"]["note"] == "one class only: AUROC undefined"
    assert all(
        a["value"] is None and a["note"] == "one class only: AUROC undefined"
        for a in rows["mono"]["auroc"].values()
    )
    tiny = rows["tiny"]
    assert tiny["auroc"]["covid19"]["note"] == "no covid19 rows: AUROC undefined"
    assert tiny["auroc"]["normal"]["value"] is not None
    assert tiny["auroc"]["normal"]["low"] is None  # 4 patients: no interval, and why
    assert "too few for an interval" in tiny["note"]
    assert rows["kaggle"]["n_patients"] == 0
    assert rows["kaggle"]["n_without_patient"] == rows["kaggle"]["n_images"]


def test_report_layout(run: Any) -> None:
    _, metrics, out = run
    text = (out / "report.md").read_text(encoding="utf-8")
    assert text.startswith(f"> {RESEARCH_USE_NOTICE}\n")
    order = [
        "# resnet18 on synthetic",
        "| **model** | resnet18 |",
        "## Per image",
        "## Per patient",
        "## Operating point",
        "## Per source",
        "## Calibration",
        "![reliability diagram](figures/reliability.png)",
        "## ROC curves",
        "![ROC curves](figures/roc.png)",
        "## Confusion matrix",
        "## External overlap",
        "## Probes",
        "## Grad-CAM",
    ]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions)
    assert "| **lock sha256** | ab\\|cd |" in text  # a pipe in a value does not break the table
    for source in ("clinic", "kaggle", "mono", "tiny"):
        assert f"\n| {source} | " in text
    assert "| mono | 12 | 6 | covid19 12 | — | — | — |" in text
    assert "one class only: AUROC undefined" in text
    assert "nan" not in text.lower().replace("mean", "")
    auroc = metrics["image"]["classes"]["covid19"]["auroc"]
    assert f"{auroc['value']:.3f} [{auroc['low']:.3f}, {auroc['high']:.3f}]" in text
    assert "3 images of this external set were left out" in text
    assert text.endswith("second extra\n")


def test_headline_and_summary_row(run: Any) -> None:
    _, metrics, _ = run
    lines = headline(metrics)
    assert lines[0].startswith(f"per image ({metrics['image']['n_images']} images")
    assert "per patient" in lines[1]
    row = summary_row(metrics)
    assert row["auroc_covid19"] == metrics["image"]["classes"]["covid19"]["auroc"]["value"]
    assert row["balanced_accuracy"] == metrics["image"]["balanced_accuracy"]["value"]
    assert summary_row(metrics, "patient")["n_patients"] == metrics["patient"]["n_patients"]


def test_metrics_json_and_figures(run: Any) -> None:
    _, metrics, out = run

    def refuse(value: str) -> None:
        raise AssertionError(f"{value} in metrics.json")

    on_disk = json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert on_disk == metrics
    assert on_disk["version"] == 1
    assert on_disk["classes"] == CLASSES
    assert on_disk["facts"]["epochs"] == 3
    assert on_disk["external_overlap"] == {
        "copies": 2,
        "same_patient": 1,
        "left_out": 3,
        "near": "pixels",
    }
    assert sorted(on_disk["figures"]) == ["confusion", "reliability", "roc"]
    for rel in on_disk["figures"].values():
        path = out / rel
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.size[0] > 400
    names = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert names == ["confusion.png", "metrics.json", "reliability.png", "report.md", "roc.png"]


def test_validation_without_a_class_falls_back_to_argmax(tmp_path: Path) -> None:
    frame = _predictions(1)
    frame = frame[~((frame["split"] == "val") & (frame["class"] == "pneumonia"))]
    m = evaluate_predictions(frame, classes=CLASSES, out=tmp_path, n_boot=0, figures=False)
    point = m["image"]["operating_point"]["classes"]
    assert point["pneumonia"] == {
        "source": "argmax",
        "threshold": None,
        "reason": "val has no pneumonia rows",
    }
    assert point["normal"]["source"] == "val"
    test = frame[frame["split"] == "test"]
    y = (test["class"] == "pneumonia").to_numpy()
    called = _argmax(test) == "pneumonia"
    assert m["image"]["classes"]["pneumonia"]["sensitivity"]["value"] == pytest.approx(
        called[y].mean()
    )
    text = (tmp_path / "report.md").read_text()
    assert "use the argmax class" in text and "val has no pneumonia rows" in text
    assert m["figures"] == {} and "Figures not drawn: figures=False" in text

    no_val = evaluate_predictions(frame[frame["split"] == "test"], classes=CLASSES, n_boot=0)
    reasons = {p["reason"] for p in no_val["image"]["operating_point"]["classes"].values()}
    assert reasons == {"no val rows"}


def test_an_explicit_validation_frame_sets_the_operating_point() -> None:
    frame = _predictions(2)
    val = frame[frame["split"] == "val"]
    external = frame[frame["split"] == "test"].assign(split="external")
    m = evaluate_predictions(external, classes=CLASSES, split="external", val=val, n_boot=0)
    for name in CLASSES:
        threshold = m["image"]["operating_point"]["classes"][name]["threshold"]
        assert threshold == pytest.approx(_youden(val, name))
    assert m["val_rows_scored"] == 0
    # scoring the validation rows themselves: allowed, counted and warned about
    itself = evaluate_predictions(
        pd.concat([val, val.assign(split="scored")]), classes=CLASSES, split="scored", n_boot=0
    )
    assert itself["val_rows_scored"] == len(val)
    assert "optimistic" in render_report(itself)
    assert any("optimistic" in line for line in headline(itself))


def test_sensitivity_rule() -> None:
    frame = _predictions(3)
    m = evaluate_predictions(frame, classes=CLASSES, n_boot=0, rule="sensitivity:0.95")
    val = frame[frame["split"] == "val"]
    for name in CLASSES:
        threshold = m["image"]["operating_point"]["classes"][name]["threshold"]
        y = (val["class"] == name).to_numpy()
        assert (val[f"prob_{name}"].to_numpy()[y] >= threshold).mean() >= 0.95


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="prob_normal"), r"lacks columns \['prob_normal'\]"),
        (lambda f: f.assign(**{"class": f["class"].replace("normal", "healthy")}), "healthy"),
        (lambda f: f[f["split"] == "val"], "no rows for split 'test'"),
        (lambda f: f.assign(prob_covid19=f["prob_covid19"].where(f.index != 3)), "not finite"),
        (lambda f: f.assign(prob_covid19=f["prob_covid19"] * np.inf), "not finite"),
        (lambda f: f.assign(prob_normal=f["prob_normal"] * 7), r"outside \[0, 1\]"),
        (lambda f: f.drop(columns="split"), "'split'"),
    ],
)
def test_bad_input_is_one_clear_error(change: Any, message: str, tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match=message) as caught:
        evaluate_predictions(change(_predictions(4)), classes=CLASSES, out=tmp_path, n_boot=0)
    assert isinstance(caught.value, Covid19ImagesError)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_bad_arguments() -> None:
    frame = _predictions(4)
    with pytest.raises(EvaluationError, match="unknown rule"):
        evaluate_predictions(frame, classes=CLASSES, rule="f1")
    with pytest.raises(EvaluationError, match="at least two"):
        evaluate_predictions(frame, classes=["covid19"])
    with pytest.raises(EvaluationError, match="another split"):
        evaluate_predictions(frame, classes=CLASSES, split="test", val_split="test")
