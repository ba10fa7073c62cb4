"""Benchmark of loading a built dataset into normalised float batches (a script, not a test).

In one run, on ``xray-covid`` built from ``../shared/sources`` (or ``--dataset DIR``), each
loader delivers 224 x 224 float batches of 64 through the ordinary ``DataLoader`` interface on
one core (one torch thread, no worker processes), and the script reports images per second:

- ``ours``: ``covid19_images.load(..., framework="torch")``, the packed memory-mapped path;
- ``imagefolder``: torchvision's ``ImageFolder`` over the same dataset's ``train/<class>/*.png``
  (grey, ``ToTensor``, ``Normalize``);
- ``txv``: the ``torchxrayvision`` package's own ``COVID19_Dataset`` over the original ieee8023
  files of ``../shared/sources`` (the rows whose file is present), with its ``XRayCenterCrop``
  and ``XRayResizer(224)``, as its documentation uses it;
- ``tf``: our ``tf.data`` path (``framework="tf"``), batches converted to NumPy, one TensorFlow
  thread;
- ``floor``: a bare read of the same packed array into normalised float32 batches with NumPy.

Each loader runs in a fresh interpreter of its own, so its peak memory (Linux VmHWM, and the
private anonymous memory RssAnon at the end) is its own. "Flat in dataset size" is measured by
running ``ours`` on the train split and on a copy of it tiled four times.

Augmentation (``--augment-only`` runs this part alone): in one process with one torch thread,
``CovidImageDataset(...).loader(64, shuffle=True)`` over the train split with ``augment`` set
to ``none``, ``light`` and ``standard``, and the previous augmented path as the in-run
reference (``grid_sample``: the float batch through ``affine_grid``/``grid_sample``, then
contrast and brightness, then normalisation, i.e. :func:`apply_draws` on the CPU). The
configurations alternate over ``--rounds`` rounds of ``--round-seconds`` each; the report gives
the median images/s of each, and the medians of the per-round ratios plain / ``standard``
(the target: about 6 or less) and new / old (the speed-up).

Run from the repository root (needs ``pip install -e '.[dev]'`` and ``torchxrayvision``)::

    python benchmarks/loaders.py                   # a table
    python benchmarks/loaders.py --json            # one JSON object
    python benchmarks/loaders.py --augment-only    # the augmentation table alone (torch only)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _memory import status_kib  # benchmarks/, run as scripts

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = REPO.parent / "shared" / "sources"
BATCH = 64
LOADERS = ("ours", "ours_collate", "imagefolder", "txv", "tf", "floor")


def _status(field: str) -> float | None:
    """A ``/proc/self/status`` field in MiB, or None where there is none."""
    kib = status_kib(field)
    return None if math.isnan(kib) else kib / 1024


def _measure(loader: Any, min_images: int, max_seconds: float) -> dict[str, Any]:
    """Iterate ``loader`` (epochs as needed) until ``min_images`` or ``max_seconds``."""
    seen, start, first = 0, time.perf_counter(), None
    while seen < min_images and time.perf_counter() - start < max_seconds:
        for batch in loader:
            images = batch["img"] if isinstance(batch, dict) else batch[0]
            shape = tuple(images.shape)
            assert (224, 224) in (shape[-2:], shape[1:3]) and str(images.dtype).endswith("float32")
            seen += int(images.shape[0])
            first = first or time.perf_counter() - start
            if seen >= min_images or time.perf_counter() - start > max_seconds:
                break
    elapsed = time.perf_counter() - start
    return {"images": seen, "seconds": elapsed, "img_s": seen / elapsed if elapsed else None}


def child(name: str, dataset: Path, mirror: Path, min_images: int, max_seconds: float) -> None:
    """Run one loader in this process and print its figures as JSON."""
    baseline = _status("VmRSS")
    if name == "tf":  # in a process without torch
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import covid19_images as ci

        batches = ci.load(dataset, "train", framework="tf", batch_size=BATCH, shuffle=True)

        class Numpy:
            def __iter__(self) -> Any:
                for x, y in batches:
                    yield x.numpy(), y.numpy()

        result = _measure(Numpy(), min_images, max_seconds)
        result.update(peak_mib=_status("VmHWM"), anon_mib=_status("RssAnon"), baseline_mib=baseline)
        print(json.dumps(result))
        return
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    if name == "ours":  # the dataset's own DataLoader: whole batches, no collate copy
        import covid19_images as ci

        ds = ci.load(dataset, "train", framework="torch")
        result = _measure(ds.loader(BATCH, shuffle=True), min_images, max_seconds)
    elif name == "ours_collate":  # a plain DataLoader(ds, batch_size=64): per-sample collate
        import covid19_images as ci

        ds = ci.load(dataset, "train", framework="torch")
        result = _measure(DataLoader(ds, batch_size=BATCH, shuffle=True), min_images, max_seconds)
    elif name == "imagefolder":
        from torchvision import datasets, transforms

        meta = json.loads((dataset / "packed.json").read_text())
        tf = transforms.Compose(
            [
                transforms.Grayscale(1),
                transforms.ToTensor(),
                transforms.Normalize([meta["mean"]], [meta["std"]]),
            ]
        )
        ds = datasets.ImageFolder(str(dataset / "train"), transform=tf)
        result = _measure(DataLoader(ds, batch_size=BATCH, shuffle=True), min_images, max_seconds)
    elif name == "txv":
        import torchvision
        import torchxrayvision as xrv

        root = mirror / "ieee8023-covid-chestxray"
        tf = torchvision.transforms.Compose(
            [xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(224)]
        )
        ds = xrv.datasets.COVID19_Dataset(
            imgpath=str(root / "images"), csvpath=str(root / "metadata.csv"), transform=tf
        )
        present = ds.csv["filename"].map(lambda f: (root / "images" / str(f)).is_file()).to_numpy()
        ds.csv = ds.csv[present].reset_index(drop=True)
        ds.labels = ds.labels[present]
        result = _measure(DataLoader(ds, batch_size=BATCH, shuffle=True), min_images, max_seconds)
        result["files"] = int(present.sum())
    elif name == "floor":
        meta = json.loads((dataset / "packed.json").read_text())
        images = np.load(dataset / meta["splits"]["train"]["file"], mmap_mode="r")
        rng = np.random.default_rng(0)
        mean, std = meta["mean"], meta["std"]

        def batches() -> Any:
            order = rng.permutation(len(images))
            for i in range(0, len(order), BATCH):
                x = np.take(images, np.sort(order[i : i + BATCH]), axis=0)
                yield ((x.astype(np.float32) / 255.0 - mean) / std,)

        class Epochs:
            def __iter__(self) -> Any:
                return batches()

        result = _measure(Epochs(), min_images, max_seconds)
    else:
        raise SystemExit(f"no loader {name}")
    result.update(peak_mib=_status("VmHWM"), anon_mib=_status("RssAnon"), baseline_mib=baseline)
    print(json.dumps(result))


AUGMENT = ("none", "light", "standard", "light_grid_sample", "standard_grid_sample")


def augment_child(dataset: Path, rounds: int, round_seconds: float) -> None:
    """The augmentation configurations, alternating in this process; print JSON figures."""
    import statistics

    import torch

    from covid19_images.loaders.pytorch import CovidImageDataset, apply_draws

    torch.set_num_threads(1)

    class GridSample(CovidImageDataset):
        """The previous augmented path: the float batch through ``grid_sample``."""

        def _batch(self, order: np.ndarray, epoch: int) -> tuple[Any, Any]:
            split = self._split()
            batch = torch.from_numpy(np.take(split.images, order, axis=0)).unsqueeze(1).float()
            batch, _ = apply_draws(batch.div_(255.0), self.draws(order, epoch))
            batch = batch.mul_(255.0).sub_(self.mean * 255.0).mul_(1.0 / (255.0 * self.std))
            return batch, None

    loaders = {}
    for name in AUGMENT:
        preset, _, old = name.partition("_")
        kind = GridSample if old else CovidImageDataset
        loaders[name] = kind(dataset, "train", augment=preset).loader(BATCH, shuffle=True)
    rates: dict[str, list[float]] = {name: [] for name in AUGMENT}
    for _ in range(rounds):
        for name, loader in loaders.items():
            rate = _measure(loader, 10**9, round_seconds)["img_s"]
            rates[name].append(float(rate or 0.0))

    def ratios(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(rates[a], rates[b], strict=True) if y]

    print(
        json.dumps(
            {
                "img_s": {name: statistics.median(r) for name, r in rates.items()},
                "plain_over": {name: statistics.median(ratios("none", name)) for name in AUGMENT},
                "speedup_light": statistics.median(ratios("light", "light_grid_sample")),
                "speedup_standard": statistics.median(ratios("standard", "standard_grid_sample")),
                "rounds": rates,
                "round_seconds": round_seconds,
                "images": len(loaders["none"].dataset),  # type: ignore[arg-type]
            }
        )
    )


def run_augment(dataset: Path, rounds: int, round_seconds: float) -> Any:
    """:func:`augment_child` in a fresh interpreter."""
    command = [
        sys.executable,
        __file__,
        "--child",
        "augment",
        "--dataset",
        str(dataset),
        "--rounds",
        str(rounds),
        "--round-seconds",
        str(round_seconds),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_augment(figures: dict[str, Any]) -> None:
    """The augmentation figures as a Markdown table."""
    if "img_s" not in figures:
        print(f"augmentation: {figures.get('error', 'failed')}")
        return
    rates = figures["img_s"]
    print("| augment | path | images/s | plain / it | new / old |")
    print("|---|---|---|---|---|")
    print(f"| none | plain read | {rates['none']:,.0f} | 1 | - |")
    plain_over = figures["plain_over"]
    for preset in ("light", "standard"):
        old, new = f"{preset}_grid_sample", preset
        print(
            f"| {preset} | OpenCV uint8 | {rates[new]:,.0f} | {plain_over[new]:.1f} | "
            f"{figures[f'speedup_{preset}']:.1f} |"
        )
        print(
            f"| {preset} | grid_sample (before) | {rates[old]:,.0f} | {plain_over[old]:.1f} | 1 |"
        )


def run_child(name: str, dataset: Path, mirror: Path, min_images: int, max_s: float) -> Any:
    command = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--dataset",
        str(dataset),
        "--mirror",
        str(mirror),
        "--min-images",
        str(min_images),
        "--max-seconds",
        str(max_s),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def tiled(dataset: Path, times: int, work: Path) -> Path:
    """A copy of ``dataset`` whose train split is its own ``times`` over: the packed array, its
    index, and the PNG folders (hard links under new names), so every loader reads more."""
    import os

    import pandas as pd

    target = work / f"tiled-{times}"
    shutil.copytree(dataset, target, ignore=shutil.ignore_patterns("train", "val", "test"))
    for png in sorted((dataset / "train").glob("*/*.png")):
        folder = target / "train" / png.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(times):
            os.link(png, folder / f"{png.stem}-{k}.png")
    meta = json.loads((target / "packed.json").read_text())
    name = meta["splits"]["train"]["file"]
    array = np.load(dataset / name, mmap_mode="r")
    out = np.lib.format.open_memmap(
        target / name, mode="w+", dtype=np.uint8, shape=(len(array) * times, *array.shape[1:])
    )
    for k in range(times):
        out[k * len(array) : (k + 1) * len(array)] = array
    out.flush()
    del out
    meta["splits"]["train"]["count"] = len(array) * times
    (target / "packed.json").write_text(json.dumps(meta))
    index = pd.read_parquet(target / "packed.parquet")
    train = index[index["split"] == "train"]
    copies = [train.assign(index=train["index"] + k * len(train)) for k in range(times)]
    pd.concat([*copies, index[index["split"] != "train"]]).to_parquet(target / "packed.parquet")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, help="a built dataset (default: build one)")
    parser.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR)
    parser.add_argument("--min-images", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--tile", type=int, default=20, help="train split repeated N times (default 20)"
    )
    parser.add_argument("--child", choices=(*LOADERS, "augment"))
    parser.add_argument("--augment-only", action="store_true", help="the augmentation part alone")
    parser.add_argument("--rounds", type=int, default=5, help="augmentation rounds (default 5)")
    parser.add_argument(
        "--round-seconds", type=float, default=2.0, help="per configuration and round (default 2)"
    )
    args = parser.parse_args(argv)
    if args.child == "augment":
        augment_child(args.dataset, args.rounds, args.round_seconds)
        return 0
    if args.child:
        child(args.child, args.dataset, args.mirror, args.min_images, args.max_seconds)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = args.dataset
        if dataset is None:
            from covid19_images.assemble.build import build

            print("building xray-covid from the mirror ...", file=sys.stderr)
            dataset = build(
                "xray-covid",
                out=work / "out",
                mirror=args.mirror,
                root=work / "root",
                progress=False,
            ).path
        augment = run_augment(dataset, args.rounds, args.round_seconds)
        if args.augment_only:
            if args.json:
                print(json.dumps({"augment": augment, "command": " ".join(sys.argv)}, indent=2))
            else:
                print_augment(augment)
            return 0
        big = tiled(dataset, args.tile, work)
        runs = {
            name: run_child(name, big, args.mirror, args.min_images, args.max_seconds)
            for name in LOADERS
        }
        small = tiled(dataset, max(1, args.tile // 4), work)
        runs["ours_quarter"] = run_child(
            "ours", small, args.mirror, args.min_images, args.max_seconds
        )
        train_size = {
            "tiled": json.loads((big / "packed.json").read_text())["splits"]["train"]["count"],
            "quarter": json.loads((small / "packed.json").read_text())["splits"]["train"]["count"],
        }

    def rate(name: str) -> float | None:
        run = runs.get(name)
        return run.get("img_s") if isinstance(run, dict) else None

    ours = rate("ours")
    report: dict[str, Any] = {
        "ours_img_s": ours,
        "imagefolder_img_s": rate("imagefolder"),
        "txv_img_s": rate("txv"),
        "tf_img_s": rate("tf"),
        "floor_img_s": rate("floor"),
        "ratio_vs_imagefolder": ours / rate("imagefolder")
        if ours and rate("imagefolder")
        else None,
        "ratio_vs_txv": ours / rate("txv") if ours and rate("txv") else None,
        "ratio_floor_vs_ours": rate("floor") / ours if ours and rate("floor") else None,
        "ours_collate_img_s": rate("ours_collate"),
        "memory_private_ratio_4x_data": (
            runs["ours"]["anon_mib"] / runs["ours_quarter"]["anon_mib"]
            if runs["ours"] and runs["ours_quarter"] and "anon_mib" in runs["ours_quarter"]
            else None
        ),
        "train_images": train_size,
        "augment": augment,
        "runs": runs,
        "batch": BATCH,
        "threads": 1,
        "command": "python benchmarks/loaders.py --json",
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("| loader | images/s | ratio (ours / it) | peak RSS MiB | private MiB |")
    print("|---|---|---|---|---|")
    for name in (*LOADERS, "ours_quarter"):
        run = runs.get(name)
        if not isinstance(run, dict) or "img_s" not in run:
            print(f"| {name} | - | - | - | - |")
            continue
        ratio = ours / run["img_s"] if ours and run["img_s"] else None
        print(
            f"| {name} | {run['img_s']:,.0f} | {ratio:.2f} | {run['peak_mib']:.0f} | "
            f"{run['anon_mib']:.0f} |"
        )
    print()
    print_augment(augment)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
