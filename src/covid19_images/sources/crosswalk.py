"""The label and view crosswalk: upstream words → the harmonised vocabulary, as data.

Rules live in ``sources/crosswalk/<source>.toml`` (one file per source, plus ``_views.toml`` and
``_shared.toml``), so a mapping is reviewed like any other data and ``finding_raw`` is always kept
beside the harmonised label. A finding no rule maps becomes ``unknown`` and a problem; nothing is
guessed and nothing is dropped.

A rules file holds an ordered list; the first rule that matches wins::

    [[rule]]
    finding = "COVID-19, ARDS"      # exact, compared case-folded with spaces collapsed
    label = "covid19"

    [[rule]]
    pattern = "Pneumonia/Viral/*"   # shell-style pattern, same folding
    label = "pneumonia_viral"
    note = "hierarchical findings of the later ieee8023 metadata"
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from covid19_images.errors import CatalogError
from covid19_images.records import LABELS, VIEWS


@dataclass(frozen=True)
class Rule:
    """One crosswalk rule."""

    label: str
    finding: str | None = None
    pattern: str | None = None
    note: str | None = None

    def matches(self, folded: str) -> bool:
        if self.finding is not None:
            return _fold(self.finding) == folded
        return self.pattern is not None and fnmatch.fnmatchcase(folded, _fold(self.pattern))


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def _read_rules(path: Path, allowed: tuple[str, ...]) -> list[Rule]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"crosswalk {path.name}: {exc}") from exc
    rules = []
    for i, item in enumerate(data.get("rule", []), 1):
        try:
            rule = Rule(**item)
        except TypeError as exc:
            raise CatalogError(f"crosswalk {path.name} rule {i}: {exc}") from exc
        if (rule.finding is None) == (rule.pattern is None):
            raise CatalogError(f"crosswalk {path.name} rule {i}: give 'finding' or 'pattern'")
        if rule.label not in allowed:
            raise CatalogError(f"crosswalk {path.name} rule {i}: unknown value {rule.label!r}")
        rules.append(rule)
    return rules


class Crosswalk:
    """Maps (source, raw finding) to a label and raw views to views.

    Example:
        >>> cw = Crosswalk.packaged()
        >>> cw.label("ieee8023", "Pneumonia/Viral/COVID-19")
        ('covid19', True)
        >>> cw.label("ieee8023", "Pneumonia/Bacterial/Klebsiella")
        ('pneumonia_bacterial', True)
        >>> cw.label("ieee8023", "Something new")
        ('unknown', False)
        >>> cw.view("AP Supine"), cw.view("l"), cw.view("sideways")
        (('AP_SUPINE', True), ('LATERAL', True), ('UNKNOWN', False))
    """

    def __init__(self, folder: Path) -> None:
        # Everything is read now: a packaged folder may only exist while it is being read.
        self._views = _read_rules(folder / "_views.toml", VIEWS)
        self._shared = _read_rules(folder / "_shared.toml", LABELS)
        self._own = {
            path.stem: _read_rules(path, LABELS)
            for path in sorted(folder.glob("*.toml"))
            if not path.stem.startswith("_")
        }

    @classmethod
    @cache
    def packaged(cls) -> Crosswalk:
        """The crosswalk shipped with the package."""
        root = resources.files("covid19_images.sources") / "crosswalk"
        with resources.as_file(root) as folder:
            return cls(Path(folder))

    def rules(self, source: str) -> list[Rule]:
        """The rules that apply to ``source``: its own first, then the shared ones."""
        return self._own.get(source, []) + self._shared

    def label(self, source: str, finding: str | None) -> tuple[str, bool]:
        """``(label, mapped)``; an unmapped or empty finding gives ``('unknown', False)``."""
        if finding is None or not finding.strip():
            return "unknown", False
        folded = _fold(finding)
        for rule in self.rules(source):
            if rule.matches(folded):
                return rule.label, True
        return "unknown", False

    def view(self, raw: str | None) -> tuple[str, bool]:
        """``(view, known)``; blank is a known ``UNKNOWN``, an unlisted word an unknown one."""
        if raw is None or not raw.strip():
            return "UNKNOWN", True
        folded = _fold(raw)
        for rule in self._views:
            if rule.matches(folded):
                return rule.label, True
        return "UNKNOWN", False
