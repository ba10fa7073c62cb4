"""The OpenCV augmentation path against the reference (SciPy) and the grid_sample path.

Tolerances, on a 0-1 scale: OpenCV warps uint8 images, so each warped pixel is rounded to a whole
grey level (at most 0.5/255 from exact bilinear), and it places samples at 1/32 of a pixel; on the
real radiographs both errors together stay under 0.5/255 (measured). The tests allow a mean
absolute difference of 0.75/255 and a largest one of 3/255 where every bilinear neighbour lies
inside the source image. At the edge of the source, ``apply_numpy`` (SciPy, ``mode="constant"``)
cuts to black where ``grid_sample`` and OpenCV blend the last pixel with the black outside, so
the comparison with the reference leaves out that one-pixel seam.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covid19_images.assemble.build import BuildResult
from covid19_images.loaders.augment import (
    IDENTITY,
    PRESETS,
    Draw,
    apply_numpy,
    draw,
    rng_for,
    theta,
)
from covid19_images.loaders.packed import write_packed
from covid19_images.loaders.warp import augment_batch, pixel_matrix

torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install '.[torch]'")
from torch.utils.data import DataLoader  # noqa: E402

from covid19_images.loaders.pytorch import CovidImageDataset, apply_draws  # noqa: E402

MEAN_TOL, MAX_TOL = 0.75 / 255, 3 / 255


def _source_inside(d: Draw, height: int, width: int) -> np.ndarray:
    """Output pixels whose source point has all four bilinear neighbours inside the image."""
    m = pixel_matrix(d, height, width)
    y, x = np.mgrid[0:height, 0:width]
    sx, sy = m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]
    return (sx >= 0) & (sx <= width - 1) & (sy >= 0) & (sy <= height - 1)


def test_pixel_matrix_is_theta_between_pixel_centres() -> None:
    for index in range(20):
        d = draw(PRESETS["standard"], rng_for(4, 0, index))
        h, w = (224, 224) if index % 2 else (48, 80)  # a non-square one too
        # the reference: pixel centres to [-1, 1] as align_corners=False places them
        out_to_norm = np.array([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]])
        expected = np.linalg.inv(out_to_norm) @ np.vstack([theta(d), [0, 0, 1]]) @ out_to_norm
        np.testing.assert_allclose(pixel_matrix(d, h, w), expected[:2], atol=1e-9)


@pytest.mark.parametrize("name", ["light", "standard"])
def test_opencv_path_agrees_with_grid_sample_and_the_reference(
    xray_dataset: BuildResult, name: str
) -> None:
    for seed in (0, 1, 2):
        ds = CovidImageDataset(xray_dataset.path, "train", augment=name, seed=seed, normalize=False)
        split = ds.packed
        assert split is not None
        order = list(range(0, 6 * (seed + 1), seed + 1))
        images = np.take(split.images, order, axis=0)
        got = ds[order][0][:, 0].numpy()
        draws = ds.draws(order)
        assert draws == [draw(PRESETS[name], rng_for(seed, 0, i)) for i in order]
        before, _ = apply_draws(torch.from_numpy(images).unsqueeze(1).float() / 255, draws)
        old = before[:, 0].numpy()
        for k, d in enumerate(draws):
            assert not np.allclose(got[k], images[k] / 255, atol=0.02)  # it did change
            inside = _source_inside(d, *images.shape[1:])
            assert inside.mean() > 0.8
            diff = np.abs(got[k] - old[k])
            assert diff.mean() < MEAN_TOL and diff[inside].max() < MAX_TOL
            reference = np.abs(got[k] - apply_numpy(images[k], d))[inside]
            assert reference.mean() < MEAN_TOL and reference.max() < MAX_TOL
        normalized = CovidImageDataset(xray_dataset.path, "train", augment=name, seed=seed)
        np.testing.assert_allclose(
            normalized[order][0][:, 0].numpy(), (got - ds.mean) / ds.std, atol=2e-5
        )


def test_a_sample_is_the_same_whatever_its_batch_or_workers(xray_dataset: BuildResult) -> None:
    ds = CovidImageDataset(xray_dataset.path, "train", augment="standard", seed=7)
    ds.set_epoch(3)
    batch = ds[list(range(6))][0]
    shuffled = ds[[4, 0, 5, 2, 1, 3]][0]
    assert torch.equal(shuffled, batch[[4, 0, 5, 2, 1, 3]])
    assert all(torch.equal(ds[i][0], batch[i]) for i in (0, 5))
    ds.set_epoch(0)
    epoch_0 = ds[list(range(6))][0]
    assert not torch.equal(epoch_0, batch)
    workers = torch.cat([x for x, _ in DataLoader(ds, batch_size=2, num_workers=2)][:3])
    assert torch.equal(workers, epoch_0)


def test_none_is_a_plain_copy(xray_dataset: BuildResult) -> None:
    ds = CovidImageDataset(xray_dataset.path, "train", augment="none", normalize=False)
    assert ds.packed is not None
    images = np.take(ds.packed.images, [3, 1, 2], axis=0)
    np.testing.assert_allclose(ds[[3, 1, 2]][0][:, 0].numpy(), images / 255, rtol=0, atol=1e-7)
    copied, _ = augment_batch(images, [IDENTITY] * 3)
    np.testing.assert_allclose(copied, images / 255, rtol=0, atol=1e-6)


def _segmentation_dataset(folder: Path, count: int, side: int) -> list[tuple[slice, slice]]:
    """A packed segmentation dataset: a bright rectangle on a grey film, labelled 3."""
    rng = np.random.default_rng(0)
    boxes, rows = [], []
    masks: dict[str, np.ndarray] = {}
    for i in range(count):
        top, left = rng.integers(8, side // 2, size=2)
        box = (slice(top, top + side // 3), slice(left, left + side // 4))
        image = np.full((side, side), 60, np.uint8)
        image[box] = 220
        mask = np.zeros((side, side), np.uint8)
        mask[box] = 3
        Image.fromarray(image).save(folder / f"{i}.png")
        masks[f"u{i}"] = mask
        boxes.append(box)
        rows.append({"split": "train", "path": f"{i}.png", "uid": f"u{i}", "class": "lesion"})
    (folder / "manifest.parquet").write_bytes(b"")  # only its presence marks a dataset folder
    write_packed(folder, pd.DataFrame(rows), ["lesion"], side, "test", masks=lambda u, _: masks[u])
    assert "mask_file" in json.loads((folder / "packed.json").read_text())["splits"]["train"]
    return boxes


def test_label_maps_move_with_their_image(tmp_path: Path) -> None:
    _segmentation_dataset(tmp_path, count=8, side=96)
    ds = CovidImageDataset(tmp_path, "train", augment="standard", seed=1, normalize=False)
    assert ds.segmentation and ds.packed is not None and ds.packed.masks is not None
    images, maps = ds[list(range(8))]
    assert maps.shape == (8, 96, 96) and maps.dtype == torch.int64
    assert set(maps.unique().tolist()) == {0, 3}  # nearest: no label in between
    raw = torch.from_numpy(np.array(ds.packed.images)).unsqueeze(1).float() / 255
    _, old_maps = apply_draws(
        raw, ds.draws(range(8)), torch.from_numpy(np.array(ds.packed.masks)).unsqueeze(1)
    )
    assert old_maps is not None
    for k in range(8):
        assert not torch.equal(maps[k], torch.from_numpy(np.array(ds.packed.masks[k])).long())
        image, labelled = images[k, 0].numpy(), maps[k].numpy() == 3
        # the rectangle after contrast and brightness: brighter than the middle of its two levels
        inside, outside = np.median(image[labelled]), np.median(image[~labelled & (image > 0)])
        bright = image > (inside + outside) / 2
        overlap = (bright & labelled).sum() / (bright | labelled).sum()
        assert overlap > 0.9, overlap
        # the grid_sample path's nearest resampling: the same label map but for half-pixel ties
        assert (old_maps[k, 0].long() == maps[k]).float().mean() > 0.99
