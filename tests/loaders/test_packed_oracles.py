"""Packed arrays and augmentation against oracles computed here with numpy.

A small dataset folder is packed from generated PNGs, so the train split's pixels are known: its
recorded mean and standard deviation must be numpy's, and the normalised PyTorch batches must
have mean 0 and standard deviation 1. Augmentation must never mirror an image: a film whose left
half is bright stays left-heavy under every preset, in the numpy reference and in PyTorch (the
heart is on the patient's left; a flipped chest is another anatomy).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covid19_images.loaders.augment import PRESETS, apply_numpy, draw, rng_for, theta
from covid19_images.loaders.packed import open_split, write_packed

SIZE = 32
COUNTS = {"train": 40, "val": 8, "test": 12}


def _pack(folder: Path, make: Callable[[str, int], np.ndarray]) -> dict[str, np.ndarray]:
    """Write PNGs made by ``make(split, i)`` and pack them; the pixels of each split."""
    rows, pixels = [], {}
    for split, count in COUNTS.items():
        stack = []
        for i in range(count):
            image = make(split, i)
            cls = "covid19" if i % 2 else "normal"
            rel = f"{split}/{cls}/{split}-{i}.png"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / rel)
            rows.append({"uid": f"{split}-{i}", "split": split, "class": cls, "path": rel})
            stack.append(image)
        pixels[split] = np.stack(stack)
    items = pd.DataFrame(rows)
    items.to_parquet(folder / "manifest.parquet", index=False)
    write_packed(folder, items, ["covid19", "normal"], SIZE, "test")
    return pixels


def _random(split: str, i: int) -> np.ndarray:
    rng = np.random.default_rng([len(split), i])
    # Each image its own brightness and contrast: the std is far from its square.
    base = rng.uniform(40, 200)
    return np.clip(rng.normal(base, rng.uniform(10, 60), (SIZE, SIZE)), 0, 255).astype(np.uint8)


def _left_bright(split: str, i: int) -> np.ndarray:
    image = np.full((SIZE, SIZE), 30, dtype=np.uint8)
    image[:, : SIZE // 2] = 220
    return image


@pytest.fixture(scope="module")
def random_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("packed-random")
    return folder, _pack(folder, _random)


@pytest.fixture(scope="module")
def left_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("packed-left")
    _pack(folder, _left_bright)
    return folder


def test_train_mean_and_std_are_numpys(random_dataset: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, pixels = random_dataset
    train = pixels["train"].astype(np.float64) / 255.0
    mean, std = float(np.mean(train)), float(np.std(train))
    assert 0.05 < std < 0.5 and abs(std - std**2) > 0.03  # the oracle can tell std from variance
    split = open_split(folder, "train")
    np.testing.assert_array_equal(np.asarray(split.images), pixels["train"])
    assert split.mean == pytest.approx(mean, rel=1e-6)
    assert split.std == pytest.approx(std, rel=1e-6)
    for other in ("val", "test"):  # every split is normalised with the train split's numbers
        assert open_split(folder, other).std == pytest.approx(std, rel=1e-6)


def test_normalised_torch_batches_have_mean_0_and_std_1(
    random_dataset: tuple[Path, dict[str, np.ndarray]],
) -> None:
    pytest.importorskip("torch")
    from covid19_images.loaders.pytorch import CovidImageDataset

    folder, pixels = random_dataset
    dataset = CovidImageDataset(folder, "train")
    images, _ = dataset[list(range(len(dataset)))]
    values = images.double().numpy()
    assert values.mean() == pytest.approx(0.0, abs=1e-4)
    assert values.std() == pytest.approx(1.0, abs=1e-4)
    expected = (pixels["train"] / 255.0 - np.mean(pixels["train"] / 255.0)) / np.std(
        pixels["train"] / 255.0
    )
    np.testing.assert_allclose(values[:, 0], expected, atol=1e-4)


# --- no flips -----------------------------------------------------------------------------------

DRAWS = [(seed, epoch, index) for seed in (0, 1, 7) for epoch in range(3) for index in range(40)]


def _halves(image: np.ndarray) -> tuple[float, float]:
    half = image.shape[-1] // 2
    return float(image[..., :half].mean()), float(image[..., half:].mean())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_no_preset_mirrors_an_image_numpy_reference(name: str) -> None:
    image = _left_bright("train", 0)
    for seed, epoch, index in DRAWS:
        d = draw(PRESETS[name], rng_for(seed, epoch, index))
        matrix = theta(d)[:, :2]
        assert np.linalg.det(matrix) > 0, (name, d)  # a mirror has a negative determinant
        assert matrix[0, 0] > 0, (name, d)  # x is not reversed
        left, right = _halves(apply_numpy(image, d))
        assert left > right + 0.3, (name, seed, epoch, index, d, left, right)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_no_preset_mirrors_an_image_in_pytorch(left_dataset: Path, name: str) -> None:
    pytest.importorskip("torch")
    from covid19_images.loaders.pytorch import CovidImageDataset

    for seed in (0, 1, 7):
        dataset = CovidImageDataset(left_dataset, "train", augment=name, seed=seed, normalize=False)
        for epoch in range(3):
            dataset.set_epoch(epoch)
            images, _ = dataset[list(range(len(dataset)))]
            for k, image in enumerate(images[:, 0].numpy()):
                left, right = _halves(image)
                assert left > right + 0.3, (name, seed, epoch, k, left, right)
