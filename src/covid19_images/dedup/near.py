"""Find exact and near-duplicate images across every source, before any split.

Exact duplicates share the sha256 of their decoded grey pixels. Near duplicates are found in two
steps, because chest radiographs look alike and a small hash distance alone also pairs films of
different patients, while a copy may have other borders, a crop, another aspect ratio, another
encoding or burnt-in text:

1. **Candidates**, never all n² pairs (:func:`~covid19_images.dedup.index.candidate_pairs`, an
   exact index over 64-bit hashes, :mod:`covid19_images.dedup.index`): whole-frame
   hashes within ``max_hamming`` bits; with signatures
   (:mod:`covid19_images.process.signature`), any two view hashes (content, centre views) within
   :data:`VIEW_RADIUS` bits, and images whose close keypoint codes agree on a plausible map
   of one onto the other (:func:`_keypoint_candidates`: codes of ribs and edges match across
   many films, a copy's keypoints sit where its original's are).
2. **Confirmation** on pixels: the whole-frame 64 x 64 thumbnails, compared over the content both
   frames share, correlate at least ``min_correlation`` and so does their detail (thumbnail minus
   its Gaussian blur) at least ``min_detail``; or the same on the contents; or, aligned
   (:mod:`covid19_images.dedup.align`), their fine detail agrees block by block
   (``min_aligned``). Distinct chest films share their low-frequency anatomy, so the first
   number alone reaches 0.95 for two different children; ribs, tubes, markers and lesions
   differ, which the others see. Measured: ``docs/deduplication.md``.

Confirmed pairs and exact groups are merged into clusters (union-find).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from covid19_images.dedup.align import (
    KEYPOINT_RADIUS,
    aligned_score,
    box_map,
    keypoint_map,
    view_region,
)
from covid19_images.dedup.index import candidate_pairs as candidate_pairs
from covid19_images.dedup.index import sampled_pairs
from covid19_images.process.signature import VIEWS, Signature, content_thumbnail
from covid19_images.progress import track

DEFAULT_MAX_HAMMING = 12
DEFAULT_MIN_CORRELATION = 0.95
DEFAULT_MIN_DETAIL = 0.55
DEFAULT_MIN_ALIGNED = 0.65
VIEW_RADIUS = 8
"""Largest distance between two hashes of other views than the whole frame that makes a
candidate (the whole frames keep ``max_hamming``)."""


@dataclass(frozen=True)
class Pair:
    """Two images judged (or tested as) copies of one film."""

    a: int
    b: int
    hamming: int
    correlation: float
    detail: float
    exact: bool
    aligned: float = 0.0
    """Block-median detail correlation after alignment (0.0 where it was not needed)."""


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
    signatures: Sequence[Signature | None] | None = None,
    content: Callable[[int], np.ndarray] | None = None,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    min_detail: float = DEFAULT_MIN_DETAIL,
    min_aligned: float = DEFAULT_MIN_ALIGNED,
    only_across: Sequence[str] | None = None,
    progress: bool = False,
    cache: dict[str, Any] | None = None,
) -> DuplicateReport:
    """Exact and confirmed near duplicates among images given by their hashes.

    With ``signatures`` (and ``content``), copies with other borders, crops, aspect ratios or
    burnt-in text are found too: candidates also come from the hashes of every view and from
    shared keypoints, and a candidate that the whole-frame test rejects is aligned and compared
    on pixels (:func:`covid19_images.dedup.align.aligned_score`).

    Args:
        pixel_hashes: sha256 of each image's grey pixels.
        phashes: 64-bit perceptual hash of each image, as 16 hex digits.
        thumbnail: Loads the whole-frame thumbnail of image ``i``.
        signatures: Each image's :class:`~covid19_images.process.signature.Signature`.
        content: Loads the content image of image ``i`` (with ``signatures``).
        max_hamming: Largest whole-frame hash distance that makes a candidate.
        min_correlation: Smallest thumbnail correlation that confirms a candidate.
        min_detail: Smallest correlation of the thumbnails' detail that confirms it too.
        min_aligned: Smallest aligned block-detail score that confirms a candidate the
            whole-frame test rejects.
        only_across: A group (split) per image: only pairs of different groups are tested
            (what an audit of splits needs).
        progress: Show a progress bar over the candidate pairs (on stderr).
        cache: A dict kept between calls on the same images (same order, hashes and
            thresholds; ``only_across`` may change): the candidates and every pair's verdict
            are computed once and reused, so repeated audits of new splits (the build's
            leak-free split) cost the search once.

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
            pairs.append(Pair(i, j, 0, 1.0, 1.0, True, 1.0))
            union(i, j)

    # A wide uniform border makes whole frames of different films alike: such images are
    # compared on their content only.
    bordered = {i for i, sig in enumerate(signatures or []) if sig is not None and not framed(sig)}
    frame_hash: dict[int, int] = {
        i: int(h, 16) for i, h in enumerate(phashes) if h and i not in bordered
    }
    cache = cache if cache is not None else {}
    if "candidates" not in cache:
        candidates: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
        valid = sorted(frame_hash)
        for vi, vj in candidate_pairs([frame_hash[i] for i in valid], max_hamming).tolist():
            i, j = valid[vi], valid[vj]
            candidates[(i, j)].append((hamming(frame_hash[i], frame_hash[j]), 0, 0))
        keypoint_linked: set[tuple[int, int]] = set()
        if signatures is not None:
            _view_candidates(signatures, max_hamming, candidates, bordered)
        candidates = _nearest_only(candidates, frame_hash, signatures, n)
        if signatures is not None:
            keypoint_linked = _keypoint_candidates(signatures)
            for linked in keypoint_linked:
                candidates.setdefault(linked, [])
        # Closest first; a pair already joined through other copies needs no test of its own.
        ordered = _closest_first(list(candidates), frame_hash, signatures, n)
        cache["candidates"] = (candidates, keypoint_linked, ordered)
    candidates, keypoint_linked, ordered = cache["candidates"]
    verdicts: dict[tuple[int, int], tuple[Pair, bool]] = cache.setdefault("verdicts", {})

    rejected: list[Pair] = []

    # Bounded caches: a large build holds only the recent candidates' thumbnails and contents.
    @lru_cache(maxsize=4096)
    def thumb(i: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole-frame thumbnail and its detail, standardised."""
        pixels = thumbnail(i)
        return _standardised(pixels), _standardised(detail(pixels))

    @lru_cache(maxsize=4096)
    def raw_thumb(i: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole-frame thumbnail and its detail."""
        pixels = thumbnail(i).astype(np.float64)
        return pixels, detail(pixels)

    @lru_cache(maxsize=1024)  # most pairs of one image share one rectangle
    def frame_part(i: int, rect: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The whole-frame thumbnail and its detail inside ``rect``, standardised."""
        pixels, fine = raw_thumb(i)
        y0, y1, x0, x1 = rect
        return _standardised(pixels[y0:y1, x0:x1]), _standardised(fine[y0:y1, x0:x1])

    @lru_cache(maxsize=4096)
    def content_of(i: int) -> np.ndarray:
        assert content is not None
        return content(i)

    @lru_cache(maxsize=4096)
    def content_thumb(i: int) -> tuple[np.ndarray, np.ndarray]:
        pixels = content_thumbnail(content_of(i)).astype(np.float64)
        return _standardised(pixels), _standardised(detail(pixels))

    def test(i: int, j: int, distance: int, views: list[tuple[int, int, int]]) -> tuple[Pair, bool]:
        """One candidate pair's verdict on pixels: its scores, and whether it is a copy."""
        # The whole-frame test, unless a wide border makes whole frames alike; then the same
        # test on the contents (the frames without their uniform borders).
        tests = []
        if signatures is None or signatures[i] is None or signatures[j] is None:
            tests.append((thumb(i), thumb(j)))
        else:
            shared = _shared_rect(
                signatures[i].box,  # type: ignore[union-attr]
                signatures[j].box,  # type: ignore[union-attr]
                raw_thumb(i)[0].shape,
            )
            if shared is not None:
                tests.append((frame_part(i, shared), frame_part(j, shared)))
        if (
            content is not None
            and signatures is not None
            and signatures[i] is not None
            and signatures[j] is not None
        ):
            tests.append((content_thumb(i), content_thumb(j)))
        correlation, fine = (
            max((float(np.dot(ti, tj)), float(np.dot(di, dj))) for (ti, di), (tj, dj) in tests)
            if tests
            else (0.0, 0.0)
        )
        if any(
            np.dot(ti, tj) >= min_correlation and np.dot(di, dj) >= min_detail
            for (ti, di), (tj, dj) in tests
        ):
            return Pair(i, j, distance, round(correlation, 4), round(fine, 4), False), True
        aligned = 0.0
        # Hypotheses of how one maps onto the other come from shared keypoints (a pair the
        # keypoint link did not join has no keypoint map) and from matched views other than
        # two whole frames; a pair with neither has nothing to align.
        by_keypoints = (i, j) in keypoint_linked
        by_views = any(vi or vj for _, vi, vj in views)
        if signatures is not None and content is not None and (by_keypoints or by_views):
            si, sj = signatures[i], signatures[j]
            if si is not None and sj is not None:
                aligned = _aligned(
                    si, sj, content_of(i), content_of(j), views, min_aligned, by_keypoints
                )
        pair = Pair(i, j, distance, round(correlation, 4), round(fine, 4), False, round(aligned, 4))
        return pair, aligned >= min_aligned

    for distance, i, j in track(ordered, len(ordered), "comparing candidate pairs", progress):
        views = candidates[(i, j)]
        if (i, j) in exact_pairs or find(i) == find(j):
            continue
        if only_across is not None and only_across[i] == only_across[j]:
            continue
        if (i, j) not in verdicts:
            verdicts[(i, j)] = test(i, j, distance, views)
        pair, confirmed = verdicts[(i, j)]
        if confirmed:
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


def _view_candidates(
    signatures: Sequence[Signature | None],
    max_hamming: int,
    candidates: dict[tuple[int, int], list[tuple[int, int, int]]],
    bordered: set[int],
) -> None:
    """Pairs of images with two views close, at least one of them not the whole frame, within
    :data:`VIEW_RADIUS` bits (and ``max_hamming``).

    The frame view of a bordered image is left out (it hashes its border)."""
    owners: list[int] = []
    views: list[int] = []
    values: list[int] = []
    for i, signature in enumerate(signatures):
        if signature is None:
            continue
        for v, value in enumerate(signature.views):
            if v == 0 and i in bordered:
                continue
            owners.append(i)
            views.append(v)
            values.append(value)
    if not values:
        return
    # Two whole frames within ``max_hamming`` are candidates already; every other pair of
    # views needs the smaller radius, which keeps the probes few.
    found = candidate_pairs(values, min(max_hamming, VIEW_RADIUS))
    for fi, fj in found.tolist():
        i, j = owners[fi], owners[fj]
        vi, vj = views[fi], views[fj]
        if i == j or not (vi or vj):
            continue
        distance = hamming(values[fi], values[fj])
        if i > j:
            i, j, vi, vj = j, i, vj, vi
        candidates[(i, j)].append((distance, vi, vj))


FRAMED = 0.9
"""An image whose content box spans less than this share of its width or height is bordered:
its whole-frame hash (mostly border) makes no candidates."""
_EDGE = 3
"""Thumbnail pixels next to a content edge left out of the whole-frame test (the detail's blur
reaches that far)."""


def _shared_content(
    a: tuple[float, float, float, float],
    b: tuple[float, float, float, float],
    shape: tuple[int, ...] = (64, 64),
) -> np.ndarray | None:
    """Thumbnail pixels inside both content boxes (less their edges); None when under half.

    The whole-frame test compares only what both frames show as content, so that two films
    framed by the same uniform border do not look alike through it.

    Example:
        >>> _shared_content((0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 1.0)).mean()
        np.float64(1.0)
        >>> _shared_content((0.2, 0.2, 0.8, 0.8), (0.2, 0.2, 0.8, 0.8)) is None
        True
    """
    rect = _shared_rect(a, b, shape)
    if rect is None:
        return None
    mask = np.zeros(shape[:2], dtype=bool)
    y0, y1, x0, x1 = rect
    mask[y0:y1, x0:x1] = True
    return mask


def _shared_rect(
    a: tuple[float, float, float, float],
    b: tuple[float, float, float, float],
    shape: tuple[int, ...] = (64, 64),
) -> tuple[int, int, int, int] | None:
    """:func:`_shared_content` as the rows and columns ``(y0, y1, x0, x1)`` it spans."""
    h, w = shape[:2]
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    x0 = round(left * w) + (_EDGE if left > 0.005 else 0)
    y0 = round(top * h) + (_EDGE if top > 0.005 else 0)
    x1 = round(right * w) - (_EDGE if right < 0.995 else 0)
    y1 = round(bottom * h) - (_EDGE if bottom < 0.995 else 0)
    if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) < 0.5 * h * w:
        return None
    return (y0, y1, x0, x1)


def framed(signature: Signature) -> bool:
    """Whether the content fills the frame (no wide uniform border).

    Example:
        >>> s = Signature((0.0, 0.3, 1.0, 1.0), (0,) * 7, np.zeros(0, np.uint64),
        ...               np.zeros((0, 2), np.float32))
        >>> framed(s)
        False
    """
    left, top, right, bottom = signature.box
    return right - left >= FRAMED and bottom - top >= FRAMED


KEYPOINT_CHECK_SIDE = 96.0
"""The long side, in pixels, on which the candidate search checks a keypoint map: its RANSAC
tolerance of 4 px is then 1/24 of the side, looser than the pixel test's 4 px on contents of up
to 256 px, so that a pair whose keypoint map the pixel test finds is a candidate."""


KEYPOINT_LINK = 3
"""Different close codes on each side that the sampled search must find before a pair's
keypoint map is sought (:func:`_keypoint_candidates`)."""


def _keypoint_candidates(signatures: Sequence[Signature | None]) -> set[tuple[int, int]]:
    """Pairs of images whose close keypoint codes agree on a plausible map of one onto the other.

    The close codes (within :data:`~covid19_images.dedup.align.KEYPOINT_RADIUS` bits) are
    searched with :func:`~covid19_images.dedup.index.sampled_pairs`, whose work grows linearly
    with the number of codes: codes of ribs, edges and collimation corners are close to codes of
    many other films, so the close pairs of all codes grow with the square of the number of
    images, and a code in such a crowd says little about which film it comes from. The search
    finds most close pairs of distinctive codes (0.99 of those within 3 bits; fewer further
    apart), so a pair of images needs only :data:`KEYPOINT_LINK` *different* codes on each side
    among the pairs it found; then :func:`~covid19_images.dedup.align.keypoint_map`, on all the
    codes of both images, must find a map (mutual nearest codes, at least ``MIN_INLIERS``
    consistent after RANSAC, a plausible scale and no rotation), with the looser tolerance of
    :data:`KEYPOINT_CHECK_SIDE`. A copy's keypoints sit where its original's are; chance
    matches between films scatter.

    Example:
        >>> _keypoint_candidates([None, None])
        set()
    """
    owners = [
        np.full(len(s.codes), i, dtype=np.int64)
        for i, s in enumerate(signatures)
        if s is not None and len(s.codes)
    ]
    if not owners:
        return set()
    codes = np.concatenate([s.codes for s in signatures if s is not None and len(s.codes)])
    who = np.concatenate(owners)
    found = sampled_pairs(codes, KEYPOINT_RADIUS)
    if not len(found):
        return set()
    first, second = found[:, 0].astype(np.int64), found[:, 1].astype(np.int64)
    a, b = who[first], who[second]
    keep = a != b
    first, second, a, b = first[keep], second[keep], a[keep], b[keep]
    swap = a > b  # each code pair as (code of the smaller index, code of the larger)
    code_lo, code_hi = np.where(swap, second, first), np.where(swap, first, second)
    key = np.minimum(a, b) * (len(signatures) + 1) + np.maximum(a, b)
    keys, on_lo = _distinct_per_key(key, code_lo, len(codes))
    _, on_hi = _distinct_per_key(key, code_hi, len(codes))
    keys = keys[(on_lo >= KEYPOINT_LINK) & (on_hi >= KEYPOINT_LINK)]
    linked: set[tuple[int, int]] = set()
    for k in keys.tolist():
        i, j = divmod(k, len(signatures) + 1)
        si, sj = signatures[i], signatures[j]
        assert si is not None and sj is not None
        if keypoint_map(si, sj, KEYPOINT_CHECK_SIDE, KEYPOINT_CHECK_SIDE) is not None:
            linked.add((i, j))
    return linked


def _distinct_per_key(
    keys: np.ndarray, values: np.ndarray, n_values: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct key, sorted, with how many different values occur with it.

    Example:
        >>> k, c = _distinct_per_key(np.array([7, 3, 7, 7]), np.array([1, 2, 1, 4]), 5)
        >>> k.tolist(), c.tolist()
        ([3, 7], [1, 2])
    """
    if not len(keys):
        return keys, keys
    if int(keys.max()) < np.iinfo(np.int64).max // max(n_values, 1):
        combined = np.sort(keys * n_values + values)  # sorting: far faster than a hash here
        combined = combined[np.r_[True, combined[1:] != combined[:-1]]]
        both = combined // n_values
    else:  # too large for one int64: pairs of columns (slower)
        both = np.unique(np.stack([keys, values], axis=1), axis=0)[:, 0]
    starts = np.flatnonzero(np.r_[True, both[1:] != both[:-1]])
    return both[starts], np.diff(np.r_[starts, len(both)])


NEAREST = 8
"""Most hash candidates per image: a pair found by its hashes is tested when it is among the
``NEAREST`` closest of either image (see :func:`_nearest_only`)."""


def _nearest_only(
    candidates: dict[tuple[int, int], list[tuple[int, int, int]]],
    frame_hash: dict[int, int],
    signatures: Sequence[Signature | None] | None,
    n: int,
    nearest: int = NEAREST,
) -> defaultdict[tuple[int, int], list[tuple[int, int, int]]]:
    """The candidates that are among the ``nearest`` closest (by hash distance, then index) of
    one of their two images.

    Chest radiographs look alike, so the number of pairs within the hash radius grows with the
    square of the number of images, and almost all of them are different films that the pixel
    test rejects one by one. A copy is among the closest few of its original (its hashes are
    nearer than any other film's), and copies of one film join through each other, so keeping
    each image's closest candidates keeps the copies and bounds the tests by ``n * nearest``.

    Example:
        >>> found = {(0, 1): [], (0, 2): [], (1, 2): []}
        >>> # frame hashes 0, 1 and 0b11111: distances 1 (0-1), 5 (0-2) and 4 (1-2)
        >>> sorted(_nearest_only(found, {0: 0, 1: 1, 2: 0b11111}, None, 3, nearest=1))
        [(0, 1), (1, 2)]
    """
    kept: defaultdict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    ordered = _closest_first(list(candidates), frame_hash, signatures, n)
    if not ordered:
        return kept
    table = np.array(ordered, dtype=np.int64)  # distance, i, j: sorted
    ends = np.concatenate([table[:, 1], table[:, 2]])
    distance = np.concatenate([table[:, 0], table[:, 0]])
    pair = np.concatenate([np.arange(len(table))] * 2)
    order = np.lexsort((pair, distance, ends))  # by image, then distance, then pair
    ends, pair = ends[order], pair[order]
    starts = np.flatnonzero(np.r_[True, ends[1:] != ends[:-1]])
    rank = np.arange(len(ends)) - np.repeat(starts, np.diff(np.r_[starts, len(ends)]))
    chosen = np.unique(pair[rank < nearest])
    for k in chosen.tolist():
        key = (int(table[k, 1]), int(table[k, 2]))
        kept[key] = candidates[key]
    return kept


def _closest_first(
    pairs: list[tuple[int, int]],
    frame_hash: dict[int, int],
    signatures: Sequence[Signature | None] | None,
    n: int,
) -> list[tuple[int, int, int]]:
    """``(distance, i, j)`` for every pair, sorted: the smallest hash distance between any views
    of the two images (whole frames only where both have a frame hash)."""
    if not pairs:
        return []
    first = np.array([i for i, _ in pairs], dtype=np.int64)
    second = np.array([j for _, j in pairs], dtype=np.int64)
    frames = np.zeros(n, dtype=np.uint64)
    has_frame = np.zeros(n, dtype=bool)
    for i, value in frame_hash.items():
        frames[i], has_frame[i] = value, True
    best = np.where(
        has_frame[first] & has_frame[second],
        np.bitwise_count(frames[first] ^ frames[second]).astype(np.int64),
        64,
    )
    if signatures is not None:
        views = np.zeros((n, len(VIEWS)), dtype=np.uint64)
        has_views = np.zeros(n, dtype=bool)
        for i, signature in enumerate(signatures):
            if signature is not None:
                views[i], has_views[i] = signature.views, True
        both = np.flatnonzero(has_views[first] & has_views[second])
        for lo in range(0, len(both), 65536):  # bounded memory: 49 distances per pair
            at = both[lo : lo + 65536]
            a, b = views[first[at]], views[second[at]]
            across = np.bitwise_count(a[:, :, None] ^ b[:, None, :]).reshape(len(a), -1)
            best[at] = np.minimum(best[at], across.min(axis=1))
    return sorted(zip(best.tolist(), first.tolist(), second.tolist(), strict=True))


def _aligned(
    a: Signature,
    b: Signature,
    content_a: np.ndarray,
    content_b: np.ndarray,
    views: list[tuple[int, int, int]],
    accept: float,
    keypoints: bool = True,
) -> float:
    """The aligned score of a pair: the keypoints' map first (with ``keypoints``), then the
    matched views' boxes."""
    found = 0.0
    matrix = (
        keypoint_map(a, b, float(max(content_a.shape)), float(max(content_b.shape)))
        if keypoints
        else None
    )
    if matrix is not None:
        found = aligned_score(content_a, content_b, [matrix], accept=accept)[0]
    if found >= accept:
        return found
    size_a = (content_a.shape[1], content_a.shape[0])
    size_b = (content_b.shape[1], content_b.shape[0])
    # Boxes of the closest matched views (two whole frames say nothing the whole-frame test
    # has not already judged).
    boxes = [
        box_map(view_region(b, vb, size_b), view_region(a, va, size_a))
        for _, va, vb in sorted(v for v in views if v[1] or v[2])[:2]
    ]
    if boxes:
        score = aligned_score(content_a, content_b, boxes, accept=accept)[0]
        found = max(found, score)
    return found
