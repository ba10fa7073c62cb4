"""Severity regression in the trainer: float scores per image, a classification backbone with
a linear head, and MAE, R² and Pearson r with patient-bootstrap intervals (research use only).

A regression dataset (``packed.json`` says ``"task": "regression"`` and names its
``targets``, as ``xray-severity`` writes them: ieee8023's geographic extent 0-8 and opacity
0-6, each the mean of three raters) packs float targets beside every image. The model is a
registry classifier built with ``task="regression"``
(:func:`covid19_images.models.create`): one unbounded output per target.

**Loss.** Mean squared error on targets *standardised* by the training split's mean and
standard deviation, per target (``standardize`` in ``config.json``); predictions are
de-standardised (``output * std + mean``) before anything is written or scored. Standardising
gives both scores the same weight whatever their range, and on this scale a model that always
predicts the training mean has a loss of about 1 (exactly 1 on the training split), so the
loss reads as "one minus R²". MSE rather than smooth-L1 because the targets are bounded means
of three raters, without the outliers a robust loss guards against. A missing target (NaN) is
left out of the loss.

**Validation** scores minus the mean absolute error over targets, in score points
(``neg_mae``: higher is better); the validation loss is the standardised MSE.

**Evaluation** (``evaluate`` on the run's own val or test split) writes ``metrics.json``,
``report.md`` and ``figures/scatter.png``: MAE, R² and Pearson r of every target
(:func:`covid19_images.evaluation.regression.summarize_regression`), per image and per patient,
overall and per source, with 95% patient-bootstrap intervals; the same for a constant baseline
(the training mean, on the same rows and resamples) and the MAE the model gains over it; and
the published figures on these scores beside them (:data:`ANCHORS`).

Example:
    >>> standardize(np.array([[2.0, 1.0], [4.0, 3.0]]), [3.0, 2.0], [1.0, 0.5]).tolist()
    [[-1.0, -2.0], [1.0, 2.0]]
    >>> destandardize(np.array([[-1.0, -2.0]]), [3.0, 2.0], [1.0, 0.5]).tolist()
    [[2.0, 1.0]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from covid19_images.atomic import json_safe, write_json, write_text, write_with
from covid19_images.evaluation.regression import PREDICTION_PREFIX
from covid19_images.evaluation.summary import bootstrap_note
from covid19_images.training.config import NotTrainableError, TrainConfig, TrainError
from covid19_images.training.data import Part, in_order, open_part, prepare
from covid19_images.training.tasks import Setting, Task

if TYPE_CHECKING:
    import torch

    from covid19_images.training.run import Run

BASELINE_PREFIX: Final = "base_"
"""Column of the constant baseline's prediction of a target (the training mean)."""

SPREAD_SUFFIXES: Final = ("_sd", "_std", "_spread")
"""Manifest columns ``<target><suffix>`` (the raters' spread) copied into the predictions
where a dataset carries them; ``xray-severity`` does not (upstream publishes only means)."""

LOSS: Final = "mse on targets standardised by the training split's mean and std"
"""What ``config.json`` records as the loss."""

ANCHORS: Final = (
    {
        "study": "Cohen et al. 2020 (Cureus 12:e9448)",
        "data": "the 94 ieee8023 images with these scores, cross-validation over all of them",
        "weights": "TorchXRayVision DenseNet-121 pretrained on chest X-rays, then a linear fit",
        "size": "224 px",
        "metric": "mae",
        "values": {"geographic_extent": 1.14, "opacity": 0.78},
    },
    {
        "study": "COVID-Net S (Wong et al. 2021, Sci Rep 11:9315)",
        "data": "396 X-rays of SARS-CoV-2 positive cases scored by its own radiologists, "
        "Monte Carlo cross-validation",
        "weights": "COVID-Net networks (the authors' chest X-ray architecture), transferred "
        "from chest X-ray training",
        "size": "480 px",
        "metric": "r2",
        "values": {"geographic_extent": 0.66, "opacity": 0.64},
    },
)
"""Published figures for ``geographic_extent`` and ``opacity``, shown beside a run's."""


def standardize(values: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Targets (N x T) on the standardised scale the model is trained on.

    Example:
        >>> standardize(np.array([[5.0]]), [3.0], [2.0]).tolist()
        [[1.0]]
    """
    scaled = (np.asarray(values, dtype=np.float64) - np.asarray(mean)) / np.asarray(std)
    return np.asarray(scaled, dtype=np.float64)


def destandardize(outputs: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Model outputs (N x T) back in score points: ``output * std + mean``.

    Example:
        >>> destandardize(np.array([[1.0]]), [3.0], [2.0]).tolist()
        [[5.0]]
    """
    scores = np.asarray(outputs, dtype=np.float64) * np.asarray(std) + np.asarray(mean)
    return np.asarray(scores, dtype=np.float64)


def target_stats(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Per target mean and standard deviation (population, NaN left out) of training targets
    (N x T); a constant or empty target gets a standard deviation of 1.

    Example:
        >>> target_stats(np.array([[1.0, 2.0], [3.0, 2.0]]))
        ([2.0, 2.0], [1.0, 1.0])
    """
    values = np.asarray(values, dtype=np.float64)
    means, stds = [], []
    for column in values.T:
        finite = column[np.isfinite(column)]
        mean = float(finite.mean()) if finite.size else 0.0
        std = float(finite.std()) if finite.size else 0.0
        means.append(mean)
        stds.append(std if std > 1e-12 else 1.0)
    return means, stds


def part_targets(part: Part) -> np.ndarray:
    """The packed float targets (N x T) of the rows of ``part``, in its order."""
    blocks = []
    for dataset, rows in part.segments:
        packed = dataset.packed_split()
        if packed.targets is None:
            raise TrainError(f"{dataset.folder} packs no regression targets: rebuild it")
        blocks.append(np.asarray(packed.targets)[rows])
    return np.concatenate(blocks) if blocks else np.zeros((0, 0), dtype=np.float32)


def predict(
    model: torch.nn.Module,
    part: Part,
    setting: Setting,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[np.ndarray, np.ndarray, float]:
    """Predicted and true scores (N x T, score points) of every row of ``part`` in order,
    and the mean standardised squared error; the model runs in eval mode without gradients."""
    import torch

    model.eval()
    outputs, truth = [], []
    with torch.inference_mode():
        for images, targets in in_order(part, 2 * setting.batch_size):
            x = prepare(images, setting.size, setting.mean, setting.std, setting.device)
            outputs.append(model(x).float().cpu().numpy())
            truth.append(targets.numpy())
    count = len(mean)
    if not outputs:
        empty = np.zeros((0, count))
        return empty, empty, 0.0
    out, true = np.concatenate(outputs), np.concatenate(truth).astype(np.float64)
    scaled = standardize(true, mean, std)
    keep = np.isfinite(scaled)
    loss = float(np.mean((out[keep] - scaled[keep]) ** 2)) if keep.any() else 0.0
    return destandardize(out, mean, std), true, loss


def mean_mae(predicted: np.ndarray, truth: np.ndarray) -> float:
    """The mean over targets of each target's mean absolute error (NaN targets left out).

    Example:
        >>> mean_mae(np.array([[1.0, 0.0], [2.0, 1.0]]), np.array([[1.0, 1.0], [4.0, 1.0]]))
        0.75
    """
    errors = np.abs(np.asarray(predicted, float) - np.asarray(truth, float))
    per_target = [float(np.mean(c[np.isfinite(c)])) for c in errors.T if np.isfinite(c).any()]
    return float(np.mean(per_target)) if per_target else math.nan


def standardization(record: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The training split's target mean and standard deviation that ``config.json`` records."""
    try:
        stats = record["standardize"]
        return [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]
    except (KeyError, TypeError):
        raise TrainError("config.json lacks the targets' standardisation: train it again") from None


class RegressionTask(Task):
    """Float scores per image: a registry classifier with a linear regression head, MSE on
    standardised targets, minus the mean MAE on val, one row of true and predicted scores per
    val and test image."""

    name = "regression"
    model_task = "regression"
    evaluator = "covid19_images.training.regression:evaluate_regression"

    def __init__(self) -> None:
        self.names: list[str] = []
        self.mean: list[float] = []
        self.std: list[float] = []

    def outputs(self, folder: Path, facts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        from covid19_images.loaders.packed import LoadError, open_split

        try:
            train = open_split(folder, "train")
        except LoadError as exc:
            raise TrainError(str(exc)) from None
        if not train.target_names or train.targets is None:
            raise NotTrainableError(f"{folder} is a regression dataset without targets: rebuild it")
        self.names = list(train.target_names)
        self.mean, self.std = target_stats(train.targets)
        described = {
            "targets": self.names,
            "standardize": {"mean": self.mean, "std": self.std},
            "loss": LOSS,
        }
        return len(self.names), described

    def min_size(self, model: str) -> int:
        from covid19_images.models.registry import get_spec

        return get_spec(model).min_size

    def check(self, parts: dict[str, Part], classes: list[str]) -> None:
        super().check(parts, classes)
        if not np.isfinite(part_targets(parts["train"])).any():
            raise NotTrainableError("the training split has no target values: nothing to fit")

    def model(self, config: TrainConfig, outputs: int, record: dict[str, Any]) -> torch.nn.Module:
        from covid19_images.models import create

        # A resumed run keeps the standardisation it was trained with.
        self.names = [str(n) for n in record["targets"]]
        self.mean, self.std = standardization(record)
        return create(
            config.model, outputs, in_chans=1, pretrained=config.pretrained, task="regression"
        )

    def loss(
        self, model: torch.nn.Module, batch: Any, setting: Setting
    ) -> tuple[torch.Tensor, int]:
        import torch

        images, targets = batch
        x = prepare(images, setting.size, setting.mean, setting.std, setting.device)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=setting.device)
        std = torch.tensor(self.std, dtype=torch.float32, device=setting.device)
        y = (targets.to(setting.device, dtype=torch.float32) - mean) / std
        out = model(x).float()
        keep = torch.isfinite(y)
        squared = torch.where(keep, out - torch.nan_to_num(y), torch.zeros_like(out)) ** 2
        return squared.sum() / keep.sum().clamp(min=1), len(targets)

    def validate(
        self, model: torch.nn.Module, part: Part, setting: Setting
    ) -> tuple[float, str, float]:
        predicted, truth, loss = predict(model, part, setting, self.mean, self.std)
        return -mean_mae(predicted, truth), "neg_mae", loss

    def predictions(
        self,
        run_dir: Path,
        model: torch.nn.Module,
        parts: dict[str, Part],
        setting: Setting,
        record: dict[str, Any],
    ) -> pd.DataFrame:
        """One row per val and test image: ``uid``, ``split``, ``source``, ``patient_id``, each
        target's true value and ``pred_<target>`` (and the raters' spread where packed)."""
        mean, std = standardization(record)
        names = [str(n) for n in record["targets"]]
        frames = [
            prediction_rows(model, parts[split], setting, names, mean, std).assign(split=split)
            for split in ("val", "test")
        ]
        predictions = pd.concat(frames, ignore_index=True)
        return predictions[prediction_columns(predictions, names)]


def prediction_rows(
    model: torch.nn.Module,
    part: Part,
    setting: Setting,
    names: list[str],
    mean: Sequence[float],
    std: Sequence[float],
) -> pd.DataFrame:
    """The facts of every row of ``part`` with its true and predicted scores."""
    predicted, truth, _ = predict(model, part, setting, mean, std)
    frame = part.facts.drop(columns=["label", "class"]).reset_index(drop=True)
    spread = _spread(part, names)
    for k, name in enumerate(names):
        frame[name] = truth[:, k] if len(truth) else np.zeros(0)
        frame[PREDICTION_PREFIX + name] = predicted[:, k] if len(predicted) else np.zeros(0)
    for column, values in spread.items():
        frame[column] = values
    return frame


def prediction_columns(frame: pd.DataFrame, names: list[str]) -> list[str]:
    """The columns of ``predictions.parquet``, in order.

    Example:
        >>> f = pd.DataFrame(columns=["uid", "split", "source", "patient_id", "x", "pred_x"])
        >>> prediction_columns(f, ["x"])
        ['uid', 'split', 'source', 'patient_id', 'x', 'pred_x']
    """
    columns = ["uid", "split", "source", "patient_id"]
    columns += ["slice"] if "slice" in frame else []
    for name in names:
        columns += [name, PREDICTION_PREFIX + name]
        columns += [name + s for s in SPREAD_SUFFIXES if name + s in frame]
    return columns


def _spread(part: Part, names: list[str]) -> dict[str, np.ndarray]:
    """Manifest columns of the raters' spread (``<target>_sd`` ...) for the rows of ``part``."""
    wanted = [n + s for n in names for s in SPREAD_SUFFIXES]
    if not part.segments:
        return {}
    from covid19_images.training.data import read_manifest

    manifest = read_manifest(part.segments[0][0].folder)
    present = [c for c in wanted if c in manifest.columns]
    if not present:
        return {}
    first = manifest.drop_duplicates("uid").set_index("uid")
    return {c: first.loc[part.facts["uid"], c].to_numpy(dtype=np.float64) for c in present}


def evaluate_regression(
    run: Run,
    *,
    dataset: Path | str | None = None,
    split: str = "test",
    out: Path | str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """MAE, R² and Pearson r of a regression run's ``split`` of its own dataset, per image and
    per patient, overall and per source, with patient-bootstrap intervals; a constant baseline
    (the training mean) on the same rows; ``metrics.json``, ``report.md`` and
    ``figures/scatter.png`` in :func:`~covid19_images.training.assess.evaluation_folder`.

    Val and test rows come from ``predictions.parquet``; another split (``train``) is
    predicted with the run's best weights.

    Example:
        >>> run = load_run("runs/xray-severity-resnet18-s0")  # doctest: +SKIP
        >>> metrics = evaluate_regression(run)  # doctest: +SKIP
        >>> [r["value"] for r in metrics["image"] if r["metric"] == "mae_opacity"]  # doctest: +SKIP
        [0.83]
    """
    from covid19_images.evaluation.regression import summarize_regression
    from covid19_images.evaluation.summary import summarize
    from covid19_images.training.assess import evaluation_folder, refuse_external

    refuse_external(run, dataset)
    names = [str(n) for n in run.config.get("targets", [])]
    mean, std = standardization(run.config)
    if not names:
        raise TrainError(f"{run.path}/config.json names no targets: the run folder is damaged")
    own = run.predictions()
    rows = own[own["split"] == split].reset_index(drop=True)
    if rows.empty:
        rows = _predict_split(run, split, names, mean, std, device)
    if rows.empty:
        raise TrainError(f"{run.path}: split {split!r} of its dataset holds no images")
    target = evaluation_folder(run, dataset=dataset, split=split, out=out)
    bases = [BASELINE_PREFIX + n for n in names]
    preds = [PREDICTION_PREFIX + n for n in names]
    rows = rows.assign(**{b: m for b, m in zip(bases, mean, strict=True)})

    def gain(frame: pd.DataFrame) -> dict[str, float]:
        values: dict[str, float] = {}
        for name, pred, base in zip(names, preds, bases, strict=True):
            keep = frame[[name, pred]].notna().all(axis=1)
            true = frame.loc[keep, name].to_numpy(float)
            model_mae = np.abs(frame.loc[keep, pred].to_numpy(float) - true)
            base_mae = np.abs(frame.loc[keep, base].to_numpy(float) - true)
            values[f"mae_gain_{name}"] = (
                float(base_mae.mean() - model_mae.mean()) if keep.any() else math.nan
            )
        return values

    patients = int(rows["patient_id"].dropna().nunique())
    metrics: dict[str, Any] = {
        "version": 1,
        "task": "regression",
        "title": f"{run.model_name} on {run.config['dataset']['recipe']}",
        "split": split,
        "targets": names,
        "model": run.model_name,
        "size": run.size,
        "pretrained": run.config["train"].get("pretrained", False),
        "epochs_run": run.config.get("epochs_run"),
        "n_images": len(rows),
        "n_patients": patients,
        "standardize": {"mean": mean, "std": std},
        "loss": run.config.get("loss", LOSS),
        "bootstrap": {"n": n_boot, "seed": seed, "level": 0.95, "unit": "patient"},
        "baseline": {"prediction": dict(zip(names, mean, strict=True))},
        "gain": {},
        "anchors": [dict(a) for a in ANCHORS] if set(ANCHORS[0]["values"]) <= set(names) else [],
    }
    for unit in ("image", "patient"):
        table = summarize_regression(rows, names, unit=unit, n_boot=n_boot, seed=seed)
        baseline = summarize_regression(rows, names, bases, unit=unit, n_boot=n_boot, seed=seed)
        columns = [*names, *preds, *bases]
        gains = summarize(rows, gain, unit=unit, mean_columns=columns, n_boot=n_boot, seed=seed)
        metrics[unit] = json_safe(table.to_dict("records"))
        metrics["baseline"][unit] = json_safe(baseline.to_dict("records"))
        metrics["gain"][unit] = json_safe(gains.to_dict("records"))
    write_scatter(target / "figures" / "scatter.png", rows, names, split, baseline=mean)
    write_json(target / "metrics.json", metrics)
    write_text(target / "report.md", render_regression_report(metrics, run))
    return metrics


def _predict_split(
    run: Run, split: str, names: list[str], mean: list[float], std: list[float], device: str
) -> pd.DataFrame:
    """Prediction rows of another split of the run's dataset, with its best weights."""
    from covid19_images.training.data import resolve_device

    where = resolve_device(device)
    part = open_part(run.dataset, split)
    setting = Setting(size=run.size, mean=run.mean, std=run.std, device=where, batch_size=32)
    frame = prediction_rows(run.model(device=where), part, setting, names, mean, std)
    frame = frame.assign(split=split)
    return frame[prediction_columns(frame, names)]


def write_scatter(
    path: Path,
    rows: pd.DataFrame,
    names: list[str],
    split: str,
    baseline: Sequence[float] | None = None,
) -> None:
    """Predicted against true score, one panel per target, with the identity line (and the
    constant baseline's prediction, the training mean, as a dotted line)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2 * len(names), 4.0), dpi=100)
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for k, (ax, name) in enumerate(zip(axes, names, strict=True)):
        true = rows[name].to_numpy(float)
        pred = rows[PREDICTION_PREFIX + name].to_numpy(float)
        finite = np.concatenate([true, pred])
        finite = finite[np.isfinite(finite)]
        low = min(0.0, float(finite.min())) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 1.0
        pad = 0.05 * max(high - low, 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", lw=1, ls="--")
        if baseline is not None:
            ax.axhline(baseline[k], color="tab:orange", lw=1, ls=":", label="training mean")
            ax.legend(loc="upper left", fontsize=8)
        ax.scatter(true, pred, s=18, alpha=0.8)
        ax.set(
            xlim=(low - pad, high + pad),
            ylim=(low - pad, high + pad),
            xlabel=f"true {name}",
            ylabel=f"predicted {name}",
            title=f"{name} ({split}, {len(rows)} images)",
            aspect="equal",
        )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda tmp: figure.savefig(tmp, format="png"))


def _cell(record: dict[str, Any]) -> str:
    value, low, high = record.get("value"), record.get("low"), record.get("high")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.2f}"
    if low is not None and high is not None:
        text += f" [{low:.2f}, {high:.2f}]"
    return text


def _overall(records: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    for r in records:
        if r["source"] == "all" and r["metric"] == metric:
            return r
    return {}


def render_regression_report(metrics: dict[str, Any], run: Run) -> str:
    """``report.md`` of :func:`evaluate_regression`'s ``metrics``: the research-use notice,
    the tables, the constant baseline and the published figures beside these.

    Example:
        >>> render_regression_report(metrics, run).splitlines()[0]  # doctest: +SKIP
        '> Research use only: ...'
    """
    from covid19_images import RESEARCH_USE_NOTICE

    names: list[str] = metrics["targets"]
    split, boot = metrics["split"], metrics["bootstrap"]
    weights = _weights(metrics["pretrained"])
    lines = [
        f"> {RESEARCH_USE_NOTICE}",
        "",
        f"# {metrics['title']}",
        "",
        f"Severity regression, split `{split}`: {metrics['n_images']} images of "
        f"{metrics['n_patients']} patients; model `{metrics['model']}` ({weights}) at "
        f"{metrics['size']} px, {metrics['epochs_run']} epochs; loss: {metrics['loss']}. "
        "MAE is in score points, R² is scikit-learn's on these rows (below 0: worse than "
        f"predicting these rows' own mean), Pearson r is SciPy's. {bootstrap_note(boot['n'])} "
        "Per patient, each patient's images are averaged first.",
        "",
    ]
    if split == "val":
        lines += ["The validation split chose the checkpoint: these figures are optimistic.", ""]
    elif split == "train":
        lines += ["The model was fitted on these images: they say nothing about new ones.", ""]
    lines += ["![predicted against true](figures/scatter.png)", ""]
    for unit in ("image", "patient"):
        lines += [
            f"## Per {unit}",
            "",
            "| source | metric | value (95% CI) | n | patients | skipped |",
            "|---|---|---|---:|---:|---:|",
        ]
        for r in metrics[unit]:
            lines.append(
                f"| {r['source']} | {r['metric']} | {_cell(r)} | {r['n']} | {r['groups']} "
                f"| {r['skipped']} |"
            )
        lines.append("")
    base = metrics["baseline"]["prediction"]
    lines += [
        "## Constant baseline",
        "",
        "Every row predicted as the training split's mean ("
        + ", ".join(f"{n} {base[n]:.2f}" for n in names)
        + "), on the same rows and bootstrap resamples. Gain: the baseline's MAE minus the "
        "model's (above 0: the model is closer to the raters).",
        "",
        "| unit | target | model MAE | baseline MAE | gain (95% CI) | model R² | baseline R² |",
        "|---|---|---|---|---|---|---|",
    ]
    for unit in ("image", "patient"):
        for n in names:
            lines.append(
                f"| {unit} | {n} | {_cell(_overall(metrics[unit], f'mae_{n}'))} "
                f"| {_cell(_overall(metrics['baseline'][unit], f'mae_{n}'))} "
                f"| {_cell(_overall(metrics['gain'][unit], f'mae_gain_{n}'))} "
                f"| {_cell(_overall(metrics[unit], f'r2_{n}'))} "
                f"| {_cell(_overall(metrics['baseline'][unit], f'r2_{n}'))} |"
            )
    lines.append("")
    if metrics["anchors"]:
        lines += _anchor_lines(metrics, names, weights)
    return "\n".join(lines)


def _weights(pretrained: Any) -> str:
    if pretrained is False or pretrained in (None, "no"):
        return "no pretrained weights"
    if pretrained is True:
        return "the library's ImageNet weights"
    return f"weights from {pretrained}"


def _anchor_lines(metrics: dict[str, Any], names: list[str], weights: str) -> list[str]:
    shown = [n for n in ("geographic_extent", "opacity") if n in names]
    lines = [
        "## Published figures",
        "",
        "| study | data | weights | size | " + " | ".join(shown) + " |",
        "|---|---|---|---|" + "---|" * len(shown),
    ]
    for a in metrics["anchors"]:
        label = "MAE" if a["metric"] == "mae" else "R²"
        cells = " | ".join(f"{label} {a['values'][n]:.2f}" for n in shown)
        lines.append(f"| {a['study']} | {a['data']} | {a['weights']} | {a['size']} | {cells} |")
    mine = " | ".join(
        f"MAE {_cell(_overall(metrics['image'], f'mae_{n}'))}; "
        f"R² {_cell(_overall(metrics['image'], f'r2_{n}'))}"
        for n in shown
    )
    lines += [
        f"| this run | {metrics['n_images']} {metrics['split']} images of "
        f"{metrics['n_patients']} patients: a patient-grouped split of the scored images in "
        f"the mirror | {weights} | {metrics['size']} px | {mine} |",
        "",
        "What differs: the published models start from chest X-ray pretraining "
        "(TorchXRayVision's DenseNet-121 trained on several public X-ray sets; COVID-Net on "
        f"COVIDx), this run from {weights}; Cohen et al. cross-validate over all 94 scored "
        "images and COVID-Net S over 396 images of its own, while this run is scored once on a "
        "held-out patient-grouped split of the scored images present in the mirror (its "
        "intervals show how few patients that is); the input sizes differ too. The figures are "
        "context, not a like-for-like comparison.",
        "",
    ]
    return lines
