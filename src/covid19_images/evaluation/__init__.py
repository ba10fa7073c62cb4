"""Model evaluation: metrics that tell the truth (numpy, pandas and scikit-learn; no torch).

- :func:`evaluate_predictions` scores a run's predictions and writes ``metrics.json``,
  ``report.md`` and figures (:mod:`covid19_images.evaluation.report`);
- :func:`external_overlap` finds what an external evaluation must leave out
  (:mod:`covid19_images.evaluation.external`);
- :mod:`covid19_images.evaluation.metrics` and :mod:`covid19_images.evaluation.calibration` hold the
  metric primitives;
- dense tasks: :func:`segmentation_scores`, :func:`ct_lesion_scores` and
  :func:`summarize_segmentation` (Dice, IoU, HD95 by MONAI, imported when called),
  :func:`coco_map` and :func:`summarize_detection` (COCO mAP by pycocotools, imported when
  called), :func:`regression_scores` and :func:`summarize_regression` (MAE, R², Pearson r), all
  with patient-bootstrap intervals (:mod:`covid19_images.evaluation.summary`).

Matplotlib is imported only when figures are drawn.
"""

from covid19_images.evaluation.detection import coco_map, summarize_detection
from covid19_images.evaluation.external import Overlap, external_overlap
from covid19_images.evaluation.regression import regression_scores, summarize_regression
from covid19_images.evaluation.report import (
    SCHEMA_VERSION,
    evaluate_predictions,
    headline,
    render_report,
    summary_row,
)
from covid19_images.evaluation.segmentation import (
    ct_lesion_scores,
    segmentation_scores,
    summarize_segmentation,
)

__all__ = [
    "SCHEMA_VERSION",
    "Overlap",
    "coco_map",
    "ct_lesion_scores",
    "evaluate_predictions",
    "external_overlap",
    "headline",
    "regression_scores",
    "render_report",
    "segmentation_scores",
    "summarize_detection",
    "summarize_regression",
    "summarize_segmentation",
    "summary_row",
]
