"""The weak model: its AUROC is scikit-learn's on its own predictions, and it finds a planted
brightness difference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from covid19_images.loaders.packed import open_split
from covid19_images.probe import weak_model
from covid19_images.probe._data import thumbnails
from tests.probe._fake import chest, rows, write_dataset

CLASSES = ["covid19", "normal"]


def _dataset(folder: Path, brighter: int) -> Path:
    manifest = rows({"train": 60, "val": 20, "test": 40}, ["a", "b"], CLASSES, seed=3)
    rng = np.random.default_rng(4)
    images = np.stack([chest(rng, 64) for _ in range(len(manifest))]).astype(np.int64)
    images[(manifest["class"] == "covid19").to_numpy()] += brighter
    return write_dataset(folder, manifest, np.clip(images, 0, 255).astype(np.uint8), CLASSES)


@pytest.mark.parametrize("size", [64, 48])
def test_thumbnails_are_pillow_s_area_reduction(size: int) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(3, size, size), dtype=np.uint8)
    expected = np.stack(
        [np.asarray(Image.fromarray(i).resize((32, 32), Image.Resampling.BOX)) for i in images]
    )
    got = thumbnails(images).reshape(3, 32, 32) * 255
    # Pillow works in 8-bit fixed point: within one grey level, and half of one on average
    assert np.abs(got - expected).max() <= 1.0
    assert np.abs(got - expected).mean() < 0.6


def test_a_planted_brightness_difference_is_found(tmp_path: Path) -> None:
    folder = _dataset(tmp_path, brighter=25)
    weak = weak_model(folder, n_boot=100)
    covid = weak.auroc["covid19"]
    assert covid is not None and covid.point > 0.9 and covid.low > 0.8, covid
    # the AUROC is scikit-learn's on the model's own test predictions
    frame = weak.predictions
    test = open_split(folder, "test")
    assert frame["uid"].tolist() == test.uids
    assert weak.model is not None
    probs = weak.model.predict_proba(thumbnails(test.images))
    np.testing.assert_allclose(frame[["prob_covid19", "prob_normal"]].to_numpy(), probs)
    for name in CLASSES:
        ci = weak.auroc[name]
        assert ci is not None
        assert ci.point == pytest.approx(
            roc_auc_score(frame["class"] == name, frame[f"prob_{name}"])
        )
        assert weak.rates[name]["auroc"] == pytest.approx(ci.point)
    assert weak.c in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    assert "much of the label" in weak.to_markdown()
    json.dumps(weak.to_dict(), allow_nan=False)


def test_without_the_difference_it_stays_near_chance(tmp_path: Path) -> None:
    weak = weak_model(_dataset(tmp_path, brighter=0), n_boot=100)
    covid = weak.auroc["covid19"]
    assert covid is not None and abs(covid.point - 0.5) < 0.2 and covid.low < 0.5, covid
