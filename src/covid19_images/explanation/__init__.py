"""Grad-CAM explanations of the registry models: maps, overlays, montages, energy in the lungs.

``grad_cam(model, name, images)`` computes the maps with pytorch-grad-cam at the right layer of
each registry model (:data:`CAM_TARGETS`, the ViT token grid included); :func:`overlay`,
:func:`save_overlays` and :func:`class_montages` draw them; :func:`load_masks`,
:func:`energy_inside` and :func:`energy_table` measure how much of each map lies inside the
lungs where a lung mask exists. Research use only: a map shows where a model's evidence lies,
not whether it is right.

Importing this package does not import torch: :func:`grad_cam` does.

Example:
    >>> from covid19_images import explanation
    >>> explanation.CAM_TARGETS["densenet121"].path
    'features.norm5'
"""

from covid19_images.explanation.energy import (
    ExplainError,
    energy_inside,
    energy_table,
    load_masks,
    mask_area,
)
from covid19_images.explanation.figures import (
    caption,
    class_montages,
    montage,
    overlay,
    save_overlays,
)
from covid19_images.explanation.gradcam import (
    CAM_TARGETS,
    CamTarget,
    cam_target,
    grad_cam,
    grad_cam_with_logits,
    reshape_transform,
    target_layers,
    token_grid,
)

__all__ = [
    "CAM_TARGETS",
    "CamTarget",
    "ExplainError",
    "cam_target",
    "caption",
    "class_montages",
    "energy_inside",
    "energy_table",
    "grad_cam",
    "grad_cam_with_logits",
    "load_masks",
    "mask_area",
    "montage",
    "overlay",
    "reshape_transform",
    "save_overlays",
    "target_layers",
    "token_grid",
]
