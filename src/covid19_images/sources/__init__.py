"""Ingest: one small adapter per source turns upstream rows and files into records.

Importing this package registers every adapter.
"""

import importlib
import pkgutil

from covid19_images.sources.base import (
    Adapter,
    FileIndex,
    FolderAdapter,
    parse_age,
    parse_sex,
    read_table,
)
from covid19_images.sources.crosswalk import Crosswalk
from covid19_images.sources.registry import (
    IngestResult,
    adapter_ids,
    get_adapter,
    ingest,
    register,
)

_SHARED = {"base", "crosswalk", "registry"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _SHARED:  # every other module is one source's adapter
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "Adapter",
    "Crosswalk",
    "FileIndex",
    "FolderAdapter",
    "IngestResult",
    "adapter_ids",
    "get_adapter",
    "ingest",
    "parse_age",
    "parse_sex",
    "read_table",
    "register",
]
