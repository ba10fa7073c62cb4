"""The trainer on a dataset built from ../shared/sources: the run folder it writes, the same
numbers from the same seed, resuming, leave-one-source-out, and bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from covid19_images.assemble.build import BuildResult  # noqa: E402
from covid19_images.training import TrainConfig, TrainError, load_run, train  # noqa: E402
from covid19_images.training.loso import leave_one_source_out  # noqa: E402
from covid19_images.training.run import RUN_VERSION  # noqa: E402
from tests.training.resuming import stop_after  # noqa: E402

QUICK = {"model": "resnet18", "size": 32, "batch_size": 8, "steps": 3, "seed": 1}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def quick(**options: object) -> TrainConfig:
    return TrainConfig.from_dict({**QUICK, "epochs": 2, **options})


def test_run_folder_holds_what_a_rerun_needs(xray_dataset: BuildResult, tmp_path: Path) -> None:
    run = train(xray_dataset.path, quick(), out=tmp_path, evaluate=False)
    assert run.path == tmp_path / "xray-covid-resnet18-s1"
    names = {p.relative_to(run.path).as_posix() for p in run.path.rglob("*") if p.is_file()}
    assert names == {
        "config.json",
        "model.safetensors",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
        "checkpoints/last.state.pt",
        "history.csv",
        "curve.png",
        "predictions.parquet",
    }
    config = json.loads((run.path / "config.json").read_text())
    lock = (xray_dataset.path / "lock.json").read_bytes()
    assert config["dataset"]["lock_sha256"] == hashlib.sha256(lock).hexdigest()
    assert config["run_version"] == RUN_VERSION and config["complete"] is True
    assert TrainConfig.from_dict(config["train"]) == quick()
    assert (run.path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    history = pd.read_csv(run.path / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert np.isfinite(history[["train_loss", "val_loss", "val_metric"]]).all().all()

    manifest = xray_dataset.manifest.set_index("uid")
    predictions = run.predictions()
    for split in ("val", "test"):
        rows = predictions[predictions["split"] == split]
        assert sorted(rows["uid"]) == sorted(manifest.index[manifest["split"] == split])
        assert (rows["class"].to_numpy() == manifest.loc[rows["uid"], "class"].to_numpy()).all()
        assert (rows["source"].to_numpy() == manifest.loc[rows["uid"], "source"].to_numpy()).all()
    probs = predictions[[f"prob_{c}" for c in run.classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    # The saved best weights give the saved predictions.
    test = predictions[predictions["split"] == "test"]
    from covid19_images.loaders.packed import open_split

    split = open_split(xray_dataset.path, "test")
    order = [split.uids.index(u) for u in test["uid"]]
    again = run.predict(split.images[order])
    np.testing.assert_allclose(again, test[[f"prob_{c}" for c in run.classes]], atol=1e-5)


def test_same_seed_same_numbers_with_loader_workers_other_seed_others(
    xray_dataset: BuildResult, tmp_path: Path
) -> None:
    a = train(xray_dataset.path, quick(), out=tmp_path, name="a", evaluate=False)
    b = train(xray_dataset.path, quick(workers=2), out=tmp_path, name="b", evaluate=False)
    c = train(xray_dataset.path, quick(seed=2), out=tmp_path, name="c", evaluate=False)
    pd.testing.assert_frame_equal(a.predictions(), b.predictions())
    history_a, history_b = (pd.read_csv(r.path / "history.csv") for r in (a, b))
    pd.testing.assert_series_equal(history_a["train_loss"], history_b["train_loss"])
    probs = [f"prob_{k}" for k in a.classes]
    assert not np.allclose(a.predictions()[probs], c.predictions()[probs])


def test_a_stopped_run_resumes_to_the_same_numbers(
    xray_dataset: BuildResult, tmp_path: Path
) -> None:
    config = quick(epochs=3, augment="light")
    whole = train(xray_dataset.path, config, out=tmp_path, name="whole", evaluate=False)

    with pytest.raises(KeyboardInterrupt):
        train(
            xray_dataset.path,
            config,
            out=tmp_path,
            name="cut",
            evaluate=False,
            log=stop_after(1),
        )
    assert not load_run(tmp_path / "cut").complete
    with pytest.raises(TrainError, match="did not finish"):
        load_run(tmp_path / "cut").predictions()
    resumed = train(
        xray_dataset.path, config, out=tmp_path, name="cut", resume=True, evaluate=False
    )
    assert resumed.complete
    history = pd.read_csv(resumed.path / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(
        history.drop(columns=["seconds"]),
        pd.read_csv(whole.path / "history.csv").drop(columns=["seconds"]),
    )
    pd.testing.assert_frame_equal(resumed.predictions(), whole.predictions())


def test_leave_one_source_out_tests_on_the_held_out_source(
    xray_dataset: BuildResult, tmp_path: Path
) -> None:
    run = train(
        xray_dataset.path, quick(epochs=1, leave_out="zhanglab"), out=tmp_path, evaluate=False
    )
    assert run.path.name == "xray-covid-resnet18-s1-loso-zhanglab"
    predictions = run.predictions()
    test = predictions[predictions["split"] == "test"]
    manifest = xray_dataset.manifest
    assert sorted(test["uid"]) == sorted(manifest.loc[manifest["source"] == "zhanglab", "uid"])
    assert "zhanglab" not in set(predictions.loc[predictions["split"] == "val", "source"])
    assert run.config["selection"]["train"] == int(
        ((manifest["split"] == "train") & (manifest["source"] != "zhanglab")).sum()
    )


def test_bad_input_is_one_clear_error_and_leaves_no_folder(
    xray_dataset: BuildResult, tmp_path: Path
) -> None:
    with pytest.raises(TrainError, match="no dataset"):
        train(tmp_path / "nothing-here", quick(), out=tmp_path)
    with pytest.raises(TrainError, match="batch size"):
        quick(batch_size=1)
    with pytest.raises(TrainError, match="augment must be"):
        quick(augment="heavy")
    refused = [
        (quick(leave_out="nih-sample"), "not a source"),
        (quick(pretrained="xrv:densenet121-res224-all"), "TorchXRayVision"),
    ]
    if not torch.cuda.is_available():
        refused.append((quick(device="cuda"), "no CUDA device"))
    for config, message in refused:
        with pytest.raises(TrainError, match=message):
            train(xray_dataset.path, config, out=tmp_path / "runs")
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

    segmentation = tmp_path / "seg" / "xray-lung-seg"
    shutil.copytree(xray_dataset.path, segmentation)
    meta = json.loads((segmentation / "packed.json").read_text())
    (segmentation / "packed.json").write_text(json.dumps({**meta, "task": "segmentation"}))
    with pytest.raises(TrainError, match="a segmentation dataset: choose one of unet"):
        train(segmentation, quick(), out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

    run = train(xray_dataset.path, quick(epochs=1), out=tmp_path, evaluate=False)
    with pytest.raises(TrainError, match="exists: --resume"):
        train(xray_dataset.path, quick(epochs=1), out=tmp_path, evaluate=False)
    with pytest.raises(TrainError, match=r"other options.*lr: 0\.001 -> 0\.1"):  # saved -> asked
        train(xray_dataset.path, quick(epochs=1, lr=0.1), out=tmp_path, resume=True)
    moved = tmp_path / "moved" / "xray-covid"
    shutil.copytree(xray_dataset.path, moved)
    with pytest.raises(TrainError, match="dataset path"):
        train(moved, quick(epochs=1), out=tmp_path, resume=True)
    with pytest.raises(TrainError, match="not a source"):  # refused before anything is touched
        train(
            xray_dataset.path,
            quick(epochs=1, leave_out="nih-sample"),
            out=tmp_path,
            name=run.path.name,
            overwrite=True,
        )
    assert load_run(run.path).complete  # a refused --overwrite keeps the run it would replace
    config = json.loads((run.path / "config.json").read_text())
    (run.path / "config.json").write_text(json.dumps({**config, "run_version": 99}))
    with pytest.raises(TrainError, match="format 99"):
        load_run(run.path)
    with pytest.raises(TrainError, match="not a run folder"):
        load_run(tmp_path)


def test_leave_one_source_out_summarises_each_source_and_keeps_finished_runs(
    xray_dataset: BuildResult, tmp_path: Path
) -> None:
    lines: list[str] = []
    summary = leave_one_source_out(
        xray_dataset.path, quick(epochs=1), out=tmp_path, n_boot=5, log=lines.append
    )
    data = json.loads((summary.parent / "loso.json").read_text())
    counts = xray_dataset.manifest["source"].value_counts()
    held = sorted(s for s, n in counts.items() if n >= 10)
    assert [row["source"] for row in data["rows"]] == held
    for row in data["rows"]:
        assert row["images"] == counts[row["source"]]
        assert "note" in row or row["n_images"] == counts[row["source"]]
    text = summary.read_text()
    assert text.startswith("> **Research use only") and all(s in text for s in held)
    lines.clear()
    leave_one_source_out(
        xray_dataset.path, quick(epochs=1), out=tmp_path, n_boot=5, log=lines.append
    )
    assert sum("kept from a previous run" in line for line in lines) == sum(
        "note" not in row for row in data["rows"]
    )
    assert json.loads((summary.parent / "loso.json").read_text()) == data
