"""ieee8023 adapter on the real upstream files and on fixtures of the later metadata style."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from covid19_images.problems import ProblemLog
from covid19_images.sources import get_adapter, ingest

FOLDER = "ieee8023-covid-chestxray"


@pytest.fixture(scope="module")
def result(shared_sources: Path):  # type: ignore[no-untyped-def]
    return ingest("ieee8023", mirror=shared_sources)


def test_every_row_and_file_is_accounted_for(shared_sources: Path, result) -> None:  # type: ignore[no-untyped-def]
    root = shared_sources / FOLDER
    rows = pd.read_csv(root / "metadata.csv")
    skipped_rows = [  # metadata.csv rows; the annotation files' rows name their own file
        p
        for p in result.problems
        if p.action == "skipped" and p.row is not None and not p.file.startswith("annotations/")
    ]
    assert len(result.records) + len(skipped_rows) == len(rows)
    assert {p.kind for p in skipped_rows} <= {"missing-file", "duplicate-row"}

    files = {p.relative_to(root).as_posix() for p in (root / "images").iterdir()}
    orphans = {p.file for p in result.problems if p.kind == "orphan-file"}
    assert {r.path_raw for r in result.records} | orphans == files


def test_records_carry_patients_labels_views_and_licences(result) -> None:  # type: ignore[no-untyped-def]
    by_path = {r.path_raw: r for r in result.records}
    first = by_path["images/auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"]
    assert first.patient_id == "ieee8023:2"
    assert (first.label, first.view, first.modality, first.sex, first.age) == (
        "covid19",
        "PA",
        "XR",
        "M",
        65.0,
    )
    assert all(r.patient_id and r.patient_id.startswith("ieee8023:") for r in result.records)
    assert len({r.uid for r in result.records}) == len(result.records)
    ct = [r for r in result.records if r.modality == "CT"]
    assert ct and all(r.view in {"AXIAL", "CORONAL", "UNKNOWN"} for r in ct)
    assert any(r.license and "CC BY" in r.license for r in result.records)
    # "COVID-19, ARDS" keeps its raw text and maps to covid19.
    ards = [r for r in result.records if r.finding_raw == "COVID-19, ARDS"]
    assert all(r.label == "covid19" for r in ards)


def test_masks_and_severity_scores_are_attached(shared_sources: Path, result) -> None:  # type: ignore[no-untyped-def]
    root = shared_sources / FOLDER
    masks = {p.name for p in (root / "annotations" / "lungVAE-masks").glob("*.png")}
    with_mask = [r for r in result.records if r.mask_paths]
    assert with_mask
    for record in with_mask:
        assert (root / record.mask_paths[0]).is_file()
        assert Path(record.mask_paths[0]).name.startswith(Path(record.path_raw).stem + "_mask")
    present_stems = {Path(r.path_raw).stem for r in result.records}
    expected = {m.split("_mask.png")[0] for m in masks if m.split("_mask.png")[0] in present_stems}
    assert {Path(r.path_raw).stem for r in with_mask} == expected
    scored = [r for r in result.records if "severity_opacity_mean" in r.attributes]
    assert scored and all(float(r.attributes["severity_opacity_mean"]) >= 0 for r in scored)


def _write(root: Path, metadata: str, images: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    for name in images:
        (root / "images" / name).write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "metadata.csv").write_bytes(metadata.encode("utf-8"))
    return root


HEADER = "patientid,offset,sex,age,finding,RT_PCR_positive,view,modality,folder,filename,license\n"


def test_hierarchical_findings_of_later_commits(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        HEADER
        + "1,0,F,40,Pneumonia/Viral/COVID-19,Y,PA,X-ray,images,a.jpg,CC BY 4.0\n"
        + "2,,M,,Pneumonia/Bacterial/Klebsiella,,AP Supine,X-ray,images,b.jpg,\n"
        + "3,,M,,Pneumonia/Fungal/Pneumocystis,,L,X-ray,images,c.jpg,\n"
        + "4,,M,,Pneumonia/Aspiration,,sideways,X-ray,images,d.jpg,\n"
        + "5,,M,,Brand new disease,,PA,CT,images,e.jpg,\n",
        ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "stray.png"],
    )
    log = ProblemLog()
    records = {r.path_raw: r for r in get_adapter("ieee8023").records(root, log)}
    labels = {k: r.label for k, r in records.items()}
    assert labels == {
        "images/a.jpg": "covid19",
        "images/b.jpg": "pneumonia_bacterial",
        "images/c.jpg": "pneumonia_fungal",
        "images/d.jpg": "pneumonia_other",
        "images/e.jpg": "unknown",
    }
    assert records["images/a.jpg"].attributes["RT_PCR_positive"] == "Y"
    assert records["images/b.jpg"].view == "AP_SUPINE"
    assert records["images/e.jpg"].modality == "CT"
    kinds = {(p.kind, p.file) for p in log}
    assert kinds == {
        ("unknown-view", "images/d.jpg"),
        ("unmapped-finding", "images/e.jpg"),
        ("orphan-file", "images/stray.png"),
    }


def test_bom_and_missing_columns_are_problems_not_crashes(tmp_path: Path) -> None:
    root = tmp_path / "bom"
    _write(root, "\ufeff" + HEADER + "1,0,F,40,COVID-19,,PA,X-ray,images,a.jpg,\n", ["a.jpg"])
    log = ProblemLog()
    assert len(get_adapter("ieee8023").records(root, log)) == 1
    assert [p.kind for p in log] == ["bom"]

    broken = tmp_path / "broken"
    _write(broken, "patientid,finding\n1,COVID-19\n", ["a.jpg"])
    log = ProblemLog()
    assert get_adapter("ieee8023").records(broken, log) == []
    assert [p.kind for p in log] == ["missing-column", "orphan-file"]


def test_severity_file_with_a_short_row_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    root = _write(tmp_path, HEADER + "1,0,F,40,COVID-19,,PA,X-ray,images,a.jpg,\n", ["a.jpg"])
    (root / "annotations").mkdir()
    (root / "annotations" / "covid-severity-scores.csv").write_text(
        "## COVID-19 Pneumonia Severity Scores,,\n## License: CC BY-SA,,\n"
        "filename,geographic_mean,opacity_mean\na.jpg,3.5,2.0\nb.jpg\n"
    )
    log = ProblemLog()
    records = get_adapter("ieee8023").records(root, log)
    assert records[0].attributes["severity_geographic_mean"] == "3.5"
    assert [(p.kind, p.row) for p in log] == [("bad-value", 2)]


def test_lung_boxes_are_attached_and_bad_coco_parts_are_rows(tmp_path: Path) -> None:
    import json

    root = _write(
        tmp_path,
        HEADER
        + "1,0,F,40,COVID-19,,PA,X-ray,images,a.jpg,\n"
        + "2,0,F,40,COVID-19,,PA,X-ray,images,b.jpg,\n",
        ["a.jpg", "b.jpg"],
    )
    boxes = root / "annotations" / "imageannotation_ai_lung_bounding_boxes.json"
    boxes.parent.mkdir()
    coco = {
        "categories": [{"id": 1, "name": "Right Lung"}, {"id": 2, "name": "Left Lung"}],
        "images": [
            {"id": 1, "file_name": "A.JPG", "width": 100, "height": 80},  # case differs
            {"id": 2, "file_name": "b.jpg", "width": 100.0, "height": 80},
            {"id": 3, "file_name": "absent.png", "width": 10, "height": 10},
            {"id": 4, "file_name": "b.jpg"},  # listed twice
            {"id": 5},  # no file name
        ],
        "annotations": [
            {"image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 40]},
            {"image_id": 1, "category_id": 2, "bbox": [50, 2, 30, 40]},
            {"image_id": 2, "category_id": 7, "bbox": [1, 2, 3, 4]},  # unknown category
            {"image_id": 2, "category_id": 1, "bbox": [1, 2, -3, 4]},  # negative width
            {"image_id": 2, "category_id": 1, "bbox": [None, None, None, None]},
            {"image_id": 9, "category_id": 1, "bbox": [1, 2, 3, 4]},  # unknown image
            {"image_id": 3, "category_id": 2, "bbox": [1, 2, 3, 4]},
            "not an annotation",
        ],
    }
    boxes.write_text(json.dumps(coco), encoding="utf-8")
    log = ProblemLog()
    records = {r.path_raw: r for r in get_adapter("ieee8023").records(root, log)}
    assert records["images/a.jpg"].attributes["boxes"] == [
        {"label": "right_lung", "bbox": [1.0, 2.0, 30.0, 40.0]},
        {"label": "left_lung", "bbox": [50.0, 2.0, 30.0, 40.0]},
    ]
    assert records["images/a.jpg"].attributes["boxes_frame"] == [100, 80]
    assert "boxes" not in records["images/b.jpg"].attributes  # none of its boxes is usable
    rows = sorted((p.kind, p.row) for p in log if p.file.startswith("annotations/"))
    assert rows == [
        ("bad-value", 3),
        ("bad-value", 4),
        ("bad-value", 5),
        ("bad-value", 5),  # image entry 5 has no file name
        ("bad-value", 6),
        ("bad-value", 8),
        ("duplicate-row", 4),
    ]
    absent = [p for p in log if p.file == "images/absent.png"]
    assert [(p.kind, p.action) for p in absent] == [("missing-file", "skipped")]

    boxes.write_text("{not json", encoding="utf-8")
    log = ProblemLog()
    get_adapter("ieee8023").records(root, log)
    assert [(p.kind, p.file) for p in log] == [
        ("unreadable-metadata", "annotations/imageannotation_ai_lung_bounding_boxes.json")
    ]
