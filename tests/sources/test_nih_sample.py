"""NIH sample adapter: the real sample_labels.csv, images generated in tmp_path, bad input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from covid19_images.fetch import locate
from covid19_images.problems import ProblemLog
from covid19_images.sources import Crosswalk, get_adapter, ingest

SOURCE = "nih-sample"
LABELS = "sample/sample_labels.csv"
ROWS = 5606
# Real rows (1-based data row: image, label, patient, age, sex, view) for the generated images.
GENERATED = {
    "00000013_005.png": (1, "other_finding", "nih-sample:13", 60.0, "M", "AP"),
    "00000013_026.png": (2, "other_finding", "nih-sample:13", 57.0, "M", "AP"),
    "00000017_001.png": (3, "normal", "nih-sample:17", 77.0, "M", "AP"),
    "00001373_010.png": (257, "pneumonia_other", "nih-sample:1373", 58.0, "M", "AP"),
    "00001529_004.png": (288, "pneumonia_other", "nih-sample:1529", 54.0, "F", "PA"),
    "00019045_003.png": (3866, "other_finding", "nih-sample:19045", 1.083, "F", "PA"),  # 013M
    "00020900_002.png": (4243, "normal", "nih-sample:20900", None, "M", "AP"),  # 411Y
}


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (64, 64), color=len(path.name)).save(path)


@pytest.fixture(scope="module")
def real_csv(shared_sources: Path) -> Path:
    located = locate(SOURCE, mirror=shared_sources)
    assert located is not None
    return located.path / LABELS


@pytest.fixture(scope="module")
def mirror(shared_sources: Path):  # type: ignore[no-untyped-def]
    return ingest(SOURCE, mirror=shared_sources)


@pytest.fixture(scope="module")
def result(real_csv: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The real labels file (linked, not copied) with a handful of images in upstream's layout."""
    root = tmp_path_factory.mktemp("nih")
    (root / "sample").mkdir()
    (root / LABELS).symlink_to(real_csv)
    for name in GENERATED:
        _png(root / "sample" / "images" / name)
    _png(root / "sample" / "images" / "99999999_000.png")
    return ingest(SOURCE, path=root)


def test_real_labels_file_is_read_whole(real_csv: Path, mirror) -> None:  # type: ignore[no-untyped-def]
    assert real_csv.read_bytes().count(b"\r\n") == ROWS + 1  # CRLF line endings
    assert mirror.records == []
    assert Counter(p.kind for p in mirror.problems) == {"missing-file": ROWS}
    assert sorted(p.row for p in mirror.problems) == list(range(1, ROWS + 1))
    assert {p.file for p in mirror.problems} >= {"sample/images/00000013_005.png"}


def test_crosswalk_maps_every_real_finding(real_csv: Path) -> None:
    frame = pd.read_csv(real_csv, dtype=str, keep_default_na=False)
    crosswalk = Crosswalk.packaged()
    labels = Counter(crosswalk.label(SOURCE, f) for f in frame["Finding Labels"])
    assert labels == {
        ("normal", True): 3044,
        ("pneumonia_other", True): 62,
        ("other_finding", True): ROWS - 3044 - 62,
    }
    assert frame["Patient ID"].nunique() == 4230


def test_generated_images_become_records(result) -> None:  # type: ignore[no-untyped-def]
    by_name = {Path(r.path_raw).name: r for r in result.records}
    assert set(by_name) == set(GENERATED)
    for name, (row, label, patient, age, sex, view) in GENERATED.items():
        record = by_name[name]
        assert record.path_raw == f"sample/images/{name}"
        assert (record.source_row, record.label, record.patient_id) == (row, label, patient)
        assert (record.age, record.sex, record.view) == (age, sex, view)
        assert (record.modality, record.label_origin, record.license) == (
            "XR",
            "automatic",
            "CC0-1.0",
        )
    first = by_name["00000013_005.png"]
    assert first.finding_raw == "Emphysema|Infiltration|Pleural_Thickening|Pneumothorax"
    assert first.attributes == {
        "follow_up": 5,
        "original_width": 3056,
        "original_height": 2544,
        "original_pixel_spacing_x": 0.139,
        "original_pixel_spacing_y": 0.139,
    }
    assert by_name["00020900_002.png"].problems == ["bad-value"]
    assert len({r.uid for r in result.records}) == len(result.records)


def test_every_row_and_file_is_accounted_for(result) -> None:  # type: ignore[no-untyped-def]
    kinds = Counter(p.kind for p in result.problems)
    assert kinds == {"missing-file": ROWS - len(GENERATED), "orphan-file": 1, "bad-value": 1}
    skipped = [p.row for p in result.problems if p.kind == "missing-file"]
    assert sorted(skipped + [r.source_row for r in result.records]) == list(range(1, ROWS + 1))
    assert [p.file for p in result.problems if p.kind == "orphan-file"] == [
        "sample/images/99999999_000.png"
    ]
    (age,) = [p for p in result.problems if p.kind == "bad-value"]
    assert (age.file, age.row, age.action) == ("sample/images/00020900_002.png", 4243, "kept")


HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position"
)


def _write(root: Path, text: bytes, images: list[str], labels: str = LABELS) -> Path:
    (root / labels).parent.mkdir(parents=True, exist_ok=True)
    (root / labels).write_bytes(text)
    for name in images:
        _png(root / "sample" / "images" / name)
    return root


def test_bad_rows_are_problems_not_crashes(tmp_path: Path) -> None:
    text = (
        HEADER + "\r\n"
        "a.png,No Finding,0,1,030Y,F,PA\r\n"
        "A.PNG,No Finding,0,1,030Y,F,PA\r\n"  # the same image again
        ",Mass,0,2,040Y,M,PA\r\n"
        "b.png,Brand new disease \u00e9,0,2,forty,M,sideways\r\n"  # not UTF-8 below
        "c.png,Mass,0,3,050Y,M,PA\r\n"
    )
    root = _write(tmp_path, text.encode("cp1252"), ["a.png", "b.png"])
    log = ProblemLog()
    records = {r.path_raw: r for r in get_adapter(SOURCE).records(root, log)}
    assert {k: r.label for k, r in records.items()} == {
        "sample/images/a.png": "normal",
        "sample/images/b.png": "unknown",
    }
    assert records["sample/images/b.png"].age is None
    assert records["sample/images/b.png"].finding_raw == "Brand new disease \u00e9"
    assert {(p.kind, p.row) for p in log} == {
        ("bad-encoding", None),
        ("duplicate-row", 2),
        ("bad-value", 3),
        ("bad-value", 4),
        ("unknown-view", 4),
        ("unmapped-finding", 4),
        ("missing-file", 5),
    }


def test_missing_columns_and_a_labels_file_next_to_sample(tmp_path: Path) -> None:
    broken = _write(tmp_path / "broken", b"Image Index,Finding Labels\r\na.png,Mass\r\n", ["a.png"])
    log = ProblemLog()
    assert get_adapter(SOURCE).records(broken, log) == []
    assert [(p.kind, p.file) for p in log] == [
        ("missing-column", LABELS),
        ("orphan-file", "sample/images/a.png"),
    ]

    moved = _write(
        tmp_path / "moved",
        f"\ufeff{HEADER}\r\na.png,Pneumonia,0,7,030Y,F,AP\r\n".encode(),
        ["a.png"],
        labels="sample_labels.csv",
    )
    log = ProblemLog()
    (record,) = get_adapter(SOURCE).records(moved, log)
    assert (record.path_raw, record.label, record.patient_id) == (
        "sample/images/a.png",
        "pneumonia_other",
        "nih-sample:7",
    )
    assert [p.kind for p in log] == ["bom"]


def test_no_labels_file_at_all(tmp_path: Path) -> None:
    _png(tmp_path / "sample" / "images" / "a.png")
    log = ProblemLog()
    assert get_adapter(SOURCE).records(tmp_path, log) == []
    assert [p.kind for p in log] == ["unreadable-metadata", "orphan-file"]
