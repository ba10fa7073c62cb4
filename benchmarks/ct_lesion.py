"""Per-volume test Dice of a 2-D and a 3-D U-Net on ``ct-lesion-seg`` built from the generated
MedSeg and Zenodo layouts of ``tests/ct_lesion_layouts.py`` (a script, not a test).

The mirror holds no CT volume with a lesion mask, so the figures come from the generated
layouts: 12 volumes of 40 x 40 x 36 voxels (7 train, 2 val, 3 test), noise with one brighter
sphere as the lesion. Both runs use the options of ``tests/training/test_ct_lesion_training.py``
(``--epochs`` and ``--steps`` change them), on the CPU with one torch thread by default, and are
scored per volume on the lesion label (Dice, IoU, HD95 in mm). A planted sphere is an easy
target: the figures show that the two paths train and are scored the same way, not what either
model does on real CT.

Run from the repository root (needs ``pip install -e '.[dev]'``)::

    python benchmarks/ct_lesion.py            # a table
    python benchmarks/ct_lesion.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="steps per epoch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    sys.path.insert(0, str(REPO))
    from tests.ct_lesion_layouts import SHAPE, write_layouts

    from covid19_images.assemble.build import build
    from covid19_images.process.executor import LocalExecutor
    from covid19_images.training import TrainConfig, train

    torch.set_num_threads(args.threads)
    configs = {
        "unet (2-D, slices)": TrainConfig(
            "unet", epochs=args.epochs, size=32, batch_size=16, lr=3e-3, augment="none"
        ),
        "unet3d (3-D, volumes)": TrainConfig(
            "unet3d", epochs=args.epochs, size=32, batch_size=2, lr=3e-3, augment="light"
        ),
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = build(
            "ct-lesion-seg",
            out=work / "out",
            mirror=write_layouts(work / "mirror", seed=args.seed),
            root=work / "root",
            size=SHAPE[0],
            fetch=False,
            executor=LocalExecutor(workers=1, progress=False),
            progress=False,
        )
        for name, config in configs.items():
            options = {"seed": args.seed, "steps": args.steps, "device": args.device}
            config = TrainConfig.from_dict({**config.to_dict(), **options})
            began = time.perf_counter()
            run = train(dataset.path, config, out=work / "runs", n_boot=200)
            seconds = time.perf_counter() - began
            metrics = json.loads((run.path / "metrics.json").read_text())
            test = run.predictions().query("split == 'test'")
            dice = next(
                r
                for r in metrics["volume"]
                if r["source"] == "all" and r["metric"] == "dice_lesion"
            )
            results[name] = {
                "per_volume_dice": [round(float(d), 4) for d in test["dice_lesion"]],
                "mean_dice": round(float(dice["value"]), 4),
                "ci95": [round(float(dice["low"]), 4), round(float(dice["high"]), 4)],
                "mean_hd95_mm": round(float(test["hd95_lesion"].mean()), 3),
                "seconds": round(seconds, 1),
            }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("| model | test volumes' Dice | mean [95% CI, patients] | HD95 (mm) | seconds |")
    print("|---|---|---|---:|---:|")
    for name, r in results.items():
        each = ", ".join(f"{d:.3f}" for d in r["per_volume_dice"])
        low, high = r["ci95"]
        print(
            f"| {name} | {each} | {r['mean_dice']:.3f} [{low:.3f}, {high:.3f}] | "
            f"{r['mean_hd95_mm']:.2f} | {r['seconds']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
