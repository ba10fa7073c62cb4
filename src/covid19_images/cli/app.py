"""The ``covid19-images`` command line.

Every error a user can cause ends in one message and a non-zero exit code, never a traceback:
2 for an error (an unknown source or recipe, a bad option, a file or folder the system refuses,
a folder that is not a dataset), 1 for a finding or a failed step (a build that cannot start,
leakage found by ``audit``, a download that failed), 130 when interrupted.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from covid19_images import RESEARCH_USE_NOTICE, __version__
from covid19_images.catalog import load_catalog
from covid19_images.cli.render import entry_json, render_catalog, render_info
from covid19_images.errors import Covid19ImagesError
from covid19_images.fetch import FetchEvent, FetchResult, SourcesReport, fetch_source, locate
from covid19_images.fetch.archive import DEFAULT_MAX_RATIO, parse_size
from covid19_images.fetch.ensure import FETCH_ENV, manual_line
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
    rich_markup_mode=None,  # plain help: readable at 80 columns, no markup eating [brackets]
    context_settings={"help_option_names": ["-h", "--help"]},
)

RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root",
        metavar="DIR",
        envvar=HOME_ENV,
        help="Data root (raw/, downloads/); default: the user cache folder.",
        show_default=False,
    ),
]
MirrorOption = Annotated[
    Path | None,
    typer.Option(
        "--mirror",
        metavar="DIR",
        envvar=MIRROR_ENV,
        help="Read-only folder of upstream folders, used in place and never written to.",
        show_default=False,
    ),
]


class _Command(typer.core.TyperCommand):
    """A command whose arguments show in help by their name alone (``SOURCE...``), without the
    ``<list[str]>`` type Typer adds after it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument) and param.metavar:
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]


def _handled(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the package's own errors into one clear message and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except Covid19ImagesError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # a file system's answer: one line, the path and the reason
            where = f"{escape(str(exc.filename))}: " if exc.filename else ""
            err.print(
                f"[bold red]error:[/] {where}{escape(str(exc.strerror or exc))}", highlight=False
            )
            raise typer.Exit(2) from None
        except ValueError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
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


@app.command("catalog", cls=_Command)
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
    if out.width < 110:
        out.print(
            "tasks: cls classification, seg segmentation, loc localization; "
            "a wider terminal shows names and counts",
            highlight=False,
        )
    out.print("Details and how to get each source: covid19-images info SOURCE", highlight=False)
    out.print(f"[dim]{RESEARCH_USE_NOTICE}[/]", highlight=False)


@app.command("info", cls=_Command)
@_handled
def info_command(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Source id, alias or name.")],
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
    out.print(render_info(entry, located), crop=False)  # long URLs stay whole, to copy
    out.print(f"[dim]{RESEARCH_USE_NOTICE}[/]", highlight=False)


@app.command("fetch", cls=_Command)
@_handled
def fetch_command(
    sources: Annotated[
        list[str], typer.Argument(metavar="SOURCE", help="Source ids, aliases or names.")
    ],
    root: RootOption = None,
    mirror: MirrorOption = None,
    from_path: Annotated[
        Path | None,
        typer.Option(
            "--from",
            metavar="PATH",
            help="A folder or archive you downloaded; checked against the source's layout.",
            show_default=False,
        ),
    ] = None,
    copy: Annotated[
        bool, typer.Option(help="Copy a --from folder into the data root instead of using it.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Download again even if complete.")] = False,
    retries: Annotated[int, typer.Option(min=0, metavar="N", help="Retries per file.")] = 3,
    timeout: Annotated[
        float, typer.Option(min=1, metavar="SECONDS", help="Seconds to wait for a server.")
    ] = 60.0,
    max_extracted_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-extracted-bytes",
            parser=parse_size,
            metavar="SIZE",
            help="Refuse an archive that declares or expands to more than this (e.g. 500GB, "
            "2TiB); default: 10 times the catalog's download size, else 2 TiB.",
            show_default=False,
        ),
    ] = None,
    max_ratio: Annotated[
        float,
        typer.Option(
            "--max-ratio",
            min=1,
            metavar="RATIO",
            help="Refuse an archive, or a member of one, that expands more than this many "
            "times its compressed size (image archives rarely pass 10).",
        ),
    ] = DEFAULT_MAX_RATIO,
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
                    max_extracted_bytes=max_extracted_bytes,
                    max_ratio=max_ratio,
                )
        except Covid19ImagesError as exc:
            if len(entries) == 1:
                raise
            failed += 1
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            continue
        _print_fetched(entry.id, result)
    if failed:
        raise typer.Exit(1)


def _print_fetched(source: str, result: FetchResult) -> None:
    out.print(f"[green]{source}[/]: {result.action} → {escape(str(result.path))}", highlight=False)
    for name in result.unverified:
        err.print(
            f"[yellow]note:[/] upstream publishes no checksum for {name}; the sha256 of "
            f"this download is recorded in {result.path / RECEIPT}",
            highlight=False,
        )


@app.command("build", cls=_Command)
@_handled
def build_command(
    recipe: Annotated[
        str,
        typer.Argument(
            metavar="RECIPE",
            help="Recipe name (xray-covid, xray-binary, covidx, xray-lung-seg, xray-lung-boxes, "
            "xray-severity, ct-covid, ct-binary, ct-lesion-seg) or a recipe .toml.",
        ),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Folder that receives RECIPE/.")
    ] = Path("datasets"),
    root: RootOption = None,
    mirror: MirrorOption = None,
    size: Annotated[
        int, typer.Option(min=16, max=2048, metavar="PX", help="Side of the square images.")
    ] = 224,
    seed: Annotated[
        int | None, typer.Option(min=0, metavar="N", help="Split seed (default: the recipe's).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Worker processes (default: all cores): the local pool, or with --engine dask "
            "the local Dask cluster the build starts.",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[
        Literal["local", "dask"] | None,
        typer.Option(
            help="Where per-image work runs: local (a process pool) or dask (a dask.distributed "
            "cluster; needs the dask extra). Default: local, or dask with --scheduler.",
            show_default=False,
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="A running Dask scheduler (tcp://host:8786) for --engine dask; without it, "
            "the build starts a local cluster. Its workers must see --root and the sources "
            "under the same paths (docs/scale.md).",
            show_default=False,
        ),
    ] = None,
    lock: Annotated[
        Path | None,
        typer.Option("--lock", metavar="FILE", help="Rebuild exactly what a lock.json describes."),
    ] = None,
    sources: Annotated[
        str | None,
        typer.Option(metavar="IDS", help="Comma-separated source ids (default: the recipe's)."),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit non-zero when there are problems.")] = False,
    views: Annotated[
        str | None,
        typer.Option(
            metavar="VIEWS",
            help="Comma-separated views to keep, e.g. PA,AP (default: the recipe's).",
        ),
    ] = None,
    adult_only: Annotated[
        bool | None,
        typer.Option(
            "--adult-only/--any-age",
            help="Leave out children's images (default: the recipe's).",
            show_default=False,
        ),
    ] = None,
    dicom: Annotated[
        bool, typer.Option(help="Write a de-identified DICOM per image (processed layer).")
    ] = True,
    force: Annotated[
        bool, typer.Option(help="Build even when the folder is up to date with its inputs.")
    ] = False,
    fetch: Annotated[
        bool,
        typer.Option(
            "--fetch/--no-fetch",
            envvar=FETCH_ENV,
            help="Download the recipe's missing auto sources first, as `fetch` does; "
            "--no-fetch builds from what is present and makes no network request.",
        ),
    ] = True,
    class_: Annotated[
        list[str] | None,
        typer.Option(
            "--class",
            metavar="NAME=LABEL[,LABEL...]",
            help="Repeatable: a class as a merge of labels, e.g. --class other=normal,pneumonia.",
        ),
    ] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            "--max-pixels",
            min=1,
            metavar="N",
            help="Most pixels an image header may declare (default: 150000000); a larger "
            "image (a decompression bomb) is a too-large row of problems.csv, not decoded.",
            show_default=False,
        ),
    ] = None,
    naive: Annotated[
        bool,
        typer.Option(
            "--naive",
            help="Write RECIPE-naive/ instead: every copy kept, split by image at random, as "
            "most notebooks do. Deliberately leaky, to measure how much that inflates metrics; "
            "never report results from it.",
        ),
    ] = False,
) -> None:
    """Assemble a dataset: fetch, ingest, process, deduplicate, split by patient, write, audit."""
    from covid19_images.assemble.build import build
    from covid19_images.assemble.naive import is_naive_choice
    from covid19_images.assemble.naive import warning as naive_warning
    from covid19_images.assemble.recipe import load_recipe, parse_merge, with_options
    from covid19_images.process.image import MAX_PIXELS

    if engine == "local" and scheduler is not None:
        err.print("[bold red]error:[/] --scheduler is a Dask scheduler: use it with --engine dask")
        raise typer.Exit(2)
    if lock is not None:
        given = {
            "--naive": True if naive else None,
            "--views": views,
            "--adult-only/--any-age": adult_only,
            "--class": class_,
            "--seed": seed,
            "--sources": sources,
        }
        clash = [name for name, value in given.items() if value is not None] + (
            ["--size"] if size != 224 else []
        )
        if clash:
            err.print(f"[bold red]error:[/] --lock fixes the recipe; drop {', '.join(clash)}")
            raise typer.Exit(2)
        try:
            locked_name = json.loads(lock.read_text(encoding="utf-8"))["recipe"]["name"]
        except (OSError, ValueError, KeyError, TypeError):
            locked_name = recipe  # build() says what is wrong with the file
        if locked_name != recipe:
            err.print(
                f"[bold red]error:[/] {escape(str(lock))} is a lock of recipe "
                f"{escape(str(locked_name))}, not {escape(recipe)}"
            )
            raise typer.Exit(2)
    chosen = (
        with_options(
            load_recipe(recipe),
            views=[v.strip() for v in views.split(",") if v.strip()] if views else None,
            adult_only=adult_only,
            classes=parse_merge(class_) if class_ else None,
        )
        if lock is None
        else recipe
    )
    with ExitStack() as stack:
        executor = None
        if engine == "dask" or scheduler is not None:
            from covid19_images.process.dask_engine import DaskExecutor

            executor = stack.enter_context(DaskExecutor(scheduler, workers=workers))
        display = stack.enter_context(_FetchDisplay())
        result = build(
            chosen,
            out=out_dir,
            mirror=mirror,
            root=root,
            size=size,
            seed=seed,
            workers=workers,
            lock=lock,
            sources=[s.strip() for s in sources.split(",") if s.strip()] if sources else None,
            dicom=dicom,
            force=force,
            fetch=fetch,
            fetch_progress=display.file,
            on_fetch=display.event,
            max_pixels=MAX_PIXELS if max_pixels is None else max_pixels,
            naive=naive,
            executor=executor,
        )
    if result.up_to_date:
        out.print(
            f"{result.path} is up to date (same inputs); --force builds it again", highlight=False
        )
    counts = result.manifest.groupby(["class", "split"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=[s for s in ("train", "val", "test") if s in counts])
    out.print(out_table(counts))
    out.print(f"sources: {', '.join(sorted(result.sources_used))}", highlight=False)
    if result.sources_missing:
        out.print(f"not present: {', '.join(result.sources_missing)}", highlight=False)
    if result.fetch is not None:
        _print_fetch_report(result.fetch)
    out.print(f"{escape(result.problems.summary())} (see problems.csv)", highlight=False)
    audit = json.loads((result.path / "audit.json").read_text(encoding="utf-8"))
    for warning in audit["warnings"]:
        err.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False)
    if "level" in result.manifest:  # CT: volumes and 2-D slices
        levels = result.manifest["level"].value_counts()
        what = f"{levels.get('volume', 0)} volumes, {levels.get('image', 0)} 2-D slices"
    else:
        what = f"{len(result.manifest)} images"
    out.print(f"[green]{escape(str(result.path))}[/] ({what})", highlight=False)
    if result.manifest.empty:
        from covid19_images.assemble.result import nothing_to_segment

        why = nothing_to_segment(result) or (
            "no sample passed the recipe; problems.csv says why for each"
        )
        err.print(f"[yellow]warning:[/] {escape(why)}", highlight=False, soft_wrap=True)
    out.print(f"[dim]{RESEARCH_USE_NOTICE}[/]", highlight=False)
    if result.naive:  # leaky on purpose: say how much, and succeed
        err.print(
            f"[bold yellow]warning:[/] {escape(naive_warning(result.path))}",
            highlight=False,
            soft_wrap=True,
        )
    elif audit["leakage"]:
        err.print("[bold red]error:[/] the audit found leakage between splits (audit.json)")
        raise typer.Exit(1)
    # Recipe decisions (filtered, duplicate, augmented copy: "excluded") and metadata rows
    # whose file a partial download does not hold are not input problems.
    if strict and [p for p in result.problems.input_problems() if not is_naive_choice(p)]:
        raise typer.Exit(1)


@app.command("audit", cls=_Command)
@_handled
def audit_command(
    dataset: Annotated[
        Path, typer.Argument(metavar="DATASET", help="An assembled dataset folder.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check a dataset for leakage (patients, near-duplicate images) and confounding.

    Exit status: 0 when nothing was found, 1 when leakage or missing files were found, 2 when
    DATASET is not a dataset (an error, as grep and diff use it).
    """
    from covid19_images.audit import audit_dataset

    report = audit_dataset(dataset, progress=sys.stderr.isatty())
    if as_json:
        _print_json(report.as_dict())
    else:
        out.print(report.text(), highlight=False)
    if report.leakage or report.broken:
        raise typer.Exit(1)


@app.command("export", cls=_Command)
@_handled
def export_command(
    dataset: Annotated[
        Path, typer.Argument(metavar="DATASET", help="An assembled dataset folder.")
    ],
    fmt: Annotated[
        str,
        typer.Option(
            "--format", metavar="FORMAT", help="imagefolder, covidx, monai, hf, nnunet or coco."
        ),
    ],
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Target folder (default: DATASET/exports/FORMAT; covidx-binary for "
            "--covidx-task binary).",
        ),
    ] = None,
    covidx_task: Annotated[
        Literal["3class", "binary"] | None,
        typer.Option(
            "--covidx-task",
            help="covidx only: 3class (COVIDx V9A labels COVID-19/pneumonia/normal, the "
            "default) or binary (V9B: positive for covid19, negative for every other class).",
        ),
    ] = None,
) -> None:
    """Write a built dataset in another tool's layout (images are hard links, not copies)."""
    from covid19_images.assemble.export import export

    target = export(dataset, fmt, out_dir, covidx_task=covidx_task)
    shown = f"{fmt} {covidx_task}" if covidx_task else fmt
    out.print(f"[green]{escape(str(target))}[/] ({shown})", highlight=False)
    out.print(f"[dim]{RESEARCH_USE_NOTICE}[/]", highlight=False)


def out_table(counts: Any) -> Table:
    """Class x split counts as a rich table."""
    table = Table(title="images per class and split")
    table.add_column("class", style="bold")
    for column in counts.columns:
        table.add_column(str(column), justify="right")
    for name, row in counts.iterrows():
        table.add_row(str(name), *(str(int(v)) for v in row))
    return table


class _FetchDisplay:
    """A build's downloads shown as `fetch` shows them: a bar per file, a line per source."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._update: Callable[[str, int, int | None], None] | None = None

    def __enter__(self) -> _FetchDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def file(self, name: str, done: int, total: int | None) -> None:
        if self._update is None:  # bars start with the first bytes, not before a quick failure
            self._update = self._stack.enter_context(_download_progress())
        self._update(name, done, total)

    def event(self, event: FetchEvent) -> None:
        if event.kind == "start":
            out.print(f"fetching {event.source} (not present here) ...", highlight=False)
            return
        self._stack.close()
        self._update = None
        if event.result is not None:
            _print_fetched(event.source, event.result)
        else:
            first = event.message.strip().splitlines()[0] if event.message.strip() else ""
            err.print(
                f"[yellow]warning:[/] {event.source}: {escape(first)}; building without it",
                highlight=False,
            )


def _print_fetch_report(report: SourcesReport) -> None:
    """After a build: downloads that failed, sources left unfetched, and the manual ones."""
    if report.failed:
        err.print(
            f"[yellow]warning:[/] not fetched: {', '.join(sorted(report.failed))} "
            "(problems.csv, kind fetch-failed); offline? `covid19-images fetch SOURCE --from "
            "FILE` takes a download made elsewhere, or pass --mirror DIR",
            highlight=False,
        )
    if report.not_fetched:
        out.print(
            f"not fetched (--no-fetch): {', '.join(report.not_fetched)}; "
            f"`covid19-images fetch {' '.join(report.not_fetched)}` gets them",
            highlight=False,
        )
    if report.manual:
        out.print("would add images, needs a download by hand:", highlight=False)
        for entry in report.manual:
            out.print(f"  {escape(manual_line(entry))}", highlight=False)
        out.print(
            "  steps: covid19-images info SOURCE; then: covid19-images fetch SOURCE --from "
            "DOWNLOAD",
            highlight=False,
        )


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
