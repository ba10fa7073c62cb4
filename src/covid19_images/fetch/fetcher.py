"""Get a source's raw files: download and verify, take a user's download, or use a mirror.

The one entry point is :func:`fetch_source`. Whatever path it takes, the result is a folder in
upstream's own layout whose required files are present (checked against the catalog's
``layout``), and the raw layer never holds a half-fetched source under its final name.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pooch
from filelock import FileLock, Timeout

from covid19_images.catalog.registry import load_catalog
from covid19_images.catalog.schema import SourceEntry
from covid19_images.errors import (
    FetchError,
    HostUnreachableError,
    LayoutError,
    SourceNotAvailableError,
)
from covid19_images.fetch.archive import extract_archive, is_archive
from covid19_images.fetch.download import DownloadedFile, download_file
from covid19_images.fetch.layout import find_layout_root, missing_paths
from covid19_images.fetch.store import (
    RECEIPT,
    data_root,
    downloads_dir,
    find_in_mirror,
    mirror_root,
    raw_dir,
    read_receipt,
    registered_folder,
    registration_file,
    write_json_atomic,
)

Action = Literal["downloaded", "already-fetched", "mirror", "registered", "imported"]
FileProgress = Callable[[str, int, int | None], None]
"""Called with (file name, bytes so far, total bytes or None) while a file downloads."""

pooch.get_logger().setLevel("WARNING")


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_source` did and where the files are."""

    source: str
    """The source whose files these are (the parent, for an entry that is a subset)."""
    path: Path
    action: Action
    unverified: list[str] = field(default_factory=list)
    """Downloads that upstream publishes no checksum for (sha256 recorded in the receipt)."""


def fetch_source(
    source: str | SourceEntry,
    *,
    root: Path | str | None = None,
    mirror: Path | str | None = None,
    from_path: Path | str | None = None,
    copy: bool = False,
    force: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    progress: FileProgress | None = None,
) -> FetchResult:
    """Make a source's raw files available and return where they are.

    In order: a user's download (``from_path``: a folder, used in place unless ``copy``, or an
    archive, extracted into the raw layer), the mirror, an earlier complete fetch, and finally a
    verified download for ``auto`` sources. Sources that need a person (``manual``,
    ``registration``) get :class:`SourceNotAvailableError` with the steps to follow.

    Args:
        source: Catalog id, alias or name.
        root: Data root (default ``$COVID19_IMAGES_HOME`` or the user cache folder).
        mirror: Read-only folder of upstream folders (default ``$COVID19_IMAGES_MIRROR``).
        from_path: A folder or archive the user downloaded.
        copy: Copy a ``from_path`` folder into the raw layer instead of using it in place.
        force: Download again even when a complete copy exists.
        retries: Further attempts per file after a network error or checksum mismatch.
        timeout: Seconds to wait for a server.
        progress: Optional per-file progress callback.

    Raises:
        UnknownSourceError: ``source`` is not in the catalog.
        LayoutError: ``from_path`` lacks files the source needs (each one listed).
        SourceNotAvailableError: A manual source with nothing local.
        FetchError: A download or extraction failed; nothing was marked complete.

    Example:
        >>> result = fetch_source("figure1", root="data")  # doctest: +SKIP
        >>> result.path  # doctest: +SKIP
        PosixPath('data/raw/figure1/95bb569e')
    """
    entry = source if isinstance(source, SourceEntry) else load_catalog().get(source)
    if entry.subset_of:  # e.g. the CT rows of ieee8023 live in ieee8023's files
        entry = load_catalog().get(entry.subset_of)
    base = data_root(root)
    if from_path is not None:
        with _source_lock(entry, base):
            return _from_local(entry, Path(from_path).expanduser(), base, copy=copy)

    mirror_path = mirror_root(mirror)
    if mirror_path is not None and not force:
        found = find_in_mirror(entry, mirror_path)
        if found is not None:
            return FetchResult(entry.id, found, "mirror")

    final = raw_dir(entry, base)
    if not force:
        if read_receipt(final) is not None:
            return FetchResult(entry.id, final, "already-fetched")
        registered = registered_folder(entry, base)
        if registered is not None:
            return FetchResult(entry.id, registered, "registered")

    if entry.access != "auto":
        raise SourceNotAvailableError(manual_guidance(entry, mirror_path))
    with _source_lock(entry, base):
        if not force and read_receipt(final) is not None:  # finished while we waited
            return FetchResult(entry.id, final, "already-fetched")
        return _download(entry, base, retries=retries, timeout=timeout, progress=progress)


@contextmanager
def _source_lock(entry: SourceEntry, base: Path, timeout: float = 2.0) -> Iterator[None]:
    """One writer per source and data root; a second fetch is told, not left to collide."""
    path = base / "locks" / f"{entry.id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(path, timeout=timeout):
            yield
    except Timeout as exc:
        raise FetchError(
            f"another fetch of {entry.id} into {base} is running; wait for it to finish"
        ) from exc


def manual_guidance(entry: SourceEntry, mirror: Path | None = None) -> str:
    """The message that tells a person how to get a source's files by hand.

    Example:
        >>> from covid19_images import get_source
        >>> print(manual_guidance(get_source("covid19-image-dataset")))  # doctest: +ELLIPSIS
        covid19-image-dataset ... is not available here and needs a manual download...
    """
    lines = [
        f"{entry.id} ({entry.name}) is not available here and needs a "
        f"{'download after registration' if entry.access == 'registration' else 'manual download'}."
    ]
    if entry.manual:
        if entry.manual.url:
            lines.append(f"Get it from: {entry.manual.url}")
        lines += [f"  {i}. {step}" for i, step in enumerate(entry.manual.steps, 1)]
    if entry.layout.tree:
        lines.append("The folder should look like this:")
        lines.append(entry.layout.tree.strip("\n"))
    lines.append(
        f"Then run: covid19-images fetch {entry.id} --from <that folder or the downloaded archive>"
    )
    names = ", ".join([entry.id, *entry.aliases])
    if mirror is not None:
        lines.append(f"The mirror {mirror} has no complete folder named one of: {names}.")
    else:
        lines.append(
            f"Or use a read-only mirror of upstream folders: --mirror DIR (a folder named {names})."
        )
    return "\n".join(lines)


def _from_local(entry: SourceEntry, path: Path, base: Path, *, copy: bool) -> FetchResult:
    if not path.exists():
        raise FetchError(f"{path} does not exist")
    if path.is_file():
        if not is_archive(path):
            raise FetchError(f"{path} is a file but not an archive (.zip or .tar*)")
        staging = _fresh_staging(entry, base)
        unpacked = staging / "unpacked"
        extract_archive(path, unpacked)
        found = find_layout_root(entry, unpacked)
        if found is None:
            missing = missing_paths(entry, unpacked)
            shutil.rmtree(staging, ignore_errors=True)
            raise LayoutError(entry.id, str(path), missing)
        files = [
            {
                "filename": path.name,
                "sha256": pooch.file_hash(str(path), alg="sha256"),
                "size": path.stat().st_size,
                "origin": "user archive",
            }
        ]
        return _commit(entry, base, found, staging, files, "imported")

    found = find_layout_root(entry, path)
    if found is None:
        raise LayoutError(entry.id, str(path), missing_paths(entry, path))
    if copy:
        staging = _fresh_staging(entry, base)
        tree = staging / "tree"
        shutil.copytree(found, tree, symlinks=False)
        return _commit(entry, base, tree, staging, [{"origin": f"copied from {found}"}], "imported")
    write_json_atomic(
        registration_file(entry, base),
        {
            "source": entry.id,
            "path": str(found.resolve()),
            "registered_at": _now(),
            "layout_checked": entry.layout.required,
        },
    )
    return FetchResult(entry.id, found.resolve(), "registered")


def _download(
    entry: SourceEntry,
    base: Path,
    *,
    retries: int,
    timeout: float,
    progress: FileProgress | None,
) -> FetchResult:
    cache = downloads_dir(entry, base)
    fetched: list[DownloadedFile] = []
    for item in entry.download:
        name = item.resolved_filename()
        url = item.resolved_url()
        callback = (lambda got, total, _n=name: progress(_n, got, total)) if progress else None
        try:
            fetched.append(
                download_file(
                    url,
                    name,
                    cache,
                    item.checksum,
                    retries=retries,
                    timeout=timeout,
                    progress=callback,
                )
            )
        except FetchError as exc:
            message = (
                f"{exc}\nIf this machine is offline, download {url} elsewhere and run "
                f"`covid19-images fetch {entry.id} --from <the file>`, or use --mirror DIR."
            )
            if isinstance(exc, HostUnreachableError):
                raise HostUnreachableError(exc.host, message) from exc
            raise FetchError(message) from exc

    staging = _fresh_staging(entry, base)
    tree = staging / "tree"
    tree.mkdir()
    for item, got in zip(entry.download, fetched, strict=True):
        target = tree / item.subdir if item.subdir else tree
        if item.extract and is_archive(got.path):
            extract_archive(got.path, target, strip_top_level=item.strips_top_level())
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(got.path, target / got.path.name)
        for inner in item.unpack:
            nested = target / inner
            if not nested.is_file():
                shutil.rmtree(staging, ignore_errors=True)
                raise FetchError(f"{entry.id}: {inner} is not in the downloaded archive")
            extract_archive(nested, nested.parent)
            nested.unlink()
    missing = missing_paths(entry, tree)
    if missing:
        shutil.rmtree(staging, ignore_errors=True)
        raise FetchError(
            f"{entry.id}: the download lacks files the catalog expects: {', '.join(missing)}"
        )
    files = [
        {
            "url": got.url,
            "filename": got.path.name,
            "sha256": got.sha256,
            "size": got.size,
            "catalog_checksum": got.verified_against,
            "verified": got.verified_against is not None,
        }
        for got in fetched
    ]
    result = _commit(entry, base, tree, staging, files, "downloaded")
    for got in fetched:  # the receipt keeps their checksums; the raw tree keeps the bytes
        got.path.unlink(missing_ok=True)
    unverified = [got.path.name for got in fetched if got.verified_against is None]
    return FetchResult(result.source, result.path, result.action, unverified)


def _fresh_staging(entry: SourceEntry, base: Path) -> Path:
    final = raw_dir(entry, base)
    staging = final.parent / f".{final.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def _commit(
    entry: SourceEntry,
    base: Path,
    tree: Path,
    staging: Path,
    files: list[dict[str, Any]],
    action: Action,
) -> FetchResult:
    """Write the receipt and rename the verified tree to its final name."""
    from covid19_images import __version__

    receipt = {
        "source": entry.id,
        "version": entry.version,
        "fetched_at": _now(),
        "tool": f"covid19-images {__version__}",
        "how": action,
        "files": files,
        "layout_checked": entry.layout.required,
    }
    write_json_atomic(tree / RECEIPT, receipt)
    final = raw_dir(entry, base)
    if final.exists():
        old = final.parent / f".{final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    tree.rename(final)
    shutil.rmtree(staging, ignore_errors=True)
    return FetchResult(entry.id, final, action)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
