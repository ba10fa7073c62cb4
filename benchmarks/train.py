"""Benchmark of training steps fed by our packed loader and by torchvision's ``ImageFolder``
(a script, not a test).

In one run, on ``xray-covid`` built from ``../shared/sources`` (or ``--dataset DIR``), the same
model (``--model``, one channel, from :func:`covid19_images.models.create`) trains the same
number of steps on the train split twice, alternating rounds:

- ``packed``: ``CovidImageDataset(...).loader(...)``, the memory-mapped packed array, with the
  augmentation preset applied to the batch;
- ``imagefolder``: torchvision's ``ImageFolder`` over the same dataset's ``train/<class>/*.png``
  (decode, grey, ``RandomAffine`` and ``ColorJitter`` at the preset's strengths, ``ToTensor``,
  ``Normalize``), batched by ``DataLoader``'s default collate.

For each it reports images/s over the timed steps and the share of step time spent waiting for
the next batch (the time from the end of one optimiser step to the next batch in hand). Both use
the same number of loader worker processes (``--workers``) and torch threads (``--threads``).

Run from the repository root (needs ``pip install -e '.[dev]'``)::

    python benchmarks/train.py                     # a table
    python benchmarks/train.py --workers 2 --json  # one JSON object
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = REPO.parent / "shared" / "sources"


def build_dataset(work: Path, mirror: Path, size: int) -> Path:
    from covid19_images.assemble.build import build

    result = build(
        "xray-covid",
        out=work / "out",
        mirror=mirror,
        root=work / "root",
        size=size,
        fetch=False,
        progress=False,
    )
    return result.path


def packed_loader(folder: Path, args: argparse.Namespace) -> Iterable[Any]:
    from covid19_images.loaders.pytorch import CovidImageDataset

    dataset = CovidImageDataset(folder, "train", augment=args.augment, seed=0)
    return dataset.loader(args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers)


def imagefolder_loader(folder: Path, args: argparse.Namespace) -> Iterable[Any]:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from covid19_images.loaders.augment import preset
    from covid19_images.loaders.packed import read_meta

    meta = read_meta(folder)
    p = preset(args.augment)
    steps: list[Any] = [transforms.Grayscale(1)]
    if not p.identity:
        steps += [
            transforms.RandomAffine(p.degrees, translate=(p.translate, p.translate), scale=p.scale),
            transforms.ColorJitter(brightness=p.brightness, contrast=p.contrast),
        ]
    steps += [transforms.ToTensor(), transforms.Normalize([meta["mean"]], [meta["std"]])]
    dataset = datasets.ImageFolder(str(folder / "train"), transform=transforms.Compose(steps))
    generator = torch.Generator().manual_seed(0)
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        generator=generator,
    )


def run_steps(loader: Iterable[Any], args: argparse.Namespace) -> dict[str, float]:
    """Train ``args.steps`` timed steps (after ``args.warmup``) and time waiting and compute."""
    import torch

    from covid19_images.models import create

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = create(args.model, 3, in_chans=1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    total = args.warmup + args.steps
    done, images, waited, computing = 0, 0, 0.0, 0.0
    mark = time.perf_counter()
    while done < total:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            got = time.perf_counter()
            loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()  # the step is done, not only queued
            end = time.perf_counter()
            if done >= args.warmup:
                waited += got - mark
                computing += end - got
                images += len(y)
            done += 1
            mark = time.perf_counter()
            if done >= total:
                break
    seconds = waited + computing
    return {"img_s": images / seconds, "wait_share": waited / seconds, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, help="a built dataset (default: build one)")
    parser.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224, help="packed size of the built dataset")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--augment", default="standard")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        folder = args.dataset or build_dataset(Path(tmp), args.mirror, args.size)
        results: dict[str, list[dict[str, float]]] = {"packed": [], "imagefolder": []}
        for _ in range(args.rounds):
            for name, make in (("packed", packed_loader), ("imagefolder", imagefolder_loader)):
                results[name].append(run_steps(make(folder, args), args))
    summary = {
        name: {
            "img_s": statistics.median(r["img_s"] for r in rows),
            "wait_share": statistics.median(r["wait_share"] for r in rows),
        }
        for name, rows in results.items()
    }
    report = {
        "model": args.model,
        "size": args.size,
        "batch_size": args.batch_size,
        "augment": args.augment,
        "device": args.device,
        "workers": args.workers,
        "threads": args.threads,
        "steps": args.steps,
        "rounds": args.rounds,
        "loaders": summary,
        "speedup": summary["packed"]["img_s"] / summary["imagefolder"]["img_s"],
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    print(
        f"{args.model} at {args.size} px on {args.device}, batch {args.batch_size}, augment "
        f"{args.augment}, {args.workers} workers, {args.threads} threads; median of "
        f"{args.rounds} rounds"
    )
    print(f"{'loader':<12} {'images/s':>9} {'waiting':>8}")
    for name, row in summary.items():
        print(f"{name:<12} {row['img_s']:>9.1f} {row['wait_share']:>8.1%}")
    print(f"packed / imagefolder: {report['speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
