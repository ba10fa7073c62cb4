"""The evaluation of a run: ``metrics.json``, ``report.md`` and figures from its predictions.

:func:`evaluate_predictions` scores one split of a predictions frame (a run's
``predictions.parquet``: ``uid``, ``split``, ``source``, ``patient_id``, ``class`` and one
``prob_<class>`` per class) with the primitives of :mod:`covid19_images.evaluation.metrics`:

- per class, one against the rest: AUROC, and sensitivity, specificity, PPV and NPV at an
  operating point chosen on the **validation** rows (never on the rows scored);
- overall: balanced accuracy of the argmax class, the confusion matrix (counts and
  row-normalised), the expected calibration error (:mod:`covid19_images.evaluation.calibration`)
  with its reliability diagram, and ROC curves;
- at two levels, per image and per patient (a patient's probabilities are its images' mean);
- patient-bootstrap intervals for every headline number; a per-source table; the external
  overlap left out, when given.

No torch here; matplotlib is imported only to draw the figures.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score, roc_curve

from covid19_images import RESEARCH_USE_NOTICE
from covid19_images.atomic import json_safe, write_with
from covid19_images.errors import EvaluationError
from covid19_images.evaluation.calibration import (
    ECE_BINS,
    expected_calibration_error,
    reliability_bins,
    top_label,
)
from covid19_images.evaluation.metrics import (
    BootstrapCI,
    bootstrap_cis,
    group_keys,
    one_vs_rest,
    operating_point,
    per_patient,
)

if TYPE_CHECKING:
    from covid19_images.evaluation.external import Overlap

__all__ = [
    "MIN_UNITS_FOR_CI",
    "SCHEMA_VERSION",
    "evaluate_predictions",
    "headline",
    "render_report",
    "summary_row",
]

SCHEMA_VERSION = 1
"""Version of the ``metrics.json`` layout (docs/models.md); raised on any incompatible change."""
MIN_UNITS_FOR_CI = 10
"""A source needs at least this many patients (an image without a patient id counts as one)
for a bootstrap interval in the per-source table."""
LEVELS = ("image", "patient")
RATES = ("sensitivity", "specificity", "ppv", "npv")
FIGURES = {"roc": "figures/roc.png", "reliability": "figures/reliability.png"}
FIGURES_CONFUSION = "figures/confusion.png"
_SEP = "\t"  # between a class and a metric name in the bootstrap's keys


# ---------------------------------------------------------------------------------- input


def _prob(name: str) -> str:
    return f"prob_{name}"


def _check_rows(frame: pd.DataFrame, classes: Sequence[str], what: str) -> None:
    """Unknown or missing classes and bad probabilities, in the rows that will be used."""
    labels = frame["class"]
    unknown = sorted({str(v) for v in labels.dropna().unique()} - set(classes))
    if unknown:
        raise EvaluationError(
            f"{what} has classes that are not in {list(classes)}: {unknown[:5]}"
            " (give every class of the recipe in classes=)"
        )
    if labels.isna().any():
        raise EvaluationError(f"{what} has {int(labels.isna().sum())} rows without a class")
    probs = frame[[_prob(c) for c in classes]]
    try:
        values = probs.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"{what} has probabilities that are not numbers: {exc}") from None
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        ids = frame["uid"][bad] if "uid" in frame.columns else frame.index[bad]
        raise EvaluationError(
            f"{what} has {int(bad.sum())} rows whose probabilities are not finite"
            f" (first: {[str(v) for v in list(ids)[:3]]})"
        )
    if ((values < -1e-6) | (values > 1 + 1e-6)).any():
        raise EvaluationError(
            f"{what} has probabilities outside [0, 1]: prob_<class> must be softmax outputs,"
            " not logits"
        )


def _columns(frame: pd.DataFrame, classes: Sequence[str], what: str) -> pd.DataFrame:
    """The columns the evaluation uses, or an error naming the missing ones."""
    if not isinstance(frame, pd.DataFrame):
        raise EvaluationError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    needed = ["class", *(_prob(c) for c in classes)]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise EvaluationError(
            f"{what} lacks columns {missing} (one prob_<class> column per class in classes)"
        )
    keep = [c for c in ("uid", "split", "source", "patient_id") if c in frame.columns]
    out = frame[keep + needed].copy()
    labels = out["class"].astype(object)
    out["class"] = [None if pd.isna(v) else str(v) for v in labels]  # classes are names
    return out


def _check_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str):
        raise EvaluationError("classes must be a list of class names, not one string")
    names = [str(c) for c in classes]
    if len(names) < 2:
        raise EvaluationError(f"classes must name at least two classes, got {names}")
    if len(set(names)) != len(names):
        raise EvaluationError(f"classes must be distinct, got {names}")
    return names


def _check_rule(rule: str) -> None:
    try:
        operating_point([0, 1], [0.2, 0.8], rule)
    except ValueError as exc:
        raise EvaluationError(f"operating-point rule: {exc}") from None


def _with_prediction(frame: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """The frame with ``_pred``, the argmax class (the first on a tie)."""
    probs = frame[[_prob(c) for c in classes]].to_numpy(dtype=np.float64)
    pred = np.asarray(classes, dtype=object)[probs.argmax(axis=1)] if len(frame) else []
    return frame.assign(_pred=pd.Series(pred, index=frame.index, dtype=object))


def _aggregate(
    frame: pd.DataFrame, classes: Sequence[str], severity: Sequence[str] | None
) -> pd.DataFrame:
    """One row per patient (metrics.per_patient, the mean), or an empty frame."""
    if len(frame) == 0:
        return pd.DataFrame(
            columns=["patient_id", "uid", "n_images", "class"] + [_prob(c) for c in classes]
        )
    try:
        return per_patient(frame, "mean", severity=severity if severity is not None else classes)
    except ValueError as exc:
        raise EvaluationError(f"per-patient aggregation: {exc}") from None


# ------------------------------------------------------------------------- computation


def _quiet(fn: Callable[[], Any]) -> Any:
    """``fn()`` without scikit-learn's warnings about undefined metrics (reported as null)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _choose_points(
    val: pd.DataFrame, classes: Sequence[str], rule: str, val_name: str
) -> dict[str, dict[str, Any]]:
    """Per class: the threshold chosen on ``val``, or the argmax with the reason."""
    points: dict[str, dict[str, Any]] = {}
    labels = val["class"].to_numpy(dtype=object)
    for c in classes:
        y = labels == c
        if len(val) == 0:
            reason = f"no {val_name} rows"
        elif not y.any():
            reason = f"{val_name} has no {c} rows"
        elif y.all():
            reason = f"{val_name} has only {c} rows"
        else:
            threshold = operating_point(y, val[_prob(c)].to_numpy(dtype=float), rule)
            points[c] = {"source": "val", "threshold": threshold, "reason": None}
            continue
        points[c] = {"source": "argmax", "threshold": None, "reason": reason}
    return points


def _called(frame: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """A frame whose ``prob_<c>`` is 1 where the argmax is ``c``: rates at threshold 0.5 are
    the argmax rates."""
    pred = frame["_pred"].to_numpy(dtype=object)
    data: dict[str, Any] = {"class": frame["class"].to_numpy(dtype=object)}
    for c in classes:
        data[_prob(c)] = (pred == c).astype(np.float64)
    return pd.DataFrame(data)


def _headline_fn(
    classes: Sequence[str], points: Mapping[str, Mapping[str, Any]]
) -> Callable[[pd.DataFrame], dict[str, float]]:
    thresholds = {
        c: float(p["threshold"]) if p["threshold"] is not None else 0.5 for c, p in points.items()
    }
    by_argmax = [c for c, p in points.items() if p["threshold"] is None]
    half = dict.fromkeys(classes, 0.5)

    def fn(frame: pd.DataFrame) -> dict[str, float]:
        result = one_vs_rest(frame, classes, thresholds)
        argmax = one_vs_rest(_called(frame, classes), classes, half) if by_argmax else {}
        out: dict[str, float] = {}
        for c in classes:
            out[f"{c}{_SEP}auroc"] = result[c]["auroc"]
            rates = argmax[c] if c in by_argmax else result[c]
            for rate in RATES:
                out[f"{c}{_SEP}{rate}"] = rates[rate]
        out["balanced_accuracy"] = float(
            balanced_accuracy_score(
                frame["class"].to_numpy(dtype=object), frame["_pred"].to_numpy(dtype=object)
            )
        )
        out["ece"] = expected_calibration_error(frame, classes)
        return out

    return fn


def _intervals(
    frame: pd.DataFrame,
    fn: Callable[[pd.DataFrame], dict[str, float]],
    n_boot: int,
    seed: int,
    level: float,
) -> dict[str, BootstrapCI]:
    """Every value of ``fn`` with its patient-bootstrap interval (NaN bounds when n_boot is 0)."""
    if n_boot > 0:
        # the rows were checked once (finite, known classes): no need for sklearn to check each
        # resample again
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            cis = _quiet(lambda: bootstrap_cis(frame, fn, n=n_boot, seed=seed, level=level))
        return dict(cis)
    values = _quiet(lambda: fn(frame))
    return {k: BootstrapCI(float(v), math.nan, math.nan, 0, 0, level) for k, v in values.items()}


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _interval(ci: BootstrapCI | None, note: str | None = None) -> dict[str, Any]:
    """The JSON form of an interval: value, low, high, skipped and a note (null when none)."""
    if ci is None:
        return {"value": None, "low": None, "high": None, "skipped": None, "note": note}
    if note is None and not math.isfinite(ci.point):
        note = "undefined on these rows"
    elif note is None and ci.n and not math.isfinite(ci.low):
        note = f"undefined on all {ci.n} resamples"
    return {
        "value": _finite(ci.point),
        "low": _finite(ci.low),
        "high": _finite(ci.high),
        "skipped": ci.skipped if ci.n else None,
        "note": note,
    }


def _auroc_note(frame: pd.DataFrame, name: str) -> str | None:
    y = frame["class"].to_numpy(dtype=object) == name
    if len(frame) and y.all():
        return "one class only: AUROC undefined"
    if not y.any():
        return f"no {name} rows: AUROC undefined"
    return None


def _rate_note(frame: pd.DataFrame, name: str, rate: str) -> str | None:
    y = frame["class"].to_numpy(dtype=object) == name
    if rate == "sensitivity" and not y.any():
        return f"no {name} rows"
    if rate == "specificity" and y.all():
        return f"only {name} rows"
    return None


def _counts(frame: pd.DataFrame) -> dict[str, int]:
    keys = group_keys(frame)
    patients = int(keys[keys.str.startswith("patient:")].nunique())
    alone = int(keys.str.startswith("image:").sum())
    return {"n_patients": patients, "n_without_patient": alone, "n_units": patients + alone}


def _level(
    frame: pd.DataFrame,
    classes: Sequence[str],
    points: dict[str, dict[str, Any]],
    n_val: int,
    n_boot: int,
    seed: int,
    level: float,
    n_images: int,
    counts: Mapping[str, int],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One level's metrics (JSON-ready) and the curves its figures draw."""
    frame = _with_prediction(frame, classes)
    cis = _intervals(frame, _headline_fn(classes, points), n_boot, seed, level)
    labels = frame["class"].to_numpy(dtype=object)
    per_class: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for c in classes:
        y = labels == c
        entry: dict[str, Any] = {
            "n_positive": int(y.sum()),
            "n_negative": int((~y).sum()),
            "auroc": _interval(cis[f"{c}{_SEP}auroc"], _auroc_note(frame, c)),
        }
        for rate in RATES:
            entry[rate] = _interval(cis[f"{c}{_SEP}{rate}"], _rate_note(frame, c, rate))
        per_class[c] = entry
        if y.any() and not y.all():
            fpr, tpr, _ = roc_curve(y, frame[_prob(c)].to_numpy(dtype=float))
            curves[c] = (fpr, tpr)
    pred = frame["_pred"].to_numpy(dtype=object)
    counts_matrix = confusion_matrix(labels, pred, labels=list(classes)).astype(np.int64)
    totals = counts_matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = counts_matrix / totals
    confidence, correct = top_label(frame, classes)
    bins = reliability_bins(confidence, correct, ECE_BINS)
    metrics: dict[str, Any] = {
        "n_images": n_images,
        **counts,
        "n_rows": len(frame),
        "operating_point": {"n_val_rows": n_val, "classes": points},
        "classes": per_class,
        "balanced_accuracy": _interval(cis["balanced_accuracy"]),
        "ece": _interval(cis["ece"]),
        "confusion": {
            "labels": list(classes),
            "counts": counts_matrix.tolist(),
            "normalized": [[_finite(v) for v in row] for row in normalised.tolist()],
        },
        "reliability": [
            {k: _finite(v) if k in ("confidence", "accuracy") else v for k, v in row.items()}
            for row in bins.astype(object).to_dict("records")
        ],
    }
    return metrics, {"roc": curves, "bins": bins, "confusion": counts_matrix}


def _source_fn(
    classes: Sequence[str], defined: Sequence[str]
) -> Callable[[pd.DataFrame], dict[str, float]]:
    def fn(frame: pd.DataFrame) -> dict[str, float]:
        labels = frame["class"].to_numpy(dtype=object)
        out: dict[str, float] = {}
        for c in defined:
            y = labels == c
            out[c] = (
                float(roc_auc_score(y, frame[_prob(c)].to_numpy(dtype=float)))
                if y.any() and not y.all()
                else math.nan
            )
        out["balanced_accuracy"] = float(
            balanced_accuracy_score(labels, frame["_pred"].to_numpy(dtype=object))
        )
        return out

    return fn


def _per_source(
    frame: pd.DataFrame, classes: Sequence[str], n_boot: int, seed: int, level: float
) -> list[dict[str, Any]]:
    """Image-level metrics of each source of the scored rows."""
    frame = _with_prediction(frame, classes)
    if "source" in frame.columns:
        known = frame["source"].notna().to_numpy()
        names = frame["source"].astype(str).to_numpy(dtype=object)
        names[~known] = None
    else:
        known = np.zeros(len(frame), dtype=bool)
        names = np.full(len(frame), None, dtype=object)
    rows: list[dict[str, Any]] = []
    for name in [*sorted(set(names[known])), *([None] if not known.all() else [])]:
        part = frame[names == name] if name is not None else frame[~known]
        counts = _counts(part)
        present = part["class"].value_counts()
        present_classes = [c for c in classes if c in present.index]
        one_class = len(present_classes) == 1
        defined = [] if one_class else present_classes
        enough = counts["n_units"] >= MIN_UNITS_FOR_CI
        fn = _source_fn(classes, defined)
        if n_boot > 0 and enough:
            cis = _intervals(part, fn, n_boot, seed, level)
            ci_note = None
        else:
            cis = _intervals(part, fn, 0, seed, level)
            ci_note = (
                None
                if n_boot == 0
                else f"{counts['n_units']} patients or images without id: too few for an"
                f" interval (needs {MIN_UNITS_FOR_CI})"
            )
        auroc: dict[str, Any] = {}
        for c in classes:
            if one_class:
                auroc[c] = _interval(None, "one class only: AUROC undefined")
            elif c not in defined:
                auroc[c] = _interval(None, f"no {c} rows: AUROC undefined")
            else:
                auroc[c] = _interval(cis[c])
        rows.append(
            {
                "source": name if name is None else str(name),
                "n_images": len(part),
                **counts,
                "classes": {c: int(present[c]) for c in present_classes},
                "note": "one class only: AUROC undefined" if one_class else ci_note,
                "auroc": auroc,
                "balanced_accuracy": _interval(cis["balanced_accuracy"]),
            }
        )
    return rows


def _overlap_counts(overlap: Overlap | Mapping[str, int] | None) -> dict[str, Any] | None:
    if overlap is None:
        return None
    counts = overlap.counts() if hasattr(overlap, "counts") else dict(overlap)
    missing = {"copies", "same_patient", "left_out"} - set(counts)
    if missing:
        raise EvaluationError(f"external_overlap lacks {sorted(missing)}")
    out: dict[str, Any] = {k: int(counts[k]) for k in ("copies", "same_patient", "left_out")}
    near = getattr(overlap, "near", None)
    if near is not None:
        out["near"] = str(near)
    return out


# ---------------------------------------------------------------------------- writing


def _plain(text: object) -> str:
    """Text that matplotlib shows as written (a ``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def _draw(out: Path, title: str, curves: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
    """The ROC, reliability and confusion figures (matplotlib's Agg, no pyplot)."""
    from matplotlib.figure import Figure

    classes = [_plain(c) for c in metrics["classes"]]
    title = _plain(title)

    def save(fig: Figure, rel: str) -> None:
        write_with(out / rel, lambda tmp: fig.savefig(tmp, format="png", dpi=100))

    fig = Figure(figsize=(10, 4.6), layout="constrained")
    for ax, lvl in zip(fig.subplots(1, 2), LEVELS, strict=True):
        ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
        for c, shown in zip(metrics["classes"], classes, strict=True):
            if c not in curves[lvl]["roc"]:
                continue
            fpr, tpr = curves[lvl]["roc"][c]
            entry = metrics[lvl]["classes"][c]
            auc = entry["auroc"]["value"]
            (line,) = ax.plot(fpr, tpr, label=f"{shown} (AUROC {_number(auc)})")
            sens, spec = entry["sensitivity"]["value"], entry["specificity"]["value"]
            if sens is not None and spec is not None:
                ax.plot([1 - spec], [sens], "o", color=line.get_color())
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity")
        ax.set_title(f"per {lvl} (dots: operating point)")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{title}: ROC, one class against the rest")
    save(fig, FIGURES["roc"])

    fig = Figure(figsize=(10, 4.6), layout="constrained")
    for ax, lvl in zip(fig.subplots(1, 2), LEVELS, strict=True):
        bins = curves[lvl]["bins"]
        regular = bins.iloc[:-1]
        used = regular["count"].to_numpy() > 0
        width = float(regular["upper"].iloc[0] - regular["lower"].iloc[0])
        ax.bar(
            regular["lower"][used],
            regular["accuracy"][used],
            width=width,
            align="edge",
            edgecolor="black",
            label="accuracy in bin",
        )
        last = bins.iloc[-1]
        if last["count"] > 0:
            ax.plot([1.0], [last["accuracy"]], "D", color="C1", label="confidence exactly 1")
        ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="perfect")
        ece = metrics[lvl]["ece"]
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="confidence (top label)", ylabel="accuracy")
        ax.set_title(f"per {lvl}: ECE {_cell(ece)}")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{title}: reliability ({ECE_BINS} bins)")
    save(fig, FIGURES["reliability"])

    fig = Figure(figsize=(10, 4.6), layout="constrained")
    for ax, lvl in zip(fig.subplots(1, 2), LEVELS, strict=True):
        counts = curves[lvl]["confusion"]
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(
                    j,
                    i,
                    f"{counts[i, j]}\n{share[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="white" if share[i, j] > 0.5 else "black",
                    fontsize=8,
                )
        ax.set_xticks(range(len(classes)), classes, rotation=30)
        ax.set_yticks(range(len(classes)), classes)
        ax.set(xlabel="predicted (argmax)", ylabel="true")
        ax.set_title(f"per {lvl} (counts, row share)")
    fig.suptitle(f"{title}: confusion matrix")
    save(fig, FIGURES_CONFUSION)


# -------------------------------------------------------------------------- markdown


def _number(value: float | None, digits: int = 3) -> str:
    return "undefined" if value is None else f"{value:.{digits}f}"


def _cell(entry: Mapping[str, Any] | None) -> str:
    """``0.912 [0.850, 0.960]``, the value alone, or the note of an undefined value."""
    if entry is None:
        return "n/a"
    value = entry.get("value")
    if value is None:
        return str(entry.get("note") or "undefined")
    low, high = entry.get("low"), entry.get("high")
    if low is None or high is None:
        return _number(value)
    return f"{_number(value)} [{_number(low)}, {_number(high)}]"


def _escape(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(_escape(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_escape(v) for v in row) + " |" for row in rows]
    return lines


def _level_section(metrics: Mapping[str, Any], lvl: str) -> list[str]:
    m = metrics[lvl]
    pct = round(100 * metrics["bootstrap"]["level"])
    lines = [f"## Per {lvl}", ""]
    with_id = m["n_images"] - m["n_without_patient"]
    described = f"{m['n_images']} images: {with_id} of {m['n_patients']} patients"
    if m["n_without_patient"]:
        described += f", {m['n_without_patient']} without a patient id (each its own cluster)"
    if lvl == "patient":
        described += (
            f"; {m['n_rows']} rows, each a patient's mean probabilities"
            " (an image without a patient id is its own row)"
        )
        if m.get("n_mixed_class_patients"):
            described += (
                f"; {m['n_mixed_class_patients']} patients whose images carry different classes"
                " take the most severe one"
            )
    lines += [f"Split `{metrics['split']}`: {described}.", ""]
    rows = []
    for c, e in m["classes"].items():
        point = m["operating_point"]["classes"][c]
        at = _number(point["threshold"]) if point["threshold"] is not None else "argmax"
        rows.append(
            [c, f"{e['n_positive']} / {e['n_negative']}", _cell(e["auroc"])]
            + [_cell(e[r]) for r in RATES]
            + [at]
        )
    lines += _table(
        [
            "class",
            "positives / negatives",
            f"AUROC ({pct}% CI)",
            "sensitivity",
            "specificity",
            "PPV",
            "NPV",
            "threshold",
        ],
        rows,
    )
    lines += [
        "",
        f"- balanced accuracy (argmax): {_cell(m['balanced_accuracy'])}",
        f"- expected calibration error: {_cell(m['ece'])}",
    ]
    skipped = [
        f"{name} {e['skipped']}"
        for name, e in _all_intervals(m)
        if e.get("skipped") and e.get("value") is not None
    ]
    n = metrics["bootstrap"]["n"]
    if n:
        lines.append(
            f"- resamples skipped (value undefined on them) of {n}: "
            + (", ".join(skipped) if skipped else "none")
        )
    lines.append("")
    return lines


def _all_intervals(m: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    found: list[tuple[str, Mapping[str, Any]]] = []
    for c, e in m["classes"].items():
        found += [(f"{k} {c}" if k != "auroc" else f"AUROC {c}", e[k]) for k in ("auroc", *RATES)]
    return [*found, ("balanced accuracy", m["balanced_accuracy"]), ("ECE", m["ece"])]


def _patients_cell(entry: Mapping[str, Any]) -> str:
    alone = entry["n_without_patient"]
    return f"{entry['n_patients']}" + (f" (+{alone} images without id)" if alone else "")


def render_report(metrics: Mapping[str, Any], *, sections: Sequence[str] = ()) -> str:
    """``report.md`` from a ``metrics.json`` dict, ``sections`` (markdown) appended in order.

    It opens with :data:`covid19_images.RESEARCH_USE_NOTICE`, then the title and the facts
    table, the per-image and per-patient tables with intervals, the operating point, the
    per-source table, calibration, ROC, confusion matrices, the external overlap (when
    recorded) and ``sections``.

    Example:
        >>> metrics = evaluate_predictions(frame, classes=["a", "b"])  # doctest: +SKIP
        >>> render_report(metrics).startswith("> Research use only")  # doctest: +SKIP
        True
    """
    pct = round(100 * metrics["bootstrap"]["level"])
    lines = [f"> {RESEARCH_USE_NOTICE}", "", f"# {metrics['title']}", ""]
    facts = dict(metrics.get("facts") or {})
    facts.setdefault("split scored", metrics["split"])
    facts.setdefault("classes", ", ".join(metrics["classes"]))
    lines += _table(["", ""], [[f"**{k}**", "null" if v is None else v] for k, v in facts.items()])
    n = metrics["bootstrap"]["n"]
    lines += [
        "",
        (
            f"Intervals: {pct}% percentile bootstrap over {n} resamples of whole patients"
            " (an image without a patient id is its own cluster),"
            f" seed {metrics['bootstrap']['seed']}."
            if n
            else "No bootstrap intervals (n_boot = 0)."
        ),
        "",
    ]
    for lvl in LEVELS:
        lines += _level_section(metrics, lvl)

    lines += ["## Operating point", ""]
    val_name = metrics["val_split"]
    where = f"the `{val_name}` rows" if val_name is not None else "the validation rows given"
    rule = metrics["rule"]
    described = "Youden's J" if rule == "youden" else f"`{rule}`"
    lines.append(
        f"Chosen on {where} by {described}, separately per image and per patient"
        f" ({metrics['image']['operating_point']['n_val_rows']} images,"
        f" {metrics['patient']['operating_point']['n_val_rows']} patient rows), never on"
        f" `{metrics['split']}`: the scored split only measures it. A row is called positive for"
        " a class when its probability is at least the threshold."
    )
    if metrics.get("val_rows_scored"):
        lines += [
            "",
            f"**The operating point was chosen on {metrics['val_rows_scored']} of the rows"
            " scored**: the sensitivity, specificity, PPV and NPV at it are optimistic (fitted and"
            " measured on the same images); AUROC, balanced accuracy and ECE do not use it.",
        ]
    fallback = [
        (lvl, c, p["reason"])
        for lvl in LEVELS
        for c, p in metrics[lvl]["operating_point"]["classes"].items()
        if p["source"] != "val"
    ]
    if fallback:
        lines += [
            "",
            "**No threshold could be chosen on validation for some classes; their rates use the"
            " argmax class instead (nothing is tuned on the scored split):**",
            "",
        ]
        lines += [f"- per {lvl}, {c}: {reason}" for lvl, c, reason in fallback]
    lines.append("")
    lines += _table(
        ["class", "threshold per image", "threshold per patient"],
        [
            [c]
            + [
                _number(metrics[lvl]["operating_point"]["classes"][c]["threshold"])
                if metrics[lvl]["operating_point"]["classes"][c]["threshold"] is not None
                else "argmax"
                for lvl in LEVELS
            ]
            for c in metrics["classes"]
        ],
    )
    lines.append("")

    lines += ["## Per source", ""]
    lines.append(
        f"Per image, split `{metrics['split']}`; AUROC one class against the rest within the"
        f" source, with a {pct}% interval where the source has at least"
        f" {metrics['per_source_min_patients']} patients."
    )
    lines.append("")
    rows = []
    for s in metrics["per_source"]:
        classes_present = ", ".join(f"{c} {k}" for c, k in s["classes"].items())
        aurocs = [
            "—" if s["note"] == "one class only: AUROC undefined" else _cell(s["auroc"][c])
            for c in metrics["classes"]
        ]
        rows.append(
            [
                s["source"] if s["source"] is not None else "(no source)",
                s["n_images"],
                _patients_cell(s),
                classes_present,
                *aurocs,
                _cell(s["balanced_accuracy"]),
                s["note"] or "",
            ]
        )
    lines += _table(
        [
            "source",
            "images",
            "patients",
            "classes",
            *(f"AUROC {c}" for c in metrics["classes"]),
            "balanced accuracy",
            "note",
        ],
        rows,
    )
    lines.append("")

    figures = metrics.get("figures") or {}
    lines += ["## Calibration", ""]
    lines.append(
        f"Expected calibration error: top-label confidence in {metrics['ece_bins']} equal-width"
        " bins (a confidence of exactly 1 in a bin of its own), the L1 gap between accuracy and"
        " mean confidence weighted by the bins' shares of rows (torchmetrics'"
        f' `MulticlassCalibrationError(n_bins={metrics["ece_bins"]}, norm="l1")`).'
    )
    lines += [
        "",
        f"- per image: {_cell(metrics['image']['ece'])}",
        f"- per patient: {_cell(metrics['patient']['ece'])}",
        "",
    ]
    if "reliability" in figures:
        lines += [f"![reliability diagram]({figures['reliability']})", ""]
    lines += ["## ROC curves", ""]
    if "roc" in figures:
        lines += [f"![ROC curves]({figures['roc']})", ""]
    else:
        lines += [f"Figures not drawn: {metrics.get('figures_note') or 'none asked for'}.", ""]

    lines += ["## Confusion matrix", ""]
    for lvl in LEVELS:
        conf = metrics[lvl]["confusion"]
        labels = conf["labels"]
        lines += [f"Per {lvl}, rows true, columns predicted (argmax): counts, then row shares.", ""]
        lines += _table(
            ["true \\ predicted", *labels],
            [[labels[i], *row] for i, row in enumerate(conf["counts"])],
        )
        lines.append("")
        lines += _table(
            ["true \\ predicted", *labels],
            [
                [labels[i], *(_number(v, 2) if v is not None else "—" for v in row)]
                for i, row in enumerate(conf["normalized"])
            ],
        )
        lines.append("")
    if "confusion" in figures:
        lines += [f"![confusion matrices]({figures['confusion']})", ""]

    overlap = metrics.get("external_overlap")
    if overlap is not None:
        lines += ["## External overlap", ""]
        lines.append(
            f"{overlap['left_out']} images of this external set were left out before scoring:"
            f" {overlap['copies']} copies of training images (same pixels, a recorded copy or a"
            f" near copy) and {overlap['same_patient']} more images of patients who have images"
            " in training (the same patient id, or a patient linked through a copy)."
            + (f" Near copies judged by {overlap['near']}." if overlap.get("near") else "")
        )
        lines.append("")
    for section in sections:
        lines += [section.rstrip("\n"), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def headline(metrics: Mapping[str, Any]) -> list[str]:
    """A few lines for a terminal from a ``metrics.json`` dict: AUROC per class with its
    interval, balanced accuracy and ECE, per image and per patient.

    Example:
        >>> metrics = evaluate_predictions(frame, classes=["a", "b"])  # doctest: +SKIP
        >>> headline(metrics)[0]  # doctest: +SKIP
        'per image (117 images, 29 patients): AUROC a 0.910 [0.860, 0.951], b 0.906 ...'
    """
    lines = []
    for lvl in LEVELS:
        m = metrics[lvl]
        aurocs = ", ".join(f"{c} {_cell(e['auroc'])}" for c, e in m["classes"].items())
        lines.append(
            f"per {lvl} ({m['n_images']} images, {m['n_patients']} patients): AUROC {aurocs};"
            f" balanced accuracy {_cell(m['balanced_accuracy'])}; ECE {_cell(m['ece'])}"
        )
    fallback = sorted(
        {
            c
            for lvl in LEVELS
            for c, p in metrics[lvl]["operating_point"]["classes"].items()
            if p["source"] != "val"
        }
    )
    if fallback:
        lines.append(f"no validation threshold for {', '.join(fallback)}: rates at the argmax")
    if metrics.get("val_rows_scored"):
        lines.append("the operating point was chosen on the rows scored: its rates are optimistic")
    return lines


def summary_row(metrics: Mapping[str, Any], level: str = "image") -> dict[str, Any]:
    """One flat row of a ``metrics.json`` dict, for a table of runs (e.g. leave-one-source-out).

    Keys: ``n_images``, ``n_patients``, ``auroc_<class>`` (None where undefined),
    ``balanced_accuracy`` and ``ece``, at ``level`` (``"image"`` or ``"patient"``).

    Example:
        >>> metrics = evaluate_predictions(frame, classes=["a", "b"])  # doctest: +SKIP
        >>> sorted(summary_row(metrics))  # doctest: +SKIP
        ['auroc_a', 'auroc_b', 'balanced_accuracy', 'ece', 'n_images', 'n_patients']
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    m = metrics[level]
    row: dict[str, Any] = {"n_images": m["n_images"], "n_patients": m["n_patients"]}
    for c, e in m["classes"].items():
        row[f"auroc_{c}"] = e["auroc"]["value"]
    row["balanced_accuracy"] = m["balanced_accuracy"]["value"]
    row["ece"] = m["ece"]["value"]
    return row


# ------------------------------------------------------------------------------- main


def evaluate_predictions(
    predictions: pd.DataFrame,
    *,
    classes: Sequence[str],
    out: Path | str | None = None,
    split: str = "test",
    val_split: str = "val",
    val: pd.DataFrame | None = None,
    rule: str = "youden",
    title: str = "Evaluation",
    facts: Mapping[str, object] | None = None,
    sections: Sequence[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    severity: Sequence[str] | None = None,
    external_overlap: Overlap | Mapping[str, int] | None = None,
    figures: bool = True,
) -> dict[str, Any]:
    """Score the ``split`` rows of a predictions frame; write the report to ``out``.

    Args:
        predictions: One row per image: ``class`` (the target), ``prob_<c>`` for every class
            (softmax probabilities), ``split``, and where known ``uid``, ``source`` and
            ``patient_id`` (scoped; missing where the source names none).
        classes: The classes, in the model's order.
        out: A folder for ``metrics.json``, ``report.md`` and ``figures/*.png``, each written
            whole or not at all (a temporary file renamed); None writes nothing.
        split: The split scored.
        val_split: The split whose rows choose the operating point (never ``split``).
        val: Rows to choose the operating point on instead of the ``val_split`` rows (for an
            external set scored at the run's own validation operating point). Validation rows
            that are also scored (the same ``uid``: scoring validation itself) are counted in
            ``val_rows_scored`` and the report warns that the rates at the point are optimistic.
        rule: ``"youden"`` or ``"sensitivity:<target>"`` (:func:`metrics.operating_point`).
            Where validation has no rows or lacks a class, that class's rates use the argmax
            (recorded and reported).
        title: The report's title.
        facts: A small table at the top of the report (model, dataset, lock, epochs, ...).
        sections: Markdown sections appended to the report in order.
        n_boot: Patient-bootstrap resamples per interval (0: no intervals).
        seed: The bootstrap's seed.
        level: The intervals' coverage.
        severity: Classes from least to most severe, for a patient whose images disagree
            (default: ``classes``' order).
        external_overlap: For an external set: what was left out before scoring
            (:func:`covid19_images.evaluation.external.external_overlap`'s result, or its counts).
        figures: Draw the figures (needs matplotlib; without it the report says so).

    Returns:
        The metrics written to ``metrics.json`` (schema in ``docs/models.md``).

    Raises:
        EvaluationError: A missing ``prob_`` or ``class`` column, a class not in ``classes``,
            no rows for ``split``, a probability that is not finite or not in [0, 1], a bad
            ``rule``.

    Example:
        >>> frame = pd.read_parquet("runs/r1/predictions.parquet")  # doctest: +SKIP
        >>> m = evaluate_predictions(frame, classes=["covid19", "normal", "pneumonia"],
        ...                          out="runs/r1", title="resnet18")  # doctest: +SKIP
        >>> m["image"]["classes"]["covid19"]["auroc"]["value"]  # doctest: +SKIP
        0.93
    """
    names = _check_classes(classes)
    _check_rule(rule)
    if n_boot < 0:
        raise EvaluationError(f"n_boot must be 0 or more, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise EvaluationError(f"level must be in (0, 1), got {level}")
    if severity is not None and not set(names) <= {str(s) for s in severity}:
        raise EvaluationError(f"severity must list every class of {names}")
    frame = _columns(predictions, names, "the predictions frame")
    if "split" not in frame.columns:
        raise EvaluationError("the predictions frame lacks a 'split' column")
    splits = frame["split"].astype(str)
    scored = frame[splits == split].reset_index(drop=True)
    if len(scored) == 0:
        present = sorted(set(splits))
        raise EvaluationError(f"no rows for split {split!r} (splits present: {present})")
    _check_rows(scored, names, f"split {split!r}")
    if val is None:
        if val_split == split:
            raise EvaluationError(
                f"the operating point must be chosen on another split than the one scored"
                f" ({split!r})"
            )
        val_rows = frame[splits == val_split].reset_index(drop=True)
        _check_rows(val_rows, names, f"split {val_split!r}")
    else:
        val_rows = _columns(val, names, "the validation frame").reset_index(drop=True)
        _check_rows(val_rows, names, "the validation frame")
    shared = 0
    if "uid" in val_rows.columns and "uid" in scored.columns:
        shared = len(set(val_rows["uid"].dropna()) & set(scored["uid"].dropna()))

    severity_order = list(severity) if severity is not None else names
    views = {
        "image": (scored, val_rows),
        "patient": (
            _aggregate(scored, names, severity_order),
            _aggregate(val_rows, names, severity_order),
        ),
    }
    counts = _counts(scored)
    metrics: dict[str, Any] = {
        "version": SCHEMA_VERSION,
        "title": title,
        "split": split,
        "val_split": val_split if val is None else None,
        "classes": names,
        "rule": rule,
        "val_rows_scored": shared,
        "bootstrap": {"n": n_boot, "seed": seed, "level": level, "unit": "patient"},
        "ece_bins": ECE_BINS,
        "per_source_min_patients": MIN_UNITS_FOR_CI,
        "facts": dict(facts or {}),
    }
    curves: dict[str, Any] = {}
    for lvl in LEVELS:
        rows, val_level = views[lvl]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            points = _choose_points(val_level, names, rule, val_split if val is None else "val")
        metrics[lvl], curves[lvl] = _level(
            rows, names, points, len(val_level), n_boot, seed, level, len(scored), counts
        )
    metrics["patient"]["n_mixed_class_patients"] = _mixed(scored)
    metrics["per_source"] = _per_source(scored, names, n_boot, seed, level)
    metrics["external_overlap"] = _overlap_counts(external_overlap)
    metrics["figures"] = {}
    metrics["figures_note"] = None
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        if figures:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                metrics["figures_note"] = "matplotlib is not installed (pip install matplotlib)"
            else:
                _draw(folder, title, curves, metrics)
                metrics["figures"] = {**FIGURES, "confusion": FIGURES_CONFUSION}
        else:
            metrics["figures_note"] = "figures=False"
    else:
        metrics["figures_note"] = "no output folder"
    metrics = json_safe(metrics)
    if out is not None:
        folder = Path(out)
        report = render_report(metrics, sections=sections)
        write_with(folder / "report.md", lambda tmp: tmp.write_text(report, encoding="utf-8"))
        text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
        write_with(folder / "metrics.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return metrics


def _mixed(frame: pd.DataFrame) -> int:
    """Patients whose images carry more than one class."""
    keys = group_keys(frame)
    patients = keys.str.startswith("patient:")
    if not patients.any():
        return 0
    return int((frame["class"][patients].groupby(keys[patients]).nunique() > 1).sum())
