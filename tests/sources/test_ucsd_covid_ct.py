"""UCSD COVID-CT adapter on the real split files, meta sheet and 60 images, and on fixtures."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from covid19_images.problems import ProblemLog
from covid19_images.sources import get_adapter, ingest
from covid19_images.sources.ucsd_covid_ct import noncovid_group, paper_id

FOLDER = "ucsd-covid-ct"


@pytest.fixture(scope="module")
def result(shared_sources: Path):  # type: ignore[no-untyped-def]
    return ingest("ucsd-covid-ct", mirror=shared_sources)


def _split_lines(root: Path) -> dict[str, tuple[str, str]]:
    """Split-file name → (class folder, split), read straight from Data-split."""
    lines = {}
    for folder, cls in (("CT_COVID", "COVID"), ("CT_NonCOVID", "NonCOVID")):
        for split in ("train", "val", "test"):
            text = (root / f"Data-split/{cls}/{split}CT_{cls}.txt").read_text()
            lines.update({n.strip(): (folder, split) for n in text.splitlines() if n.strip()})
    return lines


def test_every_image_and_split_line_is_accounted_for(shared_sources: Path, result) -> None:  # type: ignore[no-untyped-def]
    root = shared_sources / FOLDER
    assert len(result.records) == 60
    images = {
        p.relative_to(root).as_posix()
        for p in (root / "Images-processed").rglob("*")
        if p.is_file()
    }
    assert {r.path_raw for r in result.records} == images
    lines = _split_lines(root)
    missing = [p for p in result.problems if p.kind == "missing-file"]
    assert len(missing) == len(lines) - 60 == 686
    assert all(p.action == "skipped" and p.row for p in missing)
    assert {p.kind for p in result.problems} == {"missing-file"}
    for record in result.records:
        name = Path(record.path_raw).name
        assert lines[name] == (Path(record.path_raw).parent.name, record.upstream_split)
        assert (root / record.path_raw).is_file()  # '%' in names is taken literally


def test_labels_views_and_formats(result) -> None:  # type: ignore[no-untyped-def]
    by_folder = defaultdict(list)
    for record in result.records:
        by_folder[record.finding_raw].append(record)
        assert (record.modality, record.view, record.label_origin) == ("CT", "AXIAL", "folder")
        assert record.attributes["format"] == "image-2d" and record.attributes["hu"] is False
    assert {r.label for r in by_folder["CT_COVID"]} == {"covid19"}
    assert {r.label for r in by_folder["CT_NonCOVID"]} == {"other_finding"}
    assert len(by_folder["CT_COVID"]) == len(by_folder["CT_NonCOVID"]) == 30
    assert all("non-covid-mixed" in r.tags for r in by_folder["CT_NonCOVID"])


def test_patients_from_meta_sheet_and_file_names(result) -> None:  # type: ignore[no-untyped-def]
    by_path = {Path(r.path_raw).name: r for r in result.records}
    first = by_path["2020.02.10.20021584-p6-52%6.png"]
    assert (first.patient_id, first.age, first.sex) == ("ucsd-covid-ct:Patient 2", 50.0, "M")
    assert first.attributes["doi"] == "10.1101/2020.02.10.20021584"
    # every COVID image here has a meta row: no paper fallback needed
    covid = [r for r in result.records if r.finding_raw == "CT_COVID"]
    assert all(r.patient_id and r.patient_id.startswith("ucsd-covid-ct:Patient ") for r in covid)
    assert not any("patient-from-paper" in r.tags for r in covid)
    # two slices of one figure are one patient
    assert by_path["35%0.jpg"].patient_id == by_path["35%1.jpg"].patient_id
    assert by_path["35%0.jpg"].patient_id == "ucsd-covid-ct:noncovid-jpg-35"
    assert by_path["1093.png"].patient_id == "ucsd-covid-ct:noncovid-png-1093"
    by_patient = defaultdict(set)
    for record in result.records:
        by_patient[record.patient_id].add(record.upstream_split)
    assert all(len(s) == 1 for s in by_patient.values())


def test_upstream_split_is_patient_disjoint_on_the_whole_collection(shared_sources: Path) -> None:
    """Checked on the full split files (746 names) with the meta sheet, not only the images here."""
    root = shared_sources / FOLDER
    sheet = pd.read_excel(
        root / "COVID-CT-MetaInfo.xlsx", sheet_name="positive_captions", dtype=str
    )
    patient = {
        str(n).strip().removesuffix(".png").casefold(): " ".join(str(p).split())
        for n, p in zip(sheet["File name"], sheet["Patient ID"], strict=True)
        if isinstance(n, str)
    }
    splits: dict[str, set[str]] = defaultdict(set)
    for name, (folder, split) in _split_lines(root).items():
        if folder == "CT_COVID":
            splits[patient[name.removesuffix(".png").casefold()]].add(split)
        else:
            splits[noncovid_group(name)].add(split)
    assert len([k for k in splits if not k.startswith("noncovid-")]) == 213
    assert {k: v for k, v in splits.items() if len(v) > 1} == {}
    # Grouping the non-COVID numbers across .png and .jpg would put 14, 15 and 33 in two splits.
    by_number: dict[str, set[str]] = defaultdict(set)
    for name, (folder, split) in _split_lines(root).items():
        if folder == "CT_NonCOVID":
            by_number[noncovid_group(name).split("-")[-1]].add(split)
    assert sorted(k for k, v in by_number.items() if len(v) > 1) == ["14", "15", "33"]


def test_paper_ids() -> None:
    assert paper_id("2020.02.26.20027938-p6-80_1%0.png") == "2020.02.26.20027938"
    assert paper_id(
        "Comparison-of-different-samples-for-2019-novel-cor_2020_International-Journa-p2-21%6.png"
    ) == ("Comparison-of-different-samples-for-2019-novel-cor_2020_International-Journa")
    assert paper_id("PIIS0140673620303603%7.png") == "PIIS0140673620303603"


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 90).save(path)


def _layout(root: Path, splits: dict[str, str], images: list[str]) -> Path:
    for rel in images:
        _png(root / "Images-processed" / rel)
    for rel, text in splits.items():
        path = root / "Data-split" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


EMPTY_SPLITS = {
    f"{c}/{s}CT_{c}.txt": "" for c in ("COVID", "NonCOVID") for s in ("train", "val", "test")
}


def test_without_meta_sheet_patients_come_from_papers_and_leaks_are_reported(
    tmp_path: Path,
) -> None:
    splits = dict(EMPTY_SPLITS)
    splits["COVID/trainCT_COVID.txt"] = "2020.03.01.123-p3-4%0.png\n2020.03.01.123-p3-4%0.png\n"
    splits["COVID/testCT_COVID.txt"] = "2020.03.01.123-p5-9.png\nabsent.png\n"
    splits["NonCOVID/valCT_NonCOVID.txt"] = "7%0.jpg\n"
    root = _layout(
        tmp_path,
        splits,
        [
            "CT_COVID/2020.03.01.123-p3-4%0.png",
            "CT_COVID/2020.03.01.123-p5-9.png",
            "CT_NonCOVID/7%0.jpg",
            "CT_NonCOVID/7%1.jpg",
        ],
    )
    log = ProblemLog()
    records = {Path(r.path_raw).name: r for r in get_adapter("ucsd-covid-ct").records(root, log)}
    assert len(records) == 4
    a, b = records["2020.03.01.123-p3-4%0.png"], records["2020.03.01.123-p5-9.png"]
    assert a.patient_id == b.patient_id == "ucsd-covid-ct:paper-2020.03.01.123"
    assert "patient-from-paper" in a.tags and a.upstream_split == "train"
    assert records["7%1.jpg"].upstream_split is None
    assert records["7%0.jpg"].patient_id == records["7%1.jpg"].patient_id
    assert sorted((p.kind, p.action, Path(p.file).name) for p in log) == [
        ("bad-value", "kept", "2020.03.01.123-p3-4%0.png"),
        ("duplicate-row", "skipped", "2020.03.01.123-p3-4%0.png"),
        ("missing-file", "skipped", "absent.png"),
        ("orphan-file", "kept", "7%1.jpg"),
        ("unreadable-metadata", "skipped", "COVID-CT-MetaInfo.xlsx"),
    ]
    assert "bad-value" in a.problems and "bad-value" in b.problems


def test_zipped_images_give_one_clear_problem(tmp_path: Path) -> None:
    splits = dict(EMPTY_SPLITS)
    splits["COVID/trainCT_COVID.txt"] = "a.png\nb.png\n"
    root = _layout(tmp_path, splits, ["CT_NonCOVID/1.png"])
    (root / "Images-processed" / "CT_COVID.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    sheet = pd.DataFrame({"File name": ["a"], "Patient ID": ["Patient 1"], "Age": ["Young Child"]})
    sheet.to_excel(root / "COVID-CT-MetaInfo.xlsx", sheet_name="positive_captions", index=False)
    log = ProblemLog()
    records = get_adapter("ucsd-covid-ct").records(root, log)
    assert [r.path_raw for r in records] == ["Images-processed/CT_NonCOVID/1.png"]
    problems = sorted((p.kind, p.file) for p in log)
    assert problems == [
        ("missing-file", "Images-processed/CT_COVID.zip"),
        ("orphan-file", "Images-processed/CT_NonCOVID/1.png"),
    ]
    zipped = next(p for p in log if p.kind == "missing-file")
    assert "unzip" in zipped.detail and "2 images" in zipped.detail


def test_meta_rows_match_names_without_extension(tmp_path: Path) -> None:
    splits = dict(EMPTY_SPLITS)
    splits["COVID/valCT_COVID.txt"] = "2020.04.01.555-p2-3%1.png\nPIIS01406736_2.png\n"
    root = _layout(
        tmp_path, splits, ["CT_COVID/2020.04.01.555-p2-3%1.png", "CT_COVID/PIIS01406736_2.png"]
    )
    (root / "Images-processed" / "CT_NonCOVID").mkdir()  # present, and empty
    sheet = pd.DataFrame(
        {
            "File name": ["2020.04.01.555-p2-3%1", ""],
            "Patient ID": ["Patient 180 ", ""],
            "Age": ["Young Child", ""],
            "Gender": ["F ", ""],
            "DOI": ["", ""],
            "Captions": ["Figure 2.", "a caption continued"],
        }
    )
    sheet.to_excel(root / "COVID-CT-MetaInfo.xlsx", sheet_name="positive_captions", index=False)
    log = ProblemLog()
    records = {Path(r.path_raw).name: r for r in get_adapter("ucsd-covid-ct").records(root, log)}
    with_meta = records["2020.04.01.555-p2-3%1.png"]
    assert (with_meta.patient_id, with_meta.sex, with_meta.age) == (
        "ucsd-covid-ct:Patient 180",
        "F",
        None,
    )
    assert with_meta.attributes["meta_row"] == 1 and with_meta.upstream_split == "val"
    assert with_meta.attributes["doi"] == "10.1101/2020.04.01.555"
    lancet = records["PIIS01406736_2.png"]
    assert lancet.patient_id == "ucsd-covid-ct:paper-PIIS01406736"
    assert "patient-from-paper" in lancet.tags
    assert [(p.kind, p.action, p.row) for p in log] == [("bad-value", "kept", 1)]
    assert "Young Child" in next(iter(log)).detail
