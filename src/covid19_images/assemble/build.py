"""``build RECIPE``: from raw sources to a ready-to-train folder, audited.

Stages, in order: fetch the recipe's missing ``auto`` sources (unless ``fetch=False``) → ingest
every source of the recipe that is present → filter by the recipe (modality, view, age, class) →
process (decode once, hashes, copies; cached) → deduplicate across sources → split by patient and
duplicate cluster → write the dataset folder → audit it.

The folder ``<out>/<recipe>/`` holds ``train/ val/ test/`` with one folder per class (image files,
ImageFolder-ready), ``manifest.parquet``, ``problems.csv``, ``duplicates.csv``, ``datasheet.md``,
``lock.json`` and ``audit.json``. It is written under a temporary name and renamed into place
when complete.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from covid19_images import __version__
from covid19_images.assemble.recipe import Recipe, RecipeError, load_recipe
from covid19_images.assemble.splits import group_ids, merge_groups, stratified_group_split
from covid19_images.catalog import load_catalog
from covid19_images.dedup.clusters import DedupResult, deduplicate
from covid19_images.deid import SaltError, salt
from covid19_images.errors import Covid19ImagesError
from covid19_images.fetch import Located, data_root, locate
from covid19_images.fetch.ensure import FetchEvent, SourcesReport, ensure_sources
from covid19_images.fetch.fetcher import FileProgress
from covid19_images.loaders.packed import PACKED_VERSION, write_packed
from covid19_images.problems import KINDS, ProblemLog
from covid19_images.process.dicom import write_secondary_capture
from covid19_images.process.executor import Executor, LocalExecutor
from covid19_images.process.image import MAX_PIXELS, DecodeError, without_addresses
from covid19_images.process.pipeline import (
    PROCESS_VERSION,
    Params,
    output_dir,
    process_records,
)
from covid19_images.records import Record, records_frame
from covid19_images.sources import adapter_ids, get_adapter
from covid19_images.sources.covidx import covidx_membership

if TYPE_CHECKING:
    from covid19_images.audit import AuditReport, FileSignatures

MANIFEST = "manifest.parquet"
LOCK = "lock.json"


class BuildError(Covid19ImagesError):
    """A build cannot start or finish (no sources present, a lock that does not match)."""


@dataclass
class BuildResult:
    """What a build made."""

    path: Path
    manifest: pd.DataFrame
    problems: ProblemLog
    sources_used: dict[str, Located]
    """Source id → where its files were (path and origin)."""
    sources_missing: list[str] = field(default_factory=list)
    dedup: DedupResult | None = None
    up_to_date: bool = False
    """True when the folder was already built from the same inputs and nothing was redone."""
    fetch: SourcesReport | None = None
    """Sources downloaded for this build, downloads that failed, sources left to a person."""


@dataclass
class CtBuild:
    """What a CT assembly needs from the build that ingested and selected its records."""

    base: Path
    final: Path
    used: dict[str, Located]
    missing: list[str]
    size: int
    seed: int
    executor: Executor
    log: ProblemLog
    dicom: bool
    state: str
    locked: dict[str, Any] | None


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
        executor: Where per-image work runs (default: a local pool with ``workers``).
        progress: Show progress bars.
        dicom: Write a de-identified DICOM per kept image into the processed layer.
        force: Build even when the folder is up to date with the same inputs.
        fetch: Download missing ``auto`` sources (default: yes, unless
            ``$COVID19_IMAGES_FETCH`` is ``0``). False makes no request at all.
        fetch_progress: Per-file download progress callback.
        on_fetch: Called when a source's download starts, ends, fails or is skipped.
        max_pixels: The most pixels an image's header may declare; a larger image (a
            decompression bomb) is a ``too-large`` problem row and is not decoded.

    Raises:
        BuildError: Nothing is present (the message says which downloads failed and how to get
            the sources by hand), nothing passes the recipe, or a lock does not match.

    Example:
        >>> result = build("xray-covid", out="out", mirror="../shared/sources")  # doctest: +SKIP
        >>> result.manifest.groupby(["split", "class"]).size()  # doctest: +SKIP
        >>> offline = build("xray-covid", out="out", fetch=False)  # doctest: +SKIP
        >>> sorted(build("xray-covid", out="out").fetch.fetched)  # doctest: +SKIP
        ['actualmed', 'covid19-detection-xray-dataset', 'figure1', 'ieee8023']
    """
    locked: dict[str, Any] | None = None
    if lock is not None:
        locked = _read_lock(Path(lock))
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
    _check_out(Path(out))
    if seed < 0:
        raise BuildError(f"the split seed must be 0 or more, not {seed}")
    base = data_root(root)
    final = Path(out) / recipe.name
    ids = _source_ids(recipe, sources)
    fetched = ensure_sources(
        ids,
        root=base,
        mirror=mirror,
        fetch=fetch,
        task=recipe.task,
        progress=fetch_progress,
        on_event=on_fetch,
    )  # before the fingerprint: a source fetched now is one of the inputs
    state = _inputs_fingerprint(recipe, seed, size, dicom, ids, base, mirror, max_pixels)
    if not force and _up_to_date(final, state):
        return _reported(_existing(final, ids, base, mirror), fetched)
    executor = executor or LocalExecutor(workers, progress=progress)
    log = ProblemLog()
    fetched.log_problems(log)

    records, used, missing = _ingest(ids, base, mirror, log)
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
    classes = _select(recipe, records, membership, log)
    selected = [r for r in records if r.uid in classes]
    if not selected:
        raise BuildError(_nothing_passes(recipe, log))
    if "CT" in recipe.modality:
        from covid19_images.assemble.ct import assemble_ct

        job = CtBuild(base, final, used, missing, size, seed, executor, log, dicom, state, locked)
        return _reported(assemble_ct(recipe, selected, classes, job), fetched)
    params = Params(sizes=tuple(sorted({224, 512, size})), max_pixels=max_pixels)
    cache = base / "processed" / "xray"
    roots = {source: located.path for source, located in used.items()}
    processed, _ = process_records(
        selected, roots, cache, params=params, executor=executor, log=log
    )
    if not processed:
        raise BuildError(_nothing_passes(recipe, log))
    dedup = deduplicate(
        processed,
        cache,
        log,
        **recipe.dedup.model_dump(),
    )
    kept = dedup.kept
    if dicom:
        _write_dicoms(kept, roots, cache, _salt(base), executor, log)
    from covid19_images.audit import FileSignatures

    memo = FileSignatures()  # the split check's signatures, reused by the audit
    if membership is not None:
        splits = _splits(recipe, kept, classes, True, seed)
    else:
        splits = _leak_free_splits(
            recipe, kept, classes, seed, processed, cache, size, memo, executor
        )

    manifest = _manifest(kept, classes, splits, size)
    process = {"sizes": list(params.sizes), "version": params.version, "max_pixels": max_pixels}
    lock_data = _lock(recipe, seed, size, kept, used, missing, process)
    if locked is not None:
        _check_lock(locked, lock_data)
    _write(
        final,
        manifest,
        kept,
        cache,
        size,
        log,
        dedup,
        lock_data,
        recipe,
        used,
        missing,
        expected_manifest=locked.get("manifest_sha256") if locked is not None else None,
        state=state,
        memo=memo,
    )
    return _reported(BuildResult(final, manifest, log, used, missing, dedup), fetched)


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


def _nothing_passes(recipe: Recipe, log: ProblemLog) -> str:
    frame = log.frame()
    reasons = frame[frame["action"].isin(["excluded", "skipped"])]["detail"].value_counts()
    top = "; ".join(f"{n} x {why}" for why, n in reasons.head(4).items())
    return f"no image passes recipe {recipe.name}" + (
        f" (most common reasons: {top})" if top else ""
    )


DICOM_VERSION = 1


def _salt(base: Path) -> bytes:
    try:
        return salt(base)
    except SaltError as exc:
        raise BuildError(str(exc)) from exc


@dataclass(frozen=True)
class _DicomTask:
    image: str
    record: Record
    out: str
    salt: bytes


def _dicom_one(task: _DicomTask) -> str | None:
    """Worker: write one DICOM unless it is there; the error text, or None."""
    out = Path(task.out)
    if out.is_file():
        return None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_secondary_capture(Path(task.image), task.record, out, salt=task.salt)
    except DecodeError as exc:
        return f"{exc.kind}: {without_addresses(str(exc))}"
    return None


def _write_dicoms(
    kept: list[Record],
    roots: dict[str, Path],
    cache: Path,
    salt: bytes,
    executor: Executor,
    log: ProblemLog,
) -> None:
    """A de-identified DICOM per record, named by a digest of everything in its header."""
    keyed = hmac.new(salt, b"covid19-images dicom", "sha256").hexdigest()[:16]  # salt changes
    tasks = []
    for r in kept:
        facts = [
            DICOM_VERSION,
            keyed,
            r.bits_stored,
            r.sha256_file,
            r.uid,
            r.patient_id,
            r.study_id,
            r.series_id,
            r.modality,
            r.view,
            r.sex,
            r.age,
            r.license,
            r.source,
        ]
        digest = hashlib.sha256(json.dumps(facts, default=str).encode()).hexdigest()[:16]
        r.dicom_path = f"dicom/{r.source}/{r.uid}-{digest}.dcm"
        tasks.append(
            _DicomTask(str(roots[r.source] / r.path_raw), r, str(cache / r.dicom_path), salt)
        )
    for r, error in zip(kept, executor.map(_dicom_one, tasks, "writing DICOM"), strict=True):
        if error is not None:
            log.add(
                r.source,
                r.path_raw,
                r.source_row,
                "unreadable-file",
                "kept",
                f"no DICOM written: {error}",
            )
            r.dicom_path = None


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


STATE = ".build-state.json"


def _inputs_fingerprint(
    recipe: Recipe,
    seed: int,
    size: int,
    dicom: bool,
    ids: list[str],
    base: Path,
    mirror: Path | str | None,
    max_pixels: int = MAX_PIXELS,
) -> str:
    """A digest of everything a build reads: options, package data, every input file's stat.

    Like ``make``, a file counts as unchanged while its size and modification time are; the
    walk costs a ``stat`` per file, far less than reading the metadata again. A link whose
    target is missing or loops counts by its target's name, a folder that cannot be listed by
    its name: neither stops the walk, and either changing changes the digest.
    """
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            [
                __version__,
                PROCESS_VERSION,
                DICOM_VERSION,
                PACKED_VERSION,
                recipe.model_dump(mode="json"),
                seed,
                size,
                dicom,
                max_pixels,
            ],
            sort_keys=True,
        ).encode()
    )
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.toml")):  # catalog, crosswalk and recipes
        digest.update(path.read_bytes())
    for source in ids:
        located = locate(source, root=base, mirror=mirror)
        digest.update(f"\n{source}\t{located.path if located else '-'}".encode())
        if located is None:
            continue
        digest.update(_tree_state(located.path))
    return digest.hexdigest()


def _tree_state(top: Path) -> bytes:
    """One line per file under ``top``: its path, size and modification time, or for a link
    whose target cannot be reached, why and the target's name; one per folder that cannot be
    listed."""
    lines: list[str] = []

    def unlisted(exc: OSError) -> None:
        lines.append(f"{exc.filename}\tunreadable-folder\t{exc.strerror}\n")

    for folder, dirs, files in os.walk(top, onerror=unlisted):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            try:
                stat = path.stat()
            except OSError as exc:  # a dangling or looping link, or no permission
                lines.append(f"{path}\tbroken-link\t{exc.strerror}\t{_link_target(path)}\n")
                continue
            lines.append(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n")
    return "".join(lines).encode()


def _link_target(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:
        return ""


def _up_to_date(final: Path, state: str) -> bool:
    try:
        saved = json.loads((final / STATE).read_text(encoding="utf-8"))["inputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(saved == state and (final / MANIFEST).is_file() and (final / LOCK).is_file())


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
    )


def _ingest(
    ids: list[str],
    base: Path,
    mirror: Path | str | None,
    log: ProblemLog,
) -> tuple[list[Record], dict[str, Located], list[str]]:
    catalog = load_catalog()
    records: list[Record] = []
    used: dict[str, Located] = {}
    missing: list[str] = []
    for source in ids:
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
) -> dict[str, str]:
    """uid → dataset class of every record the recipe wants; each other one gets a problem."""
    classes: dict[str, str] = {}
    for r in records:
        if "augmented" in r.tags and not recipe.include_augmented:
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


def _splits(
    recipe: Recipe,
    kept: list[Record],
    classes: dict[str, str],
    upstream: bool,
    seed: int,
    *,
    everything: list[Record] | None = None,
    links: list[tuple[int, int]] | None = None,
) -> list[str]:
    """A split per kept record: grouped by patient and copy cluster, stratified by class.

    ``everything`` holds the records before deduplication: a copy that was dropped still
    links its own patient with the patient of the copy kept (one person, two ids), so every
    image of both lands in one split. ``links`` are pairs of kept records (indices) that must
    share a split too.
    """
    if upstream:
        return [r.upstream_split or "train" for r in kept]
    pool = everything if everything is not None else kept
    groups = group_ids(
        [r.uid for r in pool],
        [r.patient_id for r in pool],
        [r.attributes.get("dup_cluster") for r in pool],
    )
    group_of = dict(zip((r.uid for r in pool), groups, strict=True))
    kept_groups = [group_of.get(r.uid, r.uid) for r in kept]
    if links:
        kept_groups = merge_groups(kept_groups, links)
    return stratified_group_split(
        kept_groups, [classes[r.uid] for r in kept], recipe.split.fractions(), seed
    )


def _leak_free_splits(
    recipe: Recipe,
    kept: list[Record],
    classes: dict[str, str],
    seed: int,
    everything: list[Record],
    cache: Path,
    size: int,
    memo: FileSignatures | None = None,
    executor: Executor | None = None,
) -> list[str]:
    """Splits that pass the audit's own cross-split copy check.

    The audit looks at the written square copies with fresh eyes; any pair it would find on
    two sides of a split is linked and the split is made again, until none is left. Each round
    merges at least two groups (a linked pair always shares a split), so it ends.
    """
    from covid19_images.audit import FileSignatures, cross_split_copies

    memo = memo if memo is not None else FileSignatures()
    links: list[tuple[int, int]] = []
    index = {r.uid: i for i, r in enumerate(kept)}
    paths = [output_dir(cache, r.processed_key or "") / f"{size}.png" for r in kept]
    uids = [r.uid for r in kept]
    if executor is not None:
        memo.prime(paths, executor)
    while True:
        splits = _splits(recipe, kept, classes, False, seed, everything=everything, links=links)
        pairs, _ = cross_split_copies(
            paths,
            splits,
            uids,
            **recipe.dedup.model_dump(),
            memo=memo,
        )
        if not pairs:
            return splits
        links += [(index[p["uid_a"]], index[p["uid_b"]]) for p in pairs]


def _manifest(
    kept: list[Record], classes: dict[str, str], splits: list[str], size: int
) -> pd.DataFrame:
    frame = records_frame(kept)
    split_of = {r.uid: s for r, s in zip(kept, splits, strict=True)}
    frame["split"] = frame["uid"].map(split_of)
    frame["class"] = frame["uid"].map(classes)
    frame["path"] = [
        f"{s}/{c}/{u}.png"
        for u, s, c in zip(frame["uid"], frame["split"], frame["class"], strict=True)
    ]
    frame["size"] = size
    return frame.sort_values("uid", kind="stable").reset_index(drop=True)


def _lock(
    recipe: Recipe,
    seed: int,
    size: int,
    kept: list[Record],
    used: dict[str, Located],
    missing: list[str],
    process: dict[str, Any],
) -> dict[str, Any]:
    files: dict[str, list[tuple[str, str]]] = {s: [] for s in used}
    for r in kept:
        files[r.source].append((r.path_raw, r.sha256_file or ""))
    catalog = load_catalog()
    return {
        "tool": f"covid19-images {__version__}",
        "recipe": recipe.model_dump(mode="json"),
        "seed": seed,
        "size": size,
        "process": process,
        "sources": {
            s: {
                "version": catalog.get(s).version,
                "origin": located.origin,
                "files": len(files[s]),
                "files_sha256": hashlib.sha256(
                    "\n".join(f"{p}\t{h}" for p, h in sorted(files[s])).encode()
                ).hexdigest(),
            }
            for s, located in sorted(used.items())
        },
        "sources_missing": sorted(missing),
    }


def _read_lock(path: Path) -> dict[str, Any]:
    """Read and validate a lock; ``recipe`` comes back as a :class:`Recipe`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["recipe"] = Recipe.model_validate(data["recipe"])
        data["seed"], data["size"] = int(data["seed"]), int(data["size"])
        if not isinstance(data["sources"], dict):
            raise TypeError("'sources' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ValidationError is a ValueError
        raise BuildError(f"{path} is not a lock file of covid19-images: {exc}") from exc
    return dict(data)


def _check_lock(locked: dict[str, Any], now: dict[str, Any]) -> None:
    gone = sorted(set(locked["sources"]) - set(now["sources"]))
    if gone:
        raise BuildError(f"sources of the lock are not present now: {', '.join(gone)}")
    changed = [
        s
        for s, info in locked["sources"].items()
        if now["sources"][s].get("files_sha256") != info.get("files_sha256")
    ]
    if changed:
        raise BuildError(
            "the files of these sources differ from the lock, so the build cannot be "
            f"reproduced: {', '.join(changed)}"
        )


def _write(
    final: Path,
    manifest: pd.DataFrame,
    kept: list[Record],
    cache: Path,
    size: int,
    log: ProblemLog,
    dedup: DedupResult,
    lock_data: dict[str, Any],
    recipe: Recipe,
    used: dict[str, Located],
    missing: list[str],
    *,
    expected_manifest: str | None = None,
    state: str | None = None,
    memo: FileSignatures | None = None,
) -> None:
    from covid19_images.assemble.datasheet import write_datasheet

    with staging(final) as tmp:
        keys = {r.uid: r.processed_key or "" for r in kept}
        for uid, rel in zip(manifest["uid"], manifest["path"], strict=True):
            link(output_dir(cache, keys[uid]) / f"{size}.png", tmp / rel)
        write_packed(tmp, manifest, sorted(recipe.classes), size, f"covid19-images {__version__}")
        report = write_tables(
            tmp, recipe, manifest, log, dedup, lock_data, expected_manifest, memo=memo
        )
        write_datasheet(tmp, recipe, manifest, log, dedup, report, used, missing)
        if state is not None:
            (tmp / STATE).write_text(json.dumps({"inputs": state}) + "\n", encoding="utf-8")


def write_tables(
    folder: Path,
    recipe: Recipe,
    manifest: pd.DataFrame,
    log: ProblemLog,
    dedup: DedupResult,
    lock_data: dict[str, Any],
    expected_manifest: str | None,
    *,
    memo: FileSignatures | None = None,
) -> AuditReport:
    """Manifest, problems, duplicates and lock into a dataset folder; then audit it.

    The audit runs on the files as written (``audit.json``), so it checks what a user gets.
    """
    from covid19_images.audit import audit_dataset, write_report

    lock_data["manifest_sha256"] = write_manifest(manifest, folder, expected_manifest)
    log.write_csv(folder / "problems.csv")
    dedup.pairs.to_csv(folder / "duplicates.csv", index=False)
    (folder / LOCK).write_text(json.dumps(lock_data, indent=2, sort_keys=True) + "\n")
    report = audit_dataset(
        folder,
        **recipe.dedup.model_dump(),
        memo=memo,
    )
    write_report(report, folder / "audit.json")
    return report


def link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy where links are not possible)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_manifest(manifest: pd.DataFrame, folder: Path, expected_sha: str | None) -> str:
    """Write ``manifest.parquet``; its sha256, checked against a lock's when one is given."""
    manifest.to_parquet(folder / MANIFEST, index=False)
    manifest_sha = hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
    if expected_sha is not None and manifest_sha != expected_sha:
        raise BuildError(
            "the rebuilt manifest differs from the lock's (the sources' metadata or this "
            "tool changed since); nothing was written"
        )
    return manifest_sha


def _check_out(out: Path) -> None:
    """Fail early (before any work) when the output folder cannot be one."""
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise BuildError(f"--out {out}: {folder} is a file, not a folder")
            return


EXPORTS = "exports"
"""A dataset's sub-folder of exports (``covid19-images export``): kept when it is rebuilt."""


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` that replaces it when the block completes.

    Nothing of a failed or interrupted block remains; an earlier dataset at ``final`` stays as
    it was until the new one is complete. Its ``exports/`` (what a user exported from it) moves
    into the new one: they were made from the earlier images, and export again refreshes them.
    """
    if final.exists() and not (final / LOCK).is_file() and not (final / MANIFEST).is_file():
        raise BuildError(f"{final} exists and is not a dataset of covid19-images: not replacing it")
    _check_out(final.parent)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(final)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    moved = False
    try:
        yield tmp
        if (final / EXPORTS).is_dir() and not (tmp / EXPORTS).exists():
            (final / EXPORTS).rename(tmp / EXPORTS)
            moved = True
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        if moved and final.is_dir() and not (final / EXPORTS).exists():
            (tmp / EXPORTS).rename(final / EXPORTS)  # the earlier dataset keeps its exports
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_partials(final: Path) -> None:
    """Remove ``.<name>.partial-<pid>`` folders of builds that no longer run."""
    for folder in final.parent.glob(f".{final.name}.partial-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # that build is still running
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        shutil.rmtree(folder, ignore_errors=True)
