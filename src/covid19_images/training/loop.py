"""Train a registry model on a built dataset and write its run folder (research use only).

The loop is the usual one, made of library pieces: a :func:`covid19_images.models.create`
model, AdamW with a cosine schedule, cross-entropy weighted by inverse class frequency, AMP on
CUDA, the best weights kept by the validation metric (macro one-vs-rest AUROC; the validation
loss where val holds a single class) and early stopping. On a CPU the same seed gives the same
numbers: the weights, the batch order and the augmentation draws all come from it.

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

import numpy as np
import pandas as pd

from covid19_images import RESEARCH_USE_NOTICE, __version__
from covid19_images.atomic import write_json, write_with
from covid19_images.training.config import NotTrainableError, TrainConfig, TrainError
from covid19_images.training.data import (
    Part,
    dataset_facts,
    in_order,
    iterate,
    open_part,
    predict_batches,
    prepare,
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
    from covid19_images.models import create
    from covid19_images.models.registry import XRV_PREFIX, available, get_spec, task_of
    from covid19_images.training import segmentation as seg

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
    task = facts["task"]
    if task not in ("classification", "segmentation"):
        raise TrainError(
            f"{folder.name} is a {task} dataset; train takes classification and segmentation "
            "datasets (the models and metrics of the other tasks are in covid19_images.models "
            "and covid19_images.evaluation; their training is not part of train yet)"
        )
    if task_of(config.model) != task:
        raise TrainError(
            f"{config.model} is a {task_of(config.model)} model and {folder.name} a {task} "
            f"dataset: choose one of {', '.join(available(task))}"
        )
    if facts["naive"] and log is not None:
        log(
            f"warning: {folder.name} is a NAIVE dataset (split by image, copies kept): its "
            "test metrics are inflated by leakage; for comparison only"
        )
    min_size = get_spec(config.model).min_size if task == "classification" else 32
    run_dir = Path(out) / (name or default_name(folder, config))
    # Everything that can refuse the run is checked before the run folder is touched.
    if resume and overwrite:
        raise TrainError("--resume continues a run and --overwrite replaces it: choose one")
    state, record = _saved(run_dir, config, facts) if resume else (None, None)
    replace = False if resume else _make_way(run_dir, overwrite)
    device = resolve_device(config.device)
    parts = _parts(folder, config)
    classes = facts["classes"]
    _check_parts(parts, classes, segmentation=task == "segmentation")
    outputs = len(classes)
    label_names: list[str] = []
    if task == "segmentation":
        label_names = seg.mask_labels(_lock(folder), seg.label_count(folder))
        outputs = len(label_names)
    torch.manual_seed(config.seed)
    model = create(config.model, outputs, in_chans=1, pretrained=config.pretrained).to(device)
    if record is None:
        record = {
            "run_version": RUN_VERSION,
            "tool": f"covid19-images {__version__}",
            "notice": RESEARCH_USE_NOTICE,
            "train": config.to_dict(),
            "dataset": facts,
            "classes": classes,
            "task": task,
            "outputs": outputs,
            **({"mask_labels": label_names} if label_names else {}),
            "size": max(config.size or facts["size"], min_size),
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
        if replace:
            shutil.rmtree(run_dir)
        (run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    record["train"] = config.to_dict()
    record["complete"] = False
    write_json(run_dir / CONFIG, record)
    size = int(record["size"])

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    weights = (
        _class_weights(parts["train"].labels, len(classes))
        if config.balance == "class-weights" and task == "classification"
        else None
    )
    criterion: torch.nn.Module = torch.nn.CrossEntropyLoss(
        weight=None if weights is None else weights.to(device)
    )
    eval_criterion: torch.nn.Module = torch.nn.CrossEntropyLoss()
    if task == "segmentation":
        criterion = eval_criterion = seg.criterion()

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

    mean, std = float(record["normalize"]["mean"]), float(record["normalize"]["std"])
    stopped = "epochs"
    for epoch in range(start, config.epochs):
        if config.patience and wait >= config.patience:
            stopped = "early"
            break
        began = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        batches = iterate(
            parts["train"],
            config.batch_size,
            epoch,
            shuffle=True,
            seed=config.seed,
            steps=config.steps,
            workers=config.workers,
        )
        steps = min(
            len(parts["train"].batches(config.batch_size, epoch, shuffle=True, seed=config.seed)),
            config.steps or 10**9,
        )
        from covid19_images.progress import track

        for images, labels in track(batches, steps, f"epoch {epoch + 1}/{config.epochs}", progress):
            x = prepare(images, size, mean, std, device)
            y = seg.targets(labels, size, device) if task == "segmentation" else labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss = criterion(model(x), y)
            if not torch.isfinite(loss):
                raise TrainError(
                    f"the training loss became {loss.item()} at epoch {epoch + 1}: lower --lr"
                )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.item()) * len(y)
            seen += len(y)
        lr = float(optimizer.param_groups[0]["lr"])
        scheduler.step()
        if task == "segmentation":
            predicted, truth, val_loss = seg.predict(
                model,
                parts["val"],
                size=size,
                mean=mean,
                std=std,
                device=device,
                batch_size=2 * config.batch_size,
                loss=eval_criterion,
            )
            metric, metric_name = seg.mean_dice(predicted, truth), "dice"
        else:
            probs, val_loss = _predict(
                model, parts["val"], size, mean, std, device, eval_criterion, config.batch_size
            )
            metric, metric_name = _val_metric(parts["val"].labels, probs, val_loss, len(classes))
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
    if task == "segmentation":
        predictions = _segmentation_predictions(
            run_dir, model, parts, label_names, size, mean, std, device, config.batch_size
        )
    else:
        predictions = _classification_predictions(
            model, parts, classes, size, mean, std, device, eval_criterion, config.batch_size
        )
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
    differs = config.differences(saved.train_config, ignore=("epochs", "workers", "device"))
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


def _parts(folder: Path, config: TrainConfig) -> dict[str, Part]:
    """Train, val and test rows; with ``leave_out``, that source is the test set."""
    aug = config.augment
    if config.leave_out is None:
        return {
            "train": open_part(folder, "train", augment=aug, seed=config.seed),
            "val": open_part(folder, "val"),
            "test": open_part(folder, "test"),
        }
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


def _lock(folder: Path) -> dict[str, Any]:
    """The dataset's ``lock.json`` (empty where it has none or it cannot be read)."""
    import json

    try:
        data = json.loads((folder / "lock.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _classification_predictions(
    model: torch.nn.Module,
    parts: dict[str, Part],
    classes: list[str],
    size: int,
    mean: float,
    std: float,
    device: torch.device,
    criterion: torch.nn.Module,
    batch_size: int,
) -> pd.DataFrame:
    """One row per val and test image: its facts and ``prob_<class>`` per class."""
    frames = []
    for split in ("val", "test"):
        probs, _ = _predict(model, parts[split], size, mean, std, device, criterion, batch_size)
        frame = parts[split].facts.drop(columns=["label"]).assign(split=split)
        for k, cls in enumerate(classes):
            frame[f"prob_{cls}"] = probs[:, k] if len(probs) else np.zeros(0, dtype=np.float32)
        frames.append(frame)
    predictions = pd.concat(frames, ignore_index=True)
    columns = ["uid", "split", "source", "patient_id", "class"]
    columns += ["slice"] if "slice" in predictions else []
    return predictions[columns + [f"prob_{c}" for c in classes]]


def _segmentation_predictions(
    run_dir: Path,
    model: torch.nn.Module,
    parts: dict[str, Part],
    labels: list[str],
    size: int,
    mean: float,
    std: float,
    device: torch.device,
    batch_size: int,
) -> pd.DataFrame:
    """One row per val and test image with its Dice, IoU and HD95; the predicted label maps
    go to ``predictions/``."""
    from covid19_images.training import segmentation as seg

    frames = []
    for split in ("val", "test"):
        predicted, truth, _ = seg.predict(
            model,
            parts[split],
            size=size,
            mean=mean,
            std=std,
            device=device,
            batch_size=2 * batch_size,
        )
        seg.save_masks(run_dir, predicted, parts[split])
        frames.append(seg.scores(predicted, truth, parts[split], labels).assign(split=split))
    return pd.concat(frames, ignore_index=True)


def _check_parts(parts: dict[str, Part], classes: list[str], *, segmentation: bool = False) -> None:
    if len(parts["train"]) < 2:
        raise NotTrainableError("the training split has fewer than 2 images: nothing to train on")
    present = sorted({classes[i] for i in parts["train"].labels})
    if len(present) < 2 and not segmentation:
        raise NotTrainableError(f"the training split holds one class only ({present[0]})")
    for name in ("val", "test"):
        if len(parts[name]) == 0:
            raise NotTrainableError(
                f"the {name} split is empty: rebuild with more data or other ratios"
            )


def _class_weights(labels: np.ndarray, n: int) -> torch.Tensor:
    """Inverse class frequency, scaled so a balanced set gets weight 1 for every class."""
    import torch

    counts = np.bincount(labels, minlength=n).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _predict(
    model: torch.nn.Module,
    part: Part,
    size: int,
    mean: float,
    std: float,
    device: torch.device,
    criterion: torch.nn.Module,
    batch_size: int,
) -> tuple[np.ndarray, float]:
    """Softmax probabilities of every row of ``part`` and the mean loss on them."""
    classes = int(part.facts["label"].max()) + 1 if len(part) else 0
    return predict_batches(
        model,
        in_order(part, 2 * batch_size),
        size=size,
        mean=mean,
        std=std,
        device=device,
        classes=classes,
        criterion=criterion,
    )


def _val_metric(labels: np.ndarray, probs: np.ndarray, loss: float, n: int) -> tuple[float, str]:
    """Macro one-vs-rest AUROC over the classes val can score; minus the loss otherwise."""
    from sklearn.metrics import roc_auc_score

    scores = [
        roc_auc_score(labels == k, probs[:, k])
        for k in range(n)
        if 0 < int((labels == k).sum()) < len(labels)
    ]
    if scores:
        return float(np.mean(scores)), "auroc"
    return -loss, "neg_loss"


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
