"""Darshan folder dataset adapter on the real upstream files and on generated layouts."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covid19_images.problems import ProblemLog
from covid19_images.sources import get_adapter, ingest
from covid19_images.sources.base import IMAGE_SUFFIXES

SOURCE = "covid19-detection-xray-dataset"
NESTED = "covid19-detection-xray-dataset"


@pytest.fixture(scope="module")
def result(shared_sources: Path):  # type: ignore[no-untyped-def]
    return ingest(SOURCE, mirror=shared_sources)


def test_every_file_is_accounted_for(shared_sources: Path, result) -> None:  # type: ignore[no-untyped-def]
    root = shared_sources / SOURCE
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    images = {f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES}
    assert files - images == {"README.md", "LICENSE"}
    orphans = {p.file for p in result.problems if p.kind == "orphan-file"}
    assert not orphans
    assert {r.path_raw for r in result.records} == images
    assert len(result.records) == len(images) == 504
    assert len({r.uid for r in result.records}) == len(result.records)


def test_counts_per_folder_and_label(result) -> None:  # type: ignore[no-untyped-def]
    counts = Counter((r.attributes["upstream_folder"], r.label) for r in result.records)
    assert counts == {
        ("NonAugmentedTrain", "covid19"): 60,
        ("NonAugmentedTrain", "normal"): 80,
        ("NonAugmentedTrain", "pneumonia_viral"): 80,
        ("NonAugmentedTrain", "pneumonia_bacterial"): 80,
        ("TrainData", "covid19"): 60,
        ("TrainData/OversampledAugmentedCOVID-19", "covid19"): 60,
        ("ValData", "covid19"): 9,
        ("ValData", "normal"): 25,
        ("ValData", "pneumonia_viral"): 25,
        ("ValData", "pneumonia_bacterial"): 25,
    }
    splits = {(r.attributes["upstream_folder"], r.upstream_split) for r in result.records}
    assert splits == {
        ("NonAugmentedTrain", "train"),
        ("TrainData", "train"),
        ("TrainData/OversampledAugmentedCOVID-19", "train"),
        ("ValData", "val"),
    }
    assert {r.finding_raw for r in result.records} == {
        "COVID-19",
        "Normal",
        "ViralPneumonia",
        "BacterialPneumonia",
    }
    assert all(r.label_origin == "folder" and r.modality == "XR" for r in result.records)
    assert all(r.patient_id is None for r in result.records)  # upstream gives no patient ids


def test_augmented_copies_are_flagged_and_excluded(result) -> None:  # type: ignore[no-untyped-def]
    augmented = {r.path_raw for r in result.records if "augmented" in r.tags}
    in_train_data = {r.path_raw for r in result.records if "/TrainData/" in r.path_raw}
    assert augmented == in_train_data and len(augmented) == 120
    problems = [p for p in result.problems if p.kind == "augmented-copy"]
    assert len(problems) == len({p.file for p in problems}) == 120
    assert {p.file for p in problems} == augmented
    assert all(p.action == "excluded" and "by default" in p.detail for p in problems)
    assert result.problems.summary() == (
        "no input problems; also 120 left out by the recipe (augmented-copy 120)"
    )


def test_train_data_covid_is_augmented_not_a_copy(shared_sources: Path) -> None:
    """The evidence for flagging TrainData/COVID-19: generator names, no byte or pixel copies."""
    base = shared_sources / SOURCE / NESTED
    train_data = sorted((base / "TrainData" / "COVID-19").iterdir())
    originals = sorted((base / "NonAugmentedTrain" / "COVID-19").iterdir())
    assert len(train_data) == len(originals) == 60
    assert all(re.fullmatch(r"_\d+_\d+\.jpeg", p.name) for p in train_data)
    assert all(re.fullmatch(r"\d+\.jpeg", p.name) for p in originals)

    def md5(p: Path) -> str:
        return hashlib.md5(p.read_bytes()).hexdigest()

    assert not {md5(p) for p in train_data} & {md5(p) for p in originals}

    def thumb(p: Path) -> np.ndarray:
        a = np.asarray(Image.open(p).convert("L").resize((32, 32)), dtype=float).ravel()
        return (a - a.mean()) / (a.std() + 1e-9)

    augmented = np.stack([thumb(p) for p in train_data])
    plain = np.stack([thumb(p) for p in originals])
    correlation = augmented @ plain.T / augmented.shape[1]
    assert correlation.max() < 0.95  # no augmented image is a pixel copy of an original


def test_paediatric_classes_are_tagged(result) -> None:  # type: ignore[no-untyped-def]
    for record in result.records:
        assert ("paediatric" in record.tags) == (record.finding_raw != "COVID-19")


def test_exact_duplicates_are_kept_for_the_deduplication_stage(result) -> None:  # type: ignore[no-untyped-def]
    paths = {r.path_raw for r in result.records}
    for folder, a, b in (
        ("NonAugmentedTrain", "203", "204"),
        ("ValData", "289", "290"),
    ):
        assert f"{NESTED}/{folder}/BacterialPneumonia/{a}.jpeg" in paths
        assert f"{NESTED}/{folder}/BacterialPneumonia/{b}.jpeg" in paths


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 6), 128).save(path, format="JPEG")


def test_layout_without_nesting_and_bad_folders(tmp_path: Path) -> None:
    for rel in (
        "NonAugmentedTrain/COVID-19/0.jpeg",
        "NonAugmentedTrain/Normal/0.jpeg",
        "TrainData/COVID-19/_0_1465610.jpeg",
        "TrainData/OversampledAugmentedCOVID-19/COVID-19/_0_2875015.jpeg",
        "ValData/ViralPneumonia/1.jpeg",
        "ValData/Tuberculosis/2.jpeg",  # a class no rule maps
        "ValData/3.jpeg",  # not in a class folder
        "Extra/COVID-19/4.jpeg",  # not an upstream split folder
        "ValData/OversampledAugmentedCOVID-19/COVID-19/5.jpeg",  # oversampling outside TrainData
        "cover.png",
    ):
        _image(tmp_path / rel)
    (tmp_path / "README.md").write_text("not an image\n")
    log = ProblemLog()
    records = {r.path_raw: r for r in get_adapter(SOURCE).records(tmp_path, log)}
    assert set(records) == {
        "NonAugmentedTrain/COVID-19/0.jpeg",
        "NonAugmentedTrain/Normal/0.jpeg",
        "TrainData/COVID-19/_0_1465610.jpeg",
        "TrainData/OversampledAugmentedCOVID-19/COVID-19/_0_2875015.jpeg",
        "ValData/ViralPneumonia/1.jpeg",
        "ValData/Tuberculosis/2.jpeg",
    }
    assert records["ValData/Tuberculosis/2.jpeg"].label == "unknown"
    assert records["ValData/ViralPneumonia/1.jpeg"].label == "pneumonia_viral"
    assert records["NonAugmentedTrain/Normal/0.jpeg"].tags == ["paediatric"]
    kinds = sorted((p.kind, p.file, p.action) for p in log)
    assert kinds == [
        ("augmented-copy", "TrainData/COVID-19/_0_1465610.jpeg", "excluded"),
        (
            "augmented-copy",
            "TrainData/OversampledAugmentedCOVID-19/COVID-19/_0_2875015.jpeg",
            "excluded",
        ),
        ("orphan-file", "Extra/COVID-19/4.jpeg", "skipped"),
        ("orphan-file", "ValData/3.jpeg", "skipped"),
        ("orphan-file", "ValData/OversampledAugmentedCOVID-19/COVID-19/5.jpeg", "skipped"),
        ("orphan-file", "cover.png", "skipped"),
        ("unmapped-finding", "ValData/Tuberculosis/2.jpeg", "kept-as-unknown"),
    ]


def test_missing_or_empty_folder_gives_nothing_and_no_error(tmp_path: Path) -> None:
    log = ProblemLog()
    assert get_adapter(SOURCE).records(tmp_path / "absent", log) == []
    assert get_adapter(SOURCE).records(tmp_path, log) == []
    assert len(log) == 0
