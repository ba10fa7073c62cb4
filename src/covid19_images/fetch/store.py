"""Where raw data live: the data root, the raw layer, receipts, mirrors and registered folders.

Layout under the data root (``--root``, ``COVID19_IMAGES_HOME``, else the user cache folder)::

    <root>/
    ├── downloads/<source>/<version>/     archives as downloaded (+ .partial/ while resuming)
    ├── raw/<source>/<version>/           layer 1: upstream bytes in upstream's layout
    │   └── .covid19-images.json          receipt, written before the folder is renamed into place
    └── registered/<source>.json          folders a user downloaded by hand (used in place)

A raw folder appears under its final name only once everything in it has been verified and
extracted, so a half-fetched source is never mistaken for a complete one. A mirror (``--mirror``,
``COVID19_IMAGES_MIRROR``) is a read-only folder of upstream folders, like ``../shared/sources``;
it is read in place and never written to.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import platformdirs

from covid19_images.catalog.registry import load_catalog
from covid19_images.catalog.schema import SourceEntry
from covid19_images.fetch.layout import find_layout_root

HOME_ENV = "COVID19_IMAGES_HOME"
MIRROR_ENV = "COVID19_IMAGES_MIRROR"
RECEIPT = ".covid19-images.json"

Origin = Literal["mirror", "registered", "fetched"]


def data_root(root: Path | str | None = None) -> Path:
    """The data root: ``root`` if given, else ``$COVID19_IMAGES_HOME``, else the user cache.

    Example:
        >>> data_root("/data/covid19-images").as_posix()
        '/data/covid19-images'
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("covid19-images", appauthor=False))


def mirror_root(mirror: Path | str | None = None) -> Path | None:
    """The mirror folder: ``mirror`` if given, else ``$COVID19_IMAGES_MIRROR``, else None."""
    if mirror is not None:
        return Path(mirror).expanduser()
    env = os.environ.get(MIRROR_ENV)
    return Path(env).expanduser() if env else None


def raw_dir(entry: SourceEntry, root: Path) -> Path:
    """``<root>/raw/<source>/<version>/`` (``local`` where the entry has no version)."""
    return root / "raw" / entry.id / (entry.version or "local")


def downloads_dir(entry: SourceEntry, root: Path) -> Path:
    """``<root>/downloads/<source>/<version>/``: the download cache of one source version."""
    return root / "downloads" / entry.id / (entry.version or "local")


def registration_file(entry: SourceEntry, root: Path) -> Path:
    """``<root>/registered/<source>.json``: a folder the user pointed ``--from`` at."""
    return root / "registered" / f"{entry.id}.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_receipt(folder: Path) -> dict[str, Any] | None:
    """The fetch receipt of a raw folder, or None when there is none or it is unreadable."""
    try:
        data = json.loads((folder / RECEIPT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def find_in_mirror(entry: SourceEntry, mirror: Path) -> Path | None:
    """The folder of ``entry`` in a mirror, found by id or alias, with its layout checked.

    Example:
        >>> from covid19_images import get_source
        >>> find_in_mirror(get_source("figure1"), Path("/nonexistent")) is None
        True
    """
    for name in (entry.id, *entry.aliases):
        candidate = mirror / name
        if candidate.is_dir():
            found = find_layout_root(entry, candidate)
            if found is not None:
                return found
    return None


def registered_folder(entry: SourceEntry, root: Path) -> Path | None:
    """The folder registered with ``fetch --from``, if it still has the source's layout."""
    try:
        data = json.loads(registration_file(entry, root).read_text(encoding="utf-8"))
        folder = Path(data["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder if find_layout_root(entry, folder, depth=0) == folder else None


@dataclass(frozen=True)
class Located:
    """Where a source's raw files are, and how they got there."""

    source: str
    path: Path
    origin: Origin


def locate(
    source: str | SourceEntry,
    root: Path | str | None = None,
    mirror: Path | str | None = None,
) -> Located | None:
    """Find a source's raw files: in the mirror, in a registered folder, or fetched.

    Entries that are a subset of another (``subset_of``) are found where their parent is.

    Example:
        >>> locate("figure1", root="/nonexistent", mirror="/nonexistent") is None
        True
        >>> locate("ieee8023", mirror="../shared/sources").origin  # doctest: +SKIP
        'mirror'
    """
    entry = source if isinstance(source, SourceEntry) else load_catalog().get(source)
    if entry.subset_of:
        parent = locate(entry.subset_of, root, mirror)
        return Located(entry.id, parent.path, parent.origin) if parent else None
    mirror_path = mirror_root(mirror)
    if mirror_path is not None:
        found = find_in_mirror(entry, mirror_path)
        if found is not None:
            return Located(entry.id, found, "mirror")
    base = data_root(root)
    registered = registered_folder(entry, base)
    if registered is not None:
        return Located(entry.id, registered, "registered")
    raw = raw_dir(entry, base)
    if read_receipt(raw) is not None:
        return Located(entry.id, raw, "fetched")
    return None
