"""Severity regression in the trainer: a classification backbone with a linear head on
``xray-severity`` built from ../shared/sources (the run folder, its predictions against the
packed targets and its evaluation against scikit-learn), the loss's standardisation against a
hand computation, and a planted signal on a generated regression dataset that the model must
learn better than the constant baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, r2_score

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from typer.testing import CliRunner  # noqa: E402

from covid19_images import RESEARCH_USE_NOTICE  # noqa: E402
from covid19_images.assemble.build import BuildResult  # noqa: E402
from covid19_images.cli import app  # noqa: E402
from covid19_images.loaders.packed import open_split  # noqa: E402
from covid19_images.training import TrainConfig, TrainError, train  # noqa: E402
from covid19_images.training.assess import evaluate_run  # noqa: E402
from covid19_images.training.data import prepare  # noqa: E402
from covid19_images.training.regression import RegressionTask, target_stats  # noqa: E402
from covid19_images.training.tasks import Setting  # noqa: E402

TARGETS = ["geographic_extent", "opacity"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def overall(records: list[dict[str, object]], metric: str) -> float:
    (value,) = [r["value"] for r in records if r["source"] == "all" and r["metric"] == metric]
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def test_a_severity_run_predicts_the_packed_targets_and_scores_them_as_sklearn_does(
    severity: BuildResult, tmp_path: Path
) -> None:
    config = TrainConfig("resnet18", epochs=2, batch_size=8, steps=2, seed=0)
    run = train(severity.path, config, out=tmp_path, n_boot=20)
    train_split = open_split(severity.path, "train")
    assert train_split.targets is not None
    assert run.task == "regression" and run.config["targets"] == TARGETS
    assert train_split.target_names == TARGETS and run.config["outputs"] == 2
    mean = train_split.targets.astype(np.float64).mean(0)
    std = train_split.targets.astype(np.float64).std(0)
    assert run.config["standardize"]["mean"] == pytest.approx(mean.tolist())
    assert run.config["standardize"]["std"] == pytest.approx(std.tolist())
    assert pd.read_csv(run.path / "history.csv")["val_metric_name"].eq("neg_mae").all()

    predictions = run.predictions()
    assert list(predictions.columns) == [
        "uid",
        "split",
        "source",
        "patient_id",
        "geographic_extent",
        "pred_geographic_extent",
        "opacity",
        "pred_opacity",
    ]
    model = run.model()
    for split in ("val", "test"):
        rows = predictions[predictions["split"] == split]
        packed = open_split(severity.path, split)
        assert packed.targets is not None
        assert list(rows["uid"]) == packed.uids  # every image once, in packed order
        np.testing.assert_array_equal(rows[TARGETS].to_numpy(), packed.targets)
        # The stored predictions are the best model's outputs, de-standardised.
        x = torch.from_numpy(np.asarray(packed.images, np.float32) / 255.0)[:, None]
        with torch.inference_mode():
            out = model(prepare(x, run.size, run.mean, run.std, torch.device("cpu"))).numpy()
        np.testing.assert_allclose(
            rows[["pred_" + t for t in TARGETS]].to_numpy(), out * std + mean, atol=1e-4
        )

    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["task"] == "regression" and metrics["bootstrap"]["n"] == 20
    test = predictions[predictions["split"] == "test"]
    patients = test.groupby("patient_id")[[*TARGETS, *("pred_" + t for t in TARGETS)]].mean()
    assert metrics["n_images"] == len(test) and metrics["n_patients"] == len(patients)
    for unit, frame in (("image", test), ("patient", patients)):
        for t in TARGETS:
            true, pred = frame[t].to_numpy(), frame["pred_" + t].to_numpy()
            assert overall(metrics[unit], f"mae_{t}") == pytest.approx(
                mean_absolute_error(true, pred)
            )
            assert overall(metrics[unit], f"r2_{t}") == pytest.approx(r2_score(true, pred))
            assert overall(metrics[unit], f"pearson_r_{t}") == pytest.approx(
                stats.pearsonr(true, pred).statistic
            )
            constant = np.full(len(true), mean[TARGETS.index(t)])
            baseline = mean_absolute_error(true, constant)
            assert overall(metrics["baseline"][unit], f"mae_{t}") == pytest.approx(baseline)
            assert overall(metrics["gain"][unit], f"mae_gain_{t}") == pytest.approx(
                baseline - mean_absolute_error(true, pred)
            )
    report = (run.path / "report.md").read_text()
    assert report.startswith(f"> {RESEARCH_USE_NOTICE}")
    assert "Cohen et al. 2020" in report and "## Constant baseline" in report
    assert (run.path / "figures" / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The CLI evaluates another split into RUN/eval-<split>/; train is predicted afresh.
    result = CliRunner().invoke(
        app, ["evaluate", str(run.path), "--split", "train", "--n-boot", "5", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "mae_opacity" in result.output
    scored = json.loads((run.path / "eval-train" / "metrics.json").read_text())
    assert scored["split"] == "train" and scored["n_images"] == len(train_split.uids)
    assert (
        (run.path / "eval-train" / "report.md").read_text().startswith(f"> {RESEARCH_USE_NOTICE}")
    )


def test_regression_runs_refuse_what_they_cannot_do(
    severity: BuildResult, planted: Path, tmp_path: Path
) -> None:
    with pytest.raises(TrainError, match="classification runs only"):
        train(severity.path, TrainConfig("resnet18", leave_out="ieee8023"), out=tmp_path)
    with pytest.raises(TrainError, match="is a segmentation model"):
        train(severity.path, TrainConfig("unet"), out=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was written
    config = TrainConfig("resnet18", epochs=1, batch_size=8, steps=1, size=32)
    run = train(planted, config, out=tmp_path, evaluate=False)
    with pytest.raises(TrainError, match="external evaluation of a regression run"):
        evaluate_run(run, dataset=severity.path, n_boot=5)


def test_the_loss_is_the_squared_error_on_standardised_targets() -> None:
    task = RegressionTask()
    task.mean, task.std = [3.0, 2.0], [2.0, 0.5]
    outputs = torch.tensor([[0.5, -1.0], [1.0, 2.0], [0.0, 0.0]])
    targets = torch.tensor([[5.0, 1.0], [3.0, float("nan")], [1.0, 2.5]])

    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return outputs

    setting = Setting(size=8, mean=0.5, std=0.25, device=torch.device("cpu"), batch_size=3)
    loss, count = task.loss(Fixed(), (torch.zeros(3, 1, 8, 8), targets), setting)
    scaled = (targets.numpy() - np.array([3.0, 2.0])) / np.array([2.0, 0.5])
    errors = (outputs.numpy() - scaled)[np.isfinite(scaled)]
    assert count == 3 and float(loss) == pytest.approx(float(np.mean(errors**2)))
    assert target_stats(np.array([[1.0, 4.0], [3.0, 4.0], [np.nan, 4.0]])) == (
        [2.0, 4.0],
        [1.0, 1.0],
    )


def test_a_planted_signal_is_learned_better_than_the_training_mean(
    planted: Path, tmp_path: Path
) -> None:
    config = TrainConfig(
        "resnet18", epochs=6, batch_size=8, lr=3e-3, augment="none", patience=0, seed=0
    )
    run = train(planted, config, out=tmp_path, n_boot=20)
    history = pd.read_csv(run.path / "history.csv")
    assert history["train_loss"].iloc[-1] < 0.5 * history["train_loss"].iloc[0]
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert set(metrics["baseline"]["prediction"]) == {"extent", "opacity"}
    assert not metrics["anchors"]  # the published figures are for the severity scores only
    for t in ("extent", "opacity"):
        model, base = (overall(m["image"], f"mae_{t}") for m in (metrics, metrics["baseline"]))
        assert model < 0.75 * base
        assert overall(metrics["image"], f"pearson_r_{t}") > 0.8
        assert overall(metrics["gain"]["patient"], f"mae_gain_{t}") > 0
    sources = {r["source"] for r in metrics["image"]}
    assert sources == {"all", "a", "b"}
