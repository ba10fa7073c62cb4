"""COVID-CTset adapter on the real metadata files and on generated upstream layouts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from covid19_images.problems import ProblemLog
from covid19_images.process.ct.pipeline import process_volumes
from covid19_images.records import Record, make_uid
from covid19_images.sources import get_adapter
from covid19_images.sources.covid_ctset import CovidCtset

DETAILS = (
    "Patient ID,SEX,AGE,Date,COVID-19 Infection,SR_2 Folder thickness(mm),"
    "SR_3 Folder thickness(mm),SR_4 Folder thickness(mm)\n"
    "patient1,F,053Y,20200407,Positive,4,6,1.5\n"
    "patient2,M,040Y,20200328,Negative,5,N/A,5\n"
)
HEADERS = (
    "Patient ID,SR_2 PatientBirthDate,SR_2 PixelSpacing,SR_2 RescaleIntercept,SR_2 RescaleSlope,"
    "SR_2 SliceThickness,SR_3 PixelSpacing,SR_3 RescaleIntercept,SR_3 RescaleSlope,"
    "SR_3 SliceThickness\n"
    'patient1,19670407,"[0.75, 0.8]",-1024,1,4,N/A,N/A,N/A,N/A\n'
    'patient2,19800101,"[0.7, 0.7]",-1024,1,5,"[0.7, 0.7]",-1000,1,2\n'
)


def _tiff(path: Path, value: int = 1500) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint16)).save(path)


def _metadata(root: Path, rows: list[str], *, headers: bool = True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "all.csv").write_text("filename,class\r\n" + "".join(f"{r}\r\n" for r in rows))
    (root / "Patient_details.csv").write_text(DETAILS)
    if headers:
        (root / "Patients_metadata.csv").write_text(HEADERS)


def _records(root: Path, log: ProblemLog) -> dict[str, Record]:
    return {r.uid: r for r in get_adapter("covid-ctset").records(root, log)}


def test_real_metadata_without_images(shared_sources: Path) -> None:
    root = shared_sources / "covid-ctset"
    log = ProblemLog()
    adapter = CovidCtset()
    assert adapter.records(root, log) == []
    assert Counter(p.kind for p in log) == {"missing-file": 12058}  # every all.csv row
    patients = adapter._patients(root, ProblemLog())
    assert len(patients) == 377
    assert Counter(p.finding for p in patients.values()) == {"Negative": 282, "Positive": 95}
    first = patients["patient1"]
    assert (first.age, first.sex, first.thickness) == (
        53.0,
        "F",
        {"sr_2": 4.0, "sr_3": 6.0, "sr_4": 1.5},
    )
    headers = adapter._headers(root, ProblemLog())
    offsets = Counter(h.intercept for h in headers.values())
    assert offsets[-1024.0] > 1000 and set(offsets) == {-1024.0, None}
    assert {h.slope for h in headers.values()} == {1.0, None}


def test_series_folders(tmp_path: Path) -> None:
    base = tmp_path / "COVID-CTset"
    for k in (1, 2, 3, 4):
        _tiff(base / "137covid" / "patient1" / "SR_2" / f"IM{k:05d}.tif")
    for k in (1, 2, 4):  # IM00003 absent: a gap
        _tiff(base / "normal1" / "patient2" / "SR_3" / f"IM{k:05d}.tif")
    _metadata(
        tmp_path,
        [
            "137covid_patient1_SR_2_IM00002.tif,covid",
            "137covid_patient1_SR_2_IM00003.tif,covid",
            "137covid_patient1_SR_2_IM00009.tif,covid",  # not there
            "normal1_patient2_SR_3_IM00001.tif,normal",
            "normal4_patient2_SR_3_IM00001.tif,normal",  # the same slice in another part
            "normal1_patient2_SR_3_IM00001.tif,normal",  # a repeated row
        ],
    )
    log = ProblemLog()
    records = _records(tmp_path, log)
    assert sorted((p.kind, p.action, p.file, p.row) for p in log) == [
        ("duplicate-row", "skipped", "normal1_patient2_SR_3_IM00001.tif", 6),
        ("missing-file", "skipped", "137covid_patient1_SR_2_IM00009.tif", 3),
        ("slice-gap", "kept", "COVID-CTset/normal1/patient2/SR_3", 2),
    ]
    covid = records[make_uid("covid-ctset", "COVID-CTset/137covid/patient1/SR_2")]
    assert covid.path_raw == "COVID-CTset/137covid/patient1/SR_2"
    assert covid.attributes == {
        "format": "slice-stack",
        "files": [f"COVID-CTset/137covid/patient1/SR_2/IM{k:05d}.tif" for k in (1, 2, 3, 4)],
        "group": "137covid",
        "hu": True,
        "hu_offset": -1024.0,
        "slice_thickness": 4.0,
        "spacing": [0.8, 0.75, 4.0],
        "selected_slices": [1, 2],
    }
    assert (covid.patient_id, covid.series_id, covid.source_row) == (
        "covid-ctset:patient1",
        "SR_2",
        1,
    )
    assert (covid.finding_raw, covid.label, covid.label_origin) == (
        "Positive",
        "covid19",
        "metadata",
    )
    assert (covid.age, covid.sex, covid.modality, covid.view) == (53.0, "F", "CT", "AXIAL")
    assert covid.tags == [] and covid.problems == [] and covid.license is None
    normal = records[make_uid("covid-ctset", "COVID-CTset/normal1/patient2/SR_3")]
    assert (normal.label, normal.patient_id, normal.age, normal.sex) == (
        "normal",
        "covid-ctset:patient2",
        40.0,
        "M",
    )
    assert normal.attributes["files"][-1].endswith("IM00004.tif")
    assert normal.attributes["selected_slices"] == [0]
    assert normal.attributes["hu_offset"] == -1000.0  # this series' own header row
    assert normal.attributes["slice_thickness"] == 2.0  # N/A in details: the header's
    assert normal.problems == ["slice-gap"]
    # Nothing from the header dump but grid and rescale values reaches a record.
    assert "19670407" not in repr(covid) and "19800101" not in repr(normal)


def test_flat_selected_slices_and_copies(tmp_path: Path) -> None:
    flat = tmp_path / "Training&Validation"
    for name in (
        "137covid_patient1_SR_2_IM00010.tif",
        "137covid_patient1_SR_2_IM00012.tif",
        "normal1_patient2_SR_2_IM00030.tif",
        "normal4_patient2_SR_2_IM00030.tif",  # the same slice in another archive part
    ):
        _tiff(flat / name)
    _tiff(tmp_path / "normal1" / "patient2" / "SR_2" / "IM00030.tif")  # the series folder too
    _tiff(tmp_path / "normal1" / "patient2" / "SR_2" / "IM00031.tif")
    _tiff(tmp_path / "images" / "dataset-1.tif")  # not a slice
    _metadata(
        tmp_path,
        [
            "137covid_patient1_SR_2_IM00010.tif,covid",
            "137covid_patient1_SR_2_IM00012.tif,covid",
            "normal1_patient2_SR_2_IM00030.tif,normal",
        ],
        headers=False,
    )
    log = ProblemLog()
    records = _records(tmp_path, log)
    assert sorted((p.kind, p.action, p.file) for p in log) == [
        ("duplicate", "skipped", "Training&Validation/normal1_patient2_SR_2_IM00030.tif"),
        ("duplicate", "skipped", "Training&Validation/normal4_patient2_SR_2_IM00030.tif"),
        ("orphan-file", "skipped", "images/dataset-1.tif"),
    ]
    assert len(records) == 2
    selected = records[make_uid("covid-ctset", "Training&Validation#137covid_patient1_SR_2")]
    assert selected.path_raw == "Training&Validation"
    assert selected.tags == ["selected-slices"]
    assert selected.attributes["files"] == [
        "Training&Validation/137covid_patient1_SR_2_IM00010.tif",
        "Training&Validation/137covid_patient1_SR_2_IM00012.tif",
    ]
    assert selected.attributes["image_numbers"] == [10, 12]
    assert "spacing" not in selected.attributes  # no header file: no pixel spacing
    assert selected.attributes["hu_offset"] == -1024.0 and selected.attributes["hu"] is True
    assert (selected.label, selected.patient_id) == ("covid19", "covid-ctset:patient1")
    folder = records[make_uid("covid-ctset", "normal1/patient2/SR_2")]
    assert folder.attributes["selected_slices"] == [0]
    assert len(folder.attributes["files"]) == 2


def test_broken_metadata(tmp_path: Path) -> None:
    _tiff(tmp_path / "137covid" / "patient7" / "SR_4" / "IM00001.tif")
    _tiff(tmp_path / "normal2" / "patient8" / "SR_4" / "IM00001.tif")
    _tiff(tmp_path / "extra" / "patient9" / "SR_2" / "IM00001.tif")
    (tmp_path / "Patient_details.csv").write_text("Patient,Sex\npatient7,F\n")  # wrong columns
    (tmp_path / "all.csv").write_text('filename,class\n"137covid_patient7_SR_4_IM00001.tif,covid\n')
    (tmp_path / "Patients_metadata.csv").write_text(
        "Patient ID,SR_4 PixelSpacing,SR_4 RescaleIntercept,SR_4 RescaleSlope\n"
        "patient7,[0.7; 0.7],-1024,1\n"
        "patient8,,-1024,2\n"
    )
    log = ProblemLog()
    records = {r.patient_id: r for r in get_adapter("covid-ctset").records(tmp_path, log)}
    assert sorted((p.kind, p.action, p.file, p.row) for p in log) == [
        ("bad-value", "kept", "Patients_metadata.csv", 1),  # PixelSpacing [0.7; 0.7]
        ("bad-value", "kept", "normal2/patient8/SR_4", None),  # RescaleSlope 2
        ("missing-column", "skipped", "Patient_details.csv", None),
        ("unreadable-metadata", "skipped", "all.csv", None),  # a quote never closed
    ]
    assert len(records) == 3  # the images are kept, labels from the archive part's name
    seven = records["covid-ctset:patient7"]
    assert (seven.label, seven.label_origin, seven.age) == ("covid19", "folder", None)
    assert seven.attributes["hu"] is True  # the unreadable header row is not used
    eight = records["covid-ctset:patient8"]
    assert (eight.label, eight.label_origin) == ("normal", "folder")
    assert eight.attributes["hu"] is None and "hu_offset" not in eight.attributes
    assert eight.problems == ["bad-value"]  # RescaleSlope 2
    nine = records["covid-ctset:patient9"]
    assert (nine.label, nine.finding_raw) == ("unknown", None)


def test_a_label_that_contradicts_patient_details(tmp_path: Path) -> None:
    _tiff(tmp_path / "normal1" / "patient2" / "SR_2" / "IM00001.tif")
    _metadata(tmp_path, ["normal1_patient2_SR_2_IM00001.tif,covid"])
    log = ProblemLog()
    (record,) = _records(tmp_path, log).values()
    assert (record.finding_raw, record.label) == ("Negative", "normal")
    assert record.problems == ["bad-value"]
    assert [(p.kind, p.row) for p in log] == [("bad-value", 1)]


def test_series_through_the_ct_pipeline(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for k, value in enumerate((0, 1024, 2000), 1):
        _tiff(raw / "137covid" / "patient1" / "SR_2" / f"IM{k:05d}.tif", value)
    _metadata(raw, [])
    records = get_adapter("covid-ctset").records(raw, ProblemLog())
    log = ProblemLog()
    (kept,) = process_volumes(records, {"covid-ctset": raw}, tmp_path / "cache", log=log)
    assert len(log) == 0
    assert kept.depth == 3 and kept.attributes["hu"] is True
