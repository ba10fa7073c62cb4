"""Adapter registry and the ingest entry point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from covid19_images.catalog import load_catalog
from covid19_images.errors import Covid19ImagesError, SourceNotAvailableError
from covid19_images.fetch import locate, manual_guidance
from covid19_images.problems import ProblemLog
from covid19_images.records import Record
from covid19_images.sources.base import Adapter

_ADAPTERS: dict[str, type[Adapter]] = {}


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make an adapter available under its ``source`` id."""
    load_catalog().get(cls.source)  # an adapter must describe a catalog source
    _ADAPTERS[cls.source] = cls
    return cls


def adapter_ids() -> list[str]:
    """Ids of the sources that have an adapter."""
    return sorted(_ADAPTERS)


def get_adapter(source: str) -> Adapter:
    """The adapter of a source id, alias or name.

    Example:
        >>> get_adapter("Covid Dataset Kohen").source
        'ieee8023'
    """
    entry = load_catalog().get(source)
    if entry.id not in _ADAPTERS:
        raise Covid19ImagesError(
            f"{entry.id} has no adapter yet; sources with one: {', '.join(adapter_ids())}"
        )
    return _ADAPTERS[entry.id]()


@dataclass
class IngestResult:
    """What ingesting one source gave."""

    source: str
    path: Path
    records: list[Record]
    problems: ProblemLog


def ingest(
    source: str,
    *,
    path: Path | str | None = None,
    root: Path | str | None = None,
    mirror: Path | str | None = None,
) -> IngestResult:
    """Read one source's raw folder into records and problems.

    Args:
        source: Catalog id, alias or name.
        path: The source's raw folder; default: found with :func:`~covid19_images.fetch.locate`.
        root: Data root for ``locate``.
        mirror: Mirror folder for ``locate``.

    Example:
        >>> result = ingest("figure1", mirror="../shared/sources")  # doctest: +SKIP
        >>> len(result.records), result.problems.summary()  # doctest: +SKIP
        (55, '4 input problems: bad-encoding 1, bad-value 3')
    """
    adapter = get_adapter(source)
    if path is None:
        located = locate(adapter.source, root=root, mirror=mirror)
        if located is None:
            raise SourceNotAvailableError(manual_guidance(adapter.entry))
        folder = located.path
    else:
        folder = Path(path)
    log = ProblemLog()
    records = adapter.read(folder, log)  # with unusable files and folders reported
    return IngestResult(adapter.source, folder, records, log)
