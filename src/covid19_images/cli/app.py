"""The ``covid19-images`` command line.

Every error a user can cause ends in one message and a non-zero exit code (2 for an unknown
source or a bad option, 1 otherwise), never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from covid19_images import RESEARCH_USE_NOTICE, __version__
from covid19_images.catalog import load_catalog
from covid19_images.cli.render import entry_json, render_catalog, render_info
from covid19_images.errors import Covid19ImagesError
from covid19_images.fetch import fetch_source, locate
from covid19_images.fetch.store import HOME_ENV, MIRROR_ENV, RECEIPT

P = ParamSpec("P")
R = TypeVar("R")

out = Console()
err = Console(stderr=True)

app = typer.Typer(
    name="covid19-images",
    help=(
        "Trustworthy, ready-to-train COVID-19 chest X-ray and CT datasets from the public "
        f"collections.\n\n{RESEARCH_USE_NOTICE}"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root",
        envvar=HOME_ENV,
        help="Data root (raw/, downloads/); default: the user cache folder.",
        show_default=False,
    ),
]
MirrorOption = Annotated[
    Path | None,
    typer.Option(
        "--mirror",
        envvar=MIRROR_ENV,
        help="Read-only folder of upstream folders, used in place and never written to.",
        show_default=False,
    ),
]


def _handled(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the package's own errors into one clear message and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except Covid19ImagesError as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"covid19-images {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Trustworthy, ready-to-train COVID-19 chest X-ray and CT datasets (research use only)."""


@app.command("catalog")
@_handled
def catalog_command(
    modality: Annotated[
        Literal["xray", "ct"] | None, typer.Option(help="Only sources of this modality.")
    ] = None,
    task: Annotated[
        Literal["classification", "segmentation", "localization"] | None,
        typer.Option(help="Only sources labelled for this task."),
    ] = None,
    access: Annotated[
        Literal["auto", "manual", "registration"] | None,
        typer.Option(help="auto: downloaded for you; manual/registration: you download."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every known source: modality, tasks, access, licence and counts."""
    entries = load_catalog().filter(modality=modality, task=task, access=access)
    if as_json:
        _print_json([entry_json(e) for e in entries])
        return
    out.print(render_catalog(entries, width=out.width))
    out.print("Details and how to get each source: covid19-images info SOURCE", highlight=False)
    out.print(f"[dim]{RESEARCH_USE_NOTICE}[/]", highlight=False)


@app.command("info")
@_handled
def info_command(
    source: Annotated[str, typer.Argument(help="Source id, alias or name.")],
    root: RootOption = None,
    mirror: MirrorOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Everything known about one source, including how to get its files."""
    entry = load_catalog().get(source)
    located = locate(entry, root=root, mirror=mirror)
    if as_json:
        data = entry_json(entry)
        data["local"] = (
            {"path": str(located.path), "origin": located.origin} if located is not None else None
        )
        _print_json(data)
        return
    out.print(render_info(entry, located))
    out.print(f"[dim]{RESEARCH_USE_NOTICE}[/]", highlight=False)


@app.command("fetch")
@_handled
def fetch_command(
    sources: Annotated[list[str], typer.Argument(help="Source ids, aliases or names.")],
    root: RootOption = None,
    mirror: MirrorOption = None,
    from_path: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A folder or archive you downloaded; checked against the source's layout.",
            show_default=False,
        ),
    ] = None,
    copy: Annotated[
        bool, typer.Option(help="Copy a --from folder into the data root instead of using it.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Download again even if complete.")] = False,
    retries: Annotated[int, typer.Option(min=0, help="Retries per file.")] = 3,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for a server.")] = 60.0,
) -> None:
    """Get sources' raw files: download and verify, check a manual download, or use a mirror."""
    catalog = load_catalog()
    entries = [catalog.get(s) for s in sources]  # every id checked before any work starts
    if from_path is not None and len(entries) != 1:
        err.print("[bold red]error:[/] --from takes exactly one source")
        raise typer.Exit(2)
    failed = 0
    for entry in entries:
        try:
            with _download_progress() as progress:
                result = fetch_source(
                    entry,
                    root=root,
                    mirror=mirror,
                    from_path=from_path,
                    copy=copy,
                    force=force,
                    retries=retries,
                    timeout=timeout,
                    progress=progress,
                )
        except Covid19ImagesError as exc:
            if len(entries) == 1:
                raise
            failed += 1
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            continue
        out.print(f"[green]{entry.id}[/]: {result.action} → {result.path}", highlight=False)
        for name in result.unverified:
            err.print(
                f"[yellow]note:[/] upstream publishes no checksum for {name}; the sha256 of "
                f"this download is recorded in {result.path / RECEIPT}",
                highlight=False,
            )
    if failed:
        raise typer.Exit(1)


@contextmanager
def _download_progress() -> Iterator[Callable[[str, int, int | None], None]]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(name: str, done: int, total: int | None) -> None:
        if name not in tasks:
            tasks[name] = progress.add_task(name, total=total)
        progress.update(tasks[name], completed=done, total=total)

    with progress:
        yield update


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def main() -> None:
    """Entry point of the ``covid19-images`` command."""
    app()
