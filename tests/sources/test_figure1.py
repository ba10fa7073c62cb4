"""figure1 adapter on the real upstream files and on generated fixtures of its layout."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from covid19_images.problems import ProblemLog
from covid19_images.sources import get_adapter, ingest

FOLDER = "figure1-covid-chestxray"


@pytest.fixture(scope="module")
def result(shared_sources: Path):  # type: ignore[no-untyped-def]
    return ingest("figure1", mirror=shared_sources)


@pytest.fixture(scope="module")
def metadata(shared_sources: Path) -> pd.DataFrame:
    return pd.read_csv(
        shared_sources / FOLDER / "metadata.csv",
        encoding="cp1252",
        dtype=str,
        keep_default_na=False,
    )


def test_every_row_and_file_is_accounted_for(shared_sources: Path, result, metadata) -> None:  # type: ignore[no-untyped-def]
    root = shared_sources / FOLDER
    skipped_rows = [p for p in result.problems if p.action == "skipped" and p.row is not None]
    assert len(result.records) + len(skipped_rows) == len(metadata) == 55
    files = {p.relative_to(root).as_posix() for p in (root / "images").iterdir()}
    orphans = {p.file for p in result.problems if p.kind == "orphan-file"}
    assert {r.path_raw for r in result.records} | orphans == files
    assert len(result.records) == 55 and not orphans and not skipped_rows


def test_non_utf8_metadata_is_repaired_and_logged(result) -> None:  # type: ignore[no-untyped-def]
    counts = Counter(p.kind for p in result.problems)
    assert counts == {"bad-encoding": 1, "bad-value": 3}
    (encoding,) = [p for p in result.problems if p.kind == "bad-encoding"]
    assert (encoding.file, encoding.action) == ("metadata.csv", "repaired")
    ages = {p.file: p.detail for p in result.problems if p.kind == "bad-value"}
    assert set(ages) == {
        "images/COVID-00040a.jpg",
        "images/COVID-00040b.jpg",
        "images/COVID-00041.jpg",
    }
    by_path = {r.path_raw: r for r in result.records}
    assert by_path["images/COVID-00041.jpg"].attributes["age_raw"] == "mid 50s"
    assert by_path["images/COVID-00041.jpg"].age is None
    assert by_path["images/COVID-00002.jpg"].age == 50.0  # "50+"
    assert by_path["images/COVID-00002.jpg"].attributes["age_raw"] == "50+"


def test_file_is_found_by_patient_id_and_letters_share_a_patient(result) -> None:  # type: ignore[no-untyped-def]
    by_path = {r.path_raw: r for r in result.records}
    # Two images of ONE patient: the id without the trailing letter.
    a, b = by_path["images/COVID-00003a.jpg"], by_path["images/COVID-00003b.jpg"]
    assert a.patient_id == b.patient_id == "figure1:COVID-00003"
    assert a.uid != b.uid
    assert {by_path[f"images/COVID-00039{x}.jpg"].patient_id for x in "abc"} == {
        "figure1:COVID-00039"
    }
    assert by_path["images/COVID-00001.jpg"].patient_id == "figure1:COVID-00001"
    # .png images are found as well as .jpg ones.
    assert by_path["images/COVID-00015a.png"].patient_id == "figure1:COVID-00015"
    assert by_path["images/COVID-00048.png"].source_row == 55
    assert len({r.patient_id for r in result.records}) == 48
    assert all(r.patient_id and r.patient_id.startswith("figure1:") for r in result.records)
    assert len({r.uid for r in result.records}) == len(result.records)


def test_labels_views_and_blank_cells(result, metadata) -> None:  # type: ignore[no-untyped-def]
    labels = Counter(r.label for r in result.records)
    assert labels == {"covid19": 35, "unknown": 15, "normal": 3, "pneumonia_other": 2}
    assert labels["unknown"] == (metadata["finding"].str.strip() == "").sum()
    blank = [r for r in result.records if not r.finding_raw]
    assert len(blank) == 15 and all(r.label == "unknown" for r in blank)
    assert {r.label_origin for r in result.records} == {"metadata"}
    # "AP erect" (11) and "AP" (4) are AP; blank views (37) are UNKNOWN, without a problem.
    assert Counter(r.view for r in result.records) == {"UNKNOWN": 37, "AP": 15, "PA": 3}
    assert Counter(r.view_raw for r in result.records if r.view == "AP") == {
        "AP erect": 11,
        "AP": 4,
    }
    assert {r.modality for r in result.records} == {"XR"}
    first = next(r for r in result.records if r.path_raw == "images/COVID-00001.jpg")
    assert (first.sex, first.age, first.attributes["offset"]) == ("M", 33.0, "13")


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("L", (16, 16), 128).save(path, format=fmt)


HEADER = "patientid,offset,sex,age,finding,view,modality,notes\n"


def test_duplicates_missing_files_and_odd_cells(tmp_path: Path) -> None:
    for name in ("COVID-00001.jpg", "COVID-00002a.PNG", "COVID-00002b.jpg", "stray.jpg"):
        _image(tmp_path / "images" / name)
    (tmp_path / "metadata.csv").write_bytes(
        (
            HEADER
            + "COVID-00001,,F,40,COVID-19,AP erect,X-ray,Fever 38\xb0\n"
            + "COVID-00002a,,M,,Pneumonia,PA,X-ray,\n"
            + "COVID-00002b,,M,late 60s,,sideways,X-ray,\n"
            + "COVID-00001,,F,40,COVID-19,AP erect,X-ray,repeated\n"
            + "COVID-00009,,,,COVID-19,,X-ray,no image\n"
            + ",,,,No finding,,X-ray,no id\n"
            + "COVID-00010,,,,Something new,,MRI,\n"
        ).encode("cp1252")
    )
    _image(tmp_path / "images" / "COVID-00010.jpeg")
    log = ProblemLog()
    records = {r.path_raw: r for r in get_adapter("figure1").records(tmp_path, log)}
    assert set(records) == {
        "images/COVID-00001.jpg",
        "images/COVID-00002a.PNG",
        "images/COVID-00002b.jpg",
        "images/COVID-00010.jpeg",
    }
    assert records["images/COVID-00002a.PNG"].patient_id == "figure1:COVID-00002"
    assert records["images/COVID-00002a.PNG"].label == "pneumonia_other"
    assert records["images/COVID-00002b.jpg"].view == "UNKNOWN"
    assert records["images/COVID-00010.jpeg"].label == "unknown"
    problems = {(p.kind, p.file, p.row, p.action) for p in log}
    assert problems == {
        ("bad-encoding", "metadata.csv", None, "repaired"),
        ("unknown-view", "images/COVID-00002b.jpg", 3, "kept-as-unknown"),
        ("bad-value", "images/COVID-00002b.jpg", 3, "kept"),
        ("duplicate-row", "images/COVID-00001.jpg", 4, "skipped"),
        ("missing-file", "images/COVID-00009.jpg", 5, "skipped"),
        ("bad-value", "metadata.csv", 6, "skipped"),
        ("unmapped-finding", "images/COVID-00010.jpeg", 7, "kept-as-unknown"),
        ("bad-value", "images/COVID-00010.jpeg", 7, "kept"),
        ("orphan-file", "images/stray.jpg", None, "skipped"),
    }


def test_unreadable_metadata_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    _image(empty / "images" / "COVID-00001.jpg")
    (empty / "metadata.csv").write_bytes(b"")
    log = ProblemLog()
    assert get_adapter("figure1").records(empty, log) == []
    assert [(p.kind, p.file) for p in log] == [
        ("unreadable-metadata", "metadata.csv"),
        ("orphan-file", "images/COVID-00001.jpg"),
    ]

    broken = tmp_path / "broken"
    _image(broken / "images" / "COVID-00001.jpg")
    (broken / "metadata.csv").write_text("id,finding\nCOVID-00001,COVID-19\n")
    log = ProblemLog()
    assert get_adapter("figure1").records(broken, log) == []
    assert [p.kind for p in log] == ["missing-column", "orphan-file"]

    absent = tmp_path / "absent"
    absent.mkdir()
    log = ProblemLog()
    assert get_adapter("figure1").records(absent, log) == []
    assert [p.kind for p in log] == ["unreadable-metadata"]
