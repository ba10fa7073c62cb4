"""MONAI: datalists of a built dataset and transform chains ready for ``CacheDataset``.

- 2-D (X-ray images, CT slices): ``{"image": <png>, "label": <class number>}`` per sample;
  transforms load the PNG channel-first and scale it to 0-1.
- CT volumes (``ct-covid``): ``{"image": <nii.gz>, "label": <class number>}``; CT segmentation
  (``ct-lesion-seg``): ``{"image": <nii.gz>, "label": <mask nii.gz>}``. Transforms load the
  NIfTI channel-first, orient it RAS (as stored), and map the recipe's HU window to 0-1.

Augmentation presets (:mod:`covid19_images.loaders.augment`) become MONAI's ``RandAffined``,
``RandShiftIntensityd`` and ``RandScaleIntensityd`` with the preset's ranges (no flips); their
draws come from MONAI's own generators, seeded through ``Compose.set_random_state`` (the global
state is left alone).

Example:
    >>> items = datalist("datasets/ct-covid", "train", level="volume")  # doctest: +SKIP
    >>> chain = transforms("datasets/ct-covid", level="volume")  # doctest: +SKIP
    >>> from monai.data import CacheDataset  # doctest: +SKIP
    >>> ds = CacheDataset(items, chain, cache_rate=1.0)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from monai import transforms as mt

from covid19_images.loaders.augment import Preset, preset
from covid19_images.loaders.packed import INDEX, LoadError, read_meta

Level = Literal["image", "volume"]
_KEYS = {"train": "training", "val": "validation", "test": "test"}


def datalist(
    folder: Path | str, split: str = "train", level: Level = "image"
) -> list[dict[str, Any]]:
    """The samples of one split as MONAI datalist dicts with absolute paths.

    ``level="image"``: every 2-D sample (X-ray images; for CT every slice and 2-D slice).
    ``level="volume"``: the CT volumes (or image/label pairs of a segmentation dataset), from
    the dataset's ``datalist.json``.
    """
    folder = Path(folder)
    if level == "volume":
        try:
            data = json.loads((folder / "datalist.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LoadError(
                f"{folder} has no CT volumes (no datalist.json): level='image'"
            ) from None
        if split not in _KEYS:
            raise LoadError(f"no split {split!r}; splits: {', '.join(_KEYS)}")
        items = []
        for item in data[_KEYS[split]]:
            out = dict(item)
            out["image"] = str(folder / str(item["image"]))
            if isinstance(item["label"], str):
                out["label"] = str(folder / item["label"])
            items.append(out)
        return items
    meta = read_meta(folder)
    if split not in meta["splits"]:
        raise LoadError(f"{folder} has no split {split!r}; its splits: {', '.join(meta['splits'])}")
    index = pd.read_parquet(folder / INDEX)
    rows = index[index["split"] == split].sort_values("index")
    return [
        {"image": str(folder / str(p)), "label": int(label), "uid": str(uid)}
        for p, label, uid in zip(rows["path"], rows["label"], rows["uid"], strict=True)
    ]


def transforms(
    folder: Path | str,
    level: Level = "image",
    augment: str | Preset | None = None,
    seed: int = 0,
) -> mt.Compose:
    """The transform chain for :func:`datalist` items of ``level``, seeded."""
    folder = Path(folder)
    p = preset(augment)
    segmentation = level == "volume" and _is_segmentation(folder)
    keys = ["image", "label"] if segmentation else ["image"]
    chain: list[Any] = [mt.LoadImaged(keys=keys, image_only=True, ensure_channel_first=True)]
    if level == "volume":
        low, high = _window(folder)
        chain += [
            mt.Orientationd(keys=keys, axcodes="RAS"),
            mt.ScaleIntensityRanged(
                keys="image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True
            ),
        ]
    else:
        chain.append(
            mt.ScaleIntensityRanged(keys="image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0)
        )
    if not p.identity:
        size = int(read_meta(folder)["size"]) if level == "image" else None
        chain += _augmentations(p, keys, level, segmentation, size)
    chain.append(mt.ToTensord(keys=keys))
    composed = mt.Compose(chain)
    composed.set_random_state(seed=seed)
    return composed


def _augmentations(
    p: Preset, keys: list[str], level: Level, segmentation: bool, size: int | None
) -> list[Any]:
    angle = math.radians(p.degrees)
    rotate: Any = (angle,) if level == "image" else (0.0, 0.0, angle)  # volumes: about z
    scale = max(abs(p.scale[0] - 1.0), abs(p.scale[1] - 1.0))
    shift = p.translate * size if size else 0.0  # volumes: no shift (sizes differ)
    modes = ["bilinear", "nearest"] if segmentation else ["bilinear"]
    out: list[Any] = [
        mt.RandAffined(
            keys=keys,
            prob=1.0,
            rotate_range=rotate,
            scale_range=scale,
            translate_range=shift,
            mode=modes,
            padding_mode="zeros",
        )
    ]
    if p.brightness:
        out.append(mt.RandShiftIntensityd(keys="image", offsets=p.brightness, prob=1.0))
    if p.contrast:
        out.append(mt.RandScaleIntensityd(keys="image", factors=p.contrast, prob=1.0))
    return out


def _is_segmentation(folder: Path) -> bool:
    try:
        lock = json.loads((folder / "lock.json").read_text(encoding="utf-8"))
        return bool(lock["recipe"].get("task") == "segmentation")
    except (OSError, ValueError, KeyError):
        return False


def _window(folder: Path) -> tuple[float, float]:
    from covid19_images.process.ct.volume import WINDOWS

    try:
        lock = json.loads((folder / "lock.json").read_text(encoding="utf-8"))
        name = str(lock["recipe"].get("window", "lung"))
    except (OSError, ValueError, KeyError):
        name = "lung"
    center, width = WINDOWS.get(name, WINDOWS["lung"])
    return center - width / 2, center + width / 2
