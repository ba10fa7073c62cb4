"""A model too weak to see disease: logistic regression on 32 x 32 px thumbnails.

At 32 x 32 px a radiograph shows its exposure, the size and shape of the chest (a child's or an
adult's), the field of view, borders and burnt-in text, but hardly any opacity a radiologist
reads. A linear model on those pixels that scores a high AUROC has found shortcuts; a deep
model that barely beats it has likely learnt the same ones. The model is fitted on the train
split (pixels standardised, ``C`` chosen on validation by the mean one-vs-rest AUROC) and
scored on the test split, per class against the rest, with patient-bootstrap intervals; the
operating point of each class is chosen on validation (Youden's J), as ``evaluate`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from covid19_images.evaluation.metrics import BootstrapCI, one_vs_rest, operating_point
from covid19_images.probe._data import (
    auroc_ci,
    ci_dict,
    fit_logistic,
    fmt,
    fmt_ci,
    json_dict,
    load_split,
    md_table,
    metric_frame,
    read_manifest,
    subsample,
    thumbnails,
)

__all__ = ["WeakModel", "weak_model"]

MODEL = "logistic regression on standardised 32 x 32 px thumbnails (C chosen on val)"


@dataclass(frozen=True)
class WeakModel:
    """What :func:`weak_model` found."""

    side: int
    c: float
    n_train: int
    n_val: int
    n_test: int
    classes: list[str]
    auroc: dict[str, BootstrapCI | None]
    """Per class against the rest, on test, with a patient-bootstrap interval."""
    rates: dict[str, dict[str, float]]
    """:func:`~covid19_images.evaluation.metrics.one_vs_rest` on test at thresholds chosen on
    validation (Youden's J)."""
    predictions: pd.DataFrame = field(repr=False)
    """Test predictions: ``uid``, ``patient_id``, ``class`` and ``prob_<class>``."""
    model: Pipeline | None = field(default=None, repr=False)
    """The fitted pipeline (standardisation + logistic regression) on flattened thumbnails."""
    description: str = MODEL
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (no NaN); the predictions and the model are left out.

        Example:
            >>> weak_model("datasets/xray-covid").to_dict()["auroc"]["covid19"]  # doctest: +SKIP
        """
        return json_dict(
            {
                "model": self.description,
                "side": self.side,
                "c": self.c,
                "n_train": self.n_train,
                "n_val": self.n_val,
                "n_test": self.n_test,
                "auroc": {k: ci_dict(v) for k, v in self.auroc.items()},
                "rates": self.rates,
                "notes": self.notes,
            }
        )

    def to_markdown(
        self,
        level: int = 3,
        beside: dict[str, BootstrapCI | None] | None = None,
        beside_name: str = "run's model",
    ) -> str:
        """A report section; ``beside`` puts another model's AUROC per class next to it.

        Example:
            >>> print(weak_model("datasets/xray-covid").to_markdown())  # doctest: +SKIP
        """
        header = ["class", "weak model AUROC", "sensitivity", "specificity"]
        if beside is not None:
            header.insert(2, f"{beside_name} AUROC")
        rows = []
        for c in self.classes:
            rate = self.rates.get(c, {})
            row = [
                c,
                fmt_ci(self.auroc.get(c)),
                fmt(rate.get("sensitivity")),
                fmt(rate.get("specificity")),
            ]
            if beside is not None:
                row.insert(2, fmt_ci(beside.get(c)))
            rows.append(row)
        lines = [
            "#" * level + " A model too weak to see disease",
            "",
            f"A {self.description}, fitted on {self.n_train} train images (C = {self.c:g}) and "
            f"scored on {self.n_test} test images; 95% patient-bootstrap intervals, "
            "sensitivity and specificity at thresholds chosen on validation.",
            "",
            md_table(header, rows),
            "",
            self.verdict(beside),
            "",
        ]
        lines += [f"- {n}" for n in self.notes]
        if self.notes:
            lines.append("")
        return "\n".join(lines)

    def verdict(self, beside: dict[str, BootstrapCI | None] | None = None) -> str:
        """One sentence on what the thumbnails alone reach for the COVID-19 class (the best
        class where none is named so) and, with ``beside``, how far another model gets beyond
        that.

        Example:
            >>> weak_model("datasets/xray-covid").verdict()  # doctest: +SKIP
            'From 32 x 32 px thumbnails alone a linear model reaches an AUROC of 0.88 ...'
        """
        defined = {c: ci for c, ci in self.auroc.items() if ci is not None}
        focus = [c for c in defined if "covid" in c.lower()]
        best = (
            (focus[0], defined[focus[0]])
            if focus
            else max(defined.items(), key=lambda item: item[1].point, default=None)
        )
        if best is None:
            return "No AUROC is defined on these test images."
        name, ci = best
        text = (
            f"From {self.side} x {self.side} px thumbnails alone a linear model reaches an "
            f"AUROC of {fmt_ci(ci)} for {name}"
        )
        if beside is not None and beside.get(name) is not None:
            other = beside[name]
            assert other is not None
            gain = other.point - ci.point
            text += f"; the run's model reaches {other.point:.2f} ({gain:+.2f}): " + (
                "it adds little to what the thumbnails show."
                if gain < 0.05
                else "it sees more than the thumbnails show."
            )
            return text
        if ci.point >= 0.8:
            return text + ": much of the label can be read without seeing disease."
        return text + "."


def _mean_auroc(classes: list[str]) -> Any:
    def score(model: Pipeline, x: np.ndarray, y: np.ndarray) -> float:
        probs = model.predict_proba(x)
        frame = pd.DataFrame({"class": np.asarray(classes)[y]})
        names = [classes[int(k)] for k in model.classes_]
        for k, name in enumerate(names):
            frame[f"prob_{name}"] = probs[:, k]
        result = one_vs_rest(frame, names, {n: 0.5 for n in names})
        values = [v["auroc"] for v in result.values() if not math.isnan(v["auroc"])]
        return float(np.mean(values)) if values else math.nan

    return score


def _predictions(model: Pipeline, x: np.ndarray, rows: pd.DataFrame, classes: list[str]) -> Any:
    probs = model.predict_proba(x)
    full = np.zeros((len(x), len(classes)))
    for k, label in enumerate(model.classes_):
        full[:, int(label)] = probs[:, k]
    return metric_frame(rows, **{f"prob_{c}": full[:, k] for k, c in enumerate(classes)})


def weak_model(
    folder: Path | str,
    *,
    side: int = 32,
    max_train: int | None = 20_000,
    n_boot: int = 1000,
    seed: int = 0,
) -> WeakModel:
    """Fit logistic regression on ``side`` x ``side`` px thumbnails (area-downscaled from the
    packed arrays, pixels standardised on train) to the label, with the dataset's splits.

    ``C`` is chosen on validation (mean one-vs-rest AUROC); each class's threshold on
    validation (Youden's J); AUROC per class on test with a patient-bootstrap interval of
    ``n_boot`` resamples. At most ``max_train`` train images are used (a seeded random draw).

    Example:
        >>> weak = weak_model("datasets/xray-covid")  # doctest: +SKIP
        >>> weak.auroc["covid19"]  # doctest: +SKIP
        BootstrapCI(point=0.93, low=0.88, high=0.97, ...)
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    train, val, test = (load_split(folder, s, manifest) for s in ("train", "val", "test"))
    classes = train.classes
    notes: list[str] = []
    pick = subsample(len(train.images), max_train, seed)
    if len(pick) < len(train.images):
        notes.append(f"Trained on a random {max_train:,} of the train images.")
    labels = {c: k for k, c in enumerate(classes)}

    def y_of(rows: pd.DataFrame) -> np.ndarray:
        return rows["class"].map(labels).to_numpy(dtype=np.int64)

    y_train = y_of(train.rows)[pick]
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"{folder}: the train split holds fewer than two classes")
    fitted = fit_logistic(
        thumbnails(train.images[pick], side),
        y_train,
        x_val := thumbnails(val.images, side),
        y_of(val.rows),
        _mean_auroc(classes),
    )
    if not fitted.converged:
        notes.append("The logistic regression stopped at its iteration limit.")
    if not fitted.val_scores:
        notes.append(f"C = {fitted.c:g} by default: the validation split has under two classes.")
    val_frame = _predictions(fitted.model, x_val, val.rows, classes)
    frame = _predictions(fitted.model, thumbnails(test.images, side), test.rows, classes)
    thresholds = {}
    for c in classes:
        y = (val_frame["class"] == c).to_numpy()
        thresholds[c] = (
            operating_point(y, val_frame[f"prob_{c}"]) if y.any() and not y.all() else 0.5
        )
    rates = one_vs_rest(frame, classes, thresholds)
    auroc = {c: auroc_ci(frame, c, f"prob_{c}", n=n_boot, seed=seed) for c in classes}
    return WeakModel(
        side=side,
        c=fitted.c,
        n_train=len(pick),
        n_val=len(val.images),
        n_test=len(test.images),
        classes=classes,
        description=MODEL.replace("32 x 32", f"{side} x {side}"),
        auroc=auroc,
        rates=rates,
        predictions=frame,
        model=fitted.model,
        notes=notes,
    )
