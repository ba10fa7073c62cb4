"""The model registry: one name per architecture, built one-channel by timm (research use only).

Every model is built with timm's ``create_model`` with ``in_chans`` set (1 by default, for
grayscale X-ray and CT slices) and a head of ``num_classes``; nothing here writes layers by hand.
Where pretrained RGB weights are loaded, the first convolution is adapted to ``in_chans`` the way
timm does it (:func:`timm.models.adapt_input_conv`: for one channel, the sum of the RGB weights).

Names (:data:`MODELS`):

- ``densenet121``: timm ``densenet121``; also ``pretrained="xrv:<weights>"`` (TorchXRayVision).
- ``inception_v3``: timm ``inception_v3``; native 299 px, works from 75 px up.
- ``vit_tiny``, ``vit_small``: timm ``vit_tiny_patch16_224`` / ``vit_small_patch16_224`` with
  ``dynamic_img_size=True``, so any size that is a multiple of 16 works (64 px included).
- ``resnet18_cbam``: the CNN + attention hybrid, timm ``resnet18`` with a CBAM module (channel
  then spatial attention) in every block (``block_args={"attn_layer": "cbam"}``). Chosen over
  ``resnet26d`` + CBAM and ``coatnet_nano_rw_224`` because it is the cheapest of the three (it
  trains on a CPU at 64 px), it works at any input size (CoAtNet's attention stages are built for
  a fixed size) and its convolutional body loads ImageNet ``resnet18`` weights; the CBAM modules
  have no pretrained weights and start fresh (timm loads with ``pretrained_strict=False``).
- ``resnet18``: timm ``resnet18``, the fast baseline.

``pretrained`` is ``False`` (random initialisation), ``True`` (timm's own weights, downloaded by
timm on first use, needs internet), a local checkpoint file (``.safetensors``, or a ``.pt``/
``.pth`` state dict read with ``torch.load(weights_only=True)``), or ``"xrv:<weights>"``.

Example:
    >>> from covid19_images.models import available
    >>> available()[:3]
    ['densenet121', 'inception_v3', 'resnet18']
"""

from __future__ import annotations

import difflib
import importlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from covid19_images.errors import ModelError

if TYPE_CHECKING:
    import torch

TORCH_INSTALL: Final = "pip install 'covid19-images[torch]'"
"""What a user runs when torch or timm is missing."""

XRV_PREFIX: Final = "xrv:"
"""``pretrained`` values that start with this load TorchXRayVision weights (densenet121 only)."""


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: the timm model a name builds, and with which arguments."""

    name: str
    timm_name: str
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    native_size: int = 224
    """The input size the pretrained weights were trained at."""
    min_size: int = 32
    """The smallest input size (pixels) the model accepts."""
    pretrained_strict: bool = True
    """False where timm's pretrained weights cover only part of the model (the rest is new)."""
    description: str = ""


MODELS: Final[dict[str, ModelSpec]] = {
    spec.name: spec
    for spec in (
        ModelSpec("densenet121", "densenet121", description="DenseNet-121 (CheXNet's backbone)"),
        ModelSpec(
            "inception_v3",
            "inception_v3",
            native_size=299,
            min_size=75,
            description="Inception v3, native 299 px, works from 75 px up",
        ),
        ModelSpec("resnet18", "resnet18", description="ResNet-18, the fast baseline"),
        ModelSpec(
            "resnet18_cbam",
            "resnet18",
            {"block_args": {"attn_layer": "cbam"}},
            pretrained_strict=False,
            description="ResNet-18 with CBAM attention in every block (CNN + attention hybrid)",
        ),
        ModelSpec(
            "vit_small",
            "vit_small_patch16_224",
            {"dynamic_img_size": True},
            description="ViT-S/16, any size that is a multiple of 16",
        ),
        ModelSpec(
            "vit_tiny",
            "vit_tiny_patch16_224",
            {"dynamic_img_size": True},
            description="ViT-Ti/16, any size that is a multiple of 16",
        ),
    )
}
"""Every model name → how it is built."""


def available() -> list[str]:
    """The model names :func:`create` accepts, sorted.

    Example:
        >>> "vit_tiny" in available()
        True
    """
    return sorted(MODELS)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; an unknown name is a :class:`ModelError` with suggestions.

    Example:
        >>> get_spec("vit-tiny")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        covid19_images.errors.ModelError: unknown model 'vit-tiny'; did you mean: vit_tiny? ...
    """
    spec = MODELS.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, available(), n=3, cutoff=0.7)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise ModelError(f"unknown model {name!r}{hint} (available: {', '.join(available())})")
    return spec


def require_timm() -> ModuleType:
    """Import torch and timm, or raise :class:`ModelError` naming the extra that installs them."""
    try:
        importlib.import_module("torch")
        with warnings.catch_warnings():  # timm's import uses torch.jit.interface, deprecated
            warnings.filterwarnings("ignore", "`torch.jit.interface`", FutureWarning)
            return importlib.import_module("timm")
    except ImportError as error:
        missing = error.name or "torch"
        raise ModelError(
            f"models need torch and timm, and {missing} is not installed: {TORCH_INSTALL}"
        ) from error


def create(
    name: str,
    num_classes: int,
    in_chans: int = 1,
    pretrained: bool | str | os.PathLike[str] = False,
) -> torch.nn.Module:
    """A ``name`` model with ``in_chans`` input channels and a head of ``num_classes`` logits.

    Args:
        name: one of :func:`available`.
        num_classes: the number of output logits.
        in_chans: input channels; 1 (grayscale) by default.
        pretrained: ``False``; ``True`` for timm's ImageNet weights (downloaded by timm, first
            conv summed over RGB for one channel); a local ``.safetensors`` / ``.pt`` / ``.pth``
            state dict (a checkpoint with another head keeps its body and gets a fresh head; one
            with 3 input channels is adapted to ``in_chans``); or ``"xrv:<weights>"`` for a
            TorchXRayVision DenseNet-121 (``densenet121`` only, see :mod:`._xrv`).

    Raises:
        ModelError: an unknown name, torch or timm missing, or weights that do not fit.

    Example:
        >>> model = create("resnet18", num_classes=3)  # doctest: +SKIP
    """
    spec = get_spec(name)
    if num_classes < 1 or in_chans < 1:
        raise ModelError(
            f"num_classes and in_chans must be at least 1 (got {num_classes}, {in_chans})"
        )
    timm = require_timm()
    if isinstance(pretrained, str) and pretrained.startswith(XRV_PREFIX):
        if name != "densenet121":
            raise ModelError(
                f"{pretrained!r}: TorchXRayVision weights exist here only for densenet121, "
                f"not {name!r}"
            )
        from covid19_images.models import _xrv

        return _xrv.create(pretrained.removeprefix(XRV_PREFIX), num_classes, in_chans)

    options: dict[str, Any] = dict(spec.timm_kwargs)
    if pretrained is True and not spec.pretrained_strict:
        options["pretrained_strict"] = False
    model: torch.nn.Module = timm.create_model(
        spec.timm_name,
        pretrained=pretrained is True,
        num_classes=num_classes,
        in_chans=in_chans,
        **options,
    )
    if isinstance(pretrained, bool):
        return model
    path = Path(pretrained)
    load_checkpoint(model, read_state_dict(path), in_chans, f"{path} into {name}")
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a torch state dict (``weights_only=True``).

    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper and a ``module.`` prefix on every key
    (``DataParallel``) are taken off.
    """
    import torch

    if not path.is_file():
        raise ModelError(
            f"no checkpoint file at {path} (pretrained is False, True, a .safetensors/.pt/.pth "
            f"file or '{XRV_PREFIX}<weights>')"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt file, pickled objects, wrong format
        raise ModelError(f"cannot read checkpoint {path}: {error}") from error
    if isinstance(loaded, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        raise ModelError(f"{path} is not a state dict (a mapping of names to tensors)")
    state: dict[str, torch.Tensor] = loaded
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def _head_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{name}." for name in names)


def load_checkpoint(
    model: torch.nn.Module, state: dict[str, torch.Tensor], in_chans: int, what: str
) -> None:
    """Load ``state`` into a timm ``model``: every key must fit, except the head and first conv.

    A head (timm's ``pretrained_cfg["classifier"]``) of another shape, or none, is left out with a
    warning and keeps its fresh initialisation; a 3-channel first conv
    (``pretrained_cfg["first_conv"]``) is adapted to ``in_chans`` with
    :func:`timm.models.adapt_input_conv`. Any other missing, unexpected or misshapen key is one
    :class:`ModelError` naming the first few.
    """
    from timm.models import adapt_input_conv

    own = model.state_dict()
    state = dict(state)
    first_conv = getattr(model, "pretrained_cfg", {}).get("first_conv")
    conv_key = f"{first_conv}.weight" if isinstance(first_conv, str) else None
    notes: list[str] = []
    if conv_key in state and conv_key in own:
        saved, wanted = state[conv_key], own[conv_key]
        if saved.ndim == 4 and saved.shape[1] == 3 and wanted.shape[1] == in_chans != 3:
            state[conv_key] = adapt_input_conv(in_chans, saved)
            notes.append(f"first conv {conv_key!r} adapted from 3 input channels to {in_chans}")

    heads = _head_prefixes(model)
    own_head = [key for key in own if key.startswith(heads)] if heads else []
    saved_head = [key for key in state if key.startswith(heads)] if heads else []
    head_fits = sorted(own_head) == sorted(saved_head) and all(
        state[key].shape == own[key].shape for key in saved_head
    )
    if not head_fits:
        saved_shapes = _shapes(saved_head, state)
        for key in saved_head:
            del state[key]
        notes.append(
            f"the checkpoint's head ({saved_shapes}) does not fit this model's "
            f"({_shapes(own_head, own)}); the head is left out and starts fresh"
        )

    missing = [key for key in own if key not in state and (head_fits or key not in own_head)]
    unexpected = sorted(key for key in state if key not in own)  # files keep no fixed order
    misshapen = [
        f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
        for key in state
        if key in own and state[key].shape != own[key].shape
    ]
    if missing or unexpected or misshapen:
        parts = [
            f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
            for label, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", misshapen),
            )
            if keys
        ]
        raise ModelError(
            f"checkpoint {what} does not fit (another architecture?); " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=head_fits)
    for note in notes:
        warnings.warn(f"{what}: {note}", stacklevel=3)


def _shapes(keys: list[str], state: dict[str, Any]) -> str:
    return ", ".join(f"{key} {tuple(state[key].shape)}" for key in keys if key in state) or "none"
