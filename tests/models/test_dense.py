"""Models by task: regression heads, U-Nets (2-D, 3-D with sliding windows) and Mask R-CNNs.

Everything trains a step on the CPU at 32 to 128 px; ``pretrained=True`` loads checkpoints the
tests save into torch's hub cache under torchvision's file names, so no weights come from a hub.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from covid19_images.errors import ModelError
from covid19_images.models import available, create, sliding_window_predict, task_of
from covid19_images.models.dense import LIGHT_ANCHOR_SIZES
from covid19_images.models.registry import get_spec

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("torchvision")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _save(model: Any, path: Path) -> None:
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        safetensors_torch.save_file(state, str(path))
    else:
        torch.save(state, path)


# --- the registry by task ---------------------------------------------------------------------


def test_available_by_task() -> None:
    classification = ["densenet121", "inception_v3", "resnet18", "resnet18_cbam", "vit_small"]
    assert available()[:5] == classification
    assert "unet" not in available()  # the default stays what `train --model` accepts
    assert available("regression") == available("classification")
    assert available("segmentation") == ["unet", "unet3d"]
    assert available("detection") == ["maskrcnn", "maskrcnn_light"]
    assert set(available(None)) == set(available()) | {
        "unet",
        "unet3d",
        "maskrcnn",
        "maskrcnn_light",
    }
    assert [task_of(n) for n in ("unet3d", "maskrcnn", "vit_tiny")] == [
        "segmentation",
        "detection",
        "classification",
    ]
    with pytest.raises(ModelError, match="unknown task 'instance'"):
        available("instance")  # type: ignore[arg-type]


def test_task_mismatches_are_one_message() -> None:
    with pytest.raises(ModelError, match="'unet' is a segmentation model, not a classification"):
        get_spec("unet")  # what train and explain call
    with pytest.raises(ModelError, match="'resnet18' is a classification model, not a detection"):
        create("resnet18", 3, task="detection")
    with pytest.raises(ModelError, match="not a regression one"):
        create("maskrcnn", 3, task="regression")
    with pytest.raises(ModelError, match="did you mean: unet3d"):
        create("unet-3d", 2)
    with pytest.raises(ModelError, match="image_size applies to detection models only"):
        create("unet", 2, image_size=64)
    with pytest.raises(ModelError, match="num_classes >= 2"):
        create("unet", 1)
    with pytest.raises(ModelError, match="1 or 3 input channels"):
        create("maskrcnn_light", 2, in_chans=2)


def test_regression_head_learns_unbounded_scores() -> None:
    torch.manual_seed(0)
    model = create("resnet18", 2, task="regression")
    assert set(model.state_dict()) == set(create("resnet18", 2).state_dict())
    x = torch.randn(8, 1, 32, 32)
    y = torch.tensor([[6.0, -3.0]]).repeat(8, 1) + torch.randn(8, 2)  # outside any [0, 1]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (8, 2)
    assert float(out[:, 0].mean()) > 3.0 and float(out[:, 1].mean()) < -1.0


# --- U-Nets -----------------------------------------------------------------------------------


def test_unet_learns_a_planted_square() -> None:
    torch.manual_seed(0)
    model = create("unet", 3)
    x = torch.randn(2, 1, 64, 64) * 0.3
    y = torch.zeros(2, 64, 64, dtype=torch.long)
    y[:, 8:24, 8:24], y[:, 40:56, 30:50] = 1, 2
    x += 1.5 * (y > 0).unsqueeze(1)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert logits.shape == (2, 3, 64, 64)
    assert losses[-1] < 0.8 * losses[0]


def test_unet_has_no_hub_weights() -> None:
    with pytest.raises(ModelError, match="no pretrained weights for unet3d"):
        create("unet3d", 2, pretrained=True)


def test_unet_checkpoints(tmp_path: Path) -> None:
    torch.manual_seed(1)
    saved = create("unet", 3)
    path = tmp_path / "unet.safetensors"
    _save(saved, path)
    torch.manual_seed(2)
    loaded = create("unet", 3, pretrained=path)
    x = torch.randn(1, 1, 32, 32)
    saved.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), saved(x))

    with pytest.warns(UserWarning, match="head is left out"):
        two = create("unet", 2, pretrained=str(path))
    body = [k for k in saved.state_dict() if not k.startswith("final_conv.")]
    assert all(torch.equal(two.state_dict()[k], saved.state_dict()[k]) for k in body)
    assert two.state_dict()["final_conv.weight"].shape[0] == 2

    rgb = create("unet", 3, in_chans=3)
    rgb_path = tmp_path / "rgb.pt"
    _save(rgb, rgb_path)
    with pytest.warns(UserWarning, match="adapted from 3 input channels to 1"):
        grey = create("unet", 3, pretrained=rgb_path)
    key = "conv_0.conv_0.conv.weight"
    oracle = rgb.state_dict()[key].sum(dim=1, keepdim=True)
    assert torch.equal(grey.state_dict()[key], oracle)

    with pytest.raises(ModelError, match="does not fit"):
        create("unet3d", 3, pretrained=path)  # 2-D kernels into a 3-D net


def _spheres(n: int, side: int, seed: int) -> tuple[Any, Any]:
    """Noise volumes with one bright sphere each (the "lesion"), and their label maps."""
    rng = np.random.default_rng(seed)
    grid = np.indices((side,) * 3).astype(np.float32)
    images = rng.normal(0.0, 0.5, (n, 1, side, side, side)).astype(np.float32)
    labels = np.zeros((n, side, side, side), dtype=np.int64)
    for i in range(n):
        centre = rng.uniform(0.3 * side, 0.7 * side, 3)
        radius = rng.uniform(0.12 * side, 0.22 * side)
        inside = ((grid - centre[:, None, None, None]) ** 2).sum(0) <= radius**2
        labels[i][inside] = 1
        images[i, 0][inside] += 1.0
    return torch.from_numpy(images), torch.from_numpy(labels)


def test_unet3d_trains_on_spheres_and_predicts_a_larger_volume_by_windows() -> None:
    from monai.metrics import DiceMetric

    from covid19_images.evaluation.segmentation import ct_lesion_scores

    torch.manual_seed(0)
    model = create("unet3d", 2)
    x, y = _spheres(2, 32, seed=0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]

    volume, truth = _spheres(1, 48, seed=1)
    model.train()
    logits = sliding_window_predict(model, volume, 32, overlap=0.5)
    assert logits.shape == (1, 2, 48, 48, 48)
    assert torch.isfinite(logits).all()
    assert model.training  # its mode is given back
    # One window covering the whole input is the model itself.
    model.eval()
    small = volume[..., :32, :32, :32]
    with torch.no_grad():
        direct = model(small)
    windowed = sliding_window_predict(model, small, 32, mode="constant")
    torch.testing.assert_close(windowed, direct, rtol=1e-5, atol=1e-5)

    # The Dice of a planted prediction (the sphere shifted by 3 voxels) equals MONAI's.
    planted = torch.roll(truth, shifts=3, dims=1)
    ours = ct_lesion_scores(planted, truth, lesion=1)["dice_lesion"].to_numpy()
    metric = DiceMetric(include_background=False)
    one_hot = torch.nn.functional.one_hot
    metric(one_hot(planted, 2).permute(0, 4, 1, 2, 3), one_hot(truth, 2).permute(0, 4, 1, 2, 3))
    oracle = float(metric.aggregate())
    assert 0.3 < oracle < 0.9
    assert ours[0] == pytest.approx(oracle, abs=1e-6)


# --- Mask R-CNN -------------------------------------------------------------------------------


def _targets(size: int) -> list[dict[str, Any]]:
    masks = torch.zeros(2, size, size, dtype=torch.uint8)
    masks[0, 20:100, 10:55] = 1  # a tall "lung"
    masks[1, 30:60, 70:110] = 1  # a "lesion"
    boxes = torch.tensor([[10.0, 20.0, 55.0, 100.0], [70.0, 30.0, 110.0, 60.0]])
    return [{"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks}]


@pytest.fixture(scope="module")
def light() -> Any:
    torch.manual_seed(0)
    return create("maskrcnn_light", 3, image_size=128)


@pytest.mark.parametrize("name", ["maskrcnn", "maskrcnn_light"])
def test_maskrcnn_trains_a_step_and_predicts(name: str, light: Any) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = light if name == "maskrcnn_light" else create(name, 3, image_size=128)
    assert type(model.transform).__name__ == "OneChannelTransform"
    image = torch.rand(1, 128, 128)
    model.train()
    losses = model([image], _targets(128))
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    total = sum(losses.values())
    assert torch.isfinite(total)
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    optimiser.zero_grad()
    total.backward()
    head = model.roi_heads.mask_predictor.mask_fcn_logits.weight
    assert head.grad is not None and float(head.grad.abs().sum()) > 0
    optimiser.step()
    model.eval()
    with torch.no_grad():
        (out,) = model([image])
    assert set(out) == {"boxes", "labels", "scores", "masks"}
    k = len(out["boxes"])
    assert out["masks"].shape == (k, 1, 128, 128)
    assert out["labels"].shape == out["scores"].shape == (k,)
    if k:
        assert float(out["boxes"].min()) >= 0 and float(out["boxes"].max()) <= 128
        assert set(out["labels"].tolist()) <= {1, 2}
    with pytest.raises(ValueError, match="one-channel images"):
        model([torch.rand(3, 128, 128)])


def test_one_channel_is_the_grey_image_repeated(light: Any) -> None:
    rgb = create("maskrcnn_light", 3, in_chans=3, image_size=128)
    assert type(rgb.transform).__name__ == "GeneralizedRCNNTransform"
    rgb.load_state_dict(light.state_dict())  # the same network: the state dicts are alike
    light.eval()
    rgb.eval()
    grey = torch.rand(1, 128, 128)
    with torch.no_grad():
        (one,) = light([grey])
        (three,) = rgb([grey.repeat(3, 1, 1)])
    assert len(one["boxes"]) > 0
    for key in ("boxes", "scores", "labels", "masks"):
        assert torch.equal(one[key], three[key]), key


def test_light_anchors_match_its_feature_maps(light: Any) -> None:
    assert light.rpn.anchor_generator.sizes == LIGHT_ANCHOR_SIZES
    with torch.no_grad():
        features = light.backbone(torch.zeros(1, 3, 256, 256))
    assert list(features) == ["0", "1", "2", "pool"]
    strides = [256 // f.shape[-1] for f in features.values()]
    assert strides == [8, 16, 32, 64]
    # Every anchor set is two and four times its level's stride.
    assert [
        tuple(s // stride for s in sizes)
        for sizes, stride in zip(LIGHT_ANCHOR_SIZES, strides, strict=True)
    ] == [(2, 4)] * 4


def test_light_checkpoints(tmp_path: Path, light: Any) -> None:
    path = tmp_path / "light.safetensors"
    _save(light, path)
    loaded = create("maskrcnn_light", 3, pretrained=path, image_size=128)
    for key, value in light.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.warns(UserWarning, match="head is left out"):
        fewer = create("maskrcnn_light", 2, pretrained=path)
    assert fewer.roi_heads.box_predictor.cls_score.out_features == 2
    key = "backbone.body.6.block.0.0.weight"
    assert torch.equal(fewer.state_dict()[key], light.state_dict()[key])


@pytest.fixture
def hub_cache(tmp_path: Path) -> Iterator[list[str]]:
    """torch's hub cache pointed at ``tmp_path``, holding checkpoints this test saves under
    the file names of torchvision's COCO Mask R-CNN and ImageNet MobileNetV3 weights: the real
    loading code (``Weights.get_state_dict``) reads them from the cache, and nothing is
    downloaded. Yields the cached file names."""
    from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large
    from torchvision.models.detection import (
        MaskRCNN_ResNet50_FPN_V2_Weights,
        maskrcnn_resnet50_fpn_v2,
    )

    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(7)
    coco = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    torch.manual_seed(7)
    imagenet = mobilenet_v3_large(weights=None)
    names = []
    for weights, model in (
        (MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1, coco),
        (MobileNet_V3_Large_Weights.IMAGENET1K_V1, imagenet),
    ):
        name = Path(weights.url).name
        torch.save(model.state_dict(), folder / name)
        names.append(name)
    try:
        yield names
    finally:
        torch.hub.set_dir(before)


def test_pretrained_maskrcnn_gets_coco_weights_and_new_predictors(
    hub_cache: list[str],
) -> None:
    model = create("maskrcnn", 4, pretrained=True)
    assert "coco" in hub_cache[0]
    torch.manual_seed(7)
    from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

    coco = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    key = "backbone.body.layer1.0.conv1.weight"
    assert torch.equal(model.state_dict()[key], coco.state_dict()[key])
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    assert model.transform.min_size == (800,) and model.transform.max_size == 1333


def test_pretrained_light_gets_an_imagenet_backbone(hub_cache: list[str]) -> None:
    from torchvision.ops import FrozenBatchNorm2d

    model = create("maskrcnn_light", 3, pretrained=True)
    assert "mobilenet_v3_large" in hub_cache[1]
    torch.manual_seed(7)
    from torchvision.models import mobilenet_v3_large

    imagenet = mobilenet_v3_large(weights=None).features.state_dict()
    for key in ("0.0.weight", "12.block.0.0.weight", "16.0.weight"):
        assert torch.equal(model.backbone.body.state_dict()[key], imagenet[key]), key
    assert isinstance(model.backbone.body["1"].block[0][1], FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in model.backbone.body["6"].parameters())
    assert all(p.requires_grad for p in model.backbone.body["7"].parameters())
    assert model.transform.min_size == (256,) and model.transform.max_size == 256


def test_frozen_batch_norm_checkpoint_loads(hub_cache: list[str], tmp_path: Path) -> None:
    trained = create("maskrcnn_light", 3, pretrained=True)  # frozen batch norm: no counters
    path = tmp_path / "frozen.pt"
    _save(trained, path)
    assert not any("body.0.1.num_batches_tracked" in k for k in trained.state_dict())
    loaded = create("maskrcnn_light", 3, pretrained=path)
    assert "backbone.body.0.1.num_batches_tracked" in loaded.state_dict()
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
