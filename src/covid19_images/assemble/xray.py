"""X-ray datasets: square copies of radiographs, split by patient and copy, never leaking.

A recipe's selected records are processed (decoded once, hashed, square copies; cached in
``<root>/processed/xray``), deduplicated across sources, given a de-identified DICOM each, split
(by patient and duplicate cluster, or as COVIDx splits them for a membership recipe) so that the
audit's own cross-split copy check finds nothing, and written::

    <name>/
      train/ val/ test/<class>/<uid>.png     ImageFolder-ready
      <split>_<size>.npy, packed.parquet, packed.json
      manifest.parquet, problems.csv, duplicates.csv, lock.json, audit.json, datasheet.md

An annotation recipe (segmentation, detection, regression) keeps the images that carry its
annotation and writes ``<split>/images/<uid>.png`` beside ``<split>/labels/<uid>.png`` (masks),
the masks packed as ``<split>_<size>_mask.npy``, ``boxes.parquet`` (detection) and the targets in
``packed.parquet`` (regression): :mod:`covid19_images.assemble.annotated`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from covid19_images import __version__
from covid19_images.assemble.annotated import (
    Annotation,
    annotate,
    annotated,
    datasheet_lines,
    layout,
    mask_reader,
    wanted,
    write_boxes,
)
from covid19_images.assemble.dicoms import deid_salt, write_dicoms
from covid19_images.assemble.fingerprint import write_state
from covid19_images.assemble.folder import link, staging, write_tables
from covid19_images.assemble.lockfile import check_lock, make_lock
from covid19_images.assemble.naive import (
    NaiveSummary,
    fractions_of,
    keep_copies,
    mark_packed,
    random_split,
    summarize,
)
from covid19_images.assemble.recipe import Recipe
from covid19_images.assemble.result import AssemblyJob, BuildError, BuildResult, nothing_passes
from covid19_images.assemble.splits import split_records
from covid19_images.dedup.clusters import DedupResult, deduplicate
from covid19_images.fetch import Located
from covid19_images.loaders.packed import write_packed
from covid19_images.problems import ProblemLog
from covid19_images.process.executor import Executor
from covid19_images.process.pipeline import Params, output_dir, process_records
from covid19_images.records import Record, records_frame

if TYPE_CHECKING:
    from covid19_images.audit import FileSignatures


def assemble_xray(
    recipe: Recipe,
    selected: list[Record],
    classes: dict[str, str],
    job: AssemblyJob,
    *,
    upstream: bool = False,
) -> BuildResult:
    """Process, deduplicate, split and write the records an X-ray recipe selected.

    Called by :func:`~covid19_images.assemble.build.build` for recipes of X-ray modalities.
    ``upstream``: keep the split each record's source gave it (a membership recipe, COVIDx).

    Example:
        >>> from covid19_images.assemble.build import build
        >>> result = build("xray-covid", out="out", mirror="../shared/sources")  # doctest: +SKIP
        >>> result.manifest.groupby(["split", "class"]).size()  # doctest: +SKIP
    """
    log, executor, size, seed = job.log, job.executor, job.size, job.seed
    params = Params(sizes=tuple(sorted({224, 512, size})), max_pixels=job.max_pixels)
    cache = job.base / "processed" / "xray"
    roots = {source: located.path for source, located in job.used.items()}
    notes = annotated(recipe)  # segmentation, detection, regression: annotations ride along
    if notes:
        selected = wanted(recipe, selected, log)
        if not selected:
            raise BuildError(nothing_passes(recipe, log))
    processed, _ = process_records(
        selected, roots, cache, params=params, executor=executor, log=log
    )
    annotations: dict[str, Annotation] = {}
    if notes and processed:
        places = job.base / "processed" / "xray-annotations"
        processed, annotations = annotate(
            recipe, processed, roots, places, params, size, executor, log
        )
    if not processed:
        raise BuildError(nothing_passes(recipe, log))
    scratch = ProblemLog() if job.naive else log  # a naive build keeps the copies it finds
    dedup = deduplicate(
        processed,
        cache,
        scratch,
        **recipe.dedup.model_dump(),
        progress=job.progress,
    )
    kept = dedup.kept
    if job.naive:
        keep_copies(scratch, log, processed)
        kept = dedup.kept = processed
    if job.dicom:
        write_dicoms(kept, roots, cache, deid_salt(job.base), executor, log)
    from covid19_images.audit import FileSignatures

    memo = FileSignatures()  # the split check's signatures, reused by the audit
    naive: NaiveSummary | None = None
    if job.naive:
        fractions = fractions_of(recipe, kept, upstream)
        splits = random_split([classes[r.uid] for r in kept], fractions, seed)
        naive = summarize(
            log,
            dedup.pairs,
            len(dedup.report.clusters),
            fractions,
            seed,
            "image",
            {r.uid: sp for r, sp in zip(kept, splits, strict=True)},
        )
        memo.prime(
            [output_dir(cache, r.processed_key or "") / f"{size}.png" for r in kept], executor
        )
    elif upstream:
        splits = split_records(recipe, kept, classes, True, seed)
    else:
        splits = _leak_free_splits(
            recipe, kept, classes, seed, processed, cache, size, memo, executor
        )

    manifest = _manifest(kept, classes, splits, size)
    if notes:
        manifest = layout(recipe, manifest, annotations)
    process = {
        "sizes": list(params.sizes),
        "version": params.version,
        "max_pixels": job.max_pixels,
    }
    lock_data = make_lock(
        recipe,
        seed,
        size,
        kept,
        job.used,
        job.missing,
        process,
        naive.as_dict() if naive is not None else None,
    )
    if job.locked is not None:
        check_lock(job.locked, lock_data)
    _write(
        job.final,
        manifest,
        kept,
        cache,
        size,
        log,
        dedup,
        lock_data,
        recipe,
        job.used,
        job.missing,
        expected_manifest=job.locked.get("manifest_sha256") if job.locked is not None else None,
        state=job.state,
        memo=memo,
        progress=job.progress,
        naive=naive,
        annotations=annotations if notes else None,
    )
    return BuildResult(job.final, manifest, log, job.used, job.missing, dedup, naive=job.naive)


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
        splits = split_records(
            recipe, kept, classes, False, seed, everything=everything, links=links
        )
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
    progress: bool = False,
    naive: NaiveSummary | None = None,
    annotations: dict[str, Annotation] | None = None,
) -> None:
    from covid19_images.assemble.datasheet import write_datasheet

    with staging(final) as tmp:
        keys = {r.uid: r.processed_key or "" for r in kept}
        for uid, rel in zip(manifest["uid"], manifest["path"], strict=True):
            link(output_dir(cache, keys[uid]) / f"{size}.png", tmp / rel)
        extra: list[str] = []
        masks = None
        if annotations is not None:
            for uid, rel in zip(manifest["uid"], manifest["mask_path"], strict=True):
                mask = annotations[uid].mask
                if mask is not None and isinstance(rel, str):
                    link(mask, tmp / rel)
            if recipe.task in ("segmentation", "detection"):
                masks = mask_reader(tmp, manifest, size)
            extra = datasheet_lines(recipe, manifest, annotations)
        write_packed(
            tmp,
            manifest,
            sorted(recipe.classes),
            size,
            f"covid19-images {__version__}",
            masks,
            progress=progress,
            targets=list(recipe.targets) if recipe.task == "regression" else (),
            task=recipe.task if annotations is not None else None,
        )
        if annotations is not None and recipe.task == "detection":
            write_boxes(tmp, recipe, manifest, annotations)
        if naive is not None:
            mark_packed(tmp)
        report = write_tables(
            tmp, recipe, manifest, log, dedup, lock_data, expected_manifest, memo=memo
        )
        write_datasheet(
            tmp, recipe, manifest, log, dedup, report, used, missing, extra=extra, naive=naive
        )
        if state is not None:
            write_state(tmp, state)
