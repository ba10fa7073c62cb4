"""The problems report: every row or file that could not be used as it is, and what was done.

Bad input never crashes a build and is never silent: each problem becomes one row of
``problems.csv`` (source, file, row, kind, action, detail) and counts in the build's summary.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Final, Literal, cast

import pandas as pd

Action = Literal[
    "skipped",  # the row or file is not in the manifest
    "kept",  # in the manifest as it is; the problem is noted on the record too
    "kept-as-unknown",  # in the manifest with label or view 'unknown'
    "excluded",  # in the manifest's universe but left out by a rule (augmented copy, CT row)
    "repaired",  # read after a fix (another encoding, a BOM removed)
]

KINDS: Final[dict[str, str]] = {
    "missing-file": "a metadata row names a file that is not there",
    "orphan-file": "an image file that no metadata row names",
    "empty-file": "a zero-byte file",
    "unreadable-file": "a file that cannot be decoded (truncated or corrupt)",
    "wrong-extension": "the content does not match the file name's extension",
    "bad-encoding": "a text file that is not valid UTF-8",
    "bom": "a text file that starts with a byte-order mark",
    "missing-column": "a metadata file lacks a column the adapter needs",
    "duplicate-row": "a metadata row repeats another one",
    "unknown-view": "a view the crosswalk does not know",
    "unmapped-finding": "a finding the label crosswalk does not map",
    "wrong-modality": "a row of another modality (e.g. CT rows in an X-ray collection)",
    "augmented-copy": "an image the upstream produced by augmenting another",
    "bad-value": "a value that cannot be parsed (age, sex, number)",
    "unreadable-metadata": "a metadata file that cannot be parsed at all",
    "duplicate": "a copy of an image kept elsewhere in the dataset (same film, other file)",
    "filtered": "left out by the recipe (view, modality, age, label, source)",
    "mask-mismatch": "a mask whose grid (shape, spacing, position) differs from its image's",
    "missing-study": "a mask or registry row whose image volume is absent",
    "localizer": "a DICOM localizer (scout) image, never part of a volume",
    "non-axial": "a DICOM image of another orientation than its series' volume",
    "derived-series": "DERIVED or REFORMATTED DICOM images, kept apart from ORIGINAL series",
    "slice-gap": "a missing slice or uneven slice spacing in a series",
    "mixed-series": "images of different size or orientation in one DICOM series",
    "no-pixel-data": "a DICOM file without pixel data (e.g. a DICOMDIR)",
    "unsupported-transfer-syntax": "compressed DICOM pixels with no decoder installed",
    "fetch-failed": "an auto source whose download failed (e.g. offline); built without it",
    "too-large": "an image or volume whose declared size is over the limit (a decompression bomb)",
    "implausible-size": "an image size or aspect ratio that no radiograph or CT slice has",
    "name-clash": "a file whose path differs from another file's only in letter case",
    "unreadable-folder": "a folder that cannot be listed (no permission, or a link loop)",
    "broken-link": "a symbolic link whose target is missing or loops",
    "too-few-slices": "a CT series with too few slices to be a volume",
    "empty-mask": "a mask with no labelled pixel (or none inside the image's square copy)",
    "box-outside": "an annotated box that lies partly or wholly outside its image",
}


NOT_PRESENT: Final[frozenset[str]] = frozenset({"missing-file", "missing-study"})
"""Kinds of a metadata row whose file the download or mirror does not hold: a partial copy of
a collection lists far more files than it has, so these are counted apart from the input's
own problems (and ``--strict`` ignores them)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem with one file or row."""

    source: str
    file: str
    row: int | None
    kind: str
    action: Action
    detail: str = ""


PROBLEM_COLUMNS: Final[tuple[str, ...]] = tuple(f.name for f in fields(Problem))


class ProblemLog:
    """Collects problems during a build.

    Example:
        >>> log = ProblemLog()
        >>> log.add("figure1", "metadata.csv", None, "bad-encoding", "repaired", "read as cp1252")
        >>> log.summary()
        '1 input problem: bad-encoding 1'
    """

    def __init__(self) -> None:
        self._rows: list[Problem] = []
        self._pending: Path | None = None

    @property
    def _items(self) -> list[Problem]:
        if self._pending is not None:  # a log read back from disk is read when first used
            path, self._pending = self._pending, None
            with path.open(newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    self._rows.append(
                        Problem(
                            row["source"],
                            row["file"],
                            int(row["row"]) if row["row"] else None,
                            row["kind"],
                            cast(Action, row["action"]),
                            row["detail"],
                        )
                    )
        return self._rows

    def add(
        self,
        source: str,
        file: str,
        row: int | None,
        kind: str,
        action: Action,
        detail: str = "",
    ) -> None:
        """Record one problem; ``kind`` must be one of :data:`KINDS`."""
        if kind not in KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        self._items.append(Problem(source, file, row, kind, action, detail))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def extend(self, other: ProblemLog) -> None:
        """Append another log's problems."""
        self._items.extend(other._items)

    def frame(self) -> pd.DataFrame:
        """The problems as a DataFrame, sorted for stable output."""
        items = self._items
        # Column by column: ``dataclasses.astuple`` deep-copies every field of every row.
        frame = pd.DataFrame(
            {c: pd.Series([getattr(p, c) for p in items], dtype=object) for c in PROBLEM_COLUMNS}
        )
        frame["row"] = frame["row"].astype("Int64")
        return frame.sort_values(["source", "file", "row", "kind"], kind="stable").reset_index(
            drop=True
        )

    @classmethod
    def read_csv(cls, path: Path) -> ProblemLog:
        """A log of a ``problems.csv`` this class wrote (read when first used)."""
        log = cls()
        log._pending = path
        return log

    def write_csv(self, path: Path) -> None:
        """Write ``problems.csv``."""
        self.frame().to_csv(path, index=False)

    def input_problems(self) -> list[Problem]:
        """The problems of the input itself: neither a recipe's decision (``excluded``) nor a
        metadata row whose file the download does not hold (:data:`NOT_PRESENT`: a partial
        download or mirror lists far more files than it has)."""
        return [p for p in self._items if p.action != "excluded" and p.kind not in NOT_PRESENT]

    def summary(self) -> str:
        """One line: the input's problems per kind, then, apart, the rows whose file is not
        there and the recipe's decisions.

        Example:
            >>> log = ProblemLog()
            >>> log.add("figure1", "a.jpg", 3, "missing-file", "skipped")
            >>> log.add("figure1", "b.jpg", None, "duplicate", "excluded", "copy of c.jpg")
            >>> log.summary()
            'no input problems; also 1 row whose file is absent (missing-file 1), 1 left out by the recipe (duplicate 1)'
        """  # noqa: E501
        real = self.input_problems()
        absent = Counter(
            p.kind for p in self._items if p.kind in NOT_PRESENT and p.action != "excluded"
        )
        decided = Counter(p.kind for p in self._items if p.action == "excluded")
        n = len(real)
        if n:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(Counter(p.kind for p in real).items()))
            head = f"{n} input problem{'s' if n != 1 else ''}: {kinds}"
        else:
            head = "no input problems"
        also = []
        if absent:
            total = sum(absent.values())
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(absent.items()))
            rows = "rows" if total != 1 else "row"
            also.append(f"{total} {rows} whose file is absent ({kinds})")
        if decided:
            total = sum(decided.values())
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(decided.items()))
            also.append(f"{total} left out by the recipe ({kinds})")
        return head + (f"; also {', '.join(also)}" if also else "")
