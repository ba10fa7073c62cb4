"""Zhang Lab / Kermany adapter on the real upstream files and on generated upstream layouts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from covid19_images.problems import ProblemLog
from covid19_images.sources import get_adapter, ingest

FOLDER = "zhanglab-chest-xrays"
TRAIN = "chest_xray/train"


@pytest.fixture(scope="module")
def result(shared_sources: Path):  # type: ignore[no-untyped-def]
    return ingest("zhanglab", mirror=shared_sources)


def test_every_file_is_accounted_for(shared_sources: Path, result) -> None:  # type: ignore[no-untyped-def]
    root = shared_sources / FOLDER
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert {r.path_raw for r in result.records} == files
    assert len(result.problems) == 0  # every real name follows the convention
    assert len({r.uid for r in result.records}) == len(result.records) == 39


def test_labels_from_folder_and_file_name(result) -> None:  # type: ignore[no-untyped-def]
    counts = Counter((r.finding_raw, r.label, r.label_origin) for r in result.records)
    assert counts == {
        ("NORMAL", "normal", "folder"): 9,
        ("PNEUMONIA/bacteria", "pneumonia_bacterial", "file_name"): 19,
        ("PNEUMONIA/virus", "pneumonia_viral", "file_name"): 11,
    }
    for record in result.records:
        assert record.tags == ["paediatric"]
        assert (record.view, record.modality, record.upstream_split) == ("AP", "XR", "train")
        assert record.license == "CC-BY-4.0"
        assert record.patient_id and record.patient_id.startswith("zhanglab:")


def test_images_of_one_child_share_a_patient(result) -> None:  # type: ignore[no-untyped-def]
    by_name = {Path(r.path_raw).name: r.patient_id for r in result.records}
    assert by_name["person1003_virus_1685.jpeg"] == "zhanglab:person1003"
    # Three images of person940 (one bacterial, two viral): one patient.
    assert {
        by_name["person940_bacteria_2865.jpeg"],
        by_name["person940_virus_1605.jpeg"],
        by_name["person940_virus_1607.jpeg"],
    } == {"zhanglab:person940"}
    assert by_name["person35_bacteria_180.jpeg"] == by_name["person35_bacteria_181.jpeg"]
    assert by_name["person1499_bacteria_3915.jpeg"] == by_name["person1499_virus_2609.jpeg"]
    assert by_name["NORMAL2-IM-0746-0001.jpeg"] == "zhanglab:NORMAL2-IM-0746"
    patients = Counter(by_name.values())
    assert len(patients) == 33  # 39 images of 33 children
    assert patients["zhanglab:person940"] == 3


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 100).save(path, format="JPEG")


def test_full_upstream_layout(tmp_path: Path) -> None:
    names = {
        "chest_xray/train/NORMAL/IM-0115-0001.jpeg": ("train", "normal", "IM-0115"),
        "chest_xray/train/NORMAL/IM-0115-0002.jpeg": ("train", "normal", "IM-0115"),
        "chest_xray/train/NORMAL/NORMAL2-IM-1094-0001.jpeg": ("train", "normal", "NORMAL2-IM-1094"),
        "chest_xray/train/NORMAL/NORMAL2-IM-1094-0001-0001.jpeg": (
            "train",
            "normal",
            "NORMAL2-IM-1094",
        ),
        "chest_xray/train/NORMAL/NORMAL2-IM-1094-0001-0002.jpeg": (
            "train",
            "normal",
            "NORMAL2-IM-1094",
        ),
        "chest_xray/train/PNEUMONIA/person12_bacteria_46.jpeg": (
            "train",
            "pneumonia_bacterial",
            "person12",
        ),
        "chest_xray/train/PNEUMONIA/person12_bacteria_47.jpeg": (
            "train",
            "pneumonia_bacterial",
            "person12",
        ),
        "chest_xray/train/PNEUMONIA/person1003_virus_1685.jpeg": (
            "train",
            "pneumonia_viral",
            "person1003",
        ),
        "chest_xray/test/NORMAL/IM-0001-0001.jpeg": ("test", "normal", "IM-0001"),
        "chest_xray/test/PNEUMONIA/person1_virus_6.jpeg": ("test", "pneumonia_viral", "person1"),
        "chest_xray/val/NORMAL/NORMAL2-IM-1427-0001.jpeg": ("val", "normal", "NORMAL2-IM-1427"),
        "chest_xray/val/PNEUMONIA/person1946_bacteria_4874.jpeg": (
            "val",
            "pneumonia_bacterial",
            "person1946",
        ),
    }
    for rel in names:
        _image(tmp_path / rel)
    log = ProblemLog()
    records = get_adapter("zhanglab").records(tmp_path, log)
    assert len(log) == 0
    got = {r.path_raw: (r.upstream_split, r.label, r.patient_id) for r in records}
    assert got == {k: (s, lab, f"zhanglab:{p}") for k, (s, lab, p) in names.items()}
    assert all(r.tags == ["paediatric"] for r in records)


def test_mendeley_v3_names(tmp_path: Path) -> None:
    for rel in (
        "chest_xray/test/NORMAL/NORMAL-1049278-0001.jpeg",
        "chest_xray/test/PNEUMONIA/BACTERIA-40699-0001.jpeg",
        "chest_xray/test/PNEUMONIA/BACTERIA-40699-0002.jpeg",
        "chest_xray/train/PNEUMONIA/VIRUS-1022343-0001.jpeg",
    ):
        _image(tmp_path / rel)
    log = ProblemLog()
    got = {
        Path(r.path_raw).name: (r.finding_raw, r.label, r.patient_id)
        for r in get_adapter("zhanglab").records(tmp_path, log)
    }
    assert len(log) == 0
    assert got == {
        "NORMAL-1049278-0001.jpeg": ("NORMAL", "normal", "zhanglab:1049278"),
        "BACTERIA-40699-0001.jpeg": ("PNEUMONIA/BACTERIA", "pneumonia_bacterial", "zhanglab:40699"),
        "BACTERIA-40699-0002.jpeg": ("PNEUMONIA/BACTERIA", "pneumonia_bacterial", "zhanglab:40699"),
        "VIRUS-1022343-0001.jpeg": ("PNEUMONIA/VIRUS", "pneumonia_viral", "zhanglab:1022343"),
    }


def test_names_off_the_convention_and_archive_leftovers(tmp_path: Path) -> None:
    for rel in (
        "chest_xray/train/PNEUMONIA/scan 7.jpeg",  # no convention: kept, no patient
        "chest_xray/train/NORMAL/person1_virus_6.jpeg",  # the name contradicts the folder
        "chest_xray/train/OTHER/IM-0002-0001.jpeg",  # a class folder upstream does not have
        "chest_xray/__MACOSX/train/NORMAL/._IM-0115-0001.jpeg",  # archive leftovers
        "chest_xray/chest_xray/train/NORMAL/IM-0115-0001.jpeg",
        "chest_xray/train/IM-0003-0001.jpeg",
    ):
        _image(tmp_path / rel)
    log = ProblemLog()
    records = {r.path_raw: r for r in get_adapter("zhanglab").records(tmp_path, log)}
    bad = records["chest_xray/train/PNEUMONIA/scan 7.jpeg"]
    assert (bad.patient_id, bad.finding_raw, bad.label) == (None, "PNEUMONIA", "pneumonia_other")
    assert bad.problems == ["bad-value"] and bad.tags == ["paediatric"]
    contradictory = records["chest_xray/train/NORMAL/person1_virus_6.jpeg"]
    assert (contradictory.finding_raw, contradictory.label) == ("NORMAL/virus", "unknown")
    assert records["chest_xray/train/OTHER/IM-0002-0001.jpeg"].label == "unknown"
    assert sorted((p.kind, p.action, p.file) for p in log) == [
        ("bad-value", "kept", "chest_xray/train/PNEUMONIA/scan 7.jpeg"),
        ("orphan-file", "skipped", "chest_xray/__MACOSX/train/NORMAL/._IM-0115-0001.jpeg"),
        ("orphan-file", "skipped", "chest_xray/chest_xray/train/NORMAL/IM-0115-0001.jpeg"),
        ("orphan-file", "skipped", "chest_xray/train/IM-0003-0001.jpeg"),
        ("unmapped-finding", "kept-as-unknown", "chest_xray/train/NORMAL/person1_virus_6.jpeg"),
        ("unmapped-finding", "kept-as-unknown", "chest_xray/train/OTHER/IM-0002-0001.jpeg"),
    ]
