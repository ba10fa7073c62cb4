"""Mask R-CNN builders (torchvision) and the one-channel transform; see :mod:`.dense`.

This module imports torch and torchvision; :mod:`covid19_images.models.dense` imports it only
when a Mask R-CNN is built.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models import (  # type: ignore[import-untyped]
    MobileNet_V3_Large_Weights,
    mobilenet_v3_large,
)
from torchvision.models.detection import (  # type: ignore[import-untyped]
    MaskRCNN,
    MaskRCNN_ResNet50_FPN_V2_Weights,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator  # type: ignore[import-untyped]
from torchvision.models.detection.backbone_utils import BackboneWithFPN  # type: ignore[import-untyped]
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor  # type: ignore[import-untyped]
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor  # type: ignore[import-untyped]
from torchvision.models.detection.transform import GeneralizedRCNNTransform  # type: ignore[import-untyped]
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign  # type: ignore[import-untyped]
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool  # type: ignore[import-untyped]

LIGHT_FROZEN_BLOCKS = 7
"""With ImageNet weights, MobileNetV3 ``features[:7]`` (strides 2 to 8) stay frozen: the three
trainable stages torchvision's own MobileNet detectors default to."""


class OneChannelTransform(GeneralizedRCNNTransform):  # type: ignore[misc]
    """torchvision's detection transform for one-channel images: the grey channel is repeated
    three times before the (ImageNet) normalisation, so the network sees a grey RGB image.

    Images with another number of channels are an error, not silently accepted.
    """

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """Repeat the one channel of ``image`` (``1 x H x W``) to three, then normalise."""
        if image.shape[0] != 1:
            raise ValueError(
                f"this Mask R-CNN takes one-channel images (1 x H x W), got {tuple(image.shape)}"
            )
        normalised: torch.Tensor = super().normalize(image.expand(3, -1, -1))
        return normalised


def _one_channel(model: Any, in_chans: int) -> None:
    if in_chans == 3:
        return
    old = model.transform
    model.transform = OneChannelTransform(
        old.min_size,
        old.max_size,
        old.image_mean,
        old.image_std,
        size_divisible=old.size_divisible,
        fixed_size=old.fixed_size,
    )


def maskrcnn(
    num_classes: int, in_chans: int, pretrained: bool, sizes: tuple[int, int]
) -> nn.Module:
    """torchvision's ``maskrcnn_resnet50_fpn_v2``; COCO weights with new predictors if asked."""
    min_size, max_size = sizes
    if pretrained:
        model: Any = maskrcnn_resnet50_fpn_v2(
            weights=MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1, min_size=min_size, max_size=max_size
        )
        heads = model.roi_heads
        heads.box_predictor = FastRCNNPredictor(
            heads.box_predictor.cls_score.in_features, num_classes
        )
        conv = heads.mask_predictor.conv5_mask
        heads.mask_predictor = MaskRCNNPredictor(conv.in_channels, conv.out_channels, num_classes)
    else:
        model = maskrcnn_resnet50_fpn_v2(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            min_size=min_size,
            max_size=max_size,
        )
    _one_channel(model, in_chans)
    built: nn.Module = model
    return built


def maskrcnn_light(
    num_classes: int,
    in_chans: int,
    pretrained: bool,
    image_size: int,
    return_layers: dict[str, str],
    anchor_sizes: tuple[tuple[int, ...], ...],
    aspect_ratios: tuple[float, ...],
) -> nn.Module:
    """A Mask R-CNN on a MobileNetV3-Large FPN with one anchor set per feature map."""
    weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1 if pretrained else None
    norm_layer = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    features: Any = mobilenet_v3_large(weights=weights, norm_layer=norm_layer).features
    if pretrained:
        for block in features[:LIGHT_FROZEN_BLOCKS]:
            for parameter in block.parameters():
                parameter.requires_grad_(False)
    in_channels = [features[int(index)].out_channels for index in return_layers]
    backbone = BackboneWithFPN(
        features, return_layers, in_channels, 256, extra_blocks=LastLevelMaxPool()
    )
    names = list(return_layers.values())
    anchors = AnchorGenerator(anchor_sizes, (aspect_ratios,) * len(anchor_sizes))
    model: Any = MaskRCNN(
        backbone,
        num_classes=num_classes,
        min_size=image_size,
        max_size=image_size,
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
        mask_roi_pool=MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2),
    )
    _one_channel(model, in_chans)
    built: nn.Module = model
    return built
