"""Lungs removed: a model that reads a marker outside the lungs keeps its AUROC, one that reads
only inside the lung region falls to chance; real masks line up with the packed images."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covid19_images.explanation.energy import load_masks
from covid19_images.probe import (
    LUNG_ELLIPSES,
    ProbeError,
    draw_lung_region,
    lung_region,
    lungs_removed,
)
from covid19_images.process.image import decode_image
from tests.probe._fake import chest, rows, write_dataset

CLASSES = ["covid19", "normal"]
SIZE = 64
REGION = lung_region(SIZE)
LESION = (slice(20, 32), slice(10, 20))  # inside the left ellipse
MARKER = (slice(0, 6), slice(0, 6))  # the top-left corner


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest = rows({"train": 4, "val": 4, "test": 48}, ["a", "b"], CLASSES, seed=5)
    rng = np.random.default_rng(6)
    images = np.stack([chest(rng, SIZE) for _ in range(len(manifest))])
    covid = (manifest["class"] == "covid19").to_numpy()
    images[covid, LESION[0], LESION[1]] = 230  # an opacity in the lung
    images[covid, MARKER[0], MARKER[1]] = 250  # and a marker outside it
    return write_dataset(tmp_path_factory.mktemp("lungs"), manifest, images, CLASSES)


def _reads(where: tuple[slice, slice]) -> Callable[[np.ndarray], np.ndarray]:
    def predict(images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.uint8 and images.shape[1:] == (SIZE, SIZE)
        score = images[:, where[0], where[1]].mean(axis=(1, 2)) / 255
        return np.stack([score, 1 - score], axis=1)

    return predict


def test_the_region_holds_the_lesion_but_not_the_marker() -> None:
    assert REGION[LESION].all() and not REGION[MARKER].any()
    assert 0.45 < REGION.mean() < 0.52


def test_a_model_reading_outside_the_lungs_keeps_its_auroc(folder: Path) -> None:
    result = lungs_removed(_reads(MARKER), folder, n_boot=100)
    plain, masked = result.auroc["covid19"], result.auroc_masked["covid19"]
    assert plain is not None and masked is not None
    assert plain.point == 1.0 and masked.point == plain.point
    assert result.real_masks == 0 and result.n == 48
    assert "outside the lungs" in result.verdict()


def test_a_model_reading_the_lungs_falls_to_chance(folder: Path) -> None:
    result = lungs_removed(_reads(LESION), folder, n_boot=100)
    plain, masked = result.auroc["covid19"], result.auroc_masked["covid19"]
    assert plain is not None and masked is not None
    assert plain.point == 1.0 and masked.point == pytest.approx(0.5)
    assert "falls to chance" in result.verdict()
    assert result.masked_area == pytest.approx(REGION.mean())
    json.dumps(result.to_dict(), allow_nan=False)


def test_a_real_mask_replaces_the_region_where_given(folder: Path) -> None:
    # a "mask" that misses the lesion for the first ten test images: there it still shows
    miss = np.zeros((SIZE, SIZE), dtype=bool)
    miss[40:60, 40:60] = True
    first = {f"test-{i:04d}" for i in range(10)}

    def masks(row: pd.Series) -> np.ndarray | None:
        return miss if row["uid"] in first else None

    result = lungs_removed(_reads(LESION), folder, masks=masks, n_boot=20)
    assert result.real_masks == 10 and result.share_real_mask == pytest.approx(10 / 48)
    masked = result.auroc_masked["covid19"]
    assert masked is not None and masked.point > 0.5
    assert result.masked_area == pytest.approx((10 * miss.mean() + 38 * REGION.mean()) / 48)


def test_a_predict_of_the_wrong_shape_is_refused(folder: Path) -> None:
    with pytest.raises(ProbeError, match="one probability per class"):
        lungs_removed(lambda images: np.zeros((len(images), 3)), folder)


def test_a_real_mask_lines_up_with_the_packed_image(tmp_path: Path) -> None:
    # a wide frame with a bright block; the build's own decode makes the packed copy
    frame = np.full((80, 120), 40, dtype=np.uint8)
    frame[20:60, 25:55] = 220  # the block straddles the left crop edge (x = 20)
    Image.fromarray(frame).save(tmp_path / "image.png")
    copy = decode_image(tmp_path / "image.png", sizes=(32,)).copies[32]
    bright = copy > 130
    mask = np.where(frame > 130, 255, 0).astype(np.uint8)
    Image.fromarray(mask).save(tmp_path / "mask.png")
    # the mask at another resolution too (as the COVID-19 Radiography Database ships them)
    Image.fromarray(mask).resize((60, 40), Image.Resampling.NEAREST).save(tmp_path / "half.png")
    manifest = rows({"train": 2, "val": 2, "test": 2}, ["ieee8023"], CLASSES)
    manifest["width"], manifest["height"] = 120, 80
    manifest["mask_paths"] = [[], [], [], [], ["mask.png"], ["half.png"]]
    images = np.stack([copy] * 6)
    folder = write_dataset(tmp_path / "ds", manifest, images, CLASSES)

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return np.full((len(batch), 2), 0.5)

    seen: list[np.ndarray] = []
    result = lungs_removed(predict, folder, mirror=tmp_path.parent, root=tmp_path, n_boot=5)
    assert result.real_masks == 0  # the source folder is not found: the fixed region
    assert "could not be read" in result.notes[0]
    masks = load_masks(manifest[manifest["split"] == "test"], 32, folders={"ieee8023": tmp_path})
    for got in masks:
        assert got is not None
        overlap = (got & bright).sum() / (got | bright).sum()
        assert overlap > 0.9, overlap
    seen.clear()
    result = lungs_removed(predict, folder, masks=lambda row: masks[int(row["uid"][-1])], n_boot=5)
    assert result.real_masks == 2
    blacked = seen[1]
    assert (blacked[:, bright] == 0).mean() > 0.9 and (blacked[:, ~bright] != 0).mean() > 0.9


def test_the_figure_draws_the_region(folder: Path, tmp_path: Path) -> None:
    path = draw_lung_region(tmp_path / "region.png", folder, masks={"u": REGION})
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert img.size[0] > img.size[1]
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80)
    assert red.sum() > 100 * len(LUNG_ELLIPSES)


def test_the_region_covers_most_of_real_lung_masks(shared_sources: Path) -> None:
    root = shared_sources / "ieee8023-covid-chestxray"
    paths = sorted((root / "annotations" / "lungVAE-masks").glob("*.png"))[:60]
    assert len(paths) >= 40, "too few ieee8023 lung masks to measure the region on"
    frame = pd.DataFrame(
        {
            "source": "ieee8023",
            "mask_paths": [[str(p.relative_to(root))] for p in paths],
        }
    )
    coverage, outside = [], []
    for mask in load_masks(frame, SIZE, folders={"ieee8023": root}):
        assert mask is not None
        coverage.append((mask & REGION).sum() / mask.sum())
        outside.append((~mask & REGION).sum() / (~mask).sum())
    assert np.mean(coverage) > 0.8, np.mean(coverage)
    assert np.mean(outside) < 0.4, np.mean(outside)
