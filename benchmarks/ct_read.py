"""Benchmark of reading a DICOM CT series into a HU volume (a script, not a test).

In one run, on the mirror's ``covid-ct-md`` series P001 (148 slices of 512 x 512, JPEG Lossless,
transfer syntax 1.2.840.10008.1.2.4.70), it measures:

1. ours: :func:`covid19_images.process.ct.dicom_series.scan_series` on the folder (headers only)
   then :func:`~covid19_images.process.ct.dicom_series.read_series` on its one group, giving the
   int16 HU array; with the decoder the package picks here (imagecodecs' libjpeg-turbo on two
   threads where imagecodecs is installed), and again with pydicom's decoders only
   (pylibjpeg-libjpeg, one thread), what a machine without imagecodecs gets;
2. the reference: SimpleITK's ``ImageSeriesReader`` (``GetGDCMSeriesFileNames``,
   ``SetFileNames``, ``Execute``) and a NumPy view of the image (``GetArrayViewFromImage``, no
   copy, so the reference is not charged for one);
3. that the arrays are equal voxel for voxel;
4. the peak resident memory of each reader in a fresh interpreter of its own (Linux's VmHWM,
   else ``ru_maxrss``): the whole process, and above the baseline after its imports.

Timings are the best of ``--repeats`` rounds (default 5); the readers alternate within a round,
so they see the same state of the page cache (warm: every round reads the same files).

Run from the repository root::

    python benchmarks/ct_read.py                  # a table
    python benchmarks/ct_read.py --json           # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import os
import platform
import pstats
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _memory import peak_rss_kib, peak_source  # benchmarks/, run as scripts

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = REPO.parent / "shared" / "sources"
SERIES = Path("covid-ct-md/Sample data/COVID-19 subjects/P001")
READERS = ("ours", "ours_pydicom", "simpleitk")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the readers --------------------------------------------------------------------------------


def reader(name: str) -> Callable[[Path], np.ndarray]:
    """A function reading the series folder into a (z, y, x) array, for ``name`` in READERS."""
    if name == "simpleitk":
        import SimpleITK as sitk  # noqa: N813

        def read_sitk(folder: Path) -> np.ndarray:
            series_reader = sitk.ImageSeriesReader()
            series_reader.SetFileNames(series_reader.GetGDCMSeriesFileNames(str(folder)))
            image = series_reader.Execute()
            array = sitk.GetArrayViewFromImage(image)
            array.flags.writeable = False
            read_sitk.image = image  # type: ignore[attr-defined]  # keeps the view's memory alive
            return array

        return read_sitk

    from covid19_images.process.ct import dicom_series

    turbo = None if name == "ours_pydicom" else dicom_series._TURBO

    def read_ours(folder: Path) -> np.ndarray:
        saved, dicom_series._TURBO = dicom_series._TURBO, turbo
        try:
            groups, _ = dicom_series.scan_series(folder)
            return dicom_series.read_series(folder, groups[0]).array
        finally:
            dicom_series._TURBO = saved

    return read_ours


def timed(fn: Callable[[Path], np.ndarray], folder: Path) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    array = fn(folder)
    return time.perf_counter() - start, array


def timings(folder: Path, repeats: int, profile: bool) -> dict[str, Any]:
    """Best and every round's seconds of each reader; whether the arrays are equal."""
    from covid19_images.process.ct import dicom_series

    turbo = dicom_series._TURBO
    readers = {name: reader(name) for name in READERS}
    runs: dict[str, list[float]] = {name: [] for name in READERS}
    arrays: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name in READERS:
            seconds, arrays[name] = timed(readers[name], folder)
            runs[name].append(seconds)
        log("round: " + ", ".join(f"{n} {runs[n][-1]:.3f} s" for n in READERS))
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        readers["ours"](folder)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(20)
    reference = arrays["simpleitk"]
    return {
        "runs": runs,
        "best": {name: min(values) for name, values in runs.items()},
        "equal": {
            name: bool(
                arrays[name].shape == reference.shape
                and np.array_equal(arrays[name], reference.astype(np.int16))
                and reference.min() >= -32768
                and reference.max() <= 32767
            )
            for name in ("ours", "ours_pydicom")
        },
        "shape": list(reference.shape),
        "reference_dtype": str(reference.dtype),
        "ours_decoder": "imagecodecs (libjpeg-turbo), 2 threads" if turbo else "pydicom",
    }


# --- memory -------------------------------------------------------------------------------------


def memory_child(folder: Path, name: str) -> dict[str, Any]:
    """In a fresh interpreter: peak memory of one read of the series by reader ``name``."""
    fn = reader(name)  # the imports
    base_kib = peak_rss_kib()
    array = fn(folder)
    peak_kib = peak_rss_kib()
    return {
        "reader": name,
        "peak_rss_from": peak_source(),
        "baseline_mib": base_kib / 1024,
        "peak_mib": peak_kib / 1024,
        "growth_mib": (peak_kib - base_kib) / 1024,
        "array_mib": array.nbytes / 2**20,
    }


def memory(mirror: Path) -> dict[str, Any]:
    """Each reader once, in its own fresh interpreter (``subprocess``, so exec: a clean peak)."""
    out: dict[str, Any] = {}
    for name in READERS:
        done = subprocess.run(
            [sys.executable, __file__, "--mirror", str(mirror), "--memory-child", name],
            check=True,
            capture_output=True,
            text=True,
        )
        out[name] = json.loads(done.stdout)
        log(f"memory, {name}: peak rss {out[name]['peak_mib']:.1f} MiB")
    return out


# --- report -------------------------------------------------------------------------------------


def print_table(report: dict[str, Any]) -> None:
    best, mem = report["timing"]["best"], report["memory"]
    print(
        f"| reader | best of {report['repeats']} (s) | ratio to SimpleITK | equal "
        "| peak RSS (MiB) | above imports (MiB) |"
    )
    print("|---|---|---|---|---|---|")
    labels = {
        "ours": f"ours: scan_series + read_series ({report['timing']['ours_decoder']})",
        "ours_pydicom": "ours, pydicom decoders only (pylibjpeg-libjpeg)",
        "simpleitk": "SimpleITK ImageSeriesReader",
    }
    for name in READERS:
        equal = "reference" if name == "simpleitk" else str(report["timing"]["equal"][name])
        print(
            f"| {labels[name]} | {best[name]:.3f} | {best[name] / best['simpleitk']:.2f} | "
            f"{equal} | {mem[name]['peak_mib']:.1f} | {mem[name]['growth_mib']:.1f} |"
        )
    print()
    print(
        f"series: {report['series']}, shape {report['timing']['shape']}; rounds (s): "
        + "; ".join(f"{n} {min(v):.3f}-{max(v):.3f}" for n, v in report["timing"]["runs"].items())
    )
    print(f"machine: {report['machine']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR, help="the mirror folder")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the best is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", action="store_true", help="cProfile one read to stderr")
    parser.add_argument("--memory-child", choices=READERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    folder = args.mirror.resolve() / SERIES
    if not folder.is_dir():
        log(f"the series is not there: {folder}")
        return 2
    if args.memory_child:
        print(json.dumps(memory_child(folder, args.memory_child)))
        return 0
    if importlib.util.find_spec("SimpleITK") is None:
        log("SimpleITK (the reference reader) is missing: pip install SimpleITK")
        return 2

    import pydicom
    import SimpleITK as sitk  # noqa: N813

    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/ct_read.py", *(argv or sys.argv[1:])]),
        "series": str(SERIES),
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "pydicom": pydicom.__version__,
            "simpleitk": sitk.Version_VersionString(),
            "imagecodecs": _version("imagecodecs"),
            "pylibjpeg_libjpeg": _version("libjpeg"),
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg()[0],
        },
    }
    report["memory"] = memory(args.mirror.resolve())  # first, while this process is small
    report["timing"] = timings(folder, args.repeats, args.profile)
    report["machine"]["load_average_at_end"] = os.getloadavg()[0]
    best, mem = report["timing"]["best"], report["memory"]
    report.update(
        {
            "ours_s": best["ours"],
            "simpleitk_s": best["simpleitk"],
            "ratio": best["ours"] / best["simpleitk"],
            "equal": report["timing"]["equal"]["ours"],
            "ours_peak_mib": mem["ours"]["peak_mib"],
            "simpleitk_peak_mib": mem["simpleitk"]["peak_mib"],
            "ours_pydicom_s": best["ours_pydicom"],
            "ratio_pydicom": best["ours_pydicom"] / best["simpleitk"],
            "equal_pydicom": report["timing"]["equal"]["ours_pydicom"],
            "ours_pydicom_peak_mib": mem["ours_pydicom"]["peak_mib"],
        }
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


def _version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except (ImportError, AttributeError):
        return None


if __name__ == "__main__":
    sys.exit(main())
