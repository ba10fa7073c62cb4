"""Hugging Face and MONAI loaders on datasets built from ../shared/sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import covid19_images as ci
from covid19_images.assemble.build import BuildResult, build
from covid19_images.loaders import LoadError
from covid19_images.process.executor import LocalExecutor


@pytest.fixture(scope="module")
def ct_dataset(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    work = tmp_path_factory.mktemp("ct")
    return build(
        "ct-covid",
        out=work / "out",
        mirror=shared_sources,
        root=work / "root",
        sources=["covid-ct-md", "ucsd-covid-ct"],
        executor=LocalExecutor(workers=2, progress=False),
        progress=False,
    )


def test_hf_dataset_dict_has_image_and_class_label_features(xray_dataset: BuildResult) -> None:
    datasets = pytest.importorskip("datasets", reason="pip install '.[hf]'")
    from covid19_images.loaders.hf import dataset_dict

    dd = dataset_dict(xray_dataset.path)
    assert isinstance(dd, datasets.DatasetDict) and list(dd) == ["train", "val", "test"]
    manifest = xray_dataset.manifest
    for split, ds in dd.items():
        rows = manifest[manifest["split"] == split]
        assert len(ds) == len(rows)
        assert ds.features["label"].names == ["covid19", "normal", "pneumonia"]
        assert isinstance(ds.features["image"], datasets.Image)
        names = ds.features["label"].names
        assert [names[v] for v in ds["label"]] == list(rows["class"])
        first = ds[0]
        png = np.asarray(Image.open(xray_dataset.path / rows["path"].iloc[0]))
        np.testing.assert_array_equal(np.asarray(first["image"]), png)
    train = ci.load(xray_dataset.path, "train", framework="hf")
    assert len(train) == len(dd["train"]) and train.split == "train"


def test_monai_2d_dataset_and_transforms(xray_dataset: BuildResult) -> None:
    pytest.importorskip("monai", reason="pip install '.[monai]'")
    ds = ci.load(xray_dataset.path, "val", framework="monai")
    rows = xray_dataset.manifest[xray_dataset.manifest["split"] == "val"]
    assert len(ds) == len(rows)
    item = ds[0]
    assert tuple(item["image"].shape) == (1, 224, 224)
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert item["label"] == ["covid19", "normal", "pneumonia"].index(rows["class"].iloc[0])
    a = ci.load(xray_dataset.path, "train", framework="monai", augment="standard", seed=1)
    b = ci.load(xray_dataset.path, "train", framework="monai", augment="standard", seed=1)
    np.testing.assert_allclose(np.asarray(a[0]["image"]), np.asarray(b[0]["image"]))


def test_monai_ct_volumes_cache_dataset(ct_dataset: BuildResult) -> None:
    pytest.importorskip("monai", reason="pip install '.[monai]'")
    from monai.data import CacheDataset

    from covid19_images.loaders.monai_data import datalist, transforms

    volumes = ct_dataset.manifest[ct_dataset.manifest["level"] == "volume"]
    split = str(volumes["split"].iloc[0])
    items = datalist(ct_dataset.path, split, level="volume")
    assert [i["uid"] for i in items] == list(volumes[volumes["split"] == split]["uid"])
    ds = CacheDataset(
        items, transforms(ct_dataset.path, level="volume"), cache_rate=1.0, progress=False
    )
    image = ds[0]["image"]
    assert tuple(image.shape) == (1, 512, 512, 148)  # channel, then RAS x, y, z
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert ds[0]["label"] == ["cap", "covid19", "normal"].index("covid19")  # sorted names
    slices = ci.load(ct_dataset.path, split, framework="monai")
    assert len(slices) >= 148


def test_monai_volume_level_needs_volumes(xray_dataset: BuildResult) -> None:
    pytest.importorskip("monai", reason="pip install '.[monai]'")
    with pytest.raises(LoadError, match="no CT volumes"):
        ci.load(xray_dataset.path, "train", framework="monai", level="volume")
