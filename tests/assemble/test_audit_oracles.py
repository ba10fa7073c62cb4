"""The audit finds copies planted across splits of a built dataset that are not byte copies.

A small dataset is built from one real source, then a copy of one of its images is planted in
another split under another patient: a JPEG re-encode (quality 80) saved as PNG, whose pixels
differ from the original's, so only the near-copy search can find it; and, for CT, a copy of a
volume with identical voxels under another uid, which only the volume check can find.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covid19_images.assemble.build import BuildResult, build
from covid19_images.audit import audit_dataset
from covid19_images.process.executor import LocalExecutor


def _build(recipe: str, source: str, mirror: Path, work: Path) -> BuildResult:
    return build(
        recipe,
        out=work / "out",
        mirror=mirror,
        root=work / "root",
        sources=[source],
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
        dicom=False,
    )


def _pair_found(found: list[dict[str, object]], a: str, b: str) -> bool:
    return any({p["uid_a"], p["uid_b"]} == {a, b} for p in found)


@pytest.fixture(scope="module")
def figure1(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    return _build("xray-covid", "figure1", shared_sources, tmp_path_factory.mktemp("figure1"))


def test_a_reencoded_copy_across_splits_is_found(figure1: BuildResult, tmp_path: Path) -> None:
    assert audit_dataset(figure1.path).cross_split_duplicates == []  # the build is clean

    leaky = tmp_path / "leaky"
    shutil.copytree(figure1.path, leaky)
    manifest = pd.read_parquet(leaky / "manifest.parquet")
    original = manifest[manifest["split"] == "train"].iloc[0]
    with Image.open(leaky / original["path"]) as img:
        pixels = np.asarray(img.convert("L"))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=80)
    with Image.open(io.BytesIO(buffer.getvalue())) as img:
        reencoded = np.asarray(img.convert("L"))
    # Not an exact copy: other pixels, another pixel hash, another file.
    assert reencoded.shape == pixels.shape and np.any(reencoded != pixels)
    assert hashlib.sha256(reencoded.tobytes()).digest() != hashlib.sha256(pixels.tobytes()).digest()
    planted = original.copy()
    planted["uid"] = "planted-near-copy"
    planted["split"] = "test"
    planted["patient_id"] = "planted:another-patient"
    planted["path"] = f"test/{original['class']}/planted-near-copy.png"
    planted["sha256_pixels"] = hashlib.sha256(reencoded.tobytes()).hexdigest()
    (leaky / planted["path"]).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(reencoded).save(leaky / planted["path"])
    assert (leaky / planted["path"]).read_bytes() != (leaky / original["path"]).read_bytes()
    manifest = pd.concat([manifest, planted.to_frame().T], ignore_index=True)
    manifest.to_parquet(leaky / "manifest.parquet", index=False)

    report = audit_dataset(leaky)
    assert report.shared_patients == []  # only the pixels give the copy away
    assert report.unlisted_files == [] and report.missing_files == []
    assert _pair_found(report.cross_split_duplicates, original["uid"], "planted-near-copy"), (
        report.cross_split_duplicates
    )
    assert report.leakage


def test_an_identical_ct_volume_across_splits_is_found(
    shared_sources: Path, tmp_path: Path
) -> None:
    built = _build("ct-covid", "covid-ct-md", shared_sources, tmp_path / "ct")
    manifest = pd.read_parquet(built.path / "manifest.parquet")
    volumes = manifest[manifest["level"] == "volume"]
    assert not volumes.empty, "the covid-ct-md mirror gave no volume to plant a copy of"
    original = volumes.iloc[0]
    assert audit_dataset(built.path).cross_split_duplicates == []

    other = next(s for s in ("test", "val", "train") if s != original["split"])
    planted = original.copy()
    planted["uid"] = "planted-volume-copy"
    planted["split"] = other
    planted["patient_id"] = "planted:another-patient"
    planted["path"] = f"volumes/{other}/{original['class']}/planted-volume-copy.nii.gz"
    (built.path / planted["path"]).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built.path / original["path"], built.path / planted["path"])  # same voxels
    manifest = pd.concat([manifest, planted.to_frame().T], ignore_index=True)
    manifest.to_parquet(built.path / "manifest.parquet", index=False)

    report = audit_dataset(built.path)
    assert report.shared_patients == []
    assert _pair_found(report.cross_split_duplicates, original["uid"], "planted-volume-copy"), (
        report.cross_split_duplicates
    )
    assert report.leakage


def test_identical_volumes_in_two_splits_are_found_from_the_manifest(tmp_path: Path) -> None:
    # No upstream files: three volumes, two with one voxel hash in train and test.
    folder = tmp_path / "ct-dataset"
    rows = []
    for uid, split, digest in [
        ("vol-a", "train", "1" * 64),
        ("vol-b", "test", "1" * 64),
        ("vol-c", "test", "2" * 64),
        ("vol-d", "train", "2" * 64),
    ]:
        path = f"volumes/{split}/covid19/{uid}.nii.gz"
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(b"volume " + digest.encode())
        rows.append(
            {
                "uid": uid,
                "split": split,
                "path": path,
                "patient_id": f"gen:{uid}",
                "class": "covid19",
                "source": "gen",
                "level": "volume",
                "sha256_pixels": digest,
                "age": None,
                "tags": [],
            }
        )
    pd.DataFrame(rows).to_parquet(folder / "manifest.parquet", index=False)
    report = audit_dataset(folder)
    found = {frozenset((p["uid_a"], p["uid_b"])) for p in report.cross_split_duplicates}
    assert found == {frozenset(("vol-a", "vol-b")), frozenset(("vol-c", "vol-d"))}
    assert report.leakage
