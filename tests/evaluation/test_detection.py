"""COCO mAP against pycocotools run by hand and torchmetrics, on fixed boxes and masks."""

from __future__ import annotations

import contextlib
import io
import math
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

from covid19_images.errors import EvaluationError
from covid19_images.evaluation.detection import COCO_STATS, coco_map, summarize_detection

pytest.importorskip("pycocotools")


def _box_mask(box: list[float], side: int = 64) -> np.ndarray[Any, Any]:
    mask = np.zeros((side, side), dtype=np.uint8)
    x1, y1, x2, y2 = (int(v) for v in box)
    mask[y1:y2, x1:x2] = 1
    return mask


def _fixed() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Three images, two classes: hits, near misses, a false alarm, a missed lesion."""
    truth_boxes = [
        [[4, 6, 30, 50], [34, 8, 60, 52], [10, 20, 18, 28]],
        [[5, 5, 29, 47], [36, 6, 58, 50]],
        [[6, 4, 28, 46], [20, 30, 31, 41]],
    ]
    truth_labels = [[1, 1, 2], [1, 1], [1, 2]]
    found_boxes = [
        [[5, 7, 31, 49], [30, 10, 57, 55], [11, 19, 19, 29], [40, 40, 50, 50]],
        [[5, 5, 29, 47], [40, 3, 60, 44], [37, 7, 57, 49]],
        [[2, 8, 26, 44], [44, 44, 56, 56]],
    ]
    found_labels = [[1, 1, 2, 2], [1, 1, 1], [1, 2]]
    found_scores = [[0.95, 0.7, 0.8, 0.3], [0.9, 0.6, 0.4], [0.85, 0.5]]
    targets = [
        {
            "boxes": np.array(b, dtype=float),
            "labels": np.array(lab),
            "masks": np.stack([_box_mask(x) for x in b]),
        }
        for b, lab in zip(truth_boxes, truth_labels, strict=True)
    ]
    predictions = [
        {
            "boxes": np.array(b, dtype=float),
            "labels": np.array(lab),
            "scores": np.array(s),
            "masks": np.stack([_box_mask(x) * 0.9 for x in b])[:, None],  # K x 1 x H x W
        }
        for b, lab, s in zip(found_boxes, found_labels, found_scores, strict=True)
    ]
    return predictions, targets


def _pycocotools_by_hand(
    predictions: list[dict[str, Any]], targets: list[dict[str, Any]], iou_type: str
) -> np.ndarray[Any, Any]:
    from pycocotools import mask as mask_api
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b: Any) -> list[float]:
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    def rle(m: Any) -> dict[str, Any]:
        return mask_api.encode(np.asfortranarray((np.asarray(m) >= 0.5).astype(np.uint8)))

    annotations, results = [], []
    for i, (p, t) in enumerate(zip(predictions, targets, strict=True)):
        for box, label, m in zip(t["boxes"], t["labels"], t["masks"], strict=True):
            ann = {
                "id": len(annotations) + 1,
                "image_id": i + 1,
                "category_id": int(label),
                "bbox": xywh(box),
                "iscrowd": 0,
            }
            if iou_type == "segm":
                ann["segmentation"] = rle(m)
                ann["area"] = float(mask_api.area(ann["segmentation"]))
            else:
                ann["area"] = xywh(box)[2] * xywh(box)[3]
            annotations.append(ann)
        for box, label, score, m in zip(
            p["boxes"], p["labels"], p["scores"], p["masks"], strict=True
        ):
            result = {"image_id": i + 1, "category_id": int(label), "score": float(score)}
            if iou_type == "segm":
                result["segmentation"] = rle(m[0])
            else:
                result["bbox"] = xywh(box)
            results.append(result)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i + 1, "height": 64, "width": 64} for i in range(len(targets))],
            "annotations": annotations,
            "categories": [{"id": 1}, {"id": 2}],
        }
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return np.where(evaluation.stats > -1, evaluation.stats, np.nan)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_equals_pycocotools_run_by_hand(iou_type: str) -> None:
    predictions, targets = _fixed()
    ours = coco_map(predictions, targets, iou_type=iou_type)  # type: ignore[arg-type]
    oracle = _pycocotools_by_hand(predictions, targets, iou_type)
    values = np.array([ours[name] for name in COCO_STATS])
    np.testing.assert_allclose(values, oracle, rtol=0, atol=1e-12, equal_nan=True)
    assert 0.3 < ours["map"] < ours["map_50"] < 1.0
    assert {"ap_1", "ap_2"} <= set(ours)


def test_equals_torchmetrics() -> None:
    torch = pytest.importorskip("torch")
    from torchmetrics.detection import MeanAveragePrecision

    predictions, targets = _fixed()
    # pycocotools' own thresholds: torchmetrics' defaults come from float32 torch.linspace, and
    # recall or IoU values that fall exactly on a threshold then count differently (map here:
    # 0.3844 with them against pycocotools' 0.3855).
    metric = MeanAveragePrecision(
        backend="pycocotools",
        iou_type="bbox",
        class_metrics=True,
        iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(),
        rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(),
    )
    metric.update(
        [{k: torch.as_tensor(v) for k, v in p.items() if k != "masks"} for p in predictions],
        [{k: torch.as_tensor(v) for k, v in t.items() if k != "masks"} for t in targets],
    )
    oracle = metric.compute()
    ours = coco_map(predictions, targets, classes=["background", "lung", "lesion"])
    for name in ("map", "map_50", "map_75", "mar_100"):
        assert ours[name] == pytest.approx(float(oracle[name]), abs=1e-6), name
    per_class = oracle["map_per_class"].tolist()
    assert [ours["ap_lung"], ours["ap_lesion"]] == pytest.approx(per_class, abs=1e-6)


def test_truth_as_prediction_is_one_and_shifts_lower_it() -> None:
    _, targets = _fixed()
    perfect = [{**t, "scores": np.linspace(0.9, 0.5, len(t["labels"]))} for t in targets]
    for iou_type in ("bbox", "segm"):
        scores = coco_map(perfect, targets, iou_type=iou_type)  # type: ignore[arg-type]
        assert scores["map"] == pytest.approx(1.0) and scores["map_50"] == pytest.approx(1.0)
    values = []
    for shift in (0, 2, 4, 8):
        moved = [{**p, "boxes": p["boxes"] + np.array([shift, 0, shift, 0])} for p in perfect]
        values.append(coco_map(moved, targets)["map"])
    assert values[0] == pytest.approx(1.0)
    assert values[0] > values[1] > values[2] > values[3]


def test_torch_tensors_from_a_mask_rcnn_and_empty_predictions() -> None:
    torch = pytest.importorskip("torch")
    predictions, targets = _fixed()
    as_torch = [{k: torch.as_tensor(v) for k, v in p.items()} for p in predictions]
    assert coco_map(as_torch, targets, iou_type="segm") == coco_map(
        predictions, targets, iou_type="segm"
    )
    nothing = [
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "scores": torch.zeros(0),
            "masks": torch.zeros(0, 1, 64, 64),
        }
    ] * 3
    for iou_type in ("bbox", "segm"):
        empty = coco_map(nothing, targets, iou_type=iou_type)  # type: ignore[arg-type]
        assert empty["map"] == 0.0 and empty["map_50"] == 0.0
    no_truth = coco_map(nothing, [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}] * 3)
    assert math.isnan(no_truth["map"])


def test_bad_inputs_and_missing_pycocotools(monkeypatch: pytest.MonkeyPatch) -> None:
    predictions, targets = _fixed()
    with pytest.raises(EvaluationError, match="3 predictions for 2 targets"):
        coco_map(predictions, targets[:2])
    with pytest.raises(EvaluationError, match="label 0 is the background"):
        coco_map(predictions, [{**targets[0], "labels": np.array([0, 1, 2])}, *targets[1:]])
    with pytest.raises(EvaluationError, match="has no 'masks'"):
        coco_map(
            predictions,
            [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets],
            iou_type="segm",
        )
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(EvaluationError, match=r"pip install 'pycocotools>=2\.0\.7'.*torch extra"):
        coco_map(predictions, targets)


def test_summary_resamples_patients() -> None:
    predictions, targets = _fixed()
    predictions, targets = predictions * 2, targets * 2
    meta = pd.DataFrame(
        {
            "uid": [f"i{k}" for k in range(6)],
            "patient_id": ["p", "p", "q", "r", "r", None],
            "source": ["a", "a", "a", "b", "b", "b"],
        }
    )
    table = summarize_detection(predictions, targets, meta, n_boot=30, seed=2)
    overall = table[table["source"] == "all"].set_index("metric")
    whole = coco_map(predictions, targets)
    assert overall.loc["map", "value"] == whole["map"]
    assert overall.loc["map", "groups"] == 4 and overall.loc["map", "n"] == 6
    assert overall.loc["map", "low"] <= whole["map"] <= overall.loc["map", "high"]
    assert overall.loc["map", "low"] < overall.loc["map", "high"]
    b = table[(table["source"] == "b") & (table["metric"] == "map_50")].iloc[0]
    assert b["value"] == coco_map(predictions[3:], targets[3:])["map_50"]
