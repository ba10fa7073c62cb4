"""The candidate index finds exactly the pairs within the threshold, without n² work."""

from __future__ import annotations

import numpy as np
import pytest

from covid19_images.dedup.near import candidate_pairs


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
