"""``covid19_images.load``: one call from a dataset to a framework's object.

Frameworks are imported only when asked for; one that is not installed gives one message saying
which extra to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from covid19_images.fetch import data_root
from covid19_images.loaders.frameworks import (
    FRAMEWORKS,
    FrameworkMissingError,
    require,
)
from covid19_images.loaders.packed import LoadError, open_split, read_meta

__all__ = ["FRAMEWORKS", "FrameworkMissingError", "load", "require", "resolve_dataset"]


def resolve_dataset(dataset: Path | str, root: Path | str | None = None) -> Path:
    """A dataset folder, or a recipe name looked up in ``./datasets`` (the ``build`` default)
    and in ``<data root>/datasets``.

    Example:
        >>> try:
        ...     resolve_dataset("no-such-recipe", root="/nonexistent")
        ... except LoadError as exc:
        ...     print(str(exc).split(":")[0])
        no dataset 'no-such-recipe'
    """
    path = Path(dataset).expanduser()
    if path.is_dir():
        return path
    candidates = [Path("datasets") / str(dataset), data_root(root) / "datasets" / str(dataset)]
    for candidate in candidates:
        if (candidate / "manifest.parquet").is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise LoadError(
        f"no dataset {str(dataset)!r}: not a folder, and not built in {looked}; "
        f"build it with `covid19-images build {dataset}`"
    )


def load(
    dataset: Path | str,
    split: str = "train",
    framework: str = "torch",
    size: int | None = None,
    augment: str | None = None,
    *,
    seed: int = 0,
    root: Path | str | None = None,
    **options: Any,
) -> Any:
    """One split of an assembled dataset as the framework's object.

    Args:
        dataset: A dataset folder, or a recipe name built in ``./datasets`` or the data root.
        split: ``train``, ``val`` or ``test``.
        framework: ``torch`` (a ``torch.utils.data.Dataset``: ``(image, label)``, or for a
            segmentation dataset the label map, a regression dataset the float targets, a
            detection dataset a torchvision target dict), ``tf`` (a batched, prefetched
            ``tf.data.Dataset``; ``batch_size=``, ``shuffle=``), ``fastai`` (``DataLoaders``
            of the train and val splits, whatever ``split`` says; ``bs=``), ``monai`` (a
            ``monai.data.Dataset`` of a datalist and its transform chain; ``level="volume"``
            for CT volumes or image/label pairs), ``hf`` (a ``datasets.Dataset`` with
            ``image`` and ``label`` features) or ``numpy`` (the packed split: a read-only uint8
            array, labels and class names).
        size: The packed size (default: the one the dataset was built with).
        augment: ``none``, ``light`` or ``standard`` (:mod:`covid19_images.loaders.augment`).
        seed: Seed of the augmentation draws.
        root: Data root to look for a dataset name in.
        options: Passed to the framework's loader (``channels=3``, ``normalize=False``, ...).

    Example:
        >>> import covid19_images as ci
        >>> train = ci.load("xray-covid", "train", framework="torch")  # doctest: +SKIP
        >>> image, label = train[0]  # doctest: +SKIP
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; known: {', '.join(FRAMEWORKS)}")
    folder = resolve_dataset(dataset, root)
    require(framework)
    try:
        task = str(read_meta(folder).get("task", "classification"))
    except LoadError:  # each framework's loader says what is wrong with the folder
        task = "classification"
    if task in ("detection", "regression") and framework not in ("torch", "numpy"):
        raise ValueError(
            f"{folder} is a {task} dataset: load it with framework='torch' (or 'numpy'); "
            f"framework={framework!r} would give class labels, not its targets"
        )
    if framework == "numpy":
        if augment not in (None, "none") or options:
            raise ValueError("framework='numpy' reads the packed arrays as they are: no options")
        return open_split(folder, split, size)
    if framework == "tf":
        from covid19_images.loaders.tfdata import dataset as tf_dataset

        return tf_dataset(folder, split, size=size, augment=augment, seed=seed, **options)
    if framework == "fastai":
        from covid19_images.loaders.fastai_data import dataloaders

        return dataloaders(folder, size=size, augment=augment, seed=seed, **options)
    if framework == "hf":
        if augment not in (None, "none") or options or size is not None:
            raise ValueError(
                "framework='hf' gives the images as they are: add transforms with "
                "Dataset.with_transform"
            )
        from covid19_images.loaders.hf import split_dataset

        return split_dataset(folder, split)
    if framework == "monai":
        from monai.data import Dataset as MonaiDataset

        from covid19_images.loaders.monai_data import datalist, transforms

        level = options.pop("level", "image")
        if options:
            raise ValueError(f"framework='monai' takes level=, not {sorted(options)}")
        return MonaiDataset(
            datalist(folder, split, level), transforms(folder, level, augment, seed)
        )
    if task == "detection":
        from covid19_images.loaders.detection import DetectionDataset

        return DetectionDataset(folder, split, size=size, augment=augment, seed=seed, **options)
    from covid19_images.loaders.pytorch import CovidImageDataset

    return CovidImageDataset(folder, split, size=size, augment=augment, seed=seed, **options)
