"""How much the usual notebook recipe inflates the metrics, shown on one model (a script, not a
test; research use only).

In one run, from ``../shared/sources`` (or ``--mirror DIR``):

1. ``build xray-covid`` (honest: deduplicated, split by patient and copy cluster) and
   ``build xray-covid --naive`` (every copy kept, split by image at random), at ``--size``;
2. the same model (``--model``, same seed and options) trained on each;
3. evaluated three ways, each with patient-bootstrap intervals:
   - the honest model on the honest test split;
   - the naive model on its own (leaky) test split: what a notebook would report;
   - the naive model on the honest test split, leaving out the images that are copies of, or
     share a patient with, its training images (``evaluate --dataset``): what it really does
     on images it has not seen.

It prints per-class AUROC and balanced accuracy (per image) for the three, and the inflation:
the naive model's own score minus its score on the honest test split.

Run from the repository root (needs ``pip install -e '.[dev]'``)::

    python benchmarks/honest_vs_naive.py                      # a table
    python benchmarks/honest_vs_naive.py --epochs 12 --json   # one JSON object
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = REPO.parent / "shared" / "sources"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR)
    parser.add_argument("--work", type=Path, help="keep datasets and runs here (default: temp)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        report = run(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="honest-naive-") as tmp:
            report = run(args, Path(tmp))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_table(report)
    return 0


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from covid19_images.assemble.build import build
    from covid19_images.evaluation.report import summary_row
    from covid19_images.training import TrainConfig, train
    from covid19_images.training.assess import evaluate_run

    torch.manual_seed(args.seed)
    folders = {}
    for naive in (False, True):
        result = build(
            "xray-covid",
            out=work / "datasets",
            mirror=args.mirror,
            root=work / "root",
            size=args.size,
            naive=naive,
            fetch=False,
            progress=False,
        )
        folders["naive" if naive else "honest"] = result.path
    config = TrainConfig(
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        patience=0,
    )
    runs = {
        name: train(folder, config, out=work / "runs", overwrite=True, n_boot=args.n_boot)
        for name, folder in folders.items()
    }
    external = work / "runs" / "naive-on-honest"
    evaluate_run(runs["naive"], dataset=folders["honest"], out=external, n_boot=args.n_boot)
    metrics = {
        "honest model, honest test": runs["honest"].path / "metrics.json",
        "naive model, its own test": runs["naive"].path / "metrics.json",
        "naive model, honest test": external / "metrics.json",
    }
    rows = {}
    for label, path in metrics.items():
        data = json.loads(path.read_text(encoding="utf-8"))
        rows[label] = {
            "summary": summary_row(data),
            "auroc": {c: data["image"]["classes"][c]["auroc"] for c in data["classes"]},
            "balanced_accuracy": data["image"]["balanced_accuracy"],
            "external_overlap": data.get("external_overlap"),
        }
    sizes = {
        name: json.loads((folder / "packed.json").read_text())["splits"]
        for name, folder in folders.items()
    }
    return {
        "model": args.model,
        "size": args.size,
        "epochs": args.epochs,
        "seed": args.seed,
        "datasets": sizes,
        "evaluations": rows,
    }


def _fmt(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    low, high = entry.get("low"), entry.get("high")
    ci = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    return f"{entry['value']:.3f}{ci}"


def print_table(report: dict[str, Any]) -> None:
    print(
        f"{report['model']} at {report['size']} px, {report['epochs']} epochs, seed "
        f"{report['seed']}; per image, 95% patient-bootstrap intervals"
    )
    for name, splits in report["datasets"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v['count']}" for k, v in splits.items()))
    evaluations = report["evaluations"]
    classes = list(next(iter(evaluations.values()))["auroc"])
    header = ["evaluation", *(f"AUROC {c}" for c in classes), "balanced acc."]
    print(" | ".join(header))
    for label, row in evaluations.items():
        cells = [label, *(_fmt(row["auroc"][c]) for c in classes), _fmt(row["balanced_accuracy"])]
        print(" | ".join(cells))
        if row["external_overlap"]:
            print(f"    left out as seen in training: {row['external_overlap']}")


if __name__ == "__main__":
    raise SystemExit(main())
