"""PyTorch: a map-style ``Dataset`` over a split's packed array.

``CovidImageDataset(folder, "train")[i]`` is ``(image, label)``: a float32 tensor of shape
``(channels, size, size)`` normalised with the train split's mean and standard deviation, and
the class number (``dataset.classes`` names them); for a segmentation dataset the label map
instead, for a regression dataset the float targets (detection datasets:
:class:`covid19_images.loaders.detection.DetectionDataset`). Batches are read with one memory copy
(``__getitems__``, which ``DataLoader`` uses for batched fetching). Augmentation warps each
uint8 image with OpenCV and converts it to normalised float through a per-image table
(:func:`covid19_images.loaders.warp.augment_batch`), about 7 times faster per core than
``affine_grid``/``grid_sample`` on float batches (``benchmarks/loaders.py --augment-only``).
A trainer that prefers the geometry on its GPU reads plain batches and calls
:func:`apply_draws` there with :meth:`CovidImageDataset.draws`.
Random values come from a generator seeded by (seed, epoch, index): the same in any worker,
and torch's and numpy's global state are never touched. Call ``set_epoch(n)`` each epoch for
new draws.

Example:
    >>> from torch.utils.data import DataLoader  # doctest: +SKIP
    >>> ds = CovidImageDataset("datasets/xray-covid", "train", augment="light")  # doctest: +SKIP
    >>> images, labels = next(iter(DataLoader(ds, batch_size=32, shuffle=True)))  # doctest: +SKIP
    >>> images.shape, labels.dtype  # doctest: +SKIP
    (torch.Size([32, 1, 224, 224]), torch.int64)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from covid19_images.loaders.augment import Draw, Preset, draw, preset, rng_for, theta
from covid19_images.loaders.packed import PackedSplit, open_split
from covid19_images.loaders.warp import augment_batch


class PackedDataset(Dataset[Any]):
    """What every PyTorch dataset over a packed split shares: the memory map (opened again in
    each worker, never pickled), the augmentation preset and its per-sample draws, the epoch,
    index checks and a ``DataLoader`` that reads each batch whole.

    Subclasses say what a sample is; :class:`CovidImageDataset` (labels, label maps, regression
    targets) and :class:`~covid19_images.loaders.detection.DetectionDataset` (boxes) are two.
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
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {channels}")
        self.folder, self.split, self.size = Path(folder), split, size
        self.packed: PackedSplit | None = open_split(folder, split, size)
        self.preset = preset(augment)
        self.seed, self.epoch, self.channels, self.normalize = seed, 0, channels, normalize
        self.mean, self.std = self.packed.mean, self.packed.std

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws for another epoch (the same epoch always draws the same)."""
        self.epoch = epoch

    def packed_split(self) -> PackedSplit:
        """The packed split's arrays (memory-mapped; mapped again in a worker process)."""
        if self.packed is None:  # in a worker that received the dataset by pickling
            self.packed = open_split(self.folder, self.split, self.size)
        return self.packed

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["packed"] = None  # never pickle the mapped arrays: each worker maps the files
        return state

    def __len__(self) -> int:
        raise NotImplementedError

    def _order(self, indices: Sequence[int]) -> np.ndarray:
        order = np.asarray(indices, dtype=np.int64)
        if len(order) and (order.min() < -len(self) or order.max() >= len(self)):
            raise IndexError(f"index out of range for a split of {len(self)} samples")
        return order % max(len(self), 1)

    def draws(self, indices: Iterable[int], epoch: int | None = None) -> list[Draw]:
        """The augmentation draws of ``indices`` in ``epoch`` (default: the current one), as
        the dataset applies them: for :func:`apply_draws` on a training device.

        Example:
            >>> plain = CovidImageDataset("datasets/xray-covid", normalize=False)  # doctest: +SKIP
            >>> images, labels = plain[[0, 1]]  # doctest: +SKIP
            >>> ds = CovidImageDataset("datasets/xray-covid", augment="light")  # doctest: +SKIP
            >>> out, _ = apply_draws(images.cuda(), ds.draws([0, 1]))  # doctest: +SKIP
            >>> out.shape  # doctest: +SKIP
            torch.Size([2, 1, 224, 224])
        """
        epoch = self.epoch if epoch is None else epoch
        return [draw(self.preset, rng_for(self.seed, epoch, int(i))) for i in indices]

    def _loader(
        self,
        reader: Dataset[Any],
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        options: dict[str, Any],
    ) -> DataLoader[Any]:
        """A ``DataLoader`` handing ``reader`` one :class:`EpochBatch` at a time: each pass is a
        new epoch for the draws (counted from :meth:`set_epoch`'s value), in any number of
        workers; shuffling uses a generator seeded with ``seed``, never the global one."""
        if shuffle:
            generator = torch.Generator().manual_seed(self.seed)
            sampler: Sampler[int] = RandomSampler(self, generator=generator)
        else:
            sampler = SequentialSampler(self)
        batches = _EpochBatches(BatchSampler(sampler, batch_size, drop_last), self.epoch)
        return DataLoader(reader, batch_size=None, sampler=batches, **options)


class CovidImageDataset(PackedDataset):
    """One split of an assembled dataset as ``(image tensor C x H x W, label)`` pairs.

    Args:
        folder: The dataset folder (``<out>/<recipe>``).
        split: ``train``, ``val`` or ``test``.
        size: The packed size to read (default: the one the dataset was built with).
        augment: ``none``, ``light``, ``standard`` (see :mod:`covid19_images.loaders.augment`).
        seed: Seed of the augmentation draws.
        channels: 1, or 3 for models pretrained on colour images (the grey channel repeated).
        normalize: Subtract the train split's mean and divide by its standard deviation.
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
        self.classes = self.packed.classes
        self.labels = self.packed.labels
        self.targets = self.packed.targets
        """Regression datasets: ``(N, T)`` float32 targets (None otherwise)."""
        self.target_names = self.packed.target_names

    def __len__(self) -> int:
        return len(self.labels)

    @overload
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...

    @overload
    def __getitem__(self, index: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def __getitem__(
        self, index: int | Sequence[int] | EpochBatch
    ) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, torch.Tensor]:
        """One sample ``(C x H x W, label)``, or for a list of indices a whole batch
        ``(B x C x H x W, labels)`` (what :meth:`loader` asks for, with its pass number).

        For a segmentation dataset the target is the label map instead: int64 ``H x W`` (a
        sample) or ``B x H x W`` (a batch), moved with the image by augmentation. For a
        regression dataset (``xray-severity``) it is the float32 targets: ``T`` (a sample) or
        ``B x T`` (a batch), in the order of :attr:`target_names`.
        """
        if isinstance(index, (int, np.integer)):
            image, target = self.__getitems__([int(index)])[0]
            return image, target
        epoch = index.epoch if isinstance(index, EpochBatch) else self.epoch
        indices = index.indices if isinstance(index, EpochBatch) else index
        order = self._order(indices)
        images, masks = self._batch(order, epoch)
        if masks is not None:
            return images, masks
        if self.targets is not None:
            return images, torch.from_numpy(self.targets[order])
        return images, torch.from_numpy(self.labels[order])

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """Samples for ``DataLoader``'s batched fetching: one read out of the mapped array."""
        order = self._order(indices)
        images, masks = self._batch(order, self.epoch)
        targets: list[Any]
        if masks is not None:
            targets = list(masks.unbind(0))
        elif self.targets is not None:
            targets = list(torch.from_numpy(self.targets[order]).unbind(0))
        else:
            targets = self.labels[order].tolist()
        return list(zip(images.unbind(0), targets, strict=True))

    @property
    def segmentation(self) -> bool:
        """True when samples are (image, label map) pairs."""
        return self.packed_split().masks is not None

    def loader(
        self,
        batch_size: int = 64,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        **options: Any,
    ) -> DataLoader[Any]:
        """A ``DataLoader`` that reads each batch whole: no per-sample tensors, no collate copy.

        Each pass over it is a new epoch for the augmentation draws (counted from
        :meth:`set_epoch`'s value), in any number of workers. Shuffling uses a generator seeded
        with ``seed``, never the global one. ``options`` go to ``DataLoader`` (``num_workers``,
        ``pin_memory``, ...).
        """
        return self._loader(self, batch_size, shuffle, drop_last, options)

    def _batch(self, order: np.ndarray, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        split = self.packed_split()
        masks = None
        if self.preset.identity:
            batch = torch.from_numpy(np.take(split.images, order, axis=0)).unsqueeze(1).float()
            if self.normalize:
                batch = batch.sub_(self.mean * 255.0).mul_(1.0 / (255.0 * self.std))
            else:
                batch = batch.mul_(1.0 / 255.0)
            if split.masks is not None:
                masks = torch.from_numpy(np.take(split.masks, order, axis=0))
        else:
            size = split.images.shape[1:]
            batch = torch.empty((len(order), 1, *size), dtype=torch.float32)
            mean, std = (self.mean, self.std) if self.normalize else (0.0, 1.0)
            rows = np.asarray(split.images)  # plain views of the mapped rows, no copy
            _, moved = augment_batch(
                [rows[i] for i in order],
                self.draws(order, epoch),
                mean=mean,
                std=std,
                masks=None if split.masks is None else [split.masks[i] for i in order],
                out=batch.numpy()[:, 0],
            )
            masks = None if moved is None else torch.from_numpy(moved)
        if self.channels == 3:
            batch = batch.expand(-1, 3, -1, -1)
        return batch, masks.long() if masks is not None else None


def apply_draws(
    batch: torch.Tensor, draws: Sequence[Draw], masks: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply one draw per image to a float batch ``(B, C, H, W)`` in 0-1, on its own device,
    with ``affine_grid``/``grid_sample``: for a trainer that wants the geometry on its GPU.

    The same values as the dataset's CPU path up to interpolation rounding (bilinear, black
    outside; then contrast and brightness around each image's mean, clipped to 0-1). ``masks``
    (``(B, 1, H, W)``, integer labels) move by nearest-neighbour; they come back as uint8.
    Normalise afterwards if the model expects it.

    Example:
        >>> from covid19_images.loaders.augment import PRESETS
        >>> batch = torch.full((2, 1, 16, 16), 0.5)
        >>> draws = [draw(PRESETS["standard"], rng_for(0, 0, i)) for i in range(2)]
        >>> out, _ = apply_draws(batch, draws)
        >>> out.shape, out.device.type
        (torch.Size([2, 1, 16, 16]), 'cpu')
    """
    thetas = torch.from_numpy(np.stack([theta(d) for d in draws]))
    thetas = thetas.to(device=batch.device, dtype=batch.dtype)
    grid = F.affine_grid(thetas, list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = torch.tensor([d.contrast for d in draws], device=batch.device, dtype=batch.dtype)
    brightness = torch.tensor([d.brightness for d in draws], device=batch.device, dtype=batch.dtype)
    out = (out - mean) * contrast.view(-1, 1, 1, 1) + mean + brightness.view(-1, 1, 1, 1)
    out = out.clamp_(0.0, 1.0)
    if masks is not None:  # the same geometry, nearest label: no value is invented
        moved = F.grid_sample(
            masks.to(batch.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        masks = moved.round().to(torch.uint8)
    return out, masks


@dataclass(frozen=True)
class EpochBatch:
    """The indices of one batch and the pass (epoch) they are read in."""

    epoch: int
    indices: tuple[int, ...]


class _EpochBatches(Sampler[EpochBatch]):
    """Batches of a batch sampler, each tagged with its pass number (counted per ``iter``)."""

    def __init__(self, batches: BatchSampler, start: int) -> None:
        self.batches, self.epoch = batches, start

    def __iter__(self) -> Iterator[EpochBatch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        for indices in self.batches:
            yield EpochBatch(epoch, tuple(indices))

    def __len__(self) -> int:
        return len(self.batches)
