"""The rows a run trains, validates and tests on, read from a dataset's packed arrays.

Each :class:`Part` is a selection of rows of one packed split (all of it, or, for
leave-one-source-out, the rows of some sources), with the manifest facts a prediction row needs
(``uid``, ``source``, ``patient_id``, ``class``). Batches come from
:class:`covid19_images.loaders.pytorch.CovidImageDataset` without normalisation (0-1 floats);
:func:`prepare` resizes them to the run's size and normalises them with the *run's* mean and
standard deviation, so a model sees the same scale on any dataset it is evaluated on.

A detection part (``open_part(..., detection=True)``) reads the same rows through
:class:`covid19_images.loaders.detection.DetectionDataset` instead: its batches are a list of
0-1 images (``1 x S x S``) and a list of torchvision target dicts (boxes moved with the image
by augmentation), as torchvision's detection models take them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from covid19_images.loaders.packed import LoadError, read_meta
from covid19_images.training.config import TrainError

if TYPE_CHECKING:
    import torch

    from covid19_images.loaders.pytorch import PackedDataset

FACTS = ("uid", "source", "patient_id", "class")
"""Manifest columns every prediction row carries."""


@dataclass
class Part:
    """Rows of packed splits: their positions in each array, labels and manifest facts.

    Usually one packed split (``segments`` has one entry); the held-out source of
    leave-one-source-out gathers rows of every split (one segment each). The packed splits are
    :class:`~covid19_images.loaders.pytorch.CovidImageDataset` (images and labels, label maps or
    targets) or, for detection, :class:`~covid19_images.loaders.detection.DetectionDataset`.
    """

    name: str
    """What the run calls these rows: ``train``, ``val`` or ``test``."""
    segments: list[tuple[PackedDataset, np.ndarray]]
    """(packed split, positions in its array) pairs."""
    facts: pd.DataFrame
    """One row per position: ``uid``, ``source``, ``patient_id``, ``class``, ``label``
    (``slice`` too for CT slices), in the order of the segments."""

    def __len__(self) -> int:
        return len(self.facts)

    @property
    def labels(self) -> np.ndarray:
        """Class numbers of the rows."""
        return self.facts["label"].to_numpy(dtype=np.int64)

    @property
    def dataset(self) -> PackedDataset:
        """The packed split of a one-segment part."""
        if len(self.segments) != 1:
            raise ValueError(f"{self.name} gathers {len(self.segments)} splits")
        return self.segments[0][0]

    def batches(
        self, batch_size: int, epoch: int = 0, *, shuffle: bool = False, seed: int = 0
    ) -> list[np.ndarray]:
        """Positions per batch for one pass of a one-segment part; shuffled by a generator
        seeded by (seed, epoch). A last batch of one image is dropped when shuffling (batch
        norm cannot train on one)."""
        self.dataset  # noqa: B018 - one segment only
        order = self.segments[0][1]
        if shuffle:
            order = order[np.random.default_rng([seed, epoch]).permutation(len(order))]
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if shuffle and len(chunks) > 1 and len(chunks[-1]) == 1:
            chunks.pop()
        return chunks

    @classmethod
    def gather(cls, name: str, parts: list[Part]) -> Part:
        """One part of the rows of several (e.g. one source's rows of every split)."""
        segments = [segment for part in parts for segment in part.segments]
        facts = pd.concat([part.facts for part in parts], ignore_index=True)
        return cls(name, segments, facts)


def open_part(
    folder: Path,
    split: str,
    *,
    name: str | None = None,
    augment: str = "none",
    seed: int = 0,
    keep: set[str] | None = None,
    drop: set[str] | None = None,
    detection: bool = False,
) -> Part:
    """One packed split of ``folder`` as a :class:`Part`.

    Args:
        folder: A dataset folder.
        split: The packed split to read.
        name: What the run calls it (default: ``split``).
        augment: The augmentation preset of its batches.
        seed: Seed of the augmentation draws.
        keep: Only rows of these sources.
        drop: Leave out rows of these uids.
        detection: Read the rows with their boxes
            (:class:`~covid19_images.loaders.detection.DetectionDataset`, every row of the
            split, with or without a mask); a dataset without ``boxes.parquet`` is a
            :class:`TrainError`.

    Example:
        >>> folder = Path("datasets/xray-lung-boxes")
        >>> part = open_part(folder, "val", detection=True)  # doctest: +SKIP
        >>> images, targets = next(in_order(part, 4))  # doctest: +SKIP
        >>> images[0].shape, sorted(targets[0])[:2]  # doctest: +SKIP
        (torch.Size([1, 128, 128]), ['area', 'boxes'])
    """
    from covid19_images.loaders.pytorch import CovidImageDataset

    dataset: PackedDataset
    try:
        if detection:
            from covid19_images.loaders.detection import DetectionDataset

            dataset = DetectionDataset(folder, split, augment=augment, seed=seed, normalize=False)
        else:
            dataset = CovidImageDataset(folder, split, augment=augment, seed=seed, normalize=False)
    except LoadError as exc:
        raise TrainError(str(exc)) from None
    packed = dataset.packed_split()
    facts = pd.DataFrame({"uid": packed.uids, "label": packed.labels})
    if any(s is not None for s in packed.slices):
        facts["slice"] = pd.array(packed.slices, dtype="Int64")
    manifest = read_manifest(folder)
    first = manifest.drop_duplicates("uid").set_index("uid")
    missing = sorted(set(facts["uid"]) - set(first.index))
    if missing:
        raise TrainError(
            f"{folder}: {len(missing)} packed rows have no manifest row (e.g. {missing[0]}): "
            "rebuild the dataset with --force"
        )
    for column in ("source", "patient_id"):
        facts[column] = first.loc[facts["uid"], column].to_numpy()
    facts["class"] = [packed.classes[i] for i in facts["label"]]
    selected = np.ones(len(facts), dtype=bool)
    if keep is not None:
        selected &= facts["source"].isin(sorted(keep)).to_numpy()
    if drop:
        selected &= ~facts["uid"].isin(sorted(drop)).to_numpy()
    rows = np.flatnonzero(selected)
    facts = facts.iloc[rows].reset_index(drop=True)
    return Part(name or split, [(dataset, rows)], facts[[*FACTS, "label", *_extra(facts)]])


def _extra(facts: pd.DataFrame) -> list[str]:
    return ["slice"] if "slice" in facts else []


def read_manifest(folder: Path) -> pd.DataFrame:
    """The dataset's manifest, with one clear message when it cannot be read."""
    try:
        return pd.read_parquet(folder / "manifest.parquet")
    except (OSError, ValueError) as exc:
        raise TrainError(f"{folder / 'manifest.parquet'} cannot be read ({exc})") from None


def dataset_facts(folder: Path) -> dict[str, Any]:
    """What a run records about its dataset: path, recipe, classes, size, lock digest."""
    import hashlib

    try:
        meta = read_meta(folder)
    except LoadError as exc:
        raise TrainError(str(exc)) from None
    lock = folder / "lock.json"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None
    recipe = None
    naive = bool(meta.get("naive", False))
    if lock.is_file():
        import json

        try:
            locked = json.loads(lock.read_text(encoding="utf-8"))
            recipe = locked.get("recipe", {}).get("name")
            naive = naive or bool(locked.get("naive", False))
        except (OSError, ValueError, AttributeError):
            recipe = None
    return {
        "path": str(folder.resolve()),
        "recipe": recipe or folder.name,
        "classes": [str(c) for c in meta["classes"]],
        "size": int(meta["size"]),
        "splits": {k: int(v["count"]) for k, v in meta["splits"].items()},
        "mean": float(meta.get("mean", 0.5)),
        "std": float(meta.get("std", 0.25)),
        "lock_sha256": digest,
        "naive": naive,
        "task": str(meta.get("task") or _task_of(meta)),
    }


def _task_of(meta: dict[str, Any]) -> str:
    """A dataset's task where ``packed.json`` does not name one: masks make it segmentation."""
    splits = meta.get("splits", {}).values()
    return "segmentation" if any("mask_file" in info for info in splits) else "classification"


def prepare(
    images: torch.Tensor, size: int, mean: float, std: float, device: torch.device
) -> torch.Tensor:
    """A 0-1 batch (B x 1 x S x S) resized to ``size`` and normalised, on ``device``."""
    import torch.nn.functional as F  # noqa: N812 - the usual name

    x = images.to(device, non_blocking=True)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return (x - mean) / std


def read_batch(dataset: PackedDataset, positions: np.ndarray, epoch: int) -> tuple[Any, Any]:
    """Images (0-1, B x 1 x S x S) and labels of ``positions`` in ``epoch``'s draws; from a
    :class:`~covid19_images.loaders.detection.DetectionDataset`, a list of images
    (``1 x S x S``) and a list of their target dicts."""
    from covid19_images.loaders.pytorch import EpochBatch

    tagged = EpochBatch(epoch, tuple(int(i) for i in positions))
    batch: Any = _reader(dataset)  # the EpochBatch overload of __getitem__ is the loader's own
    images, labels = batch[tagged]
    return images, labels


def _reader(dataset: PackedDataset) -> Any:
    """What reads ``dataset`` one tagged batch (:class:`EpochBatch`) at a time."""
    from covid19_images.loaders.detection import DetectionDataset, WholeBatches

    return WholeBatches(dataset) if isinstance(dataset, DetectionDataset) else dataset


def in_order(part: Part, batch_size: int) -> Iterator[tuple[Any, Any]]:
    """Every row of ``part`` in order, unaugmented, ``batch_size`` at a time."""
    for dataset, rows in part.segments:
        for start in range(0, len(rows), batch_size):
            yield read_batch(dataset, rows[start : start + batch_size], 0)


def iterate(
    part: Part,
    batch_size: int,
    epoch: int,
    *,
    shuffle: bool,
    seed: int,
    steps: int | None = None,
    workers: int = 0,
) -> Iterator[tuple[Any, Any]]:
    """The batches of one pass, at most ``steps`` of them, read by ``workers`` processes.

    The batches and their augmentation draws are the same whatever the number of workers.
    """
    import torch
    from torch.utils.data import DataLoader

    from covid19_images.loaders.pytorch import EpochBatch

    chunks = part.batches(batch_size, epoch, shuffle=shuffle, seed=seed)[:steps]
    if workers == 0:
        for positions in chunks:
            yield read_batch(part.dataset, positions, epoch)
        return
    tagged = [EpochBatch(epoch, tuple(int(i) for i in positions)) for positions in chunks]
    # The loader's own generator, not torch's global one: with or without workers the global
    # RNG (dropout, say) sees the same draws.
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    yield from DataLoader(
        _reader(part.dataset),
        batch_size=None,
        sampler=tagged,
        num_workers=workers,
        generator=generator,
    )


def resolve_device(choice: str | torch.device) -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``; CUDA without a device is a
    :class:`TrainError`, not a driver traceback.

    Example:
        >>> resolve_device("cpu")  # doctest: +SKIP
        device(type='cpu')
    """
    import torch

    name = str(choice)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"--device {name}: no CUDA device is available (use --device cpu)")
    if name != "cpu" and not name.startswith("cuda"):
        raise TrainError(f"--device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def predict_batches(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
    *,
    size: int,
    mean: float,
    std: float,
    device: torch.device,
    classes: int,
    criterion: torch.nn.Module | None = None,
) -> tuple[np.ndarray, float]:
    """Softmax probabilities (N x classes) of 0-1 batches, and with ``criterion`` the mean
    loss against their labels; the model runs in eval mode without gradients."""
    import torch

    model.eval()
    outputs, losses, seen = [], 0.0, 0
    with torch.inference_mode():
        for images, labels in batches:
            logits = model(prepare(images, size, mean, std, device)).float()
            if criterion is not None and labels is not None:
                losses += float(criterion(logits, labels.to(device)).item()) * len(labels)
            seen += len(images)
            outputs.append(torch.softmax(logits, dim=1).cpu().numpy())
    probs = np.concatenate(outputs) if outputs else np.zeros((0, classes), dtype=np.float32)
    return probs, losses / max(seen, 1)
