"""The hash index returns exactly the brute-force pairs, for the build's radii and edge cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from covid19_images.dedup.align import KEYPOINT_RADIUS
from covid19_images.dedup.index import (
    Method,
    as_hashes,
    candidate_pairs,
    candidate_search,
    plan,
    sampled_pairs,
)
from covid19_images.dedup.near import DEFAULT_MAX_HAMMING, VIEW_RADIUS

RADII = [DEFAULT_MAX_HAMMING, VIEW_RADIUS, KEYPOINT_RADIUS]


def _brute(values: np.ndarray, radius: int) -> list[list[int]]:
    """Every pair compared, a block of rows at a time."""
    found = []
    for lo in range(0, len(values), 500):
        distance = np.bitwise_count(values[lo : lo + 500, None] ^ values[None, :])
        i, j = np.nonzero(distance <= radius)
        keep = j > i + lo
        found.append(np.stack([i[keep] + lo, j[keep]], axis=1))
    pairs: list[list[int]] = np.concatenate([np.empty((0, 2), dtype=np.int64), *found]).tolist()
    return pairs


def _flip(value: int, bits: list[int] | np.ndarray) -> int:
    for bit in bits:
        value ^= 1 << int(bit)
    return value


def _planted(radius: int, n: int, seed: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Random hashes with planted pairs at every distance 0 .. radius + 1 (each ten times, the
    flipped bits anywhere or all in a few adjacent positions), and clusters of four copies of one
    hash each with 0 .. radius bits flipped; with the planted pairs ``(i, j, distance)``."""
    rng = np.random.default_rng(seed)
    values = [int(v) for v in rng.integers(0, 2**64, n, dtype=np.uint64)]
    planted = []
    slots = iter(rng.permutation(n).tolist())
    for distance in range(radius + 2):
        for k in range(10):
            i, j = next(slots), next(slots)
            if k % 2:
                bits = rng.choice(64, distance, replace=False)
            else:  # bunched: every flipped bit in one stretch of the hash
                first = int(rng.integers(0, 64 - distance + 1))
                bits = np.arange(first, first + distance)
            values[j] = _flip(values[i], bits)
            planted.append((min(i, j), max(i, j), distance))
    for _ in range(40):
        members = [next(slots) for _ in range(4)]
        for member in members[1:]:
            flips = int(rng.integers(0, radius + 1))
            values[member] = _flip(values[members[0]], rng.choice(64, flips, replace=False))
    return np.array(values, dtype=np.uint64), planted


@pytest.mark.parametrize("radius", RADII)
def test_exactly_the_brute_force_pairs_with_planted_clusters(radius: int) -> None:
    values, planted = _planted(radius, 3000, seed=radius)
    expected = _brute(values, radius)
    # The keys a million hashes get (the plan the benchmark measures), and this size's own.
    for using in (plan(1_000_000, radius), None):
        found = candidate_search(values, radius, method="index", using=using)
        assert found.stats.tables > 0  # the index ran, not brute force
        assert found.pairs.tolist() == expected
    pairs = set(map(tuple, expected))
    assert all(((i, j) in pairs) == (d <= radius) for i, j, d in planted)
    assert sum(d == radius + 1 for *_, d in planted) == 10  # none of them returned
    assert candidate_pairs(values.tolist(), radius).tolist() == expected


def test_the_keys_cover_every_set_of_differing_bits() -> None:
    """Whatever bits two hashes differ in (up to the radius), some key holds none of them: every
    set for small radii, and random and bunched sets for the build's radii."""
    for radius in (1, 2, 3, 4):
        masks = np.array(plan(1_000_000, radius, brute=False).masks, dtype=np.uint64)
        sets = np.array(
            [sum(1 << b for b in bits) for bits in itertools.combinations(range(64), radius)],
            dtype=np.uint64,
        )
        assert ((sets[:, None] & masks[None, :]) == 0).any(axis=1).all(), radius
    rng = np.random.default_rng(0)
    for radius in (*RADII, 13, 20):
        masks = np.array(plan(1_000_000, radius, brute=False).masks, dtype=np.uint64)
        spread = [
            sum(1 << int(b) for b in rng.choice(64, radius, replace=False)) for _ in range(20000)
        ]
        bunched = [((1 << radius) - 1) << shift for shift in range(64 - radius + 1)]
        differ = np.array(spread + bunched, dtype=np.uint64)
        assert ((differ[:, None] & masks[None, :]) == 0).any(axis=1).all(), radius


def test_work_grows_with_the_near_pairs_not_with_all_pairs() -> None:
    values = np.random.default_rng(1).integers(0, 2**64, 8000, dtype=np.uint64)
    everything = 8000 * 7999 // 2
    expected = _brute(values, DEFAULT_MAX_HAMMING)
    for using, share in ((None, 0.05), (plan(1_000_000, DEFAULT_MAX_HAMMING), 0.01)):
        found = candidate_search(values, DEFAULT_MAX_HAMMING, method="index", using=using)
        assert found.stats.compared < share * everything
        assert found.pairs.tolist() == expected


def test_many_identical_and_near_identical_hashes() -> None:
    """Blank images (one hash many times) and a dense family of near copies: every pair is
    real and returned once; identical hashes are searched once."""
    rng = np.random.default_rng(2)
    values = rng.integers(0, 2**64, 3000, dtype=np.uint64)
    values[:800] = values[0]
    centre = int(values[900])
    for k in range(900, 1300):
        values[k] = _flip(centre, rng.choice(64, int(rng.integers(0, 3)), replace=False))
    found = candidate_search(values, DEFAULT_MAX_HAMMING, method="index")
    expected = _brute(values, DEFAULT_MAX_HAMMING)
    assert found.pairs.tolist() == expected
    assert found.stats.distinct < 3000 - 799
    assert found.stats.identical_pairs >= 800 * 799 // 2
    assert found.stats.pairs == len(expected) > 400 * 399 // 2


@pytest.mark.parametrize("method", ["auto", "index", "brute"])
def test_edge_cases(method: Method) -> None:
    def search(hashes: list[int], radius: int) -> list[list[int]]:
        pairs: list[list[int]] = candidate_search(hashes, radius, method=method).pairs.tolist()
        return pairs

    assert candidate_search([], 12, method=method).pairs.shape == (0, 2)
    assert search([7], 12) == []
    assert search([7, 7, 7, 7], 0) == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert search([7, 7, 7, 7], 12) == search([7, 7, 7, 7], 0)
    assert search([0, 1, 3, 0], 0) == [[0, 3]]
    assert search([0, 1, 3, 0], -1) == []
    assert search([0, 2**64 - 1, 1], 63) == [[0, 2], [1, 2]]
    assert search([0, 2**64 - 1, 1], 64) == [[0, 1], [0, 2], [1, 2]]
    # Radii that need more parts and keys than the build's.
    values = np.random.default_rng(3).integers(0, 2**64, 600, dtype=np.uint64)
    values[300:] = values[:300] ^ np.uint64(0x0F0F_0F0F)  # 16 bits apart
    for radius in (15, 16, 20, 30):
        assert search(values.tolist(), radius) == _brute(values, radius), radius


def test_hashes_in_any_integer_form() -> None:
    big = [2**63 + 5, 2**63 + 4, 3]
    assert as_hashes(big).tolist() == big
    assert as_hashes(np.array(big, dtype=np.uint64).view(np.int64)).tolist() == big
    assert as_hashes(np.array([1, 2], dtype=np.int32)).tolist() == [1, 2]
    assert candidate_pairs(np.array(big, dtype=np.uint64), 1).tolist() == [[0, 1]]


def test_a_plan_for_a_smaller_radius_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot search"):
        candidate_search([1, 2, 3], 12, using=plan(1_000_000, 8))


def test_sampled_pairs_are_within_the_radius_and_find_close_pairs() -> None:
    """The approximate search returns only true pairs, finds planted pairs of up to 3 bits
    (the keypoint codes of a copy), and is reproducible."""
    values, planted = _planted(KEYPOINT_RADIUS, 20_000, seed=3)
    exact = {tuple(p) for p in candidate_pairs(values, KEYPOINT_RADIUS).tolist()}
    found = sampled_pairs(values, KEYPOINT_RADIUS)
    pairs = {tuple(p) for p in found.tolist()}
    assert pairs <= exact  # nothing beyond the radius
    assert found.tolist() == sorted(found.tolist())
    close = [(i, j) for i, j, d in planted if d <= 3]
    assert len(close) == 40 and all(pair in pairs for pair in close)
    assert sampled_pairs(values, KEYPOINT_RADIUS).tolist() == found.tolist()  # seeded


def test_sampled_pairs_leave_out_crowded_hashes() -> None:
    """Hashes that occur more than ``crowded`` times pair with none; a dense crowd (400 hashes
    within 4 bits of each other) gives a bounded share of its pairs, not all of them; an
    ordinary close pair elsewhere is still found."""
    rng = np.random.default_rng(11)
    values = [int(v) for v in rng.integers(0, 2**64, 5000, dtype=np.uint64)]
    hub = values[0]
    values[4000] = _flip(values[1], [5, 17])  # one ordinary close pair
    copies = [hub] * 100
    crowd = [_flip(hub, rng.choice(64, 2, replace=False)) for _ in range(400)]
    found = sampled_pairs(values + copies + crowd, KEYPOINT_RADIUS, crowded=64).tolist()
    assert [1, 4000] in found
    assert not any(i == 0 or 5000 <= i < 5100 or 5000 <= j < 5100 for i, j in found)
    in_crowd = sum(i >= 5100 for i, _ in found)
    exact = candidate_pairs(values + copies + crowd, KEYPOINT_RADIUS)
    assert (exact[:, 0] >= 5100).sum() > 70_000  # nearly every two of the crowd
    assert in_crowd < 0.1 * (exact[:, 0] >= 5100).sum()
    # Below the limit, copies of one hash are searched: every two of them is a pair.
    few = sampled_pairs(values + [hub] * 10, KEYPOINT_RADIUS, crowded=64).tolist()
    assert all([a, b] in few for a, b in itertools.combinations([0, *range(5000, 5010)], 2))
