"""What the DICOM adapters share: a study folder scanned into one volume record per series.

:func:`series_records` runs :func:`~covid19_images.process.ct.dicom_series.scan_series` on one
study or subject folder and turns each usable series group into a CT volume record, and each
scan problem into a problems row; only the header fields that identify no one are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pydicom
from pydicom.dataset import Dataset

from covid19_images.problems import KINDS, Action, ProblemLog
from covid19_images.process.ct.dicom_series import SeriesGroup, SeriesProblem, scan_series
from covid19_images.process.ct.volume import MIN_SLICES
from covid19_images.records import VIEWS, Record, make_uid
from covid19_images.sources.base import parse_age, parse_sex

SERIES_ACTIONS: Final[dict[str, Action]] = {
    "localizer": "excluded",
    "non-axial": "excluded",
    "duplicate": "excluded",
    "derived-series": "kept",
    "mixed-series": "kept",
    "slice-gap": "kept",
}
"""What became of the file or group a :class:`SeriesProblem` names: localizers, lone images of
another orientation and second images at one position are left out of every volume; a series
split into several groups (``derived-series``, ``mixed-series``) and a gap are kept as they are;
any other kind (unreadable, empty, no pixel data, bad header value) is skipped."""


@dataclass
class SeriesRecord:
    """One usable series group of a scanned folder and the record made of it."""

    group: SeriesGroup
    record: Record
    header: Dataset | None
    """Header of the group's first slice (pixels not read); never copied into the record."""


def read_header(path: Path) -> Dataset | None:
    """The DICOM header of ``path`` without its pixels, or None when it cannot be read.

    Example:
        >>> read_header(Path("/nonexistent/IM000001")) is None
        True
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # pydicom raises many kinds on truncated or foreign files
        return None


def _join(folder: str, rel: str) -> str:
    return rel if folder in ("", ".") else f"{folder}/{rel}"


def _log_series_problem(
    source: str, folder_rel: str, problem: SeriesProblem, log: ProblemLog, action: Action | None
) -> str:
    """Log one scan problem with its file made relative to the source root; returns its kind."""
    kind, detail = problem.kind, problem.detail
    if kind not in KINDS:
        detail, kind = f"{kind}: {detail}", "bad-value"
    log.add(
        source,
        _join(folder_rel, problem.file),
        None,
        kind,
        action or SERIES_ACTIONS.get(kind, "skipped"),
        detail,
    )
    return kind


def series_records(
    source: str, root: Path, folder: Path, log: ProblemLog, files: list[Path] | None = None
) -> list[SeriesRecord]:
    """Scan one study or subject folder and make one CT volume record per usable series group.

    The record has ``path_raw`` = the folder (relative to ``root``), ``series_id`` = the group
    key, ``uid`` from ``"<path_raw>#<key>"``, ``view`` = the group's orientation (``SAGITTAL``
    and ``OBLIQUE``, which records do not have, give ``UNKNOWN`` with ``view_raw`` kept), and
    ``attributes``: ``format`` (``dicom-series``), ``files`` (relative to ``root``, in the
    group's order), ``derived`` (tag ``derived`` too), ``slice_spacing``, ``series_number``,
    ``hu`` (True for CT with a rescale or signed pixels, else None) and, where the header has
    them, ``slice_thickness``, ``kernel`` and ``manufacturer``; ``age`` and ``sex`` from the
    header. Nothing else of the header is copied. Each scan problem is logged with its file
    relative to ``root``: localizers and lone images of another orientation ``excluded``, slice
    gaps ``kept`` (also on the record), unreadable files ``skipped``. A group of fewer than
    :data:`~covid19_images.process.ct.volume.MIN_SLICES` slices (a stray slice of another
    series) is one ``too-few-slices`` row, ``skipped``, naming its file (its folder when it has
    several), and no record.

    Example:
        >>> log = ProblemLog()
        >>> series_records("covid-19-pos-case", Path("/nonexistent"), Path("/nonexistent"), log)
        []
    """
    folder_rel = folder.relative_to(root).as_posix() if folder != root else ""
    try:
        groups, problems = scan_series(folder, files)
    except Exception as exc:  # the scan must not stop the other folders of a source
        log.add(
            source,
            folder_rel or ".",
            None,
            "unreadable-file",
            "skipped",
            f"the folder could not be scanned: {type(exc).__name__}: {exc}",
        )
        return []
    kinds = {p.file: _log_series_problem(source, folder_rel, p, log, None) for p in problems}
    made = []
    for group in groups:
        path_raw = folder_rel or "."
        if len(group.files) < MIN_SLICES:
            log.add(
                source,
                _join(folder_rel, group.files[0]) if len(group.files) == 1 else path_raw,
                None,
                "too-few-slices",
                "skipped",
                f"{group.label()}: a volume needs at least {MIN_SLICES} slices (a stray "
                "slice, not a scan); left out",
            )
            continue
        view = group.orientation if group.orientation in VIEWS else "UNKNOWN"
        record = Record(
            source=source,
            path_raw=path_raw,
            uid=make_uid(source, f"{path_raw}#{group.key}"),
            series_id=group.key,
            modality="CT",
            view=view,
            view_raw=group.orientation,
            attributes={
                "format": "dicom-series",
                "files": [_join(folder_rel, f) for f in group.files],
                "derived": group.derived,
                "slice_spacing": group.slice_spacing,
                "series_number": group.series_number,
                "hu": None,
            },
        )
        if group.derived:
            record.tags.append("derived")
        for problem in group.problems:
            record.problems.append(_log_series_problem(source, folder_rel, problem, log, "kept"))
        if group.files and kinds.get(group.files[0]) in ("derived-series", "mixed-series"):
            record.problems.append(kinds[group.files[0]])  # a series split into several volumes
        header = read_header(folder / group.files[0]) if group.files else None
        if header is not None:
            _describe(record, header)
        made.append(SeriesRecord(group, record, header))
    return made


def _describe(record: Record, header: Dataset) -> None:
    """Age, sex, HU flag and acquisition facts from a header (the allowed fields only)."""
    record.age = parse_age(header.get("PatientAge"))
    record.sex = parse_sex(header.get("PatientSex"))
    is_ct = str(header.get("Modality", "")).upper() == "CT"
    signed = header.get("PixelRepresentation") == 1
    if is_ct and ("RescaleIntercept" in header or signed):
        record.attributes["hu"] = True
    for name, key in (
        ("SliceThickness", "slice_thickness"),
        ("ConvolutionKernel", "kernel"),
        ("Manufacturer", "manufacturer"),
    ):
        value = header.get(name)
        if value not in (None, ""):
            record.attributes[key] = _plain(value)


def _plain(value: Any) -> Any:
    """A header value as JSON-friendly Python (multi-values as lists, numbers as float)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
