"""Benchmark of the X-ray build on the real radiographs of a mirror (a script, not a test).

In one run, on the JPEG files of the mirror's X-ray collections, it measures:

1. the decode floor: OpenCV's reduced greyscale decode (``IMREAD_REDUCED_GRAYSCALE_2/4/8``,
   chosen per file as Pillow's ``draft`` chooses for the build's 512 px copies: the largest scale
   that keeps both sides at 512 px or more), one process, images/s;
2. the build's per-image unit of work (``covid19_images.process.pipeline._process_one``: read,
   file hash, reduced decode, pixel hash, perceptual hash, statistics, 224/512 px copies and the
   64 px thumbnail written as PNG, ``meta.json``) through ``LocalExecutor(workers=1)``, images/s
   and its ratio to the floor (target >= 0.85); and, for a complete picture, the same unit
   followed by the de-identified DICOM the build also writes for every kept image
   (``covid19_images.process.dicom.write_secondary_capture``);
3. both again with ``LocalExecutor(workers=os.cpu_count())``: our speed-up over one worker
   (target >= 1.8x with 2 workers), next to the floor's own speed-up on the same executor, the
   machine's reference for what parallel decoding can gain here;
4. ``build("xray-covid")`` into a temporary folder with a fresh cache, then the same build again
   with nothing changed: both times, their ratio (target <= 2%) and the time of every stage;
5. peak memory of the per-image unit over N and 2N images (N: every distinct file once; 2N:
   twice), each in a fresh interpreter: peak RSS (Linux's VmHWM, else ``ru_maxrss``; the child's
   ``ru_maxrss`` is reported too) above the baseline after imports, and ``tracemalloc`` for
   numpy and Python objects, to show it does not grow with the number of images.

Every ours-against-reference pair is measured in the same round, rounds alternate, and the
medians are reported. The file list is de-duplicated by content (byte-identical files would hit
the content-addressed cache) and repeated, each repetition into a fresh cache, until a pass has
at least ``--min-decodes`` images.

Run from the repository root (OpenCV comes with ``pip install -e '.[bench]'``)::

    python benchmarks/build_xray.py                  # a table
    python benchmarks/build_xray.py --json           # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import PIL
from _memory import peak_rss_kib, peak_source  # benchmarks/, run as scripts
from PIL import Image

from covid19_images.process.dicom import write_secondary_capture
from covid19_images.process.executor import LocalExecutor
from covid19_images.process.pipeline import Params, _process_one, _Task
from covid19_images.records import Record

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = REPO.parent / "shared" / "sources"
XRAY_FOLDERS = (
    "ieee8023-covid-chestxray/images",
    "figure1-covid-chestxray/images",
    "covid19-detection-xray-dataset",
    "covid19-image-dataset",
    "zhanglab-chest-xrays",
)
TARGETS = {"per_worker": 0.85, "speedup": 1.8, "rebuild": 0.02, "memory_growth": 1.05}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- inputs ---------------------------------------------------------------------------------


def jpeg_files(mirror: Path) -> tuple[list[Path], int]:
    """Every .jpg/.jpeg file of the X-ray folders, one per distinct content; and the total."""
    found: list[Path] = []
    for folder in XRAY_FOLDERS:
        base = mirror / folder
        if base.is_dir():
            found += sorted(
                p for p in base.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file()
            )
    seen: set[str] = set()
    unique = []
    for path in found:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            unique.append(path)
    return unique, len(found)


def draft_scale(path: Path, largest: int) -> int:
    """The DCT scale Pillow's ``draft`` picks for a ``largest`` px target (1 if not a JPEG)."""
    with Image.open(path) as img:
        if img.format != "JPEG":
            return 1
        width, height = img.size
    scale = min(width // largest, height // largest)
    return next((s for s in (8, 4, 2) if scale >= s), 1)


# --- the two per-image jobs ---------------------------------------------------------------


def _floor_one(item: tuple[str, int]) -> int:
    """The reference: OpenCV's reduced greyscale decode of one file."""
    import cv2

    path, flag = item
    pixels = cv2.imread(path, flag)
    if pixels is None:
        raise RuntimeError(f"OpenCV cannot decode {path}")
    return int(pixels.shape[0])


def _cv2_flags() -> dict[int, int]:
    import cv2

    cv2.setNumThreads(1)
    return {
        1: cv2.IMREAD_GRAYSCALE,
        2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
        4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
        8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
    }


def _tasks(files: Sequence[Path], repeats: int, cache: Path, params: Params) -> list[_Task]:
    """The build's tasks for ``files``, ``repeats`` times, each repetition into its own cache."""
    tasks = []
    for rep in range(repeats):
        for path in files:
            stat = path.stat()
            tasks.append(
                _Task(str(path), stat.st_size, stat.st_mtime_ns, str(cache / f"r{rep}"), params)
            )
    return tasks


def _with_dicom(task: _Task) -> dict[str, Any]:
    """The per-image unit, then the DICOM the build writes for a kept image."""
    result = _process_one(task)
    path = Path(task.path)
    record = Record(
        source="bench", path_raw=path.name, patient_id=f"bench:{path.stem}", modality="XR"
    )
    out = Path(task.cache) / "dicom" / f"{result['key']}.dcm"
    write_secondary_capture(path, record, out, salt=b"benchmark")
    return result


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_floor(items: list[tuple[str, int]], workers: int) -> float:
    executor = LocalExecutor(workers=workers, progress=False)
    return _timed(lambda: list(executor.map(_floor_one, items)))


def time_ours(
    tasks: list[_Task], workers: int, job: Callable[[_Task], dict[str, Any]] = _process_one
) -> float:
    executor = LocalExecutor(workers=workers, progress=False)
    results: list[dict[str, Any]] = []
    elapsed = _timed(lambda: results.extend(executor.map(job, tasks)))
    failed = [r for r in results if r.get("error_kind")]
    if failed:
        raise RuntimeError(f"{len(failed)} images failed, e.g. {failed[0]}")
    return elapsed


# --- throughput -----------------------------------------------------------------------------


def throughput(
    files: list[Path], repeats: int, rounds: int, workers: int, profile: bool
) -> dict[str, Any]:
    params = Params()
    flags = _cv2_flags()
    scales = [draft_scale(p, max(params.sizes)) for p in files]
    items = [(str(p), flags[s]) for p, s in zip(files, scales, strict=True)] * repeats
    n = len(items)
    log(f"{len(files)} files x {repeats} = {n} decodes per pass, {rounds} rounds")

    names = ("floor_1", "ours_1", "dicom_1", "floor_n", "ours_n")
    runs: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="bench-xray-") as tmp:
        # Warm-up: page cache, imports, lazy initialisation, the pool's first fork.
        time_floor(items[: len(files)], 1)
        time_ours(_tasks(files, 1, Path(tmp) / "warm", params), workers)
        for r in range(rounds):
            for name in names:
                w = 1 if name.endswith("_1") else workers
                # Every pass starts with no dirty pages: no pass pays for an earlier one's
                # writeback. Caches are deleted at the end only (deleting a folder of files
                # costs the file system work, and discards, during the next pass).
                os.sync()
                if name.startswith("floor"):
                    elapsed = time_floor(items, w)
                else:
                    cache = Path(tmp) / f"{name}-{r}"
                    job = _with_dicom if name.startswith("dicom") else _process_one
                    elapsed = time_ours(_tasks(files, repeats, cache, params), w, job)
                runs[name].append(n / elapsed)
            log(
                f"round {r + 1}: floor {runs['floor_1'][-1]:.0f}/s, ours {runs['ours_1'][-1]:.0f}/s"
                f" (with DICOM {runs['dicom_1'][-1]:.0f}/s), {workers} workers: floor"
                f" {runs['floor_n'][-1]:.0f}/s, ours {runs['ours_n'][-1]:.0f}/s"
            )
        if profile:
            cache = Path(tmp) / "profile"
            tasks = _tasks(files, 1, cache, params)
            profiler = cProfile.Profile()
            profiler.runcall(lambda: [_process_one(t) for t in tasks])
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(20)

    def per_round(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(runs[a], runs[b], strict=True))

    return {
        "decodes_per_pass": n,
        "rounds": rounds,
        "workers": workers,
        "draft_scales": {str(k): v for k, v in sorted(Counter(scales).items())},
        "floor_1_per_s": statistics.median(runs["floor_1"]),
        "ours_1_per_s": statistics.median(runs["ours_1"]),
        "dicom_1_per_s": statistics.median(runs["dicom_1"]),
        "floor_n_per_s": statistics.median(runs["floor_n"]),
        "ours_n_per_s": statistics.median(runs["ours_n"]),
        "ours_1_to_floor_1": per_round("ours_1", "floor_1"),
        "dicom_1_to_floor_1": per_round("dicom_1", "floor_1"),
        "ours_speedup": per_round("ours_n", "ours_1"),
        "floor_speedup": per_round("floor_n", "floor_1"),
        "ours_n_to_floor_n": per_round("ours_n", "floor_n"),
        "runs": runs,
    }


# --- full build and no-change rebuild -------------------------------------------------------


class CountingExecutor:
    """The local executor, counting the items of every step."""

    def __init__(self, workers: int) -> None:
        self.inner = LocalExecutor(workers=workers, progress=False)
        self.workers = workers
        self.items: Counter[str] = Counter()

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], description: str = "") -> Any:
        self.items[description or fn.__name__] += len(items)
        return self.inner.map(fn, items, description)


STAGES = [
    ("build", "_ingest", "ingest"),
    ("build", "_select", "select"),
    ("xray", "process_records", "process"),
    ("xray", "deduplicate", "deduplicate"),
    ("xray", "write_dicoms", "DICOM"),
    ("xray", "split_records", "split"),
    ("xray", "_leak_free_splits", "split + its leak check"),
    ("xray", "_manifest", "manifest"),
    ("xray", "_write", "write (total)"),
    ("audit", "audit_dataset", "write: audit"),
    ("datasheet", "write_datasheet", "write: datasheet"),
]
"""(module, function, label) of the build's stages: ``build``, ``xray``, ``audit`` and
``datasheet`` name ``covid19_images.assemble.build``, ``.assemble.xray``, ``.audit`` and
``.assemble.datasheet``."""


@contextmanager
def stage_timer(
    stages: Sequence[tuple[str, str, str]] = tuple(STAGES),
) -> Iterator[dict[str, float]]:
    """Time the build's stages by wrapping them where ``build`` and ``assemble_xray`` look them
    up; a stage whose function is gone (the build changed) is reported as NaN."""
    import covid19_images.assemble.build as build_module
    import covid19_images.assemble.datasheet as datasheet_module
    import covid19_images.assemble.xray as xray_module
    import covid19_images.audit as audit_module

    modules = {
        "build": build_module,
        "xray": xray_module,
        "audit": audit_module,
        "datasheet": datasheet_module,
    }
    spots = [(modules[m], name, label) for m, name, label in stages]
    times: dict[str, float] = {}

    def wrap(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[label] = times.get(label, 0.0) + time.perf_counter() - start

        return timed

    with ExitStack() as stack:
        for module, name, label in spots:
            original = getattr(module, name, None)
            if original is None:  # the build changed: time what is still there
                times[f"{label} (not found)"] = float("nan")
                continue
            setattr(module, name, wrap(original, label))
            stack.callback(setattr, module, name, original)
        yield times


def full_and_rebuild(mirror: Path, workers: int) -> dict[str, Any]:
    from covid19_images.assemble.build import build

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        for run in ("full", "rebuild"):
            executor = CountingExecutor(workers)
            with stage_timer() as stages:
                start = time.perf_counter()
                result = build(
                    "xray-covid",
                    out=Path(tmp) / "out",
                    mirror=mirror,
                    root=Path(tmp) / "root",
                    executor=executor,
                    progress=False,
                )
                elapsed = time.perf_counter() - start
            manifest_sha = hashlib.sha256(
                (result.path / "manifest.parquet").read_bytes()
            ).hexdigest()
            out[run] = {
                "seconds": elapsed,
                "stages": dict(stages),
                "executor_items": dict(executor.items),
                "images": len(result.manifest),
                "manifest_sha256": manifest_sha,
            }
            log(f"{run} build: {elapsed:.2f} s, executor items {dict(executor.items)}")
    out["ratio"] = out["rebuild"]["seconds"] / out["full"]["seconds"]
    out["same_manifest"] = out["full"]["manifest_sha256"] == out["rebuild"]["manifest_sha256"]
    return out


# --- memory ---------------------------------------------------------------------------------


def smallest_file(files: list[Path]) -> Path:
    """The file of fewest pixels (for a warm-up that adds no image's memory to the baseline)."""

    def pixels(path: Path) -> int:
        with Image.open(path) as img:
            return int(img.size[0] * img.size[1])

    return min(files, key=pixels)


def memory_child(mirror: Path, count: int) -> dict[str, Any]:
    """In a fresh interpreter: peak memory of the per-image unit over ``count`` images.

    The distinct files in order, again and again (each repetition into a fresh cache) up to
    ``count``: N and 2N images then hold the same largest frames, so a difference between them
    is memory that grows with the number of images.
    """
    files = jpeg_files(mirror)[0]
    smallest = smallest_file(files)
    order = (files * (count // len(files) + 1))[:count]
    params = Params()
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        # Imports and lazy initialisation, not an image's pixels, make the baseline.
        _process_one(_tasks([smallest], 1, Path(tmp) / "warm", params)[0])
        base_kib = peak_rss_kib()
        tracemalloc.start()
        chunk = len(files)
        for start in range(0, count, chunk):  # a repeated file goes to a fresh cache
            part = order[start : start + chunk]
            for task in _tasks(part, 1, Path(tmp) / f"c{start}", params):
                result = _process_one(task)
                assert not result.get("error_kind"), result
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak_kib = peak_rss_kib()
    return {
        "images": count,
        "peak_rss_from": peak_source(),
        "peak_rss_before_mib": base_kib / 1024,
        "peak_rss_mib": peak_kib / 1024,
        "peak_rss_growth_mib": (peak_kib - base_kib) / 1024,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tracemalloc_peak_mib": peak / 2**20,
        "tracemalloc_end_mib": current / 2**20,
    }


def memory(mirror: Path, n: int) -> dict[str, Any]:
    """Peak memory over N and 2N images, each in a fresh interpreter.

    Run before anything else: Linux carries the parent's peak into a child's ``ru_maxrss``
    across fork and exec, so the parent must still be small.
    """
    out: dict[str, Any] = {}
    for label, count in (("n", n), ("2n", 2 * n)):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mirror",
                str(mirror),
                "--scratch",
                tempfile.gettempdir(),
                "--memory-child",
                str(count),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        out[label] = json.loads(done.stdout)
        log(f"memory over {count} images: peak rss {out[label]['peak_rss_mib']:.1f} MiB")
    out["peak_rss_ratio"] = out["2n"]["peak_rss_mib"] / out["n"]["peak_rss_mib"]
    out["tracemalloc_peak_ratio"] = (
        out["2n"]["tracemalloc_peak_mib"] / out["n"]["tracemalloc_peak_mib"]
    )
    return out


# --- report ---------------------------------------------------------------------------------


def rows(report: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(metric, ours, reference, ratio, target, met) for the table."""
    t, b, m = report["throughput"], report["build"], report["memory"]
    w = t["workers"]
    return [
        (
            "per-image path, 1 worker (images/s)",
            f"{t['ours_1_per_s']:.0f}",
            f"OpenCV reduced decode, 1 process: {t['floor_1_per_s']:.0f}",
            f"{t['ours_1_to_floor_1']:.3f}",
            f">= {TARGETS['per_worker']}",
            _met(t["ours_1_to_floor_1"] >= TARGETS["per_worker"]),
        ),
        (
            "per-image path + DICOM write, 1 worker (images/s)",
            f"{t['dicom_1_per_s']:.0f}",
            f"OpenCV reduced decode, 1 process: {t['floor_1_per_s']:.0f}",
            f"{t['dicom_1_to_floor_1']:.3f}",
            f"(>= {TARGETS['per_worker']})",
            _met(t["dicom_1_to_floor_1"] >= TARGETS["per_worker"]),
        ),
        (
            f"per-image path, {w} workers (images/s)",
            f"{t['ours_n_per_s']:.0f}",
            f"ours, 1 worker: {t['ours_1_per_s']:.0f}",
            f"{t['ours_speedup']:.2f}x",
            f">= {TARGETS['speedup']}x" if w == 2 else f"(1.8x is set for 2 workers; {w} here)",
            _met(t["ours_speedup"] >= TARGETS["speedup"]) if w == 2 else "n/a",
        ),
        (
            f"machine reference: OpenCV decode, {w} workers (images/s)",
            f"{t['floor_n_per_s']:.0f}",
            f"OpenCV, 1 process: {t['floor_1_per_s']:.0f}",
            f"{t['floor_speedup']:.2f}x",
            "-",
            "-",
        ),
        (
            "no-change rebuild of xray-covid (s)",
            f"{b['rebuild']['seconds']:.2f}",
            f"full build, fresh cache: {b['full']['seconds']:.2f}",
            f"{100 * b['ratio']:.1f}%",
            f"<= {100 * TARGETS['rebuild']:.0f}%",
            _met(b["ratio"] <= TARGETS["rebuild"]),
        ),
        (
            f"peak RSS, per-image path over {m['2n']['images']} images (MiB)",
            f"{m['2n']['peak_rss_mib']:.1f} (+{m['2n']['peak_rss_growth_mib']:.1f})",
            f"over {m['n']['images']} images: {m['n']['peak_rss_mib']:.1f}"
            f" (+{m['n']['peak_rss_growth_mib']:.1f})",
            f"{m['peak_rss_ratio']:.3f}",
            f"<= {TARGETS['memory_growth']} (flat)",
            _met(m["peak_rss_ratio"] <= TARGETS["memory_growth"]),
        ),
        (
            f"tracemalloc peak, over {m['2n']['images']} images (MiB)",
            f"{m['2n']['tracemalloc_peak_mib']:.1f} (end {m['2n']['tracemalloc_end_mib']:.2f})",
            f"over {m['n']['images']} images: {m['n']['tracemalloc_peak_mib']:.1f}"
            f" (end {m['n']['tracemalloc_end_mib']:.2f})",
            f"{m['tracemalloc_peak_ratio']:.3f}",
            f"<= {TARGETS['memory_growth']} (flat)",
            _met(m["tracemalloc_peak_ratio"] <= TARGETS["memory_growth"]),
        ),
    ]


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def print_table(report: dict[str, Any]) -> None:
    header = ("metric", "ours", "reference", "ratio", "target", "met?")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows(report):
        print("| " + " | ".join(row) + " |")
    b = report["build"]
    print()
    print("| build stage | full (s) | no-change rebuild (s) |")
    print("|---|---|---|")
    for stage, seconds in b["full"]["stages"].items():
        print(f"| {stage} | {seconds:.2f} | {b['rebuild']['stages'].get(stage, 0.0):.2f} |")
    print(f"| whole build | {b['full']['seconds']:.2f} | {b['rebuild']['seconds']:.2f} |")
    print()
    inputs = report["inputs"]
    print(
        f"{inputs['unique_files']} distinct JPEG files ({inputs['files']} found), "
        f"{report['throughput']['decodes_per_pass']} decodes per pass, "
        f"draft scales {report['throughput']['draft_scales']}; images decoded by the build: "
        f"{b['full']['executor_items']}, by the rebuild: {b['rebuild']['executor_items']}; "
        f"same manifest: {b['same_manifest']}"
    )
    runs = report["throughput"]["runs"]
    print(
        "rounds (images/s): " + "; ".join(f"{k} {min(v):.0f}-{max(v):.0f}" for k, v in runs.items())
    )
    print(f"machine: {report['machine']}")
    if report["throughput"]["floor_speedup"] < 0.8 * report["throughput"]["workers"]:
        print(
            "warning: OpenCV decoding itself gained only "
            f"{report['throughput']['floor_speedup']:.2f}x from "
            f"{report['throughput']['workers']} workers: other work shares these cores, "
            "so the all-workers figures say little; rerun on a quiet machine"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR, help="the mirror folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--min-decodes", type=int, default=1000, help="decodes per pass, at least")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--memory-n", type=int, default=0, help="N for memory (default: files)")
    parser.add_argument("--profile", action="store_true", help="cProfile one pass to stderr")
    parser.add_argument(
        "--scratch", type=Path, help="folder for the caches and builds (default: the temp folder)"
    )
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    mirror = args.mirror.resolve()
    if args.scratch is not None:  # file creation speed differs a lot between folders and disks
        args.scratch.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(args.scratch.resolve())

    if args.memory_child:
        print(json.dumps(memory_child(mirror, args.memory_child)))
        return 0
    try:
        import cv2
    except ImportError:
        log("OpenCV is missing: pip install -e '.[bench]' (opencv-python-headless)")
        return 2

    files, found = jpeg_files(mirror)
    if not files:
        log(f"no JPEG files under the X-ray folders of {mirror}")
        return 2
    repeats = -(-args.min_decodes // len(files))
    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/build_xray.py", *(argv or sys.argv[1:])]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "pillow": PIL.__version__,
            "opencv": cv2.__version__,
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg()[0],
            "scratch": tempfile.gettempdir(),
        },
        "inputs": {"mirror": str(mirror), "files": found, "unique_files": len(files)},
    }
    report["memory"] = memory(mirror, args.memory_n or len(files))
    report["throughput"] = throughput(files, repeats, args.rounds, args.workers, args.profile)
    report["build"] = full_and_rebuild(mirror, args.workers)
    report["machine"]["load_average_at_end"] = os.getloadavg()[0]
    report["targets"] = TARGETS
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
