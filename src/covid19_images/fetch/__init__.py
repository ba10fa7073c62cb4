"""Layer 1: raw upstream bytes, downloaded and verified, taken from a user's download, or read
in place from a mirror."""

from covid19_images.fetch.archive import (
    ArchiveTooLargeError,
    ExtractionLimits,
    MemberSizeMismatchError,
    extract_archive,
    is_archive,
)
from covid19_images.fetch.download import ResumableDownloader, download_file
from covid19_images.fetch.ensure import FetchEvent, SourcesReport, ensure_sources
from covid19_images.fetch.fetcher import FetchResult, fetch_source, manual_guidance
from covid19_images.fetch.layout import find_layout_root, missing_paths
from covid19_images.fetch.store import Located, data_root, locate, mirror_root, raw_dir

__all__ = [
    "ArchiveTooLargeError",
    "ExtractionLimits",
    "FetchEvent",
    "FetchResult",
    "Located",
    "MemberSizeMismatchError",
    "ResumableDownloader",
    "SourcesReport",
    "data_root",
    "download_file",
    "ensure_sources",
    "extract_archive",
    "fetch_source",
    "find_layout_root",
    "is_archive",
    "locate",
    "manual_guidance",
    "mirror_root",
    "missing_paths",
    "raw_dir",
]
