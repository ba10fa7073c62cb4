"""Localization in the trainer: a Mask R-CNN on a detection dataset, scored by COCO box mAP
(research use only).

A detection dataset (``packed.json`` says ``"task": "detection"``, as ``xray-lung-boxes`` writes
it) has ``boxes.parquet`` beside its packed images; the trainer reads each split through
:class:`covid19_images.loaders.detection.DetectionDataset`, whose augmentation moves the boxes
and instance masks with the image (no flips: left and right lung are labels).

- **Model**: ``maskrcnn_light`` or ``maskrcnn`` (:func:`covid19_images.models.create`) with one
  class per box category plus the background (torchvision's convention, label 0). The run's
  size is the side torchvision's transform resizes every image to (its ``min_size`` and
  ``max_size``): by default the packed size, so a 128 px dataset trains and predicts at 128 px
  and nothing is resized; ``--size 256`` on it makes the model upsample inside. Images go in as
  0-1 grey values; the model's own transform repeats the channel and normalises with
  ImageNet's mean and standard deviation (the run's mean and std are recorded, not applied).
  Predicted boxes come back in pixels of the packed image whatever the size.
- **Loss**: the sum of the model's loss dict in train mode (RPN objectness and box regression,
  the box head's classification and regression, the mask head's). Images without a lung mask
  have all-zero instance masks, so the mask head learns empty masks there; boxes are what this
  task scores. Training samples fewer proposals than torchvision's defaults
  (:data:`RPN_TRAIN_PROPOSALS`, :data:`ROI_TRAIN_SAMPLES`: a radiograph holds two lungs, not
  a street scene); inference is torchvision's own, so :meth:`Run.model
  <covid19_images.training.run.Run.model>` predicts exactly as the trainer did.
- **Validation**: COCO mAP@[.5:.95] of the boxes on val (higher is better; by pycocotools,
  :func:`covid19_images.evaluation.detection.coco_map`), and a val loss: the same summed loss
  dict on val images, computed in train mode (torchvision's detection models return losses in
  train mode only) without gradients, with every batch-norm layer held in eval mode (running
  statistics used, never updated) and the proposal sampling drawn from a fixed seed in a forked
  random state, so validation changes neither the weights' statistics nor the training draws,
  and the same model always gets the same val loss.
- **Predictions** (``predictions.parquet``): one row per predicted box of every val and test
  image (the model's own cut: score at least 0.05, at most 100 boxes per image), with ``uid``,
  ``split``, ``source``, ``patient_id``, the image's ``class``, ``n_predicted`` (the image's
  number of boxes), ``rank`` (0 = highest score), ``label``, ``category_id``, ``score`` and
  ``x0 y0 x1 y1`` in pixels of the packed image. An image with no predicted box keeps one row
  with ``n_predicted`` 0 and the box columns empty (null), so every image is accounted for;
  :func:`detections_of` turns the rows back into per-image dicts.
- **Evaluation** (val or test): mAP@[.5:.95] and mAP@.5, overall and per class, with
  patient-bootstrap intervals (:func:`~covid19_images.evaluation.detection.summarize_detection`),
  COCO's twelve numbers, and ``figures/overlays.png``: true (ground truth) and predicted boxes
  on the split's images.

Example:
    >>> frame = pd.DataFrame({"uid": ["a", "a", "b"], "n_predicted": [2, 2, 0],
    ...                       "category_id": pd.array([1, 2, None], dtype="Int64"),
    ...                       "score": [0.9, 0.8, None], "x0": [0.0, 5.0, None],
    ...                       "y0": [0.0, 5.0, None], "x1": [4.0, 9.0, None],
    ...                       "y1": [4.0, 9.0, None]})
    >>> [len(d["boxes"]) for d in detections_of(frame, ["a", "b"])]
    [2, 0]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from covid19_images.evaluation.summary import bootstrap_note
from covid19_images.training.config import NotTrainableError, TrainConfig, TrainError
from covid19_images.training.data import Part, in_order, open_part
from covid19_images.training.tasks import Setting, Task

if TYPE_CHECKING:
    import torch

    from covid19_images.training.run import Run

TARGET_KEYS = ("boxes", "labels", "masks")
"""What of a :class:`~covid19_images.loaders.detection.DetectionDataset` target the model
trains on."""

BOX_COLUMNS = ("x0", "y0", "x1", "y1")
"""A predicted box's corners in ``predictions.parquet`` (pixels of the packed image)."""

VAL_LOSS_SEED = 0
"""Seed of the proposal sampling when the val loss is computed (in a forked random state)."""

RPN_TRAIN_PROPOSALS = (1000, 500)
"""Training only: proposals per image the RPN keeps before and after its NMS (torchvision's
default 2000 and 2000). A radiograph holds a few large objects; at 128 px this makes a CPU
step about four times faster. Inference keeps torchvision's values (1000 and 1000)."""

ROI_TRAIN_SAMPLES = 128
"""Training only: proposals per image the box head is trained on (torchvision's default 512),
a quarter of them positive at most."""

OVERLAY_THRESHOLD = 0.5
"""Predicted boxes drawn on ``figures/overlays.png``: score at least this."""


Detections = list[dict[str, np.ndarray]]


def box_classes(folder: Path) -> list[str]:
    """Names of the label values 0..K of a detection dataset: ``background``, then its box
    categories by ``category_id`` (``label<k>`` for an id no box carries).

    Example:
        >>> box_classes(Path("datasets/xray-lung-boxes"))  # doctest: +SKIP
        ['background', 'right_lung', 'left_lung']
    """
    from covid19_images.loaders.boxes import BOXES

    try:
        frame = pd.read_parquet(folder / BOXES, columns=["category_id", "label"])
    except (OSError, ValueError) as exc:
        raise TrainError(
            f"{folder} has no readable {BOXES} ({str(exc)[:200]}): is it a detection dataset?"
        ) from None
    if frame.empty:
        raise NotTrainableError(f"{folder / BOXES} holds no box: nothing to detect")
    named = frame.drop_duplicates("category_id").set_index("category_id")["label"]
    count = int(frame["category_id"].max())
    return ["background"] + [
        str(named[k]) if k in named.index else f"label{k}" for k in range(1, count + 1)
    ]


def truth_of(part: Part) -> Detections:
    """The ground truth of every row of a detection part, in order: ``boxes`` (``K x 4``
    xyxy, pixels of the packed image) and ``labels`` (category ids), unaugmented.

    Example:
        >>> folder = Path("datasets/xray-lung-boxes")
        >>> part = open_part(folder, "test", detection=True)  # doctest: +SKIP
        >>> truth_of(part)[0]["labels"]  # doctest: +SKIP
        array([1, 2])
    """
    truth: Detections = []
    for dataset, rows in part.segments:
        boxes = dataset.packed_split().boxes
        if boxes is None:
            raise TrainError(f"{dataset.folder} has no boxes: not a detection dataset")
        for r in rows:
            truth.append(
                {
                    "boxes": np.asarray(boxes.boxes[int(r)], np.float32).reshape(-1, 4),
                    "labels": np.asarray(boxes.labels[int(r)], np.int64),
                }
            )
    return truth


def detections_of(frame: pd.DataFrame, uids: Sequence[str]) -> Detections:
    """Per-image ``boxes``, ``scores`` and ``labels`` of ``predictions.parquet`` rows, in the
    order of ``uids`` (an image without rows, or with only its empty row, has none): what
    :func:`~covid19_images.evaluation.detection.coco_map` takes.

    Example:
        >>> rows = pd.DataFrame({"uid": ["a"], "category_id": [1], "score": [0.7],
        ...                      "x0": [1.0], "y0": [2.0], "x1": [3.0], "y1": [4.0]})
        >>> detections_of(rows, ["a"])[0]["boxes"].tolist()
        [[1.0, 2.0, 3.0, 4.0]]
    """
    found = frame[frame["category_id"].notna()]
    grouped = {str(uid): rows for uid, rows in found.groupby("uid", sort=False)}
    out: Detections = []
    for uid in uids:
        rows = grouped.get(str(uid))
        if rows is None:
            out.append(
                {
                    "boxes": np.zeros((0, 4), np.float32),
                    "scores": np.zeros(0, np.float32),
                    "labels": np.zeros(0, np.int64),
                }
            )
            continue
        out.append(
            {
                "boxes": rows[list(BOX_COLUMNS)].to_numpy(np.float32),
                "scores": rows["score"].to_numpy(np.float32),
                "labels": rows["category_id"].to_numpy(np.int64),
            }
        )
    return out


def _on(targets: Sequence[dict[str, torch.Tensor]], device: torch.device) -> list[dict[str, Any]]:
    return [{k: t[k].to(device) for k in TARGET_KEYS} for t in targets]


@contextmanager
def boxes_only(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, a Mask R-CNN in eval mode predicts boxes, labels and scores without
    its mask branch (pasting 100 masks per image is most of a CPU's inference time); the
    boxes are the same. Any other model is left alone.

    Example:
        >>> import torch
        >>> with boxes_only(torch.nn.Identity()):
        ...     pass
    """
    heads = getattr(model, "roi_heads", None)
    pool = getattr(heads, "mask_roi_pool", None)
    if heads is None or pool is None:
        yield
        return
    heads.mask_roi_pool = None  # torchvision's RoIHeads.has_mask() is then False
    try:
        yield
    finally:
        heads.mask_roi_pool = pool


def detect(
    model: torch.nn.Module, part: Part, device: torch.device, batch_size: int
) -> tuple[Detections, Detections]:
    """The model's detections (eval mode, no gradients, boxes only: :func:`boxes_only`) and
    the ground truth of every row of ``part``, in order, as numpy dicts (boxes in pixels of
    the packed image)."""
    import torch

    model.eval()
    found: Detections = []
    truth: Detections = []
    with torch.inference_mode(), boxes_only(model):
        for images, targets in in_order(part, batch_size):
            outputs = model([image.to(device) for image in images])
            for output, target in zip(outputs, targets, strict=True):
                found.append(
                    {
                        "boxes": output["boxes"].float().cpu().numpy().reshape(-1, 4),
                        "scores": output["scores"].float().cpu().numpy(),
                        "labels": output["labels"].cpu().numpy().astype(np.int64),
                    }
                )
                truth.append(
                    {
                        "boxes": target["boxes"].numpy().reshape(-1, 4),
                        "labels": target["labels"].numpy(),
                    }
                )
    return found, truth


def validation_loss(
    model: torch.nn.Module, part: Part, device: torch.device, batch_size: int
) -> float:
    """The mean summed loss dict over ``part``'s images (unaugmented), without gradients, in
    train mode with every batch-norm layer in eval mode: their running statistics are used and
    left as they were. The proposal sampling draws from :data:`VAL_LOSS_SEED` in a forked
    random state (torch's global state is left as it was). The model's mode is restored."""
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    was_training = model.training
    model.train()
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.eval()
    devices = [device.index or 0] if device.type == "cuda" else []
    total, seen = 0.0, 0
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(VAL_LOSS_SEED)
            for images, targets in in_order(part, batch_size):
                losses = model([image.to(device) for image in images], _on(targets, device))
                total += float(sum(losses.values()).item()) * len(images)
                seen += len(images)
    finally:
        model.train(was_training)
    return total / max(seen, 1)


def prediction_rows(part: Part, found: Detections, classes: Sequence[str]) -> pd.DataFrame:
    """``predictions.parquet`` rows of one part (see the module text): one per predicted box,
    one empty row for an image without any.

    Example:
        >>> facts = pd.DataFrame({"uid": ["a", "b"], "source": "s", "patient_id": ["p", "q"],
        ...                       "class": "covid19", "label": 0})
        >>> part = Part("test", [], facts)
        >>> found = [{"boxes": np.array([[1.0, 2, 3, 4]]), "scores": np.array([0.9]),
        ...           "labels": np.array([1])},
        ...          {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)}]
        >>> rows = prediction_rows(part, found, ["background", "lung"])
        >>> rows["uid"].tolist(), rows["n_predicted"].tolist(), rows["label"].tolist()
        (['a', 'b'], [1, 0], ['lung', <NA>])
    """
    kept = part.facts.drop(columns=["label"])
    records: list[dict[str, Any]] = []
    for fact, item in zip(kept.to_dict("records"), found, strict=True):
        order = np.argsort(-np.asarray(item["scores"]), kind="stable")
        base: dict[str, Any] = {str(k): v for k, v in fact.items()}
        base["n_predicted"] = len(order)
        if not len(order):
            records.append(base)
        for rank, k in enumerate(order):
            label = int(item["labels"][k])
            box = np.asarray(item["boxes"][k], np.float64).tolist()
            records.append(
                {
                    **base,
                    "rank": rank,
                    "label": classes[label] if label < len(classes) else f"label{label}",
                    "category_id": label,
                    "score": float(item["scores"][k]),
                    **dict(zip(BOX_COLUMNS, box, strict=True)),
                }
            )
    columns = [*kept.columns, "n_predicted", "rank", "label", "category_id", "score"]
    frame = pd.DataFrame(records, columns=[*columns, *BOX_COLUMNS])
    frame["n_predicted"] = frame["n_predicted"].astype("int64")
    for column in ("rank", "category_id"):
        frame[column] = frame[column].astype("Int64")
    for column in ("score", *BOX_COLUMNS):
        frame[column] = frame[column].astype("float64")
    frame["label"] = frame["label"].astype("string")
    return frame


class DetectionTask(Task):
    """Boxes per image: a Mask R-CNN, its summed loss dict, box mAP@[.5:.95] on val, one row
    per predicted box as the predictions (see the module text)."""

    name = "detection"
    model_task = "detection"
    evaluator = "covid19_images.training.detection:evaluate_detection"

    def __init__(self) -> None:
        self.classes: list[str] = []

    def outputs(self, folder: Path, facts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Box categories plus the background; ``config.json`` records their names as
        ``detection_classes`` (label value = position)."""
        self.classes = box_classes(folder)
        return len(self.classes), {"detection_classes": self.classes}

    def parts(self, folder: Path, config: TrainConfig) -> dict[str, Part]:
        return {
            "train": open_part(
                folder, "train", augment=config.augment, seed=config.seed, detection=True
            ),
            "val": open_part(folder, "val", detection=True),
            "test": open_part(folder, "test", detection=True),
        }

    def check(self, parts: dict[str, Part], classes: list[str]) -> None:
        super().check(parts, classes)
        if not any(len(t["boxes"]) for t in truth_of(parts["train"])):
            raise NotTrainableError("the training split holds no box: nothing to detect")

    def model(self, config: TrainConfig, outputs: int, record: dict[str, Any]) -> torch.nn.Module:
        """The registry's Mask R-CNN, resizing images to the run's size, with the training
        proposal counts :data:`RPN_TRAIN_PROPOSALS` and :data:`ROI_TRAIN_SAMPLES` (recorded
        in ``config.json``; inference is torchvision's)."""
        from covid19_images.models import create

        model: Any = create(
            config.model,
            outputs,
            in_chans=1,
            pretrained=config.pretrained,
            image_size=int(record["size"]),
        )
        before, after = RPN_TRAIN_PROPOSALS
        model.rpn._pre_nms_top_n["training"] = before
        model.rpn._post_nms_top_n["training"] = after
        model.roi_heads.fg_bg_sampler.batch_size_per_image = ROI_TRAIN_SAMPLES
        record["detection_training"] = {
            "rpn_pre_nms_top_n": before,
            "rpn_post_nms_top_n": after,
            "roi_samples_per_image": ROI_TRAIN_SAMPLES,
        }
        built: torch.nn.Module = model
        return built

    def setup(self, parts: dict[str, Part], config: TrainConfig, setting: Setting) -> None:
        if not self.classes:
            self.classes = box_classes(parts["train"].dataset.folder)

    def loss(
        self, model: torch.nn.Module, batch: Any, setting: Setting
    ) -> tuple[torch.Tensor, int]:
        images, targets = batch
        x = [image.to(setting.device) for image in images]
        losses = model(x, _on(targets, setting.device))
        total: torch.Tensor = sum(losses.values())
        return total, len(x)

    def validate(
        self, model: torch.nn.Module, part: Part, setting: Setting
    ) -> tuple[float, str, float]:
        """Box mAP@[.5:.95] on val (minus the val loss where val holds no box) and the val
        loss (:func:`validation_loss`)."""
        from covid19_images.evaluation.detection import coco_map

        loss = validation_loss(model, part, setting.device, setting.batch_size)
        found, truth = detect(model, part, setting.device, 2 * setting.batch_size)
        value = coco_map(found, truth, classes=self.classes or None)["map"]
        if math.isnan(value):
            return -loss, "neg_loss", loss
        return value, "map", loss

    def predictions(
        self,
        run_dir: Path,
        model: torch.nn.Module,
        parts: dict[str, Part],
        setting: Setting,
        record: dict[str, Any],
    ) -> pd.DataFrame:
        """One row per predicted box of every val and test image (an image without any: one
        row with empty box columns)."""
        classes = [str(c) for c in record["detection_classes"]]
        frames = []
        for split in ("val", "test"):
            found, _ = detect(model, parts[split], setting.device, 2 * setting.batch_size)
            frames.append(prediction_rows(parts[split], found, classes).assign(split=split))
        frame = pd.concat(frames, ignore_index=True)
        first = ["uid", "split", "source", "patient_id", "class"]
        return frame[first + [c for c in frame.columns if c not in first]]


def _by_class(items: Detections, label: int) -> Detections:
    """Only the boxes of ``label`` in each image (their scores too, where there are)."""
    out: Detections = []
    for item in items:
        keep = np.asarray(item["labels"]) == label
        out.append({key: np.asarray(value)[keep] for key, value in item.items()})
    return out


def summary_table(
    found: Detections,
    truth: Detections,
    meta: pd.DataFrame,
    classes: Sequence[str],
    *,
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    """mAP@[.5:.95] (``map``) and mAP@.5 (``map_50``) over every class (``class`` ``all``)
    and of each class alone, overall and per source (where there are several), with
    patient-bootstrap intervals
    (:func:`~covid19_images.evaluation.detection.summarize_detection`).

    A class alone is scored on its own boxes and predictions in every image: COCO evaluates
    each category separately, so its ``map`` is :func:`coco_map`'s ``ap_<class>``. With
    ``n_boot`` 0 the intervals are NaN.
    """
    from covid19_images.evaluation.detection import summarize_detection

    by_source = "source" in meta and meta["source"].nunique() > 1
    tables = []
    for label, name in enumerate(classes):
        keep = label > 0  # label 0 is the background: its row is every class together
        table = summarize_detection(
            _by_class(found, label) if keep else found,
            _by_class(truth, label) if keep else truth,
            meta,
            classes=classes,
            by_source=by_source,
            n_boot=n_boot,
            seed=seed,
        )
        tables.append(table.assign(**{"class": name if keep else "all"}))
    table = pd.concat(tables, ignore_index=True)
    return table[["class", *[c for c in table.columns if c != "class"]]]


def evaluate_detection(
    run: Run,
    *,
    dataset: Path | str | None,
    split: str,
    out: Path | str | None,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Box mAP of a detection run's ``split`` (val or test) from its ``predictions.parquet``
    against the packed ground truth: ``metrics.json``, ``report.md`` and
    ``figures/overlays.png``.

    Example:
        >>> metrics = evaluate_detection(run, dataset=None, split="test", out=None,
        ...                              n_boot=200, seed=0)  # doctest: +SKIP
        >>> round(metrics["coco"]["map_50"], 3)  # doctest: +SKIP
        0.962
    """
    from covid19_images.atomic import json_safe, write_json, write_text
    from covid19_images.evaluation.detection import coco_map
    from covid19_images.training.assess import evaluation_folder, refuse_external

    refuse_external(run, dataset)
    if split not in ("val", "test"):
        raise TrainError(f"{run.path} has predictions for val and test only, not {split!r}")
    frame = run.predictions()
    rows = frame[frame["split"] == split]
    part = open_part(run.dataset, split, detection=True)
    uids = [str(u) for u in part.facts["uid"]]
    missing = sorted(set(uids) - set(rows["uid"].astype(str)))
    if missing:
        raise TrainError(
            f"{run.path / 'predictions.parquet'} lacks {len(missing)} {split} images of "
            f"{run.dataset} (e.g. {missing[0]}): the dataset changed since the run, train again"
        )
    classes = [str(c) for c in run.config["detection_classes"]]
    found = detections_of(rows, uids)
    truth = truth_of(part)
    meta = part.facts[["uid", "source", "patient_id"]]
    coco = coco_map(found, truth, classes=classes)
    table = summary_table(found, truth, meta, classes, n_boot=n_boot, seed=seed)
    target = evaluation_folder(run, dataset=dataset, split=split, out=out)
    figure = "figures/overlays.png"
    _overlays(run, part, found, truth, target / figure)
    empty = int(sum(len(f["boxes"]) == 0 for f in found))
    metrics: dict[str, Any] = {
        "version": 1,
        "task": "detection",
        "title": f"{run.model_name} on {run.config['dataset']['recipe']}",
        "split": split,
        "classes": classes,
        "images": len(uids),
        "patients": int(meta["patient_id"].nunique()),
        "true_boxes": int(sum(len(t["boxes"]) for t in truth)),
        "predicted_boxes": int(sum(len(f["boxes"]) for f in found)),
        "images_without_prediction": empty,
        "coco": json_safe(coco),
        "summary": json_safe(table.to_dict("records")),
        "bootstrap": {"n": n_boot, "seed": seed, "level": 0.95, "unit": "patient"},
        "figures": [figure],
    }
    write_json(target / "metrics.json", metrics)
    write_text(target / "report.md", _report(run, metrics, table))
    return metrics


def _overlays(run: Run, part: Part, found: Detections, truth: Detections, path: Path) -> None:
    """``figures/overlays.png``: the split's images with their true and predicted boxes."""
    from covid19_images.training.overlays import box_montage

    images = np.concatenate(
        [np.asarray(dataset.packed_split().images)[rows] for dataset, rows in part.segments]
    )
    titles = [
        f"{u[-8:]} ({c})" for u, c in zip(part.facts["uid"], part.facts["class"], strict=True)
    ]
    box_montage(
        images,
        [t["boxes"] for t in truth],
        [f["boxes"] for f in found],
        [f["scores"] for f in found],
        titles,
        path,
        threshold=OVERLAY_THRESHOLD,
    )


def _cell(row: dict[str, Any]) -> str:
    if pd.isna(row["value"]):
        return "n/a"
    text = f"{row['value']:.3f}"
    if not pd.isna(row.get("low")) and not pd.isna(row.get("high")):
        text += f" [{row['low']:.3f}, {row['high']:.3f}]"
    return text


def _report(run: Run, metrics: dict[str, Any], table: pd.DataFrame) -> str:
    from covid19_images import RESEARCH_USE_NOTICE

    split, n_boot = metrics["split"], metrics["bootstrap"]["n"]
    lines = [
        f"> {RESEARCH_USE_NOTICE}",
        "",
        f"# {metrics['title']}",
        "",
        f"Localization, split `{split}`: {metrics['images']} images of "
        f"{metrics['patients']} patients, {metrics['true_boxes']} true boxes; model "
        f"`{run.model_name}` at {run.size} px, {run.config.get('epochs_run')} epochs. Box "
        "average precision by pycocotools (COCOeval, boxes in pixels of the packed image): "
        "mAP@[.5:.95] averages ten IoU thresholds from 0.5 to 0.95, mAP@.5 takes IoU 0.5; "
        "a class's AP is scored on its own boxes. The model's own cut applies (score at least "
        f"0.05, at most 100 boxes per image): {metrics['predicted_boxes']} predicted boxes, "
        f"{metrics['images_without_prediction']} images without any. "
        + bootstrap_note(n_boot)
        + (" With few patients they are wide." if n_boot > 0 else ""),
        "",
        "| class | source | mAP@[.5:.95] (95% CI) | mAP@.5 (95% CI) | images | patients |",
        "|---|---|---|---|---:|---:|",
    ]
    for (cls, source), block in table.groupby(["class", "source"], sort=False):
        by: dict[str, dict[str, Any]] = {
            str(r["metric"]): {str(k): v for k, v in r.items()} for r in block.to_dict("records")
        }
        first = next(iter(by.values()))
        lines.append(
            f"| {cls} | {source} | {_cell(by['map'])} | {_cell(by['map_50'])} | "
            f"{first['n']} | {first['groups']} |"
        )
    coco = metrics["coco"]
    lines += ["", "## COCO summary (all classes)", "", "| statistic | value |", "|---|---:|"]
    for name, value in coco.items():
        lines.append(f"| {name} | {'n/a' if value is None else f'{value:.3f}'} |")
    lines += [
        "",
        "COCO's area ranges are in pixels of the packed image (small: under 32 x 32 px).",
        "",
        "## Overlays",
        "",
        f"![true and predicted boxes]({metrics['figures'][0]})",
        "",
        f"Ground truth against predicted boxes with score at least {OVERLAY_THRESHOLD}. "
        "Every predicted box is in `predictions.parquet` (one row per box; an image without "
        "any has one row with empty box columns).",
        "",
    ]
    return "\n".join(lines)
