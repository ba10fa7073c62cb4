"""How the X-ray build's cost grows with its input (a script, not a test).

For each ``--n`` (default 1,000 and 10,000; 100,000 where the disk allows) it:

1. **Generates** N radiograph-like images from the real radiographs of the mirror
   (``../shared/sources``), each distinct and none a copy of another: the blend of three
   different real films with random (Dirichlet) weights, each under its own random affine warp
   (rotation up to 12 degrees, scale 0.85 to 1.25, shift up to 10 %), then a smooth elastic
   deformation (up to 16 px), a random low-frequency field (a blurred noise image, as uneven
   exposure) and a random gamma; 512 x 512 px, JPEG quality 90, in the folder layout of the
   ``covid19-image-dataset`` source (``Covid19-dataset/{train,test}/{Covid,Normal,Viral
   Pneumonia}/``), which has no patient ids, so every image is its own patient. The generation
   runs on every core and is not timed as part of the build.
2. **Builds** ``xray-covid`` from that mirror with ``--no-dicom`` into a fresh data root, once
   per engine: the local engine (``LocalExecutor``, ``--workers`` processes) and, with
   ``--engine dask`` or ``both``, a ``LocalCluster`` of ``--workers`` worker processes (one
   thread each). Each build runs in a fresh interpreter of its own, so its peak memory is its
   own. Reported: images/s, the time of every stage (ingest, select, process, deduplicate,
   split, write, pack, audit, datasheet), the client's peak resident size (VmHWM), each
   worker's (the local engine's pool workers: the largest child's peak, ``RUSAGE_CHILDREN``;
   Dask's: VmHWM read on each worker at the end), how many images the build kept and how many
   it took for copies, and the manifest's sha256 (both engines must agree).

**Disk.** Before generating, a pilot of 64 images measures the bytes per image of the inputs, the
processed cache and the dataset; the run announces N times that (plus 20 %) and refuses to start
where the free space is smaller. Everything is deleted at the end unless ``--keep``.
``--inputs DIR`` keeps the generated images in ``DIR`` instead, and a later run with the same N,
seed, bases and generator reuses them (``--generate-only`` makes them and stops): generating
100,000 images takes longer than building them.

Run from the repository root (``pip install -e '.[bench,dask]'``)::

    python benchmarks/scale.py --n 1000 --n 10000            # a Markdown table
    python benchmarks/scale.py --n 1000 --engine both --json # one JSON object
    python benchmarks/scale.py --n 100000 --inputs /data/gen --generate-only  # then builds
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _memory import peak_rss_kib  # benchmarks/, run as scripts
from build_xray import stage_timer

cv2.setNumThreads(1)  # before any OpenCV call: the generation pool forks this process, and
# a fork of OpenCV's running thread pool can deadlock in the children

ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT.parent / "shared" / "sources"
SIDE = 512
CLASSES = ("Covid", "Normal", "Viral Pneumonia")
XRAY_SOURCES = (
    "covid19-image-dataset",
    "figure1-covid-chestxray",
    "zhanglab-chest-xrays",
    "covid19-radiography-database",
    "nih-chestxray-sample",
    "actualmed-covid-chestxray",
    "ieee8023-covid-chestxray/images",
    "covid19-detection-xray-dataset",
)
"""Folders of the mirror whose images are chest radiographs (the bases of the blends)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- generation


def bases(mirror: Path, limit: int = 600) -> list[np.ndarray]:
    """Distinct real radiographs of the mirror, grey, 512 x 512 (at most ``limit``)."""
    files: list[Path] = []
    for folder in XRAY_SOURCES:
        top = mirror / folder
        if top.is_dir():
            files += sorted(
                p for p in top.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
            )
    seen: set[str] = set()
    images: list[np.ndarray] = []
    for file in files:
        data = file.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_2)
        if image is None or min(image.shape) < 128:
            continue
        images.append(cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_AREA))
        if len(images) >= limit:
            break
    if len(images) < 20:
        raise SystemExit(f"too few radiographs under {mirror} to generate from ({len(images)})")
    return images


_BASES: list[np.ndarray] = []


def _init(images: list[np.ndarray]) -> None:
    cv2.setNumThreads(1)
    _BASES[:] = images


def _warp(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(-12, 12)
    scale = rng.uniform(0.85, 1.25)
    matrix = cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-0.1, 0.1, 2) * SIDE
    return cv2.warpAffine(image, matrix, (SIDE, SIDE), borderMode=cv2.BORDER_REFLECT)


def _elastic(image: np.ndarray, rng: np.random.Generator, amplitude: float = 16.0) -> np.ndarray:
    """A smooth random displacement of every pixel (up to ``amplitude`` px)."""
    coarse = rng.normal(0, 1, (2, 8, 8)).astype(np.float32)
    fields = [cv2.resize(c, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC) for c in coarse]
    fields = [f * (amplitude / max(float(np.abs(f).max()), 1e-6)) for f in fields]
    ys, xs = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    return cv2.remap(
        image, xs + fields[0], ys + fields[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def synthesize(index: int, seed: int = 0) -> np.ndarray:
    """Image ``index``: three different bases, each warped, blended with random weights,
    elastically deformed, unevenly exposed, gamma-corrected."""
    rng = np.random.default_rng([seed, index])
    chosen = rng.choice(len(_BASES), 3, replace=False)
    weights = rng.dirichlet([2.0, 2.0, 2.0])
    blend = sum(
        w * _warp(_BASES[k], rng).astype(np.float32) for w, k in zip(weights, chosen, strict=True)
    )
    blend = _elastic(np.asarray(blend, np.float32), rng)
    field = cv2.GaussianBlur(rng.normal(0, 1, (SIDE, SIDE)).astype(np.float32), (0, 0), 40)
    field *= 30 / max(float(np.abs(field).max()), 1e-6)
    image = np.clip(blend + field + rng.normal(0, 3, blend.shape), 0, 255) / 255.0
    image = image ** rng.uniform(0.8, 1.25)
    return (image * 255).astype(np.uint8)


def _write_one(job: tuple[int, str, int]) -> int:
    index, folder, seed = job
    split = "test" if index % 5 == 0 else "train"
    target = Path(folder) / "Covid19-dataset" / split / CLASSES[index % 3] / f"gen{index:07d}.jpg"
    ok, data = cv2.imencode(".jpg", synthesize(index, seed), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode image {index}")
    target.write_bytes(data.tobytes())
    return len(data)


def inputs_key(n: int, images: list[np.ndarray], seed: int = 0) -> dict[str, Any]:
    """What the generated images depend on: N, the seed, the generator's code and the bases."""
    digest = hashlib.sha256()
    for image in images:
        digest.update(image.tobytes())
    code = hashlib.sha256(
        "".join(inspect.getsource(fn) for fn in (_warp, _elastic, synthesize, _write_one)).encode()
    )
    return {"n": n, "seed": seed, "bases": digest.hexdigest(), "code": code.hexdigest()}


def generated(
    n: int, folder: Path, images: list[np.ndarray], workers: int, seed: int = 0
) -> tuple[Path, int, float]:
    """The mirror of N generated images in ``folder`` (made once, then reused while
    :func:`inputs_key` is unchanged): its path, its bytes and the seconds generation took."""
    mirror, marker = folder / f"mirror-{n}", folder / f"mirror-{n}.json"
    key = inputs_key(n, images, seed)
    if marker.is_file() and mirror.is_dir():
        saved = json.loads(marker.read_text())
        if saved["key"] == key:
            log(f"n={n}: reusing the generated images in {mirror}")
            return mirror, int(saved["bytes"]), float(saved["seconds"])
    shutil.rmtree(mirror, ignore_errors=True)
    marker.unlink(missing_ok=True)
    start = time.perf_counter()
    size = generate(n, mirror, images, workers, seed)
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps({"key": key, "bytes": size, "seconds": seconds}))
    return mirror, size, seconds


def generate(n: int, mirror: Path, images: list[np.ndarray], workers: int, seed: int = 0) -> int:
    """N images in the ``covid19-image-dataset`` layout under ``mirror``; their bytes."""
    top = mirror / "covid19-image-dataset"
    for split in ("train", "test"):
        for cls in CLASSES:
            (top / "Covid19-dataset" / split / cls).mkdir(parents=True, exist_ok=True)
    jobs = [(i, str(top), seed) for i in range(n)]
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(images,)) as pool:
        return sum(pool.map(_write_one, jobs, chunksize=64))


# ---------------------------------------------------------------- one build (child process)


STAGES = [
    ("build", "_ingest", "ingest"),
    ("build", "_select", "select"),
    ("xray", "process_records", "process"),
    ("xray", "deduplicate", "dedup"),
    ("xray", "_leak_free_splits", "split"),
    ("xray", "_write", "write (all)"),
    ("xray", "write_packed", "write: pack"),
    ("audit", "audit_dataset", "write: audit"),
    ("datasheet", "write_datasheet", "write: datasheet"),
]
"""The stages timed (``build_xray.stage_timer``'s wrapping, with the packing on its own)."""


def _worker_peak() -> float:
    """A Dask worker's peak resident size in KiB (VmHWM; self-contained: runs on the worker)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1])
    return float("nan")


def child(mirror: Path, work: Path, engine: str, workers: int, size: int) -> dict[str, Any]:
    """One build in this process; its figures as a dict."""
    sys.path.insert(0, str(Path(__file__).parent))
    from covid19_images.assemble.build import build
    from covid19_images.process.executor import LocalExecutor

    baseline = peak_rss_kib()
    with ExitStack() as stack:
        if engine == "dask":
            from covid19_images.process.dask_engine import DaskExecutor

            executor: Any = stack.enter_context(
                DaskExecutor(
                    workers=workers,
                    progress=False,
                    cluster_options={"dashboard_address": None},
                )
            )
            executor.start()
        else:
            executor = LocalExecutor(workers=workers, progress=False)
        with stage_timer(STAGES) as stages:
            start = time.perf_counter()
            result = build(
                "xray-covid",
                out=work / "out",
                mirror=mirror,
                root=work / "root",
                sources=["covid19-image-dataset"],
                size=size,
                dicom=False,
                fetch=False,
                executor=executor,
                progress=False,
            )
            seconds = time.perf_counter() - start
        if engine == "dask":
            worker_peaks = sorted(v / 1024 for v in executor.client.run(_worker_peak).values())
        else:
            children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            worker_peaks = [children / 1024] if workers > 1 else []
    manifest = result.path / "manifest.parquet"
    dedup = result.dedup
    images = len(result.manifest)
    return {
        "engine": engine,
        "workers": workers,
        "seconds": seconds,
        "images_kept": images,
        "copy_pairs": 0 if dedup is None else len(dedup.pairs),
        "images_per_s": None,
        "stages": stages,
        "client_peak_mib": peak_rss_kib() / 1024,
        "client_peak_above_start_mib": (peak_rss_kib() - baseline) / 1024,
        "worker_peaks_mib": worker_peaks,
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
    }


def run_child(mirror: Path, work: Path, engine: str, workers: int, size: int) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        engine,
        "--mirror",
        str(mirror),
        "--work",
        str(work),
        "--workers",
        str(workers),
        "--size",
        str(size),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {engine} build failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


# ---------------------------------------------------------------- disk


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def pilot(images: list[np.ndarray], workers: int, size: int, parent: Path) -> dict[str, float]:
    """Bytes per image of inputs, cache and dataset, from a build of 64 generated images."""
    with tempfile.TemporaryDirectory(prefix="scale-pilot-", dir=parent) as tmp:
        mirror, work = Path(tmp) / "mirror", Path(tmp) / "work"
        generate(64, mirror, images, workers)
        run_child(mirror, work, "local", workers, size)
        return {
            "input": du(mirror) / 64,
            "cache": du(work / "root") / 64,
            "dataset": du(work / "out") / 64,
        }


# ---------------------------------------------------------------- main


def measure(n: int, args: argparse.Namespace, images: list[np.ndarray]) -> dict[str, Any]:
    engines = ["local", "dask"] if args.engine == "both" else [args.engine]
    per = pilot(images, args.workers, args.size, args.parent)
    # one input copy, and per engine a cache and a dataset (each deleted after its build)
    need = 1.2 * n * (per["input"] + per["cache"] + per["dataset"])
    free = shutil.disk_usage(args.parent).free
    log(
        f"n={n}: this run needs about {need / 2**30:.1f} GiB of disk under {args.parent} "
        f"({free / 2**30:.1f} GiB free)"
    )
    if need > free:
        raise SystemExit(f"not enough disk for n={n}: {need / 2**30:.1f} GiB needed")
    row: dict[str, Any] = {"n": n, "disk_announced_gib": need / 2**30, "builds": []}
    folder = Path(tempfile.mkdtemp(prefix=f"scale-{n}-", dir=args.parent))
    try:
        mirror, row["input_bytes"], row["generate_seconds"] = generated(
            n, args.inputs or folder, images, os.cpu_count() or 1
        )
        if args.generate_only:
            return row
        peak_disk = 0
        for engine in engines:
            work = folder / f"work-{engine}"
            log(f"n={n}: building with the {engine} engine")
            figures = run_child(mirror, work, engine, args.workers, args.size)
            figures["images_per_s"] = n / figures["seconds"]
            peak_disk = max(peak_disk, du(folder) + (du(mirror) if args.inputs else 0))
            if not args.keep:
                shutil.rmtree(work)
            row["builds"].append(figures)
            log(f"  {figures['seconds']:.1f} s, {figures['images_per_s']:.1f} images/s")
        row["disk_used_gib"] = peak_disk / 2**30
        shas = {b["manifest_sha256"] for b in row["builds"]}
        row["engines_agree"] = len(shas) == 1
    finally:
        if args.keep:
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return row


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| N | engine | images/s | total (s) | ingest | process | dedup | split | write "
        "(pack) | client peak MiB | worker peak MiB | kept | copy pairs | disk GiB (announced) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for b in row["builds"]:
            s = b["stages"]
            workers = ", ".join(f"{w:.0f}" for w in b["worker_peaks_mib"]) or "-"
            lines.append(
                f"| {row['n']:,} | {b['engine']} | {b['images_per_s']:.1f} | "
                f"{b['seconds']:.1f} | {s.get('ingest', 0):.1f} | {s.get('process', 0):.1f} | "
                f"{s.get('dedup', 0):.1f} | {s.get('split', 0):.1f} | "
                f"{s.get('write (all)', 0):.1f} ({s.get('write: pack', 0):.1f}) | "
                f"{b['client_peak_mib']:.0f} | {workers} | {b['images_kept']:,} | "
                f"{b['copy_pairs']} | {row['disk_used_gib']:.2f} "
                f"({row['disk_announced_gib']:.2f}) |"
            )
    agree = all(r["engines_agree"] for r in rows)
    lines.append("")
    lines.append(f"Manifests of the engines identical at every N: {'yes' if agree else 'NO'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="images (repeatable)")
    parser.add_argument("--engine", choices=["local", "dask", "both"], default="both")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--mirror", type=Path, default=MIRROR)
    parser.add_argument("--parent", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--inputs",
        type=Path,
        help="keep the generated images in this folder and reuse them in later runs "
        "(never deleted by the script)",
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="generate the images (into --inputs) only"
    )
    parser.add_argument("--child", choices=["local", "dask"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = child(args.mirror, args.work, args.child, args.workers, args.size)
        print(json.dumps(figures))
        return
    sizes = args.n or [1000, 10000]
    if args.generate_only and not args.inputs:
        parser.error("--generate-only needs --inputs (where the images are kept)")
    log(f"reading the bases from {args.mirror}")
    images = bases(args.mirror)
    log(f"{len(images)} distinct radiographs as bases")
    rows = [measure(n, args, images) for n in sizes]
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "bases": len(images),
        "workers": args.workers,
        "size": args.size,
        "rows": rows,
    }
    if args.generate_only:
        for row in rows:
            log(f"n={row['n']}: {row['input_bytes'] / 2**30:.2f} GiB of images in {args.inputs}")
        return
    print(json.dumps(result, indent=1) if args.json else table(rows))


if __name__ == "__main__":
    main()
