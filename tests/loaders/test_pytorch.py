"""The PyTorch loader on a dataset built from ../shared/sources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from covid19_images.assemble.build import BuildResult
from covid19_images.loaders import LoadError
from covid19_images.loaders.augment import PRESETS, apply_numpy, draw, rng_for

torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install '.[torch]'")
from torch.utils.data import DataLoader  # noqa: E402

import covid19_images as ci  # noqa: E402
from covid19_images.loaders.pytorch import CovidImageDataset  # noqa: E402


def test_lengths_labels_shapes_and_dtypes(xray_dataset: BuildResult) -> None:
    manifest = xray_dataset.manifest
    for split in ("train", "val", "test"):
        ds = ci.load(xray_dataset.path, split, framework="torch")
        rows = manifest[manifest["split"] == split]
        assert len(ds) == len(rows)
        assert [ds.classes[label] for label in ds.labels] == list(rows["class"])
        image, label = ds[0]
        assert image.shape == (1, 224, 224) and image.dtype == torch.float32
        assert isinstance(label, int) and ds.classes[label] == rows["class"].iloc[0]


def test_values_are_the_pngs_normalised(xray_dataset: BuildResult) -> None:
    from PIL import Image

    ds = CovidImageDataset(xray_dataset.path, "train")
    raw = CovidImageDataset(xray_dataset.path, "train", normalize=False, channels=3)
    rows = xray_dataset.manifest[xray_dataset.manifest["split"] == "train"]
    png = np.asarray(Image.open(xray_dataset.path / rows["path"].iloc[3]), dtype=np.float32) / 255
    np.testing.assert_allclose(raw[3][0][0].numpy(), png, atol=1e-6)
    assert raw[3][0].shape == (3, 224, 224)
    np.testing.assert_allclose(ds[3][0][0].numpy(), (png - ds.mean) / ds.std, atol=1e-5)


def test_dataloader_batches_in_order_with_workers(xray_dataset: BuildResult) -> None:
    ds = CovidImageDataset(xray_dataset.path, "train")
    plain = [label for _, label in (ds[i] for i in range(len(ds)))]
    loader = DataLoader(ds, batch_size=16, num_workers=2)
    images, labels = [], []
    for x, y in loader:
        assert x.shape[1:] == (1, 224, 224) and y.dtype == torch.int64
        images.append(x)
        labels += y.tolist()
    assert labels == plain
    np.testing.assert_allclose(torch.cat(images)[5].numpy(), ds[5][0].numpy())


def test_augmentation_is_deterministic_and_leaves_global_rngs_alone(
    xray_dataset: BuildResult,
) -> None:
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    a = CovidImageDataset(xray_dataset.path, "train", augment="standard", seed=3)
    b = CovidImageDataset(xray_dataset.path, "train", augment="standard", seed=3)
    batch_a = torch.stack([x for x, _ in a.__getitems__([0, 1, 2])])
    one_by_one = torch.stack([b[i][0] for i in (0, 1, 2)])
    np.testing.assert_allclose(batch_a.numpy(), one_by_one.numpy(), atol=1e-6)
    plain = CovidImageDataset(xray_dataset.path, "train")
    assert not torch.allclose(batch_a[0], plain[0][0])
    b.set_epoch(1)
    assert not torch.allclose(b[0][0], a[0][0])  # another epoch, other draws
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(
        np.array_equal(x, y) for x, y in zip(np.random.get_state(), numpy_state, strict=True)
    )
    # DataLoader itself draws its workers' base seed; the samples do not depend on it
    with_workers = next(iter(DataLoader(a, batch_size=3, num_workers=2)))[0]
    np.testing.assert_allclose(with_workers.numpy(), batch_a.numpy(), atol=1e-6)


def test_torch_and_numpy_apply_the_same_draw(xray_dataset: BuildResult) -> None:
    ds = CovidImageDataset(xray_dataset.path, "train", augment="standard", normalize=False)
    images = ds.packed.images if ds.packed is not None else None
    assert images is not None
    for index in (0, 7):
        expected = apply_numpy(
            np.asarray(images[index]), draw(PRESETS["standard"], rng_for(0, 0, index))
        )
        got = ds[index][0][0].numpy()
        inside = np.s_[16:-16, 16:-16]  # borders differ by where the zero padding starts
        assert np.abs(got[inside] - expected[inside]).mean() < 0.01


def test_missing_split_and_bad_options(xray_dataset: BuildResult) -> None:
    with pytest.raises(LoadError, match="no split 'holdout'"):
        ci.load(xray_dataset.path, "holdout", framework="torch")
    with pytest.raises(ValueError, match="unknown augmentation preset 'heavy'"):
        ci.load(xray_dataset.path, "train", framework="torch", augment="heavy")
    with pytest.raises(ValueError, match="unknown framework 'jax'"):
        ci.load(xray_dataset.path, "train", framework="jax")
    with pytest.raises(LoadError, match="no dataset 'no-such-recipe'"):
        ci.load("no-such-recipe", "train", framework="torch")


def test_importing_the_package_imports_no_framework() -> None:
    code = (
        "import sys, covid19_images, covid19_images.loaders, covid19_images.assemble.build;"
        "print(sorted(m for m in ('torch', 'tensorflow', 'fastai', 'monai', 'datasets')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_framework_that_is_not_installed_names_its_extra(
    xray_dataset: BuildResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    from covid19_images.loaders.frameworks import FrameworkMissingError

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(FrameworkMissingError, match=r"pip install 'covid19-images\[torch\]'"):
        ci.load(Path(xray_dataset.path), "train", framework="torch")


def test_loader_reads_whole_batches_equal_to_samples(xray_dataset: BuildResult) -> None:
    ds = CovidImageDataset(xray_dataset.path, "train", seed=5)
    batches = list(ds.loader(batch_size=16, shuffle=True))
    assert sum(len(y) for _, y in batches) == len(ds)
    x, y = batches[0]
    assert x.shape == (16, 1, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    again = list(CovidImageDataset(xray_dataset.path, "train", seed=5).loader(16, shuffle=True))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    firsts = torch.stack([ds[int(i)][0] for i in range(len(ds))])
    labels = torch.tensor([ds[int(i)][1] for i in range(len(ds))])
    order = torch.cat([y for _, y in batches])
    assert sorted(order.tolist()) == sorted(labels.tolist())
    seen = torch.cat([x for x, _ in batches])
    assert any(torch.allclose(seen[0], firsts[i]) for i in range(len(ds)))
    in_order = torch.cat([x for x, _ in ds.loader(batch_size=32)])
    np.testing.assert_allclose(in_order.numpy(), firsts.numpy(), atol=1e-6)


def test_each_pass_of_loader_is_a_new_epoch_in_any_worker(xray_dataset: BuildResult) -> None:
    def passes(workers: int) -> list[torch.Tensor]:
        ds = CovidImageDataset(xray_dataset.path, "val", augment="light", seed=2)
        dl = ds.loader(batch_size=8, num_workers=workers)
        return [torch.cat([x for x, _ in dl]) for _ in range(2)]

    first, second = passes(0)
    assert not torch.allclose(first, second)  # pass 2 draws other values
    again = passes(2)  # a fresh loader, with worker processes: the same two passes
    np.testing.assert_allclose(again[0].numpy(), first.numpy(), atol=1e-6)
    np.testing.assert_allclose(again[1].numpy(), second.numpy(), atol=1e-6)
