"""A build never fails its own audit: copies the deduplication missed are kept in one split."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from covid19_images.assemble import xray as xray_module
from covid19_images.assemble.build import build
from covid19_images.audit import audit_dataset, cross_split_copies
from covid19_images.dedup.clusters import DedupResult, deduplicate


def _keep_everything(records: list, cache: Path, log: object, **_: object) -> DedupResult:
    """A deduplication that finds nothing: every copy reaches the split."""
    result = deduplicate([], cache, log)  # type: ignore[arg-type]
    return DedupResult(list(records), result.pairs, result.rejected, result.report)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_copies_missed_by_dedup_never_cross_splits(
    shared_sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    # Figure 1 and the Kaggle Covid-19 Image Dataset share re-encoded copies of films.
    monkeypatch.setattr(xray_module, "deduplicate", _keep_everything)
    result = build(
        "xray-covid",
        out=tmp_path / "out",
        mirror=shared_sources,
        root=tmp_path / "root",
        sources=["figure1", "covid19-image-dataset"],
        seed=seed,
        progress=False,
        fetch=False,
    )
    manifest = result.manifest
    # The copies are all still there (nothing was deduplicated) ...
    paths = [result.path / p for p in manifest["path"]]
    own_group = [f"x{i}" for i in range(len(paths))]  # every pair counts as "across"
    copies, _ = cross_split_copies(paths, own_group, manifest["uid"].tolist())
    assert len(copies) >= 3, "the fixture must hold copies for the test to mean anything"
    # ... yet no pair of them is on two sides of a split, and the written audit agrees.
    split_of = dict(zip(manifest["uid"], manifest["split"], strict=True))
    assert all(split_of[p["uid_a"]] == split_of[p["uid_b"]] for p in copies)
    audit = json.loads((result.path / "audit.json").read_text(encoding="utf-8"))
    assert audit["cross_split_duplicates"] == []
    assert audit["leakage"] is False
    assert not audit_dataset(result.path).leakage


def test_audit_still_fails_a_folder_that_leaks(shared_sources: Path, tmp_path: Path) -> None:
    result = build(
        "xray-covid",
        out=tmp_path / "out",
        mirror=shared_sources,
        root=tmp_path / "root",
        sources=["figure1"],
        progress=False,
        fetch=False,
    )
    manifest = pd.read_parquet(result.path / "manifest.parquet")
    # Put one image's twin (the same file) into another split by hand.
    row = manifest[manifest["split"] == "train"].iloc[0]
    twin = result.path / "test" / str(row["class"]) / "twin.png"
    twin.parent.mkdir(parents=True, exist_ok=True)
    twin.write_bytes((result.path / str(row["path"])).read_bytes())
    extra = row.copy()
    extra["uid"], extra["split"], extra["patient_id"] = "twin", "test", None
    extra["path"] = twin.relative_to(result.path).as_posix()
    pd.concat([manifest, extra.to_frame().T]).to_parquet(result.path / "manifest.parquet")
    report = audit_dataset(result.path)
    assert report.leakage
    assert any(
        {p["uid_a"], p["uid_b"]} == {row["uid"], "twin"} for p in report.cross_split_duplicates
    )


def test_a_memo_answers_the_same_files_again_and_nothing_else(
    shared_sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from covid19_images.audit import FileSignatures
    from covid19_images.audit import report as report_module

    folder = shared_sources / "figure1-covid-chestxray" / "images"
    originals = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg"})[:6]
    if len(originals) < 6:
        pytest.skip("needs six Figure 1 images in ../shared/sources")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for k, path in enumerate(originals):
        (first / f"{k}.jpg").write_bytes(path.read_bytes())
        (second / f"{k}.jpg").write_bytes(path.read_bytes())
    (first / "6.jpg").write_bytes(originals[0].read_bytes())  # an exact copy of image 0
    (second / "6.jpg").write_bytes(originals[0].read_bytes())
    uids = [f"u{k}" for k in range(7)]
    splits = ["train"] * 6 + ["test"]
    searches = 0
    real_search = report_module.find_duplicates

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal searches
        searches += 1
        return real_search(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(report_module, "find_duplicates", counted)
    memo = FileSignatures()
    found, _ = cross_split_copies([first / f"{k}.jpg" for k in range(7)], splits, uids, memo=memo)
    assert [{p["uid_a"], p["uid_b"]} for p in found] == [{"u0", "u6"}]
    # The same bytes under other paths, in another order: answered from the memo.
    order = [6, 3, 0, 5, 1, 4, 2]
    again, _ = cross_split_copies(
        [second / f"{k}.jpg" for k in order],
        [splits[k] for k in order],
        [uids[k] for k in order],
        memo=memo,
    )
    assert again == found and searches == 1
    # Other splits, or a changed file, are searched afresh.
    other = ["test"] + ["train"] * 5 + ["test"]
    moved, _ = cross_split_copies([second / f"{k}.jpg" for k in range(7)], other, uids, memo=memo)
    assert moved == [] and searches == 2
    (second / "6.jpg").write_bytes(originals[1].read_bytes())
    paths = [second / f"{k}.jpg" for k in range(7)]
    changed, _ = cross_split_copies(paths, splits, uids, memo=memo)
    assert [{p["uid_a"], p["uid_b"]} for p in changed] == [{"u1", "u6"}] and searches == 3
