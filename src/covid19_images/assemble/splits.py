"""Patient-grouped, label-stratified, seeded splits.

Images are grouped by patient *and* by duplicate cluster (the union of both: two patients who
share a film are one group), so no patient and no copy of a film is ever on two sides. Groups are
then assigned greedily, largest first, to the split whose label counts fall furthest short of
their targets; the shuffle that breaks ties is seeded, so a seed always gives the same split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from covid19_images.assemble.recipe import Recipe
    from covid19_images.records import Record

SPLITS = ("train", "val", "test")


def group_ids(
    uids: Sequence[str],
    patients: Sequence[str | None],
    clusters: Sequence[str | None],
) -> list[str]:
    """One group id per image: connected components of 'same patient' and 'same cluster'.

    Images with neither a patient nor a cluster are their own group.

    Example:
        >>> group_ids(["a", "b", "c", "d"], ["p1", "p2", "p3", None], [None, "k", "k", None])
        ['a', 'b', 'b', 'd']
    """
    parent = list(range(len(uids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, (patient, cluster) in enumerate(zip(patients, clusters, strict=True)):
        for key in (("p", patient), ("c", cluster)):
            if key[1] is None:
                continue
            j = first.setdefault(key, i)  # type: ignore[arg-type]
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    return [uids[find(i)] for i in range(len(uids))]


def merge_groups(groups: Sequence[str], links: Sequence[tuple[int, int]]) -> list[str]:
    """Groups with the groups of each linked pair of images ``(i, j)`` made one.

    Example:
        >>> merge_groups(["a", "b", "c", "c"], [(0, 3)])
        ['a', 'b', 'a', 'a']
    """
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    for i, j in links:
        ri, rj = find(groups[i]), find(groups[j])
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [find(g) for g in groups]


def stratified_group_split(
    groups: Sequence[str],
    labels: Sequence[str],
    fractions: Mapping[str, float],
    seed: int,
) -> list[str]:
    """Assign every image a split so that groups stay whole and labels keep their proportions.

    Args:
        groups: Group id of each image (from :func:`group_ids`).
        labels: Class of each image.
        fractions: Split name → fraction (normalised; zero fractions get nothing).
        seed: Seed of the tie-breaking shuffle.

    Example:
        >>> groups = [f"g{i // 2}" for i in range(40)]
        >>> labels = ["a" if i < 20 else "b" for i in range(40)]
        >>> split = stratified_group_split(groups, labels, {"train": 0.5, "test": 0.5}, seed=0)
        >>> all(split[i] == split[i + 1] for i in range(0, 40, 2)), split.count("train")
        (True, 20)
    """
    names = [n for n, f in fractions.items() if f > 0]
    weights = np.array([fractions[n] for n in names], dtype=np.float64)
    weights /= weights.sum()
    classes = sorted(set(labels))
    column = {c: k for k, c in enumerate(classes)}
    members: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    order = sorted(members)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: the shuffle breaks ties

    totals = np.zeros(len(classes))
    for label in labels:
        totals[column[label]] += 1
    target = np.outer(weights, totals)  # split x class
    have = np.zeros_like(target)
    assignment: dict[str, int] = {}
    for group in order:
        counts = np.zeros(len(classes))
        for i in members[group]:
            counts[column[labels[i]]] += 1
        # Largest shortfall (relative to the target) on the group's classes wins; ties go to the
        # split with more room overall.
        shortfall = ((target - have) * (counts > 0)).sum(axis=1) / np.maximum(target.sum(axis=1), 1)
        room = (target.sum(axis=1) - have.sum(axis=1)) / np.maximum(target.sum(axis=1), 1)
        best = int(np.lexsort((-room, -shortfall))[0])
        assignment[group] = best
        have[best] += counts
    return [names[assignment[g]] for g in groups]


def split_records(
    recipe: Recipe,
    kept: list[Record],
    classes: dict[str, str],
    upstream: bool,
    seed: int,
    *,
    everything: list[Record] | None = None,
    links: list[tuple[int, int]] | None = None,
) -> list[str]:
    """A split per kept record: grouped by patient and copy cluster, stratified by class.

    ``everything`` holds the records before deduplication: a copy that was dropped still
    links its own patient with the patient of the copy kept (one person, two ids), so every
    image of both lands in one split. ``links`` are pairs of kept records (indices) that must
    share a split too. ``upstream``: each record keeps the split its source gave it.
    """
    if upstream:
        return [r.upstream_split or "train" for r in kept]
    pool = everything if everything is not None else kept
    groups = group_ids(
        [r.uid for r in pool],
        [r.patient_id for r in pool],
        [r.attributes.get("dup_cluster") for r in pool],
    )
    group_of = dict(zip((r.uid for r in pool), groups, strict=True))
    kept_groups = [group_of.get(r.uid, r.uid) for r in kept]
    if links:
        kept_groups = merge_groups(kept_groups, links)
    return stratified_group_split(
        kept_groups, [classes[r.uid] for r in kept], recipe.split.fractions(), seed
    )
