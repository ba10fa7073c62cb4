"""Every pair of 64-bit hashes within a Hamming radius, exactly, without comparing all n² pairs.

Two hashes within ``r`` bits differ in a set ``D`` of at most ``r`` bit positions. The search
compares only pairs that agree exactly on some *key* (a subset of the 64 bits) of a fixed
family, and the family is built so that, whatever ``D`` is, some key avoids it:

- **Parts** (the generalised pigeonhole): the bits are split into parts ``P_1 .. P_q``, each
  given a dimension ``t_j`` with ``t_1 + .. + t_q >= r + 1``. Then ``D`` has at most
  ``t_j - 1`` bits in some part ``j``.
- **Keys inside a part** (covering by linear algebra over GF(2)): each bit ``i`` of part ``j``
  gets a non-zero vector ``c_i`` of ``t_j`` bits, and every non-zero ``v`` of ``t_j`` bits
  makes one key, the bits ``i`` with an odd ``popcount(c_i & v)``. At most ``t_j - 1``
  vectors ``c_i`` (those of ``D`` in part ``j``) span a proper subspace, so some ``v != 0`` is
  orthogonal to all of them, and its key holds no bit of ``D``: the pair agrees on that key.

A part of ``s`` bits gives ``2^t - 1`` keys of about ``s / 2`` bits each (the vectors are chosen
so that few keys are short). For a radius of 12 bits at a million hashes, parts of 33 and 31 bits
(``t`` = 7 and 6) make 190 keys of 14 to 31 bits, most of 15 or 16. Each key is one table: the
hashes are sorted by their bits under the key, and every pair inside a run of equal keys is
compared on all 64 bits (vectorised popcount, a bounded block at a time); a pair is kept only by
the first key it agrees on, so it comes out once. The parts, their dimensions and sizes, or
brute force (few hashes, or a radius so wide that no key is long enough), are chosen from a
cost model (:func:`plan`). Identical hashes are one value to the search, their pairs added at
the end, so a thousand blank images cost the search no more than one (their pairs are all
returned). Measured at a million hashes: ``docs/deduplication.md`` ("Scale").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

BITS = 64
_MAX_DIMS = 10
"""The largest dimension of a part (``2^10 - 1`` keys)."""
_RUN_DIAGONALS = 256
"""Runs of equal keys up to this length are compared diagonal by diagonal over all runs of one
length at once; longer ones (many near-identical hashes) block by block."""
_BLOCK = 1 << 20
"""Most hash pairs compared in one vectorised step (bounds the memory of a step)."""

# Cost model (seconds, measured on one core): sorting one hash under one key, one table's fixed
# cost, one diagonal of a block of runs (see _runs), comparing one pair inside a run, one pair
# by brute force.
_SORT = 15e-9
_TABLE = 3e-4
_DIAGONAL = 6e-6
_PAIR = 1.5e-9
_BRUTE = 2.5e-9
_QUICK = 0.01
"""Brute force this fast is taken without weighing the keys."""

Method = Literal["auto", "index", "brute"]


@dataclass(frozen=True)
class Part:
    """Bits of the hash that share one family of keys: bit ``positions[k]`` has the vector
    ``vectors[k]`` of ``dims`` bits (see the module's docstring)."""

    positions: tuple[int, ...]
    vectors: tuple[int, ...]
    dims: int

    def masks(self) -> list[int]:
        """The ``2^dims - 1`` keys, as 64-bit masks.

        Example:
            >>> [bin(k) for k in Part((0, 1, 2), (1, 2, 3), 2).masks()]
            ['0b101', '0b110', '0b11']
        """
        masks = []
        for v in range(1, 1 << self.dims):
            mask = 0
            for position, vector in zip(self.positions, self.vectors, strict=True):
                if (vector & v).bit_count() % 2:
                    mask |= 1 << position
            masks.append(mask)
        return masks


@dataclass(frozen=True)
class Plan:
    """How to search ``distinct`` hashes for pairs within ``radius`` bits: by keys (``parts``),
    or by brute force (no parts)."""

    radius: int
    parts: tuple[Part, ...]
    cost: float
    """Estimated seconds, for uniformly random hashes."""

    @property
    def masks(self) -> list[int]:
        """Every key of every part, as 64-bit masks."""
        return [mask for part in self.parts for mask in part.masks()]


@dataclass(frozen=True)
class SearchStats:
    """What one search did."""

    hashes: int
    distinct: int
    """Distinct hash values (identical hashes are searched once)."""
    tables: int
    """Keys used (0: brute force)."""
    compared: int
    """Pairs of distinct hash values compared on all 64 bits (counted once per table)."""
    largest_run: int
    """The most distinct hash values sharing one key in one table."""
    identical_pairs: int
    """Pairs of equal hashes (found without a search)."""
    pairs: int
    """Pairs within the radius, returned."""


@dataclass(frozen=True)
class Search:
    """The pairs found and the figures of the search."""

    pairs: np.ndarray
    stats: SearchStats


def as_hashes(hashes: Sequence[int] | np.ndarray) -> np.ndarray:
    """64-bit hashes as a ``uint64`` array (Python integers from 0 to 2**64 - 1, or any integer
    array, whose bits are taken as they are).

    Example:
        >>> as_hashes([0, 2**64 - 1]).tolist()
        [0, 18446744073709551615]
    """
    if isinstance(hashes, np.ndarray):
        if hashes.dtype == np.uint64:
            return hashes.reshape(-1)
        if hashes.dtype.kind in "iu" and hashes.dtype.itemsize == 8:
            return hashes.reshape(-1).view(np.uint64)
        return np.asarray(hashes, dtype=np.int64).reshape(-1).view(np.uint64)
    return np.fromiter((int(h) for h in hashes), dtype=np.uint64, count=len(hashes))


def candidate_search(
    hashes: Sequence[int] | np.ndarray,
    max_hamming: int,
    *,
    method: Method = "auto",
    using: Plan | None = None,
) -> Search:
    """:func:`candidate_pairs` with the figures of the search.

    ``method`` forces the keys (``"index"``) or brute force (``"brute"``); ``"auto"`` takes the
    cheaper by :func:`plan`'s estimate. ``using`` gives the keys instead (a plan for a radius of
    at least ``max_hamming``). The pairs are the same either way.

    Example:
        >>> found = candidate_search([5, 5, 5, 4], 0)
        >>> found.pairs.tolist(), found.stats.identical_pairs
        ([[0, 1], [0, 2], [1, 2]], 3)
    """
    values = as_hashes(hashes)
    n = len(values)
    empty = np.empty((0, 2), dtype=np.int64)
    if n < 2 or max_hamming < 0:
        return Search(empty, SearchStats(n, n, 0, 0, 0, 0, 0))
    distinct, inverse, counts = _distinct(values)
    m = len(distinct)
    tables = 0
    if max_hamming == 0:  # distinct values are never within 0 bits: identical hashes only
        codes, compared, largest = np.empty(0, dtype=np.int64), 0, 0
    elif max_hamming >= BITS or method == "brute":
        codes, compared, largest = _brute(distinct, max_hamming)
    else:
        if using is not None and using.radius < max_hamming:
            raise ValueError(f"a plan for {using.radius} bits cannot search {max_hamming}")
        chosen = using or plan(m, max_hamming, brute=method == "auto")
        if chosen.parts:
            tables = len(chosen.masks)
            codes, compared, largest = _tables(distinct, max_hamming, chosen.masks)
        else:
            codes, compared, largest = _brute(distinct, max_hamming)
    pairs, identical = _expand(codes, m, inverse, counts)
    stats = SearchStats(n, m, tables, compared, largest, identical, len(pairs))
    return Search(pairs, stats)


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True, return_counts=True)``, by one sort."""
    order = np.argsort(values)
    ordered = values[order]
    new = np.ones(len(values), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    inverse = np.empty(len(values), dtype=np.intp)
    inverse[order] = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(values)))
    return ordered[starts], inverse, counts


def candidate_pairs(hashes: Sequence[int] | np.ndarray, max_hamming: int) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, whose 64-bit hashes differ in at most ``max_hamming`` bits,
    as an ``(k, 2)`` int64 array sorted by ``i`` then ``j``: exactly the brute-force answer.

    Only pairs that agree on some key of a covering family are compared (see this module's
    docstring), so the work grows with the number of near pairs rather than with n(n-1)/2.

    Example:
        >>> candidate_pairs([0, 1, 2**63, 0xFFFF_FFFF_FFFF_FFFF, 3], 1).tolist()
        [[0, 1], [0, 2], [1, 4]]
    """
    return candidate_search(hashes, max_hamming).pairs


def plan(distinct: int, radius: int, *, brute: bool = True) -> Plan:
    """The cheapest search of ``distinct`` hash values for pairs within ``radius`` bits.

    The keys' parts and dimensions are chosen by the estimated cost of sorting every hash under
    every key and comparing the pairs that share a key (uniformly random hashes); brute force
    is taken where it is cheaper (unless ``brute`` is false).

    Example:
        >>> chosen = plan(1_000_000, 12)
        >>> [(len(p.positions), p.dims) for p in chosen.parts], len(chosen.masks)
        ([(33, 7), (31, 6)], 190)
        >>> plan(100, 12).parts
        ()
    """
    return _plan(distinct, radius, brute)


@lru_cache(maxsize=64)
def _plan(distinct: int, radius: int, brute: bool) -> Plan:
    pairs = distinct * (distinct - 1) / 2
    brute_force = Plan(radius, (), pairs * _BRUTE)
    if radius >= BITS or (brute and brute_force.cost < _QUICK):
        return brute_force
    estimates: list[tuple[float, tuple[tuple[int, int], ...]]] = []
    for shape in _shapes(radius):
        layout = tuple(zip(_sizes(shape, distinct), shape, strict=True))
        estimates.append((sum(_estimate(s, t, distinct) for s, t in layout), layout))
    estimates.sort()
    best: Plan | None = None
    for _, layout in estimates[:4]:  # designed for real only where the estimate is close
        parts = _parts(layout)
        cost = sum(_part_cost(part, distinct) for part in parts)
        if best is None or cost < best.cost:
            best = Plan(radius, parts, cost)
    if best is None or (brute and brute_force.cost <= best.cost):
        return brute_force
    return best


def _shapes(radius: int) -> Iterator[tuple[int, ...]]:
    """Dimensions of the parts, summing to ``radius + 1``, each at most ``_MAX_DIMS``: every
    split into up to three parts, and the most even split into 4 to 16 parts."""
    need = radius + 1
    for q in range(1, min(need, 16) + 1):
        if q <= 3:
            for cut in itertools.combinations(range(1, need), q - 1):
                dims = [b - a for a, b in zip((0, *cut), (*cut, need), strict=True)]
                if max(dims) <= _MAX_DIMS and dims == sorted(dims, reverse=True):
                    yield tuple(dims)
        else:
            low, extra = divmod(need, q)
            dims = [low + 1] * extra + [low] * (q - extra)
            if max(dims) <= _MAX_DIMS:
                yield tuple(dims)


def _estimate(size: int, dims: int, distinct: int) -> float:
    """Estimated seconds of one part (keys of even length)."""
    if size == 0:
        return 0.0
    keys = (1 << dims) - 1
    return keys * _table_cost(size * (1 << (dims - 1)) / keys, distinct)


def _table_cost(length: float, distinct: int) -> float:
    """Estimated seconds of one table whose key has ``length`` bits (random hashes)."""
    share = math.pow(2.0, -length)  # of random pairs that agree on the key
    per_key = distinct * share  # hashes sharing one key value, on average
    longest = per_key + 4 * math.sqrt(per_key) + 2  # about the longest run
    pairs = distinct * (distinct - 1) / 2 * share
    diagonals = 5 * min(longest, _RUN_DIAGONALS)  # over the classes of run lengths
    return _TABLE + distinct * _SORT + diagonals * _DIAGONAL + pairs * _PAIR


def _sizes(dims: tuple[int, ...], distinct: int) -> list[int]:
    """Bits per part: each bit goes where it saves the most (every part gets some)."""
    sizes = [1] * len(dims)
    for _ in range(BITS - len(dims)):
        gains = [
            _estimate(s, t, distinct) - _estimate(s + 1, t, distinct)
            for s, t in zip(sizes, dims, strict=True)
        ]
        sizes[max(range(len(dims)), key=gains.__getitem__)] += 1
    return sizes


def _parts(layout: tuple[tuple[int, int], ...]) -> tuple[Part, ...]:
    """Parts of the given sizes and dimensions, their bits interleaved over the 64."""
    owners: list[int] = []
    left = [size for size, _ in layout]
    while any(left):
        for j, remaining in enumerate(left):
            if remaining:
                owners.append(j)
                left[j] -= 1
    parts = []
    for j, (size, dims) in enumerate(layout):
        positions = tuple(p for p, owner in enumerate(owners) if owner == j)
        parts.append(Part(positions, _vectors(size, dims), dims))
    return tuple(parts)


@lru_cache(maxsize=256)
def _vectors(size: int, dims: int) -> tuple[int, ...]:
    """``size`` non-zero vectors of ``dims`` bits whose keys are as long as possible: chosen to
    minimise the sum over keys of ``2^-length`` (the pairs a key lets through).

    Example:
        >>> _vectors(3, 2)
        (1, 2, 3)
    """
    vs = np.arange(1, 1 << dims)
    odd = (np.bitwise_count(vs[:, None] & vs[None, :]) & 1).astype(np.float64)
    every, rest = divmod(size, len(vs))
    chosen = list(vs) * every  # whole copies: every key has the same length
    lengths = np.full(len(vs), every * (1 << (dims - 1)), dtype=np.float64)
    picks: list[int] = []
    for _ in range(rest):
        # Adding vector c lengthens the keys v with odd c.v: the best c is the one whose keys
        # are, together, shortest now.
        gain = odd @ 2.0**-lengths
        if picks:
            gain[np.array(picks)] = -1.0  # distinct vectors where there are enough
        c = int(np.argmax(gain))
        picks.append(c)
        lengths += odd[c]
    for _ in range(8):  # swaps while they help
        improved = False
        for k in range(len(picks)):
            base = lengths - odd[picks[k]]
            costs = (2.0 ** -(base[None, :] + odd)).sum(axis=1)
            costs[np.array(picks)] = np.inf
            c = int(np.argmin(costs))
            if costs[c] < (2.0**-lengths).sum() - 1e-15:
                picks[k] = c
                lengths = base + odd[c]
                improved = True
        if not improved:
            break
    return tuple(int(v) for v in chosen + [vs[c] for c in sorted(picks)])


def _part_cost(part: Part, distinct: int) -> float:
    """Estimated seconds of one part, with its keys' real lengths."""
    return sum(_table_cost(mask.bit_count(), distinct) for mask in part.masks())


def sampled_pairs(
    hashes: Sequence[int] | np.ndarray,
    max_hamming: int,
    *,
    tables: int = 64,
    crowded: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, within ``max_hamming`` bits, searched by random keys and
    leaving out crowded places: a fast, approximate :func:`candidate_pairs` whose work grows
    linearly with the number of hashes, whatever their distribution.

    Each of ``tables`` keys is a seeded random choice of ``16 + log2(n)`` of the 64 bits (bit
    sampling, the locality-sensitive hash of Hamming space), so that a run of equal keys holds
    few hashes; every pair inside a run is compared on all 64 bits. A pair ``d`` bits apart
    agrees on one key when none of its ``d`` bits is in the key: for 64 keys of 36 bits (a
    million hashes), some key agrees with probability 0.99 at 3 bits, 0.88 at 4 and 0.56 at 5.
    Left out: runs longer than ``crowded`` (places where many hashes agree, such as the keypoint
    codes of ribs and collimation edges that every radiograph has: a pair there is found only
    through a key on which few others agree) and values that occur more than ``crowded``
    times. Every pair returned is within ``max_hamming``; the work is about ``tables`` sorts of
    the hashes plus ``crowded`` comparisons per hash and key.

    Example:
        >>> sampled_pairs([0, 1, 2**63, 0xFFFF_FFFF_FFFF_FFFF, 3], 1).tolist()
        [[0, 1], [0, 2], [1, 4]]
        >>> len(sampled_pairs([7] * 100, 0, crowded=64))  # one value 100 times: crowded
        0
    """
    values = as_hashes(hashes)
    n = len(values)
    if n < 2 or max_hamming < 0:
        return np.empty((0, 2), dtype=np.int64)
    distinct, inverse, counts = _distinct(values)
    keep = counts <= crowded
    if not keep.all():  # a value shared by more than ``crowded`` hashes pairs with none
        rows = np.flatnonzero(keep[inverse])
        found = sampled_pairs(values[rows], max_hamming, tables=tables, crowded=crowded, seed=seed)
        kept: np.ndarray = rows[found]
        return kept
    m = len(distinct)
    key_bits = min(BITS, 16 + max(1, (m - 1).bit_length()))
    rng = np.random.default_rng(seed)
    keys = [
        int(sum(1 << int(bit) for bit in rng.choice(BITS, key_bits, replace=False)))
        for _ in range(tables)
    ]
    codes, _, _ = _tables(distinct, max_hamming, keys, longest=crowded)
    pairs, _ = _expand(codes, m, inverse, counts)
    return pairs


def _tables(
    values: np.ndarray, radius: int, keys: list[int], longest: int | None = None
) -> tuple[np.ndarray, int, int]:
    """Codes ``a * m + b`` (``a < b``) of the pairs of distinct ``values`` within ``radius``,
    sorted; with the pairs compared and the longest run (runs longer than ``longest`` are
    left out)."""
    m = len(values)
    found = _Found(values, keys)
    compared = largest = 0
    # One sort per key, of one 64-bit word per hash: a hash of its key above its index. Equal
    # keys hash alike, so no pair sharing a key is missed; two keys hashing alike only add
    # pairs to compare (rarely: at most a million key values among 2^44 hash values at a
    # million hashes), and _Found keeps only pairs that agree on the key itself.
    shift = np.uint64(max(1, (m - 1).bit_length()))
    index = np.arange(m, dtype=np.uint64)
    low = np.uint64((1 << int(shift)) - 1)
    high = ~low
    for table, key in enumerate(keys):
        word = values & np.uint64(key)
        word *= _MULTIPLIER
        word &= high
        word |= index
        word.sort()
        order = (word & low).astype(np.intp)
        word &= high
        edges = np.flatnonzero(word[1:] != word[:-1]) + 1
        bounds = np.concatenate(([0], edges, [m]))
        lengths = np.diff(bounds)
        shared = (lengths > 1) & (lengths <= (longest or m))
        starts, lengths = bounds[:-1][shared], lengths[shared]
        if not len(starts):
            continue
        compared += int((lengths * (lengths - 1) // 2).sum())
        largest = max(largest, int(lengths.max()))
        ordered = np.empty(m + _RUN_DIAGONALS, dtype=np.uint64)
        np.take(values, order, out=ordered[:m], mode="clip")
        ordered[m:] = 0
        _runs(ordered, order, starts, lengths, radius, found, table)
    return found.codes(), compared, largest


_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
"""An odd multiplier (2^64 over the golden ratio): multiply-shift hashing of a key."""


def _runs(
    ordered: np.ndarray,
    order: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    radius: int,
    found: _Found,
    table: int,
) -> None:
    """Every pair inside each run ``ordered[start : start + length]`` within ``radius``
    (``ordered`` goes on for ``_RUN_DIAGONALS`` values past the last run)."""
    by_length = np.argsort(lengths, kind="stable")
    starts, lengths = starts[by_length], lengths[by_length]
    limit = np.uint8(radius)
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    # Runs of similar lengths side by side, one column each, read to the class's width: row o
    # of a block holds the o-th hash of every run, so diagonal o (each hash against the one o
    # places after it) is two slices. Values read past a run's end are not compared with it.
    bounds = np.searchsorted(lengths, _WIDTHS, side="right").tolist()
    for width, lo_run, hi_run in zip(_WIDTHS.tolist(), [0, *bounds], bounds, strict=False):
        step = max(1, _BLOCK // width)
        for lo in range(lo_run, hi_run, step):
            columns = starts[lo : min(lo + step, hi_run)]
            sizes = lengths[lo : min(lo + step, hi_run)]
            longest = int(sizes[-1])
            block = ordered[np.arange(longest)[:, None] + columns[None, :]]
            for o in range(1, longest):
                first = int(np.searchsorted(sizes, o, side="right"))  # runs longer than o
                close = np.flatnonzero(
                    np.bitwise_count(block[o:, first:] ^ block[: longest - o, first:]) <= limit
                )
                if len(close):
                    wide = len(columns) - first
                    row, column = close // wide, close % wide + first
                    inside = row + o < sizes[column]
                    at = columns[column[inside]] + row[inside]
                    firsts.append(at)
                    seconds.append(at + o)
    for start, size in zip(
        starts[bounds[-1] :].tolist(), lengths[bounds[-1] :].tolist(), strict=True
    ):
        _long_run(ordered, order, start, size, radius, found, table)
    if firsts:
        found.add(order[np.concatenate(firsts)], order[np.concatenate(seconds)], table)


_WIDTHS = np.append(np.unique(np.round(1.25 ** np.arange(4, 25)).astype(np.int64)), _RUN_DIAGONALS)
"""Classes of run lengths compared together (each about a quarter longer than the last)."""


def _long_run(
    ordered: np.ndarray,
    order: np.ndarray,
    start: int,
    size: int,
    radius: int,
    found: _Found,
    table: int | None = None,
) -> None:
    """Every pair within ``radius`` inside one long run, a block of rows at a time."""
    run = ordered[start : start + size]
    step = max(1, _BLOCK // size)
    for lo in range(0, size - 1, step):
        hi = min(lo + step, size - 1)
        close = np.bitwise_count(run[lo:hi, None] ^ run[None, lo + 1 :]) <= radius
        row, col = np.nonzero(close)
        col += lo + 1
        keep = col > row + lo
        found.add(order[start + lo + row[keep]], order[start + col[keep]], table)


def _brute(values: np.ndarray, radius: int) -> tuple[np.ndarray, int, int]:
    """:func:`_tables` by comparing every pair, a block of rows at a time."""
    m = len(values)
    found = _Found(values)
    order = np.arange(m)
    _long_run(values, order, 0, m, radius, found)
    return found.codes(), m * (m - 1) // 2, m


class _Found:
    """Pairs of distinct values found so far, as codes ``a * m + b`` with ``a < b``.

    In a search by keys a pair is kept only by the first table whose key it agrees on, so each
    pair is kept once, however many tables find it again (a pair of near-identical hashes
    agrees on almost every key)."""

    def __init__(self, values: np.ndarray, keys: Sequence[int] = ()) -> None:
        self.values = values
        self.keys = np.array(keys, dtype=np.uint64)
        self.found: list[np.ndarray] = []

    def add(self, a: np.ndarray, b: np.ndarray, table: int | None = None) -> None:
        """Pairs ``(a[k], b[k])`` within the radius, found in ``table`` (by brute force: None)."""
        if table is not None and len(a):
            differ = self.values[a] ^ self.values[b]
            # Agreeing on this table's key, not only on its hash, and on no earlier key.
            alive = np.flatnonzero((differ & self.keys[table]) == 0)
            done = 0
            while done < table and len(alive):
                # Many pairs (near-identical hashes) mostly agree on the first keys too: one key
                # at a time while there are many, then many keys at a time.
                if len(alive) > 4096:
                    alive = alive[(differ[alive] & self.keys[done]) != 0]
                    done += 1
                else:
                    earlier = self.keys[done : min(done + 64, table)]
                    alive = alive[((differ[alive, None] & earlier[None, :]) != 0).all(axis=1)]
                    done += len(earlier)
            a, b = a[alive], b[alive]
        if len(a):
            a, b = a.astype(np.int64), b.astype(np.int64)
            self.found.append(np.minimum(a, b) * len(self.values) + np.maximum(a, b))

    def codes(self) -> np.ndarray:
        """Every pair found, sorted."""
        codes = np.concatenate([np.empty(0, dtype=np.int64), *self.found])
        codes.sort()
        return codes


def _expand(
    codes: np.ndarray, m: int, inverse: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, int]:
    """Index pairs ``(i, j)``, ``i < j``, sorted, from the pairs of distinct values (``codes``)
    and the copies of each value; with the number of pairs of identical hashes."""
    n = len(inverse)
    members = np.argsort(inverse, kind="stable")  # indices of each value, in order
    firsts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    identical = int((counts * (counts - 1) // 2).sum())
    parts = []
    if len(codes):
        a, b = codes // m, codes % m
        if identical == 0:  # every value once: one index each
            i, j = members[a], members[b]
            parts.append(np.minimum(i, j) * n + np.maximum(i, j))
        else:
            for lo in range(0, len(a), _BLOCK):
                parts.append(
                    _cross(a[lo : lo + _BLOCK], b[lo : lo + _BLOCK], members, firsts, counts, n)
                )
    if identical:
        parts.append(_within(members, firsts, counts, n))
    if not parts:
        return np.empty((0, 2), dtype=np.int64), identical
    merged = np.concatenate(parts)
    del parts
    merged.sort()
    pairs = np.empty((len(merged), 2), dtype=np.int64)
    np.floor_divide(merged, n, out=pairs[:, 0])
    np.remainder(merged, n, out=pairs[:, 1])
    return pairs, identical


def _cross(
    a: np.ndarray,
    b: np.ndarray,
    members: np.ndarray,
    firsts: np.ndarray,
    counts: np.ndarray,
    n: int,
) -> np.ndarray:
    """Codes ``i * n + j`` of every index of value ``a`` with every index of value ``b``."""
    ca, cb = counts[a], counts[b]
    times = ca * cb
    pair = np.repeat(np.arange(len(a)), times)
    k = np.arange(int(times.sum())) - np.repeat(np.cumsum(times) - times, times)
    i = members[firsts[a][pair] + k // cb[pair]]
    j = members[firsts[b][pair] + k % cb[pair]]
    out: np.ndarray = np.minimum(i, j) * n + np.maximum(i, j)
    return out


def _within(members: np.ndarray, firsts: np.ndarray, counts: np.ndarray, n: int) -> np.ndarray:
    """Codes ``i * n + j`` of every two indices of one value."""
    repeated = np.flatnonzero(counts > 1)
    size = counts[repeated]
    # Each index (at place p among its value's c indices) pairs with the c - 1 - p after it.
    owner = np.repeat(repeated, size)
    place = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
    later = counts[owner] - 1 - place
    at = firsts[owner] + place
    first = np.repeat(at, later)
    step = np.arange(int(later.sum())) - np.repeat(np.cumsum(later) - later, later) + 1
    i, j = members[first], members[first + step]
    out: np.ndarray = np.minimum(i, j) * n + np.maximum(i, j)
    return out
