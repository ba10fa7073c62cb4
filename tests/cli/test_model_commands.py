"""``train``, ``evaluate`` and ``explain`` on the command line, on a dataset built from
../shared/sources: a run folder with its report, and one clear message for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from covid19_images import RESEARCH_USE_NOTICE
from covid19_images.assemble.build import BuildResult
from covid19_images.cli import app

pytest.importorskip("torch")
pytest.importorskip("timm")

runner = CliRunner()
QUICK = ["--epochs", "1", "--steps", "2", "--size", "32", "--batch-size", "8", "--n-boot", "20"]


@pytest.fixture(scope="module")
def run_dir(xray_dataset: BuildResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = runner.invoke(
        app,
        ["train", str(xray_dataset.path), "--model", "resnet18", "--out", str(out), *QUICK],
    )
    assert result.exit_code == 0, result.output
    assert RESEARCH_USE_NOTICE.split(":")[0] in result.stdout
    return out / "xray-covid-resnet18-s0"


def test_train_writes_a_run_with_its_report(run_dir: Path) -> None:
    report = (run_dir / "report.md").read_text()
    assert report.startswith(f"> {RESEARCH_USE_NOTICE}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["bootstrap"]["n"] == 20
    for level in ("image", "patient"):
        assert set(metrics[level]["classes"]) == {"covid19", "normal", "pneumonia"}
    assert "Per source" in report and (run_dir / "figures" / "reliability.png").is_file()


def test_evaluate_scores_another_split_and_prints_the_headline(run_dir: Path) -> None:
    out = run_dir.parent / "eval-val"
    result = runner.invoke(
        app, ["evaluate", str(run_dir), "--split", "val", "--out", str(out), "--n-boot", "10"]
    )
    assert result.exit_code == 0, result.output
    before = (run_dir / "metrics.json").read_bytes()
    result = runner.invoke(app, ["evaluate", str(run_dir), "--split", "val", "--n-boot", "10"])
    assert result.exit_code == 0, result.output
    assert (run_dir / "eval-val" / "metrics.json").is_file()  # the run's own report stays
    assert (run_dir / "metrics.json").read_bytes() == before
    assert "covid19" in result.stdout and "AUROC" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = pd.read_parquet(run_dir / "predictions.parquet")
    assert metrics["image"]["n_images"] == int((predictions["split"] == "val").sum())


def test_explain_adds_its_section_to_the_report(run_dir: Path) -> None:
    result = runner.invoke(app, ["explain", str(run_dir), "--n", "4"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(run_dir / "explain" / "explain.csv")
    assert len(table) == 4 and table["class"].nunique() >= 3
    for overlay in table["overlay"]:
        assert (run_dir / "explain" / overlay).read_bytes()[:4] == b"\x89PNG"
    assert "## Grad-CAM" in (run_dir / "report.md").read_text()


def test_bad_input_is_one_line_without_traceback(
    run_dir: Path, xray_dataset: BuildResult, tmp_path: Path
) -> None:
    cases = [
        (["evaluate", str(tmp_path)], "not a run folder"),
        (["train", str(tmp_path / "none"), *QUICK], "no dataset"),
        (["train", str(xray_dataset.path), "--model", "resnet19", *QUICK], "did you mean"),
        (["explain", str(run_dir), "not-an-image.png"], "no such file"),
    ]
    other = tmp_path / "other"
    shutil.copytree(xray_dataset.path, other)
    packed = json.loads((other / "packed.json").read_text())
    (other / "packed.json").write_text(json.dumps({**packed, "classes": ["a", "b", "c"]}))
    cases.append((["evaluate", str(run_dir), "--dataset", str(other)], "same classes"))
    config = json.loads((run_dir / "config.json").read_text())
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({**config, "run_version": 0}))
    cases.append((["evaluate", str(old)], "format 0"))
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        cases.append((["explain", str(run_dir), "--device", "cuda"], "no CUDA device"))
        cases.append((["evaluate", str(run_dir), "--device", "cuda"], "no CUDA device"))
    for args, expected in cases:
        result = runner.invoke(app, args)
        assert result.exit_code in (1, 2), (args, result.output)
        assert expected in " ".join(result.output.split()), (args, result.output)
        assert "Traceback" not in result.output


def test_external_evaluation_leaves_out_planted_copies_and_patients(
    run_dir: Path, xray_dataset: BuildResult, tmp_path: Path
) -> None:
    other = tmp_path / "external"
    shutil.copytree(xray_dataset.path, other)
    manifest = pd.read_parquet(other / "manifest.parquet")
    train = manifest[manifest["split"] == "train"]
    with_patient = train[train["patient_id"].notna()].iloc[0]
    test_rows = manifest.index[manifest["split"] == "test"]
    copy, same_patient = test_rows[0], test_rows[1]
    manifest.loc[copy, "sha256_pixels"] = train.iloc[0]["sha256_pixels"]
    manifest.loc[same_patient, "patient_id"] = with_patient["patient_id"]
    manifest.to_parquet(other / "manifest.parquet", index=False)

    out = tmp_path / "report"
    result = runner.invoke(
        app,
        ["evaluate", str(run_dir), "--dataset", str(other), "--out", str(out), "--n-boot", "10"],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    overlap = metrics["external_overlap"]
    assert overlap == {"copies": 1, "same_patient": 1, "left_out": 2}
    assert metrics["image"]["n_images"] == len(test_rows) - 2
    assert "external" in (out / "report.md").read_text().lower()


def test_probe_writes_the_datasheet_section_and_the_run_report_section(
    run_dir: Path, xray_dataset: BuildResult, tmp_path: Path
) -> None:
    folder = tmp_path / "xray-covid"
    shutil.copytree(xray_dataset.path, folder)
    result = runner.invoke(app, ["probe", str(folder), "--n-boot", "20"])
    assert result.exit_code == 0, result.output
    assert "Source: predicted from the pixels" in " ".join(result.stdout.split())
    datasheet = (folder / "datasheet.md").read_text()
    assert datasheet.count("## Shortcut probes") == 1
    probe = json.loads((folder / "probe.json").read_text())
    assert probe["lungs_removed"] is None and probe["source_predictability"]

    result = runner.invoke(app, ["probe", str(folder), "--run", str(run_dir), "--n-boot", "20"])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "probe.json").read_text())["lungs_removed"] is not None
    assert (run_dir / "report.md").read_text().count("## Shortcut probes") == 1
