"""The packed fast path: arrays equal the split folders' images; damage gives one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covid19_images.assemble.build import BuildResult
from covid19_images.loaders import LoadError, open_split


def test_each_split_is_one_array_in_manifest_order(xray_dataset: BuildResult) -> None:
    manifest = xray_dataset.manifest
    meta = json.loads((xray_dataset.path / "packed.json").read_text(encoding="utf-8"))
    assert meta["classes"] == ["covid19", "normal", "pneumonia"]
    for split in ("train", "val", "test"):
        packed = open_split(xray_dataset.path, split)
        rows = manifest[manifest["split"] == split]
        assert len(packed) == len(rows) > 0
        assert packed.images.shape == (len(rows), 224, 224) and packed.images.dtype == np.uint8
        assert not packed.images.flags.writeable  # a read-only map, never a copy in memory
        assert packed.uids == list(rows["uid"])
        expected = [packed.classes.index(c) for c in rows["class"]]
        assert packed.labels.tolist() == expected
        for i in (0, len(rows) // 2, len(rows) - 1):
            png = np.asarray(Image.open(xray_dataset.path / rows["path"].iloc[i]))
            np.testing.assert_array_equal(packed.images[i], png)
    assert 0.0 < meta["mean"] < 1.0 and 0.0 < meta["std"] < 0.5


def _copy(dataset: BuildResult, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(dataset.path, target)
    return target


def test_a_truncated_array_is_one_clear_error(xray_dataset: BuildResult, tmp_path: Path) -> None:
    folder = _copy(xray_dataset, tmp_path)
    array = folder / "train_224.npy"
    array.write_bytes(array.read_bytes()[:-1000])
    with pytest.raises(LoadError, match=r"train_224\.npy is truncated .* rebuild"):
        open_split(folder, "train")
    assert len(open_split(folder, "test")) > 0  # the other splits still open


def test_a_folder_from_an_older_version(xray_dataset: BuildResult, tmp_path: Path) -> None:
    folder = _copy(xray_dataset, tmp_path)
    (folder / "packed.json").unlink()
    with pytest.raises(LoadError, match=r"older covid19-images.*--force"):
        open_split(folder, "train")
    meta = {"version": 0, "size": 224, "classes": [], "splits": {}}
    (folder / "packed.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(LoadError, match="format 0"):
        open_split(folder, "train")


def test_missing_split_wrong_size_and_not_a_dataset(
    xray_dataset: BuildResult, tmp_path: Path
) -> None:
    with pytest.raises(LoadError, match="no split 'validation'; its splits: train, val, test"):
        open_split(xray_dataset.path, "validation")
    with pytest.raises(LoadError, match=r"packed at 224 px, not 512.*--size 512"):
        open_split(xray_dataset.path, "train", size=512)
    with pytest.raises(LoadError, match="not a dataset folder"):
        open_split(tmp_path, "train")
    folder = _copy(xray_dataset, tmp_path)
    (folder / "val_224.npy").unlink()
    with pytest.raises(LoadError, match=r"val_224\.npy is missing"):
        open_split(folder, "val")


def test_ct_slices_are_packed_with_their_slice_numbers(
    shared_sources: Path, tmp_path: Path
) -> None:
    from covid19_images.assemble.build import build
    from covid19_images.process.executor import LocalExecutor

    result = build(
        "ct-covid",
        out=tmp_path / "out",
        mirror=shared_sources,
        root=tmp_path / "root",
        sources=["covid-ct-md"],
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
    )
    slices = pd.read_parquet(result.path / "slices.parquet")
    total = 0
    for split in ("train", "val", "test"):
        packed = open_split(result.path, split)
        total += len(packed)
        if len(packed):
            assert packed.slices == list(range(148))
            png = np.asarray(Image.open(result.path / slices["path"].iloc[0]))
            np.testing.assert_array_equal(packed.images[0], png)
    assert total == len(slices) == 148
