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

The same backbones are **regression** models with ``task="regression"``: timm's linear head with
``num_classes`` outputs, read as unbounded scores (train them with an MSE or Huber loss).

Dense-task models (:data:`DENSE_MODELS`, built by :mod:`covid19_images.models.dense`):
``unet`` and ``unet3d`` (segmentation, MONAI ``BasicUNet``), ``maskrcnn`` and ``maskrcnn_light``
(detection with instance masks, torchvision Mask R-CNN). :func:`available` lists the names of one
task, classification by default, so every name it gives by default trains as a classifier.

Example:
    >>> from covid19_images.models import available
    >>> available()[:3]
    ['densenet121', 'inception_v3', 'resnet18']
    >>> available("segmentation"), available("detection")
    (['unet', 'unet3d'], ['maskrcnn', 'maskrcnn_light'])
"""

from __future__ import annotations

import difflib
import importlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from covid19_images.errors import ModelError

if TYPE_CHECKING:
    import torch

TORCH_INSTALL: Final = "pip install 'covid19-images[torch]'"
"""What a user runs when torch or timm is missing."""

MONAI_INSTALL: Final = "pip install 'covid19-images[monai]'"
"""What a user runs when MONAI (the U-Nets' library) is missing."""

XRV_PREFIX: Final = "xrv:"
"""``pretrained`` values that start with this load TorchXRayVision weights (densenet121 only)."""

Task = Literal["classification", "regression", "segmentation", "detection"]
"""What a model predicts: class logits, unbounded scores, a label map, or boxes with masks."""

TASKS: Final[tuple[str, ...]] = get_args(Task)
"""Every task, in the order of :data:`Task`."""


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


@dataclass(frozen=True)
class DenseSpec:
    """One dense-task registry entry: a segmentation or detection model and its library."""

    name: str
    task: Task
    library: str
    """The library whose class builds it (``monai`` or ``torchvision``)."""
    description: str = ""


DENSE_MODELS: Final[dict[str, DenseSpec]] = {
    spec.name: spec
    for spec in (
        DenseSpec(
            "unet",
            "segmentation",
            "monai",
            "2-D U-Net (MONAI BasicUNet): num_classes channels of logits, background included",
        ),
        DenseSpec(
            "unet3d",
            "segmentation",
            "monai",
            "3-D U-Net (MONAI BasicUNet) for CT volumes; sliding_window_predict for whole volumes",
        ),
        DenseSpec(
            "maskrcnn",
            "detection",
            "torchvision",
            "Mask R-CNN, ResNet-50 FPN v2 (torchvision): boxes, labels, scores and masks",
        ),
        DenseSpec(
            "maskrcnn_light",
            "detection",
            "torchvision",
            "Mask R-CNN on a MobileNetV3-Large FPN, 256 px: trains on a CPU",
        ),
    )
}
"""Every segmentation and detection model name → its task and library."""


def available(task: Task | None = "classification") -> list[str]:
    """The model names of ``task`` (classification by default), sorted; ``None``: every name.

    Classification and regression share the same backbones (``task="regression"`` in
    :func:`create`); segmentation and detection names are :data:`DENSE_MODELS`.

    Example:
        >>> "vit_tiny" in available()
        True
        >>> available("segmentation")
        ['unet', 'unet3d']
        >>> len(available(None)) == len(available()) + len(available("detection")) + 2
        True
    """
    if task is None:
        return sorted([*MODELS, *DENSE_MODELS])
    if task not in TASKS:
        raise ModelError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if task in ("classification", "regression"):
        return sorted(MODELS)
    return sorted(name for name, spec in DENSE_MODELS.items() if spec.task == task)


def task_of(name: str) -> Task:
    """The task a model name is built for (classification backbones also do regression).

    Example:
        >>> task_of("unet3d"), task_of("resnet18")
        ('segmentation', 'classification')
    """
    dense = DENSE_MODELS.get(name)
    if dense is not None:
        return dense.task
    get_spec(name)
    return "classification"


def _unknown(name: str) -> ModelError:
    names = available(None)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.7)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    return ModelError(f"unknown model {name!r}{hint} (available: {', '.join(names)})")


def get_spec(name: str) -> ModelSpec:
    """The classification entry for ``name``; an unknown name is a :class:`ModelError`.

    The error suggests close names; a segmentation or detection name says that it is one.

    Example:
        >>> get_spec("vit-tiny")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        covid19_images.errors.ModelError: unknown model 'vit-tiny'; did you mean: vit_tiny? ...
        >>> get_spec("unet")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        covid19_images.errors.ModelError: 'unet' is a segmentation model, not a classification ...
    """
    spec = MODELS.get(name)
    if spec is None:
        dense = DENSE_MODELS.get(name)
        if dense is not None:
            raise ModelError(
                f"{name!r} is a {dense.task} model, not a classification one (classification "
                f"models: {', '.join(available())})"
            )
        raise _unknown(name)
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


def _require_dense(task: str) -> None:
    """Import what a dense model needs, or raise :class:`ModelError` naming the extra."""
    needed, install = (
        ("monai", MONAI_INSTALL) if task == "segmentation" else ("torchvision", TORCH_INSTALL)
    )
    for module in ("torch", needed):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ModelError(
                f"{task} models need torch and {needed}, and {error.name or module} is not "
                f"installed: {install}"
            ) from error


def create(
    name: str,
    num_classes: int,
    in_chans: int = 1,
    pretrained: bool | str | os.PathLike[str] = False,
    *,
    task: Task | None = None,
    image_size: int | None = None,
) -> torch.nn.Module:
    """A ``name`` model with ``in_chans`` input channels and ``num_classes`` outputs.

    Args:
        name: one of :func:`available` (of any task).
        num_classes: classification: the number of logits; regression: the number of scores;
            segmentation: output channels, background included (2 for lesion against the rest);
            detection: classes, background included (torchvision's convention).
        in_chans: input channels; 1 (grayscale) by default.
        pretrained: ``False``; ``True`` for the library's own weights where they exist (timm's
            ImageNet weights, first conv summed over RGB for one channel; torchvision's COCO
            Mask R-CNN or ImageNet MobileNetV3; downloaded by the library, needs internet; the
            U-Nets have none); a local ``.safetensors`` / ``.pt`` / ``.pth`` state dict (a
            checkpoint with another head keeps its body and gets a fresh head; one with 3 input
            channels is adapted to ``in_chans``); or ``"xrv:<weights>"`` for a TorchXRayVision
            DenseNet-121 (``densenet121`` only, see :mod:`._xrv`).
        task: ``None`` for the name's own task (:func:`task_of`); ``"regression"`` turns a
            classification backbone into a regression model: the same linear head of
            ``num_classes`` outputs, read as unbounded scores (loss: MSE or Huber).
        image_size: detection only: the side the Mask R-CNN transform resizes images to (its
            ``min_size`` and ``max_size``); default 800/1333 (torchvision's) for ``maskrcnn``,
            256 for ``maskrcnn_light``.

    Raises:
        ModelError: an unknown name or task, a task the name does not do, torch, timm, MONAI or
            torchvision missing, or weights that do not fit.

    Example:
        >>> model = create("resnet18", num_classes=3)  # doctest: +SKIP
        >>> severity = create("densenet121", 2, task="regression")  # doctest: +SKIP
        >>> unet = create("unet", 2)  # doctest: +SKIP
        >>> create("unet", 2, task="regression")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        covid19_images.errors.ModelError: 'unet' is a segmentation model, not a regression one ...
    """
    own = task_of(name) if name in DENSE_MODELS or name in MODELS else None
    if own is None:
        raise _unknown(name)
    if task is not None and task not in TASKS:
        raise ModelError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    wanted = task or own
    if wanted != own and not (own == "classification" and wanted == "regression"):
        raise ModelError(
            f"{name!r} is a {own} model, not a {wanted} one ({wanted} models: "
            f"{', '.join(available(wanted))})"
        )
    if image_size is not None and own != "detection":
        raise ModelError(f"image_size applies to detection models only, not to {name!r}")
    if own in ("segmentation", "detection"):
        _require_dense(own)
        from covid19_images.models import dense

        return dense.create(name, num_classes, in_chans, pretrained, image_size=image_size)
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
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    in_chans: int,
    what: str,
    *,
    heads: tuple[str, ...] | None = None,
    first_conv: str | None = None,
) -> None:
    """Load ``state`` into ``model``: every key must fit, except the head and first conv.

    A head of another shape, or none, is left out with a warning and keeps its fresh
    initialisation; a 3-channel 2-D first conv is adapted to ``in_chans`` with
    :func:`timm.models.adapt_input_conv` (the sum over RGB for one channel). Any other missing,
    unexpected or misshapen key is one :class:`ModelError` naming the first few.

    Args:
        model: the model built without weights.
        state: the checkpoint's tensors (:func:`read_state_dict`).
        in_chans: the model's input channels.
        what: names the checkpoint and model in messages.
        heads: key prefixes of the head (``"classifier."``); default timm's
            ``pretrained_cfg["classifier"]``.
        first_conv: the first convolution's module name; default timm's
            ``pretrained_cfg["first_conv"]``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 2, 1))
        >>> load_checkpoint(net, net.state_dict(), 1, "itself", heads=("1.",))
    """
    adapt_input_conv = require_timm().models.adapt_input_conv

    own = model.state_dict()
    state = dict(state)
    if first_conv is None:
        first_conv = getattr(model, "pretrained_cfg", {}).get("first_conv")
    conv_key = f"{first_conv}.weight" if isinstance(first_conv, str) else None
    notes: list[str] = []
    if conv_key in state and conv_key in own:
        saved, wanted = state[conv_key], own[conv_key]
        if saved.ndim == 4 and saved.shape[1] == 3 and wanted.shape[1] == in_chans != 3:
            state[conv_key] = adapt_input_conv(in_chans, saved)
            notes.append(f"first conv {conv_key!r} adapted from 3 input channels to {in_chans}")

    if heads is None:
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

    for key in own:  # frozen batch norm (torchvision, pretrained backbones) keeps no counter
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = own[key]
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
