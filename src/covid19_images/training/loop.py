"""Train a registry model on a built dataset and write its run folder (research use only).

The loop is the same for every task (:mod:`covid19_images.training.tasks`): AdamW with a cosine
schedule, AMP on CUDA, the best weights kept by the task's validation metric, early stopping,
``history.csv`` and the curve, and a single-file state per epoch for ``--resume``. The task says
what differs: its model, one batch's loss, the validation metric, the prediction rows and the
evaluation. On a CPU the same seed gives the same numbers: the weights, the batch order and the
augmentation draws all come from it, and a resumed run continues them exactly.

Example:
    >>> config = TrainConfig("resnet18", epochs=3)
    >>> run = train("datasets/xray-covid", config, out="runs")  # doctest: +SKIP
    >>> run.path  # doctest: +SKIP
    PosixPath('runs/xray-covid-resnet18-s0')
"""

from __future__ import annotations

import math
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from covid19_images import RESEARCH_USE_NOTICE, __version__
from covid19_images.atomic import write_json, write_with
from covid19_images.training.config import TrainConfig, TrainError
from covid19_images.training.data import (
    Part,
    dataset_facts,
    open_part,
    read_manifest,
    resolve_device,
)
from covid19_images.training.run import (
    CHECKPOINTS,
    CONFIG,
    HISTORY,
    PREDICTIONS,
    RUN_VERSION,
    WEIGHTS,
    Run,
    load_run,
    load_weights,
    save_weights,
)

if TYPE_CHECKING:
    import torch

    from covid19_images.training.tasks import Task

STATE = "last.state.pt"


def default_name(dataset: Path, config: TrainConfig) -> str:
    """``<dataset>-<model>-s<seed>`` (``-loso-<source>`` when a source is held out).

    Example:
        >>> default_name(Path("datasets/xray-covid"), TrainConfig("resnet18", seed=3))
        'xray-covid-resnet18-s3'
    """
    name = f"{dataset.name}-{config.model}-s{config.seed}"
    return f"{name}-loso-{config.leave_out}" if config.leave_out else name


def train(
    dataset: Path | str,
    config: TrainConfig,
    *,
    out: Path | str = "runs",
    name: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    evaluate: bool = True,
    n_boot: int = 1000,
    log: Callable[[str], None] | None = None,
) -> Run:
    """Train ``config.model`` on ``dataset`` and write ``<out>/<name>/``.

    Args:
        dataset: A built dataset folder (or a recipe name built in ``./datasets``).
        config: The training options.
        out: The folder that receives the run folder.
        name: The run folder's name (default: :func:`default_name`).
        resume: Continue a stopped run from its last checkpoint (same options; ``epochs`` may
            grow).
        overwrite: Replace an existing run folder of that name.
        progress: Show a progress bar per epoch on stderr.
        evaluate: Evaluate the best model on val and test at the end (``metrics.json``,
            ``report.md``).
        n_boot: Bootstrap resamples per confidence interval of that evaluation.
        log: Receives one line per epoch (e.g. ``print``).

    Returns:
        The run folder, read back.

    Raises:
        TrainError: Bad options, an unusable dataset, or a run folder in the way.
    """
    import torch

    from covid19_images.loaders.api import resolve_dataset
    from covid19_images.loaders.packed import LoadError
    from covid19_images.models.registry import XRV_PREFIX, available, task_of
    from covid19_images.progress import track
    from covid19_images.training.tasks import Setting, get_task, task_name

    try:
        folder = resolve_dataset(dataset)
    except LoadError as exc:
        raise TrainError(str(exc)) from None
    if isinstance(config.pretrained, str) and config.pretrained.startswith(XRV_PREFIX):
        raise TrainError(
            "training from TorchXRayVision weights is not supported yet (their model takes "
            "another input scale and is rebuilt differently): use models.create(..., "
            f'pretrained="{config.pretrained}") in your own loop, or --pretrained yes'
        )
    facts = dataset_facts(folder)
    kind = facts["task"]
    task = get_task(task_name(kind, config.model))
    fits = task_of(config.model) == task.model_task or (
        task.model_task == "regression" and task_of(config.model) == "classification"
    )
    if not fits:
        raise TrainError(
            f"{config.model} is a {task_of(config.model)} model and {folder.name} a {kind} "
            f"dataset: choose one of {', '.join(available(task.model_task))}"  # type: ignore[arg-type]
        )
    if facts["naive"] and log is not None:
        log(
            f"warning: {folder.name} is a NAIVE dataset (split by image, copies kept): its "
            "test metrics are inflated by leakage; for comparison only"
        )
    run_dir = Path(out) / (name or default_name(folder, config))
    # Everything that can refuse the run is checked before the run folder is touched.
    if resume and overwrite:
        raise TrainError("--resume continues a run and --overwrite replaces it: choose one")
    state, record = _saved(run_dir, config, facts) if resume else (None, None)
    replace = False if resume else _make_way(run_dir, overwrite)
    device = resolve_device(config.device)
    parts = _parts(folder, config, task)
    classes = facts["classes"]
    task.check(parts, classes)
    outputs, described = task.outputs(folder, facts)
    if record is None:
        record = {
            "run_version": RUN_VERSION,
            "tool": f"covid19-images {__version__}",
            "notice": RESEARCH_USE_NOTICE,
            "train": config.to_dict(),
            "dataset": facts,
            "classes": classes,
            "task": task.name,
            "outputs": outputs,
            **described,
            "size": max(config.size or facts["size"], task.min_size(config.model)),
            "channels": 1,
            "normalize": {"mean": facts["mean"], "std": facts["std"]},
            "selection": {k: len(p) for k, p in parts.items()},
            "environment": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "platform": platform.platform(),
                "device": str(device),
            },
            "command": sys.argv if Path(sys.argv[0]).name == "covid19-images" else None,
        }
    torch.manual_seed(config.seed)
    model = task.model(config, outputs, record).to(device)
    if state is None:
        if replace:
            shutil.rmtree(run_dir)
        (run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    record["train"] = config.to_dict()
    record["complete"] = False
    write_json(run_dir / CONFIG, record)
    setting = Setting(
        size=int(record["size"]),
        mean=float(record["normalize"]["mean"]),
        std=float(record["normalize"]["std"]),
        device=device,
        batch_size=config.batch_size,
    )
    task.setup(parts, config, setting)

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    history: list[dict[str, Any]] = []
    start, best, wait = 0, -math.inf, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        scheduler.T_max = config.epochs
        history = [
            dict(zip(state["history_columns"], row, strict=True)) for row in state["history"]
        ]
        start, best, wait = int(state["epoch"]) + 1, float(state["best"]), int(state["wait"])

    stopped = "epochs"
    for epoch in range(start, config.epochs):
        if config.patience and wait >= config.patience:
            stopped = "early"
            break
        began = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        batches, steps = task.batches(parts["train"], config, epoch)
        for batch in track(batches, steps, f"epoch {epoch + 1}/{config.epochs}", progress):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss, count = task.loss(model, batch, setting)
            if not torch.isfinite(loss):
                raise TrainError(
                    f"the training loss became {loss.item()} at epoch {epoch + 1}: lower --lr"
                )
            scaled: Any = scaler.scale(loss)  # torch's backward is untyped
            scaled.backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.item()) * count
            seen += count
        lr = float(optimizer.param_groups[0]["lr"])
        scheduler.step()
        metric, metric_name, val_loss = task.validate(model, parts["val"], setting)
        improved = metric > best or not history  # the first epoch is the best so far
        if improved:
            best, wait = metric, 0
            save_weights(model, run_dir / CHECKPOINTS / "best.safetensors")
        else:
            wait += 1
        row = {
            "epoch": epoch + 1,
            "train_loss": total / max(seen, 1),
            "val_loss": val_loss,
            "val_metric": metric,
            "val_metric_name": metric_name,
            "lr": lr,
            "seconds": round(time.perf_counter() - began, 3),
            "best": improved,
        }
        history.append(row)
        save_weights(model, run_dir / CHECKPOINTS / "last.safetensors")
        # The state file alone is what --resume reads: weights, optimiser and counters of one
        # epoch in one file, written whole, so they can never come from different epochs.
        _save_state(run_dir, model, epoch, best, wait, optimizer, scheduler, scaler, history)
        _write_history(run_dir, history)
        if log is not None:
            log(
                f"epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f}, "
                f"val loss {val_loss:.4f}, val {metric_name} {metric:.4f}"
                + (" (best)" if improved else "")
            )

    best_file = run_dir / CHECKPOINTS / "best.safetensors"
    write_with(run_dir / WEIGHTS, lambda tmp: shutil.copyfile(best_file, tmp))
    load_weights(model, best_file)
    _write_curve(run_dir, history)
    predictions = task.predictions(run_dir, model, parts, setting, record)
    write_with(run_dir / PREDICTIONS, lambda tmp: predictions.to_parquet(tmp, index=False))
    record["complete"] = True
    record["stopped"] = stopped
    record["epochs_run"] = len(history)
    record["best_val_metric"] = None if not math.isfinite(best) else best
    write_json(run_dir / CONFIG, record)
    run = load_run(run_dir)
    if evaluate:
        from covid19_images.training.assess import evaluate_run

        evaluate_run(run, n_boot=n_boot, device=str(device))
    return run


def _saved(
    run_dir: Path, config: TrainConfig, facts: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The saved training state and ``config.json`` of a run to resume, after checking that
    it was trained with the same options on the same dataset."""
    saved = load_run(run_dir)
    # "saved -> asked", as the dataset lines below read ("before -> now")
    differs = saved.train_config.differences(config, ignore=("epochs", "workers", "device"))
    before = saved.config["dataset"]
    for key in ("path", "lock_sha256"):
        if before.get(key) != facts.get(key):
            differs.append(f"dataset {key}: {before.get(key)} -> {facts.get(key)}")
    if differs:
        raise TrainError(
            f"{run_dir} was trained with other options or data ({'; '.join(differs)}): resume "
            "with the same ones, or train a new run"
        )
    file = run_dir / CHECKPOINTS / STATE
    if not file.is_file():
        raise TrainError(f"{run_dir} has no checkpoint to resume from ({file.name})")
    import torch

    try:
        state: dict[str, Any] = torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise TrainError(f"{file} cannot be read ({str(exc)[:200]})") from None
    if "model" not in state:
        raise TrainError(f"{file} holds no model state: train the run again (--overwrite)")
    return state, saved.config


def _make_way(run_dir: Path, overwrite: bool) -> bool:
    """Refuse an existing run folder; with ``overwrite``, check it is one and say to replace
    it (once every other check has passed)."""
    if not run_dir.exists():
        return False
    if not overwrite:
        raise TrainError(
            f"{run_dir} exists: --resume continues it, --overwrite replaces it, or give "
            "another --name"
        )
    if not (run_dir / CONFIG).is_file() and any(run_dir.iterdir()):
        raise TrainError(f"{run_dir} exists and is not a run folder: not replacing it")
    return True


def _parts(folder: Path, config: TrainConfig, task: Task) -> dict[str, Part]:
    """Train, val and test rows; with ``leave_out``, that source is the test set."""
    aug = config.augment
    if config.leave_out is None:
        return task.parts(folder, config)
    if task.name != "classification":
        raise TrainError("--leave-out is available for classification runs only")
    manifest = read_manifest(folder)
    sources = sorted(manifest["source"].dropna().unique())
    if config.leave_out not in sources:
        raise TrainError(
            f"--leave-out {config.leave_out}: not a source of {folder} "
            f"(its sources: {', '.join(sources)})"
        )
    others = set(sources) - {config.leave_out}
    linked = _linked_to(folder, manifest, config.leave_out)
    test = Part.gather(
        "test",
        [open_part(folder, split, keep={config.leave_out}) for split in ("train", "val", "test")],
    )
    return {
        "train": open_part(
            folder, "train", augment=aug, seed=config.seed, keep=others, drop=linked
        ),
        "val": open_part(folder, "val", keep=others, drop=linked),
        "test": test,
    }


def _linked_to(folder: Path, manifest: pd.DataFrame, source: str) -> set[str]:
    """Uids of other sources' images that share a patient or a copy cluster with ``source``
    (copy pairs from the dataset's ``duplicates.csv`` where both images are in it, chains
    joined)."""
    from covid19_images.assemble.splits import group_ids, merge_groups

    uids = [str(u) for u in manifest["uid"]]
    links: list[tuple[int, int]] = []
    dup = folder / "duplicates.csv"
    if dup.is_file():
        pairs = pd.read_csv(dup, usecols=["uid_a", "uid_b"])
        position = {u: i for i, u in enumerate(uids)}
        links = [
            (position[a], position[b])
            for a, b in zip(pairs["uid_a"], pairs["uid_b"], strict=True)
            if a in position and b in position
        ]
    patients = [None if pd.isna(p) else str(p) for p in manifest["patient_id"]]
    groups = merge_groups(group_ids(uids, patients, [None] * len(uids)), links)
    frame = pd.DataFrame({"uid": uids, "source": manifest["source"], "group": groups})
    held_groups = set(frame.loc[frame["source"] == source, "group"])
    linked = frame[(frame["source"] != source) & frame["group"].isin(held_groups)]
    return set(linked["uid"])


def _save_state(
    run_dir: Path,
    model: torch.nn.Module,
    epoch: int,
    best: float,
    wait: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    history: list[dict[str, Any]],
) -> None:
    import torch

    columns = list(history[0]) if history else []
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": epoch,
        "best": best,
        "wait": wait,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history_columns": columns,
        "history": [[row[c] for c in columns] for row in history],
    }
    write_with(run_dir / CHECKPOINTS / STATE, lambda tmp: torch.save(state, tmp))


def _write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(history)
    write_with(run_dir / HISTORY, lambda tmp: frame.to_csv(tmp, index=False))


def _write_curve(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """``curve.png``: training and validation loss, and the validation metric, per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    frame = pd.DataFrame(history)
    figure = Figure(figsize=(8, 3.2), dpi=100)
    left, right = figure.subplots(1, 2)
    left.plot(frame["epoch"], frame["train_loss"], marker="o", label="train")
    left.plot(frame["epoch"], frame["val_loss"], marker="o", label="val")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    right.plot(frame["epoch"], frame["val_metric"], marker="o", color="tab:green")
    name = str(frame["val_metric_name"].iloc[-1]) if len(frame) else "metric"
    right.set(xlabel="epoch", ylabel=name, title=f"validation {name}")
    figure.tight_layout()
    write_with(run_dir / "curve.png", lambda tmp: figure.savefig(tmp, format="png"))
