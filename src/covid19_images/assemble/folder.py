"""The dataset folder: written under a temporary name, renamed into place when complete.

Both assemblies write through :func:`staging`, hard-link their images with :func:`link` and
finish with :func:`write_tables` (manifest, problems, duplicates, lock, then the audit of the
files as written).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from covid19_images.assemble.lockfile import LOCK
from covid19_images.assemble.recipe import Recipe
from covid19_images.assemble.result import BuildError
from covid19_images.dedup.clusters import DedupResult
from covid19_images.problems import ProblemLog

if TYPE_CHECKING:
    from covid19_images.audit import AuditReport, FileSignatures

MANIFEST = "manifest.parquet"

EXPORTS = "exports"
"""A dataset's sub-folder of exports (``covid19-images export``): kept when it is rebuilt."""


def check_out(out: Path) -> None:
    """Fail early (before any work) when the output folder cannot be one."""
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise BuildError(f"--out {out}: {folder} is a file, not a folder")
            return


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` that replaces it when the block completes.

    Nothing of a failed or interrupted block remains; an earlier dataset at ``final`` stays as
    it was until the new one is in place, and is only deleted after. Its ``exports/`` (what a
    user exported from it) moves into the new one: they were made from the earlier images, and
    export again refreshes them. If the swap itself fails, the earlier dataset (with its
    exports) is put back.
    """
    if final.exists() and not (final / LOCK).is_file() and not (final / MANIFEST).is_file():
        raise BuildError(f"{final} exists and is not a dataset of covid19-images: not replacing it")
    check_out(final.parent)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(final)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap(tmp, final)


def _swap(tmp: Path, final: Path) -> None:
    """Put ``tmp`` in place of ``final``: the earlier one moves aside (its exports into the new
    one), the new one is renamed in, and only then is the earlier one deleted. Any failure
    before that puts everything back and removes ``tmp``."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    moved = aside = False
    try:
        if (final / EXPORTS).is_dir() and not (tmp / EXPORTS).exists():
            (final / EXPORTS).rename(tmp / EXPORTS)
            moved = True
        if final.exists():
            final.rename(old)
            aside = True
        tmp.rename(final)
    except BaseException:
        if aside and not final.exists():
            old.rename(final)
        if moved and final.is_dir() and not (final / EXPORTS).exists():
            (tmp / EXPORTS).rename(final / EXPORTS)  # the earlier dataset keeps its exports
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)  # the new dataset is in place: an interrupt here
    # leaves only the old copy's remains, which the next build removes (_remove_stale)


def _remove_stale(final: Path) -> None:
    """Remove ``.<name>.partial-<pid>`` and ``.<name>.old-<pid>`` folders of builds that no
    longer run."""
    for folder in (
        *final.parent.glob(f".{final.name}.partial-*"),
        *final.parent.glob(f".{final.name}.old-*"),
    ):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # that build is still running
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        shutil.rmtree(folder, ignore_errors=True)


def link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy where links are not possible)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_manifest(manifest: pd.DataFrame, folder: Path, expected_sha: str | None) -> str:
    """Write ``manifest.parquet``; its sha256, checked against a lock's when one is given."""
    manifest.to_parquet(folder / MANIFEST, index=False)
    manifest_sha = hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
    if expected_sha is not None and manifest_sha != expected_sha:
        raise BuildError(
            "the rebuilt manifest differs from the lock's (the sources' metadata or this "
            "tool changed since); nothing was written"
        )
    return manifest_sha


def write_tables(
    folder: Path,
    recipe: Recipe,
    manifest: pd.DataFrame,
    log: ProblemLog,
    dedup: DedupResult,
    lock_data: dict[str, Any],
    expected_manifest: str | None,
    *,
    memo: FileSignatures | None = None,
) -> AuditReport:
    """Manifest, problems, duplicates and lock into a dataset folder; then audit it.

    The audit runs on the files as written (``audit.json``), so it checks what a user gets.
    """
    from covid19_images.audit import audit_dataset, write_report

    lock_data["manifest_sha256"] = write_manifest(manifest, folder, expected_manifest)
    log.write_csv(folder / "problems.csv")
    dedup.pairs.to_csv(folder / "duplicates.csv", index=False)
    (folder / LOCK).write_text(json.dumps(lock_data, indent=2, sort_keys=True) + "\n")
    report = audit_dataset(
        folder,
        **recipe.dedup.model_dump(),
        memo=memo,
    )
    write_report(report, folder / "audit.json")
    return report
