"""covid19-images: trustworthy, ready-to-train COVID-19 chest X-ray and CT datasets.

Research use only. These data and the models trained on them are for research: a positive CT can
support COVID-19, a negative scan rules nothing out, and nothing here is a diagnostic device.

Example:
    >>> import covid19_images
    >>> entry = covid19_images.get_source("ieee8023")
    >>> entry.access
    'auto'
"""

from covid19_images.catalog import Catalog, SourceEntry, get_source, load_catalog

__version__ = "0.1.0"

RESEARCH_USE_NOTICE = (
    "Research use only: these data and models are for research. A positive CT can support "
    "COVID-19, a negative scan rules nothing out, and nothing here is a diagnostic device."
)

__all__ = [
    "RESEARCH_USE_NOTICE",
    "Catalog",
    "SourceEntry",
    "__version__",
    "get_source",
    "load_catalog",
]
