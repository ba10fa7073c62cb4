"""Grad-CAM maps for every registry model, computed by pytorch-grad-cam (research use only).

Grad-CAM (Selvaraju et al., 2017) weights a layer's feature maps by the spatially averaged
gradient of one class logit and keeps the positive part of the weighted sum: a coarse map of
where the evidence for that class lies, at the resolution of the chosen layer (input / 32 for the
CNNs here, input / 16 for the ViTs), upsampled to the input size. The maps come from
:class:`pytorch_grad_cam.GradCAM` with :class:`ClassifierOutputTarget`; what this module adds is
the right layer per registry model (:data:`CAM_TARGETS`) and the ViT token-grid reshape.

Target layer per model (the last layer whose output still has a spatial layout):

- ``densenet121``: ``features.norm5``, the final batch norm + ReLU over the last dense block;
  the head pools exactly this map.
- ``inception_v3``: ``Mixed_7c``, the last Inception block (8 x 8 at 299 px, 5 x 5 at 224 px,
  2 x 2 at 128 px, 1 x 1 below 128 px: there the map is flat and carries no location, and
  :func:`grad_cam` warns).
- ``resnet18``: ``layer4[-1]``, the last residual block's output.
- ``resnet18_cbam``: also ``layer4[-1]``, the **block output**, not its CBAM module. In timm's
  block the CBAM sits inside the residual branch (``conv -> bn -> CBAM``, then ``+ shortcut`` and
  ReLU): the CBAM output is only the branch, while the head pools the block output (branch plus
  shortcut), so only the block output is what the classifier sees. The CBAM's spatial attention
  is already applied in it, and the maps stay comparable with plain ``resnet18``.
- ``vit_tiny``, ``vit_small``: ``blocks[-1].norm1``, the last block's first LayerNorm (input of
  its attention), the layer pytorch-grad-cam's documentation uses for ViTs. The block outputs
  themselves would give nothing: these models classify from the class token, and after the last
  block the patch tokens reach the head through no path, so their gradients are zero. Inside
  the last attention the class token reads every patch token, so ``norm1``'s patch tokens carry
  the gradient. Its output is ``B x (prefix + h*w) x C``; the reshape drops timm's
  ``num_prefix_tokens`` (the class token and any registers) and lays the patch tokens out as
  the ``h x w`` grid that ``patch_embed.dynamic_feat_size`` gives for the input size (the models
  take any multiple of 16 px, so the grid is computed per call, never fixed).

Example:
    >>> from covid19_images.explanation.gradcam import CAM_TARGETS
    >>> CAM_TARGETS["resnet18_cbam"].path
    'layer4[-1]'
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from covid19_images.errors import ModelError
from covid19_images.models.registry import get_spec

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class CamTarget:
    """Where Grad-CAM looks in one registry model."""

    path: str
    """The target layer, as an attribute path from the model (``blocks[-1].norm1``)."""
    tokens: bool = False
    """The layer outputs ViT tokens (``B x N x C``) that must be reshaped to a grid."""
    why: str = ""


CAM_TARGETS: Final[dict[str, CamTarget]] = {
    "densenet121": CamTarget(
        "features.norm5", why="final BatchNorm + ReLU of the features: the map the head pools"
    ),
    "inception_v3": CamTarget("Mixed_7c", why="the last Mixed block: the map the head pools"),
    "resnet18": CamTarget("layer4[-1]", why="the last residual block: the map the head pools"),
    "resnet18_cbam": CamTarget(
        "layer4[-1]",
        why="the last block's output (CBAM branch + shortcut), the map the head pools; the CBAM "
        "module alone is only the residual branch",
    ),
    "vit_small": CamTarget(
        "blocks[-1].norm1",
        tokens=True,
        why="the last block's norm1: its patch tokens feed the class token's attention (the "
        "block outputs' patch tokens get no gradient)",
    ),
    "vit_tiny": CamTarget(
        "blocks[-1].norm1",
        tokens=True,
        why="the last block's norm1: its patch tokens feed the class token's attention (the "
        "block outputs' patch tokens get no gradient)",
    ),
}
"""Every registry model name → its Grad-CAM target layer."""


def cam_target(name: str) -> CamTarget:
    """The :data:`CAM_TARGETS` entry of a registry model name.

    Raises:
        ModelError: an unknown model name (with suggestions), or a registry model that has no
            entry here.

    Example:
        >>> cam_target("vit_tiny").tokens
        True
    """
    get_spec(name)  # an unknown name fails with the registry's suggestions
    target = CAM_TARGETS.get(name)
    if target is None:
        raise ModelError(f"no Grad-CAM target layer is registered for model {name!r}")
    return target


def _resolve(model: nn.Module, path: str) -> nn.Module:
    """The submodule at an attribute path such as ``blocks[-1].norm1``."""
    from torch import nn

    current: object = model
    for part in path.split("."):
        attr, _, index = part.partition("[")
        current = getattr(current, attr)
        if index:
            current = current[int(index.rstrip("]"))]  # type: ignore[index]
    if not isinstance(current, nn.Module):
        raise ModelError(f"{path!r} is not a module of this model")
    return current


def target_layers(model: nn.Module, name: str) -> list[nn.Module]:
    """The layers Grad-CAM reads in a ``name`` model built by :func:`covid19_images.models.create`.

    See :data:`CAM_TARGETS` for the layer of each model and why.

    Raises:
        ModelError: an unknown name, or a model that lacks the layer (another architecture than
            ``name`` says).

    Example:
        >>> from covid19_images.models import create
        >>> target_layers(create("resnet18", 2), "resnet18")  # doctest: +SKIP
        [BasicBlock(...)]
    """
    target = cam_target(name)
    try:
        return [_resolve(model, target.path)]
    except (AttributeError, IndexError, TypeError) as error:
        raise ModelError(
            f"this model has no {target.path!r} layer: is it really a {name!r} model? ({error})"
        ) from error


def token_grid(model: nn.Module, height: int, width: int) -> tuple[int, int]:
    """The patch grid (rows, columns) a timm ViT makes of a ``height`` x ``width`` input.

    Example:
        >>> from covid19_images.models import create
        >>> token_grid(create("vit_tiny", 2), 64, 96)  # doctest: +SKIP
        (4, 6)
    """
    patch_embed = getattr(model, "patch_embed", None)
    feat_size = getattr(patch_embed, "dynamic_feat_size", None)
    if callable(feat_size):
        rows, cols = feat_size((height, width))
        return int(rows), int(cols)
    patch = getattr(patch_embed, "patch_size", None)
    if patch is None:
        raise ModelError("not a timm vision transformer: no patch_embed.patch_size")
    return height // int(patch[0]), width // int(patch[1])


def reshape_transform(
    model: nn.Module, name: str, height: int, width: int
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """How to turn the target layer's output into ``B x C x h x w`` maps, or None for CNNs.

    For the ViTs: drop the first ``model.num_prefix_tokens`` tokens (class token, registers) and
    reshape the rest, row by row as timm flattens them, to the patch grid of a ``height`` x
    ``width`` input (:func:`token_grid`), channels first.

    Example:
        >>> import torch
        >>> from covid19_images.models import create
        >>> vit = create("vit_tiny", 2)  # doctest: +SKIP
        >>> to_grid = reshape_transform(vit, "vit_tiny", 64, 32)  # doctest: +SKIP
        >>> to_grid(torch.zeros(2, 9, 192)).shape  # doctest: +SKIP
        torch.Size([2, 192, 4, 2])
    """
    if not cam_target(name).tokens:
        return None
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    rows, cols = token_grid(model, height, width)

    def to_grid(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[1] != prefix + rows * cols:
            raise ModelError(
                f"{name}: expected {prefix} prefix + {rows}x{cols} patch tokens for a "
                f"{height}x{width} input, got a {tuple(tokens.shape)} output"
            )
        grid = tokens[:, prefix:, :].reshape(tokens.shape[0], rows, cols, tokens.shape[2])
        return grid.permute(0, 3, 1, 2)

    return to_grid


def grad_cam(
    model: nn.Module,
    name: str,
    images: torch.Tensor,
    targets: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM maps of ``images`` (``B x H x W`` float32 in [0, 1], one per image).

    Args:
        model: a ``name`` model from :func:`covid19_images.models.create` (any device).
        name: its registry name (chooses the target layer, :data:`CAM_TARGETS`).
        images: ``B x C x H x W`` float tensor, normalised as the model takes them.
        targets: the class index to explain per image; by default each image's predicted class.
        batch_size: images per forward/backward pass.

    Each map is scaled to [0, 1] by pytorch-grad-cam (minus its minimum, over its maximum); a map
    without positive evidence is all zeros, and so is every map where the target layer is a
    single cell for this input size (``inception_v3`` below 128 px, the other CNNs at 32 px; a
    warning says so). The maps have the resolution of the layer, upsampled: input / 32 for the
    CNNs, input / 16 for the ViTs, so a finding smaller than a cell cannot be outlined.

    The model is left as it was: the same parameters, ``.grad`` and ``requires_grad``, train/eval
    mode of every module, and no hooks (Grad-CAM runs it in eval mode, so batch norm uses its
    running statistics and dropout is off). The weights get no gradient: the input requires
    grad instead, which is all the maps need.

    Example:
        >>> import torch
        >>> from covid19_images.models import create
        >>> model = create("resnet18", 2)  # doctest: +SKIP
        >>> cams = grad_cam(model, "resnet18", torch.randn(3, 1, 64, 64))  # doctest: +SKIP
        >>> cams.shape, cams.dtype  # doctest: +SKIP
        ((3, 64, 64), dtype('float32'))
    """
    cams, _ = grad_cam_with_logits(model, name, images, targets, batch_size)
    return cams


def grad_cam_with_logits(
    model: nn.Module,
    name: str,
    images: torch.Tensor,
    targets: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`grad_cam`, and the logits of the same forward passes (``B x classes`` float32).

    Example:
        >>> import torch
        >>> from covid19_images.models import create
        >>> cams, logits = grad_cam_with_logits(
        ...     create("vit_tiny", 3), "vit_tiny", torch.randn(2, 1, 64, 64))  # doctest: +SKIP
        >>> cams.shape, logits.shape  # doctest: +SKIP
        ((2, 64, 64), (2, 3))
    """
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if images.ndim != 4:
        raise ValueError(f"images must be B x C x H x W, got shape {tuple(images.shape)}")
    count, height, width = images.shape[0], images.shape[2], images.shape[3]
    wanted: list[int] | None = None
    if targets is not None:
        wanted = [int(t) for t in np.asarray(targets).reshape(-1)]
        if len(wanted) != count:
            raise ValueError(f"{len(wanted)} targets for {count} images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    layers = target_layers(model, name)
    reshape = reshape_transform(model, name, height, width)

    modes = {module: module.training for module in model.modules()}
    params = list(model.parameters())
    saved = [(p.requires_grad, p.grad) for p in params]
    device = params[0].device if params else torch.device("cpu")
    cams: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    cam = None
    try:
        # No gradient for the weights: the maps need only the gradient at the target layer,
        # which flows there from the logit through an input that requires grad.
        for p in params:
            p.requires_grad_(False)
        cam = GradCAM(model=model, target_layers=layers, reshape_transform=reshape)
        with torch.enable_grad():
            for start in range(0, count, batch_size):
                batch = images[start : start + batch_size].detach().to(device).float()
                batch.requires_grad_(True)
                chosen = None
                if wanted is not None:
                    chosen = [ClassifierOutputTarget(t) for t in wanted[start : start + batch_size]]
                maps = cam(input_tensor=batch, targets=chosen)
                cams.append(np.asarray(maps, dtype=np.float32).reshape(-1, height, width))
                logits.append(cam.outputs.detach().float().cpu().numpy())
                if start == 0:
                    _warn_if_flat(name, cam.activations_and_grads.activations, height, width)
                cam.outputs = None
                cam.activations_and_grads.clear()
    finally:
        if cam is not None:
            cam.activations_and_grads.release()
            del cam
        for p, (requires_grad, grad) in zip(params, saved, strict=True):
            p.requires_grad_(requires_grad)
            p.grad = grad
        for module, training in modes.items():
            module.training = training
    if not cams:
        return np.zeros((0, height, width), np.float32), np.zeros((0, 0), np.float32)
    out = np.clip(np.nan_to_num(np.concatenate(cams), nan=0.0), 0.0, 1.0).astype(np.float32)
    return out, np.concatenate(logits).astype(np.float32)


def _warn_if_flat(name: str, activations: list[torch.Tensor], height: int, width: int) -> None:
    """Warn where the target layer is one cell: its map is flat, a constant with no location."""
    if activations and tuple(activations[0].shape[-2:]) == (1, 1):
        warnings.warn(
            f"{name}: the Grad-CAM layer {CAM_TARGETS[name].path} is 1x1 for a {height}x{width} "
            "input, so the maps are flat (no location); explain larger inputs",
            stacklevel=3,
        )
