"""Actualmed COVID-19 Chest X-ray Dataset Initiative (agchung, COVID-Net team).

Chest X-rays compiled by the COVID-Net team (DarwinAI and the University of Waterloo) with
Actualmed and Universitat Jaume I, one of the sources of COVIDx. One ``metadata.csv`` row per
image, in the ieee8023 schema, with the file in ``imagename`` (``images/<imagename>``); only
``patientid``, ``finding``, ``view``, ``modality``, ``imagename`` and ``notes`` are filled. The
finding is ``COVID-19``, ``No finding`` or blank: ``No finding`` means COVID-19 was excluded
(notes: ``Negative (covid-19 viral infection is excluded)``), not that the film is normal, so the
crosswalk maps it to ``unknown``; blank findings (notes: ``Inconclusive``) are ``unknown`` too.
The notes are kept in ``attributes`` with the acquisition date they give (``date taken
(YYYYMMDD): 20200313``) reduced to its year (``year_taken``): a full date identifies an
examination, and no output of this package carries one. File names are DICOM-UID-like strings
that start with the DICOM modality (``CR.1.2.840...png``, ``DX.1.2.840...png``): ``modality``
is ``CR`` or ``DX`` from that prefix, ``XR`` where a name has neither. The PNGs are stored as
RGB although the radiographs are grey.

Licence: none stated; the README says the data are intended for research purposes only.
Cite: Actualmed COVID-19 Chest X-ray Dataset Initiative,
https://github.com/agchung/Actualmed-COVID-chestxray-dataset, and Wang, Lin and Wong, COVID-Net,
Scientific Reports 10, 19549 (2020), doi:10.1038/s41598-020-76550-z.

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("actualmed", mirror="../shared/sources")  # doctest: +SKIP
    >>> len(result.records), result.problems.summary()  # doctest: +SKIP
    (4, 'no input problems; also 234 rows whose file is absent (missing-file 234)')
    >>> modality_of("DX.1.2.840.113564.1722810162.20200320112920531100.1203801020003.png")
    'DX'
"""

from __future__ import annotations

import re
from pathlib import Path

from covid19_images.problems import ProblemLog
from covid19_images.records import Record, scoped_patient
from covid19_images.sources.base import Adapter, FileIndex, parse_age, parse_sex, read_table
from covid19_images.sources.registry import register

METADATA = "metadata.csv"
IMAGES = "images"
_DATE_TAKEN = re.compile(r"date taken \(YYYYMMDD\):\s*(\d{8})")


def modality_of(imagename: str) -> str:
    """``CR`` or ``DX`` from the file name's DICOM-modality prefix, else ``XR``."""
    prefix = imagename.strip().split(".", 1)[0].upper()
    return prefix if prefix in {"CR", "DX"} else "XR"


@register
class Actualmed(Adapter):
    """Adapter for ``agchung/Actualmed-COVID-chestxray-dataset``."""

    source = "actualmed"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        table = read_table(
            root,
            METADATA,
            self.source,
            log,
            required=("patientid", "finding", "view", "imagename"),
        )
        images = FileIndex.scan(root, IMAGES)
        if table is None:
            images.report_orphans(self.source, log, f"{METADATA} could not be read")
            return []
        records: list[Record] = []
        for row in table.to_dict("records"):
            n = int(row["_row"])
            name = row["imagename"].strip()
            if not name:
                log.add(self.source, METADATA, n, "bad-value", "skipped", "blank imagename")
                continue
            found = images.take(f"{IMAGES}/{name}", n, self.source, log, METADATA)
            if found is None:
                continue
            notes = row.get("notes", "").strip()
            record = Record(
                source=self.source,
                path_raw=found,
                source_row=n,
                patient_id=scoped_patient(self.source, row["patientid"]),
                modality=modality_of(name),
                finding_raw=row["finding"],
                label_origin="metadata",
                age=parse_age(row.get("age")),
                sex=parse_sex(row.get("sex")),
                attributes=_attributes(notes),
            )
            self.view(record, row["view"], log, found)
            self.label(record, log, found)
            records.append(record)
        images.report_orphans(self.source, log, f"no {METADATA} row names this image")
        return records


def _attributes(notes: str) -> dict[str, str]:
    """The notes, with the acquisition date they state reduced to its year."""
    match = _DATE_TAKEN.search(notes)
    if match:
        notes = _DATE_TAKEN.sub("date taken (YYYY): " + match.group(1)[:4], notes)
    attributes = {"notes": notes} if notes else {}
    if match:
        attributes["year_taken"] = match.group(1)[:4]
    return attributes
