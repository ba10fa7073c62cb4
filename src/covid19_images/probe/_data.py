"""Shared pieces of the probes: a split's images with their manifest rows, thumbnails, the
logistic regression they fit, and bootstrap helpers."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from PIL import Image
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from covid19_images.atomic import json_safe
from covid19_images.evaluation.metrics import BootstrapCI, bootstrap_ci
from covid19_images.loaders.packed import open_split

MANIFEST_COLUMNS = (
    "uid",
    "source",
    "patient_id",
    "age",
    "sex",
    "tags",
    "mask_paths",
    "width",
    "height",
    "view",
)
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Inverse regularisation strengths tried on the validation split (standardised pixels)."""
DEFAULT_C = 1e-2
"""Used when the validation split cannot choose (fewer than two classes in it)."""


@dataclass
class SplitRows:
    """One split as packed (``images``, N x S x S uint8) and one manifest row per array row."""

    split: str
    images: np.ndarray
    rows: pd.DataFrame
    classes: list[str]
    size: int


def read_manifest(folder: Path) -> pd.DataFrame:
    """The manifest columns the probes use (absent ones filled with missing values).

    Example:
        >>> read_manifest(Path("datasets/xray-covid")).columns[:3].tolist()  # doctest: +SKIP
        ['uid', 'source', 'patient_id']
    """
    manifest = pd.read_parquet(folder / "manifest.parquet")
    for column in MANIFEST_COLUMNS:
        if column not in manifest.columns:
            manifest[column] = None
    return manifest[list(MANIFEST_COLUMNS) + (["class"] if "class" in manifest else [])]


def load_split(folder: Path | str, split: str, manifest: pd.DataFrame | None = None) -> SplitRows:
    """The packed ``split`` of ``folder`` and, per array row, its manifest row.

    ``class`` comes from the packed labels (what the arrays hold); the other columns from the
    manifest, joined on ``uid`` (a CT slice gets its volume's row).

    Example:
        >>> test = load_split("datasets/xray-covid", "test")  # doctest: +SKIP
        >>> test.images.shape, test.rows["source"].iloc[0]  # doctest: +SKIP
        ((117, 64, 64), 'actualmed')
    """
    folder = Path(folder)
    packed = open_split(folder, split)
    manifest = read_manifest(folder) if manifest is None else manifest
    base = pd.DataFrame({"uid": packed.uids})
    meta = manifest.drop(columns=["class"], errors="ignore").drop_duplicates("uid")
    rows = base.merge(meta, on="uid", how="left", validate="many_to_one")
    rows["class"] = [packed.classes[int(k)] for k in packed.labels]
    rows["patient_id"] = rows["patient_id"].astype("string")
    rows["source"] = rows["source"].astype("string").fillna("unknown")
    return SplitRows(split, packed.images, rows, packed.classes, packed.size)


def thumbnails(images: np.ndarray, side: int = 32, chunk: int = 1024) -> np.ndarray:
    """Area-downscaled ``side`` x ``side`` copies of ``images`` (N x S x S uint8), flattened to
    N x side² float32 in [0, 1].

    When ``side`` divides S this is the mean of each block of pixels (what Pillow's ``BOX``
    filter gives too); otherwise Pillow's ``BOX`` resampling.

    Example:
        >>> images = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
        >>> (thumbnails(images, side=2) * 255).round(3).tolist()
        [[2.5, 4.5, 10.5, 12.5]]
    """
    n, size = len(images), int(images.shape[-1]) if images.ndim == 3 else side
    out = np.empty((n, side * side), dtype=np.float32)
    for start in range(0, n, chunk):
        block = np.asarray(images[start : start + chunk])
        if size == side:
            small = block.astype(np.float32)
        elif size % side == 0:
            f = size // side
            small = block.reshape(len(block), side, f, side, f).mean(axis=(2, 4), dtype=np.float32)
        else:
            small = np.stack(
                [
                    np.asarray(
                        Image.fromarray(img).resize((side, side), Image.Resampling.BOX),
                        dtype=np.float32,
                    )
                    for img in block
                ]
            )
        out[start : start + len(block)] = small.reshape(len(block), -1) / 255.0
    return out


def subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Row indices: all ``n`` rows, or ``limit`` of them drawn without replacement (sorted).

    Example:
        >>> subsample(4, None, 0).tolist(), len(subsample(100, 10, 0))
        ([0, 1, 2, 3], 10)
    """
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


@dataclass
class Fitted:
    """A standardised logistic regression and how its ``C`` was chosen."""

    model: Pipeline
    c: float
    val_scores: dict[float, float]
    converged: bool


def fit_logistic(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    score: Callable[[Pipeline, np.ndarray, np.ndarray], float],
    *,
    class_weight: str | None = None,
    grid: Sequence[float] = C_GRID,
) -> Fitted:
    """Fit pixels standardised on train + logistic regression for each ``C`` of ``grid``, keep
    the one whose ``score`` on validation is highest (the strongest regularisation on a tie).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(40, 3)); y = (x[:, 0] > 0).astype(int)
        >>> acc = lambda m, xv, yv: float((m.predict(xv) == yv).mean())
        >>> fit_logistic(x, y, x, y, acc).val_scores[1.0]
        1.0
    """

    def fit(c: float) -> tuple[Pipeline, bool]:
        model = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=c, max_iter=1000, class_weight=class_weight),
        )
        # One BLAS thread: these fits are small, and several threads spinning on a busy
        # machine make them a hundred times slower.
        with warnings.catch_warnings(record=True) as caught, threadpool_limits(1):
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(x_train, y_train)
        return model, not any(issubclass(w.category, ConvergenceWarning) for w in caught)

    scores: dict[float, float] = {}
    best: tuple[Pipeline, float, bool] | None = None
    if len(x_val) and len(np.unique(y_val)) >= 2:
        for c in sorted(grid):
            model, converged = fit(c)
            value = score(model, x_val, y_val)
            scores[c] = value
            if not math.isnan(value) and (best is None or value > scores[best[1]]):
                best = (model, c, converged)
    if best is None:
        model, converged = fit(DEFAULT_C)
        best = (model, DEFAULT_C, converged)
    return Fitted(best[0], best[1], scores, best[2])


def metric_frame(rows: pd.DataFrame, **columns: Any) -> pd.DataFrame:
    """``uid``, ``patient_id`` and ``class`` of ``rows`` plus ``columns``, for the bootstrap.

    Example:
        >>> rows = pd.DataFrame({"uid": ["a"], "patient_id": ["p"], "class": ["x"], "age": [3]})
        >>> metric_frame(rows, prob_x=[0.9]).columns.tolist()
        ['uid', 'patient_id', 'class', 'prob_x']
    """
    frame = rows[["uid", "patient_id", "class"]].reset_index(drop=True).copy()
    for name, values in columns.items():
        frame[name] = np.asarray(values)
    return frame


def auroc_ci(
    frame: pd.DataFrame, positive: str, score: str, *, label: str = "class", n: int, seed: int
) -> BootstrapCI | None:
    """Patient-bootstrap AUROC of ``frame[score]`` for ``frame[label] == positive``; None where
    the AUROC is undefined (one class only).

    Example:
        >>> f = pd.DataFrame({"uid": list("abcd"), "patient_id": list("pqrs"),
        ...                   "class": ["x", "y", "x", "y"], "s": [0.9, 0.1, 0.8, 0.3]})
        >>> auroc_ci(f, "x", "s", n=20, seed=0).point
        1.0
    """
    y = (frame[label] == positive).to_numpy()
    if y.all() or not y.any():
        return None

    def metric(f: pd.DataFrame) -> float:
        truth = f[label].to_numpy() == positive
        return float(roc_auc_score(truth, f[score].to_numpy(dtype=float)))

    with fast_sklearn():
        return bootstrap_ci(frame, metric, n=n, seed=seed)


def fast_sklearn() -> AbstractContextManager[None]:
    """scikit-learn without its argument validation, for metrics called thousands of times on
    arrays that are already checked (the bootstrap's resamples).

    Example:
        >>> with fast_sklearn():
        ...     float(roc_auc_score([0, 1], [0.2, 0.7]))
        1.0
    """
    context: AbstractContextManager[None] = sklearn.config_context(
        skip_parameter_validation=True, assume_finite=True
    )
    return context


def auroc_point(frame: pd.DataFrame, positive: str, score: str) -> float | None:
    """AUROC of ``frame[score]`` for ``frame["class"] == positive``; None where undefined.

    Example:
        >>> auroc_point(pd.DataFrame({"class": ["a", "b", "a"], "s": [0.9, 0.1, 0.4]}), "a", "s")
        1.0
    """
    y = (frame["class"] == positive).to_numpy()
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, frame[score].to_numpy(dtype=float)))


def ci_or_none(
    frame: pd.DataFrame, metric: Callable[[pd.DataFrame], float], *, n: int, seed: int
) -> BootstrapCI | None:
    """:func:`bootstrap_ci`, or None where the metric is undefined on the whole frame.

    Example:
        >>> ci_or_none(pd.DataFrame(), lambda f: 1.0, n=10, seed=0) is None
        True
    """
    if len(frame) == 0:
        return None
    try:
        with warnings.catch_warnings(), fast_sklearn():
            warnings.simplefilter("ignore")
            return bootstrap_ci(frame, metric, n=n, seed=seed)
    except ValueError:
        return None


def ci_dict(ci: BootstrapCI | None) -> dict[str, float | int] | None:
    """A bootstrap interval as JSON (``value``, ``low``, ``high``, ``level``, ``n``,
    ``skipped``), or None.

    Example:
        >>> ci_dict(BootstrapCI(0.9, 0.8, 0.95, 100, 2, 0.95))["low"]
        0.8
    """
    if ci is None:
        return None
    return {
        "value": ci.point,
        "low": ci.low,
        "high": ci.high,
        "level": ci.level,
        "n": ci.n,
        "skipped": ci.skipped,
    }


def json_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`json_safe` of a mapping, typed as a dict.

    Example:
        >>> json_dict({"x": float("inf")})
        {'x': None}
    """
    safe: dict[str, Any] = json_safe(value)
    return safe


def fmt_ci(ci: BootstrapCI | None, digits: int = 2) -> str:
    """``0.91 [0.85, 0.96]``, or ``n/a``.

    Example:
        >>> fmt_ci(BootstrapCI(0.912, 0.851, 0.958, 1000, 0, 0.95))
        '0.91 [0.85, 0.96]'
    """
    if ci is None:
        return "n/a"
    return f"{ci.point:.{digits}f} [{ci.low:.{digits}f}, {ci.high:.{digits}f}]"


def fmt(value: float | None, digits: int = 2, percent: bool = False) -> str:
    """A number for a table, ``n/a`` when missing.

    Example:
        >>> fmt(0.4567), fmt(0.4567, percent=True), fmt(float("nan"))
        ('0.46', '46%', 'n/a')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.0%}" if percent else f"{value:.{digits}f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table.

    Example:
        >>> print(md_table(["a", "b"], [["1", "2"]]))
        | a | b |
        |---|---|
        | 1 | 2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
