"""Detection metrics: COCO mAP@[.5:.95] and mAP@.5 by pycocotools, from prediction/target dicts.

:func:`coco_map` takes torchvision's detection format, one dict per image (what a Mask R-CNN in
eval mode returns, and what it trains on): predictions with ``boxes`` (``K x 4``, ``x1, y1,
x2, y2`` in pixels), ``scores``, ``labels`` and optionally ``masks`` (``K x H x W`` or
``K x 1 x H x W``, probabilities or 0/1); targets with ``boxes``, ``labels`` and optionally
``masks``. Arrays may be numpy or torch tensors. It builds the COCO ground truth and results
and runs pycocotools' ``COCOeval`` unchanged: box IoU (``iou_type="bbox"``) or mask IoU
(``"segm"``), ten IoU thresholds from 0.5 to 0.95, 101 recall points, at most 100 detections per
image. Label 0 is the background and is never a category. :func:`summarize_detection` adds
patient-bootstrap intervals, overall and per source.

pycocotools is imported when a metric is computed; it is in the ``dev`` extra only, and a
missing pycocotools is an :class:`~covid19_images.errors.EvaluationError` saying how to install
it. COCO's area ranges (``map_small``: under 32 x 32 px, ``map_large``: over 96 x 96 px) are in
pixels of the images as scored, so on small packed images most objects are "small"; ground-truth
areas are box areas for ``bbox`` and mask areas for ``segm``.

Example:
    >>> import numpy as np
    >>> truth = [{"boxes": np.array([[10, 10, 50, 60]]), "labels": np.array([1])}]
    >>> found = [{"boxes": np.array([[10, 10, 50, 60]]), "scores": np.array([0.9]),
    ...           "labels": np.array([1])}]
    >>> round(coco_map(found, truth)["map"], 6)
    1.0
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from covid19_images.errors import EvaluationError
from covid19_images.evaluation.summary import summarize

__all__ = ["COCO_STATS", "coco_map", "summarize_detection"]

COCO_STATS: tuple[str, ...] = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)
"""Names of ``COCOeval.stats``, in its order (``map``: AP@[.5:.95], ``map_50``: AP@.5)."""

PYCOCOTOOLS_MISSING = (
    "detection metrics need pycocotools, which is not installed: pip install 'pycocotools>=2.0.7' "
    "(it comes with the torch extra: pip install 'covid19-images[torch]')"
)

IouType = Literal["bbox", "segm"]


def _pycocotools() -> tuple[Any, Any, Any]:
    try:
        from pycocotools import mask
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise EvaluationError(PYCOCOTOOLS_MISSING) from error
    return COCO, COCOeval, mask


def _numpy(value: Any) -> np.ndarray[Any, Any]:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _masks(item: Mapping[str, Any], n: int, threshold: float, what: str) -> Any:
    if "masks" not in item:
        raise EvaluationError(f"{what} has no 'masks' (iou_type='segm' needs them)")
    masks = _numpy(item["masks"])
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3 or masks.shape[0] != n:
        raise EvaluationError(f"{what}: masks {masks.shape} for {n} boxes (want K x H x W)")
    binary = masks >= threshold if masks.dtype.kind == "f" else masks.astype(bool)
    return np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8))


def _instances(
    item: Mapping[str, Any],
    iou_type: IouType,
    threshold: float,
    what: str,
    scored: bool,
    mask_api: Any,
) -> list[dict[str, Any]]:
    keys = ("boxes", "labels", "scores") if scored else ("boxes", "labels")
    missing = [key for key in keys if key not in item]
    if missing:
        raise EvaluationError(f"{what} has no {missing}")
    boxes = _numpy(item["boxes"]).astype(float).reshape(-1, 4)
    labels = _numpy(item["labels"]).astype(int).reshape(-1)
    scores = _numpy(item["scores"]).astype(float).reshape(-1) if scored else None
    if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise EvaluationError(f"{what}: boxes, labels and scores differ in length")
    if (labels < 1).any():
        raise EvaluationError(f"{what}: label 0 is the background, not an object class")
    out: list[dict[str, Any]] = []
    rles: list[dict[str, Any]] = []
    if iou_type == "segm" and len(boxes):
        rles = mask_api.encode(_masks(item, len(boxes), threshold, what))
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        entry: dict[str, Any] = {"category_id": int(labels[k])}
        if scores is not None:
            entry["score"] = float(scores[k])
        if iou_type == "bbox":
            entry["bbox"] = [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
            if not scored:
                entry["area"] = float((x2 - x1) * (y2 - y1))
        else:
            entry["segmentation"] = rles[k]
            if not scored:  # results get their area and box from loadRes
                entry["area"] = float(mask_api.area(rles[k]))
                entry["bbox"] = [float(v) for v in mask_api.toBbox(rles[k])]
        out.append(entry)
    return out


def coco_map(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    *,
    iou_type: IouType = "bbox",
    classes: Sequence[str] | None = None,
    mask_threshold: float = 0.5,
) -> dict[str, float]:
    """COCO's twelve summary numbers and the AP of each class, by pycocotools.

    Args:
        predictions: one dict per image: ``boxes`` (``x1, y1, x2, y2``), ``scores``, ``labels``
            and, for ``segm``, ``masks``.
        targets: one dict per image, in the same order: ``boxes``, ``labels`` (and ``masks``).
        iou_type: ``"bbox"`` (box IoU) or ``"segm"`` (mask IoU).
        classes: names by label value (index 0 the background) for the per-class keys;
            default the label numbers.
        mask_threshold: a float mask is the pixels at or above it (Mask R-CNN's probabilities).

    Returns:
        :data:`COCO_STATS` (``map``: AP@[.5:.95], ``map_50``: AP@.5, ...) and ``ap_<class>``
        (AP@[.5:.95] of each class with ground truth); a value COCO cannot define (no ground
        truth in a range) is NaN. No predictions at all score 0 where there is ground truth.

    Example:
        >>> import numpy as np
        >>> truth = [{"boxes": np.array([[0, 0, 40, 40]]), "labels": np.array([1])}]
        >>> shifted = [{"boxes": np.array([[10, 0, 50, 40]]), "scores": np.array([0.9]),
        ...             "labels": np.array([1])}]
        >>> m = coco_map(shifted, truth, classes=["background", "lesion"])
        >>> round(m["map"], 3), round(m["map_50"], 3), round(m["ap_lesion"], 3)  # IoU 0.6
        (0.3, 1.0, 0.3)
    """
    coco_class, coco_eval, mask_api = _pycocotools()
    if len(predictions) != len(targets):
        raise EvaluationError(f"{len(predictions)} predictions for {len(targets)} targets")
    if iou_type not in ("bbox", "segm"):
        raise EvaluationError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    images: list[dict[str, Any]] = []
    truth: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    for i, (pred, target) in enumerate(zip(predictions, targets, strict=True)):
        image_id = i + 1
        gt = _instances(target, iou_type, mask_threshold, f"target {i}", False, mask_api)
        dt = _instances(pred, iou_type, mask_threshold, f"prediction {i}", True, mask_api)
        height = width = 0
        if iou_type == "segm":
            for item in (target, pred):
                if "masks" in item and _numpy(item["masks"]).ndim >= 3:
                    height, width = _numpy(item["masks"]).shape[-2:]
                    break
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        for entry in gt:
            truth.append({**entry, "image_id": image_id, "id": len(truth) + 1, "iscrowd": 0})
        found.extend({**entry, "image_id": image_id} for entry in dt)
    labels = sorted({e["category_id"] for e in truth} | {e["category_id"] for e in found})
    names = {
        label: (str(classes[label]) if classes is not None and label < len(classes) else str(label))
        for label in labels
    }
    categories = [{"id": label, "name": names[label]} for label in labels]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        gt_api = coco_class()
        gt_api.dataset = {"images": images, "annotations": truth, "categories": categories}
        gt_api.createIndex()
        if found:
            dt_api = gt_api.loadRes(found)
        else:
            dt_api = coco_class()
            dt_api.dataset = {"images": images, "annotations": [], "categories": categories}
            dt_api.createIndex()
        evaluation = coco_eval(gt_api, dt_api, iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    result = {
        name: (float(v) if v > -1 else math.nan)
        for name, v in zip(COCO_STATS, evaluation.stats, strict=True)
    }
    if not truth:
        result = dict.fromkeys(result, math.nan)
    precision = evaluation.eval["precision"]  # IoU x recall x class x area x max detections
    for k, label in enumerate(evaluation.params.catIds):
        values = precision[:, :, k, 0, -1]
        kept = values[values > -1]
        result[f"ap_{names[label]}"] = float(kept.mean()) if kept.size else math.nan
    return result


def summarize_detection(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    meta: pd.DataFrame,
    *,
    iou_type: IouType = "bbox",
    classes: Sequence[str] | None = None,
    metrics: Sequence[str] = ("map", "map_50"),
    by_source: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """:func:`coco_map`'s ``metrics`` with patient-bootstrap intervals, overall and per source.

    Every resample draws whole patients (``meta``'s ``patient_id``; an image without one is its
    own group) and scores the images drawn, an image drawn twice counting twice. Each resample
    runs COCOeval again: about 0.05 s per hundred images on one CPU core, so 1,000 resamples of
    300 images take about three minutes.

    Args:
        predictions: as for :func:`coco_map`.
        targets: as for :func:`coco_map`.
        meta: one row per image, in the same order: ``patient_id`` (and ``uid``, ``source``).
        iou_type: ``"bbox"`` or ``"segm"``.
        classes: names by label value, for ``ap_<class>`` metrics.
        metrics: the keys of :func:`coco_map`'s result to report.
        by_source: also one block per source.
        n_boot: bootstrap resamples.
        seed: the resampling seed.
        level: the interval's coverage.

    Returns:
        :func:`~covid19_images.evaluation.summary.summarize`'s table.

    Example:
        >>> import numpy as np
        >>> truth = [{"boxes": np.array([[0, 0, 40, 40]]), "labels": np.array([1])}] * 2
        >>> found = [{"boxes": np.array([[0, 0, 40, 40]]), "scores": np.array([0.9]),
        ...           "labels": np.array([1])}] * 2
        >>> meta = pd.DataFrame({"uid": ["a", "b"], "patient_id": ["p", "q"]})
        >>> summarize_detection(found, truth, meta, n_boot=20)[["metric", "value", "low"]]
           metric  value  low
        0     map    1.0  1.0
        1  map_50    1.0  1.0
    """
    if not (len(predictions) == len(targets) == len(meta)):
        raise EvaluationError(
            f"{len(predictions)} predictions, {len(targets)} targets and {len(meta)} meta rows"
        )
    frame = meta.reset_index(drop=True).copy()
    frame["_image"] = np.arange(len(frame))
    wanted = list(metrics)

    def score(rows: pd.DataFrame) -> dict[str, float]:
        picked = rows["_image"].to_numpy()
        values = coco_map(
            [predictions[i] for i in picked],
            [targets[i] for i in picked],
            iou_type=iou_type,
            classes=classes,
        )
        return {name: values.get(name, math.nan) for name in wanted}

    return summarize(frame, score, by_source=by_source, n_boot=n_boot, seed=seed, level=level)
