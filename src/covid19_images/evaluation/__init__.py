"""Model evaluation: metrics that tell the truth (numpy, pandas and scikit-learn; no torch).

- :func:`evaluate_predictions` scores a run's predictions and writes ``metrics.json``,
  ``report.md`` and figures (:mod:`covid19_images.evaluation.report`);
- :func:`external_overlap` finds what an external evaluation must leave out
  (:mod:`covid19_images.evaluation.external`);
- :mod:`covid19_images.evaluation.metrics` and :mod:`covid19_images.evaluation.calibration` hold the
  metric primitives.

Matplotlib is imported only when figures are drawn.
"""

from covid19_images.evaluation.external import Overlap, external_overlap
from covid19_images.evaluation.report import (
    SCHEMA_VERSION,
    evaluate_predictions,
    headline,
    render_report,
    summary_row,
)

__all__ = [
    "SCHEMA_VERSION",
    "Overlap",
    "evaluate_predictions",
    "external_overlap",
    "headline",
    "render_report",
    "summary_row",
]
