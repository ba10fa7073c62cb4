"""The source probe finds a planted corner marker and stays near chance without it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from covid19_images.loaders.packed import open_split
from covid19_images.probe import source_predictability
from tests.probe._fake import chest, rows, write_dataset

SOURCES = ["alpha", "beta", "gamma"]
CLASSES = ["covid19", "normal", "pneumonia"]
COUNTS = {"train": 60, "val": 24, "test": 36}
CORNERS = {"alpha": (0, 0), "beta": (0, 56), "gamma": (56, 0)}  # top-left, top-right, bottom-left


def _dataset(folder: Path, marker: bool) -> Path:
    manifest = rows(COUNTS, SOURCES, CLASSES, seed=1)
    # the label follows the source in part: alpha gives covid19 cases only
    manifest.loc[manifest["source"] == "alpha", "class"] = "covid19"
    others = (manifest["source"] != "alpha") & (manifest["class"] == "covid19")
    manifest.loc[others, "class"] = "normal"
    rng = np.random.default_rng(2)
    images = np.stack([chest(rng, 64) for _ in range(len(manifest))])
    if marker:
        for k, source in enumerate(manifest["source"]):
            y, x = CORNERS[source]
            images[k, y : y + 8, x : x + 8] = 255
    return write_dataset(folder, manifest, images, CLASSES)


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _dataset(tmp_path_factory.mktemp("marked"), marker=True)


@pytest.fixture(scope="module")
def unmarked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _dataset(tmp_path_factory.mktemp("unmarked"), marker=False)


def test_a_planted_corner_marker_is_found(marked: Path) -> None:
    probe = source_predictability(marked, n_boot=200)
    assert probe.ran and probe.sources == SOURCES
    assert probe.chance == pytest.approx(1 / 3)
    ba = probe.balanced_accuracy
    assert ba is not None and ba.point > 0.95 and ba.low > 0.85, ba
    assert all(r > 0.9 for r in probe.recall.values()), probe.recall
    assert "plainly" in probe.to_markdown()


def test_without_the_marker_the_probe_stays_near_chance(unmarked: Path) -> None:
    probe = source_predictability(unmarked, n_boot=200)
    ba, chance = probe.balanced_accuracy, probe.chance
    assert ba is not None and chance is not None
    assert abs(ba.point - chance) < 0.15, ba
    assert ba.low <= chance + 0.05, ba


def test_figures_equal_scikit_learn_on_the_probe_s_own_predictions(marked: Path) -> None:
    probe = source_predictability(marked, n_boot=50)
    manifest = pd.read_parquet(marked / "manifest.parquet").set_index("uid")
    test = manifest.loc[open_split(marked, "test").uids]
    truth = test["source"].to_numpy()
    predicted = probe.predictions
    assert predicted["uid"].tolist() == test.index.tolist()
    assert (predicted["source"].to_numpy() == truth).all()
    expected_ba = balanced_accuracy_score(truth, predicted["predicted"])
    assert probe.balanced_accuracy is not None
    assert probe.balanced_accuracy.point == pytest.approx(expected_ba)
    matrix = confusion_matrix(truth, predicted["predicted"], labels=SOURCES)
    assert (probe.confusion.loc[SOURCES, SOURCES].to_numpy() == matrix).all()
    for k, source in enumerate(SOURCES):
        assert probe.recall[source] == pytest.approx(matrix[k, k] / matrix[k].sum())
    # the label from the true source: each source's most common train class, by pandas
    train = manifest[manifest["split"] == "train"]
    majority = train.groupby("source")["class"].agg(lambda s: s.value_counts().idxmax())
    expected = balanced_accuracy_score(test["class"], majority.loc[truth].to_numpy())
    assert probe.label_from_source is not None
    assert probe.label_from_source.point == pytest.approx(expected)
    # alpha holds covid19 only and no other source has covid19: the source finds it exactly
    covid = probe.label_from_source_auroc["covid19"]
    assert covid is not None and covid.point == pytest.approx(1.0)
    json.dumps(probe.to_dict(), allow_nan=False)


def test_rare_sources_are_left_out_with_a_note(tmp_path: Path) -> None:
    manifest = rows({"train": 40, "val": 8, "test": 16}, ["alpha", "beta"], CLASSES[:2])
    # one train image and one test image from a third source
    extra = manifest.iloc[[0, 45]].copy()
    extra["uid"] = ["train-x", "test-x"]
    extra["source"] = "rare"
    extra["patient_id"] = ["rare:1", "rare:2"]
    manifest = pd.concat([manifest, extra], ignore_index=True)
    rng = np.random.default_rng(0)
    images = np.stack([chest(rng, 32) for _ in range(len(manifest))])
    probe = source_predictability(write_dataset(tmp_path, manifest, images, CLASSES[:2]), n_boot=20)
    assert probe.sources == ["alpha", "beta"] and "rare" in probe.left_out
    assert probe.n_test == 16 and probe.chance == 0.5
    assert "rare (1 train image, under 10)" in probe.to_markdown()


def test_one_source_is_not_run(tmp_path: Path) -> None:
    manifest = rows({"train": 12, "val": 4, "test": 6}, ["solo"], CLASSES[:2])
    rng = np.random.default_rng(0)
    images = np.stack([chest(rng, 32) for _ in range(len(manifest))])
    probe = source_predictability(write_dataset(tmp_path, manifest, images, CLASSES[:2]))
    assert not probe.ran and probe.balanced_accuracy is None
    assert "Not run" in probe.to_markdown()
    json.dumps(probe.to_dict(), allow_nan=False)
