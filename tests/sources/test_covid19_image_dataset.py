"""Covid-19 Image Dataset (pranavraikokte) adapter on the real files and generated layouts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from covid19_images.problems import ProblemLog
from covid19_images.sources import get_adapter, ingest

SOURCE = "covid19-image-dataset"


@pytest.fixture(scope="module")
def result(shared_sources: Path):  # type: ignore[no-untyped-def]
    return ingest(SOURCE, mirror=shared_sources)


def test_every_file_is_accounted_for(shared_sources: Path, result) -> None:  # type: ignore[no-untyped-def]
    root = shared_sources / SOURCE
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert {r.path_raw for r in result.records} == files
    assert len(result.problems) == 0
    assert len({r.uid for r in result.records}) == len(result.records) == 36


def test_counts_labels_and_splits(result) -> None:  # type: ignore[no-untyped-def]
    counts = Counter((r.upstream_split, r.finding_raw, r.label) for r in result.records)
    assert counts == {
        ("train", "Covid", "covid19"): 8,
        ("train", "Normal", "normal"): 8,
        ("train", "Viral Pneumonia", "pneumonia_viral"): 8,
        ("test", "Covid", "covid19"): 4,
        ("test", "Normal", "normal"): 4,
        ("test", "Viral Pneumonia", "pneumonia_viral"): 4,
    }
    for record in result.records:
        assert record.patient_id is None  # no metadata, no patient ids
        assert record.label_origin == "folder" and record.modality == "XR"
        assert record.tags == []  # no sourced age: not tagged paediatric


def test_quirks_space_in_folder_mixed_extensions_repeated_names(result) -> None:  # type: ignore[no-untyped-def]
    paths = {r.path_raw: r for r in result.records}
    assert "Covid19-dataset/train/Viral Pneumonia/063.jpeg" in paths
    assert {Path(p).suffix for p in paths} == {".jpeg", ".jpg", ".png"}
    # One name in two class folders: two records, two uids, two labels.
    normal = paths["Covid19-dataset/train/Normal/063.jpeg"]
    viral = paths["Covid19-dataset/train/Viral Pneumonia/063.jpeg"]
    assert normal.uid != viral.uid
    assert (normal.label, viral.label) == ("normal", "pneumonia_viral")
    assert paths["Covid19-dataset/train/Covid/COVID-00015a.png"].label == "covid19"


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", (8, 6), (90, 90, 90)).save(path, format=fmt)


def test_unknown_classes_and_stray_files(tmp_path: Path) -> None:
    for rel in (
        "Covid19-dataset/train/Covid/COVID-00012.JPG",
        "Covid19-dataset/test/Viral Pneumonia/0105.jpeg",
        "Covid19-dataset/test/Lung Opacity/1.png",  # a class no rule maps
        "Covid19-dataset/train/2.png",  # not in a class folder
        "Covid19-dataset/valid/Normal/3.jpeg",  # not an upstream split
        "Normal/4.jpeg",  # outside Covid19-dataset
    ):
        _image(tmp_path / rel)
    log = ProblemLog()
    records = {r.path_raw: r for r in get_adapter(SOURCE).records(tmp_path, log)}
    assert {k: (r.upstream_split, r.label) for k, r in records.items()} == {
        "Covid19-dataset/train/Covid/COVID-00012.JPG": ("train", "covid19"),
        "Covid19-dataset/test/Viral Pneumonia/0105.jpeg": ("test", "pneumonia_viral"),
        "Covid19-dataset/test/Lung Opacity/1.png": ("test", "unknown"),
    }
    assert sorted((p.kind, p.file) for p in log) == [
        ("orphan-file", "Covid19-dataset/train/2.png"),
        ("orphan-file", "Covid19-dataset/valid/Normal/3.jpeg"),
        ("orphan-file", "Normal/4.jpeg"),
        ("unmapped-finding", "Covid19-dataset/test/Lung Opacity/1.png"),
    ]
