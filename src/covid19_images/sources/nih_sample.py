"""Random Sample of NIH Chest X-ray Dataset (Kaggle ``nih-chest-xrays/sample``).

A random 5% sample (5,606 frontal radiographs of 4,230 patients) of the NIH Clinical Center
ChestX-ray14 collection: ``sample/sample_labels.csv`` (CRLF line endings) names each PNG under
``sample/images/`` (``Image Index``, e.g. ``00000013_005.png``) with its ``Finding Labels`` (the
14 findings joined by ``|``, or ``No Finding``), ``Patient ID`` and ``Follow-up #`` (several
images per patient), ``Patient Age`` (``060Y``; one row in months, one in days, one ``411Y``),
``Patient Gender`` and ``View Position`` (PA or AP). The films predate COVID-19: papers use them
as normal or non-COVID controls.

Labels were text-mined from the radiology reports by NLP (Wang et al. 2017), so
``label_origin`` is ``automatic``; the crosswalk maps ``No Finding`` to normal, any combination
with Pneumonia to pneumonia_other and every other combination to other_finding, while
``finding_raw`` keeps the whole ``|``-joined string. Whether a film is CR or DX is not stated, so
``modality`` is ``XR``. The original acquisition size and pixel spacing (the Kaggle PNGs are
resized to 1024 x 1024) are kept in ``attributes``.

Licence: CC0 1.0 (Kaggle dataset page); the NIH Clinical Center asks to be acknowledged as the
provider. Cite: X. Wang et al., ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks,
IEEE CVPR 2017, doi:10.1109/CVPR.2017.369.

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("nih-sample", mirror="../shared/sources")  # doctest: +SKIP
    >>> len(result.records), result.problems.summary()  # labels file only  # doctest: +SKIP
    (0, 'no input problems; also 5606 rows whose file is absent (missing-file 5606)')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from covid19_images.problems import ProblemLog
from covid19_images.records import Record, scoped_patient
from covid19_images.sources.base import Adapter, FileIndex, parse_age, parse_sex, read_table
from covid19_images.sources.registry import register

LABELS_FILES: Final = ("sample/sample_labels.csv", "sample_labels.csv")
"""Where the labels file may be: upstream's place first, then next to ``sample/`` (a common
result of unzipping the Kaggle archive)."""
IMAGES: Final = "sample/images"
REQUIRED: Final = ("Image Index", "Finding Labels", "Patient ID")
MAX_AGE: Final = 120.0
NUMERIC_ATTRIBUTES: Final = {
    "Follow-up #": "follow_up",
    "OriginalImageWidth": "original_width",
    "OriginalImageHeight": "original_height",
    "OriginalImagePixelSpacing_x": "original_pixel_spacing_x",
    "OriginalImagePixelSpacing_y": "original_pixel_spacing_y",
}


@register
class NihSample(Adapter):
    """Adapter for the Kaggle random sample of NIH ChestX-ray14."""

    source = "nih-sample"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        labels_rel = next((r for r in LABELS_FILES if (root / r).is_file()), LABELS_FILES[0])
        index = FileIndex.scan(root)
        table = read_table(root, labels_rel, self.source, log, required=REQUIRED)
        if table is None:
            index.report_orphans(self.source, log, f"{labels_rel} could not be read")
            return []
        by_name: dict[str, str] = {}
        for rel in sorted(index.files.values(), key=lambda r: (not r.startswith(IMAGES), r)):
            by_name.setdefault(Path(rel).name.casefold(), rel)
        licence = self.entry.license.spdx or self.entry.license.name
        records: list[Record] = []
        seen: dict[str, int] = {}
        for row in table.to_dict("records"):
            n = int(row["_row"])
            name = row["Image Index"].strip()
            if not name:
                log.add(self.source, labels_rel, n, "bad-value", "skipped", "blank Image Index")
                continue
            if name.casefold() in seen:
                log.add(
                    self.source,
                    labels_rel,
                    n,
                    "duplicate-row",
                    "skipped",
                    f"rows {seen[name.casefold()]} and {n} name the same image {name!r}",
                )
                continue
            seen[name.casefold()] = n
            found = index.find(f"{IMAGES}/{name}") or by_name.get(name.casefold())
            if found is None:
                log.add(self.source, f"{IMAGES}/{name}", n, "missing-file", "skipped", f"row {n}")
                continue
            index.claim(found)
            record = Record(
                source=self.source,
                path_raw=found,
                source_row=n,
                patient_id=scoped_patient(self.source, row["Patient ID"]),
                modality="XR",
                finding_raw=row["Finding Labels"],
                label_origin="automatic",
                sex=parse_sex(row.get("Patient Gender")),
                license=licence,
                attributes=_numbers(row),
            )
            self._age(record, row.get("Patient Age", ""), log)
            self.view(record, row.get("View Position"), log, found)
            self.label(record, log, found)
            records.append(record)
        index.report_orphans(self.source, log, f"no {labels_rel} row names this image")
        return records

    def _age(self, record: Record, raw: str, log: ProblemLog) -> None:
        """Age in years; an unparseable or implausible value is kept out and reported."""
        if not raw.strip():
            return
        age = parse_age(raw)
        if age is not None and age <= MAX_AGE:
            record.age = age
            return
        log.add(
            self.source,
            record.path_raw,
            record.source_row,
            "bad-value",
            "kept",
            f"Patient Age {raw!r} is not a plausible age; age left empty",
        )
        record.problems.append("bad-value")


def _numbers(row: Mapping[Any, Any]) -> dict[str, int | float]:
    """The follow-up number and the original size and spacing, where they parse as numbers."""
    values: dict[str, int | float] = {}
    for column, key in NUMERIC_ATTRIBUTES.items():
        text = str(row.get(column, "")).strip()
        try:
            number = float(text)
        except ValueError:
            continue
        if not math.isfinite(number):
            continue
        values[key] = int(number) if number.is_integer() and "." not in text else number
    return values
