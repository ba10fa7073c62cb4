"""COVIDx V9A/V9B (COVID-Net, lindawangg/COVID-Net): label files over other collections' X-rays.

COVIDx is the COVID-Net team's benchmark (DarwinAI and the University of Waterloo): not a cohort
but label files naming chest X-rays of other public collections.
``labels/{train,test}_COVIDx9A.txt`` (normal / pneumonia / COVID-19) and
``labels/{train,test}_COVIDx9B.txt`` (COVID-19 positive / negative) are space-separated with no
header: ``patient_id filename label source``. The images are not in the repository: a user
downloads Kaggle's "COVIDx CXR-2" (version 5, the one the V9 label files match) and puts its
``train/`` and ``test/`` image folders next to ``labels/``; the image of a row is
``<split>/<filename>``.

:meth:`Covidx.records` gives one record per image present that a V9A file names: label from the
V9A label through the crosswalk (``label_origin="label_file"``; ``pneumonia`` is
``pneumonia_other``), ``upstream_split`` from the file, ``patient_id`` ``covidx:<first field>``,
and in ``attributes`` the COVIDx source tag (``covidx_source_tag``), the catalog id of the
collection it names (``catalog_source``) and the V9B label (``label_9b``). A V9A row whose image
is absent is a ``missing-file`` problem; an image only a V9B file names (352 ieee8023 and
Actualmed negatives in V9B train) is reported, not turned into a record.

:func:`covidx_membership` reads all four label files into one table, so that a ``covidx`` recipe
can give the records of *other* sources their COVIDx split by ``(catalog_source, filename)``. The
fourth field names the upstream collection: ``cohen`` ieee8023, ``fig1`` figure1, ``actmed``
actualmed, ``sirm`` the COVID-19 Radiography Database (not the SIRM case pages: COVID-Net's
``create_COVIDx.ipynb`` labels that database's COVID folder ``sirm``), ``rsna`` and the typo
``rnsa`` (199 train rows) the RSNA Pneumonia Detection Challenge, ``ricord``, ``bimcv``,
``stonybrook``. Patient ids are COVIDx's: for ``fig1`` rows they are the image ids
(``COVID-00039a``), so COVIDx treats images ``a``/``b``/``c`` of one Figure 1 patient as
different patients.

Licence: label files and scripts GNU AGPL 3.0; each image keeps its source collection's licence.
Cite: L. Wang, Z.Q. Lin, A. Wong, COVID-Net, Scientific Reports 10, 19549 (2020),
doi:10.1038/s41598-020-76550-z, and the source collections.

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("covidx", mirror="../shared/sources")  # doctest: +SKIP
    >>> len(result.records), result.problems.summary()  # no images in the mirror  # doctest: +SKIP
    (0, 'no input problems; also 30882 rows whose file is absent (missing-file 30882)')
    >>> table = covidx_membership(Path("../shared/sources/covidx"), ProblemLog())  # doctest: +SKIP
    >>> table.groupby("split").size().to_dict()  # doctest: +SKIP
    {'test': 400, 'train': 30482}
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd

from covid19_images.problems import ProblemLog
from covid19_images.records import Record, scoped_patient
from covid19_images.sources.base import Adapter, FileIndex, read_text
from covid19_images.sources.registry import register

SOURCE = "covidx"
SPLITS: Final[tuple[str, ...]] = ("train", "test")
LABEL_FILES: Final[dict[tuple[str, str], str]] = {
    (split, version): f"labels/{split}_COVIDx9{version}.txt"
    for split in SPLITS
    for version in ("A", "B")
}
CATALOG_SOURCE: Final[dict[str, str]] = {
    "cohen": "ieee8023",
    "fig1": "figure1",
    "actmed": "actualmed",
    "sirm": "covid19-radiography-database",
    "rsna": "rsna-pneumonia",
    "rnsa": "rsna-pneumonia",  # a typo of 199 train rows upstream
    "ricord": "ricord",
    "bimcv": "bimcv-covid19",
    "stonybrook": "stonybrook",
}
"""COVIDx source tag (fourth field of a label file) → catalog id of the collection."""
MEMBERSHIP_COLUMNS: Final[tuple[str, ...]] = (
    "covidx_source_tag",
    "catalog_source",
    "filename",
    "patient_id",
    "label_9a",
    "label_9b",
    "split",
)
_CONSISTENT = {("COVID-19", "positive"), ("normal", "negative"), ("pneumonia", "negative")}


@dataclass
class _Entry:
    """One image a label file names: what the V9A and V9B files say about it."""

    split: str
    filename: str
    patient_id: str
    tag: str
    label_9a: str | None = None
    label_9b: str | None = None
    row_9a: int | None = None
    row_9b: int | None = None

    @property
    def rel(self) -> str:
        return f"{self.split}/{self.filename}"


def covidx_membership(root: Path, log: ProblemLog) -> pd.DataFrame:
    """The COVIDx V9A/V9B label files of ``root`` as one table, one row per (split, image).

    Columns: ``covidx_source_tag`` (fourth field), ``catalog_source`` (the catalog id of the
    collection it names, None for a tag this module does not know; logged), ``filename``,
    ``patient_id`` (COVIDx's own, not scoped), ``label_9a`` (normal / pneumonia / COVID-19; None
    for V9B-only images), ``label_9b`` (positive / negative; None where no V9B file names it) and
    ``split`` (train / test). Bad rows and files are logged, never raised.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     (Path(tmp) / "labels").mkdir()
        ...     _ = (Path(tmp) / "labels/train_COVIDx9A.txt").write_text(
        ...         "3 a.jpeg pneumonia cohen\\nX b.png normal rnsa\\n")
        ...     _ = (Path(tmp) / "labels/test_COVIDx9A.txt").write_text("")
        ...     log = ProblemLog()
        ...     table = covidx_membership(Path(tmp), log)
        >>> for row in table[["catalog_source", "filename", "label_9a", "split"]].values:
        ...     print(*row)
        ieee8023 a.jpeg pneumonia train
        rsna-pneumonia b.png normal train
        >>> log.summary()
        '1 input problem: empty-file 1'
    """
    entries = _read_entries(root, log)
    rows = [
        (
            e.tag,
            CATALOG_SOURCE.get(e.tag.casefold()),
            e.filename,
            e.patient_id,
            e.label_9a,
            e.label_9b,
            e.split,
        )
        for e in entries
    ]
    return pd.DataFrame(rows, columns=list(MEMBERSHIP_COLUMNS), dtype=object)


@register
class Covidx(Adapter):
    """Adapter for the COVIDx V9A/V9B label files plus the Kaggle COVIDx CXR-2 images."""

    source = SOURCE

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        entries = _read_entries(root, log)
        indexes = {split: FileIndex.scan(root, split) for split in SPLITS}
        records: list[Record] = []
        for entry in entries:
            index = indexes[entry.split]
            found = index.find(entry.rel)
            if entry.label_9a is None:
                self._v9b_only(entry, found, index, log)
                continue
            file_9a = LABEL_FILES[entry.split, "A"]
            if found is None:
                log.add(
                    self.source,
                    entry.rel,
                    entry.row_9a,
                    "missing-file",
                    "skipped",
                    f"{file_9a} row {entry.row_9a}",
                )
                continue
            index.claim(found)
            catalog_source = CATALOG_SOURCE.get(entry.tag.casefold())
            attributes: dict[str, str] = {"covidx_source_tag": entry.tag}
            if catalog_source:
                attributes["catalog_source"] = catalog_source
            if entry.label_9b:
                attributes["label_9b"] = entry.label_9b
            record = Record(
                source=self.source,
                path_raw=found,
                source_row=entry.row_9a,
                patient_id=scoped_patient(self.source, entry.patient_id),
                modality="XR",
                finding_raw=entry.label_9a,
                label_origin="label_file",
                upstream_split=entry.split,
                attributes=attributes,
            )
            self.label(record, log, found)
            records.append(record)
        for index in indexes.values():
            index.report_orphans(self.source, log, "no COVIDx label file names this image")
        return records

    def _v9b_only(
        self, entry: _Entry, found: str | None, index: FileIndex, log: ProblemLog
    ) -> None:
        """An image only a V9B file names: not a V9A image, so reported instead of recorded."""
        file_9b = LABEL_FILES[entry.split, "B"]
        if found is None:
            log.add(
                self.source,
                entry.rel,
                entry.row_9b,
                "missing-file",
                "skipped",
                f"{file_9b} row {entry.row_9b} (a V9B-only image, not in the V9A file)",
            )
            return
        index.claim(found)
        log.add(
            self.source,
            found,
            None,
            "orphan-file",
            "skipped",
            f"named only by {file_9b} row {entry.row_9b} ({entry.label_9b}), not by the V9A "
            "label file this adapter's records follow",
        )


def _read_entries(root: Path, log: ProblemLog) -> list[_Entry]:
    """Every (split, file name) the V9A and V9B label files name, V9A rows first."""
    entries: list[_Entry] = []
    for split in SPLITS:
        by_name: dict[str, _Entry] = {}
        for version in ("A", "B"):
            rel = LABEL_FILES[split, version]
            if version == "B" and not (root / rel).is_file():
                continue  # V9B files are optional
            rows = _read_label_file(root, rel, log)
            _log_unknown_tags(rel, rows, log)
            for n, (patient, filename, label, tag) in rows:
                entry = by_name.get(filename)
                if entry is None:
                    entry = by_name[filename] = _Entry(split, filename, patient, tag)
                    entries.append(entry)
                elif (entry.row_9a if version == "A" else entry.row_9b) is not None:
                    first = entry.row_9a if version == "A" else entry.row_9b
                    log.add(
                        SOURCE,
                        entry.rel,
                        n,
                        "duplicate-row",
                        "skipped",
                        f"{rel} rows {first} and {n} name the same image",
                    )
                    continue
                else:
                    _check_agreement(entry, patient, label, tag, rel, n, log)
                if version == "A":
                    entry.label_9a, entry.row_9a = label, n
                else:
                    entry.label_9b, entry.row_9b = label, n
    return entries


def _read_label_file(root: Path, rel: str, log: ProblemLog) -> list[tuple[int, list[str]]]:
    """``(line number, [patient_id, filename, label, source])`` for each usable line."""
    text = read_text(root / rel, SOURCE, log, rel)
    if text is None:
        return []
    if not text.strip():
        log.add(SOURCE, rel, None, "empty-file", "skipped", "the label file has no rows")
        return []
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4:
            log.add(
                SOURCE,
                rel,
                n,
                "bad-value",
                "skipped",
                f"expected 'patient_id filename label source', got {line.strip()!r}",
            )
            continue
        # A file name with spaces splits into several fields: the name is what lies between.
        rows.append((n, [fields[0], " ".join(fields[1:-2]), fields[-2], fields[-1]]))
    return rows


def _log_unknown_tags(rel: str, rows: list[tuple[int, list[str]]], log: ProblemLog) -> None:
    """One problem per source tag of a file that names no collection this module knows."""
    counts = Counter(fields[3] for _, fields in rows)
    first: dict[str, int] = {}
    for n, fields in rows:
        first.setdefault(fields[3], n)
    for tag, count in counts.items():
        if tag.casefold() not in CATALOG_SOURCE:
            log.add(
                SOURCE,
                rel,
                first[tag],
                "bad-value",
                "kept",
                f"COVIDx source tag {tag!r} ({count} rows, first at row {first[tag]}) names no "
                "known collection; catalog_source left blank",
            )


def _check_agreement(
    entry: _Entry, patient: str, label: str, tag: str, rel: str, n: int, log: ProblemLog
) -> None:
    """The V9B row of an image should repeat its V9A patient, source and (mapped) label."""
    differences = []
    if patient != entry.patient_id:
        differences.append(f"patient {patient!r} vs {entry.patient_id!r}")
    if tag != entry.tag:
        differences.append(f"source {tag!r} vs {entry.tag!r}")
    label_9a = entry.label_9a if rel.endswith("B.txt") else label
    label_9b = label if rel.endswith("B.txt") else entry.label_9b
    if label_9a and label_9b and (label_9a, label_9b) not in _CONSISTENT:
        differences.append(f"V9A label {label_9a!r} vs V9B label {label_9b!r}")
    if differences:
        log.add(
            SOURCE,
            entry.rel,
            n,
            "bad-value",
            "kept",
            f"{rel} row {n} disagrees with the other label file: {'; '.join(differences)}; "
            "the V9A row is kept",
        )
