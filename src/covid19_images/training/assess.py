"""Evaluate a run: on its own test split, or on another built dataset (external validation).

The operating point always comes from the run's own validation predictions: the threshold is
part of the model, fitted once, and every test set only measures it. For another dataset the
images that are copies of, or share a patient with, the run's training images are left out
first and counted (``external_overlap`` in ``metrics.json``).

Example:
    >>> run = load_run("runs/xray-covid-resnet18-s0")  # doctest: +SKIP
    >>> metrics = evaluate_run(run)  # doctest: +SKIP
    >>> metrics = evaluate_run(run, dataset="datasets/covidx", out="external/")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from covid19_images.training.config import TrainError
from covid19_images.training.data import open_part
from covid19_images.training.run import Run, load_run

SECTION_FILES = ("probe.md", "explain/energy.md")
"""Markdown that ``probe --run`` and ``explain`` leave in a run folder, added to its report."""


def evaluate_run(
    run: Run | Path | str,
    *,
    dataset: Path | str | None = None,
    split: str = "test",
    out: Path | str | None = None,
    rule: str = "youden",
    n_boot: int = 1000,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score ``run`` and write ``metrics.json``, ``report.md`` and ``figures/``.

    Args:
        run: A run folder (or :class:`Run`).
        dataset: Another built dataset to evaluate on (default: the run's own).
        split: The split scored (``test`` by default; ``val`` scores the data the threshold
            was chosen on, and the report says so).
        out: Where the files go (default: the run folder; for another dataset,
            ``<run>/external/<dataset name>/``).
        rule: The operating-point rule applied to the validation predictions (``youden`` or
            ``sensitivity:<target>``).
        n_boot: Bootstrap resamples (of patients) per confidence interval.
        seed: Seed of the bootstrap.
        device: Where the model runs when predictions must be computed.

    Returns:
        The metrics written to ``metrics.json``.
    """
    from covid19_images.training.tasks import get_task

    run = run if isinstance(run, Run) else load_run(run)
    if not run.complete:
        raise TrainError(f"{run.path} did not finish training: resume it with `train --resume`")
    return get_task(run.task).evaluate(
        run,
        dataset=dataset,
        split=split,
        out=out,
        rule=rule,
        n_boot=n_boot,
        seed=seed,
        device=device,
    )


def evaluate_classification(
    run: Run,
    *,
    dataset: Path | str | None = None,
    split: str = "test",
    out: Path | str | None = None,
    rule: str = "youden",
    n_boot: int = 1000,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """:func:`evaluate_run` of a classification run: AUROC, the operating point chosen on
    val, calibration and the per-source and per-patient tables
    (:func:`covid19_images.evaluation.report.evaluate_predictions`)."""
    from covid19_images.evaluation.report import evaluate_predictions

    own = run.predictions()
    val = own[own["split"] == "val"]
    overlap = None
    target = evaluation_folder(run, dataset=dataset, split=split, out=out)
    other = _other_dataset(run, dataset)
    if other is None:
        scored = own[own["split"] == split] if split in ("val", "test") else None
        if scored is None or scored.empty:
            scored = _predict_split(run, run.dataset, split, drop=set(), device=device)
        where = run.config["dataset"]["recipe"]
    else:
        from covid19_images.evaluation.external import external_overlap

        check_classes(run, other)
        # Validation chose the checkpoint and the threshold: its images count as seen too.
        found = external_overlap(run.dataset, other, splits=("train", "val"))
        # Count what is left out of the split scored, not of the whole other dataset.
        in_split = set(open_part(other, split).facts["uid"])
        copies = [u for u in found.copies if u in in_split]
        patients = [u for u in found.same_patient if u in in_split]
        overlap = {
            "copies": len(copies),
            "same_patient": len(patients),
            "left_out": len(copies) + len(patients),
        }
        scored = _predict_split(run, other, split, drop=set(copies + patients), device=device)
        where = f"{other.name} (external)"
    sections = report_sections(run) if target == run.path else []
    config = run.train_config
    facts = {
        "model": run.model_name,
        "trained on": run.config["dataset"]["recipe"],
        "evaluated on": f"{where}, split {split}",
        "dataset lock sha256": run.config["dataset"].get("lock_sha256") or "none",
        "size": f"{run.size} px",
        "epochs run": run.config.get("epochs_run"),
        "augment": config.augment,
        "seed": config.seed,
        "left out (leave-one-source-out)": config.leave_out or "none",
    }
    if run.config["dataset"].get("naive"):
        facts["WARNING"] = "trained on a NAIVE dataset (split by image, not deduplicated)"
    # A patient whose images carry different classes gets the most severe: normal first,
    # covid19 last (the recipe's target), any other finding between.
    severity = sorted(run.classes, key=lambda c: (c != "normal") + 2 * (c == "covid19"))
    return evaluate_predictions(
        scored.assign(split=split),
        classes=run.classes,
        out=target,
        split=split,
        val=val,
        title=f"{run.model_name} on {where}",
        facts=facts,
        sections=sections,
        rule=rule,
        n_boot=n_boot,
        seed=seed,
        external_overlap=overlap,
        severity=severity,
    )


def evaluation_folder(
    run: Run,
    *,
    dataset: Path | str | None = None,
    split: str = "test",
    out: Path | str | None = None,
) -> Path:
    """Where :func:`evaluate_run` writes: ``out``; else the run folder for its own test split,
    ``<run>/eval-<split>/`` for another of its splits, and ``<run>/external/<dataset name>/``
    for another dataset (so the run's own report is never replaced by another evaluation)."""
    if out is not None:
        return Path(out)
    other = _other_dataset(run, dataset)
    if other is not None:
        return run.path / "external" / other.name
    return run.path if split == "test" else run.path / f"eval-{split}"


def refuse_external(run: Run, dataset: Path | str | None) -> None:
    """Refuse another dataset than the run's own, for a task whose external evaluation is not
    available yet (:class:`TrainError`, one message).

    Example:
        >>> refuse_external(run, None)  # doctest: +SKIP
    """
    if _other_dataset(run, dataset) is not None:
        raise TrainError(
            f"external evaluation of a {run.task} run is not available yet: evaluate its own "
            "val or test split"
        )


def _other_dataset(run: Run, dataset: Path | str | None) -> Path | None:
    """The dataset folder ``dataset`` names (a folder or a recipe name), or None where it is
    the run's own."""
    if dataset is None:
        return None
    from covid19_images.loaders.api import resolve_dataset
    from covid19_images.loaders.packed import LoadError

    try:
        folder = resolve_dataset(dataset)
    except LoadError as exc:
        raise TrainError(str(exc)) from None
    return None if _same(folder, run.dataset) else folder


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def check_classes(run: Run, other: Path) -> None:
    """Refuse a dataset whose classes differ from the ones the run predicts."""
    from covid19_images.training.data import dataset_facts

    facts = dataset_facts(other)
    if facts["task"] != "classification":
        raise TrainError(f"{other} is a {facts['task']} dataset: the run classifies images")
    theirs = facts["classes"]
    if theirs != run.classes:
        raise TrainError(
            f"{other} has classes {', '.join(theirs)}; the run predicts "
            f"{', '.join(run.classes)}: evaluate on a dataset built with the same classes "
            "(build it with --class to merge labels)"
        )


def _predict_split(
    run: Run, folder: Path, split: str, *, drop: set[str], device: str
) -> pd.DataFrame:
    """Prediction rows of ``split`` of ``folder`` (rows of uids in ``drop`` left out)."""
    from covid19_images.training.data import in_order, predict_batches, resolve_device

    part = open_part(folder, split, drop=drop)
    probs, _ = predict_batches(
        run.model(device=device),
        in_order(part, 64),
        size=run.size,
        mean=run.mean,
        std=run.std,
        device=resolve_device(device),
        classes=len(run.classes),
    )
    frame = part.facts.drop(columns=["label"]).assign(split=split)
    for k, name in enumerate(run.classes):
        frame[f"prob_{name}"] = probs[:, k]
    return frame


def report_sections(run: Run) -> list[str]:
    """The markdown sections ``probe --run`` and ``explain`` left in the run folder."""
    return [
        (run.path / name).read_text(encoding="utf-8")
        for name in SECTION_FILES
        if (run.path / name).is_file()
    ]


def refresh_report(run: Run) -> None:
    """Render the run's ``report.md`` again from its ``metrics.json`` with the current
    sections (after ``probe --run`` or ``explain`` wrote theirs); no metric is recomputed."""
    import json

    from covid19_images.atomic import write_text
    from covid19_images.evaluation.report import render_report

    file = run.path / "metrics.json"
    if not file.is_file():
        return  # evaluate writes the report, with the sections, when it runs
    metrics = json.loads(file.read_text(encoding="utf-8"))
    write_text(run.path / "report.md", render_report(metrics, sections=report_sections(run)))


def evaluate_segmentation(
    run: Run,
    *,
    dataset: Path | str | None,
    split: str,
    out: Path | str | None,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Dice, IoU and HD95 of a segmentation run's ``split`` (val or test), per scored row and
    per patient with patient-bootstrap intervals, overall and per source.

    A row is an image (X-ray) or a CT volume (the ``volumes`` task, and 2-D runs on CT slices,
    whose slices are scored as stacked volumes): ``config.json``'s ``scoring`` says which, and
    the unit of HD95 (``metrics.json`` keeps the table under that name: ``image`` or
    ``volume``, then ``patient``).
    """
    from covid19_images import RESEARCH_USE_NOTICE
    from covid19_images.atomic import json_safe, write_json, write_text
    from covid19_images.evaluation.segmentation import summarize_segmentation
    from covid19_images.evaluation.summary import bootstrap_note

    refuse_external(run, dataset)
    frame = run.predictions()
    rows = frame[frame["split"] == split]
    if rows.empty:
        raise TrainError(f"{run.path} has no predictions for split {split!r} (val and test only)")
    scoring = run.config.get("scoring") or {}
    per = str(scoring.get("per", "image"))
    hd_unit = str(scoring.get("hd95", "pixels at the packed size"))
    maps = str(scoring.get("maps", "predictions/<uid>.png"))
    target = evaluation_folder(run, dataset=dataset, split=split, out=out)
    metrics: dict[str, Any] = {
        "version": 1,
        "task": "segmentation",
        "title": f"{run.model_name} on {run.config['dataset']['recipe']}",
        "split": split,
        "labels": run.config.get("mask_labels"),
        "unit": per,
        "hd95_unit": hd_unit,
        "bootstrap": {"n": n_boot, "seed": seed, "level": 0.95, "unit": "patient"},
    }
    where = f"{run.size} px" if run.task != "volumes" else f"{run.size}-voxel patches"
    lines = [
        f"> {RESEARCH_USE_NOTICE}",
        "",
        f"# {metrics['title']}",
        "",
        f"Segmentation, split `{split}`: {len(rows)} {per}s, model `{run.model_name}` at "
        f"{where}, {run.config.get('epochs_run')} epochs. Per {per} Dice, IoU and HD95 "
        f"({hd_unit}) by MONAI; label 0 (background) is not scored; a {per} where both masks "
        f"are empty has Dice 1 and no HD95. {bootstrap_note(n_boot, per)}",
        "",
    ]
    for unit in (per, "patient"):
        table = summarize_segmentation(
            rows, unit="patient" if unit == "patient" else "image", n_boot=n_boot, seed=seed
        )
        metrics[unit] = json_safe(table.to_dict("records"))
        lines += [f"## Per {unit}", "", "| source | metric | mean (95% CI) | n | defined |"]
        lines.append("|---|---|---|---:|---:|")
        for r in table.to_dict("records"):
            value = "n/a" if pd.isna(r["value"]) else f"{r['value']:.3f}"
            if not pd.isna(r.get("low")) and not pd.isna(r.get("high")):
                value += f" [{r['low']:.3f}, {r['high']:.3f}]"
            lines.append(f"| {r['source']} | {r['metric']} | {value} | {r['n']} | {r['defined']} |")
        lines.append("")
    lines += [f"Predicted label maps: `{maps}`.", ""]
    if (run.path / "figures" / "overlays.png").is_file() and target == run.path:
        lines += ["![test images: truth green, prediction red](figures/overlays.png)", ""]
    write_json(target / "metrics.json", metrics)
    write_text(target / "report.md", "\n".join(lines))
    return metrics
