"""Segmentation in the trainer: label maps as targets, Dice + cross-entropy as the loss, Dice on
val as the metric, and per-image Dice, IoU and HD95 as the predictions (research use only).

A segmentation dataset (``packed.json`` says ``"task": "segmentation"``, as ``xray-lung-seg`` and
``ct-lesion-seg`` write it) packs a label map beside every image; the loader moves it with the
image under augmentation. The trainer's loop is the classification one; these functions are
what differs.

Example:
    >>> mask_labels({"recipe": {"mask_label": "lung"}}, 2)
    ['background', 'lung']
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from covid19_images.atomic import write_bytes
from covid19_images.training.config import TrainConfig
from covid19_images.training.data import Part, in_order, prepare
from covid19_images.training.tasks import Setting, Task

if TYPE_CHECKING:
    import torch

    from covid19_images.training.run import Run

MASKS = "predictions"
"""Folder of the run that receives each val and test image's predicted label map (PNG)."""


def mask_labels(lock: dict[str, Any], count: int) -> list[str]:
    """Names of the label values 0..count-1: background, then the recipe's mask label (one
    foreground class) or ``label<k>``.

    Example:
        >>> mask_labels({}, 3)
        ['background', 'label1', 'label2']
    """
    recipe = lock.get("recipe") or {}
    named = recipe.get("mask_label") if count == 2 else None
    return ["background", *([str(named)] if named else [f"label{k}" for k in range(1, count)])]


def label_count(folder: Path) -> int:
    """How many label values the training masks hold (at least 2: background and one)."""
    from covid19_images.loaders.packed import open_split

    masks = open_split(folder, "train").masks
    if masks is None or len(masks) == 0:
        return 2
    return max(2, int(np.max(masks)) + 1)


def criterion() -> torch.nn.Module:
    """MONAI's Dice + cross-entropy on softmax logits against integer label maps."""
    from monai.losses import DiceCELoss

    loss: torch.nn.Module = DiceCELoss(to_onehot_y=True, softmax=True)
    return loss


def targets(masks: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """Label maps (B x H x W) as the loss takes them: B x 1 x size x size, nearest-resized."""
    import torch.nn.functional as F  # noqa: N812 - the usual name

    y = masks.to(device).unsqueeze(1)
    if y.shape[-1] != size or y.shape[-2] != size:
        y = F.interpolate(y.float(), size=(size, size), mode="nearest").long()
    return y


def predict(
    model: torch.nn.Module,
    part: Part,
    *,
    size: int,
    mean: float,
    std: float,
    device: torch.device,
    batch_size: int,
    loss: torch.nn.Module | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Predicted and true label maps (N x S x S at the packed size) and the mean loss."""
    import torch
    import torch.nn.functional as F  # noqa: N812 - the usual name

    model.eval()
    predicted, truth, total, seen = [], [], 0.0, 0
    with torch.inference_mode():
        for images, masks in in_order(part, batch_size):
            logits = model(prepare(images, size, mean, std, device)).float()
            if loss is not None:
                total += float(loss(logits, targets(masks, size, device)).item()) * len(masks)
            side = masks.shape[-1]
            if logits.shape[-1] != side:
                logits = F.interpolate(logits, size=(side, side), mode="bilinear")
            predicted.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
            truth.append(masks.to(torch.uint8).numpy())
            seen += len(masks)
    if not predicted:
        empty = np.zeros((0, 0, 0), dtype=np.uint8)
        return empty, empty, 0.0
    return np.concatenate(predicted), np.concatenate(truth), total / max(seen, 1)


def mean_dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean over images of the foreground Dice (every label but 0 as one region; an image
    where both are empty scores 1).

    Example:
        >>> a = np.array([[[0, 1], [1, 1]]], dtype=np.uint8)
        >>> round(mean_dice(a, np.array([[[0, 1], [0, 1]]], dtype=np.uint8)), 3)
        0.8
    """
    p, t = predicted > 0, truth > 0
    inter = (p & t).reshape(len(p), -1).sum(1)
    total = p.reshape(len(p), -1).sum(1) + t.reshape(len(t), -1).sum(1)
    dice = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    return float(dice.mean()) if len(dice) else float("nan")


def scores(predicted: np.ndarray, truth: np.ndarray, part: Part, labels: list[str]) -> pd.DataFrame:
    """Per image Dice, IoU and HD95 per label
    (:func:`covid19_images.evaluation.segmentation_scores`), with the image's ``uid``,
    ``source`` and ``patient_id``."""
    from covid19_images.evaluation.segmentation import segmentation_scores

    meta = part.facts.drop(columns=["label", "class"]).reset_index(drop=True)
    return segmentation_scores(predicted, truth, labels, meta=meta)


def save_masks(run_dir: Path, predicted: np.ndarray, part: Part) -> None:
    """``predictions/<uid>.png`` (``<uid>-s<slice>.png`` for a CT slice): each predicted label
    map as a grey PNG of label values."""
    import io

    from PIL import Image

    for row, labels in zip(part.facts.to_dict("records"), predicted, strict=True):
        name = str(row["uid"])
        if "slice" in row and not pd.isna(row["slice"]):
            name += f"-s{int(row['slice'])}"
        buffer = io.BytesIO()
        Image.fromarray(labels).save(buffer, format="PNG")
        write_bytes(run_dir / MASKS / f"{name}.png", buffer.getvalue())


class SegmentationTask(Task):
    """A label map per image (or CT slice): a 2-D U-Net, Dice + cross-entropy, mean foreground
    Dice on val, per-image Dice, IoU and HD95 as the predictions, label maps in
    ``predictions/``."""

    name = "segmentation"
    model_task = "segmentation"

    def __init__(self) -> None:
        self.criterion: torch.nn.Module | None = None

    def outputs(self, folder: Path, facts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        import json

        try:
            lock = json.loads((folder / "lock.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            lock = {}
        labels = mask_labels(lock if isinstance(lock, dict) else {}, label_count(folder))
        return len(labels), {"mask_labels": labels}

    def setup(self, parts: dict[str, Part], config: TrainConfig, setting: Setting) -> None:
        self.criterion = criterion()

    def loss(
        self, model: torch.nn.Module, batch: Any, setting: Setting
    ) -> tuple[torch.Tensor, int]:
        images, masks = batch
        assert self.criterion is not None
        x = prepare(images, setting.size, setting.mean, setting.std, setting.device)
        return self.criterion(model(x), targets(masks, setting.size, setting.device)), len(masks)

    def validate(
        self, model: torch.nn.Module, part: Part, setting: Setting
    ) -> tuple[float, str, float]:
        predicted, truth, loss = predict(
            model,
            part,
            size=setting.size,
            mean=setting.mean,
            std=setting.std,
            device=setting.device,
            batch_size=2 * setting.batch_size,
            loss=self.criterion or criterion(),
        )
        return mean_dice(predicted, truth), "dice", loss

    def predictions(
        self,
        run_dir: Path,
        model: torch.nn.Module,
        parts: dict[str, Part],
        setting: Setting,
        record: dict[str, Any],
    ) -> pd.DataFrame:
        """One row per val and test image with its Dice, IoU and HD95; the predicted label
        maps go to ``predictions/``."""
        frames = []
        for split in ("val", "test"):
            predicted, truth, _ = predict(
                model,
                parts[split],
                size=setting.size,
                mean=setting.mean,
                std=setting.std,
                device=setting.device,
                batch_size=2 * setting.batch_size,
            )
            save_masks(run_dir, predicted, parts[split])
            labels = [str(v) for v in record["mask_labels"]]
            frames.append(scores(predicted, truth, parts[split], labels).assign(split=split))
        return pd.concat(frames, ignore_index=True)

    def evaluate(
        self,
        run: Run,
        *,
        dataset: Path | str | None,
        split: str,
        out: Path | str | None,
        rule: str,
        n_boot: int,
        seed: int,
        device: str,
    ) -> dict[str, Any]:
        from covid19_images.training.assess import evaluate_segmentation

        return evaluate_segmentation(
            run, dataset=dataset, split=split, out=out, n_boot=n_boot, seed=seed
        )
