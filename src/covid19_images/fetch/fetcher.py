"""Get a source's raw files: download and verify, take a user's download, or use a mirror.

The one entry point is :func:`fetch_source`. Whatever path it takes, the result is a folder in
upstream's own layout whose required files are present (checked against the catalog's
``layout``), and the raw layer never holds a half-fetched source under its final name. A fetch
that fails or is refused leaves nothing in the raw layer (no ``.partial`` folder, no temporary
file) and never touches a complete version fetched before.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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
from covid19_images.fetch.archive import (
    DEFAULT_MAX_EXTRACTED_BYTES,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_RATIO,
    ArchiveTooLargeError,
    ExtractionLimits,
    MemberSizeMismatchError,
    extract_archive,
    is_archive,
)
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

CATALOG_SIZE_FACTOR = 10
"""How many times the catalog's size of its largest download one archive may expand to."""

MIN_CATALOG_LIMIT = 1024**3
"""The limit derived from catalog sizes is never below 1 GiB."""


def default_max_extracted_bytes(entry: SourceEntry) -> int:
    """The most bytes one archive of ``entry`` may expand to unless told otherwise.

    Where the catalog states the size of every download of the source: 10 times the largest,
    and at least 1 GiB. Image archives shrink their contents little (about 1:1 for PNG and JPEG,
    rarely past 5:1 for DICOM or NIfTI), so ten times leaves room for a user's download that is
    packed differently from the catalog's, while an archive that expands to more is not what
    the catalog describes. Where a size is unknown: the fixed
    :data:`~covid19_images.fetch.archive.DEFAULT_MAX_EXTRACTED_BYTES` (2 TiB).

    Example:
        >>> from covid19_images import get_source
        >>> default_max_extracted_bytes(get_source("figure1")) == 2 * 1024**4
        True
    """
    sizes = [item.size for item in entry.download]
    if sizes and all(size is not None for size in sizes):
        largest = max(size for size in sizes if size is not None)
        return max(largest * CATALOG_SIZE_FACTOR, MIN_CATALOG_LIMIT)
    return DEFAULT_MAX_EXTRACTED_BYTES


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
    max_extracted_bytes: int | None = None,
    max_ratio: float = DEFAULT_MAX_RATIO,
    max_members: int = DEFAULT_MAX_MEMBERS,
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
        max_extracted_bytes: The most bytes one archive may expand to; an archive whose members
            declare more, or that turns out to hold more while being extracted, is refused.
            Default: :func:`default_max_extracted_bytes` (from the catalog's download sizes
            where it states them, else 2 TiB).
        max_ratio: The most times its compressed size a member, or a whole archive, may expand
            to (default 200; image archives rarely pass 10).
        max_members: The most members (files, folders, links) one archive may hold (default
            1,000,000; the largest collections hold a few hundred thousand files). Empty members
            cost no bytes, so only this stops an archive of millions of them.

    Raises:
        UnknownSourceError: ``source`` is not in the catalog.
        LayoutError: ``from_path`` lacks files the source needs (each one listed).
        SourceNotAvailableError: A manual source with nothing local.
        FetchError: A download or extraction failed; nothing was marked complete.
        ArchiveTooLargeError: An archive declares or holds more than the limits allow (an
            archive bomb), or more than the free space; nothing was written. A download refused
            this way is kept, so a second try with a higher limit needs no new download.

    Example:
        >>> result = fetch_source("figure1", root="data")  # doctest: +SKIP
        >>> result.path  # doctest: +SKIP
        PosixPath('data/raw/figure1/95bb569e')
    """
    entry = source if isinstance(source, SourceEntry) else load_catalog().get(source)
    if entry.subset_of:  # e.g. the CT rows of ieee8023 live in ieee8023's files
        entry = load_catalog().get(entry.subset_of)
    base = data_root(root)
    if max_extracted_bytes is None:
        max_extracted_bytes = default_max_extracted_bytes(entry)
    limits = ExtractionLimits(
        max_extracted_bytes=max_extracted_bytes, max_ratio=max_ratio, max_members=max_members
    )
    if limits.max_extracted_bytes < 0 or not limits.max_ratio > 0 or limits.max_members < 0:
        raise FetchError(
            "max_extracted_bytes and max_members must be 0 or more and max_ratio more than 0"
        )
    if from_path is not None:
        with _source_lock(entry, base):
            return _from_local(entry, Path(from_path).expanduser(), base, copy=copy, limits=limits)

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
        return _download(
            entry, base, retries=retries, timeout=timeout, progress=progress, limits=limits
        )


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


def _from_local(
    entry: SourceEntry, path: Path, base: Path, *, copy: bool, limits: ExtractionLimits
) -> FetchResult:
    if not path.exists():
        raise FetchError(f"{path} does not exist")
    if path.is_file():
        if not is_archive(path):
            raise FetchError(f"{path} is a file but not an archive (.zip or .tar*)")
        with _staging(entry, base) as staging:
            unpacked = staging / "unpacked"
            extract_archive(path, unpacked, limits=limits)
            found = find_layout_root(entry, unpacked)
            if found is None:
                raise LayoutError(entry.id, str(path), missing_paths(entry, unpacked))
            files = [
                {
                    "filename": path.name,
                    "sha256": pooch.file_hash(str(path), alg="sha256"),
                    "size": path.stat().st_size,
                    "origin": "user archive",
                }
            ]
            return _commit(entry, base, found, files, "imported")

    found = find_layout_root(entry, path)
    if found is None:
        raise LayoutError(entry.id, str(path), missing_paths(entry, path))
    if copy:
        with _staging(entry, base) as staging:
            tree = staging / "tree"
            shutil.copytree(found, tree, symlinks=False)
            return _commit(entry, base, tree, [{"origin": f"copied from {found}"}], "imported")
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
    limits: ExtractionLimits,
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

    try:
        with _staging(entry, base) as staging:
            tree = staging / "tree"
            tree.mkdir()
            _unpack_downloads(entry, fetched, tree, limits)
            missing = missing_paths(entry, tree)
            if missing:
                raise FetchError(
                    f"{entry.id}: the download lacks files the catalog expects: "
                    f"{', '.join(missing)}"
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
            result = _commit(entry, base, tree, files, "downloaded")
    except FetchError as exc:
        # A download no checksum vouches for may be what is broken: pooch would use it again
        # as it is, so it goes when the archive itself is bad. Refused only for a limit or the
        # free space, its bytes are probably fine and it stays for the next try (a higher
        # limit, say), as a verified one always does.
        if not _download_may_be_sound(exc):
            for got in fetched:
                if got.verified_against is None:
                    got.path.unlink(missing_ok=True)
        raise
    for got in fetched:  # the receipt keeps their checksums; the raw tree keeps the bytes
        got.path.unlink(missing_ok=True)
    unverified = [got.path.name for got in fetched if got.verified_against is None]
    return FetchResult(result.source, result.path, result.action, unverified)


def _download_may_be_sound(exc: FetchError) -> bool:
    """Whether an extraction failed over a limit or the free space rather than a bad archive
    (truncated, not an archive, an unsafe or encrypted member, a CRC error, a lying header)."""
    return isinstance(exc, ArchiveTooLargeError) and not isinstance(exc, MemberSizeMismatchError)


def _unpack_downloads(
    entry: SourceEntry, fetched: list[DownloadedFile], tree: Path, limits: ExtractionLimits
) -> None:
    """Extract (or copy) each download into ``tree``, then the archives nested in them."""
    for item, got in zip(entry.download, fetched, strict=True):
        target = tree / item.subdir if item.subdir else tree
        if item.extract and is_archive(got.path):
            extract_archive(
                got.path, target, strip_top_level=item.strips_top_level(), limits=limits
            )
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(got.path, target / got.path.name)
        for inner in item.unpack:
            nested = target / inner
            if not nested.is_file():
                raise FetchError(f"{entry.id}: {inner} is not in the downloaded archive")
            extract_archive(nested, nested.parent, limits=limits)
            nested.unlink()


@contextmanager
def _staging(entry: SourceEntry, base: Path) -> Iterator[Path]:
    """A fresh ``raw/<source>/.<version>.partial/`` folder, removed however the block ends.

    Only ever this folder is removed: the complete version beside it is replaced by
    :func:`_commit` alone, and only by a complete tree.
    """
    final = raw_dir(entry, base)
    staging = final.parent / f".{final.name}.partial"
    if staging.exists():  # left by a process that was killed
        shutil.rmtree(staging)
    created = [p for p in (final.parent, final.parent.parent) if not p.exists()]
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # nor an empty raw/<source>/ or raw/ made for it
            with suppress(OSError):
                folder.rmdir()


def _commit(
    entry: SourceEntry,
    base: Path,
    tree: Path,
    files: list[dict[str, Any]],
    action: Action,
) -> FetchResult:
    """Write the receipt and rename the verified tree to its final name.

    A complete version already there is moved aside first and put back if the rename fails, so
    it is only ever deleted once the new one is in its place.
    """
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
    old = final.parent / f".{final.name}.old"
    moved_aside = final.exists()
    if moved_aside:
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    try:
        tree.rename(final)
    except BaseException:
        if moved_aside and not final.exists():
            old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return FetchResult(entry.id, final, action)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
