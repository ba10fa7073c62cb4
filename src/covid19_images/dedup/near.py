"""Find exact and near-duplicate images across every source, before any split.

Exact duplicates share the sha256 of their decoded grey pixels. Near duplicates are found in two
steps, because chest radiographs look alike and a small perceptual-hash distance alone also pairs
films of different patients:

1. **Candidates** — pairs whose 64-bit perceptual hashes differ in at most ``max_hamming`` bits,
   found with a multi-index hash (the 64 bits cut into ``max_hamming + 1`` blocks: by the
   pigeonhole principle two hashes that close agree exactly on at least one block), so only pairs
   that share a block are ever compared, not all n² pairs.
2. **Confirmation** — each candidate pair's whole-frame 64 x 64 thumbnails are compared pixel by
   pixel, twice: the Pearson correlation of the thumbnails themselves (``min_correlation``) and of
   their detail, the thumbnail minus its Gaussian blur (``min_detail``). Distinct chest films
   share their low-frequency anatomy, so the first alone reaches 0.95 for two different
   children; ribs, tubes, markers and lesions differ, which the second sees. Measured on the real
   files (``docs/deduplication.md``): copies score >= 0.95 and >= 0.59, distinct films at most
   0.956 and 0.48.

Confirmed pairs and exact groups are merged into clusters (union-find).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations, pairwise

import numpy as np
from PIL import Image, ImageFilter

DEFAULT_MAX_HAMMING = 12
DEFAULT_MIN_CORRELATION = 0.95
DEFAULT_MIN_DETAIL = 0.55


@dataclass(frozen=True)
class Pair:
    """Two images judged (or tested as) copies of one film."""

    a: int
    b: int
    hamming: int
    correlation: float
    detail: float
    exact: bool


@dataclass
class DuplicateReport:
    """Everything the deduplication found, with the candidate counts that show its work."""

    pairs: list[Pair]
    """Confirmed duplicate pairs (exact and near)."""
    rejected: list[Pair]
    """Candidates within the Hamming threshold that the pixel comparison rejected."""
    clusters: list[list[int]]
    """Groups of two or more indices that are copies of one image."""
    candidates: int
    """Pairs the index handed to the Hamming check (out of n(n-1)/2)."""


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit hashes.

    Example:
        >>> hamming(0b1011, 0b0001)
        2
    """
    return (a ^ b).bit_count()


def candidate_pairs(hashes: Sequence[int], max_hamming: int) -> set[tuple[int, int]]:
    """Pairs (i < j) that agree exactly on at least one of ``max_hamming + 1`` hash blocks.

    Every pair within ``max_hamming`` bits is among them (pigeonhole), so nothing is missed.

    Example:
        >>> sorted(candidate_pairs([0, 1, 2**63, 0xFFFF_FFFF_FFFF_FFFF], 1))
        [(0, 1), (0, 2)]
    """
    blocks = max_hamming + 1
    edges = np.linspace(0, 64, blocks + 1).astype(int)
    found: set[tuple[int, int]] = set()
    for lo, hi in pairwise(int(e) for e in edges):
        mask = (1 << (hi - lo)) - 1
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, h in enumerate(hashes):
            buckets[(h >> lo) & mask].append(i)
        for members in buckets.values():
            if len(members) > 1:
                found.update(combinations(members, 2))
    return found


def thumbnail_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally sized grey thumbnails (1.0 for a flat pair).

    Example:
        >>> x = np.arange(16.0).reshape(4, 4)
        >>> round(thumbnail_correlation(x, 2 * x + 5), 6), round(thumbnail_correlation(x, -x), 6)
        (1.0, -1.0)
    """
    fa = a.astype(np.float64).ravel()
    fb = b.astype(np.float64).ravel()
    fa -= fa.mean()
    fb -= fb.mean()
    denominator = float(np.sqrt((fa * fa).sum() * (fb * fb).sum()))
    if denominator == 0.0:
        return 1.0 if not fa.any() and not fb.any() else 0.0
    return float((fa * fb).sum() / denominator)


def detail(thumb: np.ndarray) -> np.ndarray:
    """The thumbnail minus its Gaussian blur (radius 2): edges, ribs, tubes, text, lesions."""
    image = Image.fromarray(np.clip(thumb, 0, 255).astype(np.uint8))
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(2)), dtype=np.float64)
    out: np.ndarray = thumb.astype(np.float64) - blurred
    return out


def find_duplicates(
    pixel_hashes: Sequence[str | None],
    phashes: Sequence[str | None],
    thumbnail: Callable[[int], np.ndarray],
    *,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    min_detail: float = DEFAULT_MIN_DETAIL,
) -> DuplicateReport:
    """Exact and confirmed near duplicates among images given by their hashes.

    Args:
        pixel_hashes: sha256 of each image's grey pixels.
        phashes: 64-bit perceptual hash of each image, as 16 hex digits.
        thumbnail: Loads the whole-frame thumbnail of image ``i``.
        max_hamming: Largest perceptual-hash distance that makes a candidate.
        min_correlation: Smallest thumbnail correlation that confirms a candidate.
        min_detail: Smallest correlation of the thumbnails' detail that confirms it too.

    Example:
        >>> thumbs = [np.eye(8) * 100, np.eye(8) * 200, np.fliplr(np.eye(8)) * 100]
        >>> report = find_duplicates(["a", "b", "c"], ["00ff", "00fe", "00ff"], thumbs.__getitem__)
        >>> [(p.a, p.b) for p in report.pairs], [(p.a, p.b) for p in report.rejected]
        ([(0, 1)], [(0, 2), (1, 2)])
    """
    n = len(phashes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    pairs: list[Pair] = []
    exact_groups: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(pixel_hashes):
        if digest:
            exact_groups[digest].append(i)
    exact_pairs: set[tuple[int, int]] = set()
    for members in exact_groups.values():
        for i, j in combinations(members, 2):
            exact_pairs.add((i, j))
            pairs.append(Pair(i, j, 0, 1.0, 1.0, True))
            union(i, j)

    valid = [i for i in range(n) if phashes[i]]
    values = [int(phashes[i] or "0", 16) for i in valid]
    candidates = candidate_pairs(values, max_hamming)
    rejected: list[Pair] = []
    cache: dict[int, np.ndarray] = {}

    def thumb(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = thumbnail(i)
        return cache[i]

    for vi, vj in sorted(candidates):
        i, j = valid[vi], valid[vj]
        if (i, j) in exact_pairs:
            continue
        distance = hamming(values[vi], values[vj])
        if distance > max_hamming:
            continue
        correlation = thumbnail_correlation(thumb(i), thumb(j))
        fine = thumbnail_correlation(detail(thumb(i)), detail(thumb(j)))
        pair = Pair(i, j, distance, round(correlation, 4), round(fine, 4), False)
        if correlation >= min_correlation and fine >= min_detail:
            pairs.append(pair)
            union(i, j)
        else:
            rejected.append(pair)

    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    clusters = sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])
    return DuplicateReport(
        sorted(pairs, key=lambda p: (p.a, p.b)), rejected, clusters, len(candidates)
    )
