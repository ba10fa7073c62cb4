"""covid19-images: trustworthy, ready-to-train COVID-19 chest X-ray and CT datasets.

Research use only. These data and the models trained on them are for research: a positive CT can
support COVID-19, a negative scan rules nothing out, and nothing here is a diagnostic device.

Example:
    >>> import covid19_images
    >>> entry = covid19_images.get_source("ieee8023")
    >>> entry.access
    'auto'
"""

from pathlib import Path
from typing import Any

from covid19_images.catalog import Catalog, SourceEntry, get_source, load_catalog

__version__ = "0.1.0"

RESEARCH_USE_NOTICE = (
    "Research use only: these data and models are for research. A positive CT can support "
    "COVID-19, a negative scan rules nothing out, and nothing here is a diagnostic device."
)


def load(
    dataset: Path | str,
    split: str = "train",
    framework: str = "torch",
    size: int | None = None,
    augment: str | None = None,
    **options: Any,
) -> Any:
    """One split of an assembled dataset as a framework's object, e.g. a PyTorch ``Dataset``.

    See :func:`covid19_images.loaders.api.load`; frameworks are imported only here, when asked.

    Example:
        >>> train = load("datasets/xray-covid", "train", framework="torch")  # doctest: +SKIP
    """
    from covid19_images.loaders.api import load as load_split

    return load_split(dataset, split, framework, size, augment, **options)


__all__ = [
    "RESEARCH_USE_NOTICE",
    "Catalog",
    "SourceEntry",
    "__version__",
    "get_source",
    "load",
    "load_catalog",
]
