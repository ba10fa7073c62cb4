"""COVID-CTset (Rahimzadeh, Attar and Sakhaei; Negin medical center, Sari, Iran).

Full lung HRCT series of 95 COVID-19 and 282 normal people as 16-bit greyscale TIFF slices
(512 x 512), three series per person (``SR_2``, ``SR_3``, ``SR_4``: the same scan reconstructed at
different slice thicknesses), with metadata files from the GitHub repository::

    all.csv                  filename,class: 137covid_patient1_SR_2_IM00010.tif,covid (the
                             12,058 slices selected for training and testing)
    Patient_details.csv      Patient ID, SEX, AGE (053Y), Date, COVID-19 Infection
                             (Positive/Negative), SR_<k> Folder thickness(mm)
    Patients_metadata.csv    DICOM header values per series (optional)
    <group>/patient<N>/SR_<k>/IM<nnnnn>.tif      the whole collection (COVID-CTset.zip); the
                             group folder is an archive part (137covid, normal1, …)
    <group>_patient<N>_SR_<k>_IM<nnnnn>.tif      the selected slices (Training&Validation.zip),
                             in one folder, named as in all.csv

One record per series (``attributes["format"] = "slice-stack"``, ``attributes["files"]`` the
slices in ``IM`` number order, ``series_id = "SR_<k>"``, ``view = "AXIAL"``):

- a series folder ``…/patient<N>/SR_<k>/``: ``path_raw`` is the folder. The slices all.csv names
  are given as ``attributes["selected_slices"]`` (indices into ``files``): upstream's selection
  of the slices where the infection is visible. A jump in the ``IM`` numbers is a ``slice-gap``
  problem (kept).
- the selected slices of one series in the flat layout: ``path_raw`` is their folder and ``uid``
  comes from ``"<folder>#<group>_patient<N>_SR_<k>"``; tag ``selected-slices`` (upstream's
  selection, often with gaps: ``attributes["image_numbers"]`` lists the ``IM`` numbers). A flat
  copy of a slice that is also in a series folder is a ``duplicate`` (skipped).

Patients are the public ids upstream uses in its folder and file names (``patient1`` →
``covid-ctset:patient1``); the same id in two archive parts (``normal1`` and ``normal4`` both list
``patient169``) is one person. Label: Patient_details.csv's ``COVID-19 Infection`` (``Positive``
→ covid19, ``Negative`` → normal, ``label_origin = "metadata"``), else all.csv's class, else the
group folder's name (``label_origin = "folder"``); an all.csv class that contradicts
Patient_details.csv is a ``bad-value`` problem (kept). Age and sex come from Patient_details.csv,
``attributes["slice_thickness"]`` from its ``SR_<k> Folder thickness(mm)`` column.

Hounsfield units: the README says the TIFFs hold the same 16-bit data as the exported DICOM
files, and every filled series row of Patients_metadata.csv (1,119 of 1,131) gives
``RescaleSlope`` 1, ``RescaleIntercept`` -1024, unsigned 12-bit pixels (largest value 4095), so
HU = stored value - 1024: ``attributes["hu"] = True``, ``attributes["hu_offset"] = -1024``. A
series whose header row gives another intercept uses it; another slope leaves ``hu`` unknown
(``bad-value``). From Patients_metadata.csv only ``PixelSpacing``, ``RescaleIntercept``,
``RescaleSlope`` and ``SliceThickness`` are read (``attributes["spacing"]`` = column, row and
slice thickness in mm, the thickness standing for the distance between slices, which upstream
does not give); its names, dates, times and UIDs are never read into records.

An all.csv row whose slice is in neither layout is a ``missing-file`` problem (the metadata is on
GitHub, the images are a separate download); a ``.tif`` of neither form is an ``orphan-file``.

Licence: none stated; the README asks that the paper be cited. Cite: Rahimzadeh M, Attar A,
Sakhaei SM. A fully automated deep learning-based network for detecting COVID-19 from a new and
large lung CT scan dataset. Biomedical Signal Processing and Control, 2021, 102588,
doi:10.1016/j.bspc.2021.102588.

Example:
    >>> from covid19_images.sources import ingest
    >>> result = ingest("covid-ctset", mirror="../shared/sources")  # doctest: +SKIP
    >>> len(result.records), result.problems.summary()  # metadata only  # doctest: +SKIP
    (0, 'no input problems; also 12058 rows whose file is absent (missing-file 12058)')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from covid19_images.problems import ProblemLog
from covid19_images.records import Record, make_uid, scoped_patient
from covid19_images.sources.base import Adapter, FileIndex, parse_age, parse_sex, read_table
from covid19_images.sources.registry import register

ALL_CSV: Final = "all.csv"
DETAILS: Final = "Patient_details.csv"
HEADERS: Final = "Patients_metadata.csv"
TIFF_SUFFIXES: Final = (".tif", ".tiff")
HU_OFFSET: Final = -1024.0
"""Stored value + this = HU (RescaleIntercept of every filled Patients_metadata.csv row)."""
UNKNOWN: Final = frozenset({"", "n/a", "na", "nan", "none"})

_FLAT = re.compile(
    r"^(?P<group>[a-z0-9]+)_(?P<patient>patient\d+)_(?P<series>SR_\d+)_IM(?P<number>\d+)\.tiff?$",
    re.IGNORECASE,
)
_PATIENT = re.compile(r"^patient\d+$", re.IGNORECASE)
_SERIES = re.compile(r"^SR_\d+$", re.IGNORECASE)
_IMAGE = re.compile(r"^IM(?P<number>\d+)\.tiff?$", re.IGNORECASE)
_THICKNESS = re.compile(r"^(?P<series>SR_\d+) Folder thickness", re.IGNORECASE)


def parse_flat_name(name: str) -> tuple[str, str, str, int] | None:
    """``(group, patient, series, IM number)`` from an all.csv file name, or None.

    Example:
        >>> parse_flat_name("137covid_patient1_SR_2_IM00010.tif")
        ('137covid', 'patient1', 'SR_2', 10)
        >>> parse_flat_name("patient1.tif") is None
        True
    """
    match = _FLAT.match(name.strip())
    if not match:
        return None
    return match["group"], match["patient"], match["series"], int(match["number"])


def _number(raw: object) -> float | None:
    """A float from a metadata cell; None for blank or ``N/A``; ValueError for anything else."""
    text = str(raw if raw is not None else "").strip()
    if text.casefold() in UNKNOWN:
        return None
    return float(text)


@dataclass
class _Patient:
    row: int
    finding: str
    age: float | None
    sex: str | None
    thickness: dict[str, float]
    """Case-folded ``SR_<k>`` → slice thickness in mm."""


@dataclass
class _Header:
    pixel_spacing: tuple[float, float] | None = None
    """(between rows, between columns) in mm, as DICOM orders PixelSpacing."""
    intercept: float | None = None
    slope: float | None = None
    thickness: float | None = None


@dataclass
class _Series:
    folder: str
    key: str | None
    """None for a series folder; ``<group>_patient<N>_SR_<k>`` for flat selected slices."""
    group: str | None
    patient: str
    series: str
    slices: dict[int, str] = field(default_factory=dict)
    selected: set[int] = field(default_factory=set)
    classes: dict[str, int] = field(default_factory=dict)
    """all.csv class → the first row that gave it."""

    @property
    def uid_path(self) -> str:
        return self.folder if self.key is None else f"{self.folder}#{self.key}"


@register
class CovidCtset(Adapter):
    """Adapter for COVID-CTset: one slice-stack record per series found."""

    source = "covid-ctset"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        patients = self._patients(root, log)
        headers = self._headers(root, log)
        index = FileIndex.scan(root, suffixes=TIFF_SUFFIXES)
        nested: dict[str, _Series] = {}
        flat: dict[tuple[str, str, str, str], _Series] = {}
        for rel in index.files.values():
            parts = rel.split("/")
            folder = "/".join(parts[:-1])
            image = _IMAGE.match(parts[-1])
            if image and len(parts) >= 3 and _SERIES.match(parts[-2]) and _PATIENT.match(parts[-3]):
                group = parts[-4] if len(parts) >= 4 else None
                series = nested.setdefault(
                    folder, _Series(folder, None, group, parts[-3], parts[-2])
                )
                series.slices.setdefault(int(image["number"]), rel)
            elif parsed := parse_flat_name(parts[-1]):
                group, patient, sr, number = parsed
                key = (folder, group.casefold(), patient.casefold(), sr.casefold())
                series = flat.setdefault(
                    key, _Series(folder or ".", f"{group}_{patient}_{sr}", group, patient, sr)
                )
                series.slices.setdefault(number, rel)
        by_slice: dict[tuple[str, str, int], list[_Series]] = {}
        for series in nested.values():
            for number in series.slices:
                by_slice.setdefault(_slice_key(series, number), []).append(series)
        by_name: dict[str, tuple[_Series, int]] = {}
        for series in flat.values():
            for number, rel in sorted(series.slices.items()):
                copies = by_slice.get(_slice_key(series, number))
                if copies:
                    index.claim(rel)
                    del series.slices[number]
                    log.add(
                        self.source,
                        rel,
                        None,
                        "duplicate",
                        "skipped",
                        f"a copy of {copies[0].slices[number]}, kept in its series folder",
                    )
                    continue
                by_name[Path(rel).name.casefold()] = (series, number)
        self._select(root, log, by_slice, by_name)
        records = []
        for series in sorted([*nested.values(), *flat.values()], key=lambda s: s.uid_path):
            if series.slices:
                records.append(self._record(series, patients, headers, index, log))
        index.report_orphans(
            self.source,
            log,
            "not a COVID-CTset slice (<group>/patient<N>/SR_<k>/IM<n>.tif or "
            "<group>_patient<N>_SR_<k>_IM<n>.tif)",
        )
        return records

    def _select(
        self,
        root: Path,
        log: ProblemLog,
        by_slice: dict[tuple[str, str, int], list[_Series]],
        by_name: dict[str, tuple[_Series, int]],
    ) -> None:
        """Mark the slices all.csv names; report the rows whose slice is not there."""
        table = read_table(root, ALL_CSV, self.source, log, required=("filename", "class"))
        if table is None:
            return
        seen: dict[str, int] = {}
        for row in table.to_dict("records"):
            n = int(row["_row"])
            name = str(row["filename"]).strip()
            parsed = parse_flat_name(name)
            if parsed is None:
                log.add(
                    self.source,
                    ALL_CSV,
                    n,
                    "bad-value",
                    "skipped",
                    f"file name {name!r} is not <group>_patient<N>_SR_<k>_IM<n>.tif",
                )
                continue
            first = seen.setdefault(name.casefold(), n)
            if first != n:
                log.add(
                    self.source,
                    name,
                    n,
                    "duplicate-row",
                    "skipped",
                    f"{ALL_CSV} rows {first} and {n} name the same file",
                )
                continue
            group, patient, sr, number = parsed
            key = (patient.casefold(), sr.casefold(), number)
            target: _Series | None = None
            if candidates := by_slice.get(key):
                same_group = [
                    s for s in candidates if (s.group or "").casefold() == group.casefold()
                ]
                target = (same_group or candidates)[0]
            elif found := by_name.get(name.casefold()):
                target = found[0]
            if target is None:
                log.add(self.source, name, n, "missing-file", "skipped", f"{ALL_CSV} row {n}")
                continue
            target.selected.add(number)
            target.classes.setdefault(str(row["class"]).strip(), n)

    def _record(
        self,
        series: _Series,
        patients: dict[str, _Patient],
        headers: dict[tuple[str, str], _Header],
        index: FileIndex,
        log: ProblemLog,
    ) -> Record:
        numbers = sorted(series.slices)
        files = [series.slices[k] for k in numbers]
        for rel in files:
            index.claim(rel)
        person = patients.get(series.patient.casefold())
        header = headers.get((series.patient.casefold(), series.series.casefold()), _Header())
        record = Record(
            source=self.source,
            path_raw=series.folder,
            uid=make_uid(self.source, series.uid_path),
            source_row=person.row if person else None,
            patient_id=scoped_patient(self.source, series.patient),
            series_id=series.series,
            modality="CT",
            view="AXIAL",
            age=person.age if person else None,
            sex=person.sex if person else None,
        )
        attributes: dict[str, Any] = {"format": "slice-stack", "files": files}
        if series.group:
            attributes["group"] = series.group
        self._finding(record, series, person, log)
        self._intensity(record, attributes, header, log)
        thickness = (person.thickness.get(series.series.casefold()) if person else None) or (
            header.thickness
        )
        if thickness is not None:
            attributes["slice_thickness"] = thickness
            if header.pixel_spacing is not None:
                rows_mm, columns_mm = header.pixel_spacing
                attributes["spacing"] = [columns_mm, rows_mm, thickness]
        if series.key is None:
            attributes["selected_slices"] = [
                i for i, k in enumerate(numbers) if k in series.selected
            ]
            missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
            if missing:
                shown = ", ".join(f"IM{k:05d}" for k in missing[:5])
                log.add(
                    self.source,
                    series.folder,
                    record.source_row,
                    "slice-gap",
                    "kept",
                    f"{len(missing)} image numbers missing between IM{numbers[0]:05d} and "
                    f"IM{numbers[-1]:05d}: {shown}{', …' if len(missing) > 5 else ''}",
                )
                record.problems.append("slice-gap")
        else:
            record.tags.append("selected-slices")
            attributes["image_numbers"] = numbers
        record.attributes.update(attributes)
        self.label(record, log, series.folder)
        return record

    def _finding(
        self, record: Record, series: _Series, person: _Patient | None, log: ProblemLog
    ) -> None:
        """Fill ``finding_raw`` and ``label_origin``; report an all.csv class that disagrees."""
        classes = sorted(series.classes, key=series.classes.__getitem__)
        if person is not None and person.finding:
            record.finding_raw, record.label_origin = person.finding, "metadata"
            mine = self.crosswalk.label(self.source, person.finding)[0]
            for cls in classes:
                if self.crosswalk.label(self.source, cls)[0] != mine:
                    log.add(
                        self.source,
                        series.folder,
                        series.classes[cls],
                        "bad-value",
                        "kept",
                        f"{ALL_CSV} says {cls!r}, {DETAILS} says {person.finding!r}; "
                        f"{DETAILS} is used",
                    )
                    record.problems.append("bad-value")
        elif classes:
            record.finding_raw, record.label_origin = classes[0], "metadata"
        elif series.group:
            folded = series.group.casefold()
            word = "covid" if "covid" in folded else "normal" if "normal" in folded else None
            if word:
                record.finding_raw, record.label_origin = word, "folder"

    def _intensity(
        self, record: Record, attributes: dict[str, Any], header: _Header, log: ProblemLog
    ) -> None:
        """``hu`` and ``hu_offset`` from the series' header row, else the collection's -1024."""
        offset: float | None = HU_OFFSET
        if header.intercept is not None and header.slope is not None:
            if header.slope == 1.0:
                offset = header.intercept
            else:
                offset = None
                log.add(
                    self.source,
                    record.path_raw,
                    record.source_row,
                    "bad-value",
                    "kept",
                    f"{HEADERS} gives RescaleSlope {header.slope:g}: values not taken as HU",
                )
                record.problems.append("bad-value")
        attributes["hu"] = True if offset is not None else None
        if offset is not None:
            attributes["hu_offset"] = offset

    def _patients(self, root: Path, log: ProblemLog) -> dict[str, _Patient]:
        """Case-folded patient id → its Patient_details.csv row."""
        table = read_table(
            root, DETAILS, self.source, log, required=("Patient ID", "COVID-19 Infection")
        )
        if table is None:
            return {}
        columns = {
            m["series"].casefold(): c for c in table.columns if (m := _THICKNESS.match(str(c)))
        }
        patients: dict[str, _Patient] = {}
        for row in table.to_dict("records"):
            n = int(row["_row"])
            pid = str(row["Patient ID"]).strip()
            if not _PATIENT.match(pid):
                log.add(self.source, DETAILS, n, "bad-value", "skipped", f"patient id {pid!r}")
                continue
            if pid.casefold() in patients:
                first = patients[pid.casefold()].row
                log.add(
                    self.source,
                    DETAILS,
                    n,
                    "duplicate-row",
                    "skipped",
                    f"rows {first} and {n} describe {pid}",
                )
                continue
            age_raw, sex_raw = str(row.get("AGE", "")), str(row.get("SEX", ""))
            age, sex = parse_age(age_raw), parse_sex(sex_raw)
            for what, raw, value in (("age", age_raw, age), ("sex", sex_raw, sex)):
                if value is None and raw.strip().casefold() not in UNKNOWN:
                    log.add(self.source, DETAILS, n, "bad-value", "kept", f"{what} {raw!r}")
            thickness: dict[str, float] = {}
            for sr, column in columns.items():
                try:
                    value = _number(row.get(column))
                except ValueError:
                    log.add(
                        self.source, DETAILS, n, "bad-value", "kept", f"{column} {row[column]!r}"
                    )
                    continue
                if value is not None and value > 0:
                    thickness[sr] = value
            patients[pid.casefold()] = _Patient(
                n, str(row["COVID-19 Infection"]).strip(), age, sex, thickness
            )
        return patients

    def _headers(self, root: Path, log: ProblemLog) -> dict[tuple[str, str], _Header]:
        """(patient, series) → the few grid and rescale values of Patients_metadata.csv.

        Only PixelSpacing, RescaleIntercept, RescaleSlope and SliceThickness are read.
        """
        if not (root / HEADERS).is_file():
            return {}
        table = read_table(root, HEADERS, self.source, log, required=("Patient ID",))
        if table is None:
            return {}
        series_names = sorted(
            {str(c).split(" ", 1)[0] for c in table.columns if _SERIES.match(str(c).split(" ")[0])}
        )
        headers: dict[tuple[str, str], _Header] = {}
        for row in table.to_dict("records"):
            pid = str(row["Patient ID"]).strip().casefold()
            for sr in series_names:
                header = _Header()
                try:
                    spacing = str(row.get(f"{sr} PixelSpacing", "")).strip().strip("[]")
                    if spacing.casefold() not in UNKNOWN:
                        values = [float(v) for v in spacing.split(",")]
                        if len(values) == 2 and min(values) > 0:
                            header.pixel_spacing = (values[0], values[1])
                    header.intercept = _number(row.get(f"{sr} RescaleIntercept"))
                    header.slope = _number(row.get(f"{sr} RescaleSlope"))
                    header.thickness = _number(row.get(f"{sr} SliceThickness"))
                except ValueError as exc:
                    log.add(
                        self.source,
                        HEADERS,
                        int(row["_row"]),
                        "bad-value",
                        "kept",
                        f"{sr} grid or rescale values cannot be read ({exc})",
                    )
                    continue
                if header.thickness is not None and header.thickness <= 0:
                    header.thickness = None
                headers[(pid, sr.casefold())] = header
        return headers


def _slice_key(series: _Series, number: int) -> tuple[str, str, int]:
    return series.patient.casefold(), series.series.casefold(), number
