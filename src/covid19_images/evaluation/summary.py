"""Per-source tables of metrics with patient-bootstrap intervals, shared by the dense tasks.

:func:`summarize` scores a frame of per-image (or per-patient) rows, whole and per source, with
:func:`~covid19_images.evaluation.metrics.bootstrap_cis`: whole patients are resampled, so the
intervals count patients, not images. :func:`per_patient_means` turns image rows into patient
rows. No torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from covid19_images.evaluation.metrics import _has_patient, bootstrap_cis, group_keys

__all__ = ["ALL_SOURCES", "SUMMARY_COLUMNS", "blocks", "nanmean", "per_patient_means", "summarize"]

ALL_SOURCES = "all"
"""The ``source`` of a summary row computed over every row."""

SUMMARY_COLUMNS = (
    "source",
    "metric",
    "value",
    "low",
    "high",
    "n",
    "groups",
    "skipped",
)
"""The columns of :func:`summarize`'s frame."""


def blocks(
    frame: pd.DataFrame,
    *,
    unit: Literal["image", "patient"] = "image",
    mean_columns: Sequence[str] = (),
    by_source: bool = True,
) -> dict[str, pd.DataFrame]:
    """The rows :func:`summarize` scores: ``"all"``, then each source's, as images or patients.

    With ``unit="patient"`` each block's images are first averaged per patient
    (:func:`per_patient_means` of ``mean_columns``), so a source's block holds its patients'
    means over that source's images only.

    Example:
        >>> f = pd.DataFrame({"patient_id": ["p", "p", "q"], "source": ["a", "b", "b"],
        ...                   "x": [1.0, 2.0, 4.0]})
        >>> {k: v["x"].tolist() for k, v in blocks(f, unit="patient", mean_columns=["x"]).items()}
        {'all': [1.5, 4.0], 'a': [1.0], 'b': [2.0, 4.0]}
    """
    if unit not in ("image", "patient"):
        raise ValueError(f"unit must be 'image' or 'patient', got {unit!r}")
    out: dict[str, pd.DataFrame] = {ALL_SOURCES: frame}
    if by_source and "source" in frame.columns:
        for source, rows in frame.groupby(frame["source"].astype(str), sort=True):
            if str(source) == ALL_SOURCES:
                raise ValueError(f"a source named {ALL_SOURCES!r} clashes with the overall block")
            out[str(source)] = rows
    if unit == "patient":
        out = {name: per_patient_means(rows, mean_columns) for name, rows in out.items()}
    return out


def summarize(
    frame: pd.DataFrame,
    metrics_fn: Callable[[pd.DataFrame], Mapping[str, float]],
    *,
    unit: Literal["image", "patient"] = "image",
    mean_columns: Sequence[str] = (),
    by_source: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """``metrics_fn`` on ``frame`` and on every source's rows, with patient-bootstrap intervals.

    Args:
        frame: one row per image, with ``patient_id`` (and ``uid``) for the resampling groups
            (:func:`~covid19_images.evaluation.metrics.group_keys`: a row without a patient is
            its own group) and, for ``by_source``, ``source``.
        metrics_fn: named values of a frame (called on the whole block and on each resample).
        unit: ``"image"``: ``metrics_fn`` sees image rows; ``"patient"``: one row per patient,
            the mean of ``mean_columns`` over its images (:func:`blocks`).
        mean_columns: the columns averaged per patient for ``unit="patient"``.
        by_source: also one block of rows per source (when ``frame`` has a ``source`` column).
        n_boot: bootstrap resamples per block (0: the values alone, NaN bounds).
        seed: the resampling seed (the same for every block).
        level: the interval's coverage.

    Returns:
        One row per block (``"all"`` first, then the sources) and metric: ``value`` on the
        block, ``low`` and ``high`` (NaN where undefined), ``n`` rows (images or patients) and
        ``groups`` (patients, or images without one) in the block, ``skipped`` resamples on
        which the metric was undefined.

    Example:
        >>> f = pd.DataFrame({"patient_id": ["p1", "p1", "p2", "p3"], "source": list("aabb"),
        ...                   "x": [1.0, 2.0, 3.0, 4.0]})
        >>> table = summarize(f, lambda g: {"mean_x": g["x"].mean()}, n_boot=100)
        >>> table[["source", "metric", "value", "n", "groups"]]
          source  metric  value  n  groups
        0    all  mean_x    2.5  4       3
        1      a  mean_x    1.5  2       1
        2      b  mean_x    3.5  2       2
    """
    records: list[dict[str, object]] = []
    for source, rows in blocks(
        frame, unit=unit, mean_columns=mean_columns, by_source=by_source
    ).items():
        groups = int(group_keys(rows).nunique())
        if n_boot == 0:  # the values alone, no interval
            values = {str(k): float(v) for k, v in metrics_fn(rows).items()}
            bounds = {k: (v, math.nan, math.nan, 0) for k, v in values.items()}
        else:
            cis = bootstrap_cis(rows, metrics_fn, n=n_boot, seed=seed, level=level)
            bounds = {k: (c.point, c.low, c.high, c.skipped) for k, c in cis.items()}
        for name, (value, low, high, skipped) in bounds.items():
            records.append(
                {
                    "source": source,
                    "metric": name,
                    "value": value,
                    "low": low,
                    "high": high,
                    "n": len(rows),
                    "groups": groups,
                    "skipped": skipped,
                }
            )
    return pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))


def per_patient_means(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One row per patient: the mean of ``columns`` over its images (NaN left out).

    Rows without a patient id stay one row each. The other columns kept are ``patient_id``,
    ``uid`` (for rows without a patient), ``source`` (the patient's first image's) and
    ``n_images``.

    Example:
        >>> f = pd.DataFrame({"uid": ["a", "b", "c"], "patient_id": ["p", "p", None],
        ...                   "dice": [0.5, float("nan"), 0.9]})
        >>> per_patient_means(f, ["dice"])[["patient_id", "uid", "n_images", "dice"]]
          patient_id   uid  n_images  dice
        0          p  <NA>         2   0.5
        1       <NA>     c         1   0.9
    """
    keys = group_keys(frame)
    grouped = frame.groupby(keys, sort=False)
    out = grouped[list(columns)].mean()  # pandas' mean skips NaN
    out.insert(0, "n_images", grouped.size())
    first_rows = (~keys.duplicated()).to_numpy()
    first = frame.loc[first_rows]
    has_patient = _has_patient(frame)[first_rows]
    if "source" in first.columns:
        out.insert(0, "source", first["source"].to_numpy())
    uid = first["uid"] if "uid" in first.columns else pd.Series(first.index, index=first.index)
    patient = first["patient_id"] if "patient_id" in first.columns else uid
    uids = [None if has else str(v) for v, has in zip(uid, has_patient, strict=True)]
    patients = [str(v) if has else None for v, has in zip(patient, has_patient, strict=True)]
    out.insert(0, "uid", pd.Series(uids, index=out.index, dtype="string"))
    out.insert(0, "patient_id", pd.Series(patients, index=out.index, dtype="string"))
    return out.reset_index(drop=True)


def nanmean(values: pd.Series) -> float:
    """The mean of the defined (non-NaN) values; NaN when there are none.

    Example:
        >>> nanmean(pd.Series([1.0, float("nan"), 3.0]))
        2.0
    """
    array = values.to_numpy(dtype=float)
    defined = array[~np.isnan(array)]
    return float(defined.mean()) if defined.size else math.nan


def bootstrap_note(n_boot: int, item: str = "image") -> str:
    """The sentence a report gives about its intervals.

    Example:
        >>> bootstrap_note(0)
        'No intervals (no bootstrap resamples).'
        >>> bootstrap_note(1000, "volume")[:52]
        'Intervals: 95% percentile bootstrap over 1000 resamp'
    """
    if n_boot < 1:
        return "No intervals (no bootstrap resamples)."
    article = "an" if item[:1] in ("a", "e", "i", "o", "u") else "a"
    return (
        f"Intervals: 95% percentile bootstrap over {n_boot} resamples of whole patients "
        f"({article} {item} without a patient id is its own)."
    )
