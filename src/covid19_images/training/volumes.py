"""CT lesion segmentation on whole volumes: a 3-D U-Net trained on random patches, scored per
volume (research use only).

A segmentation dataset built from CT (``ct-lesion-seg``) keeps every image/label pair as NIfTI
(``<split>/images/<uid>.nii.gz`` and ``<split>/labels/<uid>.nii.gz`` on one grid, rows of
``manifest.parquet``). A 3-D model (``unet3d``) trains on those volumes, not on the packed slices;
:func:`covid19_images.training.tasks.task_name` sends it here. What the task does:

- **Input.** Each volume is read on its own grid, **not resampled** (CT voxels are often
  anisotropic, 0.6-0.9 mm in plane and 1-10 mm between slices; a patch is cubic in voxels, not in
  millimetres). Intensities become 0-255 exactly as the dataset's packed slices did: Hounsfield
  units through the recipe's display window (``lung``: centre -600, width 1500, so
  [-1350, 150] HU; ``mediastinum``: 40/400), volumes that are not HU (Radiopaedia-derived, tag
  ``not-hu``) stretched between their 0.5th and 99.5th percentiles. The model sees
  ``(v / 255 - mean) / std`` with the dataset's packed mean and standard deviation, so a 2-D and
  a 3-D model of one dataset see one scale. Volumes with a side under :data:`MIN_SIDE` voxels are
  padded with 0 (the window's floor, air) and the prediction cropped back.
- **Training.** An epoch draws :data:`PATCHES_PER_VOLUME` patches of every training volume in a
  shuffled order, ``batch_size`` patches per step. A patch is the run's ``size`` per axis
  (``--size``, required: the packed size of the slices is no patch side), capped by the
  (padded) volume; with probability :data:`FOREGROUND_FRACTION` it is centred on a random lesion
  voxel, otherwise anywhere (the positive/negative balance of MONAI's
  ``RandCropByPosNegLabeld``, drawn here from the lesion voxels alone, so no index of every
  background voxel is held in memory). ``--augment light`` or ``standard`` flips a patch left to
  right with probability 1/2; ``standard`` also scales and shifts its intensities by up to 10%.
  Every draw comes from (seed, epoch). The loss is MONAI's Dice + cross-entropy.
- **Validation and predictions.** Whole volumes through MONAI's sliding-window inference
  (:func:`covid19_images.models.dense.sliding_window_predict`: windows of the patch size,
  overlap :data:`OVERLAP`, Gaussian blending); the validation metric is the mean per-volume
  Dice of the lesion labels (every foreground label where none is named lesion). The predicted
  label volumes go to ``predictions/<uid>.nii.gz`` on the image's own grid and affine;
  ``predictions.parquet`` has one row per val and test volume with Dice, IoU and HD95
  (millimetres) of the lesion label (as
  :func:`covid19_images.evaluation.segmentation.ct_lesion_scores` scores it);
  ``figures/overlays.png`` shows, for each test volume, the axial slice with the most lesion.

Volumes are read once and kept as uint8 (about 60 MB for a 512 x 512 x 240 CT); ``--workers``
is not used.

Example:
    >>> patch_shape((36, 40, 40), 32)
    (32, 32, 32)
    >>> patch_shape((20, 512, 512), 96)
    (32, 96, 96)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from covid19_images.training.config import NotTrainableError, TrainConfig, TrainError
from covid19_images.training.data import FACTS, Part, read_manifest
from covid19_images.training.segmentation import (
    criterion,
    lesion_values,
    mask_labels,
    mean_dice,
    most_lesion,
    refuse_empty,
)
from covid19_images.training.tasks import Setting, Task

if TYPE_CHECKING:
    import torch

    from covid19_images.process.ct.volume import Volume

PATCHES_PER_VOLUME: Final = 4
"""Training patches drawn from each training volume per epoch."""
FOREGROUND_FRACTION: Final = 0.5
"""Probability that a training patch is centred on a lesion voxel (where the volume has one)."""
MIN_SIDE: Final = 32
"""Fewest voxels per axis the U-Net takes (four poolings, instance norm at the deepest level);
thinner volumes are padded with air."""
OVERLAP: Final = 0.25
"""Overlap of neighbouring sliding windows (a fraction of the window)."""
MASKS: Final = "predictions"
"""Folder of the run that receives each val and test volume's predicted labels (NIfTI)."""
SPLITS: Final = ("train", "val", "test")


@dataclass
class CtVolume:
    """One image/label pair as the task uses it."""

    uid: str
    image: np.ndarray
    """uint8 (z, y, x): windowed (HU) or stretched (not HU) as the packed slices are."""
    label: np.ndarray
    """uint8 (z, y, x) label values on the same grid."""
    grid: Volume
    """The image's grid (spacing, origin, direction); its array is not kept."""
    lesion: np.ndarray
    """Flat indices (into ``label``) of the lesion voxels: the training patches' centres."""

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Millimetres per voxel along the array's axes (z, y, x)."""
        x, y, z = self.grid.spacing
        return (z, y, x)


def read_pair(
    folder: Path,
    row: dict[Any, Any],
    window_name: str = "lung",
    lesion: Sequence[int] = (),
) -> CtVolume:
    """The image and label volumes of one manifest row (its ``path``, ``mask_path`` and
    ``hu``), checked to share one grid; the patch centres are the voxels of the ``lesion``
    label values (every foreground voxel where none is given).

    Example:
        >>> volume = read_pair(Path("datasets/ct-lesion-seg"), row, lesion=[1])  # doctest: +SKIP
    """
    from covid19_images.process.ct.pipeline import to_uint8
    from covid19_images.process.ct.volume import VolumeError, read_nifti, same_grid

    try:
        image = read_nifti(folder / str(row["path"]))
        label = read_nifti(folder / str(row["mask_path"]))
    except VolumeError as exc:
        raise TrainError(f"{folder}: {exc}: rebuild the dataset with --force") from None
    differs = same_grid(image, label)
    if differs:
        raise TrainError(f"{folder}: {row['uid']}: image and labels differ ({differs})")
    pixels = to_uint8(image.array, row.get("hu"), window_name)
    labels = np.asarray(label.array).astype(np.uint8)
    image.array = np.zeros((1, 1, 1), dtype=np.uint8)  # the grid only
    # Flat indices, 4 bytes a voxel where they fit (a full CT's lesion can be millions of them).
    centres = np.flatnonzero(np.isin(labels, list(lesion)) if len(lesion) else labels > 0)
    if labels.size < 2**31:
        centres = centres.astype(np.int32)
    return CtVolume(str(row["uid"]), pixels, labels, image, centres)


def patch_shape(shape: tuple[int, ...], size: int) -> tuple[int, int, int]:
    """The patch (and sliding window) of a volume of ``shape`` (z, y, x): ``size`` per axis,
    capped by the volume padded to :data:`MIN_SIDE`.

    Example:
        >>> patch_shape((100, 300, 300), 64)
        (64, 64, 64)
    """
    z, y, x = (min(size, max(int(s), MIN_SIDE)) for s in shape)
    return (z, y, x)


def padded(array: np.ndarray) -> np.ndarray:
    """``array`` padded with 0 at the far end of every axis shorter than :data:`MIN_SIDE`.

    Example:
        >>> padded(np.ones((20, 40, 40), np.uint8)).shape
        (32, 40, 40)
    """
    widths = [(0, max(0, MIN_SIDE - s)) for s in array.shape]
    if not any(after for _, after in widths):
        return array
    out: np.ndarray = np.pad(array, widths)
    return out


def draw_patch(
    volume: CtVolume, patch: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One training patch (image, labels) of ``volume``: centred on a random lesion voxel with
    probability :data:`FOREGROUND_FRACTION`, else anywhere; shifted to lie inside."""
    image, label = padded(volume.image), padded(volume.label)
    if len(volume.lesion) and rng.random() < FOREGROUND_FRACTION:
        flat = int(volume.lesion[int(rng.integers(len(volume.lesion)))])
        centre = np.unravel_index(flat, volume.label.shape)  # padding is at the far end
        start = [int(c) - p // 2 for c, p in zip(centre, patch, strict=True)]
    else:
        start = [int(rng.integers(0, s - p + 1)) for s, p in zip(image.shape, patch, strict=True)]
    start = [min(max(b, 0), s - p) for b, s, p in zip(start, image.shape, patch, strict=True)]
    box = tuple(slice(b, b + p) for b, p in zip(start, patch, strict=True))
    return image[box], label[box]


def predict_volume(
    model: torch.nn.Module, volume: CtVolume, setting: Setting
) -> tuple[np.ndarray, torch.Tensor]:
    """The predicted label volume (uint8, the image's shape) and the logits (1 x C x padded
    shape) of sliding-window inference."""
    import torch

    from covid19_images.models.dense import sliding_window_predict

    x = torch.from_numpy(padded(volume.image).astype(np.float32) / 255.0)[None, None]
    x = (x - setting.mean) / setting.std
    logits = sliding_window_predict(
        model,
        x,
        patch_shape(volume.image.shape, setting.size),
        sw_batch_size=max(1, setting.batch_size),
        overlap=OVERLAP,
    ).float()
    z, y, x_side = volume.image.shape
    labels = logits.argmax(1)[0, :z, :y, :x_side].to(torch.uint8).numpy()
    return labels, logits


def volume_part(folder: Path, manifest: pd.DataFrame, split: str, classes: list[str]) -> Part:
    """The image/label pairs of ``split`` as a :class:`~covid19_images.training.data.Part`
    with one row per volume (``path``, ``mask_path`` and ``hu`` beside the usual facts) and no
    packed segments."""
    rows = manifest[(manifest["split"] == split) & manifest["mask_path"].notna()]
    rows = rows.sort_values("uid", kind="stable").reset_index(drop=True)
    facts = rows[[*FACTS, "path", "mask_path"]].copy()
    facts["label"] = [classes.index(c) if c in classes else -1 for c in facts["class"]]
    facts["hu"] = [_hu(a) for a in rows.get("attributes", pd.Series([None] * len(rows)))]
    return Part(split, [], facts[[*FACTS, "label", "path", "mask_path", "hu"]])


def _hu(attributes: Any) -> bool | None:
    if not isinstance(attributes, str):
        return None
    try:
        value = json.loads(attributes).get("hu")
    except (ValueError, AttributeError):
        return None
    return None if value is None else bool(value)


class VolumeTask(Task):
    """A 3-D U-Net on CT image/label volumes (see the module text): random patches, Dice +
    cross-entropy, sliding-window inference, per-volume Dice, IoU and HD95."""

    name = "volumes"
    model_task = "segmentation"
    evaluator = "covid19_images.training.assess:evaluate_segmentation"

    def __init__(self) -> None:
        self.criterion: torch.nn.Module | None = None
        self.folder: Path | None = None
        self.window = "lung"
        self.side = MIN_SIDE
        self.lesion: list[int] = []
        self.cache: dict[str, CtVolume] = {}

    def outputs(self, folder: Path, facts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        from covid19_images.training.segmentation import label_count

        lock = _lock(folder)
        labels = mask_labels(lock, label_count(folder))
        self.lesion = lesion_values(labels)
        return len(labels), {"mask_labels": labels}

    def parts(self, folder: Path, config: TrainConfig) -> dict[str, Part]:
        from covid19_images.training.data import dataset_facts

        if config.size is None:
            raise TrainError(
                f"{config.model} trains on patches of the volumes: give their side in voxels "
                "with --size (e.g. 96 on a GPU, 32 to 64 on a CPU, with --batch-size 2 to 4); "
                "the dataset's packed size would be the default"
            )
        self.folder = folder
        recipe = _lock(folder).get("recipe") or {}
        self.window = str(recipe.get("window") or "lung")
        manifest = read_manifest(folder)
        if "mask_path" not in manifest:
            raise TrainError(f"{folder} has no image/label volumes (no mask_path column)")
        classes = dataset_facts(folder)["classes"]
        return {split: volume_part(folder, manifest, split, classes) for split in SPLITS}

    def check(self, parts: dict[str, Part], classes: list[str]) -> None:
        refuse_empty(parts, "CT volume with a lesion mask")
        if len(parts["train"]) < 2:
            raise NotTrainableError(
                "the training split has fewer than 2 volumes: nothing to train on"
            )
        for name in ("val", "test"):
            if len(parts[name]) == 0:
                raise NotTrainableError(
                    f"the {name} split holds no volume: rebuild with more data or other ratios"
                )

    def volume(self, row: dict[Any, Any]) -> CtVolume:
        """The pair of a part's row, read once per run."""
        uid = str(row["uid"])
        if uid not in self.cache:
            assert self.folder is not None
            self.cache[uid] = read_pair(self.folder, row, self.window, self.lesion)
        return self.cache[uid]

    def setup(self, parts: dict[str, Part], config: TrainConfig, setting: Setting) -> None:
        self.criterion = criterion()
        self.side = setting.size

    def batches(self, part: Part, config: TrainConfig, epoch: int) -> tuple[Iterator[Any], int]:
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(np.repeat(np.arange(len(part)), PATCHES_PER_VOLUME))
        steps = math.ceil(len(order) / config.batch_size)
        steps = min(steps, config.steps or steps)
        rows = part.facts.to_dict("records")
        return self._patches(rows, order, steps, config, rng), steps

    def _patches(
        self,
        rows: list[dict[Any, Any]],
        order: np.ndarray,
        steps: int,
        config: TrainConfig,
        rng: np.random.Generator,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        for step in range(steps):
            chosen = order[step * config.batch_size : (step + 1) * config.batch_size]
            volumes = [self.volume(rows[int(i)]) for i in chosen]
            # One patch shape per batch: the smallest volume of the batch caps it.
            sides = zip(*(patch_shape(v.image.shape, self.side) for v in volumes), strict=True)
            z, y, x = (min(s) for s in sides)
            images, labels = [], []
            for v in volumes:
                image, label = draw_patch(v, (z, y, x), rng)
                pixels = image.astype(np.float32) / 255.0
                if config.augment != "none" and rng.random() < 0.5:
                    pixels, label = pixels[..., ::-1], label[..., ::-1]
                if config.augment == "standard":
                    pixels = pixels * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
                images.append(np.ascontiguousarray(pixels, dtype=np.float32))
                labels.append(np.ascontiguousarray(label))
            yield (
                torch.from_numpy(np.stack(images))[:, None],
                torch.from_numpy(np.stack(labels).astype(np.int64))[:, None],
            )

    def loss(
        self, model: torch.nn.Module, batch: Any, setting: Setting
    ) -> tuple[torch.Tensor, int]:
        images, labels = batch
        assert self.criterion is not None
        x = ((images - setting.mean) / setting.std).to(setting.device, non_blocking=True)
        y = labels.to(setting.device, non_blocking=True)
        return self.criterion(model(x), y), len(images)

    def validate(
        self, model: torch.nn.Module, part: Part, setting: Setting
    ) -> tuple[float, str, float]:
        import torch

        loss_fn = self.criterion or criterion()
        dice, total = [], 0.0
        for row in part.facts.to_dict("records"):
            volume = self.volume(row)
            labels, logits = predict_volume(model, volume, setting)
            target = torch.from_numpy(padded(volume.label).astype(np.int64))[None, None]
            with torch.no_grad():
                total += float(loss_fn(logits, target).item())
            dice.append(mean_dice(*(self.scored(m)[None] for m in (labels, volume.label))))
        return float(np.mean(dice)), "dice", total / max(len(dice), 1)

    def scored(self, labels: np.ndarray) -> np.ndarray:
        """What validation scores: the lesion labels where the dataset names them, else every
        label but the background."""
        return np.isin(labels, self.lesion) if self.lesion else labels > 0

    def predictions(
        self,
        run_dir: Path,
        model: torch.nn.Module,
        parts: dict[str, Part],
        setting: Setting,
        record: dict[str, Any],
    ) -> pd.DataFrame:
        """One row per val and test volume with the lesion's Dice, IoU and HD95 (mm); the
        predicted label volumes go to ``predictions/<uid>.nii.gz``."""
        from covid19_images.evaluation.segmentation import segmentation_scores

        labels = [str(v) for v in record["mask_labels"]]
        lesion = lesion_values(labels)
        frames = []
        for split in ("val", "test"):
            part = parts[split]
            predicted, truth, spacings, shown = [], [], [], []
            for row in part.facts.to_dict("records"):
                volume = self.volume(row)
                labels_zyx, _ = predict_volume(model, volume, setting)
                save_volume(run_dir / MASKS / f"{volume.uid}.nii.gz", labels_zyx, volume.grid)
                predicted.append(labels_zyx)
                truth.append(volume.label)
                spacings.append(volume.spacing_zyx)
                shown.append(volume)
            meta = part.facts[list(FACTS)].reset_index(drop=True)
            scored = segmentation_scores(
                predicted,
                truth,
                {"lesion": lesion} if lesion else labels,
                spacing=spacings,
                foreground=False if lesion else None,
                meta=meta,
            ).assign(split=split)
            frames.append(scored)
            if split == "test":
                _montage(run_dir, shown, predicted, scored, record)
        record["scoring"] = {
            "per": "volume",
            "hd95": "mm",
            "maps": f"{MASKS}/<uid>.nii.gz",
            "input": f"{self.window} window (HU) or percentile stretch (not HU), not resampled",
        }
        return pd.concat(frames, ignore_index=True)


def save_volume(path: Path, labels: np.ndarray, grid: Volume) -> None:
    """``labels`` (uint8, z, y, x) as a gzipped NIfTI on ``grid``'s affine, written atomically.

    Example:
        >>> from covid19_images.process.ct.volume import Volume
        >>> grid = Volume(np.zeros((2, 2, 2), np.uint8), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
        >>> save_volume(Path("out/p.nii.gz"), np.ones((2, 2, 2), np.uint8), grid)  # doctest: +SKIP
    """
    import gzip

    from covid19_images.atomic import write_bytes
    from covid19_images.process.ct.volume import GZIP_LEVEL, Volume

    volume = Volume(labels.astype(np.uint8), grid.spacing, grid.origin, grid.direction)
    data = volume.to_nifti().to_bytes()
    write_bytes(path, gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))


def _montage(
    run_dir: Path,
    volumes: list[CtVolume],
    predicted: list[np.ndarray],
    scored: pd.DataFrame,
    record: dict[str, Any],
) -> None:
    """``figures/overlays.png``: per test volume, the axial slice with the most lesion."""
    from covid19_images.training.overlays import mask_montage

    if not volumes:
        return
    images, truth, maps, titles = [], [], [], []
    dice = next((c for c in scored.columns if str(c).startswith("dice_")), None)
    for k, (volume, labels) in enumerate(zip(volumes, predicted, strict=True)):
        z = most_lesion(volume.label, labels)
        images.append(volume.image[z])
        truth.append(volume.label[z])
        maps.append(labels[z])
        score = f" Dice {scored[dice].iloc[k]:.2f}" if dice else ""
        titles.append(f"{volume.uid[-12:]} z{z}{score}")
    mask_montage(
        images,
        truth,
        maps,
        titles,
        run_dir / "figures" / "overlays.png",
        title=f"{record['train']['model']} on the test volumes (slice with the most lesion)",
    )


def _lock(folder: Path) -> dict[str, Any]:
    try:
        lock = json.loads((folder / "lock.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return lock if isinstance(lock, dict) else {}
