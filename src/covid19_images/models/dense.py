"""Segmentation and detection models: U-Nets (MONAI) and Mask R-CNN (torchvision).

Importing this module does not import torch; :func:`create` and :func:`sliding_window_predict`
do. :func:`covid19_images.models.create` calls :func:`create` for these names.

- ``unet``, ``unet3d``: MONAI's ``BasicUNet`` (the classic U-Net: two 3x3 convolutions with
  instance norm and LeakyReLU per level, four max-pool levels, features 32, 32, 64, 128, 256),
  2-D for radiographs and CT slices, 3-D for CT volumes; ``in_chans`` input channels and
  ``num_classes`` output channels of logits, background included (softmax over them, argmax for
  the label map). Sides of at least 32 px train (the deepest level, a sixteenth of the side,
  must hold more than one voxel for instance norm); multiples of 16 keep the levels aligned, and
  other sides are padded inside MONAI's up-sampling blocks. MONAI publishes no pretrained
  weights for it, so ``pretrained=True`` is refused; a local checkpoint loads.
- ``maskrcnn``: torchvision's ``maskrcnn_resnet50_fpn_v2``; ``pretrained=True`` loads
  torchvision's COCO weights and replaces the box and mask predictors with ``num_classes``.
- ``maskrcnn_light``: a Mask R-CNN on a MobileNetV3-Large FPN (:data:`LIGHT_RETURN_LAYERS`, one
  anchor set per feature map: :data:`LIGHT_ANCHOR_SIZES`), resizing to 256 px by default; it
  trains on a CPU. ``pretrained=True`` loads ImageNet MobileNetV3 weights into the backbone
  (frozen batch norm, the first blocks frozen as torchvision does); its heads start fresh.

One channel in Mask R-CNN: torchvision's transform normalises three channels with ImageNet's
mean and standard deviation, and its backbones take three. A one-channel model
(``in_chans=1``) repeats the grey channel three times inside the transform
(:class:`covid19_images.models._rcnn.OneChannelTransform`), before that normalisation: the
network is torchvision's own, unchanged, so its state dict loads torchvision checkpoints and its
pretrained weights see the grey image exactly as they saw a grey RGB photograph.

Example:
    >>> from covid19_images.models import dense
    >>> dense.LIGHT_ANCHOR_SIZES[0]
    (16, 32)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from covid19_images.errors import ModelError

if TYPE_CHECKING:
    import torch

UNET_FEATURES: Final[tuple[int, ...]] = (32, 32, 64, 128, 256, 32)
"""BasicUNet's features per level (MONAI's default): five down-sampling levels, four poolings."""

MASKRCNN_SIZES: Final[tuple[int, int]] = (800, 1333)
"""torchvision's ``min_size``/``max_size`` for ``maskrcnn`` unless ``image_size`` is given."""

LIGHT_IMAGE_SIZE: Final = 256
"""The side ``maskrcnn_light`` resizes images to unless ``image_size`` is given."""

LIGHT_RETURN_LAYERS: Final[dict[str, str]] = {"6": "0", "12": "1", "16": "2"}
"""MobileNetV3-Large ``features`` blocks feeding the FPN: the last block at strides 8, 16, 32
(40, 112 and 960 channels); the FPN adds a max-pooled level at stride 64."""

LIGHT_ANCHOR_SIZES: Final[tuple[tuple[int, ...], ...]] = ((16, 32), (32, 64), (64, 128), (128, 256))
"""Anchor sides (pixels of the resized image) per feature map, strides 8, 16, 32 and 64: two
and four times the stride, so at 256 px they cover 16 px lesions up to a whole lung field."""

LIGHT_ASPECT_RATIOS: Final[tuple[float, ...]] = (0.5, 1.0, 2.0)
"""Height-to-width ratios of every anchor size (tall lungs, wide lesions)."""

HEADS: Final[dict[str, tuple[str, ...]]] = {
    "unet": ("final_conv.",),
    "unet3d": ("final_conv.",),
    "maskrcnn": ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits."),
    "maskrcnn_light": ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits."),
}
"""State-dict prefixes that depend on ``num_classes``: a checkpoint with other classes loads all
but these, which start fresh (with a warning)."""

FIRST_CONV: Final[dict[str, str | None]] = {
    "unet": "conv_0.conv_0.conv",
    "unet3d": None,  # 3-D kernels: no RGB checkpoint to adapt
    "maskrcnn": None,  # the network always takes three channels (see the module text)
    "maskrcnn_light": None,
}
"""The first convolution whose 3-channel checkpoint weights are summed into ``in_chans``."""


def create(
    name: str,
    num_classes: int,
    in_chans: int = 1,
    pretrained: bool | str | os.PathLike[str] = False,
    *,
    image_size: int | None = None,
) -> torch.nn.Module:
    """The segmentation or detection model ``name`` (see the module text for each).

    Use :func:`covid19_images.models.create`, which checks the name and the libraries first.

    Args:
        name: ``unet``, ``unet3d``, ``maskrcnn`` or ``maskrcnn_light``.
        num_classes: output channels (U-Nets) or classes (Mask R-CNN), background included.
        in_chans: input channels (1 or 3 for Mask R-CNN).
        pretrained: ``False``, ``True`` (the library's weights, downloaded; none for U-Nets),
            or a local ``.safetensors``/``.pt``/``.pth`` state dict.
        image_size: Mask R-CNN's resize side (``min_size`` = ``max_size``).

    Example:
        >>> model = create("unet", 2)  # doctest: +SKIP
    """
    from covid19_images.models.registry import load_checkpoint, read_state_dict

    if num_classes < 2:
        raise ModelError(f"{name} needs num_classes >= 2 (background included), got {num_classes}")
    if in_chans < 1:
        raise ModelError(f"in_chans must be at least 1, got {in_chans}")
    if image_size is not None and image_size < 32:
        raise ModelError(f"image_size must be at least 32 px, got {image_size}")
    path: Path | None = None
    if not isinstance(pretrained, bool):
        path = Path(pretrained)
        pretrained = False
    if name in ("unet", "unet3d"):
        if pretrained:
            raise ModelError(
                f"MONAI publishes no pretrained weights for {name} (BasicUNet): use "
                "pretrained=False, or a checkpoint file (.safetensors, .pt or .pth)"
            )
        model = _unet(3 if name == "unet3d" else 2, num_classes, in_chans)
    elif name in ("maskrcnn", "maskrcnn_light"):
        if in_chans not in (1, 3):
            raise ModelError(f"{name} takes 1 or 3 input channels, not in_chans={in_chans}")
        from covid19_images.models import _rcnn

        if name == "maskrcnn":
            sizes = (image_size, image_size) if image_size else MASKRCNN_SIZES
            model = _rcnn.maskrcnn(num_classes, in_chans, pretrained, sizes)
        else:
            model = _rcnn.maskrcnn_light(
                num_classes,
                in_chans,
                pretrained,
                image_size or LIGHT_IMAGE_SIZE,
                LIGHT_RETURN_LAYERS,
                LIGHT_ANCHOR_SIZES,
                LIGHT_ASPECT_RATIOS,
            )
    else:
        raise ModelError(f"{name!r} is not a segmentation or detection model")
    if path is not None:
        load_checkpoint(
            model,
            read_state_dict(path),
            in_chans,
            f"{path} into {name}",
            heads=HEADS[name],
            first_conv=FIRST_CONV[name],
        )
    return model


def _unet(spatial_dims: int, num_classes: int, in_chans: int) -> torch.nn.Module:
    import warnings

    with warnings.catch_warnings():  # MONAI's import warns about torch APIs it probes
        warnings.simplefilter("ignore")
        from monai.networks.nets import BasicUNet

    model: torch.nn.Module = BasicUNet(
        spatial_dims=spatial_dims,
        in_channels=in_chans,
        out_channels=num_classes,
        features=UNET_FEATURES,
    )
    return model


def sliding_window_predict(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    roi_size: int | Sequence[int],
    *,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    mode: str = "gaussian",
) -> torch.Tensor:
    """The logits of ``model`` on whole images or volumes, window by window (MONAI).

    :func:`monai.inferers.sliding_window_inference` runs ``model`` on windows of ``roi_size``
    that overlap by ``overlap`` (a fraction of the window), ``sw_batch_size`` windows at a time,
    and blends their outputs with ``mode`` weights (``"gaussian"``: a window's centre counts
    more than its edges; ``"constant"``: a plain average). Volumes of any size are covered,
    including sides smaller than the window (padded) or not multiples of 16. The windows run on
    the model's device; the result is stitched on the input's device, so a CT volume can stay
    in host memory while the windows run on a GPU. The model runs in eval mode without
    gradients, and gets its previous mode back.

    Args:
        model: a segmentation model (``unet3d`` for CT volumes, ``unet`` for large images).
        inputs: ``N x C x D x H x W`` (or ``N x C x H x W``), float.
        roi_size: the window: one side for every axis, or one per axis (the training patch size).
        sw_batch_size: windows per forward pass.
        overlap: overlap of neighbouring windows, in [0, 1).
        mode: ``"gaussian"`` or ``"constant"``.

    Returns:
        ``N x num_classes x`` the input's spatial shape: logits (argmax over dim 1 for labels).

    Example:
        >>> from covid19_images import models  # doctest: +SKIP
        >>> net = models.create("unet3d", 2)  # doctest: +SKIP
        >>> logits = sliding_window_predict(net, volume, 96)  # doctest: +SKIP
        >>> labels = logits.argmax(dim=1)  # doctest: +SKIP
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from monai.inferers import sliding_window_inference

    dims = inputs.ndim - 2
    if dims not in (2, 3):
        raise ValueError(f"inputs must be N x C x H x W or N x C x D x H x W, got {inputs.shape}")
    roi = (roi_size,) * dims if isinstance(roi_size, int) else tuple(roi_size)
    if len(roi) != dims:
        raise ValueError(f"roi_size {roi_size} does not match {dims}-D inputs")
    parameter = next(model.parameters(), None)
    window_device = parameter.device if parameter is not None else inputs.device
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output: Any = sliding_window_inference(
                inputs,
                roi,
                sw_batch_size,
                model,
                overlap=overlap,
                mode=mode,
                sw_device=window_device,
                device=inputs.device,
            )
    finally:
        model.train(training)
    result: torch.Tensor = output
    return result
