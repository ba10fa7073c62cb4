"""Edges of `build`: other recipes, locks that do not fit, empty selections, odd paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covid19_images.assemble.build import BuildError, build
from covid19_images.audit import audit_dataset
from covid19_images.process.executor import LocalExecutor


def _build(recipe: str, tmp_path: Path, mirror: Path, **options: object):  # type: ignore[no-untyped-def]
    return build(
        recipe,
        out=tmp_path / "out",
        mirror=mirror,
        root=tmp_path / "root",
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
        **options,  # type: ignore[arg-type]
    )


def test_xray_binary_recipe(shared_sources: Path, tmp_path: Path) -> None:
    result = _build("xray-binary", tmp_path, shared_sources, sources=["ieee8023", "figure1"])
    assert set(result.manifest["class"]) == {"covid19", "non_covid"}
    non_covid = result.manifest[result.manifest["class"] == "non_covid"]
    assert set(non_covid["label"]) <= {
        "pneumonia_viral",
        "pneumonia_bacterial",
        "pneumonia_fungal",
        "pneumonia_other",
        "normal",
        "lung_opacity",
        "other_finding",
    }


def test_covidx_recipe_gives_covidx_splits(shared_sources: Path, tmp_path: Path) -> None:
    result = _build("covidx", tmp_path, shared_sources, sources=["ieee8023", "figure1"])
    table = pd.concat(
        pd.read_csv(
            shared_sources / "covidx" / "labels" / f"{split}_COVIDx9A.txt",
            sep=" ",
            header=None,
            names=["patient", "file", "label", "source"],
        ).assign(split=split)
        for split in ("train", "test")
    )
    expected = {
        (f, s)
        for f, s, src in zip(table["file"], table["split"], table["source"], strict=True)
        if src in {"cohen", "fig1"}
    }
    got = {
        (Path(p).name, s)
        for p, s in zip(result.manifest["path_raw"], result.manifest["split"], strict=True)
    }
    assert got and got <= expected  # every image kept is in COVIDx, in COVIDx's split
    assert set(result.manifest["split"]) <= {"train", "test"}
    problems = pd.read_csv(result.path / "problems.csv")
    assert (problems["detail"] == "not in the COVIDx label files").any()


def test_covidx_recipe_keeps_covidx_own_images(shared_sources: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "covidx").mkdir(parents=True)
    shutil.copytree(shared_sources / "covidx" / "labels", mirror / "covidx" / "labels")
    first = (mirror / "covidx" / "labels" / "train_COVIDx9A.txt").read_text().splitlines()[0]
    name = first.split()[1]
    (mirror / "covidx" / "train").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 300), dtype=np.uint8)).save(
        mirror / "covidx" / "train" / name, format="PNG" if name.lower().endswith("png") else "JPEG"
    )
    result = _build("covidx", tmp_path, mirror, sources=["covidx"])
    assert result.manifest["path_raw"].tolist() == [f"train/{name}"]
    assert result.manifest["split"].tolist() == ["train"]


def test_nothing_passing_the_recipe_is_one_clear_error(
    shared_sources: Path, tmp_path: Path
) -> None:
    from covid19_images.assemble.recipe import load_recipe, with_options

    adult = with_options(load_recipe("xray-covid"), adult_only=True)
    with pytest.raises(BuildError, match=r"no image passes recipe xray-covid.*adult-only"):
        _build(adult, tmp_path, shared_sources, sources=["zhanglab"])  # type: ignore[arg-type]
    assert not (tmp_path / "out" / "xray-covid").exists()


@pytest.fixture
def small(shared_sources: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    return _build("xray-covid", tmp_path, shared_sources, sources=["figure1"])


def test_bad_or_mismatched_locks_are_refused(small, shared_sources: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lock = json.loads((small.path / "lock.json").read_text())
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**lock, "recipe": {"name": "x"}}))
    with pytest.raises(BuildError, match="not a lock file"):
        _build("xray-covid", tmp_path / "a", shared_sources, lock=broken)
    changed = tmp_path / "changed.json"
    lock["sources"]["figure1"]["files_sha256"] = "0" * 64
    changed.write_text(json.dumps(lock))
    with pytest.raises(BuildError, match="differ from the lock"):
        _build("xray-covid", tmp_path / "b", shared_sources, lock=changed)
    lock = json.loads((small.path / "lock.json").read_text())
    lock["manifest_sha256"] = "0" * 64
    other = tmp_path / "other.json"
    other.write_text(json.dumps(lock))
    with pytest.raises(BuildError, match="manifest differs"):
        _build("xray-covid", tmp_path / "c", shared_sources, lock=other)
    assert not (tmp_path / "c" / "out" / "xray-covid").exists()


def test_a_mirror_path_with_parentheses(shared_sources: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "upstream (copy)"
    mirror.mkdir()
    (mirror / "figure1-covid-chestxray").symlink_to(shared_sources / "figure1-covid-chestxray")
    result = _build("xray-covid", tmp_path, mirror, sources=["figure1"])
    assert len(result.manifest) > 30


def test_an_unrelated_folder_is_never_replaced(shared_sources: Path, tmp_path: Path) -> None:
    precious = tmp_path / "out" / "xray-covid"
    precious.mkdir(parents=True)
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(BuildError, match="not a dataset"):
        _build("xray-covid", tmp_path, shared_sources, sources=["figure1"])
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_audit_reports_missing_and_unlisted_files(small, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "copy"
    shutil.copytree(small.path, copy)
    manifest = pd.read_parquet(copy / "manifest.parquet")
    (copy / manifest["path"].iloc[0]).unlink()
    shutil.copyfile(
        copy / manifest["path"].iloc[1], copy / "train" / manifest["class"].iloc[1] / "extra.png"
    )
    report = audit_dataset(copy)
    assert report.missing_files == [manifest["path"].iloc[0]]
    assert report.unlisted_files == [f"train/{manifest['class'].iloc[1]}/extra.png"]
    assert report.broken


def test_an_unchanged_rebuild_does_nothing_and_a_change_is_noticed(
    shared_sources: Path, tmp_path: Path
) -> None:
    import os

    mirror = tmp_path / "mirror"
    shutil.copytree(shared_sources / "figure1-covid-chestxray", mirror / "figure1-covid-chestxray")
    first = _build("xray-covid", tmp_path, mirror, sources=["figure1"])
    assert not first.up_to_date
    manifest = (first.path / "manifest.parquet").read_bytes()

    again = _build("xray-covid", tmp_path, mirror, sources=["figure1"])
    assert again.up_to_date
    assert len(again.manifest) == len(first.manifest)
    assert again.problems.summary() == first.problems.summary()

    os.utime(mirror / "figure1-covid-chestxray" / "metadata.csv")  # touched: read again
    touched = _build("xray-covid", tmp_path, mirror, sources=["figure1"])
    assert not touched.up_to_date
    assert (touched.path / "manifest.parquet").read_bytes() == manifest

    forced = _build("xray-covid", tmp_path, mirror, sources=["figure1"], force=True)
    assert not forced.up_to_date
    other_seed = _build("xray-covid", tmp_path, mirror, sources=["figure1"], seed=7)
    assert not other_seed.up_to_date  # an option changed


def test_another_size_after_a_build_reuses_nothing_it_cannot(
    small,
    shared_sources: Path,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    # Same data root as `small` (built at 224 px): the cache must make the 256 px copies.
    other = build(
        "xray-covid",
        out=tmp_path / "s256",
        mirror=shared_sources,
        root=small.path.parent.parent / "root",
        sources=["figure1"],
        size=256,
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
    )
    sizes = {Image.open(other.path / p).size for p in other.manifest["path"]}
    assert sizes == {(256, 256)}
