"""TorchXRayVision DenseNet-121 weights with a new classification head (``pretrained="xrv:..."``).

TorchXRayVision's DenseNet-121 models were trained on chest X-rays: one channel, 224 x 224 px,
with their own normalisation: pixel values scaled to [-1024, 1024]
(``torchxrayvision.datasets.normalize(image, 255)`` for 8-bit images), not ImageNet's mean and
standard deviation. Their forward pass resizes other sizes to 224 px and warns about inputs
outside that range, so feed them images prepared that way.

Nothing is downloaded here: the weights file must already be in TorchXRayVision's cache
(``~/.torchxrayvision/models_data/``, the folder ``torchxrayvision.utils.get_cache_dir()``
names), put there by running TorchXRayVision once with internet or by copying the file. The file
is a pickled model that TorchXRayVision loads itself (``torch.load(weights_only=False)``): use
only files from TorchXRayVision's releases.

This module imports torch; :mod:`covid19_images.models.registry` imports it only when asked.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from covid19_images.errors import ModelError

CACHE_HINT = "~/.torchxrayvision/models_data/"


class XRVClassifier(nn.Module):
    """A TorchXRayVision DenseNet's features (``features2``) followed by a new linear head."""

    def __init__(self, backbone: Any, num_classes: int) -> None:
        super().__init__()
        features = backbone.classifier.in_features
        backbone.classifier = nn.Identity()  # unused: features2 stops before it
        self.backbone: Any = backbone
        self.head = nn.Linear(int(features), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.backbone.features2(x)
        logits: torch.Tensor = self.head(features)
        return logits


def _require_xrv() -> ModuleType:
    try:
        return importlib.import_module("torchxrayvision")
    except ImportError as error:
        raise ModelError(
            "pretrained='xrv:...' needs TorchXRayVision and its cached weights: "
            "`pip install torchxrayvision`, then run `torchxrayvision.models.DenseNet("
            "weights=...)` once with internet, or copy the weights file to "
            f"{CACHE_HINT}"
        ) from error


def weights_file(weights: str) -> Path:
    """Where TorchXRayVision keeps (or would download) the file of ``weights``."""
    xrv = _require_xrv()
    urls: dict[str, dict[str, object]] = xrv.models.model_urls
    choices = sorted(key for key in urls if key.startswith("densenet121"))
    if weights not in choices:
        raise ModelError(
            f"unknown TorchXRayVision DenseNet weights {weights!r}; choose one of: "
            + ", ".join(f"xrv:{choice}" for choice in choices)
        )
    folder = Path(str(xrv.utils.get_cache_dir())).expanduser()
    return folder / Path(str(urls[weights]["weights_url"])).name


def create(weights: str, num_classes: int, in_chans: int) -> nn.Module:
    """TorchXRayVision's DenseNet-121 ``weights`` with a fresh head of ``num_classes``."""
    if in_chans != 1:
        raise ModelError(f"TorchXRayVision models take one input channel, not in_chans={in_chans}")
    path = weights_file(weights)
    if not path.is_file():
        xrv = _require_xrv()
        url = xrv.models.model_urls[weights]["weights_url"]
        raise ModelError(
            f"TorchXRayVision weights {weights!r} are not cached at {path} (nothing is "
            "downloaded here): run `torchxrayvision.models.DenseNet(weights="
            f"{weights!r})` once with internet (after `pip install torchxrayvision`), or "
            f"download {url} and copy it to {path}"
        )
    xrv = _require_xrv()
    backbone = xrv.models.DenseNet(weights=weights, cache_dir=str(path.parent))
    model = XRVClassifier(backbone, num_classes)
    model.train()
    return model
