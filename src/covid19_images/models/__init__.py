"""Classification models for the assembled datasets, one name each (research use only).

``create(name, num_classes)`` builds a one-channel model, by default with timm; ``available()``
lists the names. Importing this package does not import torch: :func:`create` does.

Example:
    >>> from covid19_images import models
    >>> "resnet18" in models.available()
    True
"""

from covid19_images.models.registry import MODELS, ModelSpec, available, create

__all__ = ["MODELS", "ModelSpec", "available", "create"]
