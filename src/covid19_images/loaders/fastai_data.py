"""fastai: ``DataLoaders`` whose train and valid loaders are our ``train`` and ``val`` splits.

The loaders are the PyTorch dataset's whole-batch ``DataLoader`` s
(:meth:`~covid19_images.loaders.pytorch.CovidImageDataset.loader`): fastai's ``Learner`` trains
on them as on its own (fastai documents plain PyTorch loaders as supported), with the speed of
the packed arrays. ``dls.vocab`` holds the class names; every pass over the train loader is a new
augmentation epoch.

Example:
    >>> from fastai.vision.all import Learner, resnet18  # doctest: +SKIP
    >>> dls = dataloaders("datasets/xray-covid", bs=64, augment="light")  # doctest: +SKIP
    >>> learn = Learner(dls, resnet18(num_classes=len(dls.vocab)))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastai.data.core import DataLoaders

from covid19_images.loaders.augment import Preset
from covid19_images.loaders.pytorch import CovidImageDataset


def dataloaders(
    folder: Path | str,
    *,
    bs: int = 64,
    size: int | None = None,
    augment: str | Preset | None = None,
    seed: int = 0,
    device: Any = None,
    **options: Any,
) -> DataLoaders:
    """Train (shuffled, augmented, last partial batch dropped) and valid loaders of a dataset.

    ``options`` (``channels=3``, ``normalize=False``) go to both datasets.
    """
    train = CovidImageDataset(folder, "train", size=size, augment=augment, seed=seed, **options)
    valid = CovidImageDataset(folder, "val", size=size, seed=seed, **options)
    dls = DataLoaders(
        train.loader(bs, shuffle=True, drop_last=len(train) > bs),
        valid.loader(bs),
        path=Path(folder),
        device=device,
    )
    dls.vocab = list(train.classes)
    dls.c = len(train.classes)
    return dls
