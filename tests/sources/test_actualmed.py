"""actualmed adapter on the real upstream files and on images generated from its real names."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from covid19_images.problems import ProblemLog
from covid19_images.sources import get_adapter, ingest

FOLDER = "actualmed-covid-chestxray"


@pytest.fixture(scope="module")
def result(shared_sources: Path):  # type: ignore[no-untyped-def]
    return ingest("actualmed", mirror=shared_sources)


@pytest.fixture(scope="module")
def metadata(shared_sources: Path) -> pd.DataFrame:
    return pd.read_csv(shared_sources / FOLDER / "metadata.csv", dtype=str, keep_default_na=False)


def test_every_row_and_file_is_accounted_for(shared_sources: Path, result, metadata) -> None:  # type: ignore[no-untyped-def]
    root = shared_sources / FOLDER
    skipped_rows = [p for p in result.problems if p.action == "skipped" and p.row is not None]
    assert len(result.records) + len(skipped_rows) == len(metadata) == 238
    assert Counter(p.kind for p in result.problems) == {"missing-file": 234}
    files = {p.relative_to(root).as_posix() for p in (root / "images").iterdir()}
    orphans = {p.file for p in result.problems if p.kind == "orphan-file"}
    assert {r.path_raw for r in result.records} | orphans == files
    assert len(result.records) == len(files) == 4
    missing = {p.file for p in result.problems if p.kind == "missing-file"}
    assert missing == {f"images/{n}" for n in metadata["imagename"]} - files


def test_records_of_the_present_images(result, metadata) -> None:  # type: ignore[no-untyped-def]
    by_path = {r.path_raw: r for r in result.records}
    covid = by_path["images/CR.1.2.840.113564.1722810170.20200321123520296900.1003000225002.png"]
    assert (covid.patient_id, covid.finding_raw, covid.label, covid.view) == (
        "actualmed:ANON100",
        "COVID-19",
        "covid19",
        "PA",
    )
    assert covid.source_row == 15
    assert covid.attributes["year_taken"] == "2020"
    assert "20200321" not in covid.attributes["notes"]  # no full date reaches an output
    negative = by_path["images/CR.1.2.840.113564.1722810170.202003241816485934.1003000225002.png"]
    # 'No finding' means COVID-19 was excluded, not a normal film: unknown, without a problem.
    assert (negative.finding_raw, negative.label, negative.view) == ("No finding", "unknown", "AP")
    assert negative.attributes["notes"].startswith("Negative (covid-19 viral infection")
    assert Counter(r.label for r in result.records) == {"covid19": 2, "unknown": 2}
    # Each label count agrees with the finding column of the rows whose image is present.
    present = metadata[metadata["imagename"].isin({Path(p).name for p in by_path})]
    assert (present["finding"] == "COVID-19").sum() == 2
    assert {r.modality for r in result.records} == {"CR"}
    assert all(r.patient_id and r.patient_id.startswith("actualmed:") for r in result.records)
    assert len({r.uid for r in result.records}) == len(result.records)


def test_real_images_are_rgb_although_grey(shared_sources: Path, result) -> None:  # type: ignore[no-untyped-def]
    for record in result.records:
        with Image.open(shared_sources / FOLDER / record.path_raw) as image:
            assert image.mode == "RGB"
            r, g, b = image.resize((64, 64)).split()
            assert r.tobytes() == g.tobytes() == b.tobytes()


def _rgb_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (90, 90, 90)).save(path, format="PNG")


def test_generated_images_named_from_the_real_metadata(
    shared_sources: Path, metadata: pd.DataFrame, tmp_path: Path
) -> None:
    shutil.copy(shared_sources / FOLDER / "metadata.csv", tmp_path / "metadata.csv")
    blank = metadata[metadata["finding"] == ""].iloc[0]
    dx = metadata[metadata["imagename"].str.startswith("DX.")].iloc[0]
    negative = metadata[metadata["finding"] == "No finding"].iloc[0]
    covid = metadata[metadata["finding"] == "COVID-19"].iloc[0]
    chosen = [blank, dx, negative, covid]
    for i, row in enumerate(chosen):
        # One file's name differs in case from the metadata: it is still found, as named on disk.
        name = row["imagename"].lower() if i == 0 else row["imagename"]
        _rgb_png(tmp_path / "images" / name)
    _rgb_png(tmp_path / "images" / "stray.png")
    log = ProblemLog()
    records = get_adapter("actualmed").records(tmp_path, log)
    names = {Path(r.path_raw).name.casefold(): r for r in records}
    assert len(records) == len({r["imagename"] for r in chosen})
    first = names[blank["imagename"].casefold()]
    assert first.path_raw == f"images/{blank['imagename'].lower()}"
    assert (first.finding_raw, first.label) == ("", "unknown")
    assert first.attributes["notes"].startswith("Inconclusive")
    assert names[dx["imagename"].casefold()].modality == "DX"
    assert names[negative["imagename"].casefold()].label == "unknown"
    assert names[covid["imagename"].casefold()].label == "covid19"
    counts = Counter(p.kind for p in log)
    assert counts == {"missing-file": len(metadata) - len(records), "orphan-file": 1}


HEADER = "patientid,finding,view,modality,imagename,notes\n"


def test_duplicates_bom_and_missing_columns(tmp_path: Path) -> None:
    root = tmp_path / "dup"
    _rgb_png(root / "images" / "CR.1.png")
    _rgb_png(root / "images" / "XX.2.png")
    (root / "metadata.csv").write_text(
        "\ufeff"
        + HEADER
        + "ANON1,COVID-19,PA,X-ray,CR.1.png,\n"
        + "ANON1,COVID-19,PA,X-ray,CR.1.png,\n"
        + "ANON2,Pneumonia,APx,X-ray,XX.2.png,\n"
        + "ANON3,,PA,X-ray,,\n",
        encoding="utf-8",
    )
    log = ProblemLog()
    records = {r.path_raw: r for r in get_adapter("actualmed").records(root, log)}
    assert set(records) == {"images/CR.1.png", "images/XX.2.png"}
    assert records["images/XX.2.png"].modality == "XR"
    assert records["images/XX.2.png"].label == "unknown"
    assert {(p.kind, p.row) for p in log} == {
        ("bom", None),
        ("duplicate-row", 2),
        ("unknown-view", 3),
        ("unmapped-finding", 3),
        ("bad-value", 4),
    }

    broken = tmp_path / "broken"
    _rgb_png(broken / "images" / "CR.1.png")
    (broken / "metadata.csv").write_text(
        "patientid,finding,view,filename\nA,COVID-19,PA,CR.1.png\n"
    )
    log = ProblemLog()
    assert get_adapter("actualmed").records(broken, log) == []
    assert [p.kind for p in log] == ["missing-column", "orphan-file"]
