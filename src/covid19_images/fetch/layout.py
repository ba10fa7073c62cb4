"""Check that a folder has the layout a catalog entry describes.

Used on what a user downloaded by hand (``fetch --from``), on mirror folders and on freshly
extracted archives, so a wrong or partial folder is caught with a list of what is missing instead
of failing later, deep inside an adapter.
"""

from __future__ import annotations

from pathlib import Path

from covid19_images.catalog.schema import SourceEntry


def missing_paths(entry: SourceEntry, folder: Path) -> list[str]:
    """The ``layout.required`` items of ``entry`` that ``folder`` lacks.

    A required item is a file path, a folder path ending in ``/``, or a glob with ``*`` that must
    match at least one path.

    Example:
        >>> from covid19_images import get_source
        >>> missing_paths(get_source("figure1"), Path("/nonexistent"))
        ['metadata.csv (file)', 'images/ (folder)', 'images/COVID-* (at least one match)']
    """
    missing = []
    for item in entry.layout.required:
        if any(ch in item for ch in "*?["):
            if not any(folder.glob(item.rstrip("/"))):
                missing.append(f"{item} (at least one match)")
        elif item.endswith("/"):
            if not (folder / item).is_dir():
                missing.append(f"{item} (folder)")
        elif not (folder / item).is_file():
            missing.append(f"{item} (file)")
    return missing


def find_layout_root(entry: SourceEntry, folder: Path, depth: int = 2) -> Path | None:
    """Find the folder that has ``entry``'s layout: ``folder`` itself or one a few levels down.

    Downloads often add a level (``archive/``, ``<repo>-master/``); this looks through folders
    that are the only sub-folder of their parent, up to ``depth`` levels, so a user can point at
    what they unpacked without knowing which level we mean.

    Example:
        >>> from covid19_images import get_source
        >>> find_layout_root(get_source("figure1"), Path("/nonexistent")) is None
        True
    """
    current = folder
    for _ in range(depth + 1):
        if current.is_dir() and not missing_paths(entry, current):
            return current
        subfolders = (
            [c for c in current.iterdir() if c.is_dir() and not c.name.startswith(".")]
            if current.is_dir()
            else []
        )
        if len(subfolders) != 1:
            return None
        current = subfolders[0]
    return None
