"""ieee8023 COVID-19 Image Data Collection (Cohen et al., 2020).

Chest X-rays and some CT images gathered from papers and case sites, one ``metadata.csv`` row per
image (``folder``/``filename``), several images per patient (``offset`` in days), a licence per
image, and annotations: model-generated lung masks (``annotations/lungVAE-masks``) and expert
severity scores (``annotations/covid-severity-scores.csv``). Findings come in the flat style of
2020 (``COVID-19, ARDS``) and the hierarchical style of later commits
(``Pneumonia/Viral/COVID-19``); the crosswalk maps both. CT rows are kept with ``modality="CT"``;
X-ray recipes leave them out.

Cite: Cohen et al., COVID-19 Image Data Collection: Prospective Predictions Are the Future,
MELBA 2020:002 (arXiv:2006.11988). Licence: per image (``license`` column).

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("ieee8023", mirror="../shared/sources")  # doctest: +SKIP
    >>> len(result.records)  # doctest: +SKIP
    178
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from covid19_images.problems import ProblemLog
from covid19_images.records import Record, scoped_patient
from covid19_images.sources.base import (
    Adapter,
    FileIndex,
    parse_age,
    parse_sex,
    read_table,
    read_text,
)
from covid19_images.sources.registry import register

METADATA = "metadata.csv"
MASKS = "annotations/lungVAE-masks"
SEVERITY = "annotations/covid-severity-scores.csv"
MODALITY = {"x-ray": "XR", "xray": "XR", "ct": "CT"}
KEPT_COLUMNS = ("offset", "survival", "intubated", "went_icu", "RT_PCR_positive", "doi", "url")


@register
class Ieee8023(Adapter):
    """Adapter for ``ieee8023/covid-chestxray-dataset``."""

    source = "ieee8023"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        table = read_table(
            root,
            METADATA,
            self.source,
            log,
            required=("patientid", "finding", "view", "modality", "folder", "filename"),
        )
        images = FileIndex.scan(root, "images")
        volumes = FileIndex.scan(root, "volumes", suffixes=(".gz", ".nii"))
        if table is None:
            images.report_orphans(self.source, log, f"{METADATA} could not be read")
            volumes.report_orphans(self.source, log, f"{METADATA} could not be read")
            return []
        masks = _mask_index(root)
        severity = _severity_scores(root, self.source, log)
        records: list[Record] = []
        for row in table.to_dict("records"):
            n = int(row["_row"])
            rel = f"{row['folder'].strip()}/{row['filename'].strip()}"
            index = volumes if row["folder"].strip() == "volumes" else images
            found = index.take(rel, n, self.source, log, METADATA)
            if found is None:
                continue
            modality_raw = row["modality"].strip()
            record = Record(
                source=self.source,
                path_raw=found,
                source_row=n,
                patient_id=scoped_patient(self.source, row["patientid"]),
                modality=MODALITY.get(modality_raw.casefold()),
                finding_raw=row["finding"],
                label_origin="metadata",
                age=parse_age(row.get("age")),
                sex=parse_sex(row.get("sex")),
                license=row.get("license", "").strip() or None,
                attributes={k: row[k] for k in KEPT_COLUMNS if row.get(k, "").strip()},
            )
            if record.modality is None:
                log.add(
                    self.source,
                    found,
                    n,
                    "bad-value",
                    "kept",
                    f"modality {modality_raw!r} is neither X-ray nor CT",
                )
                record.problems.append("bad-value")
            self.view(record, row["view"], log, found)
            self.label(record, log, found)
            stem = Path(found).stem
            if stem in masks:
                record.mask_paths = [masks[stem]]
            if Path(found).name in severity:
                record.attributes.update(severity[Path(found).name])
            records.append(record)
        images.report_orphans(self.source, log, f"no {METADATA} row names this image")
        volumes.report_orphans(self.source, log, f"no {METADATA} row names this volume")
        return records


def _mask_index(root: Path) -> dict[str, str]:
    """Image stem → mask path; upstream names masks ``<stem>_mask.png`` (a few ``.png.png``)."""
    index = FileIndex.scan(root, MASKS, suffixes=(".png",))
    masks: dict[str, str] = {}
    for rel in index.files.values():
        name = Path(rel).name
        for suffix in ("_mask.png.png", "_mask.png"):
            if name.endswith(suffix):
                masks[name[: -len(suffix)]] = rel
                break
    return masks


def _severity_scores(root: Path, source: str, log: ProblemLog) -> dict[str, dict[str, str]]:
    """File name → severity scores (mean of three raters), where the annotations are there.

    The file opens with ``##`` comment lines (title, licence, citation) before its header.
    """
    if not (root / SEVERITY).is_file():
        return {}
    text = read_text(root / SEVERITY, source, log, SEVERITY)
    if text is None:
        return {}
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    try:
        table = pd.read_csv(io.StringIO(body), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as exc:
        log.add(source, SEVERITY, None, "unreadable-metadata", "skipped", str(exc))
        return {}
    table.columns = [str(c).strip() for c in table.columns]
    wanted = ("filename", "geographic_mean", "opacity_mean")
    if not set(wanted) <= set(table.columns):
        log.add(
            source,
            SEVERITY,
            None,
            "missing-column",
            "skipped",
            f"needs {', '.join(wanted)}; has {', '.join(table.columns)}",
        )
        return {}
    scores: dict[str, dict[str, str]] = {}
    for n, row in enumerate(table.to_dict("records"), 1):
        name, geo, opacity = (str(row[c]).strip() for c in wanted)
        if not (name and geo and opacity):
            log.add(source, SEVERITY, n, "bad-value", "skipped", "a row without its scores")
            continue
        scores[name] = {"severity_geographic_mean": geo, "severity_opacity_mean": opacity}
    return scores
