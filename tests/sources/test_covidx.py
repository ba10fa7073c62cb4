"""covidx adapter and covidx_membership on the real label files; images generated in tmp_path."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from covid19_images.problems import ProblemLog
from covid19_images.sources import get_adapter, ingest
from covid19_images.sources.covidx import MEMBERSHIP_COLUMNS, covidx_membership

FOLDER = "covidx"
FILES = {
    ("train", "A"): "labels/train_COVIDx9A.txt",
    ("train", "B"): "labels/train_COVIDx9B.txt",
    ("test", "A"): "labels/test_COVIDx9A.txt",
    ("test", "B"): "labels/test_COVIDx9B.txt",
}


def _lines(root: Path, rel: str) -> list[list[str]]:
    """An independent reading: every non-blank line split on whitespace."""
    return [line.split() for line in (root / rel).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def real_root(shared_sources: Path) -> Path:
    return shared_sources / FOLDER


@pytest.fixture(scope="module")
def membership(real_root: Path):  # type: ignore[no-untyped-def]
    log = ProblemLog()
    table = covidx_membership(real_root, log)
    return table, log


def test_membership_counts_match_the_label_files(real_root: Path, membership) -> None:  # type: ignore[no-untyped-def]
    table, log = membership
    assert len(log) == 0  # every tag is known (the typo 'rnsa' included), every row well formed
    assert tuple(table.columns) == MEMBERSHIP_COLUMNS
    for split in ("train", "test"):
        rows_a = _lines(real_root, FILES[split, "A"])
        rows_b = _lines(real_root, FILES[split, "B"])
        assert {len(r) for r in rows_a + rows_b} == {4}
        part = table[table["split"] == split]
        assert len(part) == len({r[1] for r in rows_a} | {r[1] for r in rows_b})
        named_a = part[part["label_9a"].notna()]
        assert Counter(named_a["label_9a"]) == Counter(r[2] for r in rows_a)
        assert Counter(named_a["covidx_source_tag"]) == Counter(r[3] for r in rows_a)
        named_b = part[part["label_9b"].notna()]
        assert Counter(named_b["label_9b"]) == Counter(r[2] for r in rows_b)
        names_a = {r[1] for r in rows_a}
        only_b = [r for r in rows_b if r[1] not in names_a]
        assert Counter(part["covidx_source_tag"]) == Counter(r[3] for r in rows_a + only_b)
        assert dict(zip(named_a["filename"], named_a["patient_id"], strict=True)) == {
            r[1]: r[0] for r in rows_a
        }
    # The published figures (COVIDx.md) and the catalog's counts.
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    assert (len(train), len(test)) == (30482, 400)
    assert Counter(train["label_9a"].dropna()) == {
        "COVID-19": 16490,
        "normal": 8085,
        "pneumonia": 5555,
    }
    assert Counter(test["label_9a"]) == {"COVID-19": 200, "normal": 100, "pneumonia": 100}
    assert Counter(train["label_9b"]) == {"positive": 16490, "negative": 13992}
    assert train[train["label_9a"].notna()]["patient_id"].nunique() == 16424
    assert test["patient_id"].nunique() == 378


def test_membership_maps_tags_to_catalog_sources(membership) -> None:  # type: ignore[no-untyped-def]
    table, _ = membership
    assert table["catalog_source"].notna().all()
    tags = table.groupby("covidx_source_tag")["catalog_source"].unique().map(list).to_dict()
    assert tags == {
        "actmed": ["actualmed"],
        "bimcv": ["bimcv-covid19"],
        "cohen": ["ieee8023"],
        "fig1": ["figure1"],
        "ricord": ["ricord"],
        "rnsa": ["rsna-pneumonia"],
        "rsna": ["rsna-pneumonia"],
        "sirm": ["covid19-radiography-database"],
        "stonybrook": ["stonybrook"],
    }
    train_a = table[(table["split"] == "train") & table["label_9a"].notna()]
    assert Counter(train_a["catalog_source"])["rsna-pneumonia"] == 13389 + 199
    assert (table["covidx_source_tag"] == "rnsa").sum() == 199
    # 352 images only V9B names: ieee8023 and Actualmed negatives.
    only_b = table[table["label_9a"].isna()]
    assert len(only_b) == 352
    assert set(only_b["label_9b"]) == {"negative"}
    assert Counter(only_b["catalog_source"]) == {"ieee8023": 245, "actualmed": 107}
    # The lookup a covidx recipe does: (catalog source, file name) -> split.
    lookup = table.set_index(["catalog_source", "filename"])["split"]
    assert lookup.index.is_unique
    assert lookup["figure1", "COVID-00039a.jpg"] == "train"
    assert ("figure1", "COVID-00003a.jpg") not in lookup.index  # COVIDx left it out
    assert lookup["ricord", "MIDRC-RICORD-1C-419639-003251-46647-0.png"] == "test"


def test_real_mirror_has_label_files_only(real_root: Path) -> None:
    result = ingest("covidx", mirror=real_root.parent)
    assert result.records == []
    # Every label row is accounted for: each V9A row, and each V9B-only row, is a missing file.
    rows_a = sum(len(_lines(real_root, FILES[s, "A"])) for s in ("train", "test"))
    assert Counter(p.kind for p in result.problems) == {"missing-file": rows_a + 352}
    assert rows_a == 30530


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("L", (16, 16), 100).save(path, format=fmt)


def test_generated_images_named_from_the_real_label_files(real_root: Path, tmp_path: Path) -> None:
    shutil.copytree(real_root / "labels", tmp_path / "labels")
    train_a = _lines(real_root, FILES["train", "A"])
    test_a = _lines(real_root, FILES["test", "A"])
    names_a = {r[1] for r in train_a}
    picks: list[tuple[str, list[str]]] = []
    for tag in ("cohen", "fig1", "actmed", "sirm", "rsna", "rnsa", "ricord", "bimcv", "stonybrook"):
        picks.append(("train", next(r for r in train_a if r[3] == tag)))
    picks.append(("train", next(r for r in train_a if r[2] == "pneumonia" and r[3] == "rsna")))
    picks.append(("train", next(r for r in train_a if r[1].endswith(".JPG"))))
    picks.append(("test", next(r for r in test_a if r[3] == "ricord")))
    picks.append(("test", next(r for r in test_a if r[3] == "rsna")))
    for split, row in picks:
        _image(tmp_path / split / row[1])
    only_b = next(r for r in _lines(real_root, FILES["train", "B"]) if r[1] not in names_a)
    _image(tmp_path / "train" / only_b[1])
    _image(tmp_path / "test" / "stray.png")

    log = ProblemLog()
    records = get_adapter("covidx").records(tmp_path, log)
    by_path = {r.path_raw: r for r in records}
    assert set(by_path) == {f"{split}/{row[1]}" for split, row in picks}
    expected_label = {"COVID-19": "covid19", "normal": "normal", "pneumonia": "pneumonia_other"}
    for split, (patient, name, label, tag) in picks:
        record = by_path[f"{split}/{name}"]
        assert record.patient_id == f"covidx:{patient}"
        assert (record.finding_raw, record.label) == (label, expected_label[label])
        assert (record.upstream_split, record.label_origin, record.modality) == (
            split,
            "label_file",
            "XR",
        )
        assert record.attributes["covidx_source_tag"] == tag
        assert record.attributes["label_9b"] == ("positive" if label == "COVID-19" else "negative")
    rnsa = next(r for r in records if r.attributes["covidx_source_tag"] == "rnsa")
    assert rnsa.attributes["catalog_source"] == "rsna-pneumonia"
    assert len({r.uid for r in records}) == len(records)

    counts = Counter(p.kind for p in log)
    assert counts == {"missing-file": 30530 - len(picks) + 351, "orphan-file": 2}
    orphans = {p.file: p.detail for p in log if p.kind == "orphan-file"}
    assert set(orphans) == {f"train/{only_b[1]}", "test/stray.png"}
    assert "train_COVIDx9B.txt" in orphans[f"train/{only_b[1]}"]


def _labels(root: Path, files: dict[str, str]) -> Path:
    (root / "labels").mkdir(parents=True)
    for name, text in files.items():
        (root / "labels" / name).write_text(text)
    return root


def test_bad_label_files_are_problems_not_crashes(tmp_path: Path) -> None:
    root = _labels(
        tmp_path / "bad",
        {
            "train_COVIDx9A.txt": "1 a.png normal rsna\n"
            "1 a.png normal rsna\n"
            "2 b.png pneumonia\n"
            "\n"
            "3 c d.png COVID-19 newsource\n"
            "4 e.png COVID-19 stonybrook\n",
            "train_COVIDx9B.txt": "1 a.png negative rsna\n9 e.png negative stonybrook\n",
            "test_COVIDx9A.txt": "",
        },
    )
    for name in ("a.png", "c d.png", "e.png"):
        _image(root / "train" / name)
    log = ProblemLog()
    records = {r.path_raw: r for r in get_adapter("covidx").records(root, log)}
    assert set(records) == {"train/a.png", "train/c d.png", "train/e.png"}
    assert records["train/c d.png"].attributes == {"covidx_source_tag": "newsource"}
    assert records["train/e.png"].patient_id == "covidx:4"  # the V9A row wins
    problems = {(p.kind, p.file, p.row) for p in log}
    assert problems == {
        ("duplicate-row", "train/a.png", 2),
        ("bad-value", "labels/train_COVIDx9A.txt", 3),  # three fields
        ("bad-value", "labels/train_COVIDx9A.txt", 5),  # unknown source tag
        ("bad-value", "train/e.png", 2),  # V9B disagrees with V9A
        ("empty-file", "labels/test_COVIDx9A.txt", None),
    }

    table = covidx_membership(root, ProblemLog())
    assert table.loc[table["filename"] == "c d.png", "catalog_source"].isna().all()

    absent = tmp_path / "absent"
    _image(absent / "test" / "x.png")
    log = ProblemLog()
    assert get_adapter("covidx").records(absent, log) == []
    assert Counter(p.kind for p in log) == {"unreadable-metadata": 2, "orphan-file": 1}
