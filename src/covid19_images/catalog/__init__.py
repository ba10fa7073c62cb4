"""The catalog: every known public COVID-19 imaging source, described as validated data."""

from covid19_images.catalog.registry import Catalog, get_source, load_catalog, read_entry
from covid19_images.catalog.schema import (
    Access,
    Citation,
    Count,
    Download,
    Layout,
    License,
    Manual,
    Modality,
    Overlap,
    SourceEntry,
    Task,
)

__all__ = [
    "Access",
    "Catalog",
    "Citation",
    "Count",
    "Download",
    "Layout",
    "License",
    "Manual",
    "Modality",
    "Overlap",
    "SourceEntry",
    "Task",
    "get_source",
    "load_catalog",
    "read_entry",
]
