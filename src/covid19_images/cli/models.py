"""The model commands: ``train``, ``evaluate``, ``explain`` and ``probe`` (research use only).

They import torch only when they run, so ``covid19-images --help`` stays fast and works
without the ``[torch]`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from covid19_images import RESEARCH_USE_NOTICE
from covid19_images.cli.app import MirrorOption, RootOption, _Command, _handled, app, err, out
from covid19_images.models.registry import TORCH_INSTALL, available

RunArgument = Annotated[
    Path, typer.Argument(metavar="RUN", help="A run folder written by `train`.", show_default=False)
]
DeviceOption = Annotated[
    str, typer.Option(metavar="DEVICE", help="auto (CUDA when present), cpu or cuda.")
]


def _require_torch() -> None:
    import importlib.util

    for module in ("torch", "timm", "safetensors", "matplotlib", "pytorch_grad_cam"):
        if importlib.util.find_spec(module) is None:
            err.print(
                f"[bold red]error:[/] the model commands need {module}: {TORCH_INSTALL}",
                highlight=False,
            )
            raise typer.Exit(2)


def _device(choice: str) -> str:
    """The device a command runs on; CUDA without a device is one message, not a traceback."""
    from covid19_images.training.data import resolve_device

    return str(resolve_device(choice))


@app.command("train", cls=_Command)
@_handled
def train_command(
    dataset: Annotated[
        Path,
        typer.Argument(
            metavar="DATASET", help="A built dataset folder (or a recipe built in ./datasets)."
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            metavar="NAME",
            help=f"Classification (and, with a linear head, severity): {', '.join(available())}; "
            f"segmentation: {', '.join(available('segmentation'))}; "
            f"detection: {', '.join(available('detection'))}.",
        ),
    ] = "resnet18",
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Folder that receives the run folder.")
    ] = Path("runs"),
    name: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Run folder name (default: DATASET-MODEL-sSEED)."),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, metavar="N", help="Most epochs.")] = 10,
    size: Annotated[
        int | None,
        typer.Option(
            min=16,
            metavar="PX",
            help="Input side (default: the dataset's packed size).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=2, metavar="N", help="Images per step.")] = 32,
    lr: Annotated[float, typer.Option(min=0.0, metavar="LR", help="Peak learning rate.")] = 1e-3,
    augment: Annotated[
        str, typer.Option(metavar="PRESET", help="none, light or standard.")
    ] = "light",
    seed: Annotated[int, typer.Option(min=0, metavar="N", help="Seed of everything random.")] = 0,
    device: DeviceOption = "auto",
    patience: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="Stop after N epochs without a better validation metric (AUROC, Dice, mAP, "
            "MAE); 0: never.",
        ),
    ] = 5,
    balance: Annotated[
        str, typer.Option(metavar="HOW", help="class-weights (inverse frequency) or none.")
    ] = "class-weights",
    pretrained: Annotated[
        str,
        typer.Option(
            metavar="WEIGHTS",
            help="no, yes (the library's weights; needs internet), a checkpoint file, or "
            "xrv:<weights>.",
        ),
    ] = "no",
    workers: Annotated[int, typer.Option(min=0, metavar="N", help="Loader processes.")] = 0,
    leave_out: Annotated[
        str | None,
        typer.Option(
            "--leave-out",
            metavar="SOURCE",
            help="Hold out one source: train on the others, test on it.",
        ),
    ] = None,
    loso: Annotated[
        bool,
        typer.Option("--loso", help="Leave-one-source-out: one run per source, and a summary."),
    ] = False,
    steps: Annotated[
        int | None,
        typer.Option(
            min=1, metavar="N", help="Most steps per epoch (quick checks).", show_default=False
        ),
    ] = None,
    n_boot: Annotated[
        int,
        typer.Option("--n-boot", min=0, metavar="N", help="Bootstrap resamples of the evaluation."),
    ] = 1000,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a stopped run.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a run folder of that name.")
    ] = False,
) -> None:
    """Train a model on a built dataset; write its run folder and evaluate it."""
    _require_torch()
    from covid19_images.training import TrainConfig, train
    from covid19_images.training.loso import leave_one_source_out

    if loso and leave_out:
        raise ValueError("--loso holds out every source in turn; drop --leave-out")
    weights: bool | str = {"no": False, "yes": True}.get(pretrained, pretrained)
    config = TrainConfig(
        model=model,
        epochs=epochs,
        size=size,
        batch_size=batch_size,
        lr=lr,
        augment=augment,
        seed=seed,
        device=device,
        patience=patience,
        balance=balance,
        pretrained=weights,
        workers=workers,
        leave_out=leave_out,
        steps=steps,
    )
    log = lambda line: err.print(escape(line), highlight=False)  # noqa: E731
    if loso:
        summary = leave_one_source_out(
            dataset,
            config,
            out=out_dir,
            name=name,
            overwrite=overwrite,
            progress=err.is_terminal,
            log=log,
            n_boot=n_boot,
        )
        out.print(f"[green]{escape(str(summary))}[/]", highlight=False)
        out.print(f"[dim]{RESEARCH_USE_NOTICE}[/]", highlight=False)
        return
    run = train(
        dataset,
        config,
        out=out_dir,
        name=name,
        resume=resume,
        overwrite=overwrite,
        progress=err.is_terminal,
        log=log,
        n_boot=n_boot,
    )
    _print_headline(run.path / "metrics.json")
    out.print(f"[green]{escape(str(run.path))}[/] (report.md)", highlight=False)
    out.print(f"[dim]{RESEARCH_USE_NOTICE}[/]", highlight=False)


@app.command("evaluate", cls=_Command)
@_handled
def evaluate_command(
    run: RunArgument,
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            metavar="DIR",
            help="Evaluate on another built dataset (external validation).",
            show_default=False,
        ),
    ] = None,
    split: Annotated[str, typer.Option(metavar="SPLIT", help="The split scored.")] = "test",
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Where the files go (default: the run folder; for --dataset, RUN/external/NAME).",
            show_default=False,
        ),
    ] = None,
    rule: Annotated[
        str,
        typer.Option(metavar="RULE", help="Operating point on val: youden or sensitivity:0.95."),
    ] = "youden",
    n_boot: Annotated[
        int, typer.Option("--n-boot", min=0, metavar="N", help="Bootstrap resamples.")
    ] = 1000,
    device: DeviceOption = "auto",
) -> None:
    """Evaluate a run: per image and per patient, with patient-bootstrap intervals."""
    _require_torch()
    from covid19_images.training import load_run
    from covid19_images.training.assess import evaluate_run, evaluation_folder

    loaded = load_run(run)
    evaluate_run(
        loaded,
        dataset=dataset,
        split=split,
        out=out_dir,
        rule=rule,
        n_boot=n_boot,
        device=_device(device),
    )
    target = evaluation_folder(loaded, dataset=dataset, split=split, out=out_dir)
    _print_headline(target / "metrics.json")
    out.print(f"[green]{escape(str(target / 'report.md'))}[/]", highlight=False)
    out.print(f"[dim]{RESEARCH_USE_NOTICE}[/]", highlight=False)


def _print_headline(path: Path) -> None:
    """A few lines of ``metrics.json``: the task's headline figures with their intervals."""
    import json

    try:
        metrics: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if metrics.get("task") == "detection":
        cells = [
            _cell(f"{r['class']} {r['metric']}", r)
            for r in metrics.get("summary", [])
            if r.get("source") == "all"
        ]
        out.print(escape("box mAP: " + "; ".join(c for c in cells if c)), highlight=False)
        return
    if metrics.get("task") in ("segmentation", "regression"):
        for unit in ("image", "volume", "patient"):
            if unit in metrics:
                cells = [
                    _cell(str(r["metric"]), r) for r in metrics[unit] if r.get("source") == "all"
                ]
                out.print(
                    escape(f"per {unit}: " + "; ".join(c for c in cells if c)), highlight=False
                )
        return
    from covid19_images.evaluation.report import headline

    for line in headline(metrics):
        out.print(escape(line), highlight=False)


def _cell(label: str, row: dict[str, Any]) -> str:
    """``label value [low, high]`` (the interval where there is one; empty without a value)."""
    if row.get("value") is None:
        return ""
    text = f"{label} {row['value']:.3f}"
    if row.get("low") is not None and row.get("high") is not None:
        text += f" [{row['low']:.3f}, {row['high']:.3f}]"
    return text


@app.command("explain", cls=_Command)
@_handled
def explain_command(
    run: RunArgument,
    images: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="IMAGES",
            help="Uids of the run's dataset or image files (default: --n of --split).",
            show_default=False,
        ),
    ] = None,
    split: Annotated[str, typer.Option(metavar="SPLIT", help="Split to choose from.")] = "test",
    n: Annotated[
        int, typer.Option("--n", min=1, metavar="N", help="Images to choose, across classes.")
    ] = 16,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Where the files go (default: RUN/explain).",
            show_default=False,
        ),
    ] = None,
    root: RootOption = None,
    mirror: MirrorOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Grad-CAM overlays and montages of a run's model; lung-energy shares in its report."""
    _require_torch()
    from covid19_images.explanation.run import explain_run

    result = explain_run(
        run,
        images or (),
        split=split,
        n=n,
        out=out_dir,
        root=root,
        mirror=mirror,
        device=_device(device),
    )
    shares = result.table["lung_energy"].dropna()
    if len(shares):
        out.print(
            f"Grad-CAM energy inside the lungs: mean {shares.mean():.2f} over {len(shares)} "
            f"images with a lung mask (of {len(result.table)})",
            highlight=False,
        )
    out.print(f"[green]{escape(str(result.folder))}[/] ({len(result.table)} images)")
    out.print(f"[dim]{RESEARCH_USE_NOTICE}[/]", highlight=False)


@app.command("probe", cls=_Command)
@_handled
def probe_command(
    dataset: Annotated[
        Path,
        typer.Argument(
            metavar="DATASET", help="A built dataset folder (or a recipe built in ./datasets)."
        ),
    ],
    run: Annotated[
        Path | None,
        typer.Option(
            "--run",
            metavar="RUN",
            help="Also probe a run's model (lungs removed); the section goes in its report.",
            show_default=False,
        ),
    ] = None,
    root: RootOption = None,
    mirror: MirrorOption = None,
    n_boot: Annotated[
        int, typer.Option("--n-boot", min=1, metavar="N", help="Bootstrap resamples.")
    ] = 1000,
    device: DeviceOption = "auto",
) -> None:
    """Measure shortcuts: source predictability, age and sex, a weak model, lungs removed."""
    from covid19_images.loaders.api import resolve_dataset
    from covid19_images.probe import probe, write_probe

    folder = resolve_dataset(dataset)
    if run is None:
        result = probe(folder, n_boot=n_boot, mirror=mirror, root=root)
        write_probe(folder, result, mirror=mirror, root=root)
        where = folder / "datasheet.md"
    else:
        _require_torch()
        from covid19_images.training import load_run
        from covid19_images.training.assess import check_classes, refresh_report

        loaded = load_run(run)
        if loaded.task != "classification":
            raise ValueError(f"{run} is a {loaded.task} run: probe --run takes classification runs")
        check_classes(loaded, folder)
        model = loaded.model(device=_device(device))
        result = probe(
            folder,
            lambda images: loaded.predict(images, model=model, device=_device(device)),
            out=loaded.path,
            run=loaded.path.name,
            classes=loaded.classes,
            mirror=mirror,
            root=root,
            n_boot=n_boot,
        )
        refresh_report(loaded)
        where = loaded.path / "report.md"
    for line in result.summary():
        out.print(f"- {escape(line)}", highlight=False)
    out.print(f"[green]{escape(str(where))}[/] (section Shortcut probes)", highlight=False)
    out.print(f"[dim]{RESEARCH_USE_NOTICE}[/]", highlight=False)
