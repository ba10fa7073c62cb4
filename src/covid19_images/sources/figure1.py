"""Figure 1 COVID-19 Chest X-ray Dataset Initiative (agchung, COVID-Net team).

Chest X-rays contributed by clinicians through the Figure 1 app and compiled by the COVID-Net team
(DarwinAI and the University of Waterloo) as one of the sources of COVIDx. One ``metadata.csv``
row per image; columns follow the ieee8023 schema (``patientid``, ``offset``, ``sex``, ``age``,
``finding``, ``view``, ``modality``, ``notes``, ...) but there is **no file-name column**: the
image of a row is ``images/<patientid>.jpg`` (or ``.png``). Several images of one patient carry the
patient's id plus a trailing letter (``COVID-00003a``, ``COVID-00003b``); the patient id of a
record is the id without that letter (``figure1:COVID-00003``), as upstream names its files. The
metadata file is not valid UTF-8 (a Windows-1252 degree sign and apostrophes in ``notes``): it is
read as Windows-1252 and a ``bad-encoding`` problem is logged. Findings and views are blank in
many rows (blank finding: label ``unknown``, kept); ages such as ``early 40s`` are kept as text in
``attributes["age_raw"]`` with a ``bad-value`` problem.

Licence: none stated; the README says the data are for research purposes only.
Cite: Figure 1 COVID-19 Chest X-ray Dataset Initiative,
https://github.com/agchung/Figure1-COVID-chestxray-dataset, and Wang, Lin and Wong, COVID-Net,
Scientific Reports 10, 19549 (2020), doi:10.1038/s41598-020-76550-z.

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("figure1", mirror="../shared/sources")  # doctest: +SKIP
    >>> len(result.records), len({r.patient_id for r in result.records})  # doctest: +SKIP
    (55, 48)
    >>> patient_of("COVID-00003b"), patient_of("COVID-00004")
    ('COVID-00003', 'COVID-00004')
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
MODALITY = {"x-ray": "XR", "xray": "XR", "ct": "CT"}
KEPT_COLUMNS = ("offset", "survival", "temperature", "pO2 saturation", "artifacts/distortion")
_IMAGE_LETTER = re.compile(r"(?<=\d)[a-z]$")
_PLAIN_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")


def patient_of(patientid: str) -> str:
    """The patient of a Figure 1 image id: the id without its trailing image letter."""
    return _IMAGE_LETTER.sub("", patientid.strip())


@register
class Figure1(Adapter):
    """Adapter for ``agchung/Figure1-COVID-chestxray-dataset``."""

    source = "figure1"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        table = read_table(
            root, METADATA, self.source, log, required=("patientid", "finding", "view")
        )
        images = FileIndex.scan(root, IMAGES)
        if table is None:
            images.report_orphans(self.source, log, f"{METADATA} could not be read")
            return []
        records: list[Record] = []
        for row in table.to_dict("records"):
            n = int(row["_row"])
            image_id = row["patientid"].strip()
            if not image_id:
                log.add(self.source, METADATA, n, "bad-value", "skipped", "blank patientid")
                continue
            # No file-name column: the image is images/<patientid>.jpg or .png.
            stem = images.find_stem(IMAGES, image_id) or f"{IMAGES}/{image_id}.jpg"
            found = images.take(stem, n, self.source, log, METADATA)
            if found is None:
                continue
            record = Record(
                source=self.source,
                path_raw=found,
                source_row=n,
                patient_id=scoped_patient(self.source, patient_of(image_id)),
                modality="XR",
                finding_raw=row["finding"],
                label_origin="metadata",
                sex=parse_sex(row.get("sex")),
                attributes={k: row[k].strip() for k in KEPT_COLUMNS if row.get(k, "").strip()},
            )
            self._modality(record, row.get("modality", ""), log)
            self._age(record, row.get("age", ""), log)
            self.view(record, row["view"], log, found)
            self.label(record, log, found)
            records.append(record)
        images.report_orphans(self.source, log, f"no {METADATA} row names this image")
        return records

    def _modality(self, record: Record, raw: str, log: ProblemLog) -> None:
        """``X-ray`` (every row upstream) is XR; a blank cell too; anything else is a problem."""
        text = raw.strip()
        if not text:
            return
        modality = MODALITY.get(text.casefold())
        if modality is None:
            log.add(
                self.source,
                record.path_raw,
                record.source_row,
                "bad-value",
                "kept",
                f"modality {text!r} is neither X-ray nor CT; kept as XR",
            )
            record.problems.append("bad-value")
            return
        record.modality = modality

    def _age(self, record: Record, raw: str, log: ProblemLog) -> None:
        """Parse the age; keep upstream's text when it is not a plain number (``50+``)."""
        text = raw.strip()
        if not text:
            return
        record.age = parse_age(text)
        if not _PLAIN_NUMBER.match(text):
            record.attributes["age_raw"] = text
        if record.age is None:
            log.add(
                self.source,
                record.path_raw,
                record.source_row,
                "bad-value",
                "kept",
                f"age {text!r} is not a number of years; kept as text in attributes.age_raw",
            )
            record.problems.append("bad-value")
