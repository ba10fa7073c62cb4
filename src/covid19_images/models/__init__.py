"""Models for the assembled datasets, one name each (research use only).

``create(name, num_classes)`` builds a one-channel model: classification and regression with
timm, segmentation with MONAI (``unet``, ``unet3d``), detection with torchvision
(``maskrcnn``, ``maskrcnn_light``). ``available(task)`` lists the names of a task
(classification by default). Importing this package does not import torch: :func:`create` and
:func:`sliding_window_predict` do.

Example:
    >>> from covid19_images import models
    >>> "resnet18" in models.available()
    True
    >>> models.task_of("maskrcnn_light")
    'detection'
"""

from covid19_images.models.dense import sliding_window_predict
from covid19_images.models.registry import (
    DENSE_MODELS,
    MODELS,
    TASKS,
    DenseSpec,
    ModelSpec,
    Task,
    available,
    create,
    task_of,
)

__all__ = [
    "DENSE_MODELS",
    "MODELS",
    "TASKS",
    "DenseSpec",
    "ModelSpec",
    "Task",
    "available",
    "create",
    "sliding_window_predict",
    "task_of",
]
