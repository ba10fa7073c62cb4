"""Scale of the duplicate-candidate search (a script, not a test).

``covid19_images.dedup.index.candidate_search`` on synthetic 64-bit hashes, one core, for each
size up to ``--n`` (10,000, 100,000, 1,000,000) and each radius the build searches with
(``max_hamming`` 12, the recipes' default; ``VIEW_RADIUS`` 8; the keypoint codes' 7 bits):

- **Hashes** (seeded): uniformly random 64-bit values, and planted clusters: 10 % of the hashes
  are in clusters of four, a random hash and three copies of it, each with 0 to ``radius``
  random bits flipped. The planted pairs are the pairs of one cluster within the radius.
- **Time**: the search alone (the hashes already a NumPy array), the median of ``--rounds``
  rounds, alternating with the previous implementation (the multi-index hash of four 16-bit
  blocks this package used before, commit 6a5759b, kept below as :func:`previous`) where that
  finishes in reasonable time (sizes up to ``--previous-max``, default 100,000; at a million it
  would take about 100 times its 100,000 figure, so it is not run there, and the table says so).
  The ratio is previous / new, per round, then the median.
- **Exactness**: the pairs of the full run with both hashes in a sample of about 20,000 of them
  must be exactly those that brute force (every pair of the sample, vectorised popcount) finds
  in the sample; the sample is whole planted clusters (so that it holds close pairs) topped up
  with random hashes. Every planted pair must be found. Where the previous implementation runs,
  both must return the same pairs.
- **Memory**: each search again in a fresh interpreter of its own: the peak of ``tracemalloc``
  during the search (NumPy's arrays included), and the process's peak resident size (VmHWM)
  above its size before the search.
- **Many near-identical hashes** (``--blank``, default 3,000): at the largest size, 3,000 copies
  of one hash (blank images) and 3,000 hashes within 2 bits of another one: all their pairs are
  real, and the row shows how many and what they cost.

One core: BLAS and OpenMP get one thread and, where Linux allows, the process is pinned to one
CPU. Run from the repository root::

    python benchmarks/dedup_scale.py --n 1000000            # a table (Markdown)
    python benchmarks/dedup_scale.py --n 1000000 --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _memory import peak_rss_kib, peak_source, status_kib  # benchmarks/, run as scripts

from covid19_images.dedup.align import KEYPOINT_RADIUS
from covid19_images.dedup.index import candidate_search
from covid19_images.dedup.near import DEFAULT_MAX_HAMMING, VIEW_RADIUS

SIZES = (10_000, 100_000, 1_000_000)
RADII = (DEFAULT_MAX_HAMMING, VIEW_RADIUS, KEYPOINT_RADIUS)
CLUSTER = 4
CLUSTERED = 0.1
SAMPLE = 20_000
THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_model() -> str:
    """The CPU's name (Linux), else what ``platform`` says."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else platform.processor() or platform.machine()


def one_core(argv: list[str]) -> str:
    """Pin this process (and its children) to one CPU where Linux allows it, with one BLAS and
    OpenMP thread (set before NumPy starts: the script starts itself again if they are not)."""
    if any(os.environ.get(var) != "1" for var in THREADS):
        env = {**os.environ, **dict.fromkeys(THREADS, "1")}
        os.execve(sys.executable, [sys.executable, __file__, *argv], env)
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned"


# --- the hashes --------------------------------------------------------------------------------


def generate(
    n: int, radius: int, seed: int = 0, blank: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` hashes, their planted clusters (rows of ``CLUSTER`` indices) and the planted pairs
    within ``radius`` (rows ``i < j``); with ``blank``, also ``blank`` copies of one hash and
    ``blank`` hashes within 2 bits of another (left out of the clusters)."""
    rng = np.random.default_rng([seed, n, radius, blank])
    values = rng.integers(0, 2**64, n, dtype=np.uint64)
    free = rng.permutation(n)
    if blank:
        values[free[:blank]] = values[free[0]]
        centre = values[free[blank]]
        near = np.full(blank, centre, dtype=np.uint64)
        for _ in range(2):
            flip = rng.random(blank) < 0.7
            near[flip] ^= np.uint64(1) << rng.integers(0, 64, int(flip.sum())).astype(np.uint64)
        values[free[blank : 2 * blank]] = near
        free = free[2 * blank :]
    clusters = free[: int(n * CLUSTERED) // CLUSTER * CLUSTER].reshape(-1, CLUSTER)
    centres = values[clusters[:, 0]]
    for k in range(1, CLUSTER):
        copies = centres.copy()
        flips = rng.integers(0, radius + 1, len(copies))
        # Distinct bits: a random permutation of the 64 positions per copy, its first `flips`.
        bits = np.argsort(rng.random((len(copies), 64)), axis=1)[:, :radius].astype(np.uint64)
        for bit in range(radius):
            on = bit < flips
            copies[on] ^= np.uint64(1) << bits[on, bit]
        values[clusters[:, k]] = copies
    planted = []
    for first, second in zip(*np.triu_indices(CLUSTER, 1), strict=True):
        i, j = clusters[:, first], clusters[:, second]
        close = np.bitwise_count(values[i] ^ values[j]) <= radius
        planted.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)[close])
    return values, clusters, np.concatenate(planted)


def brute_force(values: np.ndarray, radius: int) -> np.ndarray:
    """Every pair ``(i, j)``, ``i < j``, within ``radius``, by comparing all of them."""
    found = []
    step = max(1, (1 << 22) // max(1, len(values)))
    for lo in range(0, len(values), step):
        close = np.bitwise_count(values[lo : lo + step, None] ^ values[None, :]) <= radius
        i, j = np.nonzero(close)
        keep = j > i + lo
        found.append(np.stack([i[keep] + lo, j[keep]], axis=1))
    return np.concatenate([np.empty((0, 2), dtype=np.int64), *found])


def codes(pairs: np.ndarray, n: int) -> np.ndarray:
    """One sorted integer per pair."""
    out: np.ndarray = np.sort(pairs[:, 0].astype(np.int64) * n + pairs[:, 1])
    return out


def exact_on_sample(
    values: np.ndarray, clusters: np.ndarray, pairs: np.ndarray, radius: int, seed: int = 1
) -> dict[str, Any]:
    """The run's pairs inside a sample against brute force on the sample."""
    n = len(values)
    rng = np.random.default_rng(seed)
    if n <= SAMPLE:
        sample = np.arange(n)
    else:
        whole = clusters[rng.permutation(len(clusters))[: SAMPLE // (2 * CLUSTER)]].ravel()
        others = np.setdiff1d(np.arange(n), whole)
        sample = np.union1d(whole, rng.choice(others, SAMPLE - len(whole), replace=False))
    inside = np.zeros(n, dtype=bool)
    inside[sample] = True
    local = np.full(n, -1, dtype=np.int64)
    local[sample] = np.arange(len(sample))
    kept = pairs[inside[pairs[:, 0]] & inside[pairs[:, 1]]]
    got = codes(local[kept], len(sample))
    expected = codes(brute_force(values[sample], radius), len(sample))
    return {
        "sample": len(sample),
        "pairs_in_sample": len(expected),
        "equal": bool(np.array_equal(got, expected)),
    }


# --- the previous implementation ----------------------------------------------------------------


def previous(hashes: Sequence[int] | np.ndarray, max_hamming: int) -> np.ndarray:
    """``candidate_pairs`` as it was before the covering index (commit 6a5759b), unchanged but
    for taking an array: four 16-bit blocks, each hash probing every block value within
    ``max_hamming // 4`` bits of its own."""
    values = np.asarray(hashes, dtype=np.uint64)
    n = len(values)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    block_values = np.arange(1 << 16, dtype=np.uint32)
    masks = block_values[np.bitwise_count(block_values) <= max_hamming // 4].astype(np.int64)
    found: list[np.ndarray] = []
    for block in range(4):
        keys = ((values >> np.uint64(block * 16)) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        counts = np.bincount(keys, minlength=1 << 16)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        for lo in range(0, n, 2048):
            items = np.arange(lo, min(lo + 2048, n))
            probes = keys[items, None] ^ masks[None, :]
            sizes = counts[probes].ravel()
            hit = sizes > 0
            if not hit.any():
                continue
            owners = np.repeat(items, len(masks))[hit]
            sizes, firsts = sizes[hit], starts[probes.ravel()[hit]]
            total = int(sizes.sum())
            offsets = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            others = order[np.repeat(firsts, sizes) + offsets]
            mine = np.repeat(owners, sizes)
            keep = mine < others
            mine, others = mine[keep], others[keep]
            close = np.bitwise_count(values[mine] ^ values[others]) <= max_hamming
            found.append(mine[close] * n + others[close])
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    keys = np.unique(np.concatenate(found))
    return np.stack([keys // n, keys % n], axis=1)


def new(values: np.ndarray, radius: int) -> np.ndarray:
    pairs: np.ndarray = candidate_search(values, radius).pairs
    return pairs


IMPLEMENTATIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "new": new,
    "previous": previous,
}


# --- one size ----------------------------------------------------------------------------------


def timing(n: int, radius: int, rounds: int, with_previous: bool, blank: int) -> dict[str, Any]:
    values, clusters, planted = generate(n, radius, blank=blank)
    times: dict[str, list[float]] = {"new": [], "previous": []}
    results: dict[str, np.ndarray] = {}
    stats = None
    for r in range(rounds):
        for name in ("new", "previous") if with_previous else ("new",):
            start = time.perf_counter()
            if name == "new":
                search = candidate_search(values, radius)
                pairs, stats = search.pairs, search.stats
            else:
                pairs = previous(values, radius)
            times[name].append(time.perf_counter() - start)
            log(f"n={n:,} radius {radius} round {r + 1}: {name} {times[name][-1]:.2f} s")
            results[name] = pairs
            del pairs
    assert stats is not None
    found = results["new"]
    planted_found = np.isin(codes(planted, n), codes(found, n)).sum()
    out: dict[str, Any] = {
        "n": n,
        "radius": radius,
        "blank": blank,
        "seconds": statistics.median(times["new"]),
        "rounds": times["new"],
        "pairs": len(found),
        "planted": len(planted),
        "planted_found": int(planted_found),
        "tables": stats.tables,
        "distinct": stats.distinct,
        "compared": stats.compared,
        "largest_run": stats.largest_run,
        "identical_pairs": stats.identical_pairs,
        "exact": exact_on_sample(values, clusters, found, radius),
    }
    if with_previous:
        out["previous_seconds"] = statistics.median(times["previous"])
        out["previous_rounds"] = times["previous"]
        out["speedup"] = statistics.median(
            p / q for p, q in zip(times["previous"], times["new"], strict=True)
        )
        out["previous_equal"] = bool(np.array_equal(results["previous"], found))
    return out


def memory_child(n: int, radius: int, name: str, blank: int) -> dict[str, Any]:
    values, _, _ = generate(n, radius, blank=blank)
    before = status_kib("VmRSS")
    tracemalloc.start()
    IMPLEMENTATIONS[name](values, radius)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "traced_mib": traced / 2**20,
        "rss_before_mib": before / 1024,
        "peak_rss_mib": peak_rss_kib() / 1024,
        "peak_rss_from": peak_source(),
    }


def memory(n: int, radius: int, name: str, blank: int) -> dict[str, Any]:
    """``memory_child`` in a fresh interpreter."""
    command = [sys.executable, __file__, "--memory-child", name, "--n", str(n)]
    command += ["--radius", str(radius), "--blank", str(blank)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    out: dict[str, Any] = json.loads(done.stdout)
    log(f"n={n:,} radius {radius}: {name} traced peak {out['traced_mib']:.0f} MiB")
    return out


# --- report -------------------------------------------------------------------------------------


def print_table(report: dict[str, Any]) -> None:
    print(
        "| radius | hashes | new (s) | previous (s) | previous / new | pairs | planted found "
        "| exact on sample | new: traced peak / RSS growth (MiB) | previous: traced / RSS (MiB) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for row in report["rows"]:
        label = f"{row['n']:,}"
        if row["blank"]:
            label += f" (+{row['blank']:,} blank, +{row['blank']:,} near-identical)"
        prev = (
            (f"{row['previous_seconds']:.2f}", f"**{row['speedup']:.1f}**")
            if "speedup" in row
            else ("not run", "-")
        )
        exact = row["exact"]
        same = "" if "previous_equal" not in row else f", = previous: {row['previous_equal']}"
        mem = row["memory"]
        new_mem = f"{mem['new']['traced_mib']:.0f} / {mem['new']['growth_mib']:.0f}"
        old_mem = (
            f"{mem['previous']['traced_mib']:.0f} / {mem['previous']['growth_mib']:.0f}"
            if "previous" in mem
            else "-"
        )
        print(
            f"| {row['radius']} | {label} | {row['seconds']:.2f} | {prev[0]} | {prev[1]} | "
            f"{row['pairs']:,} | {row['planted_found']:,} / {row['planted']:,} | "
            f"{exact['equal']} ({exact['pairs_in_sample']:,} pairs in {exact['sample']:,}{same}) | "
            f"{new_mem} | {old_mem} |"
        )
    print()
    for row in report["rows"]:
        print(
            f"- radius {row['radius']}, {row['n']:,} hashes: {row['tables']} tables, "
            f"{row['distinct']:,} distinct, {row['compared']:,} pairs compared, longest run "
            f"{row['largest_run']:,}, {row['identical_pairs']:,} pairs of identical hashes; "
            f"rounds (s) new {', '.join(f'{t:.2f}' for t in row['rounds'])}"
            + (
                f", previous {', '.join(f'{t:.2f}' for t in row['previous_rounds'])}"
                if "previous_rounds" in row
                else ""
            )
        )
    print()
    print(f"machine: {report['machine']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="the largest size")
    parser.add_argument("--radius", type=int, nargs="*", default=list(RADII))
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size (median)")
    parser.add_argument(
        "--previous-max", type=int, default=100_000, help="largest size the previous one runs at"
    )
    parser.add_argument("--blank", type=int, default=3000, help="identical and near hashes")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pinned = one_core(sys.argv[1:] if argv is None else argv)
    if args.memory_child:
        (radius,) = args.radius
        print(json.dumps(memory_child(args.n, radius, args.memory_child, args.blank)))
        return 0
    sizes = [s for s in SIZES if s < args.n] + [args.n]
    jobs = [(n, r, 0) for r in args.radius for n in sizes]
    if args.blank:
        jobs.append((args.n, args.radius[0], args.blank))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for n, radius, blank in jobs:
        with_previous = n <= args.previous_max and not blank
        row = timing(n, radius, args.rounds, with_previous, blank)
        row["memory"] = {}
        for name in ("new", "previous") if with_previous else ("new",):
            mem = memory(n, radius, name, blank)
            mem["growth_mib"] = mem["peak_rss_mib"] - mem["rss_before_mib"]
            row["memory"][name] = mem
        rows.append(row)
    after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report = {
        "rows": rows,
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs ({pinned}); load average {load:.1f} "
        f"before, {after:.1f} after; Python {platform.python_version()}, NumPy {np.__version__}",
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    ok = all(
        row["exact"]["equal"]
        and row["planted_found"] == row["planted"]
        and row.get("previous_equal", True)
        for row in rows
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
