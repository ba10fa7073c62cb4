"""Load, validate and query the catalog of sources.

The catalog is data: one TOML file per source in ``catalog/entries/`` (shipped inside the
package), each validated against :class:`~covid19_images.catalog.schema.SourceEntry`. Nothing here
touches the network.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Iterator
from functools import cache
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from covid19_images.catalog.schema import Access, Modality, SourceEntry, Task
from covid19_images.errors import CatalogError, UnknownSourceError


class Catalog:
    """An immutable, validated collection of :class:`SourceEntry` objects.

    Args:
        entries: The entries; ids and aliases must be unique and cross-references must resolve.

    Example:
        >>> from covid19_images import load_catalog
        >>> catalog = load_catalog()
        >>> catalog.get("Covid Dataset Kohen").id  # a survey name resolves too
        'ieee8023'
        >>> "mosmeddata" in [e.id for e in catalog.filter(modality="ct", task="segmentation")]
        True
    """

    def __init__(self, entries: Iterable[SourceEntry]) -> None:
        self._entries: dict[str, SourceEntry] = {}
        self._lookup: dict[str, str] = {}
        for entry in sorted(entries, key=lambda e: e.id):
            if entry.id in self._entries:
                raise CatalogError(f"duplicate source id {entry.id!r}")
            self._entries[entry.id] = entry
            for key in entry.names:
                folded = _fold(key)
                owner = self._lookup.setdefault(folded, entry.id)
                if owner != entry.id:
                    raise CatalogError(f"{key!r} names both {owner!r} and {entry.id!r}")
        for entry in self._entries.values():
            refs = [o.source for o in entry.overlaps]
            if entry.subset_of:
                refs.append(entry.subset_of)
            for ref in refs:
                if ref not in self._entries:
                    raise CatalogError(f"{entry.id}: refers to unknown source {ref!r}")

    def __iter__(self) -> Iterator[SourceEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and _fold(key) in self._lookup

    @property
    def ids(self) -> list[str]:
        """Source ids, sorted."""
        return list(self._entries)

    def get(self, key: str) -> SourceEntry:
        """Return the entry for an id, alias or name (case- and punctuation-insensitive).

        Raises:
            UnknownSourceError: With the closest known ids, when nothing matches.
        """
        entry_id = self._lookup.get(_fold(key))
        if entry_id is None:
            raise UnknownSourceError(key, self.suggest(key))
        return self._entries[entry_id]

    def suggest(self, key: str, n: int = 3) -> list[str]:
        """The ids closest to ``key``, best first."""
        folded = _fold(key)
        scored: dict[str, float] = {}
        for name, entry_id in self._lookup.items():
            ratio = difflib.SequenceMatcher(None, folded, name).ratio()
            if folded and (folded in name or name in folded):
                ratio = max(ratio, 0.8)
            if ratio >= 0.5:
                scored[entry_id] = max(scored.get(entry_id, 0.0), ratio)
        return sorted(scored, key=lambda k: (-scored[k], k))[:n]

    def filter(
        self,
        modality: Modality | None = None,
        task: Task | None = None,
        access: Access | None = None,
    ) -> list[SourceEntry]:
        """Entries matching every given criterion."""
        return [
            e
            for e in self
            if (modality is None or modality in e.modality)
            and (task is None or task in e.tasks)
            and (access is None or access == e.access)
        ]


def _fold(key: str) -> str:
    return "".join(ch for ch in key.casefold() if ch.isalnum())


def read_entry(path: Path) -> SourceEntry:
    """Read and validate one catalog TOML file.

    Raises:
        CatalogError: Naming the file and every invalid field.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{path.name}: cannot read catalog entry: {exc}") from exc
    try:
        entry = SourceEntry.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<entry>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise CatalogError(f"{path.name}: invalid catalog entry: {problems}") from exc
    if path.stem != entry.id:
        raise CatalogError(f"{path.name}: file name must be the entry id ({entry.id}.toml)")
    return entry


def load_catalog(directory: Path | None = None) -> Catalog:
    """Load the catalog shipped with the package (or the TOML files in ``directory``).

    Example:
        >>> len(load_catalog()) >= 24
        True
    """
    if directory is not None:
        return Catalog(read_entry(p) for p in sorted(Path(directory).glob("*.toml")))
    return _packaged_catalog()


@cache
def _packaged_catalog() -> Catalog:
    root = resources.files("covid19_images.catalog") / "entries"
    with resources.as_file(root) as folder:
        return Catalog(read_entry(p) for p in sorted(Path(folder).glob("*.toml")))


def get_source(key: str) -> SourceEntry:
    """Return the packaged catalog's entry for an id, alias or name.

    Example:
        >>> get_source("covid-chestxray-dataset").id
        'ieee8023'
    """
    return _packaged_catalog().get(key)
