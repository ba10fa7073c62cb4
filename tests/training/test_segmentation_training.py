"""Training a U-Net on ``xray-lung-seg`` built from ../shared/sources: the run folder holds the
predicted label maps and per-image scores, the evaluation reports Dice with patient intervals,
and a model of another task is one clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from covid19_images import RESEARCH_USE_NOTICE  # noqa: E402
from covid19_images.assemble.build import BuildResult  # noqa: E402
from covid19_images.explanation import ExplainError  # noqa: E402
from covid19_images.explanation.run import explain_run  # noqa: E402
from covid19_images.loaders.packed import open_split  # noqa: E402
from covid19_images.training import TrainConfig, TrainError, train  # noqa: E402
from covid19_images.training.segmentation import mean_dice  # noqa: E402


def test_a_unet_run_writes_label_maps_scores_and_a_dice_report(
    lung_seg: BuildResult, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    config = TrainConfig("unet", epochs=2, batch_size=8, lr=3e-3, steps=2, seed=0)
    run = train(lung_seg.path, config, out=tmp_path, n_boot=20)
    assert run.task == "segmentation" and run.config["mask_labels"] == ["background", "lung"]

    scores = run.predictions()
    for split in ("val", "test"):
        rows = scores[scores["split"] == split]
        packed = open_split(lung_seg.path, split)
        assert sorted(rows["uid"]) == sorted(packed.uids)
        assert packed.masks is not None
        maps = np.stack(
            [np.asarray(Image.open(run.path / "predictions" / f"{u}.png")) for u in packed.uids]
        )
        assert maps.shape == packed.masks.shape and set(np.unique(maps)) <= {0, 1}
        # the stored Dice is the Dice of the stored label map against the packed mask
        for uid, dice in zip(rows["uid"], rows["dice_lung"], strict=True):
            k = packed.uids.index(uid)
            assert mean_dice(maps[k : k + 1], packed.masks[k : k + 1]) == pytest.approx(dice)

    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["task"] == "segmentation" and metrics["bootstrap"]["n"] == 20
    overall = {r["metric"]: r for r in metrics["image"] if r["source"] == "all"}
    test = scores[scores["split"] == "test"]
    assert overall["dice_lung"]["value"] == pytest.approx(test["dice_lung"].mean())
    assert (run.path / "report.md").read_text().startswith(f"> {RESEARCH_USE_NOTICE}")
    with pytest.raises(ExplainError, match="segmentation run"):
        explain_run(run)


def test_a_model_of_another_task_is_refused(lung_seg: BuildResult, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="is a classification model"):
        train(lung_seg.path, TrainConfig("resnet18"), out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_mean_dice_by_hand() -> None:
    a = np.zeros((2, 4, 4), np.uint8)
    b = np.zeros((2, 4, 4), np.uint8)
    a[0, :2], b[0, :1] = 1, 1  # 8 and 4 pixels, 4 shared: 2*4/12
    assert mean_dice(a, b) == pytest.approx((8 / 12 + 1.0) / 2)  # the second: both empty
    assert isinstance(pd.Series([mean_dice(a, b)]).iloc[0], float)
