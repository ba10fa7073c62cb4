"""Before a build: download the missing ``auto`` sources, and say which ones need a person.

:func:`ensure_sources` looks for each source where :func:`~covid19_images.fetch.locate` does (a
mirror, a registered folder, an earlier fetch) and downloads each missing ``auto`` source with
:func:`~covid19_images.fetch.fetch_source` (pinned, verified, never half-marked complete). A
failed download does not stop the others: the source is reported as failed. Once a server could
not be reached at all, further sources on the same host are not tried, so an offline machine is
told in about a second instead of waiting once per source. ``manual`` and ``registration``
sources are never downloaded; the report lists the missing ones with where to get them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from covid19_images.catalog.registry import load_catalog
from covid19_images.catalog.schema import SourceEntry
from covid19_images.errors import Covid19ImagesError, HostUnreachableError
from covid19_images.fetch.fetcher import FetchResult, FileProgress, fetch_source
from covid19_images.fetch.store import data_root, locate

if TYPE_CHECKING:
    from covid19_images.problems import ProblemLog

FETCH_ENV = "COVID19_IMAGES_FETCH"
"""Set to ``0`` (or ``false``, ``no``, ``off``) and builds download nothing (``--no-fetch``)."""

_OFF = {"0", "false", "no", "off"}

EventKind = Literal["start", "done", "failed", "skipped"]


@dataclass(frozen=True)
class FetchEvent:
    """One step of :func:`ensure_sources`, for a progress display.

    ``start``: a download begins; ``done``: it finished (``result``); ``failed``: it did not
    (``message``); ``skipped``: not tried, because its server was unreachable a moment ago.
    """

    source: str
    kind: EventKind
    result: FetchResult | None = None
    message: str = ""


@dataclass
class SourcesReport:
    """What :func:`ensure_sources` found, downloaded, failed to get, and left to a person."""

    fetch: bool
    """Whether downloading was allowed."""
    fetched: dict[str, FetchResult] = field(default_factory=dict)
    """Source id → the download made now."""
    failed: dict[str, str] = field(default_factory=dict)
    """Source id → why its download failed (or was not tried)."""
    not_fetched: list[str] = field(default_factory=list)
    """Missing ``auto`` sources that were not downloaded because downloading was off."""
    manual: list[SourceEntry] = field(default_factory=list)
    """Missing ``manual`` and ``registration`` sources: a person gets these."""

    def log_problems(self, log: ProblemLog) -> None:
        """One ``fetch-failed`` problem row per source whose download failed.

        Example:
            >>> from covid19_images.problems import ProblemLog
            >>> log = ProblemLog()
            >>> SourcesReport(True, failed={"figure1": "could not download"}).log_problems(log)
            >>> log.summary()
            '1 input problem: fetch-failed 1'
        """
        for source, message in sorted(self.failed.items()):
            log.add(source, "", None, "fetch-failed", "skipped", " ".join(message.split()))

    def advice(self) -> str:
        """What failed and how to go on, for a build that found nothing (may be empty).

        Example:
            >>> print(SourcesReport(False, not_fetched=["figure1"]).advice())  # doctest: +ELLIPSIS
            Downloads are off (--no-fetch...); a build would download: figure1. ...
        """
        lines: list[str] = []
        if self.failed:
            lines.append("Downloads that failed:")
            lines += [f"  - {s}: {_first_line(m)}" for s, m in sorted(self.failed.items())]
            lines.append(
                "Without a network: download a source's archive elsewhere and run "
                "`covid19-images fetch SOURCE --from FILE` (`covid19-images info SOURCE` gives "
                "its URL), or pass --mirror DIR (a folder of upstream folders); --no-fetch "
                "builds from what is present without trying to download."
            )
        if self.not_fetched:
            lines.append(
                f"Downloads are off (--no-fetch or {FETCH_ENV}=0); a build would download: "
                f"{', '.join(self.not_fetched)}. Build without --no-fetch, run "
                f"`covid19-images fetch {' '.join(self.not_fetched)}`, or pass --mirror DIR."
            )
        if self.manual:
            lines.append(
                f"Need a manual download: {', '.join(e.id for e in self.manual)} "
                "(`covid19-images info SOURCE` gives the steps)."
            )
        return "\n".join(lines)


def fetch_default(fetch: bool | None = None) -> bool:
    """Whether a build downloads missing sources: ``fetch``, else ``$COVID19_IMAGES_FETCH``.

    The variable turns downloads off with ``0``, ``false``, ``no`` or ``off``; unset, builds
    download.

    Example:
        >>> fetch_default(False), fetch_default(True)
        (False, True)
    """
    if fetch is not None:
        return fetch
    return os.environ.get(FETCH_ENV, "").strip().lower() not in _OFF


def manual_line(entry: SourceEntry) -> str:
    """One line that says where a person gets a source's files.

    Example:
        >>> from covid19_images import get_source
        >>> manual_line(get_source("covid19-radiography-database"))  # doctest: +ELLIPSIS
        'covid19-radiography-database (manual download): https://www.kaggle.com/...'
    """
    how = "download after registration" if entry.access == "registration" else "manual download"
    where = (entry.manual.url if entry.manual else None) or entry.homepage
    return f"{entry.id} ({how}): {where or 'see covid19-images info ' + entry.id}"


def ensure_sources(
    sources: Iterable[str],
    *,
    root: Path | str | None = None,
    mirror: Path | str | None = None,
    fetch: bool | None = None,
    task: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: FileProgress | None = None,
    on_event: Callable[[FetchEvent], None] | None = None,
) -> SourcesReport:
    """Download the missing ``auto`` sources among ``sources``; report the rest.

    A source present in the mirror, registered with ``fetch --from``, or fetched before is left
    as it is (no request is made for it). Nothing raises for a failed download: it is in
    ``failed``.

    Args:
        sources: Catalog ids, aliases or names.
        root: Data root (default ``$COVID19_IMAGES_HOME`` or the user cache folder).
        mirror: Read-only folder of upstream folders (default ``$COVID19_IMAGES_MIRROR``).
        fetch: Download missing ``auto`` sources (default: :func:`fetch_default`). With False,
            no request is made at all.
        task: List only manual sources labelled for this task (e.g. ``segmentation``).
        retries: Further attempts per file after a dropped connection or checksum mismatch.
        timeout: Seconds to wait for a server.
        progress: Per-file progress callback, as :func:`fetch_source` takes.
        on_event: Called when a download starts, ends, fails or is skipped.

    Example:
        >>> report = ensure_sources(["figure1", "zhanglab"], root="data")  # doctest: +SKIP
        >>> sorted(report.fetched), [e.id for e in report.manual]  # doctest: +SKIP
        (['figure1'], ['zhanglab'])
    """
    catalog = load_catalog()
    base = data_root(root)
    report = SourcesReport(fetch_default(fetch))
    unreachable: dict[str, str] = {}  # host → the source whose download found it unreachable
    seen: set[str] = set()
    for name in sources:
        entry = catalog.get(name)
        if entry.id in seen or locate(entry, root=base, mirror=mirror) is not None:
            continue
        seen.add(entry.id)
        target = catalog.get(entry.subset_of) if entry.subset_of else entry
        if target.access != "auto":
            if task is None or task in entry.tasks:
                report.manual.append(entry)
            continue
        if not report.fetch:
            report.not_fetched.append(entry.id)
            continue
        if target.id != entry.id and target.id in report.fetched:
            continue  # the parent's files, fetched a moment ago
        hosts = [urlsplit(d.resolved_url()).hostname or "" for d in target.download]
        down = next((h for h in hosts if h in unreachable), None)
        if down is not None:
            message = f"not tried: {down} could not be reached (see {unreachable[down]})"
            report.failed[entry.id] = message
            _emit(on_event, FetchEvent(entry.id, "skipped", message=message))
            continue
        _emit(on_event, FetchEvent(entry.id, "start"))
        try:
            result = fetch_source(
                target,
                root=base,
                mirror=mirror,
                retries=retries,
                timeout=timeout,
                progress=progress,
            )
        except Covid19ImagesError as exc:
            if isinstance(exc, HostUnreachableError):
                unreachable[exc.host] = entry.id
            report.failed[entry.id] = str(exc)
            _emit(on_event, FetchEvent(entry.id, "failed", message=str(exc)))
            continue
        report.fetched[entry.id] = result
        _emit(on_event, FetchEvent(entry.id, "done", result=result))
    return report


def _emit(on_event: Callable[[FetchEvent], None] | None, event: FetchEvent) -> None:
    if on_event is not None:
        on_event(event)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
