"""Up to date: a digest of everything a build reads, kept in the folder it wrote.

A build whose digest matches the one in ``<folder>/.build-state.json`` returns the folder as it
is (``--force`` builds anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from covid19_images import __version__
from covid19_images.assemble.dicoms import DICOM_VERSION
from covid19_images.assemble.folder import MANIFEST
from covid19_images.assemble.lockfile import LOCK
from covid19_images.assemble.recipe import Recipe
from covid19_images.fetch import locate
from covid19_images.loaders.packed import PACKED_VERSION
from covid19_images.process.image import MAX_PIXELS
from covid19_images.process.pipeline import PROCESS_VERSION

STATE = ".build-state.json"


def inputs_fingerprint(
    recipe: Recipe,
    seed: int,
    size: int,
    dicom: bool,
    ids: list[str],
    base: Path,
    mirror: Path | str | None,
    max_pixels: int = MAX_PIXELS,
    naive: bool = False,
) -> str:
    """A digest of everything a build reads: options, package data, every input file's stat.

    Like ``make``, a file counts as unchanged while its size and modification time are; the
    walk costs a ``stat`` per file, far less than reading the metadata again. A link whose
    target is missing or loops counts by its target's name, a folder that cannot be listed by
    its name: neither stops the walk, and either changing changes the digest.
    """
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            [
                __version__,
                PROCESS_VERSION,
                DICOM_VERSION,
                PACKED_VERSION,
                recipe.model_dump(mode="json"),
                seed,
                size,
                dicom,
                max_pixels,
                *(["naive"] if naive else []),
            ],
            sort_keys=True,
        ).encode()
    )
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.toml")):  # catalog, crosswalk and recipes
        digest.update(path.read_bytes())
    for source in ids:
        located = locate(source, root=base, mirror=mirror)
        digest.update(f"\n{source}\t{located.path if located else '-'}".encode())
        if located is None:
            continue
        digest.update(_tree_state(located.path))
    return digest.hexdigest()


def _tree_state(top: Path) -> bytes:
    """One line per file under ``top``: its path, size and modification time, or for a link
    whose target cannot be reached, why and the target's name; one per folder that cannot be
    listed."""
    lines: list[str] = []

    def unlisted(exc: OSError) -> None:
        lines.append(f"{exc.filename}\tunreadable-folder\t{exc.strerror}\n")

    for folder, dirs, files in os.walk(top, onerror=unlisted):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            try:
                stat = path.stat()
            except OSError as exc:  # a dangling or looping link, or no permission
                lines.append(f"{path}\tbroken-link\t{exc.strerror}\t{_link_target(path)}\n")
                continue
            lines.append(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n")
    return "".join(lines).encode()


def _link_target(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:
        return ""


def up_to_date(final: Path, state: str) -> bool:
    """Whether ``final`` is a complete dataset built from inputs with this fingerprint."""
    try:
        saved = json.loads((final / STATE).read_text(encoding="utf-8"))["inputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(saved == state and (final / MANIFEST).is_file() and (final / LOCK).is_file())


def write_state(folder: Path, state: str) -> None:
    """Save the inputs fingerprint in a dataset folder for the next :func:`up_to_date`."""
    (folder / STATE).write_text(json.dumps({"inputs": state}) + "\n", encoding="utf-8")
