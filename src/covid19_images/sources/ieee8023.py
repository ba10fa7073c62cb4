"""ieee8023 COVID-19 Image Data Collection (Cohen et al., 2020).

Chest X-rays and some CT images gathered from papers and case sites, one ``metadata.csv`` row per
image (``folder``/``filename``), several images per patient (``offset`` in days), a licence per
image, and annotations: model-generated lung masks (``annotations/lungVAE-masks``, made by the
lungVAE model, not outlined by experts), expert severity scores
(``annotations/covid-severity-scores.csv``, the mean of three raters; the raters' own scores are
not published) and COCO boxes of the right and left lung
(``annotations/imageannotation_ai_lung_bounding_boxes.json``, kept as ``attributes["boxes"]``).
Findings come in the flat style of 2020 (``COVID-19, ARDS``) and the hierarchical style of later
commits (``Pneumonia/Viral/COVID-19``); the crosswalk maps both. CT rows are kept with
``modality="CT"``; X-ray recipes leave them out.

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
import json
import math
import re
from pathlib import Path
from typing import Any

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
BOXES = "annotations/imageannotation_ai_lung_bounding_boxes.json"
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
        boxes = coco_boxes(root, BOXES, self.source, log)
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
            entry = boxes.pop(Path(found).name.casefold(), None)
            if entry is not None:
                record.attributes.update(entry.attributes())
            records.append(record)
        for entry in boxes.values():
            log.add(
                self.source,
                f"images/{entry.file_name}",
                None,
                "missing-file",
                "skipped",
                f"{BOXES} image id {entry.image_id} names it ({len(entry.boxes)} boxes): "
                "no image of that name",
            )
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


class CocoImage:
    """One image of a COCO file and its boxes: ``(label, [x, y, width, height])`` in the pixels
    of the image as COCO's ``width`` and ``height`` declare it."""

    def __init__(self, image_id: object, file_name: str, frame: list[int] | None) -> None:
        self.image_id, self.file_name, self.frame = image_id, file_name, frame
        self.boxes: list[dict[str, Any]] = []

    def attributes(self) -> dict[str, Any]:
        """What a record keeps: ``boxes`` and ``boxes_frame`` (COCO's declared size)."""
        return {"boxes": self.boxes, "boxes_frame": self.frame}


def box_label(name: str) -> str:
    """A COCO category name as a label: lower case, words joined by ``_``.

    Example:
        >>> box_label("Right Lung"), box_label(" left-lung ")
        ('right_lung', 'left_lung')
    """
    return "_".join(re.findall(r"[a-z0-9]+", name.casefold()))


def coco_boxes(root: Path, rel: str, source: str, log: ProblemLog) -> dict[str, CocoImage]:
    """The boxes of a COCO file, by image file name (case folded); ``{}`` when it is absent.

    Every unusable part is one problem row and the rest is read: a file that is not JSON or
    lacks ``images``/``annotations`` (``unreadable-metadata``), an image entry without a file
    name or named twice, an annotation whose image or category is unknown or whose ``bbox`` is
    not four finite numbers with a positive width and height (``bad-value``, skipped).
    """
    path = root / rel
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        log.add(source, rel, None, "unreadable-metadata", "skipped", f"not a JSON file: {exc}")
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations")
    ):
        log.add(
            source, rel, None, "unreadable-metadata", "skipped", "no images and annotations lists"
        )
        return {}
    categories = {
        _id(c.get("id")): box_label(str(c.get("name", "")))
        for c in data.get("categories") or []
        if isinstance(c, dict) and _id(c.get("id")) is not None
    }
    by_id: dict[object, CocoImage] = {}
    by_name: dict[str, CocoImage] = {}
    for n, image in enumerate(data["images"], 1):
        name = str(image.get("file_name") or "").strip() if isinstance(image, dict) else ""
        if not name:
            log.add(source, rel, n, "bad-value", "skipped", f"image entry {n} has no file_name")
            continue
        if name.casefold() in by_name:
            log.add(source, rel, n, "duplicate-row", "skipped", f"image {name!r} is listed twice")
            continue
        if _id(image.get("id")) is None:
            log.add(source, rel, n, "bad-value", "skipped", f"image {name!r} has no usable id")
            continue
        frame = [_side(image.get("width")), _side(image.get("height"))]
        usable = [v for v in frame if v is not None]
        entry = CocoImage(image.get("id"), name, usable if len(usable) == 2 else None)
        by_id[entry.image_id] = by_name[name.casefold()] = entry
    for n, ann in enumerate(data["annotations"], 1):
        why = _bad_annotation(ann, by_id, categories)
        if why is not None:
            image = by_id.get(_id(ann.get("image_id"))) if isinstance(ann, dict) else None
            on = f" of {image.file_name}" if image is not None else ""
            log.add(source, rel, n, "bad-value", "skipped", f"annotation {n}{on}: {why}")
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        by_id[ann["image_id"]].boxes.append(
            {"label": categories[ann["category_id"]], "bbox": [x, y, w, h]}
        )
    return {k: v for k, v in by_name.items() if v.boxes}


def _bad_annotation(
    ann: object, images: dict[object, CocoImage], categories: dict[object, str]
) -> str | None:
    if not isinstance(ann, dict):
        return "not an object"
    if _id(ann.get("image_id")) not in images:
        return f"image_id {ann.get('image_id')!r} is not in images"
    if _id(ann.get("category_id")) not in categories:
        return f"category_id {ann.get('category_id')!r} is not in categories"
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        return f"bbox {bbox!r} is not [x, y, width, height]"
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return f"bbox {bbox!r} is not four numbers"
    if not all(math.isfinite(v) for v in values) or values[2] <= 0 or values[3] <= 0:
        return f"bbox {bbox!r} has no positive finite width and height"
    return None


def _id(value: object) -> object:
    """A COCO id as a dictionary key: an int or a string, else None (never matches)."""
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _side(value: object) -> int | None:
    """A declared width or height: a positive whole number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if math.isfinite(value) and value >= 1 and value == int(value) else None
