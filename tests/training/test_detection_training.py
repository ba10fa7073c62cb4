"""Training the light Mask R-CNN on ``xray-lung-boxes`` built from ../shared/sources: the run
folder holds one row per predicted box (every val and test image accounted for), the evaluation
is pycocotools' box mAP of those rows against the packed ground truth, the ground truth itself
scores 1, validation leaves the model's statistics alone, and the loss falls on a batch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from covid19_images import RESEARCH_USE_NOTICE  # noqa: E402
from covid19_images.assemble.build import BuildResult  # noqa: E402
from covid19_images.evaluation.detection import coco_map  # noqa: E402
from covid19_images.loaders.boxes import BOXES  # noqa: E402
from covid19_images.loaders.packed import open_split  # noqa: E402
from covid19_images.training import TrainConfig, TrainError, train  # noqa: E402
from covid19_images.training.assess import evaluate_run  # noqa: E402
from covid19_images.training.data import iterate, open_part  # noqa: E402
from covid19_images.training.detection import (  # noqa: E402
    DetectionTask,
    detections_of,
    prediction_rows,
)
from covid19_images.training.run import PREDICTIONS, Run, load_run  # noqa: E402
from covid19_images.training.tasks import Setting  # noqa: E402

CLASSES = ["background", "right_lung", "left_lung"]


@pytest.fixture(scope="module")
def trained(lung_boxes: BuildResult, tmp_path_factory: pytest.TempPathFactory) -> Run:
    torch.set_num_threads(1)
    config = TrainConfig("maskrcnn_light", epochs=1, batch_size=4, lr=1e-3, steps=2, seed=0)
    return train(lung_boxes.path, config, out=tmp_path_factory.mktemp("runs"), n_boot=10)


def packed_truth(folder: Path, split: str) -> tuple[list[str], list[dict[str, np.ndarray]]]:
    """The split's uids in packed order and their boxes, read from boxes.parquet directly."""
    uids = [str(u) for u in open_split(folder, split).uids]
    frame = pd.read_parquet(folder / BOXES)
    frame = frame[frame["split"] == split]
    truth = []
    for uid in uids:
        rows = frame[frame["uid"] == uid].sort_values("box")
        truth.append(
            {
                "boxes": rows[["x0", "y0", "x1", "y1"]].to_numpy(np.float32),
                "labels": rows["category_id"].to_numpy(np.int64),
            }
        )
    return uids, truth


def test_a_run_writes_box_rows_and_a_coco_report(trained: Run, lung_boxes: BuildResult) -> None:
    assert trained.task == "detection" and trained.config["detection_classes"] == CLASSES
    assert trained.config["outputs"] == 3 and trained.size == 64
    rows = trained.predictions()
    for split in ("val", "test"):
        mine = rows[rows["split"] == split]
        uids = [str(u) for u in open_split(lung_boxes.path, split).uids]
        assert set(mine["uid"]) == set(uids)  # every image, with or without a box
        counts = mine.groupby("uid").size()
        boxes = mine.groupby("uid")["n_predicted"].first()
        assert ((counts == boxes) | ((boxes == 0) & (counts == 1))).all()
    found = rows[rows["category_id"].notna()]
    assert found["label"].isin(CLASSES[1:]).all() and found["score"].between(0, 1).all()
    assert (found["x0"] <= found["x1"]).all() and (found["x1"] <= 64 + 1e-3).all()

    metrics = json.loads((trained.path / "metrics.json").read_text())
    assert metrics["task"] == "detection" and metrics["split"] == "test"
    assert metrics["bootstrap"]["n"] == 10
    # The reported mAP is pycocotools' on the stored rows against the packed ground truth.
    uids, truth = packed_truth(lung_boxes.path, "test")
    expected = coco_map(detections_of(rows[rows["split"] == "test"], uids), truth, classes=CLASSES)
    assert metrics["coco"]["map"] == pytest.approx(expected["map"], abs=1e-12)
    assert metrics["coco"]["map_50"] == pytest.approx(expected["map_50"], abs=1e-12)
    summary = {(r["class"], r["source"], r["metric"]): r for r in metrics["summary"]}
    assert summary[("all", "all", "map")]["value"] == pytest.approx(expected["map"], abs=1e-12)
    for name in CLASSES[1:]:  # a class alone scores its COCO per-class AP
        assert summary[(name, "all", "map")]["value"] == pytest.approx(
            expected[f"ap_{name}"], abs=1e-12
        )
    report = (trained.path / "report.md").read_text()
    assert report.startswith(f"> {RESEARCH_USE_NOTICE}")
    assert "mAP@[.5:.95]" in report and "right_lung" in report
    assert (trained.path / "figures" / "overlays.png").stat().st_size > 1000
    # The model read back predicts at the run's size, as the trainer did.
    part = open_part(lung_boxes.path, "test", detection=True)
    image = part.dataset.samples([0], 0)[0][0]
    model = trained.model()
    with torch.inference_mode():
        mask_pool = model.roi_heads.mask_roi_pool
        model.roi_heads.mask_roi_pool = None
        boxes = model([image])[0]["boxes"].numpy()
        model.roi_heads.mask_roi_pool = mask_pool
    stored = rows[(rows["split"] == "test") & (rows["uid"] == uids[0])].sort_values("rank")
    assert model.transform.min_size == (64,)
    assert len(boxes) == stored["n_predicted"].iloc[0]
    if len(boxes):  # the same boxes (in any order among equal scores)
        theirs = stored[["x0", "y0", "x1", "y1"]].to_numpy()
        np.testing.assert_allclose(np.sort(boxes, 0), np.sort(theirs, 0), atol=1e-3)


def evaluate_rows(run: Run, rows: pd.DataFrame, out: Path) -> dict[str, float]:
    """The task's evaluation of ``rows`` as a run's predictions (a copy of its config)."""
    folder = out / "run"
    folder.mkdir(parents=True)
    shutil.copyfile(run.path / "config.json", folder / "config.json")
    rows.to_parquet(folder / PREDICTIONS, index=False)
    metrics = evaluate_run(load_run(folder), n_boot=5)
    coco: dict[str, float] = metrics["coco"]
    return coco


def test_the_ground_truth_scores_one_and_a_shifted_box_less(
    trained: Run, lung_boxes: BuildResult, tmp_path: Path
) -> None:
    part = open_part(lung_boxes.path, "test", detection=True)
    _, truth = packed_truth(lung_boxes.path, "test")
    perfect = [{**t, "scores": np.full(len(t["boxes"]), 0.9)} for t in truth]
    rows = prediction_rows(part, perfect, CLASSES).assign(split="test")
    assert evaluate_rows(trained, rows, tmp_path / "a")["map"] == pytest.approx(1.0)

    moved = [dict(p) for p in perfect]
    box = moved[0]["boxes"].copy()
    box[0, [0, 2]] += 0.3 * (box[0, 2] - box[0, 0])  # IoU 0.54: found at .5, not above .55
    moved[0]["boxes"] = box
    moved[1] = {k: v[:0] for k, v in moved[1].items()}  # an image without any prediction
    rows = prediction_rows(part, moved, CLASSES).assign(split="test")
    assert rows[rows["uid"] == part.facts["uid"][1]]["n_predicted"].tolist() == [0]
    scored = evaluate_rows(trained, rows, tmp_path / "b")
    assert scored["map"] < 1.0 and scored["map_50"] < 1.0
    assert scored["map"] == pytest.approx(coco_map(moved, truth, classes=CLASSES)["map"])

    with pytest.raises(TrainError, match="lacks 1 test images"):
        evaluate_rows(trained, rows[rows["uid"] != part.facts["uid"][1]], tmp_path / "c")


def small_setup(folder: Path) -> tuple[DetectionTask, torch.nn.Module, Setting]:
    task = DetectionTask()
    outputs, described = task.outputs(folder, {})
    config = TrainConfig("maskrcnn_light", batch_size=2, seed=0)
    torch.manual_seed(0)
    model = task.model(config, outputs, {"size": 64, **described})
    setting = Setting(size=64, mean=0.5, std=0.25, device=torch.device("cpu"), batch_size=2)
    return task, model, setting


def test_the_loss_falls_on_one_fixed_batch(lung_boxes: BuildResult) -> None:
    torch.set_num_threads(1)
    task, model, setting = small_setup(lung_boxes.path)
    part = open_part(lung_boxes.path, "train", detection=True)
    batch = next(iterate(part, 2, 0, shuffle=True, seed=0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss, count = task.loss(model, batch, setting)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert count == 2
    assert losses[-1] < 0.5 * losses[0], losses


def test_validation_leaves_the_statistics_and_the_random_state_alone(
    lung_boxes: BuildResult,
) -> None:
    torch.set_num_threads(1)
    task, model, setting = small_setup(lung_boxes.path)
    task.setup({}, TrainConfig("maskrcnn_light"), setting)
    part = open_part(lung_boxes.path, "val", detection=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert any("running_mean" in k for k in before)  # batch norm that validation could move
    state = torch.get_rng_state()
    first = task.validate(model, part, setting)
    assert torch.equal(state, torch.get_rng_state())  # training's draws are untouched
    torch.rand(7)  # wherever training's random state is, the val loss is the same
    second = task.validate(model, part, setting)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert first == second and first[1] == "map" and np.isfinite(first[2]) and first[2] > 0


def test_a_classification_model_is_refused(lung_boxes: BuildResult, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="is a classification model"):
        train(lung_boxes.path, TrainConfig("resnet18"), out=tmp_path)
    assert not any(tmp_path.iterdir())
