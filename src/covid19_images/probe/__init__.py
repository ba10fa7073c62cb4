"""Shortcut probes: what a model could learn from a dataset instead of the disease.

- :func:`source_predictability`: a small model predicts each image's source from its pixels;
  balanced accuracy against chance, and what the source alone gives for the label.
- :func:`demographics`: age and sex per class, their association with the label and the AUROC
  of age (and of being a child) alone.
- :func:`weak_model`: logistic regression on 32 x 32 px thumbnails, a model too weak to see
  disease, scored like a real one.
- :func:`lungs_removed`: a model's AUROC on test images with the lung fields blacked out.
- :func:`probe` runs them all; :func:`write_probe` writes ``probe.json``, ``probe.md`` and a
  section of ``datasheet.md`` into the dataset folder.

Only numpy, pandas, scipy, scikit-learn and Pillow: no torch. A model enters as a ``predict``
callable (uint8 images in, class probabilities out).
"""

from covid19_images.probe.demographics import (
    Association,
    ClassDemographics,
    Demographics,
    demographics,
)
from covid19_images.probe.lungs import (
    LUNG_ELLIPSES,
    LUNG_MASK_SOURCES,
    LungsRemoved,
    ProbeError,
    draw_lung_region,
    lung_region,
    lungs_removed,
)
from covid19_images.probe.report import (
    ProbeResult,
    probe,
    replace_section,
    write_files,
    write_probe,
)
from covid19_images.probe.source import SourceProbe, source_predictability
from covid19_images.probe.weak import WeakModel, weak_model

__all__ = [
    "LUNG_ELLIPSES",
    "LUNG_MASK_SOURCES",
    "Association",
    "ClassDemographics",
    "Demographics",
    "LungsRemoved",
    "ProbeError",
    "ProbeResult",
    "SourceProbe",
    "WeakModel",
    "demographics",
    "draw_lung_region",
    "lung_region",
    "lungs_removed",
    "probe",
    "replace_section",
    "source_predictability",
    "weak_model",
    "write_files",
    "write_probe",
]
