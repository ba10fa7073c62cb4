"""Source predictability: can a small model tell from the pixels which collection an image
came from?

A logistic regression on standardised 32 x 32 px thumbnails (the same features as the weak
model of :mod:`covid19_images.probe.weak`) is fitted to predict each image's ``source`` on the
train split (``C`` chosen on validation, classes weighted to balance the sources) and scored on
the test split. The splits are the dataset's own, grouped by patient, so no patient is on both
sides. A linear model on thumbnails is a *lower bound* on what a deep network could learn: a
high score proves that the source is in the pixels, a low one does not prove it absent.

When the label differs by source (one collection gives the normals, another the COVID-19
cases), whatever recognises the source also predicts the label; the probe says how far:
``label_from_source`` is what a classifier reaches that knows only each test image's source
(its score for a class is that class's share among the train images of the source), and
``label_from_predicted_source`` what the probe itself reaches through its predicted sources.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.pipeline import Pipeline

from covid19_images.evaluation.metrics import BootstrapCI
from covid19_images.probe._data import (
    auroc_ci,
    auroc_point,
    ci_dict,
    ci_or_none,
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

__all__ = ["SourceProbe", "source_predictability"]

MIN_TRAIN = 10
"""Sources with fewer train images than this are left out (with a note): a handful of images
cannot train a class, and their test images would only add noise to a balanced accuracy."""
MODEL = "logistic regression on standardised 32 x 32 px thumbnails (C chosen on val)"


def _balanced_accuracy(truth: str, predicted: str) -> Any:
    def metric(frame: pd.DataFrame) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a resample may lack a predicted class
            return float(
                balanced_accuracy_score(frame[truth].to_numpy(), frame[predicted].to_numpy())
            )

    return metric


@dataclass(frozen=True)
class SourceProbe:
    """What :func:`source_predictability` found; ``ran`` is False (and ``notes`` say why) when
    fewer than two sources could be compared."""

    ran: bool
    sources: list[str]
    """The sources the probe was trained on and scored on (present in train and test)."""
    left_out: dict[str, str]
    """Sources left out, with the reason."""
    n_train: int
    n_test: int
    c: float | None
    balanced_accuracy: BootstrapCI | None
    """Balanced accuracy of the predicted source on test, with a patient-bootstrap interval."""
    chance: float | None
    """1 / the number of sources scored: the balanced accuracy of guessing."""
    recall: dict[str, float]
    """Per source: the share of its test images predicted as it."""
    confusion: pd.DataFrame
    """Test images by true source (rows) and predicted source (columns)."""
    label_from_source: BootstrapCI | None
    """Balanced accuracy of the label when each test image gets the most common train class of
    its true source."""
    label_from_source_auroc: dict[str, BootstrapCI | None]
    """Per class: AUROC of the class's share among the train images of the image's source."""
    label_from_predicted_source: BootstrapCI | None
    """Balanced accuracy of the label through the probe's predicted source."""
    label_from_predicted_source_auroc: dict[str, float | None]
    class_by_source: pd.DataFrame
    """Train images by source (rows) and class (columns)."""
    model: str = MODEL
    notes: list[str] = field(default_factory=list)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    """Per scored test image: ``uid``, ``patient_id``, ``class``, ``source`` and the probe's
    ``predicted`` source."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (no NaN).

        Example:
            >>> probe = source_predictability("datasets/xray-covid")  # doctest: +SKIP
            >>> probe.to_dict()["balanced_accuracy"]["value"]  # doctest: +SKIP
            0.82
        """
        return json_dict(
            {
                "ran": self.ran,
                "model": self.model,
                "sources": self.sources,
                "left_out": self.left_out,
                "n_train": self.n_train,
                "n_test": self.n_test,
                "c": self.c,
                "balanced_accuracy": ci_dict(self.balanced_accuracy),
                "chance": self.chance,
                "recall": self.recall,
                "confusion": {
                    str(k): {str(p): int(v) for p, v in row.items()}
                    for k, row in self.confusion.iterrows()
                },
                "label_from_source": {
                    "balanced_accuracy": ci_dict(self.label_from_source),
                    "auroc": {k: ci_dict(v) for k, v in self.label_from_source_auroc.items()},
                },
                "label_from_predicted_source": {
                    "balanced_accuracy": ci_dict(self.label_from_predicted_source),
                    "auroc": self.label_from_predicted_source_auroc,
                },
                "class_by_source": {
                    str(k): {str(c): int(v) for c, v in row.items()}
                    for k, row in self.class_by_source.iterrows()
                },
                "notes": self.notes,
            }
        )

    def to_markdown(self, level: int = 3) -> str:
        """A report section: the balanced accuracy against chance, per-source recall and what
        the source alone gives for the label.

        Example:
            >>> print(source_predictability("datasets/xray-covid").to_markdown())  # doctest: +SKIP
        """
        head = "#" * level + " Source predictability"
        if not self.ran:
            return "\n".join([head, "", *(f"- {n}" for n in self.notes), ""])
        ba = self.balanced_accuracy
        lines = [
            head,
            "",
            f"A {self.model} predicts each test image's source with a balanced accuracy of "
            f"**{fmt_ci(ba)}** (95% patient-bootstrap interval) where guessing gives "
            f"{fmt(self.chance)} ({len(self.sources)} sources; {self.n_train} train and "
            f"{self.n_test} test images).",
            "",
            _verdict(ba, self.chance),
            "",
            md_table(
                ["source", "test images", "recall"],
                [
                    [s, str(int(self.confusion.loc[s].to_numpy().sum())), fmt(self.recall.get(s))]
                    for s in self.sources
                ],
            ),
            "",
            f"From the source alone, a classifier reaches a label balanced accuracy of "
            f"**{fmt_ci(self.label_from_source)}** (each image given its source's most common "
            f"train class); through the probe's predicted sources, "
            f"{fmt_ci(self.label_from_predicted_source)}. Per class, the AUROC of the source "
            "alone:",
            "",
            md_table(
                ["class", "AUROC, true source", "AUROC, predicted source"],
                [
                    [
                        c,
                        fmt_ci(self.label_from_source_auroc.get(c)),
                        fmt(self.label_from_predicted_source_auroc.get(c)),
                    ]
                    for c in self.label_from_source_auroc
                ],
            ),
            "",
        ]
        lines += [f"- {n}" for n in self.notes]
        if self.notes:
            lines.append("")
        return "\n".join(lines)


def _verdict(ba: BootstrapCI | None, chance: float | None) -> str:
    if ba is None or chance is None:
        return "The balanced accuracy is undefined on these test images."
    if ba.low > chance + 0.5 * (1 - chance):
        return (
            "The source is plainly in the pixels: a label that differs by source can be learnt "
            "from the source instead of the disease."
        )
    if ba.low > chance:
        return (
            "The source is partly recognisable from the pixels: a label that differs by source "
            "can be learnt in part from the source."
        )
    return (
        "This small model does not recognise the source beyond chance (a deeper model still might)."
    )


def _empty(
    notes: list[str], left_out: dict[str, str], classes: Sequence[str], by_source: pd.DataFrame
) -> SourceProbe:
    return SourceProbe(
        ran=False,
        sources=[],
        left_out=left_out,
        n_train=0,
        n_test=0,
        c=None,
        balanced_accuracy=None,
        chance=None,
        recall={},
        confusion=pd.DataFrame(),
        label_from_source=None,
        label_from_source_auroc={c: None for c in classes},
        label_from_predicted_source=None,
        label_from_predicted_source_auroc={c: None for c in classes},
        class_by_source=by_source,
        notes=notes,
    )


def source_predictability(
    folder: Path | str,
    *,
    side: int = 32,
    min_train: int = MIN_TRAIN,
    max_train: int | None = 20_000,
    n_boot: int = 1000,
    seed: int = 0,
) -> SourceProbe:
    """Train a small model to predict each image's source from the image; score it on test.

    The model is a logistic regression on standardised ``side`` x ``side`` px thumbnails,
    classes weighted to balance the sources, ``C`` chosen on the validation split by balanced
    accuracy. Sources with fewer than ``min_train`` train images are left out (noted), and so
    are test images of sources the probe was not trained on; chance is 1 / the number of
    sources scored. At most ``max_train`` train images (a seeded random draw) are used, which
    bounds the time on large datasets. Intervals: patient bootstrap with ``n_boot`` resamples.

    Example:
        >>> probe = source_predictability("datasets/xray-covid")  # doctest: +SKIP
        >>> probe.balanced_accuracy, probe.chance  # doctest: +SKIP
        (BootstrapCI(point=0.82, low=0.74, high=0.89, ...), 0.2)
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    train = load_split(folder, "train", manifest)
    classes = train.classes
    by_source = pd.crosstab(train.rows["source"], train.rows["class"]).reindex(
        columns=classes, fill_value=0
    )
    test = load_split(folder, "test", manifest)
    val = load_split(folder, "val", manifest)
    counts = train.rows["source"].value_counts()
    left_out: dict[str, str] = {}
    notes: list[str] = []
    for source in sorted(set(counts.index) | set(test.rows["source"])):
        have = int(counts.get(source, 0))
        if have < min_train:
            left_out[str(source)] = (
                f"{have} train image{'s' if have != 1 else ''}, under {min_train}"
            )
    kept = sorted(str(s) for s in counts.index if str(s) not in left_out)
    scored = sorted(set(kept) & set(test.rows["source"].astype(str)))
    for source in kept:
        if source not in scored:
            left_out[source] = "no test image"
    if left_out:
        notes.append(
            "Left out: " + "; ".join(f"{s} ({why})" for s, why in sorted(left_out.items())) + "."
        )
    if len(scored) < 2:
        notes.insert(0, f"Not run: {len(scored)} source(s) with train and test images.")
        return _empty(notes, left_out, classes, by_source)

    fit_rows = np.flatnonzero(train.rows["source"].isin(scored).to_numpy())
    fit_rows = fit_rows[subsample(len(fit_rows), max_train, seed)]
    if max_train is not None and int(train.rows["source"].isin(scored).sum()) > max_train:
        notes.append(f"Trained on a random {max_train:,} of the train images.")
    x_train = thumbnails(train.images[fit_rows], side)
    y_train = train.rows["source"].to_numpy(dtype=str)[fit_rows]
    val_keep = np.flatnonzero(val.rows["source"].isin(scored).to_numpy())
    x_val = thumbnails(val.images[val_keep], side)
    y_val = val.rows["source"].to_numpy(dtype=str)[val_keep]

    def val_score(model: Pipeline, x: np.ndarray, y: np.ndarray) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(balanced_accuracy_score(y, model.predict(x)))

    fitted = fit_logistic(x_train, y_train, x_val, y_val, val_score, class_weight="balanced")
    if not fitted.converged:
        notes.append("The logistic regression stopped at its iteration limit.")
    test_keep = np.flatnonzero(test.rows["source"].isin(scored).to_numpy())
    rows = test.rows.iloc[test_keep].reset_index(drop=True)
    x_test = thumbnails(test.images[test_keep], side)
    probs = fitted.model.predict_proba(x_test)
    model_sources = [str(s) for s in fitted.model.classes_]
    predicted = np.asarray(model_sources)[probs.argmax(axis=1)]
    truth = rows["source"].to_numpy(dtype=str)

    # the label through the source: P(class | source) from the train images
    share = by_source.loc[model_sources].div(by_source.loc[model_sources].sum(axis=1), axis=0)
    majority = share.idxmax(axis=1)
    through_true = share.loc[truth].to_numpy()
    through_predicted = probs @ share.to_numpy()
    frame = metric_frame(
        rows,
        source=truth,
        predicted=predicted,
        label_true=majority.loc[truth].to_numpy(dtype=str),
        label_predicted=np.asarray(classes)[through_predicted.argmax(axis=1)],
        **{f"true_{c}": through_true[:, k] for k, c in enumerate(classes)},
        **{f"pred_{c}": through_predicted[:, k] for k, c in enumerate(classes)},
    )
    matrix = confusion_matrix(truth, predicted, labels=scored)
    confusion = pd.DataFrame(matrix, index=scored, columns=scored)
    recall = {
        s: float(matrix[i, i] / matrix[i].sum()) for i, s in enumerate(scored) if matrix[i].sum()
    }
    present = [c for c in classes if (frame["class"] == c).any()]
    from_true = {
        c: auroc_ci(frame, c, f"true_{c}", n=n_boot, seed=seed) if c in present else None
        for c in classes
    }
    from_predicted = {c: auroc_point(frame, c, f"pred_{c}") for c in classes}
    return SourceProbe(
        ran=True,
        sources=scored,
        left_out=left_out,
        n_train=len(fit_rows),
        n_test=len(rows),
        c=fitted.c,
        balanced_accuracy=ci_or_none(
            frame, _balanced_accuracy("source", "predicted"), n=n_boot, seed=seed
        ),
        chance=1.0 / len(scored),
        recall=recall,
        confusion=confusion,
        label_from_source=ci_or_none(
            frame, _balanced_accuracy("class", "label_true"), n=n_boot, seed=seed
        ),
        label_from_source_auroc=from_true,
        label_from_predicted_source=ci_or_none(
            frame, _balanced_accuracy("class", "label_predicted"), n=n_boot, seed=seed
        ),
        label_from_predicted_source_auroc=from_predicted,
        class_by_source=by_source,
        model=MODEL.replace("32 x 32", f"{side} x {side}"),
        notes=notes,
        predictions=frame[["uid", "patient_id", "class", "source", "predicted"]],
    )
