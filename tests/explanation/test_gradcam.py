"""Grad-CAM on every registry model: maps of the input size in [0, 1], the model left as it was."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from covid19_images.errors import ModelError
from covid19_images.explanation import (
    CAM_TARGETS,
    cam_target,
    grad_cam,
    grad_cam_with_logits,
    reshape_transform,
    target_layers,
)
from covid19_images.models import available, create

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("pytorch_grad_cam")

SIZES = {"inception_v3": 75}
"""The smallest input each model takes (64 px unless listed)."""


def _images(name: str, batch: int = 2, height: int | None = None) -> torch.Tensor:
    size = SIZES.get(name, 64)
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, 1, height or size, size, generator=generator)


def _hooks(model: torch.nn.Module) -> int:
    kinds = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_forward_hooks_with_kwargs",
        "_state_dict_hooks",
    )
    return sum(len(getattr(m, kind, {})) for m in model.modules() for kind in kinds)


def test_every_registry_model_has_a_target() -> None:
    assert sorted(CAM_TARGETS) == available()
    with pytest.raises(ModelError, match="did you mean: vit_tiny"):
        cam_target("vit-tiny")


@pytest.mark.parametrize("name", available())
def test_maps_of_every_model_leave_the_model_as_it_was(name: str) -> None:
    torch.manual_seed(0)
    model = create(name, 3)
    images = _images(name)
    # Gradients from an earlier step, a mixed train/eval state and a frozen tensor, as a
    # trainer may leave them: all must come back unchanged.
    model(images).sum().backward()
    model.train()
    first = next(model.children())
    first.eval()
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {
        n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()
    }
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    hooks = _hooks(model)

    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cams, logits = grad_cam_with_logits(model, name, images)  # turns gradients on itself
    flat = [str(w.message) for w in caught if "maps are flat" in str(w.message)]
    # Inception's last block is 1 x 1 at its smallest size (75 px): flat maps, said so.
    assert len(flat) == (name == "inception_v3"), flat

    assert cams.shape == (2, *images.shape[2:])
    assert cams.dtype == np.float32
    assert np.isfinite(cams).all()
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert logits.shape == (2, 3) and np.isfinite(logits).all()
    assert {n: m.training for n, m in model.named_modules()} == modes
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)  # weights and BN statistics
    for n, p in model.named_parameters():
        assert (p.grad is None) == (grads[n] is None), n
        if p.grad is not None:
            assert torch.equal(p.grad, grads[n]), n
        assert p.requires_grad == flags[n], n
    assert _hooks(model) == hooks
    model.eval()
    with torch.no_grad():
        assert np.allclose(model(images).numpy(), logits, atol=1e-5)


@pytest.mark.parametrize("name", ["densenet121", "inception_v3", "resnet18", "resnet18_cbam"])
def test_the_cnn_target_is_the_map_the_head_pools(name: str) -> None:
    # Nothing but pooling lies between the layer and the head: for the hybrid this is the
    # block output, not the CBAM branch inside it.
    model = create(name, 2).eval()
    seen: list[torch.Tensor] = []
    (layer,) = target_layers(model, name)
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        features = model.forward_features(_images(name, batch=1))
    handle.remove()
    assert len(seen) == 1
    assert torch.equal(seen[0], features)


@pytest.mark.parametrize("name", ["vit_tiny", "vit_small"])
def test_vit_tokens_go_back_to_their_patches(name: str) -> None:
    # A 64 x 32 input is a 4 x 2 patch grid; a transposed or shifted reshape would not match
    # timm's own patch layout.
    model = create(name, 2).eval()
    images = _images(name, batch=2, height=64)[..., :32]
    with torch.no_grad():
        patches = model.patch_embed(images)  # B x rows x cols x C (NHWC for dynamic sizes)
    assert patches.shape[1:3] == (4, 2)
    prefix = torch.zeros(2, model.num_prefix_tokens, patches.shape[-1])
    tokens = torch.cat([prefix, patches.reshape(2, 8, -1)], dim=1)
    to_grid = reshape_transform(model, name, 64, 32)
    assert to_grid is not None
    assert torch.equal(to_grid(tokens), patches.permute(0, 3, 1, 2))
    with pytest.raises(ModelError, match="patch tokens"):
        to_grid(tokens[:, 1:])
    cams = grad_cam(model, name, images)
    assert cams.shape == (2, 64, 32)


def test_cnns_need_no_reshape_and_a_wrong_model_is_named() -> None:
    model = create("resnet18", 2)
    assert reshape_transform(model, "resnet18", 64, 64) is None
    with pytest.raises(ModelError, match="really a 'densenet121'"):
        target_layers(model, "densenet121")


def test_targets_choose_the_class_and_are_checked() -> None:
    torch.manual_seed(0)
    model = create("resnet18", 2)
    images = _images("resnet18", batch=2)
    with pytest.raises(ValueError, match="3 targets for 2 images"):
        grad_cam(model, "resnet18", images, targets=[0, 1, 1])
    predicted = grad_cam(model, "resnet18", images)
    _, logits = grad_cam_with_logits(model, "resnet18", images)
    top = logits.argmax(1)
    assert np.array_equal(predicted, grad_cam(model, "resnet18", images, targets=top))
    other = grad_cam(model, "resnet18", images, targets=1 - top, batch_size=1)
    assert not np.allclose(predicted, other)
