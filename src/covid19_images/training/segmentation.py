"""Segmentation in the trainer: label maps as targets, Dice + cross-entropy as the loss, Dice on
val as the metric, and per-image (X-ray) or per-volume (CT) Dice, IoU and HD95 as the
predictions (research use only).

A segmentation dataset (``packed.json`` says ``"task": "segmentation"``, as ``xray-lung-seg`` and
``ct-lesion-seg`` write it) packs a label map beside every image; the loader moves it with the
image under augmentation. :class:`SegmentationTask` is what the trainer's loop
(:mod:`covid19_images.training.loop`) needs of this task.

A 2-D model on a CT dataset trains and predicts slice by slice, but is scored as the 3-D model of
:mod:`covid19_images.training.volumes` is: the predicted slice maps of a volume are stacked in
slice order and compared with its stacked label maps, one row per volume, Dice, IoU and HD95
(millimetres: the packed pixel's size in plane, the slice spacing across) of the lesion label.
The comparison is on the packed grid (each axial slice centre-cropped to a square and resized to
the packed size, as the build wrote it), not on the NIfTI grid; on square slices at their own
size the two are the same. Each slice's map is kept in ``predictions/<uid>-s<slice>.png``.

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
from covid19_images.training.data import FACTS, Part, in_order, prepare
from covid19_images.training.tasks import Setting, Task

if TYPE_CHECKING:
    import torch


MASKS = "predictions"
"""Folder of the run that receives each val and test image's predicted label map (PNG)."""


def mask_labels(lock: dict[str, Any], count: int) -> list[str]:
    """Names of the label values 0..count-1: background, then the recipe's labels: an X-ray
    recipe's mask label (one foreground class), a CT recipe's ``lesion`` or harmonised labels
    (:data:`covid19_images.process.ct.masks.LABELS`), else ``label<k>``.

    Example:
        >>> mask_labels({}, 3)
        ['background', 'label1', 'label2']
        >>> ct = {"modality": ["CT"], "mask_labels": "lesion", "mask_label": "lung"}
        >>> mask_labels({"recipe": ct}, 2)
        ['background', 'lesion']
    """
    recipe = lock.get("recipe") or {}
    generic = [f"label{k}" for k in range(1, count)]
    if "CT" in (recipe.get("modality") or []):
        from covid19_images.process.ct.masks import LABELS

        if recipe.get("mask_labels", "lesion") == "lesion":
            names = {1: "lesion"}
        else:
            names = {value: name for name, value in LABELS.items()}
        return ["background", *[names.get(k, generic[k - 1]) for k in range(1, count)]]
    named = recipe.get("mask_label") if count == 2 else None
    return ["background", *([str(named)] if named else generic)]


LESION_NAMES = ("lesion", "ggo", "consolidation")
"""Label names that count as COVID-19 lesion when a CT volume is scored."""


def lesion_values(labels: list[str]) -> list[int]:
    """The label values of lesion (:data:`LESION_NAMES`) among ``labels``; empty where none is.

    Example:
        >>> lesion_values(["background", "lung_left", "lung_right", "lesion", "ggo"])
        [3, 4]
    """
    return [k for k, name in enumerate(labels) if k > 0 and name in LESION_NAMES]


def refuse_empty(parts: dict[str, Part], what: str) -> None:
    """Refuse a dataset that holds no ``what`` in any split, with why and where to look.

    Example:
        >>> refuse_empty({"train": [], "val": [], "test": []}, "image/mask pair")  # doctest: +SKIP
    """
    from covid19_images.training.config import NotTrainableError

    if all(len(part) == 0 for part in parts.values()):
        raise NotTrainableError(
            f"the dataset holds no {what} in any split: nothing to train on. Its build found "
            "none (the build's last message names the sources with masks that it lacks and "
            "how to get them; problems.csv says why each file was left out)"
        )


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
    evaluator = "covid19_images.training.assess:evaluate_segmentation"

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

    def check(self, parts: dict[str, Part], classes: list[str]) -> None:
        refuse_empty(parts, "image/mask pair")
        super().check(parts, classes)

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
        """One row per val and test image (per volume for CT slices) with its Dice, IoU and
        HD95; the predicted label maps go to ``predictions/``, a montage of test images with
        their outlines to ``figures/overlays.png``."""
        labels = [str(v) for v in record["mask_labels"]]
        frames = []
        ct = False
        for split in ("val", "test"):
            part = parts[split]
            predicted, truth, _ = predict(
                model,
                part,
                size=setting.size,
                mean=setting.mean,
                std=setting.std,
                device=setting.device,
                batch_size=2 * setting.batch_size,
            )
            save_masks(run_dir, predicted, part)
            if "slice" in part.facts:
                ct = True
                dataset = Path(record["dataset"]["path"])
                scored, shown = volume_scores(predicted, truth, part, labels, dataset)
            else:
                scored = scores(predicted, truth, part, labels)
                shown = list(range(len(part)))
            frames.append(scored.assign(split=split))
            if split == "test":
                _montage(run_dir, part, predicted, truth, scored, shown, record)
        record["scoring"] = (
            {
                "per": "volume",
                "hd95": "mm",
                "maps": f"{MASKS}/<uid>-s<slice>.png (one per slice, stacked per volume)",
            }
            if ct
            else {"per": "image", "hd95": "pixels at the packed size", "maps": f"{MASKS}/<uid>.png"}
        )
        return pd.concat(frames, ignore_index=True)


def volume_scores(
    predicted: np.ndarray,
    truth: np.ndarray,
    part: Part,
    labels: list[str],
    dataset: Path,
) -> tuple[pd.DataFrame, list[int]]:
    """Per CT volume, the Dice, IoU and HD95 (mm) of its stacked slice maps (lesion label where
    ``labels`` name one, else every label), one row per ``uid`` in the part's order; and per
    volume the part's row of its slice with the most lesion (for the montage)."""
    from covid19_images.evaluation.segmentation import segmentation_scores

    facts = part.facts.reset_index(drop=True)
    side = predicted.shape[-1] if predicted.ndim == 3 else 0
    sizes = slice_spacings(dataset, list(dict.fromkeys(facts["uid"])), side)
    maps, targets, spacings, metas, shown = [], [], [], [], []
    for uid, rows in facts.groupby("uid", sort=False):
        order = rows.sort_values("slice", kind="stable").index.to_numpy()
        maps.append(predicted[order])
        targets.append(truth[order])
        spacings.append(sizes[str(uid)])
        metas.append(rows.iloc[0][list(FACTS)])
        shown.append(int(order[most_lesion(truth[order], predicted[order])]))
    meta = pd.DataFrame(metas, columns=list(FACTS)).reset_index(drop=True)
    lesion = lesion_values(labels)
    frame = segmentation_scores(
        maps,
        targets,
        {"lesion": lesion} if lesion else labels,
        spacing=spacings,
        foreground=False if lesion else None,
        meta=meta,
    )
    return frame, shown


def slice_spacings(dataset: Path, uids: list[str], side: int) -> dict[str, tuple[float, ...]]:
    """Millimetres per voxel of each volume's stacked packed slices, in (slice, row, column)
    order: the slice spacing, and the in-plane spacing times the square's side over the packed
    side (the build crops each slice to its shorter side and resizes it to ``side``)."""
    from covid19_images.process.ct.volume import VolumeError, load_nifti
    from covid19_images.training.config import TrainError
    from covid19_images.training.data import read_manifest

    manifest = read_manifest(dataset).drop_duplicates("uid").set_index("uid")
    out: dict[str, tuple[float, ...]] = {}
    for uid in uids:
        try:
            header = load_nifti(dataset / str(manifest.loc[uid, "path"])).header
        except (KeyError, VolumeError) as exc:
            raise TrainError(f"{dataset}: the volume of {uid} cannot be read ({exc})") from None
        nx, ny = (int(n) for n in header.get_data_shape()[:2])
        sx, sy, sz = (float(z) for z in header.get_zooms()[:3])
        scale = min(nx, ny) / side if side else 1.0
        out[uid] = (sz, sy * scale, sx * scale)
    return out


def most_lesion(truth: np.ndarray, predicted: np.ndarray) -> int:
    """The slice (first axis) with the most true lesion; where there is none, the most
    predicted; where neither, the middle one.

    Example:
        >>> t = np.zeros((3, 2, 2), np.uint8); t[2, 0, 0] = 1
        >>> most_lesion(t, np.zeros_like(t)), most_lesion(np.zeros_like(t), np.zeros_like(t))
        (2, 1)
    """
    for labels in (truth, predicted):
        counts = (labels > 0).reshape(len(labels), -1).sum(1)
        if counts.max(initial=0) > 0:
            return int(np.argmax(counts))
    return len(truth) // 2


def _montage(
    run_dir: Path,
    part: Part,
    predicted: np.ndarray,
    truth: np.ndarray,
    scored: pd.DataFrame,
    shown: list[int],
    record: dict[str, Any],
) -> None:
    """``figures/overlays.png``: the test images (for CT, each volume's slice with the most
    lesion) with their true and predicted outlines, and each row's Dice."""
    from covid19_images.training.overlays import mask_montage

    if not shown or not part.segments:
        return
    ct = "slice" in part.facts
    packed = part.dataset.packed_split().images
    positions = part.segments[0][1]
    dice = next((c for c in scored.columns if str(c).startswith("dice_")), None)
    titles = []
    for k, row in enumerate(shown):
        facts = part.facts.iloc[row]
        sliced = "slice" in facts and not pd.isna(facts["slice"])
        where = f" s{int(facts['slice'])}" if sliced else ""
        score = f" Dice {scored[dice].iloc[k]:.2f}" if dice else ""
        titles.append(f"{str(facts['uid'])[-12:]}{where}{score}")
    mask_montage(
        [np.asarray(packed[positions[row]]) for row in shown],
        [truth[row] for row in shown],
        [predicted[row] for row in shown],
        titles,
        run_dir / "figures" / "overlays.png",
        title=f"{record['train']['model']} on the test {'volumes' if ct else 'images'}",
    )
