"""COVID-19 Radiography Database adapter: the real metadata sheets, images generated in tmp_path."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from covid19_images.fetch import locate
from covid19_images.problems import ProblemLog
from covid19_images.sources import get_adapter, ingest
from covid19_images.sources.covid19_radiography_database import upstream_collection

SOURCE = "covid19-radiography-database"
DATASET = "COVID-19_Radiography_Dataset"
SHEETS = {
    "COVID": 3616,
    "Lung_Opacity": 6012,
    "Normal": 10192,
    "Viral Pneumonia": 1345,
}
"""Rows per sheet, counted on the real sheets with pandas."""
COLLECTIONS = {
    "bimcv-covid19": 2474,
    "covid-cxnet": 400,
    "eurorad": 258,
    "ml-workgroup": 183,
    "ieee8023": 182,
    "sirm": 119,
    "rsna-pneumonia": 6012 + 8851,
    "zhanglab": 1341 + 1345,
}
"""``upstream_collection`` of the URL column over all four real sheets."""
# One real FILE NAME per upstream collection (and the file name on disk: the Normal sheet writes
# NORMAL-1 where the image is Normal-1.png), plus the collection the adapter must derive.
GENERATED = {
    ("COVID", "COVID-1"): "sirm",
    ("COVID", "COVID-120"): "ml-workgroup",
    ("COVID", "COVID-303"): "eurorad",
    ("COVID", "COVID-561"): "covid-cxnet",
    ("COVID", "COVID-961"): "ieee8023",
    ("COVID", "COVID-1143"): "bimcv-covid19",
    ("Lung_Opacity", "Lung_Opacity-1"): "rsna-pneumonia",
    ("Normal", "Normal-1"): "rsna-pneumonia",
    ("Normal", "Normal-8852"): "zhanglab",
    ("Viral Pneumonia", "Viral Pneumonia-1"): "zhanglab",
}
MASKS = [("COVID", "COVID-1"), ("Normal", "Normal-1"), ("Normal", "Normal-8852")]
STRAYS = {
    f"{DATASET}/COVID/images/COVID-99999.png": "no metadata sheet row names this image",
    f"{DATASET}/COVID/masks/COVID-2.png": "a lung mask whose image no metadata row names",
}


def _png(path: Path, size: int = 299) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), color=len(path.name)).save(path)


@pytest.fixture(scope="module")
def sheets(shared_sources: Path) -> dict[str, pd.DataFrame]:
    folder = shared_sources / SOURCE / DATASET
    return {
        cls: pd.read_excel(folder / f"{cls}.metadata.xlsx", dtype=str, keep_default_na=False)
        for cls in SHEETS
    }


@pytest.fixture(scope="module")
def result(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The real sheets (linked, not copied) with a handful of images in upstream's layout."""
    located = locate(SOURCE, mirror=shared_sources)
    assert located is not None and located.path == shared_sources / SOURCE
    root = tmp_path_factory.mktemp("radiography")
    (root / DATASET).mkdir()
    for cls in SHEETS:
        name = f"{cls}.metadata.xlsx"
        (root / DATASET / name).symlink_to(located.path / DATASET / name)
    for cls, name in GENERATED:
        _png(root / DATASET / cls / "images" / f"{name}.png")
    for cls, name in MASKS:
        _png(root / DATASET / cls / "masks" / f"{name}.png", size=256)
    for rel in STRAYS:
        _png(root / rel)
    return ingest(SOURCE, path=root)


def test_real_sheets_rows_and_upstream_collections(sheets: dict[str, pd.DataFrame]) -> None:
    assert {cls: len(frame) for cls, frame in sheets.items()} == SHEETS
    urls = pd.concat([frame["URL"] for frame in sheets.values()])
    assert Counter(upstream_collection(u) for u in urls) == COLLECTIONS
    assert set(sheets["Normal"]["FILE NAME"].str[:7]) == {"NORMAL-"}  # upper case, files are not
    assert set(pd.concat([f["SIZE"] for f in sheets.values()])) == {"256*256"}


def test_every_row_and_file_is_accounted_for(result) -> None:  # type: ignore[no-untyped-def]
    kinds = Counter(p.kind for p in result.problems)
    assert kinds == {"missing-file": sum(SHEETS.values()) - len(GENERATED), "orphan-file": 2}
    for cls, rows in SHEETS.items():
        folder = f"{DATASET}/{cls}/images/"
        got = [r.source_row for r in result.records if r.path_raw.startswith(folder)]
        missing = [
            p.row for p in result.problems if p.kind == "missing-file" and p.file.startswith(folder)
        ]
        assert sorted(got + missing) == list(range(1, rows + 1)), cls
    orphans = {p.file: p.detail for p in result.problems if p.kind == "orphan-file"}
    assert orphans == STRAYS
    on_disk = {f"{DATASET}/{cls}/images/{name}.png" for cls, name in GENERATED}
    assert {r.path_raw for r in result.records} == on_disk


def test_records_carry_class_collection_masks_and_tags(result) -> None:  # type: ignore[no-untyped-def]
    by_path = {r.path_raw: r for r in result.records}
    labels = {"COVID": "covid19", "Lung_Opacity": "lung_opacity", "Normal": "normal"}
    labels["Viral Pneumonia"] = "pneumonia_viral"
    for (cls, name), collection in GENERATED.items():
        record = by_path[f"{DATASET}/{cls}/images/{name}.png"]
        assert (record.finding_raw, record.label, record.label_origin) == (
            cls,
            labels[cls],
            "folder",
        )
        assert record.attributes["upstream_collection"] == collection
        assert record.attributes["upstream_url"].startswith("https://")
        assert record.tags == (["paediatric"] if collection == "zhanglab" else [])
        assert (record.modality, record.view, record.patient_id) == ("XR", "UNKNOWN", None)
        expected_mask = [f"{DATASET}/{cls}/masks/{name}.png"] if (cls, name) in MASKS else []
        assert record.mask_paths == expected_mask
    # The sheet says NORMAL-1; the record names the file as it is on disk.
    normal = by_path[f"{DATASET}/Normal/images/Normal-1.png"]
    assert normal.source_row == 1
    missing = {p.file for p in result.problems if p.kind == "missing-file"}
    assert f"{DATASET}/Normal/images/NORMAL-2.png" in missing
    assert len({r.uid for r in result.records}) == len(result.records)
    assert not any(r.problems for r in result.records)


def test_upstream_collection_keeps_the_host_of_unknown_urls() -> None:
    assert upstream_collection("https://www.kaggle.com/c/rsna-pneumonia-detection-challenge") == (
        "rsna-pneumonia"
    )
    assert upstream_collection("http://github.com/ieee8023/covid-chestxray-dataset/") == "ieee8023"
    assert upstream_collection("https://github.com/someone/else") == "github.com"
    assert upstream_collection("radiopaedia.org/cases/covid-19") == "radiopaedia"
    assert upstream_collection("") is None


def _sheet(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_excel(path, index=False, engine="openpyxl")


def test_bad_sheets_are_problems_not_crashes(tmp_path: Path) -> None:
    base = tmp_path / DATASET
    url = "https://sirm.org/category/senza-categoria/covid-19/"
    row = {"FORMAT": "PNG", "SIZE": "256*256", "URL": url}
    _sheet(
        base / "COVID.metadata.xlsx",
        [
            {"FILE NAME": "COVID-1", **row},
            {"FILE NAME": "covid-1", **row},  # the same file again
            {"FILE NAME": "", **row},
            {"FILE NAME": "COVID-2", **row},
        ],
    )
    _sheet(base / "Lung_Opacity.metadata.xlsx", [{"FILE NAME": "Lung_Opacity-1", "FORMAT": "PNG"}])
    (base / "Normal.metadata.xlsx").write_bytes(b"")  # zero-byte workbook
    # Viral Pneumonia.metadata.xlsx is absent.
    for rel in [
        "COVID/images/COVID-1.png",
        "Lung_Opacity/images/Lung_Opacity-1.png",
        "Normal/images/Normal-1.png",
        "Viral Pneumonia/images/Viral Pneumonia-1.png",
        "Unknown class/images/x.png",
    ]:
        _png(base / rel, size=8)
    log = ProblemLog()
    records = get_adapter(SOURCE).records(tmp_path, log)
    assert [r.path_raw for r in records] == [f"{DATASET}/COVID/images/COVID-1.png"]
    problems = {(p.kind, p.file, p.row) for p in log}
    assert problems == {
        ("duplicate-row", f"{DATASET}/COVID.metadata.xlsx", 2),
        ("bad-value", f"{DATASET}/COVID.metadata.xlsx", 3),
        ("missing-file", f"{DATASET}/COVID/images/COVID-2.png", 4),
        ("missing-column", f"{DATASET}/Lung_Opacity.metadata.xlsx", None),
        ("unreadable-metadata", f"{DATASET}/Normal.metadata.xlsx", None),
        ("unreadable-metadata", f"{DATASET}/Viral Pneumonia.metadata.xlsx", None),
        ("orphan-file", f"{DATASET}/Lung_Opacity/images/Lung_Opacity-1.png", None),
        ("orphan-file", f"{DATASET}/Normal/images/Normal-1.png", None),
        ("orphan-file", f"{DATASET}/Viral Pneumonia/images/Viral Pneumonia-1.png", None),
        ("orphan-file", f"{DATASET}/Unknown class/images/x.png", None),
    }
    assert len(log) == len(problems)


def test_an_empty_folder_gives_problems_and_no_records(tmp_path: Path) -> None:
    log = ProblemLog()
    assert get_adapter(SOURCE).records(tmp_path, log) == []
    assert Counter(p.kind for p in log) == {"unreadable-metadata": 4}
