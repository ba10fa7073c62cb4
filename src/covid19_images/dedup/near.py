"""Find exact and near-duplicate images across every source, before any split.

Exact duplicates share the sha256 of their decoded grey pixels. Near duplicates are found in two
steps, because chest radiographs look alike and a small perceptual-hash distance alone also pairs
films of different patients:

1. **Candidates** — pairs whose 64-bit perceptual hashes differ in at most ``max_hamming`` bits,
   found with a multi-index hash (:func:`candidate_pairs`), never by comparing all n² pairs.
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
from itertools import combinations

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
    """Pairs within the Hamming threshold that the pixel test examined."""


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit hashes.

    Example:
        >>> hamming(0b1011, 0b0001)
        2
    """
    return (a ^ b).bit_count()


_BLOCKS = 4
_BLOCK_BITS = 64 // _BLOCKS
_CHUNK = 2048


def _masks(radius: int) -> np.ndarray:
    """Every 16-bit value with at most ``radius`` bits set (the probe offsets of a block)."""
    values = np.arange(1 << _BLOCK_BITS, dtype=np.uint32)
    return values[np.bitwise_count(values) <= radius]


def candidate_pairs(hashes: Sequence[int], max_hamming: int) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, whose 64-bit hashes differ in at most ``max_hamming`` bits.

    A multi-index hash: the 64 bits are four 16-bit blocks, and two hashes within
    ``max_hamming`` bits differ in at most ``max_hamming // 4`` bits of at least one block
    (pigeonhole). Each hash probes, in each block's table, the values within that radius of its
    own block; only the images found there are compared on all 64 bits, in vectorised chunks, so
    memory stays bounded and the work grows with the number of near neighbours rather than with
    all n(n-1)/2 pairs.

    Example:
        >>> candidate_pairs([0, 1, 2**63, 0xFFFF_FFFF_FFFF_FFFF, 3], 1).tolist()
        [[0, 1], [0, 2], [1, 4]]
    """
    values = np.asarray([int(h) for h in hashes], dtype=np.uint64)
    n = len(values)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    masks = _masks(max_hamming // _BLOCKS).astype(np.int64)
    found: list[np.ndarray] = []
    for block in range(_BLOCKS):
        keys = ((values >> np.uint64(block * _BLOCK_BITS)) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        counts = np.bincount(keys, minlength=1 << _BLOCK_BITS)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        for lo in range(0, n, _CHUNK):
            items = np.arange(lo, min(lo + _CHUNK, n))
            probes = keys[items, None] ^ masks[None, :]
            sizes = counts[probes].ravel()
            hit = sizes > 0
            if not hit.any():
                continue
            owners = np.repeat(items, len(masks))[hit]
            sizes, firsts = sizes[hit], starts[probes.ravel()[hit]]
            # A ragged arange: positions firsts[k] .. firsts[k] + sizes[k] - 1 for every k.
            total = int(sizes.sum())
            offsets = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            others = order[np.repeat(firsts, sizes) + offsets]
            mine = np.repeat(owners, sizes)
            keep = mine < others
            mine, others = mine[keep], others[keep]
            close = np.bitwise_count(values[mine] ^ values[others]) <= max_hamming
            found.append(np.stack([mine[close], others[close]], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


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


def _standardised(pixels: np.ndarray) -> np.ndarray:
    """Zero mean, unit norm, float32: the dot product of two is their Pearson correlation."""
    flat = pixels.astype(np.float64).ravel()
    flat -= flat.mean()
    norm = float(np.linalg.norm(flat))
    out: np.ndarray = (flat / norm if norm else flat).astype(np.float32)
    return out


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
    thumbs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def thumb(i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in thumbs:  # loaded, detailed and standardised once per image
            pixels = thumbnail(i)
            thumbs[i] = (_standardised(pixels), _standardised(detail(pixels)))
        return thumbs[i]

    for vi, vj in candidates.tolist():
        i, j = valid[vi], valid[vj]
        if (i, j) in exact_pairs:
            continue
        distance = hamming(values[vi], values[vj])
        (ti, di), (tj, dj) = thumb(i), thumb(j)
        correlation = float(np.dot(ti, tj))  # Pearson correlation of standardised vectors
        fine = float(np.dot(di, dj))
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
