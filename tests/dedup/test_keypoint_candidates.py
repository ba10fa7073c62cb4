"""The keypoint link of the copy search: a copy's keypoints sit where its original's are.

Synthetic signatures: a copy (the original's codes with a few bits flipped, its points scaled
and shifted as a crop moves them) is a candidate; a film sharing as many close codes at
scattered places, or one code close to many of the other's, is not.
"""

from __future__ import annotations

import numpy as np

from covid19_images.dedup.align import KEYPOINT_RADIUS, MIN_INLIERS
from covid19_images.dedup.near import _distinct_per_key, _keypoint_candidates
from covid19_images.process.signature import Signature

RNG = np.random.default_rng(7)


def _codes(n: int) -> np.ndarray:
    return RNG.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + (
        RNG.integers(0, 2, size=n, dtype=np.int64).astype(np.uint64)
    )


def _flipped(codes: np.ndarray, bits: int) -> np.ndarray:
    out = codes.copy()
    for k in range(len(out)):
        for bit in RNG.choice(64, size=bits, replace=False):
            out[k] ^= np.uint64(1) << np.uint64(int(bit))
    return out


def _signature(codes: np.ndarray, points: np.ndarray) -> Signature:
    return Signature((0.0, 0.0, 1.0, 1.0), (0,) * 7, codes, points.astype(np.float32))


ORIGINAL_CODES = _codes(40)
ORIGINAL_POINTS = RNG.uniform(0.05, 0.95, size=(40, 2))
ORIGINAL = _signature(ORIGINAL_CODES, ORIGINAL_POINTS)


def test_a_cropped_copy_is_a_candidate() -> None:
    kept = slice(0, 25)  # a crop keeps some keypoints, scaled and shifted
    copy = _signature(
        _flipped(ORIGINAL_CODES[kept], 3), (ORIGINAL_POINTS[kept] - 0.1) * 1.25 + 0.001
    )
    assert _keypoint_candidates([ORIGINAL, copy]) == {(0, 1)}


def test_close_codes_at_scattered_places_make_no_candidate() -> None:
    other = _signature(
        np.concatenate([_flipped(ORIGINAL_CODES[:12], 2), _codes(28)]),
        RNG.uniform(0.05, 0.95, size=(40, 2)),
    )
    assert _keypoint_candidates([ORIGINAL, other]) == set()


def test_one_code_close_to_many_makes_no_candidate() -> None:
    generic = np.repeat(_flipped(ORIGINAL_CODES[:1], 1), 2 * MIN_INLIERS)
    points = ORIGINAL_POINTS[: 2 * MIN_INLIERS]  # even at the same places
    other = _signature(np.concatenate([generic, _codes(10)]), np.concatenate([points] * 2))
    assert KEYPOINT_RADIUS >= 1
    assert _keypoint_candidates([ORIGINAL, other]) == set()


def test_no_codes_make_no_candidates() -> None:
    empty = _signature(np.zeros(0, np.uint64), np.zeros((0, 2)))
    assert _keypoint_candidates([empty, None, ORIGINAL]) == set()


def test_distinct_values_per_key() -> None:
    keys, counts = _distinct_per_key(np.array([5, 5, 5, 2, 9, 9]), np.array([1, 1, 3, 0, 4, 4]), 6)
    assert keys.tolist() == [2, 5, 9]
    assert counts.tolist() == [1, 2, 1]
