"""Leave-one-source-out: train on every source but one, test on that one, for each source.

A model that does well on its own test split but poorly on a source it never saw has learnt
something about its sources (their scanners, markers, populations), not only the disease. Each
held-out source's images that share a patient or a copy with another source's are left out of
training (see :func:`covid19_images.training.loop._linked_to`).

Example:
    >>> config = TrainConfig("resnet18")
    >>> summary = leave_one_source_out("datasets/xray-covid", config)  # doctest: +SKIP
    >>> summary.name  # doctest: +SKIP
    'loso.md'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from covid19_images import RESEARCH_USE_NOTICE
from covid19_images.atomic import json_safe, write_json, write_text
from covid19_images.training.config import NotTrainableError, TrainConfig, TrainError
from covid19_images.training.data import read_manifest
from covid19_images.training.loop import default_name, train
from covid19_images.training.run import load_run

MIN_IMAGES = 10
"""A source with fewer images than this is not held out on its own (too few to score)."""


def leave_one_source_out(
    dataset: Path | str,
    config: TrainConfig,
    *,
    out: Path | str = "runs",
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    n_boot: int = 1000,
) -> Path:
    """Train one run per source held out, under ``<out>/<name>/``, and write a summary.

    Returns:
        The summary ``loso.md`` (beside ``loso.json``).
    """
    from covid19_images.loaders.api import resolve_dataset
    from covid19_images.loaders.packed import LoadError

    try:
        folder = resolve_dataset(dataset)
    except LoadError as exc:
        raise TrainError(str(exc)) from None
    counts: dict[str, int] = {
        str(s): int(n) for s, n in read_manifest(folder)["source"].value_counts().items()
    }
    held = sorted(s for s, n in counts.items() if n >= MIN_IMAGES)
    if len(held) < 2:
        raise TrainError(f"{folder} has fewer than two sources of {MIN_IMAGES}+ images")
    base = Path(out) / (name or f"{default_name(folder, config)}-loso")
    rows: list[dict[str, Any]] = []
    for source in held:
        one = TrainConfig.from_dict({**config.to_dict(), "leave_out": source})
        run_dir = base / source
        done = (run_dir / "metrics.json").is_file() and _complete(run_dir)
        if done and not overwrite:  # a rerun keeps the runs it finished
            if log is not None:
                log(f"{source}: kept from a previous run ({run_dir})")
            rows.append({"source": source, "images": counts[source], **_read_metrics(run_dir)})
            continue
        if log is not None:
            log(f"holding out {source} ({counts[source]} images)")
        resume = (run_dir / "config.json").is_file() and not overwrite
        try:
            run = train(
                folder,
                one,
                out=base,
                name=source,
                resume=resume,
                overwrite=overwrite,
                progress=progress,
                log=log,
                n_boot=n_boot,
            )
        except NotTrainableError as exc:  # e.g. one class left to train on: a row, not a stop
            rows.append({"source": source, "images": counts[source], "note": str(exc)})
            continue
        rows.append({"source": source, "images": counts[source], **_read_metrics(run.path)})
    frame = pd.DataFrame(rows)
    write_json(
        base / "loso.json", {"dataset": str(folder), "model": config.model, "rows": json_safe(rows)}
    )
    lines = [
        f"> **{RESEARCH_USE_NOTICE}**",
        "",
        f"# Leave-one-source-out: {config.model} on {folder.name}",
        "",
        "Each row is a run trained on every other source and tested on all images of this one.",
        "AUROC is one class against the rest; a class absent from the held-out source has none.",
        "",
        *_markdown(frame),
        "",
    ]
    write_text(base / "loso.md", "\n".join(lines))
    return base / "loso.md"


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    """AUROC per class and balanced accuracy of one held-out run, from its metrics.json."""
    import json

    from covid19_images.evaluation.report import summary_row

    data = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return summary_row(data)


def _complete(run_dir: Path) -> bool:
    try:
        return load_run(run_dir).complete
    except TrainError:
        return False


def _markdown(frame: pd.DataFrame) -> list[str]:
    """A markdown table; numbers to 3 decimals, missing values as "n/a"."""

    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "n/a"
        return f"{value:.3f}" if isinstance(value, float) else str(value).replace("|", "\\|")

    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return lines
