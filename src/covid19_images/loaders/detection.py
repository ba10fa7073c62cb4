"""PyTorch detection: images with torchvision detection targets, boxes moved by augmentation.

``DetectionDataset(folder, "train")[i]`` is ``(image, target)``: the image as
:class:`~covid19_images.loaders.pytorch.CovidImageDataset` gives it (float32 ``C x H x W``), and
the target dict torchvision's detection models (Faster R-CNN, Mask R-CNN, RetinaNet) take:

- ``boxes``: float32 ``N x 4``, ``x0, y0, x1, y1`` in pixels of the image;
- ``labels``: int64 ``N``, the category ids (1-based; 0 is background, as torchvision wants);
- ``masks``: uint8 ``N x H x W``, the instance masks (the image's lung mask inside each box;
  all zeros for an image without a mask, see ``masked_only``);
- ``image_id`` (int64, the packed row), ``area`` (float32 ``N``: mask pixels where there is a
  mask, else the box's area), ``iscrowd`` (int64 ``N``, zeros), as torchvision's reference
  COCO evaluation reads them;
- ``dropped`` (int64): how many boxes augmentation moved out of the image (dropped, with their
  masks).

Augmentation applies the same draw to the image, its instance masks (nearest neighbour) and its
boxes (the four corners through the same affine map, their bounding box clipped to the image;
:func:`covid19_images.loaders.boxes.move_boxes`). No flips: left and right lung are labels.

Example:
    >>> ds = DetectionDataset("datasets/xray-lung-boxes", "train", augment="light",
    ...                       normalize=False, channels=3)  # doctest: +SKIP
    >>> images, targets = next(iter(ds.loader(4, shuffle=True)))  # doctest: +SKIP
    >>> targets[0]["boxes"].shape, targets[0]["labels"].dtype  # doctest: +SKIP
    (torch.Size([2, 4]), torch.int64)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from covid19_images.loaders.augment import Draw, Preset
from covid19_images.loaders.boxes import (
    SplitBoxes,
    instance_masks,
    move_boxes,
    pack_bits,
    unpack_bits,
)
from covid19_images.loaders.packed import LoadError
from covid19_images.loaders.pytorch import EpochBatch, PackedDataset
from covid19_images.loaders.warp import augment_batch, warp_labels

Target = dict[str, torch.Tensor]


class DetectionDataset(PackedDataset):
    """One split of a detection dataset as ``(image C x H x W, target dict)`` pairs.

    Args:
        folder: The dataset folder (``<out>/xray-lung-boxes``).
        split: ``train``, ``val`` or ``test``.
        size: The packed size to read (default: the one the dataset was built with).
        augment: ``none``, ``light``, ``standard`` (:mod:`covid19_images.loaders.augment`).
        seed: Seed of the augmentation draws.
        channels: 1, or 3 (the grey channel repeated) for torchvision's pretrained models.
        normalize: Subtract the train split's mean and divide by its standard deviation
            (torchvision's detection models normalise inside: pass False for them).
        masked_only: Only the images that have a mask, so every target's ``masks`` is real
            (Mask R-CNN); otherwise an image without a mask has all-zero instance masks.

    Raises:
        LoadError: The folder is not a detection dataset (no ``boxes.parquet``).
    """

    def __init__(
        self,
        folder: Path | str,
        split: str = "train",
        *,
        size: int | None = None,
        augment: str | Preset | None = None,
        seed: int = 0,
        channels: int = 1,
        normalize: bool = True,
        masked_only: bool = False,
    ) -> None:
        super().__init__(
            folder,
            split,
            size=size,
            augment=augment,
            seed=seed,
            channels=channels,
            normalize=normalize,
        )
        assert self.packed is not None
        boxes = self.packed.boxes
        if boxes is None:
            raise LoadError(
                f"{folder} is not a detection dataset (no boxes.parquet): build one with "
                "`covid19-images build xray-lung-boxes`"
            )
        self.categories = boxes.names
        """Category names; label ``k`` is ``categories[k - 1]``."""
        every = np.arange(len(self.packed), dtype=np.int64)
        self.rows = every[boxes.masked] if masked_only else every
        """The packed rows this dataset reads, in order."""

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        return self.__getitems__([int(index)])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, Target]]:
        """Samples for ``DataLoader``'s batched fetching."""
        return self.samples(indices, self.epoch)

    def samples(self, indices: Sequence[int], epoch: int) -> list[tuple[torch.Tensor, Target]]:
        """``(image, target)`` of each index, augmented with the draws of ``epoch``."""
        order = self._order(indices)
        split = self.packed_split()
        boxes = split.boxes
        assert boxes is not None  # checked in __init__
        rows = self.rows[order]
        images = np.asarray(split.images)
        masks = np.asarray(split.masks) if split.masks is not None else None
        mean, std = (self.mean, self.std) if self.normalize else (0.0, 1.0)
        draws = self.draws(order, epoch)
        out = np.empty((len(rows), *images.shape[1:]), np.float32)
        augment_batch([images[r] for r in rows], draws, mean=mean, std=std, out=out)
        samples = []
        for k, (r, d) in enumerate(zip(rows, draws, strict=True)):
            target = _target(int(r), boxes, masks, d, self.preset.identity)
            image = torch.from_numpy(out[k]).unsqueeze(0)
            if self.channels == 3:
                image = image.expand(3, -1, -1)
            samples.append((image, target))
        return samples

    def loader(
        self,
        batch_size: int = 8,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        **options: Any,
    ) -> DataLoader[Any]:
        """A ``DataLoader`` of ``(list of images, list of targets)`` batches
        (:func:`detection_collate`), each batch read whole. Each pass over it is a new epoch for
        the augmentation draws (counted from :meth:`set_epoch`'s value), in any number of
        workers. Shuffling uses a generator seeded with ``seed``, never the global one.
        ``options`` go to ``DataLoader`` (``num_workers``, ``pin_memory``, ...)."""
        return self._loader(WholeBatches(self), batch_size, shuffle, drop_last, options)


class WholeBatches(Dataset[tuple[list[torch.Tensor], list[Target]]]):
    """A :class:`DetectionDataset` read a whole batch at a time: indexed by an
    :class:`~covid19_images.loaders.pytorch.EpochBatch` (positions and the epoch of their
    draws), it gives the collated images and targets.

    Example:
        >>> batch = WholeBatches(dataset)[EpochBatch(0, (0, 1))]  # doctest: +SKIP
    """

    def __init__(self, dataset: DetectionDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, batch: EpochBatch) -> tuple[list[torch.Tensor], list[Target]]:
        return detection_collate(self.dataset.samples(batch.indices, batch.epoch))


def _target(
    row: int, boxes: SplitBoxes, masks: np.ndarray | None, d: Draw, identity: bool
) -> Target:
    """The target dict of packed row ``row`` under the draw ``d``."""
    xyxy, labels = boxes.boxes[row], boxes.labels[row]
    height, width = masks.shape[1:] if masks is not None else (0, 0)
    if masks is not None and boxes.masked[row]:
        inst = instance_masks(masks[row], xyxy)
    else:
        inst = np.zeros((len(xyxy), height, width), np.uint8)
    dropped = 0
    if not identity and len(xyxy):
        moved, kept = move_boxes(xyxy, d, height, width)
        if boxes.masked[row]:
            inst = unpack_bits(warp_labels(pack_bits(inst), d), len(xyxy))
        dropped = int((~kept).sum())
        xyxy, labels, inst = moved[kept], labels[kept], inst[kept]
    box_area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    area = (
        inst.reshape(len(inst), -1).sum(axis=1).astype(np.float32)
        if boxes.masked[row]
        else box_area
    )
    return {
        "boxes": torch.from_numpy(np.array(xyxy, np.float32)).reshape(-1, 4),
        "labels": torch.from_numpy(np.array(labels, np.int64)),
        "masks": torch.from_numpy(np.array(inst, np.uint8)),
        "image_id": torch.tensor(row, dtype=torch.int64),
        "area": torch.from_numpy(np.asarray(area, np.float32)),
        "iscrowd": torch.zeros(len(xyxy), dtype=torch.int64),
        "dropped": torch.tensor(dropped, dtype=torch.int64),
    }


def detection_collate(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[list[torch.Tensor], list[Target]]:
    """A batch as torchvision's detection models take it: a list of images and a list of
    target dicts (their boxes differ in number, so they are not stacked).

    Example:
        >>> image, target = torch.zeros(1, 4, 4), {"boxes": torch.zeros(0, 4)}
        >>> images, targets = detection_collate([(image, target), (image, target)])
        >>> len(images), len(targets)
        (2, 2)
    """
    return [image for image, _ in batch], [target for _, target in batch]


__all__ = ["DetectionDataset", "detection_collate"]
