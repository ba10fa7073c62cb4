"""covid-19-pos-case adapter on the real study folder: one derived axial series, no header leak."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from covid19_images.deid import pseudonym
from covid19_images.problems import ProblemLog
from covid19_images.sources import get_adapter, ingest
from covid19_images.sources.registry import IngestResult

FOLDER = "covid-19-pos-case"
STUDY = "COVID-19-pos-case"
SALT = "test-salt-pos-case"


@pytest.fixture(scope="module")
def result(shared_sources: Path) -> Iterator[IngestResult]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COVID19_IMAGES_SALT", SALT)
        yield ingest("covid-19-pos-case", mirror=shared_sources)


def test_one_derived_axial_record_of_23_slices(shared_sources: Path, result: IngestResult) -> None:
    assert len(result.records) == 1
    record = result.records[0]
    assert record.path_raw == STUDY
    assert (record.modality, record.view, record.label, record.finding_raw) == (
        "CT",
        "AXIAL",
        "unknown",
        None,
    )
    assert record.attributes["format"] == "dicom-series"
    assert record.attributes["derived"] is True and "derived" in record.tags
    assert "provenance-unknown" in record.tags
    files = record.attributes["files"]
    assert len(files) == 23
    assert all((shared_sources / FOLDER / f).is_file() for f in files)
    assert f"{STUDY}/IM001062" not in files
    assert record.attributes["slice_spacing"] == pytest.approx(15.0)
    assert record.attributes["hu"] is True


def test_localizers_and_the_coronal_image_are_excluded(result: IngestResult) -> None:
    problems = {(p.file, p.kind, p.action) for p in result.problems}
    assert problems == {
        (f"{STUDY}/IM000116", "localizer", "excluded"),
        (f"{STUDY}/IM000117", "localizer", "excluded"),
        (f"{STUDY}/IM001062", "non-axial", "excluded"),
    }


def _identifying_values(folder: Path) -> set[str]:
    """Header values that identify the person, place, date or study (read here, never stored)."""
    fields = (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "StudyDate",
        "StudyTime",
        "SeriesDate",
        "AcquisitionDate",
        "StationName",
        "InstitutionName",
        "AccessionNumber",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "StudyDescription",
        "SeriesDescription",
    )
    values: set[str] = set()
    for path in folder.iterdir():
        header = pydicom.dcmread(path, stop_before_pixels=True)
        for name in fields:
            value = str(header.get(name, "") or "").strip()
            if len(value) >= 3:
                values.add(value)
    return values


def test_no_header_identifier_reaches_records_or_problems(
    shared_sources: Path, result: IngestResult
) -> None:
    folder = shared_sources / FOLDER / STUDY
    secrets = _identifying_values(folder)
    header = pydicom.dcmread(folder / "IM001063", stop_before_pixels=True)
    assert str(header.PatientName) and str(header.PatientID)  # the real files do hold them
    assert {str(header.PatientName), str(header.PatientID)} <= secrets
    text = repr(result.records) + repr(list(result.problems))
    leaked = sorted(s for s in secrets if s in text)
    assert leaked == []


def test_patient_is_a_salted_pseudonym(shared_sources: Path, result: IngestResult) -> None:
    header = pydicom.dcmread(shared_sources / FOLDER / STUDY / "IM001070", stop_before_pixels=True)
    record = result.records[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COVID19_IMAGES_SALT", SALT)
        assert record.patient_id == pseudonym("covid-19-pos-case", str(header.PatientID))
        assert record.study_id == pseudonym("covid-19-pos-case", str(header.StudyInstanceUID))
    assert record.patient_id.startswith("covid-19-pos-case:")


def test_folders_without_dicom_are_problems_not_crashes(tmp_path: Path) -> None:
    log = ProblemLog()
    assert get_adapter("covid-19-pos-case").records(tmp_path, log) == []
    assert [(p.kind, p.action) for p in log] == [("missing-file", "skipped")]

    study = tmp_path / "COVID-19-pos-case"
    study.mkdir()
    (study / "IM000001").write_bytes(b"")
    (study / "IM000002").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    log = ProblemLog()
    assert get_adapter("covid-19-pos-case").records(tmp_path, log) == []
    assert {p.file for p in log} == {"COVID-19-pos-case/IM000001", "COVID-19-pos-case/IM000002"}
    assert {p.action for p in log} == {"skipped"}
