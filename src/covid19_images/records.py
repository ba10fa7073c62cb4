"""The record: one row per image (X-ray, 2-D CT slice) or CT series, the manifest's unit.

Every source adapter turns upstream rows and files into :class:`Record` objects; every later stage
(process, deduplicate, split, audit, load) reads and extends the same columns. Columns are the
ones of the design (``docs/architecture.md``); a value an adapter cannot know stays ``None``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final, Literal

import pandas as pd

Label = Literal[
    "covid19",
    "pneumonia_viral",
    "pneumonia_bacterial",
    "pneumonia_fungal",
    "pneumonia_other",
    "cap",
    "lung_opacity",
    "normal",
    "other_finding",
    "unknown",
]
LABELS: Final[tuple[str, ...]] = Label.__args__  # type: ignore[attr-defined]

View = Literal["PA", "AP", "AP_SUPINE", "LATERAL", "AXIAL", "CORONAL", "UNKNOWN"]
VIEWS: Final[tuple[str, ...]] = View.__args__  # type: ignore[attr-defined]

Modality = Literal["XR", "CR", "DX", "CT"]
"""``XR``: a projection radiograph whose acquisition (CR or DX) upstream does not say."""
MODALITIES: Final[tuple[str, ...]] = Modality.__args__  # type: ignore[attr-defined]

LabelOrigin = Literal[
    "metadata", "folder", "file_name", "label_file", "pcr", "radiologist", "automatic"
]

Sex = Literal["M", "F"]


@dataclass(slots=True)
class Record:
    """One image (or CT series) and everything known about it.

    ``path_raw`` is relative to the source's raw folder (POSIX separators) so that a manifest is
    the same on every machine; ``source_row`` is the 1-based data row of the upstream metadata
    file the record came from, where there is one.

    Example:
        >>> r = Record(source="figure1", path_raw="images/COVID-00001.jpg",
        ...            patient_id="figure1:COVID-00001", finding_raw="COVID-19",
        ...            label="covid19", label_origin="metadata", modality="XR", view="AP")
        >>> r.uid == make_uid("figure1", "images/COVID-00001.jpg")
        True
    """

    source: str
    path_raw: str
    uid: str = ""
    source_version: str | None = None
    source_row: int | None = None
    patient_id: str | None = None
    study_id: str | None = None
    series_id: str | None = None
    modality: str | None = None
    view: str = "UNKNOWN"
    view_raw: str | None = None
    finding_raw: str | None = None
    label: str = "unknown"
    label_origin: str | None = None
    upstream_split: str | None = None
    age: float | None = None
    sex: str | None = None
    severity: str | None = None
    """CT severity ``ct0``…``ct4`` (MosMedData's categories), where upstream grades it."""
    license: str | None = None
    mask_paths: list[str] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    depth: int | None = None
    spacing: list[float] | None = None
    bits_stored: int | None = None
    sha256_file: str | None = None
    sha256_pixels: str | None = None
    phash: str | None = None
    processed_key: str | None = None
    """Key of the record's folder in the processed cache (layer 2)."""
    dicom_path: str | None = None
    """The record's de-identified DICOM, relative to the processed cache."""
    tags: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    """Source-specific facts worth keeping (severity scores, offset in days, …)."""

    def __post_init__(self) -> None:
        if not self.uid:
            self.uid = make_uid(self.source, self.path_raw)


COLUMNS: Final[tuple[str, ...]] = tuple(f.name for f in fields(Record))


def make_uid(source: str, path_raw: str) -> str:
    """A stable id from the source and the file's path inside it.

    Example:
        >>> make_uid("figure1", "images/COVID-00001.jpg")
        'figure1-c8d4994082d7a1a9'
    """
    text = f"{source}\x00{path_raw}"
    return f"{source}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"


def scoped_patient(source: str, patient: object) -> str | None:
    """``<source>:<id>``, or None when upstream gives no id.

    Example:
        >>> scoped_patient("ieee8023", 2), scoped_patient("ieee8023", float("nan"))
        ('ieee8023:2', None)
    """
    if patient is None or (isinstance(patient, float) and patient != patient):
        return None
    text = str(patient).strip()
    if text.endswith(".0") and text[:-2].isdigit():  # pandas read an integer column as float
        text = text[:-2]
    return f"{source}:{text}" if text else None


def records_frame(records: list[Record]) -> pd.DataFrame:
    """Records as a DataFrame with the manifest's columns, in a stable order.

    ``attributes`` is stored as a JSON string so that the frame round-trips through Parquet.
    """
    rows = []
    for record in records:
        row = asdict(record)
        row["attributes"] = json.dumps(record.attributes, sort_keys=True, default=str)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.sort_values(["source", "path_raw", "uid"], kind="stable").reset_index(drop=True)
