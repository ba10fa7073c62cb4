"""Cross-source deduplication: exact pixel copies and confirmed near copies, before splitting."""

from covid19_images.dedup.clusters import DedupResult, deduplicate, richness
from covid19_images.dedup.index import candidate_pairs
from covid19_images.dedup.near import (
    DEFAULT_MAX_HAMMING,
    DEFAULT_MIN_ALIGNED,
    DEFAULT_MIN_CORRELATION,
    DEFAULT_MIN_DETAIL,
    DuplicateReport,
    Pair,
    find_duplicates,
    hamming,
    thumbnail_correlation,
)

__all__ = [
    "DEFAULT_MAX_HAMMING",
    "DEFAULT_MIN_ALIGNED",
    "DEFAULT_MIN_CORRELATION",
    "DEFAULT_MIN_DETAIL",
    "DedupResult",
    "DuplicateReport",
    "Pair",
    "candidate_pairs",
    "deduplicate",
    "find_duplicates",
    "hamming",
    "richness",
    "thumbnail_correlation",
]
