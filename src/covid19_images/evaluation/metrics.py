"""Evaluation metrics for a predictions frame, computed with scikit-learn.

A predictions frame (a run folder's ``predictions.parquet``) has one row per image: ``uid``,
``patient_id`` (missing where the source names no patient), ``class`` (the target's name) and
one ``prob_<class>`` column per class.

- :func:`operating_point` chooses a threshold on *validation* data (Youden's J, or the highest
  threshold that reaches a target sensitivity); the test split is only ever scored with it.
- :func:`one_vs_rest` gives, per class against the rest, AUROC and sensitivity, specificity,
  PPV and NPV at a given threshold (a score ``>= threshold`` is positive, as in
  :func:`sklearn.metrics.roc_curve`).
- :func:`per_patient` aggregates a frame to one row per patient.
- :func:`bootstrap_ci` is a percentile bootstrap that resamples whole patients (the cluster
  bootstrap), because images of one patient are not independent; :func:`bootstrap_cis` gives
  several metrics' intervals from the same resamples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

__all__ = [
    "BootstrapCI",
    "bootstrap_ci",
    "bootstrap_cis",
    "group_keys",
    "one_vs_rest",
    "operating_point",
    "per_patient",
]

PROB_PREFIX = "prob_"


def _binary(y_true: Any) -> np.ndarray[Any, np.dtype[np.bool_]]:
    y = np.asarray(y_true)
    if y.dtype != np.bool_:
        values = set(np.unique(y).tolist())
        if not values <= {0, 1}:
            raise ValueError(f"y_true must be boolean or 0/1, got values {sorted(values)[:5]}")
        y = y.astype(bool)
    return y


def _both_classes(y: np.ndarray[Any, np.dtype[np.bool_]]) -> bool:
    return bool(y.any() and not y.all())


def operating_point(y_true: Any, score: Any, rule: str = "youden") -> float:
    """The threshold for ``score >= threshold`` chosen by ``rule`` on validation data.

    ``rule`` is ``"youden"`` (the ROC point maximising Youden's J = sensitivity + specificity - 1,
    the highest such threshold on a tie) or ``"sensitivity:<target>"`` (e.g.
    ``"sensitivity:0.95"``: the highest threshold whose sensitivity on these data is at least the
    target, i.e. the best specificity among those reaching it). The ROC is scikit-learn's
    :func:`~sklearn.metrics.roc_curve`.

    >>> operating_point([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.8
    >>> operating_point([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], "sensitivity:1.0")
    0.35
    """
    y = _binary(y_true)
    s = np.asarray(score, dtype=float)
    if y.shape != s.shape:
        raise ValueError(f"y_true and score differ in shape: {y.shape} vs {s.shape}")
    if not _both_classes(y):
        raise ValueError("an operating point needs both positives and negatives")
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    if rule == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    name, _, value = rule.partition(":")
    if name == "sensitivity" and value:
        try:
            target = float(value)
        except ValueError:
            raise ValueError(f"bad sensitivity target in rule {rule!r}") from None
        if not 0.0 < target <= 1.0:
            raise ValueError(f"sensitivity target must be in (0, 1], got {target}")
        # tpr is non-decreasing as the threshold falls; the first index reaching the target is
        # the highest threshold that does.
        return float(thresholds[int(np.argmax(tpr >= target))])
    raise ValueError(f"unknown rule {rule!r}: use 'youden' or 'sensitivity:<target>'")


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _prob_column(frame: pd.DataFrame, name: str) -> str:
    column = PROB_PREFIX + name
    if column not in frame.columns:
        raise ValueError(f"the predictions frame has no {column!r} column")
    return column


def one_vs_rest(
    frame: pd.DataFrame, classes: Sequence[str], threshold_by_class: Mapping[str, float]
) -> dict[str, dict[str, float]]:
    """Per class, that class against the rest: AUROC and the rates at its threshold.

    For each class ``c`` the positives are rows with ``class == c`` and the score is
    ``prob_<c>``; a row is called positive when ``prob_<c> >= threshold_by_class[c]``. Returns
    ``{c: {"auroc", "sensitivity", "specificity", "ppv", "npv", "threshold", "n_positive",
    "n_negative"}}``; a value that is undefined on these rows (AUROC with one class present, a
    rate with a zero denominator) is NaN.
    """
    if "class" not in frame.columns:
        raise ValueError("the predictions frame has no 'class' column")
    unknown = set(frame["class"].dropna().unique()) - set(classes)
    if unknown:
        raise ValueError(f"classes not in {list(classes)}: {sorted(map(str, unknown))}")
    labels = frame["class"].to_numpy()
    result: dict[str, dict[str, float]] = {}
    for name in classes:
        if name not in threshold_by_class:
            raise ValueError(f"no threshold for class {name!r}")
        threshold = float(threshold_by_class[name])
        y = labels == name
        score = frame[_prob_column(frame, name)].to_numpy(dtype=float)
        auroc = float(roc_auc_score(y, score)) if _both_classes(y) else math.nan
        tn, fp, fn, tp = (
            int(v) for v in confusion_matrix(y, score >= threshold, labels=[False, True]).ravel()
        )
        result[name] = {
            "auroc": auroc,
            "sensitivity": _rate(tp, tp + fn),
            "specificity": _rate(tn, tn + fp),
            "ppv": _rate(tp, tp + fp),
            "npv": _rate(tn, tn + fn),
            "threshold": threshold,
            "n_positive": float(tp + fn),
            "n_negative": float(tn + fp),
        }
    return result


def _has_patient(frame: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.bool_]]:
    if "patient_id" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    ids = frame["patient_id"]
    present = ids.notna() & (ids.astype("string").str.strip() != "")
    return present.fillna(False).to_numpy(dtype=bool)


def group_keys(frame: pd.DataFrame) -> pd.Series:
    """The resampling/aggregation unit of each row: its patient, or the image itself.

    ``"patient:<patient_id>"`` where the row has a patient id, else ``"image:<uid>"`` (the
    row's index where there is no ``uid`` column), so an image without a patient is its own
    group.
    """
    has = _has_patient(frame)
    images = frame["uid"] if "uid" in frame.columns else pd.Series(frame.index, index=frame.index)
    keys = np.where(
        has,
        "patient:" + frame.get("patient_id", images).astype(str),
        "image:" + images.astype(str),
    )
    return pd.Series(keys, index=frame.index, name="group")


def per_patient(
    frame: pd.DataFrame,
    how: Literal["mean", "max"] = "mean",
    *,
    severity: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per patient: the patient's probabilities aggregated and its class.

    Rows with the same ``patient_id`` become one row whose ``prob_*`` columns are the ``mean``
    or ``max`` over the patient's images; rows without a patient id stay one row each (keyed by
    ``uid``). The patient's ``class`` is its images' class; where they disagree, it is the most
    severe one, ``severity`` listing classes from least to most severe (default: the order of
    the frame's ``prob_*`` columns, i.e. the model's class order). Columns: ``patient_id``
    (missing for an image without one), ``uid`` (the image's for those, else missing),
    ``n_images``, ``class`` and the ``prob_*`` columns, in order of first appearance.

    >>> f = pd.DataFrame({"uid": ["a", "b", "c"], "patient_id": ["p", "p", None],
    ...                   "class": ["normal", "covid", "normal"],
    ...                   "prob_normal": [0.8, 0.4, 0.3], "prob_covid": [0.2, 0.6, 0.7]})
    >>> per_patient(f, "max")[["patient_id", "uid", "class", "prob_covid"]]
      patient_id   uid   class  prob_covid
    0          p  <NA>   covid         0.6
    1       <NA>     c  normal         0.7
    """
    if how not in ("mean", "max"):
        raise ValueError(f"how must be 'mean' or 'max', got {how!r}")
    probs = [c for c in frame.columns if str(c).startswith(PROB_PREFIX)]
    if not probs:
        raise ValueError("the predictions frame has no prob_<class> columns")
    order = list(severity) if severity is not None else [c[len(PROB_PREFIX) :] for c in probs]
    rank = {name: i for i, name in enumerate(order)}

    def most_severe(values: pd.Series) -> Any:
        distinct = list(pd.unique(values.dropna()))
        if len(distinct) <= 1:
            return distinct[0] if distinct else None
        missing = [v for v in distinct if v not in rank]
        if missing:
            raise ValueError(f"classes {missing} are not in the severity order {order}")
        return max(distinct, key=lambda v: rank[v])

    keys = group_keys(frame)
    grouped = frame.groupby(keys, sort=False)
    out = grouped[probs].agg(how)
    out.insert(0, "class", grouped["class"].agg(most_severe))
    out.insert(0, "n_images", grouped.size())
    first = (~keys.duplicated()).to_numpy()  # first rows, in the groups' order
    single = ~_has_patient(frame)[first]
    firsts = frame.loc[first]
    uid = firsts["uid"] if "uid" in firsts.columns else pd.Series(firsts.index)
    patient = firsts["patient_id"] if "patient_id" in firsts.columns else uid
    uids = [str(v) if one else None for v, one in zip(uid, single, strict=True)]
    patients = [None if one else str(v) for v, one in zip(patient, single, strict=True)]
    out.insert(0, "uid", pd.Series(uids, index=out.index, dtype="string"))
    out.insert(0, "patient_id", pd.Series(patients, index=out.index, dtype="string"))
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class BootstrapCI:
    """A bootstrap interval; unpacks as ``point, low, high``.

    ``n`` resamples were drawn, ``skipped`` of them left out because the metric was undefined
    on them (NaN, or a ``ValueError``: e.g. AUROC on a resample holding one class only); the
    percentiles are over the ``n - skipped`` others.
    """

    point: float
    low: float
    high: float
    n: int
    skipped: int
    level: float

    def __iter__(self) -> Iterator[float]:
        return iter((self.point, self.low, self.high))


def _defined(metric_fn: Callable[[pd.DataFrame], float], frame: pd.DataFrame) -> float:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's UndefinedMetricWarning on one class
            value = float(metric_fn(frame))
    except ValueError:
        return math.nan
    return value


def bootstrap_ci(
    frame: pd.DataFrame,
    metric_fn: Callable[[pd.DataFrame], float],
    *,
    groups: Literal["patient_id"] | None = "patient_id",
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapCI:
    """Percentile bootstrap interval of ``metric_fn(frame)``.

    With ``groups="patient_id"`` whole patients are resampled with replacement (the cluster
    bootstrap; a row without a patient id is its own group, see :func:`group_keys`), so the
    interval reflects how many independent patients there are, not how many images.
    ``groups=None`` resamples rows. Resamples on which the metric is undefined are skipped and
    counted in ``skipped``; the point estimate is the metric on the whole frame.
    """
    if groups not in ("patient_id", None):
        raise ValueError(f"groups must be 'patient_id' or None, got {groups!r}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if len(frame) == 0:
        raise ValueError("cannot bootstrap an empty frame")
    point = _defined(metric_fn, frame)
    if math.isnan(point):
        raise ValueError("the metric is undefined on the whole frame")

    if groups is None:
        order = np.arange(len(frame))
        starts = order
        sizes = np.ones(len(frame), dtype=np.int64)
    else:
        codes, _ = pd.factorize(group_keys(frame), sort=False)
        order = np.argsort(codes, kind="stable")
        sizes = np.bincount(codes)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rng = np.random.default_rng(seed)
    values = np.empty(n)
    for i in range(n):
        pick = rng.integers(0, len(sizes), size=len(sizes))
        lengths = sizes[pick]
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows = order[np.repeat(starts[pick], lengths) + offsets]
        values[i] = _defined(metric_fn, frame.take(rows))
    kept = values[~np.isnan(values)]
    skipped = n - kept.size
    if kept.size == 0:
        raise ValueError(f"the metric was undefined on all {n} resamples")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(kept, [alpha, 1.0 - alpha])
    return BootstrapCI(point, float(low), float(high), n, int(skipped), level)


def bootstrap_cis(
    frame: pd.DataFrame,
    metrics_fn: Callable[[pd.DataFrame], Mapping[str, float]],
    *,
    groups: Literal["patient_id"] | None = "patient_id",
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, BootstrapCI]:
    """:func:`bootstrap_ci` for several metrics at once, computed on the same resamples.

    ``metrics_fn`` returns named values (e.g. the AUROC of every class and a balanced accuracy)
    and is called once on the whole frame and once per resample, so a costly shared step (one
    :func:`one_vs_rest` for all classes) runs once per resample. The resamples are
    :func:`bootstrap_ci`'s own (same ``groups``, ``n``, ``seed``): a single metric gets exactly
    the interval :func:`bootstrap_ci` gives it. Each name's ``skipped`` counts the resamples on
    which that value was NaN or missing (or ``metrics_fn`` raised ``ValueError``). A name whose
    value is NaN on the whole frame, or on every resample, gets NaN ``low`` and ``high``; the
    names are those of the whole frame's result.

    Example:
        >>> f = pd.DataFrame({"patient_id": ["p1", "p1", "p2", "p3"], "x": [1.0, 2.0, 3.0, 4.0]})
        >>> cis = bootstrap_cis(f, lambda g: {"mean": g["x"].mean(), "max": g["x"].max()}, n=200)
        >>> sorted(cis), cis["max"].point, cis["mean"].n
        (['max', 'mean'], 4.0, 200)
    """
    draws: list[dict[str, float]] = []

    def record(resample: pd.DataFrame) -> float:
        try:
            values = {str(k): float(v) for k, v in metrics_fn(resample).items()}
        except ValueError:
            values = {}
        draws.append(values)
        return 0.0  # bootstrap_ci skips nothing; each name counts its own undefined draws

    bootstrap_ci(frame, record, groups=groups, n=n, seed=seed, level=level)
    if len(draws) != n + 1:  # the whole frame, then each resample
        raise RuntimeError(f"expected {n + 1} evaluations, got {len(draws)}")
    point, resampled = draws[0], draws[1:]
    alpha = (1.0 - level) / 2.0
    result: dict[str, BootstrapCI] = {}
    for name, value in point.items():
        values = np.array([d.get(name, math.nan) for d in resampled], dtype=float)
        kept = values[~np.isnan(values)]
        if math.isnan(value) or kept.size == 0:
            result[name] = BootstrapCI(value, math.nan, math.nan, n, n - kept.size, level)
            continue
        low, high = np.quantile(kept, [alpha, 1.0 - alpha])
        result[name] = BootstrapCI(value, float(low), float(high), n, n - kept.size, level)
    return result
