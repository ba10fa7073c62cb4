"""COVID-CT-MD (Afshar et al., Scientific Data 2021; Babak Imaging Center, Tehran).

Volumetric chest CT as DICOM: 169 COVID-19, 60 CAP and 76 normal subjects, one folder per
subject inside a class folder, and slice- and lobe-level infection labels for 54 COVID-19 and
25 CAP subjects::

    Index.csv                          (Label Index, Diagnosis, Relative Path, Folder/ID)
    Slice-level-labels.npy             (79 x 200: subject x slice, 0/1)
    Lobe-level-labels.npy              (79 x 200 x 5: LLL, LUL, RLL, RML, RUL)
    Slice-level-labels-updated-1.npy   (UPDATE 1, Sep 2021: P001 and P006 corrected)
    Lobe-level-labels-updated-1.npy
    COVID-19 subjects/P001/98C14734-ASSH_1.dcm ...   (any depth: 'Sample data/' in the repo)
    CAP subjects/cap001/...
    Normal subjects/.../...

Each subject folder is scanned on its own with
:func:`~covid19_images.process.ct.dicom_series.scan_series` and every usable series group
becomes one volume record (see :func:`series_records`): ``attributes["format"] =
"dicom-series"``, ``path_raw`` the subject folder, ``attributes["files"]`` the slices in order
along the slice normal, ``series_id`` the group key. The class folder is ``finding_raw``
(``label_origin="folder"``; ``COVID-19 subjects`` → ``covid19``, ``CAP subjects`` → ``cap``,
``Normal subjects`` → ``normal``, and the ``... Cases`` names of upstream's analysis script);
Index.csv's Diagnosis must agree (else a ``bad-value`` problem, the folder wins). The patient is
the folder name, upstream's public subject id (``covid-ct-md:P001``). Age and sex come from the
first slice's DICOM header (PatientAge, PatientSex: the only patient fields upstream kept).

Slice and lobe labels (``attributes["slice_labels"]``, ``attributes["lobe_labels"]``,
``[LLL, LUL, RLL, RML, RUL]`` per slice; tag ``slice-labels``):

- Array row = the 0-based position of the subject's row in Index.csv, not its Label Index: the
  Label Index skips 43 and reaches 79 while the arrays have 79 rows, and upstream's
  ``statistical_analysis.py`` takes rows 0-53 as the COVID-19 and 54-78 as the CAP subjects.
  Both numbers are kept (``attributes["label_row"]``, ``attributes["label_index"]``).
- Array column 0 is the most superior (head-end) slice: in every one of the 47 labelled subjects
  with infection in both lower and upper lobes, the lower-lobe columns come after the upper-lobe
  ones. This is upstream's "sort by Slice Location" in descending order; it is not the order of
  the file names (``..._2.dcm`` is InstanceNumber 10: the names number the instances sorted as
  text). The adapter stores the labels reversed, from the feet to the head
  (``attributes["slice_labels_order"] = "inferior-to-superior"``): the order of the processed
  axial slices (slice ``k`` of the CT pipeline) and of ``attributes["files"]`` for an axial
  series whose slice normal points to the head, as in P001 (scan_series orders files along the
  normal), so label ``i`` belongs to ``files[i]`` there.
- The arrays are padded to 200 slices: labels are cut to the series' slice count; a label of 1
  past the last slice, or a series longer than the array, is a ``bad-value`` problem.
- When ``Slice-level-labels-updated-1.npy`` / ``Lobe-level-labels-updated-1.npy`` exist they are
  used (upstream's UPDATE 1) and the records get the tag ``labels-update-1``.

A subject of Index.csv without a folder is one ``missing-file`` problem (``skipped``). A subject
id found in two class folders (the repository's ``Sample data/`` unpacked beside the figshare
folders) keeps the shallower folder; the other is a ``duplicate`` problem. ``.dcm`` files
outside a subject folder are ``orphan-file`` problems.

Licence: not stated in the repository (figshare's record states the terms). Cite: Afshar P et
al., COVID-CT-MD, COVID-19 computed tomography scan dataset applicable in machine learning and
deep learning. Scientific Data 8, 121 (2021), doi:10.1038/s41597-021-00900-3.

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("covid-ct-md", mirror="../shared/sources")  # doctest: +SKIP
    >>> len(result.records), result.records[0].patient_id  # doctest: +SKIP
    (1, 'covid-ct-md:P001')
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from covid19_images.problems import ProblemLog
from covid19_images.records import Record, scoped_patient
from covid19_images.sources.base import Adapter, read_table
from covid19_images.sources.dicom import SeriesRecord, series_records
from covid19_images.sources.registry import register

INDEX: Final = "Index.csv"
INDEX_REQUIRED: Final = ("Label Index", "Diagnosis", "Folder/ID")
SLICE_LABELS: Final = ("Slice-level-labels-updated-1.npy", "Slice-level-labels.npy")
LOBE_LABELS: Final = ("Lobe-level-labels-updated-1.npy", "Lobe-level-labels.npy")
"""Label files in order of preference: upstream's UPDATE 1 first."""
LOBES: Final = ("LLL", "LUL", "RLL", "RML", "RUL")
_CLASS_FOLDER = re.compile(r"^(covid-19|cap|normal)(\s+(subjects|cases))?$", re.IGNORECASE)
_FOLDER_OF: Final = {
    "covid19": "COVID-19 subjects",
    "cap": "CAP subjects",
    "normal": "Normal subjects",
}

# COVID-CT-MD ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _IndexRow:
    row: int
    position: int
    label_index: str
    diagnosis: str
    subject: str


@dataclass
class _Labels:
    slices: np.ndarray[Any, Any] | None
    lobes: np.ndarray[Any, Any] | None
    files: list[str]
    updated: bool


@register
class CovidCtMd(Adapter):
    """Adapter for COVID-CT-MD (GitHub repository plus the figshare subject folders)."""

    source = "covid-ct-md"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        index = self._index(root, log)
        labels = self._labels(root, log)
        subjects = self._subjects(root, log)
        records: list[Record] = []
        for subject, (folder, class_folder) in sorted(subjects.items()):
            made = series_records(self.source, root, folder, log)
            folder_rel = folder.relative_to(root).as_posix()
            if not made:
                log.add(
                    self.source,
                    folder_rel,
                    None,
                    "missing-file",
                    "skipped",
                    "the subject folder holds no usable DICOM series",
                )
                continue
            row = index.get(subject.casefold())
            for item in made:
                record = item.record
                record.patient_id = scoped_patient(self.source, subject)
                record.finding_raw = class_folder
                record.label_origin = "folder"
                self.label(record, log, folder_rel)
                if row is not None:
                    record.source_row = row.row
                    self._check_diagnosis(record, row, log)
            if row is not None:
                self._attach_labels(_labelled(made), row, labels, log)
            records.extend(item.record for item in made)
        present = {subject.casefold() for subject in subjects}
        for key, row in sorted(index.items()):
            if key not in present:
                expected = self.crosswalk.label(self.source, row.diagnosis)[0]
                log.add(
                    self.source,
                    f"{_FOLDER_OF.get(expected, row.diagnosis)}/{row.subject}",
                    row.row,
                    "missing-file",
                    "skipped",
                    f"{INDEX} row {row.row} names subject {row.subject} ({row.diagnosis}), "
                    "whose folder is absent; its slice and lobe labels are not used",
                )
        return records

    def _index(self, root: Path, log: ProblemLog) -> dict[str, _IndexRow]:
        """Subject id (case-folded) → its Index.csv row and label-array row."""
        table = read_table(root, INDEX, self.source, log, required=INDEX_REQUIRED)
        if table is None:
            return {}
        rows: dict[str, _IndexRow] = {}
        for position, row in enumerate(table.to_dict("records")):
            subject = str(row["Folder/ID"]).strip()
            n = int(row["_row"])
            if not subject:
                log.add(self.source, INDEX, n, "bad-value", "skipped", "blank Folder/ID")
                continue
            if subject.casefold() in rows:
                first = rows[subject.casefold()].row
                log.add(
                    self.source,
                    INDEX,
                    n,
                    "duplicate-row",
                    "skipped",
                    f"rows {first} and {n} name subject {subject}",
                )
                continue
            rows[subject.casefold()] = _IndexRow(
                row=n,
                position=position,
                label_index=str(row["Label Index"]).strip(),
                diagnosis=str(row["Diagnosis"]).strip(),
                subject=subject,
            )
        return rows

    def _labels(self, root: Path, log: ProblemLog) -> _Labels:
        """The slice and lobe label arrays (updated files preferred); None where unusable."""
        slices, slice_file = self._load(root, SLICE_LABELS, 2, log)
        lobes, lobe_file = self._load(root, LOBE_LABELS, 3, log)
        if lobes is not None and lobes.shape[2] != len(LOBES):
            log.add(
                self.source,
                lobe_file,
                None,
                "unreadable-metadata",
                "skipped",
                f"lobe labels have {lobes.shape[2]} lobes, not {len(LOBES)}",
            )
            lobes = None
        files = [f for f, a in ((slice_file, slices), (lobe_file, lobes)) if a is not None]
        return _Labels(slices, lobes, files, any("updated" in f for f in files))

    def _load(
        self, root: Path, names: tuple[str, ...], ndim: int, log: ProblemLog
    ) -> tuple[np.ndarray[Any, Any] | None, str]:
        name = next((n for n in names if (root / n).is_file()), names[-1])
        if not (root / name).is_file():
            return None, name
        try:
            array = np.load(root / name, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            log.add(self.source, name, None, "unreadable-metadata", "skipped", str(exc))
            return None, name
        if array.ndim != ndim:
            log.add(
                self.source,
                name,
                None,
                "unreadable-metadata",
                "skipped",
                f"expected a {ndim}-D array, found shape {array.shape}",
            )
            return None, name
        return array, name

    def _subjects(self, root: Path, log: ProblemLog) -> dict[str, tuple[Path, str]]:
        """Subject id → (subject folder, class folder name); duplicates and strays reported."""
        found: dict[str, list[tuple[Path, str]]] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            here = Path(dirpath)
            parts = here.relative_to(root).parts
            classes = [i for i, part in enumerate(parts) if _CLASS_FOLDER.match(part)]
            if classes and classes[-1] == len(parts) - 1:  # a class folder: children are subjects
                for name in dirnames:
                    if not _CLASS_FOLDER.match(name) and not name.startswith("."):
                        found.setdefault(name.casefold(), []).append((here / name, here.name))
            if classes and classes[-1] < len(parts) - 1:
                continue  # inside a subject folder: scan_series accounts for these files
            for name in sorted(filenames):
                if name.casefold().endswith(".dcm"):
                    log.add(
                        self.source,
                        (here / name).relative_to(root).as_posix(),
                        None,
                        "orphan-file",
                        "skipped",
                        "a DICOM file outside any subject folder of a class folder",
                    )
        subjects: dict[str, tuple[Path, str]] = {}
        for places in found.values():
            places.sort(key=lambda p: (len(p[0].relative_to(root).parts), p[0].as_posix()))
            keep = places[0]
            subjects[keep[0].name] = keep
            for other, class_folder in places[1:]:
                log.add(
                    self.source,
                    other.relative_to(root).as_posix(),
                    None,
                    "duplicate",
                    "skipped",
                    f"subject {other.name} ({class_folder}) is also in "
                    f"{keep[0].relative_to(root).as_posix()}, which is kept",
                )
        return subjects

    def _check_diagnosis(self, record: Record, row: _IndexRow, log: ProblemLog) -> None:
        stated = self.crosswalk.label(self.source, row.diagnosis)[0]
        if stated != record.label:
            log.add(
                self.source,
                record.path_raw,
                row.row,
                "bad-value",
                "kept",
                f"{INDEX} row {row.row} says {row.diagnosis!r} but the subject is in "
                f"{record.finding_raw!r}; the folder's label {record.label} is kept",
            )
            record.problems.append("bad-value")

    def _attach_labels(
        self, item: SeriesRecord | None, row: _IndexRow, labels: _Labels, log: ProblemLog
    ) -> None:
        """Slice and lobe labels of the subject's row, from the feet to the head."""
        if item is None or (labels.slices is None and labels.lobes is None):
            return
        record = item.record
        n = len(record.attributes["files"])
        arrays = {"slice_labels": labels.slices, "lobe_labels": labels.lobes}
        problems = []
        for key, array in arrays.items():
            if array is None:
                continue
            if row.position >= array.shape[0]:
                problems.append(f"{key}: the arrays have no row {row.position}")
                arrays[key] = None
            elif n > array.shape[1]:
                problems.append(f"{key}: the series has {n} slices, the array {array.shape[1]}")
                arrays[key] = None
            elif np.any(array[row.position, n:]):
                problems.append(f"{key}: a label of 1 lies past the series' {n} slices")
        slices, lobes = arrays["slice_labels"], arrays["lobe_labels"]
        if slices is not None or lobes is not None:
            record.attributes["label_row"] = row.position
            record.attributes["label_index"] = row.label_index
            record.attributes["slice_labels_order"] = "inferior-to-superior"
            record.attributes["label_files"] = labels.files
            if slices is not None:  # upstream runs head to feet: reversed
                values = slices[row.position, :n].astype(int)[::-1]
                record.attributes["slice_labels"] = values.tolist()
            if lobes is not None:
                values = lobes[row.position, :n, :].astype(int)[::-1]
                record.attributes["lobe_labels"] = values.tolist()
                record.attributes["lobe_names"] = list(LOBES)
            record.tags.append("slice-labels")
            if labels.updated:
                record.tags.append("labels-update-1")
        for detail in problems:
            log.add(self.source, record.path_raw, row.row, "bad-value", "kept", detail)
            record.problems.append("bad-value")


def _labelled(made: list[SeriesRecord]) -> SeriesRecord | None:
    """The series the labels describe: the longest original axial one (else the longest)."""
    axial = [m for m in made if m.group.orientation == "AXIAL" and not m.group.derived]
    pool = axial or made
    return max(pool, key=lambda m: len(m.group.files)) if pool else None
