"""BIMCV-COVID19+ (Valencian Region Medical ImageBank, FISABIO-CIPF and partners).

Chest X-rays (CR, DX) and CT of COVID-19 positive patients from hospitals of the Valencia region,
in a BIDS-like (MIDS) tree: one folder per archive (``bimcv_covid19_posi_subjects_<n>/``, or
``covid19_posi/`` in the iteration 1+2 release), inside it ``sub-<subject>/ses-<session>/mod-rx/``
with one 16-bit PNG per radiograph and a JSON sidecar of its DICOM tags (the DICOM JSON model,
``{"00080060": {"vr": "CS", "Value": ["CR"]}}``)::

    sub-S03044/ses-E06790/mod-rx/sub-S03044_ses-E06790_run-1_bp-chest_vp-pa_dx.png
    sub-S03044/ses-E06790/mod-rx/sub-S03044_ses-E06790_run-1_bp-chest_vp-pa_dx.json
    sub-S03693/ses-E08061/mod-rx/sub-S03693_ses-E08061_run-2_bp-chest_ct.nii.gz

``participants.tsv`` (in ``bimcv_covid19_posi_head_iter1/`` or ``covid19_posi/``) has one row
per subject: ``participant`` (``sub-S03044``), ``modality_dicom`` (``['CR', 'DX']``), ``age``
(``[67]``, one value per study) and ``gender``.

What the records take from where: the patient is the subject (``sub-S03044`` →
``bimcv-covid19:S03044``, the id COVIDx uses too) and the study the session (``E06790``), both from
the BIDS file name; ``modality`` is the file name's modality suffix (``_cr`` → CR, ``_dx`` → DX);
``view`` is its ``vp-`` entity (``pa``, ``ap``, ``ll``). Age comes from the sidecar's Patient's
Age (0010,1010) at acquisition, else from ``participants.tsv``; sex from ``participants.tsv``,
else the sidecar. The sidecar's Photometric Interpretation (0028,0004) is kept in
``attributes``: many BIMCV PNGs are MONOCHROME1 and must be inverted before use. CT volumes
(``_ct.nii.gz``) are not X-rays: they are reported as ``wrong-modality`` and left out.

Label: the collection has no per-image diagnosis; every subject of BIMCV-COVID19+ is COVID-19
positive by the collection's definition ("CXR and CT of COVID-19+ patients", de la Iglesia Vayá
et al., arXiv:2006.01174, abstract and section 2). ``finding_raw`` is the arm the archive folder
names (``covid19_posi``), mapped to covid19 by the crosswalk with ``label_origin="metadata"``; the
negative arm (BIMCV-COVID19-, ``covid19_neg``) is a separate release and is not mapped.

Caveats: frontal and lateral films are mixed, and some films named ``acq-2…_vp-pa`` are laterals
(public loaders keep a hand-made list); the UMLS findings of the reports
(``derivatives/labels/labels_covid19_posi.tsv``) are per session and not read here.

Licence: BIMCV-COVID19 Dataset Research Use Agreement (research use, no redistribution). Cite:
M. de la Iglesia Vayá et al., BIMCV COVID-19+: a large annotated dataset of RX and CT images from
COVID-19 patients, arXiv:2006.01174, 2020.

Example:
    >>> parse_bids_name("sub-S03044_ses-E06790_run-1_bp-chest_vp-pa_dx.png")
    ({'sub': 'S03044', 'ses': 'E06790', 'run': '1', 'bp': 'chest', 'vp': 'pa'}, 'dx')
    >>> from covid19_images.sources import ingest
    >>> result = ingest("bimcv-covid19", path="~/data/bimcv-covid19")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from covid19_images.problems import Action, ProblemLog
from covid19_images.records import Record, scoped_patient
from covid19_images.sources.base import (
    IMAGE_SUFFIXES,
    Adapter,
    FileIndex,
    parse_age,
    parse_sex,
    read_table,
)
from covid19_images.sources.registry import register

MODALITIES: Final = {"cr": "CR", "dx": "DX", "ct": "CT"}
"""BIDS modality suffix of the file name → record modality."""
VOLUME_SUFFIXES: Final = (".nii.gz", ".nii")
ARM: Final = re.compile(r"covid19_(posi|neg)", re.IGNORECASE)
DEFAULT_ARM: Final = "covid19_posi"
"""The arm of files whose folders do not name one: this source is the positive arm."""
MAX_AGE: Final = 120.0
NO_AGE: Final = frozenset({"", "none", "nan", "inf", "-1", "u", "unknown"})
"""``participants.tsv`` spellings of an unknown age (the MIDS tool writes ``inf`` and ``-1``)."""
TAGS: Final = {
    "modality": "00080060",
    "sex": "00100040",
    "age": "00101010",
    "series_description": "0008103E",
    "view_position": "00185101",
    "photometric_interpretation": "00280004",
    "bits_stored": "00280101",
}
"""DICOM tags read from the JSON sidecar."""


def parse_bids_name(name: str) -> tuple[dict[str, str], str] | None:
    """The ``key-value`` entities and the modality suffix of a BIDS file name, or None.

    The suffix is the last ``_``-separated part (``cr``, ``dx``, ``ct``); a name without ``sub``
    and ``ses`` entities is not a BIMCV image name.

    Example:
        >>> parse_bids_name("sub-S1_ses-E2_run-2_bp-chest_ct.nii.gz")[1]
        'ct'
        >>> parse_bids_name("notes.png") is None
        True
    """
    lower = name.casefold()
    for suffix in (*VOLUME_SUFFIXES, *IMAGE_SUFFIXES):
        if lower.endswith(suffix):
            name = name[: -len(suffix)]
            break
    *parts, modality = name.split("_")
    entities: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("-")
        if not sep or not key or not value:
            return None
        entities[key] = value
    if "sub" not in entities or "ses" not in entities or not modality:
        return None
    return entities, modality


@register
class BimcvCovid19(Adapter):
    """Adapter for BIMCV-COVID19+ in its BIDS-like (MIDS) layout."""

    source = "bimcv-covid19"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        index = FileIndex.scan(root, suffixes=IMAGE_SUFFIXES | {".gz", ".nii"})
        index.files = {
            key: rel
            for key, rel in index.files.items()
            if not key.endswith(".gz") or key.endswith(".nii.gz")
        }
        participants = self._participants(root, log)
        licence = self.entry.license.spdx or self.entry.license.name
        present: set[str] = set()
        records: list[Record] = []
        for rel in list(index.files.values()):
            parsed = parse_bids_name(Path(rel).name)
            parts = Path(rel).parts
            if parsed is None or any(p.casefold() == "derivatives" for p in parts):
                continue  # reported as an orphan below
            entities, suffix = parsed
            subject = entities["sub"]
            present.add(subject)
            index.claim(rel)
            modality = MODALITIES.get(suffix.split("-")[0].casefold())
            if modality == "CT" or rel.casefold().endswith(VOLUME_SUFFIXES):
                log.add(
                    self.source,
                    rel,
                    None,
                    "wrong-modality",
                    "excluded",
                    f"a {modality or 'volume'} file (suffix {suffix!r}), not a radiograph: "
                    "left out of the X-ray records",
                )
                continue
            record = Record(
                source=self.source,
                path_raw=rel,
                patient_id=scoped_patient(self.source, subject),
                study_id=entities["ses"],
                modality=modality or "XR",
                finding_raw=_arm(parts),
                label_origin="metadata",
                license=licence,
                attributes={k: entities[k] for k in ("run", "acq") if k in entities},
            )
            if len(parts) > 1 and not parts[0].startswith("sub-"):
                record.attributes["archive"] = parts[0]
            if modality is None:
                self._problem(
                    log,
                    record,
                    rel,
                    "bad-value",
                    "kept",
                    f"modality suffix {suffix!r} is neither cr nor dx; kept as XR",
                )
            tags = self._sidecar(root, record, log)
            self._demographics(record, tags, participants, log)
            self.view(record, entities.get("vp"), log, rel)
            self.label(record, log, rel)
            records.append(record)
        for subject, participant in (participants or {}).items():
            if subject not in present:
                log.add(
                    self.source,
                    participant.file,
                    participant.row,
                    "missing-file",
                    "skipped",
                    f"no image of subject sub-{subject} is present",
                )
        for rel in index.orphans():
            in_derivatives = any(p.casefold() == "derivatives" for p in Path(rel).parts)
            detail = (
                "a derivative (annotation) file, not an image of the collection"
                if in_derivatives
                else "not named sub-<subject>_ses-<session>_…_<modality> as BIDS requires"
            )
            log.add(self.source, rel, None, "orphan-file", "skipped", detail)
        return records

    # The steps of one record ---------------------------------------------------------------

    def _problem(
        self, log: ProblemLog, record: Record, file: str, kind: str, action: Action, detail: str
    ) -> None:
        log.add(self.source, file, record.source_row, kind, action, detail)
        record.problems.append(kind)

    def _sidecar(self, root: Path, record: Record, log: ProblemLog) -> dict[str, Any]:
        """The DICOM tags of the image's JSON sidecar (empty, and reported, when unusable)."""
        rel = str(Path(record.path_raw).with_suffix(".json").as_posix())
        path = root / rel
        if not path.is_file():
            self._problem(
                log,
                record,
                rel,
                "missing-file",
                "kept",
                "JSON sidecar absent: modality, view and patient from the file name only",
            )
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._problem(
                log,
                record,
                rel,
                "unreadable-metadata",
                "skipped",
                f"sidecar not read ({type(exc).__name__}: {exc}); the image is kept",
            )
            return {}
        if not isinstance(data, dict):
            self._problem(
                log,
                record,
                rel,
                "unreadable-metadata",
                "skipped",
                f"sidecar holds a JSON {type(data).__name__}, not DICOM tags; the image is kept",
            )
            return {}
        tags = {name: _tag(data, tag) for name, tag in TAGS.items()}
        for name in ("photometric_interpretation", "view_position", "series_description"):
            if tags[name] not in (None, ""):
                record.attributes[name] = str(tags[name])
        bits = tags["bits_stored"]
        if isinstance(bits, int | float) or (isinstance(bits, str) and bits.isdigit()):
            record.bits_stored = int(bits)
        stated = str(tags["modality"] or "").strip().upper()
        if stated and record.modality in ("CR", "DX") and stated != record.modality:
            self._problem(
                log,
                record,
                record.path_raw,
                "bad-value",
                "kept",
                f"file name says {record.modality}, sidecar Modality (0008,0060) says {stated}",
            )
        return tags

    def _demographics(
        self,
        record: Record,
        tags: dict[str, Any],
        participants: dict[str, Participant] | None,
        log: ProblemLog,
    ) -> None:
        """Age and sex from the sidecar and ``participants.tsv``; note subjects it lacks."""
        subject = (record.patient_id or "").partition(":")[2]
        age = parse_age(tags.get("age")) if tags.get("age") else None
        record.age = age if age is not None and age <= MAX_AGE else None
        record.sex = parse_sex(tags.get("sex"))
        if participants is None:
            return
        participant = participants.get(subject)
        if participant is None:
            self._problem(
                log,
                record,
                record.path_raw,
                "orphan-file",
                "kept",
                f"subject sub-{subject} is not in participants.tsv; kept with what its "
                "file name and sidecar tell",
            )
            return
        record.sex = participant.sex or record.sex
        if record.age is None:
            record.age = participant.age

    def _participants(self, root: Path, log: ProblemLog) -> dict[str, Participant] | None:
        """Subject label → its ``participants.tsv`` row; None when no such file could be read."""
        candidates = sorted(
            {p.relative_to(root).as_posix() for p in root.glob("participants.tsv")}
            | {p.relative_to(root).as_posix() for p in root.glob("*/participants.tsv")}
        )
        if not candidates:
            log.add(
                self.source,
                "participants.tsv",
                None,
                "unreadable-metadata",
                "skipped",
                "no participants.tsv found; ages and sexes come from the sidecars only",
            )
            return None
        found: dict[str, Participant] = {}
        read_any = False
        for rel in candidates:
            table = read_table(root, rel, self.source, log, sep="\t", required=("participant",))
            if table is None:
                continue
            read_any = True
            for row in table.to_dict("records"):
                n = int(row["_row"])
                subject = row["participant"].strip().removeprefix("sub-")
                if not subject:
                    log.add(self.source, rel, n, "bad-value", "skipped", "blank participant")
                    continue
                if subject in found:
                    first = found[subject]
                    log.add(
                        self.source,
                        rel,
                        n,
                        "duplicate-row",
                        "skipped",
                        f"sub-{subject} is already in {first.file} row {first.row}",
                    )
                    continue
                found[subject] = Participant(
                    file=rel,
                    row=n,
                    age=self._participant_age(row.get("age", ""), rel, n, log),
                    sex=parse_sex(row.get("gender")),
                )
        return found if read_any else None

    def _participant_age(self, raw: str, file: str, row: int, log: ProblemLog) -> float | None:
        """The subject's age (the youngest of the listed study ages), None when unknown."""
        values = [v.strip(" '\"") for v in raw.strip().strip("[]").split(",")]
        ages = [a for a in (parse_age(v) for v in values) if a is not None and a <= MAX_AGE]
        if ages:
            return min(ages)
        if all(v.casefold() in NO_AGE for v in values):
            return None
        log.add(self.source, file, row, "bad-value", "kept", f"age {raw!r} is not an age")
        return None


@dataclass(frozen=True)
class Participant:
    """One ``participants.tsv`` row."""

    file: str
    row: int
    age: float | None
    sex: str | None


def _arm(parts: tuple[str, ...]) -> str:
    """The arm (``covid19_posi``, ``covid19_neg``) the folders above a file name, or the default."""
    found = ARM.search("/".join(parts[:-1]))
    return found.group(0).casefold() if found else DEFAULT_ARM


def _tag(data: dict[str, Any], tag: str) -> Any:
    """The first value of a DICOM tag in a JSON sidecar (``00080060`` or ``(0008,0060)`` keys)."""
    for key in (tag, f"({tag[:4]},{tag[4:]})", f"{tag[:4]},{tag[4:]}"):
        item = data.get(key, data.get(key.lower()))
        if item is None:
            continue
        if isinstance(item, dict):
            item = item.get("Value", item.get("value"))
        if isinstance(item, list):
            item = item[0] if item else None
        return item
    return None
