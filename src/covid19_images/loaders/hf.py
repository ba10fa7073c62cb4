"""Hugging Face: a ``datasets.DatasetDict`` of the splits, with ``image`` and ``label`` features.

Images are the dataset's own PNG files (X-ray images, or for CT every slice and the 2-D slices),
referred to by path and decoded by ``datasets`` when read; ``label`` is a ``ClassLabel`` with the
dataset's class names; ``uid`` (and ``slice`` for CT) lead back to the manifest.

Example:
    >>> dd = dataset_dict("datasets/xray-covid")  # doctest: +SKIP
    >>> dd["train"].features["label"].names  # doctest: +SKIP
    ['covid19', 'normal', 'pneumonia']
"""

from __future__ import annotations

from pathlib import Path

import datasets
import pandas as pd

from covid19_images.loaders.packed import INDEX, LoadError, read_meta


def dataset_dict(
    folder: Path | str, splits: tuple[str, ...] = ("train", "val", "test")
) -> datasets.DatasetDict:
    """Every split of a built dataset as one ``DatasetDict`` (splits named as ours)."""
    return datasets.DatasetDict({split: split_dataset(folder, split) for split in splits})


def split_dataset(folder: Path | str, split: str) -> datasets.Dataset:
    """One split as a ``datasets.Dataset`` in the packed arrays' order."""
    folder = Path(folder)
    meta = read_meta(folder)
    if split not in meta["splits"]:
        raise LoadError(f"{folder} has no split {split!r}; its splits: {', '.join(meta['splits'])}")
    index = pd.read_parquet(folder / INDEX)
    rows = index[index["split"] == split].sort_values("index")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=[str(c) for c in meta["classes"]]),
            "uid": datasets.Value("string"),
            "slice": datasets.Value("int32"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "image": [str(folder / str(p)) for p in rows["path"]],
            "label": [int(v) for v in rows["label"]],
            "uid": [str(u) for u in rows["uid"]],
            "slice": [None if pd.isna(k) else int(k) for k in rows["slice"]],
        },
        features=features,
        split=datasets.Split(split) if split in ("train", "test") else datasets.NamedSplit(split),
    )
