"""Grad-CAM finds what a trained model uses: a bright square planted in noise marks class 1.

Noise images (N(0, 1)) of two classes; class 1 has a square of 6.25% of the image (a quarter
of its side) brighter by 3 at a random position, class 0 none. Fresh images are drawn every
epoch, so the model learns the square instead of memorising noise, until held-out images
separate (accuracy >= 0.95, at most a few epochs of 160 images).

What a map can show is bounded by its resolution: the registry layers have 2 x 2 cells for
ResNet-18 at 48 px (stride 32) and 4 x 4 for ViT-Ti/16 at 64 px. The square is a quarter of a
ResNet cell's side: even a map entirely on the square's cell, upsampled, puts at most 0.25 of
its energy inside the square (0.17 on average over positions); for the ViT grid the bound is
0.47 on average. So the checks are relative to chance: the energy share inside the square
well above its area share (what a flat map gives) and above the share in a placebo square
(the same square shifted by half the image, never overlapping it), and the map's peak in the
cell holding the square's centre far more often than chance (for the ViT this is what a
transposed or shifted token grid fails).
"""

from __future__ import annotations

import numpy as np
import pytest

from covid19_images.explanation import energy_inside, grad_cam

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("pytorch_grad_cam")

from covid19_images.models import create  # noqa: E402


def _planted(
    n: int, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``n`` images, every second one with a bright square; also the squares' masks."""
    side = size // 4
    images = rng.normal(0.0, 1.0, (n, 1, size, size)).astype(np.float32)
    labels = np.arange(n) % 2
    boxes = np.zeros((n, size, size), dtype=bool)
    for i in np.flatnonzero(labels):
        top, left = rng.integers(0, size - side + 1, 2)
        images[i, 0, top : top + side, left : left + side] += 3.0
        boxes[i, top : top + side, left : left + side] = True
    return torch.from_numpy(images), torch.from_numpy(labels), boxes


def _train(name: str, size: int, lr: float, max_epochs: int) -> tuple[torch.nn.Module, float]:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    held_x, held_y, _ = _planted(64, size, rng)
    model = create(name, 2)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    accuracy = 0.0
    for _ in range(max_epochs):
        x, y, _ = _planted(160, size, rng)
        model.train()
        for start in range(0, len(x), 16):
            loss = torch.nn.functional.cross_entropy(
                model(x[start : start + 16]), y[start : start + 16]
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(held_x).argmax(1) == held_y).float().mean())
        if accuracy >= 0.95:
            break
    return model, accuracy


@pytest.mark.parametrize(
    ("name", "size", "grid", "lr", "min_peak"),
    [("resnet18", 48, 2, 2e-3, 0.5), ("vit_tiny", 64, 4, 5e-4, 0.75)],
)
def test_the_map_lies_on_the_planted_square(
    name: str, size: int, grid: int, lr: float, min_peak: float
) -> None:
    model, accuracy = _train(name, size, lr, max_epochs=6)
    assert accuracy >= 0.9, f"{name} did not learn the square (held-out accuracy {accuracy})"

    x, y, boxes = _planted(48, size, np.random.default_rng(1))
    chosen = (y == 1).numpy()
    cams = grad_cam(model, name, x[chosen], targets=[1] * int(chosen.sum()))
    boxes = boxes[chosen]
    area = float(boxes[0].mean())
    share = energy_inside(cams, list(boxes))
    placebo = energy_inside(cams, list(np.roll(boxes, (size // 2, size // 2), axis=(1, 2))))
    assert not np.isnan(share).any()

    cell = size // grid
    hits = []
    for cam, box in zip(cams, boxes, strict=True):
        rows, cols = np.nonzero(box)
        peak = np.unravel_index(int(cam.argmax()), cam.shape)
        centre = (int(rows.mean()) // cell, int(cols.mean()) // cell)
        hits.append((int(peak[0]) // cell, int(peak[1]) // cell) == centre)

    print(
        f"{name}: accuracy {accuracy:.2f}, energy in square {share.mean():.3f} "
        f"(area {area:.4f}, placebo {placebo.mean():.3f}, above placebo in "
        f"{np.mean(share > placebo):.2f}), peak in the square's cell {np.mean(hits):.2f} "
        f"(chance {1 / grid**2:.2f})"
    )
    assert share.mean() > 1.5 * area
    assert np.mean(share > placebo) >= 0.75
    assert np.mean(hits) >= min_peak
