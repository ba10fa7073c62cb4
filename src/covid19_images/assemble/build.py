"""``build RECIPE``: from raw sources to a ready-to-train folder, audited.

Stages, in order: fetch the recipe's missing ``auto`` sources (unless ``fetch=False``) → ingest
every source of the recipe that is present → filter by the recipe (modality, view, age, class) →
hand the selected records to the assembly of their modality:
:func:`~covid19_images.assemble.xray.assemble_xray` or
:func:`~covid19_images.assemble.ct.assemble_ct` (process, deduplicate, split by patient and
duplicate cluster, write the dataset folder, audit it).

The folder ``<out>/<recipe>/`` holds ``train/ val/ test/`` with one folder per class (image files,
ImageFolder-ready), ``manifest.parquet``, ``problems.csv``, ``duplicates.csv``, ``datasheet.md``,
``lock.json`` and ``audit.json``. It is written under a temporary name and renamed into place
when complete (:func:`~covid19_images.assemble.folder.staging`). A folder already built from the
same inputs (:mod:`~covid19_images.assemble.fingerprint`) is returned as it is.

``naive=True`` (``build --naive``) writes ``<out>/<recipe>-naive/`` instead: the same images with
every copy kept, split by image at random (:mod:`~covid19_images.assemble.naive`), deliberately
leaky and marked so everywhere, for comparison only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from covid19_images.assemble.ct import assemble_ct
from covid19_images.assemble.fingerprint import inputs_fingerprint, up_to_date
from covid19_images.assemble.folder import MANIFEST, check_out
from covid19_images.assemble.lockfile import LOCK, read_lock
from covid19_images.assemble.naive import folder_name, keep_augmented
from covid19_images.assemble.recipe import Recipe, RecipeError, load_recipe
from covid19_images.assemble.result import AssemblyJob, BuildError, BuildResult, nothing_passes
from covid19_images.assemble.xray import assemble_xray
from covid19_images.catalog import load_catalog
from covid19_images.fetch import Located, data_root, locate
from covid19_images.fetch.ensure import FetchEvent, SourcesReport, ensure_sources
from covid19_images.fetch.fetcher import FileProgress
from covid19_images.problems import KINDS, ProblemLog
from covid19_images.process.executor import Executor, LocalExecutor, check_workers
from covid19_images.process.image import MAX_PIXELS
from covid19_images.progress import track
from covid19_images.records import Record
from covid19_images.sources import adapter_ids, get_adapter
from covid19_images.sources.covidx import covidx_membership

__all__ = ["BuildError", "BuildResult", "build"]


def build(
    recipe: Recipe | str | Path,
    *,
    out: Path | str,
    mirror: Path | str | None = None,
    root: Path | str | None = None,
    size: int = 224,
    seed: int | None = None,
    workers: int | None = None,
    lock: Path | str | None = None,
    sources: list[str] | None = None,
    executor: Executor | None = None,
    progress: bool = True,
    dicom: bool = True,
    force: bool = False,
    fetch: bool | None = None,
    fetch_progress: FileProgress | None = None,
    on_fetch: Callable[[FetchEvent], None] | None = None,
    max_pixels: int = MAX_PIXELS,
    naive: bool = False,
) -> BuildResult:
    """Build a dataset folder from a recipe, downloading its missing ``auto`` sources first.

    Every ``auto`` source of the recipe that is not present (mirror, registered folder, earlier
    fetch) is fetched as ``covid19-images fetch`` does: pinned and verified. A download that
    fails (e.g. offline) is a ``fetch-failed`` problem row and the build goes on with the other
    sources; ``result.fetch`` also lists the missing manual sources and where to get them.

    Args:
        recipe: A recipe, a packaged recipe name (``xray-covid``) or a recipe TOML path.
        out: Folder that receives ``<recipe name>/``.
        mirror: Read-only folder of upstream folders.
        root: Data root (raw downloads; the processed cache lives in ``<root>/processed``).
        size: Side of the square images written to the split folders.
        seed: Split seed (default: the recipe's).
        workers: Processes for decoding (default: all cores).
        lock: A ``lock.json`` of an earlier build: rebuild exactly that (recipe, seed, size,
            pixel limit).
        sources: Only these source ids (default: the recipe's).
        executor: Where per-image work runs (default: a local pool with ``workers``); a
            :class:`~covid19_images.process.dask_engine.DaskExecutor` runs it on a cluster,
            whose workers must see ``root`` and the sources under the same paths.
        progress: Show progress bars.
        dicom: Write a de-identified DICOM per kept image into the processed layer.
        force: Build even when the folder is up to date with the same inputs.
        fetch: Download missing ``auto`` sources (default: yes, unless
            ``$COVID19_IMAGES_FETCH`` is ``0``). False makes no request at all.
        fetch_progress: Per-file download progress callback.
        on_fetch: Called when a source's download starts, ends, fails or is skipped.
        max_pixels: The most pixels an image's header may declare; a larger image (a
            decompression bomb) is a ``too-large`` problem row and is not decoded.
        naive: Write ``<recipe>-naive/`` instead: the same images with every copy kept,
            split by image at random (:mod:`~covid19_images.assemble.naive`); deliberately
            leaky, for comparison only. A lock of a naive build rebuilds it naive.

    Raises:
        BuildError: Nothing is present (the message says which downloads failed and how to get
            the sources by hand), nothing passes the recipe, a lock does not match, or
            ``naive`` is given with a lock (the lock says whether its build was naive).

    Example:
        >>> result = build("xray-covid", out="out", mirror="../shared/sources")  # doctest: +SKIP
        >>> result.manifest.groupby(["split", "class"]).size()  # doctest: +SKIP
        >>> offline = build("xray-covid", out="out", fetch=False)  # doctest: +SKIP
        >>> sorted(build("xray-covid", out="out").fetch.fetched)  # doctest: +SKIP
        ['actualmed', 'covid19-detection-xray-dataset', 'figure1', 'ieee8023']
    """
    locked: dict[str, Any] | None = None
    if lock is not None and naive:
        raise BuildError(
            "--naive and --lock do not go together: a lock rebuilds exactly what it describes, "
            'naive or not (its lock.json says "naive")'
        )
    if lock is not None:
        locked = read_lock(Path(lock))
        naive = locked.get("naive") is True
        recipe = locked["recipe"]
        seed, size = locked["seed"], locked["size"]
        process = locked.get("process")
        if isinstance(process, dict) and isinstance(process.get("max_pixels"), int):
            max_pixels = process["max_pixels"]
        sources = [*locked["sources"], *locked.get("sources_missing", [])]
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    seed = recipe.split.seed if seed is None else seed
    if mirror is not None and not Path(mirror).is_dir():
        raise BuildError(f"the mirror folder {mirror} does not exist (or is not a folder)")
    check_out(Path(out))
    if seed < 0:
        raise BuildError(f"the split seed must be 0 or more, not {seed}")
    base = data_root(root)
    final = Path(out) / folder_name(recipe.name, naive)
    ids = _source_ids(recipe, sources)
    fetched = ensure_sources(
        ids,
        root=base,
        mirror=mirror,
        fetch=fetch,
        task=_CATALOG_TASK.get(recipe.task, recipe.task),
        progress=fetch_progress,
        on_event=on_fetch,
    )  # before the fingerprint: a source fetched now is one of the inputs
    state = inputs_fingerprint(recipe, seed, size, dicom, ids, base, mirror, max_pixels, naive)
    if not force and up_to_date(final, state):
        return _reported(_existing(final, ids, base, mirror), fetched)
    executor = executor or LocalExecutor(workers, progress=progress)
    log = ProblemLog()
    fetched.log_problems(log)

    records, used, missing = _ingest(ids, base, mirror, log, progress)
    if not records and used:
        raise BuildError(_nothing_read(recipe, used, log))
    if not records:
        advice = fetched.advice()
        raise BuildError(
            f"no images for recipe {recipe.name}: none of its sources is present "
            f"(looked for {', '.join(missing)}"
            + (f" in {mirror} and {base}" if mirror is not None else f" in {base}")
            + ")"
            + (f"\n{advice}" if advice else "; fetch some or pass --mirror")
        )
    membership = _membership(recipe, base, mirror, log)
    classes = _select(recipe, records, membership, log, naive)
    selected = [r for r in records if r.uid in classes]
    if not selected:
        raise BuildError(nothing_passes(recipe, log))
    if naive:  # upstream's augmented copies are in: their rows say so
        log = keep_augmented(log, selected)
    check_workers(executor, [base / "processed"], [u.path for u in used.values()])
    job = AssemblyJob(
        base,
        final,
        used,
        missing,
        size,
        seed,
        executor,
        log,
        dicom,
        state,
        locked,
        max_pixels,
        progress,
        naive,
    )
    if "CT" in recipe.modality:
        return _reported(assemble_ct(recipe, selected, classes, job), fetched)
    upstream = membership is not None  # a membership recipe keeps the upstream splits
    return _reported(assemble_xray(recipe, selected, classes, job, upstream=upstream), fetched)


_CATALOG_TASK: dict[str, str | None] = {"detection": "localization", "regression": None}
"""A recipe's task as the catalog names the tasks its sources serve (None: any)."""


def _reported(result: BuildResult, fetched: SourcesReport) -> BuildResult:
    result.fetch = fetched
    return result


def _nothing_read(recipe: Recipe, used: dict[str, Located], log: ProblemLog) -> str:
    """Why the sources that are present gave no image: their metadata problems, if any."""
    metadata = ("missing-column", "unreadable-metadata", "unreadable-file")
    skipped = [p for p in log if p.source in used and p.action == "skipped"]
    causes = [p for p in skipped if p.kind in metadata] or skipped
    said = "; ".join(f"{p.source} {p.file}: {p.detail or KINDS[p.kind]}" for p in causes[:3])
    return (
        f"no images for recipe {recipe.name}: {', '.join(sorted(used))} "
        f"{'is' if len(used) == 1 else 'are'} present but gave no image"
        + (f" ({said})" if said else "")
    )


def _source_ids(recipe: Recipe, only: list[str] | None) -> list[str]:
    """The catalog ids a build reads: the ones asked for, else the recipe's."""
    catalog = load_catalog()
    wanted_modality = "ct" if recipe.modality == ["CT"] else "xray"
    if only:
        ids = [catalog.get(s).id for s in only]
        other = [s for s in ids if wanted_modality not in catalog.get(s).modality]
        if other:
            kind = "CT" if wanted_modality == "ct" else "X-ray"
            raise BuildError(
                f"recipe {recipe.name} reads {kind} sources; {', '.join(other)} "
                f"{'has' if len(other) == 1 else 'have'} no {kind} images"
            )
    elif recipe.sources == "all":
        ids = [s for s in adapter_ids() if wanted_modality in catalog.get(s).modality]
    else:
        ids = [catalog.get(s).id for s in recipe.sources]
    return [s for s in ids if s not in set(recipe.exclude_sources)]


def _existing(final: Path, ids: list[str], base: Path, mirror: Path | str | None) -> BuildResult:
    """The result of a build whose folder is already up to date."""
    used: dict[str, Located] = {}
    missing: list[str] = []
    for source in ids:
        located = locate(source, root=base, mirror=mirror)
        if located is None:
            missing.append(source)
        else:
            used[source] = located
    lock = json.loads((final / LOCK).read_text(encoding="utf-8"))
    used = {s: v for s, v in used.items() if s in lock["sources"]}
    return BuildResult(
        final,
        pd.read_parquet(final / MANIFEST),
        ProblemLog.read_csv(final / "problems.csv"),
        used,
        missing,
        None,
        up_to_date=True,
        naive=lock.get("naive") is True,
    )


def _ingest(
    ids: list[str],
    base: Path,
    mirror: Path | str | None,
    log: ProblemLog,
    progress: bool = False,
) -> tuple[list[Record], dict[str, Located], list[str]]:
    catalog = load_catalog()
    records: list[Record] = []
    used: dict[str, Located] = {}
    missing: list[str] = []
    for source in track(ids, len(ids), "reading the sources' metadata", progress):
        located = locate(source, root=base, mirror=mirror)
        if located is None:
            missing.append(source)
            continue
        source_log = ProblemLog()
        found = get_adapter(source).read(located.path, source_log)  # + unusable files, folders
        log.extend(source_log)
        version = catalog.get(source).version if located.origin == "fetched" else None
        for record in found:
            record.source_version = version
        records.extend(found)
        used[source] = located
    return records, used, missing


def _membership(
    recipe: Recipe, base: Path, mirror: Path | str | None, log: ProblemLog
) -> dict[tuple[str, str], tuple[str, str]] | None:
    """(catalog source, file name) → (split, COVIDx label), for membership recipes."""
    if recipe.membership != "covidx":
        return None
    located = locate("covidx", root=base, mirror=mirror)
    if located is None:
        raise RecipeError("the covidx recipe needs the COVIDx label files: fetch covidx first")
    table = covidx_membership(located.path, log)
    return {
        (str(source), str(name)): (str(split), str(label))
        for source, name, split, label in zip(
            table["catalog_source"],
            table["filename"],
            table["split"],
            table["label_9a"],
            strict=True,
        )
        if isinstance(source, str)
    }


_COVIDX_LABEL = {"COVID-19": "covid19", "pneumonia": "pneumonia_other", "normal": "normal"}


def _select(
    recipe: Recipe,
    records: list[Record],
    membership: dict[tuple[str, str], tuple[str, str]] | None,
    log: ProblemLog,
    naive: bool = False,
) -> dict[str, str]:
    """uid → dataset class of every record the recipe wants; each other one gets a problem.

    A naive build wants upstream's augmented copies too."""
    classes: dict[str, str] = {}
    for r in records:
        if "augmented" in r.tags and not recipe.include_augmented and not naive:
            continue  # the adapter reported it as an augmented copy, excluded
        why: str | None
        if r.modality not in recipe.modality:
            allowed = ", ".join(recipe.modality)
            why = f"modality {r.modality} is not in recipe {recipe.name} ({allowed})"
            kind = "wrong-modality"
        else:
            why, kind = _leave_out(recipe, r, membership), "filtered"
        if why is not None:
            log.add(r.source, r.path_raw, r.source_row, kind, "excluded", why)
            continue
        label = (
            _COVIDX_LABEL.get(r.attributes.get("covidx_label", ""), "unknown")
            if (membership is not None)
            else r.label
        )
        name = recipe.class_of(label)
        if name is None:
            log.add(
                r.source,
                r.path_raw,
                r.source_row,
                "filtered",
                "excluded",
                f"label {label} is not a class of recipe {recipe.name}",
            )
            continue
        classes[r.uid] = name
    return classes


def _leave_out(
    recipe: Recipe,
    r: Record,
    membership: dict[tuple[str, str], tuple[str, str]] | None,
) -> str | None:
    """Why the recipe leaves ``r`` out, or None; for membership recipes, ``r`` gets its split."""
    if r.view not in recipe.views and not (r.view == "UNKNOWN" and recipe.keep_unknown_view):
        return f"view {r.view} is not in recipe {recipe.name}"
    if recipe.adult_only and ("paediatric" in r.tags or (r.age is not None and r.age < 18)):
        return "a child's image, and the recipe is adult-only"
    if membership is None:
        return None
    if r.source == "covidx":  # COVIDx's own images carry their split and label
        hit = (r.upstream_split, r.finding_raw) if r.upstream_split and r.finding_raw else None
    else:
        hit = membership.get((r.source, Path(r.path_raw).name))
    if hit is None:
        return "not in the COVIDx label files"
    r.upstream_split = hit[0]
    r.attributes["covidx_label"] = hit[1]
    return None
