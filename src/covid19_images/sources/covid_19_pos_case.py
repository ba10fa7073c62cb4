"""covid-19-pos-case (coyotespike/covid-19-pos-case): one chest CT study of unknown origin.

DICOM files named ``IM000nnn`` without extension, several series in one folder::

    COVID-19-pos-case/IM000116, IM000117      (series 1: two localizers)
    COVID-19-pos-case/IM001062 ... IM001085   (series 605: DERIVED/SECONDARY/REFORMATTED)
    ...                                       (1,864 files upstream)

Each folder that holds ``IM*`` files is one study and is scanned with
:func:`~covid19_images.process.ct.dicom_series.scan_series` (its plain files only, whatever their
names); every usable series group becomes one volume record through
:func:`~covid19_images.sources.dicom.series_records` (``format`` ``dicom-series``,
``files`` in slice order, ``derived`` and the tag ``derived`` for reformatted series).
Localizers and the lone image of another orientation in a series are ``excluded`` problems
(``localizer``, ``non-axial``) and never part of a volume.

Labels: none upstream. The README says the files' origin is unknown and the repository's name
("pos case") is the only hint of a COVID-19 diagnosis, so the label is ``unknown``
(``finding_raw`` None) and every record has the tag ``provenance-unknown``: the study is useful
to test DICOM handling, not to train or evaluate a classifier.

The headers still hold identifying fields (PatientName, PatientID, dates, station). None of them
is copied: the patient is ``covid19_images.deid.pseudonym(source, PatientID)`` (a salted HMAC)
and the study ``pseudonym(source, StudyInstanceUID)``; only age, sex, slice thickness, kernel
and manufacturer are read (see ``series_records``). Without a PatientID the patient stays None.

Licence: the repository's Unlicense is the copier's; the image owner's rights are unknown
(``license`` stays None).

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("covid-19-pos-case", mirror="../shared/sources")  # doctest: +SKIP
    >>> [len(r.attributes["files"]) for r in result.records]  # doctest: +SKIP
    [23]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from pydicom.dataset import Dataset

from covid19_images.deid import pseudonym
from covid19_images.errors import Covid19ImagesError
from covid19_images.problems import ProblemLog
from covid19_images.records import Record
from covid19_images.sources.base import Adapter
from covid19_images.sources.dicom import series_records
from covid19_images.sources.registry import register

STUDY_FILE: Final = re.compile(r"^IM\d+$", re.IGNORECASE)
"""Names of the study's DICOM files; a folder holding one is a study folder."""


def study_folders(root: Path) -> list[Path]:
    """Folders under ``root`` (``root`` included) that directly hold an ``IM<digits>`` file.

    Example:
        >>> study_folders(Path("/nonexistent"))
        []
    """
    if not root.is_dir():
        return []
    folders = {p.parent for p in root.rglob("*") if STUDY_FILE.match(p.name) and p.is_file()}
    return sorted(folders)


@register
class Covid19PosCase(Adapter):
    """Adapter for ``coyotespike/covid-19-pos-case``."""

    source = "covid-19-pos-case"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        folders = study_folders(root)
        if not folders:
            log.add(
                self.source,
                ".",
                None,
                "missing-file",
                "skipped",
                "no folder holds IM<number> DICOM files (expected COVID-19-pos-case/IM000000 ...)",
            )
            return []
        records: list[Record] = []
        for folder in folders:
            files = sorted(
                p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
            )
            for item in series_records(self.source, root, folder, log, files):
                record = item.record
                record.tags.append("provenance-unknown")
                self._pseudonyms(record, item.header, log)
                records.append(record)
        return records

    def _pseudonyms(self, record: Record, header: Dataset | None, log: ProblemLog) -> None:
        """Patient and study ids from the header, as salted pseudonyms only."""
        if header is None:
            return
        patient = str(header.get("PatientID", "") or "").strip()
        study = str(header.get("StudyInstanceUID", "") or "").strip()
        try:
            record.patient_id = pseudonym(self.source, patient) if patient else None
            record.study_id = pseudonym(self.source, study) if study else None
        except (Covid19ImagesError, OSError) as exc:
            log.add(
                self.source,
                record.path_raw,
                None,
                "bad-value",
                "kept",
                f"no pseudonym could be made ({type(exc).__name__}); patient left empty",
            )
            record.problems.append("bad-value")
