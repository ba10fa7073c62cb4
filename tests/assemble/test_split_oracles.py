"""Splits against oracles computed here: duplicate clusters stay whole, fractions and classes hold.

The records are generated, so the expected answer is known without the code under test: every
image of a duplicate cluster (``attributes["dup_cluster"]``) and every patient linked to it
through a copy lands in one split, whatever the patients; and each split receives its fraction
of the images, class by class, within a tolerance.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from covid19_images.assemble.build import build
from covid19_images.assemble.recipe import Recipe
from covid19_images.assemble.splits import SPLITS, split_records, stratified_group_split
from covid19_images.process.executor import LocalExecutor
from covid19_images.records import Record

CLASSES = {"covid19": ["covid19"], "normal": ["normal"], "pneumonia": ["pneumonia_viral"]}
LABEL_OF = {"covid19": "covid19", "normal": "normal", "pneumonia": "pneumonia_viral"}


def _recipe(train: float, val: float, test: float) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "oracle",
            "description": "generated records",
            "classes": CLASSES,
            "split": {"train": train, "val": val, "test": test},
        }
    )


def _class_of(record: Record) -> str:
    return next(c for c, labels in CLASSES.items() if record.label in labels)


def _record(n: int, cls: str, patient: str | None, cluster: str | None = None) -> Record:
    record = Record(source="gen", path_raw=f"img/{n}.png", patient_id=patient)
    record.label = LABEL_OF[cls]
    if cluster is not None:
        record.attributes["dup_cluster"] = cluster
    return record


def _clustered(seed: int) -> tuple[list[Record], dict[str, str]]:
    """300 images: 60 clusters of two or three copies, each copy with a patient of its own (ids
    from two sources of one person, as cross-source copies are), and 150 lone images."""
    rng = np.random.default_rng(seed)
    records: list[Record] = []
    n = 0
    for k in range(60):
        cls = ["covid19", "normal", "pneumonia"][k % 3]
        for copy in range(2 + k % 2):
            records.append(_record(n, cls, f"src{copy}:{k}", f"cluster-{k}"))
            n += 1
    for _ in range(150):
        cls = ["covid19", "normal", "pneumonia"][int(rng.integers(3))]
        records.append(_record(n, cls, f"lone:{n}"))
        n += 1
    order = rng.permutation(len(records))
    records = [records[i] for i in order]
    classes = {r.uid: _class_of(r) for r in records}
    return records, classes


@pytest.mark.parametrize("seed", range(5))
def test_images_of_one_duplicate_cluster_share_a_split(seed: int) -> None:
    records, classes = _clustered(seed)
    splits = split_records(_recipe(0.4, 0.3, 0.3), records, classes, False, seed)
    by_cluster: dict[str, set[str]] = defaultdict(set)
    for record, split in zip(records, splits, strict=True):
        if "dup_cluster" in record.attributes:
            by_cluster[record.attributes["dup_cluster"]].add(split)
    assert len(by_cluster) == 60
    crossing = {k: s for k, s in by_cluster.items() if len(s) > 1}
    assert not crossing, crossing
    # Clusters are spread over the splits (the check above is not vacuous).
    assert len({next(iter(s)) for s in by_cluster.values()}) == 3


@pytest.mark.parametrize("seed", range(5))
def test_a_dropped_copy_links_its_patient_to_the_kept_copy(seed: int) -> None:
    # Kept: a film of patient A (cluster k) and another film of patient B. Dropped by the
    # deduplication: B's copy of A's film (cluster k). A and B are one person: one split.
    records, classes = _clustered(seed)
    kept_a = _record(1000, "covid19", "site1:A", "cluster-x")
    kept_b = _record(1001, "covid19", "site2:B")
    dropped = _record(1002, "covid19", "site2:B", "cluster-x")
    lone = [r for r in records if "dup_cluster" not in r.attributes]
    kept = [*lone, kept_a, kept_b]
    everything = [*kept, dropped]
    classes = {**classes, kept_a.uid: "covid19", kept_b.uid: "covid19", dropped.uid: "covid19"}
    for attempt in range(8):
        splits = split_records(
            _recipe(0.4, 0.3, 0.3), kept, classes, False, seed * 8 + attempt, everything=everything
        )
        split_of = dict(zip((r.uid for r in kept), splits, strict=True))
        assert split_of[kept_a.uid] == split_of[kept_b.uid], attempt


@pytest.mark.parametrize(
    "fractions", [(0.7, 0.1, 0.2), (0.6, 0.3, 0.1), (0.2, 0.3, 0.5), (0.5, 0.0, 0.5)]
)
def test_each_split_gets_its_fraction_of_every_class(fractions: tuple[float, float, float]) -> None:
    rng = np.random.default_rng(7)
    # 1,200 images of 600-odd patients with one to three images each; classes 50 / 30 / 20 %.
    groups: list[str] = []
    labels: list[str] = []
    patient = 0
    while len(groups) < 1200:
        cls = rng.choice(["covid19", "normal", "pneumonia"], p=[0.5, 0.3, 0.2])
        for _ in range(int(rng.integers(1, 4))):
            groups.append(f"p{patient}")
            labels.append(str(cls))
        patient += 1
    wanted = dict(zip(SPLITS, fractions, strict=True))
    split = stratified_group_split(groups, labels, wanted, seed=3)
    total = Counter(labels)
    for name, fraction in wanted.items():
        share = split.count(name) / len(split)
        assert share == pytest.approx(fraction, abs=0.02), (name, share, fraction)
        for cls, count in total.items():
            inside = sum(1 for s, c in zip(split, labels, strict=True) if s == name and c == cls)
            assert inside / count == pytest.approx(fraction, abs=0.03), (name, cls, inside, count)
    # Patients stay whole.
    seen: dict[str, str] = {}
    for g, s in zip(groups, split, strict=True):
        assert seen.setdefault(g, s) == s


def test_recipe_fractions_reach_the_splits() -> None:
    records = [_record(n, ["covid19", "normal", "pneumonia"][n % 3], f"p:{n}") for n in range(600)]
    classes = {r.uid: _class_of(r) for r in records}
    splits = split_records(_recipe(0.6, 0.25, 0.15), records, classes, False, 0)
    counts = Counter(splits)
    assert counts["train"] == pytest.approx(360, abs=6)
    assert counts["val"] == pytest.approx(150, abs=6)
    assert counts["test"] == pytest.approx(90, abs=6)


def test_a_build_splits_by_the_recipe_fractions(shared_sources: Path, tmp_path: Path) -> None:
    # Figure 1 alone (a few seconds): patients with one to three films, 0.6 / 0.1 / 0.3.
    recipe = Recipe.model_validate(
        {
            "name": "figure1-fractions",
            "description": "Figure 1, every view and label",
            "sources": ["figure1"],
            "views": ["PA", "AP", "AP_SUPINE", "LATERAL"],
            "classes": {"covid19": ["covid19"], "other": ["unknown", "normal", "pneumonia_other"]},
            "split": {"train": 0.6, "val": 0.1, "test": 0.3},
        }
    )
    result = build(
        recipe,
        out=tmp_path / "out",
        mirror=shared_sources,
        root=tmp_path / "root",
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
        dicom=False,
    )
    manifest = pd.read_parquet(result.path / "manifest.parquet")
    assert len(manifest) >= 30
    share = manifest["split"].value_counts(normalize=True)
    assert share.get("train", 0.0) == pytest.approx(0.6, abs=0.1), share.to_dict()
    assert share.get("val", 0.0) == pytest.approx(0.1, abs=0.07), share.to_dict()
    assert share.get("test", 0.0) == pytest.approx(0.3, abs=0.1), share.to_dict()
    assert share.get("train", 0.0) > share.get("test", 0.0) > share.get("val", 0.0)
