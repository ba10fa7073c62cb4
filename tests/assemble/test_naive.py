"""``build --naive``'s parts: the random split, the copies it keeps, its marks and warning.

The builds themselves are tested on the real files in ``tests/cli/test_build_cli.py``
(``xray-covid``) and ``tests/assemble/test_ct_build.py`` (``ct-binary``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from covid19_images.assemble.build import BuildError, _select, build
from covid19_images.assemble.naive import (
    fractions_of,
    is_naive_choice,
    keep_augmented,
    keep_copies,
    random_split,
    split_slices,
    summarize,
    warning,
)
from covid19_images.assemble.recipe import load_recipe
from covid19_images.audit.report import _shared_patients
from covid19_images.problems import ProblemLog
from covid19_images.records import Record

THIRDS = {"train": 0.7, "val": 0.1, "test": 0.2}


def test_random_split_is_stratified_seeded_and_blind_to_everything_but_the_class() -> None:
    labels = ["covid19"] * 100 + ["normal"] * 30
    split = random_split(labels, THIRDS, seed=0)
    assert Counter(split[:100]) == {"train": 70, "val": 10, "test": 20}
    assert Counter(split[100:]) == {"train": 21, "val": 3, "test": 6}
    assert random_split(labels, THIRDS, seed=0) == split
    other = random_split(labels, THIRDS, seed=1)
    assert other != split and Counter(other[:100]) == Counter(split[:100])
    # not a block per class: the order within a class is shuffled
    assert split[:70] != ["train"] * 70
    # a zero fraction gets nothing; counts always add up
    odd = random_split(["a"] * 7, {"train": 0.5, "val": 0.0, "test": 0.5}, seed=3)
    assert set(odd) == {"train", "test"} and len(odd) == 7


def test_membership_recipes_split_naive_in_upstreams_proportions() -> None:
    records = [Record(source="s", path_raw=f"{i}.png", upstream_split="train") for i in range(3)]
    records.append(Record(source="s", path_raw="t.png", upstream_split="test"))
    fractions = fractions_of(load_recipe("covidx"), records, upstream=True)
    assert fractions == {"train": 0.75, "val": 0.0, "test": 0.25}


def test_select_keeps_augmented_copies_only_when_naive() -> None:
    recipe = load_recipe("xray-covid")
    copy = Record(
        source="covid19-detection-xray-dataset",
        path_raw="TrainData/COVID-19/aug.png",
        modality="XR",
        view="UNKNOWN",
        label="covid19",
        tags=["augmented"],
    )
    log = ProblemLog()
    log.add(copy.source, copy.path_raw, None, "augmented-copy", "excluded", "an augmented image")
    assert _select(recipe, [copy], None, ProblemLog()) == {}
    assert _select(recipe, [copy], None, ProblemLog(), naive=True) == {copy.uid: "covid19"}
    rows = list(keep_augmented(log, [copy]))
    assert [(p.kind, p.action) for p in rows] == [("augmented-copy", "kept")]
    assert is_naive_choice(rows[0]) and "an augmented image" in rows[0].detail
    untouched = list(keep_augmented(log, []))
    assert untouched[0].action == "excluded"


def test_copies_found_are_kept_noted_and_counted() -> None:
    a = Record(source="s", path_raw="a.png", uid="a")
    b = Record(source="t", path_raw="b.png", uid="b")
    scratch, log = ProblemLog(), ProblemLog()
    scratch.add("t", "b.png", None, "duplicate", "excluded", "copy of s a.png (uid a), kept")
    keep_copies(scratch, log, [a, b])
    (row,) = list(log)
    assert (row.kind, row.action) == ("duplicate", "kept") and "copy of s a.png" in row.detail
    assert b.problems == ["duplicate"] and a.problems == []
    assert log.input_problems() and not [p for p in log if not is_naive_choice(p)]
    pairs = pd.DataFrame({"uid_a": ["a"], "uid_b": ["b"], "exact": [True]})
    summary = summarize(log, pairs, 1, THIRDS, 0, "image", {"a": "train", "b": "test"})
    assert summary.images == 1 and summary.total("duplicate") == 1
    assert (summary.pairs, summary.exact_pairs, summary.pairs_across) == (1, 1, 1)
    assert summary.as_dict()["kept"] == {"t": {"duplicate": 1}}


def test_slices_of_a_volume_are_split_one_by_one_and_2d_slices_keep_theirs() -> None:
    rows = pd.DataFrame(
        {
            "uid": ["v"] * 40 + ["img"],
            "slice": pd.array([*range(40), None], dtype="Int64"),
            "class": ["covid19"] * 41,
            "split": ["train"] * 40 + ["val"],
            "path": [f"train/covid19/v_{k:04d}.png" for k in range(40)] + ["val/covid19/img.png"],
        }
    )
    out = split_slices(rows, THIRDS, seed=0)
    assert Counter(out["split"][:40]) == {"train": 28, "val": 4, "test": 8}
    assert out["split"].iloc[40] == "val" and out["path"].iloc[40] == "val/covid19/img.png"
    for split, path, k in zip(out["split"], out["path"][:40], range(40), strict=False):
        assert path == f"{split}/covid19/v_{k:04d}.png"


def test_the_audit_counts_a_patient_whose_slices_are_in_two_splits() -> None:
    manifest = pd.DataFrame(
        {"uid": ["v", "w"], "patient_id": ["p", None], "split": ["train", "train"]}
    )
    assert _shared_patients(manifest) == []
    slices = pd.DataFrame(
        {
            "uid": ["v", "v", "w", "w"],
            "patient_id": ["p", "p", None, None],
            "split": ["train", "test", "train", "val"],
        }
    )
    assert _shared_patients(manifest, slices) == [
        {"patient_id": "p", "splits": ["test", "train"]},
        {"patient_id": None, "uid": "w", "splits": ["train", "val"]},
    ]


def test_naive_and_lock_do_not_go_together(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="--naive and --lock"):
        build("xray-covid", out=tmp_path, lock=tmp_path / "lock.json", naive=True)
    assert list(tmp_path.iterdir()) == []


def test_the_warning_says_what_the_audit_and_the_copy_search_found(tmp_path: Path) -> None:
    audit = {"shared_patients": [{}, {}], "cross_split_duplicates": [{}]}
    (tmp_path / "audit.json").write_text(json.dumps(audit), encoding="utf-8")
    lock = {"naive": True, "naive_build": {"pairs_across_splits": 7}}
    (tmp_path / "lock.json").write_text(json.dumps(lock), encoding="utf-8")
    line = warning(tmp_path)
    assert "\n" not in line
    assert "leakage by design" in line and "never for reporting results" in line
    assert "2 patients in several splits and 1 copy across splits" in line
    assert "put 7 pairs of copies apart" in line
    (tmp_path / "lock.json").unlink()  # what the audit found is said anyway
    assert "2 patients" in warning(tmp_path) and "pairs of copies" not in warning(tmp_path)
