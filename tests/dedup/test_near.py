"""The candidate index finds exactly the pairs within the threshold, without n² work."""

from __future__ import annotations

import numpy as np
import pytest

from covid19_images.dedup.near import (
    DEFAULT_MAX_HAMMING,
    NEAREST,
    candidate_pairs,
    find_duplicates,
)


def _concentrated(n: int, flips: int, seed: int) -> np.ndarray:
    """Hashes clustered like chest radiographs': a few centres, a few bits flipped."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2**63, size=20, dtype=np.int64).astype(np.uint64)
    values = centres[rng.integers(0, 20, n)]
    for _ in range(flips):
        values ^= np.uint64(1) << rng.integers(0, 64, n).astype(np.uint64)
    return values


@pytest.mark.parametrize(("max_hamming", "flips"), [(0, 3), (5, 4), (12, 8), (13, 10), (20, 10)])
def test_index_equals_brute_force(max_hamming: int, flips: int) -> None:
    values = _concentrated(1500, flips, seed=max_hamming)
    distance = np.bitwise_count(values[:, None] ^ values[None, :])
    i, j = np.triu_indices(len(values), 1)
    close = distance[i, j] <= max_hamming
    expected = np.stack([i[close], j[close]], axis=1)
    found = candidate_pairs(values.tolist(), max_hamming)
    assert found.tolist() == expected.tolist()


def test_degenerate_inputs() -> None:
    assert candidate_pairs([], 12).shape == (0, 2)
    assert candidate_pairs([5], 12).shape == (0, 2)
    assert candidate_pairs([7, 7, 7], 0).tolist() == [[0, 1], [0, 2], [1, 2]]


def test_look_alikes_cost_a_bounded_number_of_tests_and_the_copy_is_found() -> None:
    """300 different films whose whole-frame hashes are all within the radius of each other
    (44,850 candidate pairs) and one copy among them: each image's closest candidates are
    tested, at most NEAREST per image, and the copy (its hash the closest) is confirmed."""
    rng = np.random.default_rng(5)
    n = 300
    base = int(rng.integers(0, 2**63))
    hashes = [base ^ sum(1 << int(b) for b in rng.choice(64, 5, replace=False)) for _ in range(n)]
    hashes[1] = hashes[0] ^ 1  # the copy: one bit from its original, closer than any other
    thumbs = [rng.normal(128, 40, (64, 64)) for _ in range(n)]
    thumbs[1] = thumbs[0] + rng.normal(0, 2, (64, 64))
    assert len(candidate_pairs(hashes, DEFAULT_MAX_HAMMING)) == n * (n - 1) // 2
    report = find_duplicates(
        [f"{i}" for i in range(n)], [f"{h:016x}" for h in hashes], thumbs.__getitem__
    )
    assert [(p.a, p.b) for p in report.pairs] == [(0, 1)]
    assert len(report.pairs) + len(report.rejected) <= n * NEAREST
    assert report.candidates <= n * NEAREST
