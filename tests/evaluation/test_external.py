"""external_overlap on two small built datasets with planted copies and patients."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from covid19_images.errors import EvaluationError
from covid19_images.evaluation.external import external_overlap


def _film(seed: int) -> np.ndarray:
    """A synthetic grey film: smooth anatomy-like shading and fine texture."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.normal(size=(96, 96)), 6) * 40
    x += gaussian_filter(rng.normal(size=(96, 96)), 1.0) * 25
    return np.clip(x - x.mean() + 128, 0, 255).astype(np.uint8)


def _near(pixels: np.ndarray) -> np.ndarray:
    """Another encoding of the same film: brighter, with a little noise."""
    noise = np.random.default_rng(99).integers(-3, 4, size=pixels.shape)
    return np.clip(pixels.astype(int) + 12 + noise, 0, 255).astype(np.uint8)


def _dataset(folder: Path, rows: list[dict[str, Any]], duplicates: list[tuple[str, str]]) -> Path:
    """A built dataset's folder: images, manifest.parquet, duplicates.csv, lock.json."""
    records = []
    for row in rows:
        pixels = row.pop("pixels")
        rel = f"{row['split']}/{row['class']}/{row['uid']}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / rel)
        records.append(
            {
                **row,
                "path": rel,
                "sha256_pixels": hashlib.sha256(pixels.tobytes()).hexdigest(),
                "phash": hashlib.sha256(rel.encode()).hexdigest()[:16],  # far apart
            }
        )
    pd.DataFrame(records).to_parquet(folder / "manifest.parquet")
    pd.DataFrame(duplicates, columns=["uid_a", "uid_b"]).to_csv(
        folder / "duplicates.csv", index=False
    )
    lock = {"recipe": {"dedup": {"max_hamming": 12, "min_correlation": 0.95}}}
    (folder / "lock.json").write_text(json.dumps(lock))
    return folder


def _row(uid: str, split: str, patient: str | None, pixels: np.ndarray) -> dict[str, Any]:
    return {"uid": uid, "split": split, "class": "normal", "patient_id": patient, "pixels": pixels}


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    train = _dataset(
        tmp_path / "train",
        [
            _row("a0", "train", "src:P0", _film(0)),
            _row("a1", "train", "src:P1", _film(1)),
            _row("a2", "train", None, _film(2)),
            _row("a3", "train", "src:P3", _film(3)),
            _row("v0", "val", "src:V0", _film(4)),
            _row("t0", "test", "src:T0", _film(5)),
        ],
        # the build kept a2 and dropped its copy 'dropped-a2'; v0's copy is not training's
        [("a2", "dropped-a2"), ("dropped-v0", "v0")],
    )
    other = _dataset(
        tmp_path / "other",
        [
            _row("b-exact", "test", "ext:Q1", _film(1)),  # a1's pixels, another source
            _row("b-near", "test", None, _near(_film(3))),  # a near copy of a3
            _row("dropped-a2", "test", None, _film(50)),  # a2's recorded copy
            _row("a0", "test", "src:P0", _film(0)),  # the very same source file as a0
            _row("b-patient", "test", "src:P3", _film(51)),  # another film of patient P3
            _row("b-linked", "train", "ext:Q1", _film(52)),  # Q1's other film: linked via b-exact
            _row("b-valcopy", "test", "ext:Q9", _film(4)),  # a copy of a *validation* image
            _row("b-valpatient", "test", "src:V0", _film(53)),  # a validation patient
            *(_row(f"b-other{i}", "test", f"ext:R{i}", _film(60 + i)) for i in range(5)),
        ],
        [],
    )
    return train, other


def test_pixels_find_planted_copies_and_patients(planted: tuple[Path, Path]) -> None:
    train, other = planted
    overlap = external_overlap(train, other)
    assert overlap.near == "pixels"
    assert overlap.max_hamming == 12
    assert overlap.copies == ("a0", "b-exact", "b-near", "dropped-a2")
    assert overlap.same_patient == ("b-linked", "b-patient")
    assert overlap.counts() == {"copies": 4, "same_patient": 2, "left_out": 6}
    assert "a3" in overlap.reasons["b-near"] and "pixels" in overlap.reasons["b-near"]
    assert "a2" in overlap.reasons["dropped-a2"]
    assert "b-exact" in overlap.reasons["b-linked"]
    manifest = pd.read_parquet(other / "manifest.parquet")
    kept = overlap.keep(manifest)["uid"].tolist()
    assert "b-valcopy" in kept and "b-valpatient" in kept and len(kept) == len(manifest) - 6


def test_validation_counts_when_asked(planted: tuple[Path, Path]) -> None:
    train, other = planted
    overlap = external_overlap(train, other, splits=("train", "val"), near="none")
    assert "b-valcopy" in overlap.copies  # same pixels as v0
    assert "b-valpatient" in overlap.same_patient
    assert "b-near" not in overlap.copies  # no near-copy search asked for
    assert overlap.max_hamming is None


def test_hash_alone_on_manifest_frames(planted: tuple[Path, Path]) -> None:
    train, other = planted
    t = pd.read_parquet(train / "manifest.parquet")
    o = pd.read_parquet(other / "manifest.parquet")
    t.loc[t["uid"] == "a3", "phash"] = "00000000000000ff"
    o.loc[o["uid"] == "b-near", "phash"] = "00000000000001fe"  # 2 bits away
    o.loc[o["uid"] == "b-other0", "phash"] = "0000000000fff0ff"  # 12 bits away: a candidate
    o.loc[o["uid"] == "b-other1", "phash"] = "000000000ffff0ff"  # 13 bits: not
    overlap = external_overlap(t, o)  # frames: no files, no duplicates.csv
    assert overlap.near == "hash"
    assert overlap.copies == ("a0", "b-exact", "b-near", "b-other0")
    assert "dropped-a2" not in overlap.left_out  # the record of the copy lives in the folder
    assert overlap.same_patient == ("b-linked", "b-patient")
    tighter = external_overlap(t, o, max_hamming=4)
    assert tighter.copies == ("a0", "b-exact", "b-near")


def test_bad_input(tmp_path: Path, planted: tuple[Path, Path]) -> None:
    train, other = planted
    with pytest.raises(EvaluationError, match="not a built dataset"):
        external_overlap(tmp_path / "nothing", other)
    with pytest.raises(EvaluationError, match="no rows of splits"):
        external_overlap(train, other, splits=("training",))
    frame = pd.read_parquet(other / "manifest.parquet")
    with pytest.raises(EvaluationError, match="needs both datasets as folders"):
        external_overlap(train, frame, near="pixels")
    with pytest.raises(EvaluationError, match="'uid'"):
        external_overlap(train, frame.drop(columns="uid"))
