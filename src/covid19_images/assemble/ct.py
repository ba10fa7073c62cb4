"""CT datasets: HU volumes, windowed slices and image/mask pairs, split by patient.

A CT recipe's records are volumes (DICOM series, NIfTI files, slice stacks) and 2-D slices cut
from papers. Volumes go through :mod:`covid19_images.process.ct.pipeline`; 2-D slices through the
same pipeline and near-duplicate search as radiographs. Every record is split by patient (and
duplicate cluster), so all slices of one patient land in one split.

A classification dataset (``task = "classification"``) holds::

    <name>/
      train/ val/ test/<class>/<uid>_<k>.png    every axial slice of every volume, and the 2-D
                                                slices (<uid>.png): ImageFolder-ready
      volumes/<split>/<class>/<uid>.nii.gz      HU volumes (volume level)
      manifest.parquet                          one row per volume or 2-D slice
      slices.parquet                            one row per PNG (uid, slice, path, slice_label)
      datalist.json                             MONAI datalist of the volumes

A segmentation dataset (``task = "segmentation"``) holds ``<split>/images/<uid>.nii.gz`` and
``<split>/labels/<uid>.nii.gz`` on the same grid, ``datalist.json`` with image/label pairs and,
when the recipe names one, an nnU-Net raw dataset ``nnunet/DatasetNNN_Name/``. Both also have
``problems.csv``, ``duplicates.csv``, ``lock.json``, ``audit.json`` and ``datasheet.md``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covid19_images import __version__
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
    split_slices,
    summarize,
)
from covid19_images.assemble.recipe import Recipe
from covid19_images.assemble.result import AssemblyJob, BuildResult
from covid19_images.assemble.splits import split_records
from covid19_images.dedup.clusters import DedupResult, deduplicate
from covid19_images.loaders.packed import write_packed
from covid19_images.problems import ProblemLog
from covid19_images.process.ct.masks import LABELS, lesion_only
from covid19_images.process.ct.pipeline import (
    CT_PROCESS_VERSION,
    CtParams,
    display_array,
    is_volume,
    process_volumes,
    slice_path,
    square,
    volume_dir,
)
from covid19_images.process.ct.volume import read_nifti, voxel_limit, write_nifti
from covid19_images.process.pipeline import PROCESS_VERSION, Params, output_dir, process_records
from covid19_images.records import Record, records_frame

SLICES = "slices.parquet"
DATALIST = "datalist.json"
SPLITS = ("train", "val", "test")


def assemble_ct(
    recipe: Recipe, selected: list[Record], classes: dict[str, str], job: AssemblyJob
) -> BuildResult:
    """Process, deduplicate, split and write the records a CT recipe selected.

    Called by :func:`~covid19_images.assemble.build.build` for recipes of modality CT.

    Example:
        >>> from covid19_images.assemble.build import build
        >>> result = build("ct-covid", out="out", mirror="../shared/sources")  # doctest: +SKIP
        >>> result.manifest.groupby(["level", "class"]).size()  # doctest: +SKIP
    """
    log = job.log
    # Absolute from here on: the packed arrays are written from inside the staging folder, so
    # a cache path relative to the working directory (``--root root``) would be read from there.
    roots = {s: located.path.absolute() for s, located in job.used.items()}
    base = job.base.absolute()
    segmentation = recipe.task == "segmentation"
    volumes = [r for r in selected if is_volume(r)]
    images = [r for r in selected if not is_volume(r)]
    if segmentation:
        volumes = _with_masks(volumes, log)
        for r in images:
            _leave_out(log, r, "a 2-D image without a mask, and the recipe segments")
        images = []
    ct_cache = base / "processed" / "ct"
    params = CtParams(size=job.size, window=recipe.window)
    volumes = process_volumes(
        volumes,
        roots,
        ct_cache,
        params=params,
        executor=job.executor,
        log=log,
        max_voxels=voxel_limit(job.max_pixels),
    )
    if segmentation:
        kept_volumes = []
        for r in volumes:
            if r.attributes.get("has_mask"):
                kept_volumes.append(r)
            else:
                _leave_out(log, r, "no usable mask, and the recipe segments")
        volumes = kept_volumes
    scratch = ProblemLog() if job.naive else log  # a naive build keeps the copies it finds
    every_volume = volumes
    volumes, volume_pairs = _exact_volume_copies(volumes, scratch)
    if job.naive:
        volumes = every_volume

    image_cache = base / "processed" / "ct-2d"
    image_params = Params(sizes=tuple(sorted({224, 512, job.size})), max_pixels=job.max_pixels)
    if images:
        images, _ = process_records(
            images, roots, image_cache, params=image_params, executor=job.executor, log=log
        )
    dedup = deduplicate(
        images,
        image_cache,
        scratch,
        **recipe.dedup.model_dump(),
        progress=job.progress,
    )
    dedup.pairs = (
        pd.concat([dedup.pairs, volume_pairs], ignore_index=True)
        if len(volume_pairs)
        else dedup.pairs
    )
    if job.naive:
        keep_copies(scratch, log, volumes + images)
        dedup.kept = images
    images = dedup.kept
    if job.dicom and images:
        write_dicoms(images, roots, image_cache, deid_salt(base), job.executor, log)
    kept = volumes + images
    for r in kept:  # file names can carry upstream ids; the folder and the digests stay
        files = r.attributes.get("files")
        if isinstance(files, list):
            r.attributes["files"] = len(files)
    naive: NaiveSummary | None = None
    if job.naive:
        fractions = fractions_of(recipe, kept, False)
        splits = random_split([classes[r.uid] for r in kept], fractions, job.seed)
        unit = "sample" if segmentation else "slice"
        clusters = len(dedup.report.clusters) + len(
            {r.attributes.get("dup_cluster") for r in volumes} - {None}
        )
        split_of = {r.uid: sp for r, sp in zip(kept, splits, strict=True)}
        naive = summarize(log, dedup.pairs, clusters, fractions, job.seed, unit, split_of)
    else:
        splits = split_records(recipe, kept, classes, False, job.seed) if kept else []
    manifest = _manifest(kept, classes, splits, job.size, segmentation)
    process = {
        "ct": {"size": job.size, "window": recipe.window, "version": CT_PROCESS_VERSION},
        "sizes": list(image_params.sizes),
        "version": PROCESS_VERSION,
        "max_pixels": job.max_pixels,  # build(lock=...) rebuilds with the same limit
    }
    lock_data = make_lock(
        recipe,
        job.seed,
        job.size,
        kept,
        job.used,
        job.missing,
        process,
        naive.as_dict() if naive is not None else None,
    )
    if job.locked is not None:
        check_lock(job.locked, lock_data)
    _write(recipe, job, manifest, kept, ct_cache, image_cache, dedup, lock_data, naive)
    return BuildResult(job.final, manifest, log, job.used, job.missing, dedup, naive=job.naive)


def _leave_out(log: ProblemLog, r: Record, why: str) -> None:
    log.add(r.source, r.path_raw, r.source_row, "filtered", "excluded", why)


def _with_masks(volumes: list[Record], log: ProblemLog) -> list[Record]:
    kept = []
    for r in volumes:
        if r.mask_paths:
            kept.append(r)
        else:
            _leave_out(log, r, "no mask, and the recipe segments")
    return kept


def _exact_volume_copies(
    volumes: list[Record], log: ProblemLog
) -> tuple[list[Record], pd.DataFrame]:
    """Volumes with identical voxels (one study in two sources): the first by uid is kept."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in volumes:
        groups[r.sha256_pixels or r.uid].append(r)
    kept, pairs = [], []
    for members in groups.values():
        members.sort(key=lambda r: r.uid)
        first = members[0]
        kept.append(first)
        for other in members[1:]:
            other.attributes["dup_cluster"] = first.uid
            first.attributes["dup_cluster"] = first.uid
            log.add(
                other.source,
                other.path_raw,
                other.source_row,
                "duplicate",
                "excluded",
                f"the same voxels as {first.source} {first.path_raw} (kept)",
            )
            pairs.append(
                {
                    "uid_a": first.uid,
                    "uid_b": other.uid,
                    "source_a": first.source,
                    "source_b": other.source,
                    "exact": True,
                    "hamming": 0,
                    "correlation": 1.0,
                    "detail": 1.0,
                }
            )
    return kept, pd.DataFrame(pairs)


def _manifest(
    kept: list[Record],
    classes: dict[str, str],
    splits: list[str],
    size: int,
    segmentation: bool,
) -> pd.DataFrame:
    frame = records_frame(kept)
    split_of = {r.uid: s for r, s in zip(kept, splits, strict=True)}
    volume = {r.uid: is_volume(r) for r in kept}
    frame["split"] = frame["uid"].map(split_of)
    frame["class"] = frame["uid"].map(classes)
    frame["level"] = ["volume" if volume[u] else "image" for u in frame["uid"]]
    paths: list[str] = []
    masks: list[str | None] = []
    for uid, split, name in zip(frame["uid"], frame["split"], frame["class"], strict=True):
        if segmentation:
            paths.append(f"{split}/images/{uid}.nii.gz")
            masks.append(f"{split}/labels/{uid}.nii.gz")
        elif volume[uid]:
            paths.append(f"volumes/{split}/{name}/{uid}.nii.gz")
            masks.append(None)
        else:
            paths.append(f"{split}/{name}/{uid}.png")
            masks.append(None)
    frame["path"] = paths
    frame["mask_path"] = masks
    frame["size"] = size
    return frame.sort_values("uid", kind="stable").reset_index(drop=True)


def _slice_rows(manifest: pd.DataFrame, kept: dict[str, Record]) -> pd.DataFrame:
    """One row per slice PNG of a classification dataset."""
    rows: list[dict[str, Any]] = []
    for row in manifest.to_dict("records"):
        r = kept[str(row["uid"])]
        base = {
            "uid": row["uid"],
            "patient_id": row["patient_id"],
            "split": row["split"],
            "class": row["class"],
            "source": row["source"],
        }
        if row["level"] == "image":
            rows.append({**base, "slice": None, "path": row["path"], "slice_label": None})
            continue
        n = int(r.attributes.get("slices", 0))
        labels = r.attributes.get("slice_labels")
        usable = isinstance(labels, list) and len(labels) == n
        for k in range(n):
            rows.append(
                {
                    **base,
                    "slice": k,
                    "path": f"{row['split']}/{base['class']}/{row['uid']}_{k:04d}.png",
                    "slice_label": int(labels[k]) if usable and labels is not None else None,
                }
            )
    frame = pd.DataFrame(
        rows,
        columns=["uid", "patient_id", "split", "class", "source", "slice", "path", "slice_label"],
    )
    frame["slice"] = frame["slice"].astype("Int64")
    frame["slice_label"] = frame["slice_label"].astype("Int64")
    return frame


def _write(
    recipe: Recipe,
    job: AssemblyJob,
    manifest: pd.DataFrame,
    kept: list[Record],
    ct_cache: Path,
    image_cache: Path,
    dedup: DedupResult,
    lock_data: dict[str, Any],
    naive: NaiveSummary | None = None,
) -> None:
    from covid19_images.assemble.datasheet import write_datasheet

    by_uid = {r.uid: r for r in kept}
    segmentation = recipe.task == "segmentation"
    with staging(job.final) as tmp:
        montage = manifest.copy()
        if segmentation:
            _write_pairs(recipe, tmp, manifest, by_uid, ct_cache)
            _pack_pairs(tmp, manifest, by_uid, ct_cache, recipe, job.size)
        else:
            slices = _slice_rows(manifest, by_uid)
            if naive is not None:  # every slice of a volume on its own
                slices = split_slices(slices, naive.fractions, naive.seed)
            for row in slices.to_dict("records"):
                r = by_uid[str(row["uid"])]
                key = r.processed_key or ""
                if pd.isna(row["slice"]):
                    source = output_dir(image_cache, key) / f"{job.size}.png"
                else:
                    source = slice_path(ct_cache, key, job.size, int(row["slice"]))
                link(source, tmp / str(row["path"]))
            for row in manifest.to_dict("records"):
                if row["level"] == "volume":
                    key = by_uid[str(row["uid"])].processed_key or ""
                    link(volume_dir(ct_cache, key) / "image.nii.gz", tmp / str(row["path"]))
            slices.to_parquet(tmp / SLICES, index=False)
            write_packed(
                tmp,
                slices,
                sorted(recipe.classes),
                job.size,
                f"covid19-images {__version__}",
                progress=job.progress,
            )
            middle = (
                slices.dropna(subset=["slice"])
                .groupby("uid")["path"]
                .agg(lambda p: p.iloc[len(p) // 2])
            )
            montage["path"] = [
                middle.get(u, p) for u, p in zip(montage["uid"], montage["path"], strict=True)
            ]
        if naive is not None:
            mark_packed(tmp)
        _write_datalist(tmp, manifest, recipe)
        expected = job.locked.get("manifest_sha256") if job.locked else None
        report = write_tables(tmp, recipe, manifest, job.log, dedup, lock_data, expected)
        write_datasheet(
            tmp,
            recipe,
            manifest,
            job.log,
            dedup,
            report,
            job.used,
            job.missing,
            montage=None if segmentation else montage,
            extra=_ct_section(manifest, recipe),
            naive=naive,
        )
        write_state(tmp, job.state)


def _pack_pairs(
    folder: Path,
    manifest: pd.DataFrame,
    by_uid: dict[str, Record],
    ct_cache: Path,
    recipe: Recipe,
    size: int,
) -> None:
    """The packed arrays of a segmentation dataset: every axial slice and its label map."""
    rows = []
    for row in manifest.to_dict("records"):
        r = by_uid[str(row["uid"])]
        for k in range(int(r.attributes.get("slices", 0))):
            rows.append(
                {
                    "uid": row["uid"],
                    "split": row["split"],
                    "class": row["class"],
                    "slice": k,
                    "path": str(slice_path(ct_cache, r.processed_key or "", size, k)),
                }
            )
    items = pd.DataFrame(rows, columns=["uid", "split", "class", "slice", "path"])
    mask_of = {str(u): str(m) for u, m in zip(manifest["uid"], manifest["mask_path"], strict=True)}
    current: dict[str, np.ndarray] = {}

    def masks(uid: str, k: int) -> np.ndarray:
        if uid not in current:
            current.clear()
            current[uid] = display_array(read_nifti(folder / mask_of[uid]))
        return square(current[uid][k], size, labels=True)

    write_packed(
        folder, items, sorted(recipe.classes), size, f"covid19-images {__version__}", masks
    )


def _label_map(recipe: Recipe) -> dict[str, int]:
    if recipe.mask_labels == "lesion":
        return {"background": 0, "lesion": 1}
    return dict(LABELS)


def _write_pairs(
    recipe: Recipe,
    tmp: Path,
    manifest: pd.DataFrame,
    by_uid: dict[str, Record],
    ct_cache: Path,
) -> None:
    """Image and label volumes per split, and the nnU-Net raw dataset when the recipe asks."""
    for row in manifest.to_dict("records"):
        folder = volume_dir(ct_cache, by_uid[str(row["uid"])].processed_key or "")
        link(folder / "image.nii.gz", tmp / str(row["path"]))
        if recipe.mask_labels == "lesion":
            mask = read_nifti(folder / "mask.nii.gz")
            mask.array = lesion_only(mask.array)
            (tmp / str(row["mask_path"])).parent.mkdir(parents=True, exist_ok=True)
            write_nifti(mask, tmp / str(row["mask_path"]))
        else:
            link(folder / "mask.nii.gz", tmp / str(row["mask_path"]))
    if recipe.nnunet_dataset:
        write_nnunet(
            tmp,
            manifest,
            tmp / "nnunet" / recipe.nnunet_dataset,
            _label_map(recipe),
            recipe.description,
        )


def write_nnunet(
    folder: Path,
    manifest: pd.DataFrame,
    target: Path,
    labels: dict[str, int],
    description: str = "",
) -> None:
    """An nnU-Net v2 raw dataset of a segmentation dataset's image/label pairs.

    Train and val cases go to ``imagesTr``/``labelsTr`` (with ``splits_final.json`` giving our
    train/val as fold 0), test cases to ``imagesTs``/``labelsTs``. Case ids are the record uids;
    files are hard links to the dataset's own.

    Example:
        >>> write_nnunet(Path("ds"), manifest, Path("ds/nnunet/Dataset501_X"),
        ...              {"background": 0, "lesion": 1})  # doctest: +SKIP
    """
    fold: dict[str, list[str]] = {"train": [], "val": []}
    for row in manifest.to_dict("records"):
        case = str(row["uid"])
        test = row["split"] == "test"
        images, labels_dir = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
        link(folder / str(row["path"]), target / images / f"{case}_0000.nii.gz")
        link(folder / str(row["mask_path"]), target / labels_dir / f"{case}.nii.gz")
        if not test:
            fold[str(row["split"])].append(case)
    dataset = {
        "name": target.name.split("_", 1)[-1],
        "description": description,
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": len(fold["train"]) + len(fold["val"]),
        "file_ending": ".nii.gz",
        "licence": "see the dataset's datasheet.md: each source's own licence",
        "reference": "covid19-images; research use only, not a diagnostic device",
    }
    target.mkdir(parents=True, exist_ok=True)
    (target / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    splits = [{"train": sorted(fold["train"]), "val": sorted(fold["val"])}]
    (target / "splits_final.json").write_text(json.dumps(splits, indent=2) + "\n", encoding="utf-8")


def _write_datalist(folder: Path, manifest: pd.DataFrame, recipe: Recipe) -> None:
    """A MONAI datalist (``load_decathlon_datalist`` format) of the volumes, paths relative."""
    names = sorted(recipe.classes)
    keys = {"train": "training", "val": "validation", "test": "test"}
    data: dict[str, Any] = {"labels": {str(i): n for i, n in enumerate(names)}}
    data.update({k: [] for k in keys.values()})
    for row in manifest.to_dict("records"):
        if row["level"] != "volume":
            continue
        item: dict[str, Any] = {"image": row["path"], "uid": row["uid"]}
        if recipe.task == "segmentation":
            item["label"] = row["mask_path"]
        else:
            item["label"] = names.index(row["class"])
        data[keys[str(row["split"])]].append(item)
    (folder / DATALIST).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _ct_section(manifest: pd.DataFrame, recipe: Recipe) -> list[str]:
    volumes = manifest[manifest["level"] == "volume"]
    hu = volumes["attributes"].map(lambda a: json.loads(a).get("hu"))
    slices = sum(int(json.loads(a).get("slices", 0)) for a in volumes["attributes"])
    lines = [
        "## CT",
        "",
        f"{len(volumes)} volumes ({slices} axial slices) and "
        f"{int((manifest['level'] == 'image').sum())} 2-D slices. Volumes are int16 Hounsfield "
        f"units, RAS+ oriented NIfTI; slices are the {recipe.window} window "
        f"(centre/width {'/'.join(str(int(v)) for v in _window(recipe))} HU) as uint8 PNG.",
        "",
    ]
    not_hu = volumes[hu == False]  # noqa: E712 - None means unknown, kept apart
    if len(not_hu):
        lines += [
            f"- {len(not_hu)} volumes are **not in Hounsfield units** (upstream rescaled them, "
            f"e.g. Radiopaedia cases to 0-255): {', '.join(sorted(set(not_hu['source'])))}. "
            "Their slices are contrast-stretched, not windowed; do not mix their values with HU.",
        ]
    derived = volumes[volumes["tags"].map(lambda t: "derived" in list(t))]
    if len(derived):
        lines.append(
            f"- {len(derived)} volumes are DERIVED/REFORMATTED series (not original "
            "acquisitions); they are kept apart from ORIGINAL series and tagged `derived`."
        )
    if recipe.task == "segmentation":
        lines.append(
            "- Labels: "
            + ", ".join(f"{v} {k}" for k, v in _label_map(recipe).items())
            + " (lesion = ground glass, consolidation or infection; pleural effusion and lungs "
            "are background)."
            if recipe.mask_labels == "lesion"
            else "- Labels: " + ", ".join(f"{v} {k}" for k, v in LABELS.items()) + "."
        )
    lines += [
        "- A positive CT can support COVID-19; a negative scan rules nothing out.",
        "",
    ]
    return lines


def _window(recipe: Recipe) -> tuple[float, float]:
    from covid19_images.process.ct.volume import WINDOWS

    return WINDOWS[recipe.window]


__all__ = ["assemble_ct", "write_nnunet"]
