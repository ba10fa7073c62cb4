"""X-ray annotation recipes: lung masks, boxes and scores on the images' square copies.

A recipe of task ``segmentation``, ``detection`` or ``regression`` (X-ray) keeps the images that
carry its annotation and brings the annotation onto the square copy the dataset holds:

- **masks** (``segmentation``; instance masks of ``detection``): sampled by nearest neighbour on
  exactly the grid the image was resampled on (:mod:`covid19_images.process.annotations`), as
  0/1 label maps (1 = ``recipe.mask_label``);
- **boxes** (``detection``): COCO ``[x, y, width, height]`` in the radiograph's pixels, mapped
  through the same centre-square cut and resize into the copy's pixels as ``(x0, y0, x1, y1)``;
- **targets** (``regression``): numbers read from the record's attributes, checked against the
  recipe's ranges.

Bad input is one ``problems.csv`` row each and the build goes on: a mask of another aspect ratio
than its image (``mask-mismatch``; one of the same aspect is scaled onto the image), an empty
mask (``empty-mask``), a box partly outside its image (``box-outside``, ``repaired``: clipped)
or wholly outside it (``box-outside``, ``skipped``), a box frame of another aspect than the
image (``bad-value``), a score that is not a number or out of range (``bad-value``).

The dataset folder holds ``<split>/images/<uid>.png`` and, where there is a mask,
``<split>/labels/<uid>.png``; the packed arrays with ``<split>_<size>_mask.npy`` beside the
images (segmentation and detection), the targets as columns of ``packed.parquet`` (regression),
and ``boxes.parquet`` (detection: one row per box, in the packed arrays' pixels).

Example:
    >>> from covid19_images.assemble.build import build
    >>> result = build("xray-lung-seg", out="out", mirror="../shared/sources")  # doctest: +SKIP
    >>> result.manifest[["path", "mask_path"]].head(1)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from PIL import Image

from covid19_images.assemble.recipe import Recipe
from covid19_images.loaders.boxes import BOX_COLUMNS, BOXES
from covid19_images.loaders.packed import INDEX
from covid19_images.problems import ProblemLog
from covid19_images.process.annotations import AnnotationTask, grid_and_masks
from covid19_images.process.executor import Executor
from covid19_images.process.grid import SquareGrid, aspect_matches
from covid19_images.process.pipeline import Params
from covid19_images.records import Record

ANNOTATED_TASKS: Final = frozenset({"segmentation", "detection", "regression"})
MIN_BOX_SIDE: Final = 1.0
"""A box that keeps less than one pixel of width or height inside the square copy is left out
(detection models need boxes of positive size)."""


@dataclass
class Annotation:
    """What an annotation recipe keeps of one record, in the square copy's pixels."""

    mask: Path | None = None
    """The cached 0/1 mask PNG at the dataset's size, or None."""
    boxes: list[tuple[str, float, float, float, float]] = field(default_factory=list)
    """``(label, x0, y0, x1, y1)``."""
    targets: dict[str, float] = field(default_factory=dict)
    cut: int = 0
    """Boxes that the centre-square cut shortened (kept, clipped to the copy)."""


def annotated(recipe: Recipe) -> bool:
    """Whether ``recipe`` is an X-ray annotation recipe (segmentation, detection, regression).

    Example:
        >>> from covid19_images.assemble.recipe import load_recipe
        >>> annotated(load_recipe("xray-lung-seg")), annotated(load_recipe("xray-covid"))
        (True, False)
    """
    return recipe.task in ANNOTATED_TASKS and "CT" not in recipe.modality


def wanted(recipe: Recipe, records: list[Record], log: ProblemLog) -> list[Record]:
    """The records that carry the recipe's annotation, before any pixel is read; every other
    one is a ``filtered`` row (and a target that is no number or out of range a ``bad-value``
    row)."""
    kept = []
    for r in records:
        why = _lacks(recipe, r, log)
        if why is None:
            kept.append(r)
        elif why:
            log.add(r.source, r.path_raw, r.source_row, "filtered", "excluded", why)
    return kept


def _lacks(recipe: Recipe, r: Record, log: ProblemLog) -> str | None:
    """Why ``r`` has nothing for the recipe (``""``: already reported), or None."""
    if recipe.task == "segmentation":
        return None if r.mask_paths else "no mask, and the recipe segments"
    if recipe.task == "detection":
        labels = {b.get("label") for b in _boxes_of(r)}
        if labels & set(recipe.box_labels):
            return None
        return f"no box of {', '.join(recipe.box_labels)}, and the recipe detects them"
    for name, spec in recipe.targets.items():
        raw = r.attributes.get(spec.attribute)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return f"no {name} score ({spec.attribute}), and the recipe regresses it"
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and spec.min <= value <= spec.max):
            log.add(
                r.source,
                r.path_raw,
                r.source_row,
                "bad-value",
                "skipped",
                f"{name} score {raw!r} ({spec.attribute}) is not a number from {spec.min:g} "
                f"to {spec.max:g}",
            )
            return ""
    return None


def _boxes_of(r: Record) -> list[dict[str, Any]]:
    boxes = r.attributes.get("boxes")
    return [b for b in boxes if isinstance(b, dict)] if isinstance(boxes, list) else []


def annotate(
    recipe: Recipe,
    records: list[Record],
    roots: dict[str, Path],
    cache: Path,
    params: Params,
    size: int,
    executor: Executor,
    log: ProblemLog,
) -> tuple[list[Record], dict[str, Annotation]]:
    """Place every processed record's annotation on its square copy; returns the records that
    keep a usable annotation and what each keeps (by uid)."""
    masked = recipe.task in ("segmentation", "detection")
    tasks = [
        AnnotationTask(
            image=str(roots[r.source] / r.path_raw),
            key=r.processed_key or "",
            size=size,
            sizes=params.sizes,
            cache=str(cache),
            mask=str(roots[r.source] / r.mask_paths[0]) if masked and r.mask_paths else None,
            max_pixels=params.max_pixels,
        )
        for r in records
    ]
    placed = grid_and_masks(tasks, executor) if tasks else []
    kept: list[Record] = []
    found: dict[str, Annotation] = {}
    for r, meta in zip(records, placed, strict=True):
        note = Annotation()
        if "grid" not in meta:
            log.add(r.source, r.path_raw, r.source_row, "unreadable-file", "skipped", meta["error"])
            continue
        grid = SquareGrid(**meta["grid"])
        if meta.get("error_kind"):
            whole = recipe.task == "segmentation"
            log.add(
                r.source,
                r.mask_paths[0],
                r.source_row,
                str(meta["error_kind"]),
                "skipped",
                f"{meta['error']} (image {r.path_raw}: "
                + ("left out, the recipe segments)" if whole else "kept without instance masks)"),
            )
            if whole:
                continue
            r.problems.append(str(meta["error_kind"]))
        elif "mask" in meta:
            note.mask = Path(meta["mask"])
            if "mask_scaled_from" in meta:
                r.attributes["mask_scaled_from"] = meta["mask_scaled_from"]
        if recipe.task == "detection":
            note.boxes, note.cut = _place_boxes(recipe, r, grid, log)
            if not note.boxes:
                log.add(
                    r.source,
                    r.path_raw,
                    r.source_row,
                    "filtered",
                    "excluded",
                    "no box left inside the image's square copy, and the recipe detects them",
                )
                continue
        if recipe.task == "regression":
            note.targets = {
                name: float(r.attributes[spec.attribute]) for name, spec in recipe.targets.items()
            }
        kept.append(r)
        found[r.uid] = note
    return kept, found


def _place_boxes(
    recipe: Recipe, r: Record, grid: SquareGrid, log: ProblemLog
) -> tuple[list[tuple[str, float, float, float, float]], int]:
    """``r``'s boxes in the copy's pixels, and how many the centre-square cut shortened."""
    width, height = r.width or grid.width, r.height or grid.height
    sx = sy = 1.0
    frame = r.attributes.get("boxes_frame")
    if isinstance(frame, list) and len(frame) == 2 and tuple(frame) != (width, height):
        fw, fh = int(frame[0]), int(frame[1])
        if not aspect_matches(width, height, fw, fh):
            log.add(
                r.source,
                r.path_raw,
                r.source_row,
                "bad-value",
                "skipped",
                f"its boxes are drawn on a {fw} x {fh} px frame, the image is {width} x "
                f"{height} px: another aspect ratio, so the boxes are not used",
            )
            return [], 0
        sx, sy = width / fw, height / fh
    boxes: list[tuple[str, float, float, float, float]] = []
    cut = 0
    for n, box in enumerate(_boxes_of(r), 1):
        label = str(box.get("label"))
        if label not in recipe.box_labels:
            log.add(
                r.source,
                r.path_raw,
                r.source_row,
                "filtered",
                "excluded",
                f"box {n}: label {label} is not one of the recipe's "
                f"({', '.join(recipe.box_labels)})",
            )
            continue
        x, y, w, h = (float(v) for v in box["bbox"])
        x0, y0, x1, y1 = x * sx, y * sy, (x + w) * sx, (y + h) * sy
        said = f"box {n} ({label}) [{x:g}, {y:g}, {w:g}, {h:g}]"
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            log.add(
                r.source,
                r.path_raw,
                r.source_row,
                "box-outside",
                "skipped",
                f"{said} lies wholly outside the {width} x {height} px image",
            )
            continue
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            log.add(
                r.source,
                r.path_raw,
                r.source_row,
                "box-outside",
                "repaired",
                f"{said} reaches outside the {width} x {height} px image: clipped to it",
            )
            x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)
        u0, v0, u1, v1 = grid.box_to_copy((x0, y0, x1, y1))
        c0, d0 = max(u0, 0.0), max(v0, 0.0)
        c1, d1 = min(u1, float(grid.size)), min(v1, float(grid.size))
        if c1 - c0 < MIN_BOX_SIDE or d1 - d0 < MIN_BOX_SIDE:
            log.add(
                r.source,
                r.path_raw,
                r.source_row,
                "box-outside",
                "excluded",
                f"{said} lies outside the centred square the image is cut to (or less than a "
                "pixel of it inside)",
            )
            continue
        cut += (c0, d0, c1, d1) != (u0, v0, u1, v1)
        boxes.append((label, c0, d0, c1, d1))
    return boxes, cut


def layout(recipe: Recipe, frame: pd.DataFrame, annotations: dict[str, Annotation]) -> pd.DataFrame:
    """The manifest of an annotation dataset: ``path`` (``<split>/images/<uid>.png``),
    ``mask_path`` (``<split>/labels/<uid>.png`` or None), ``boxes`` (detection: how many) and
    one float column per target (regression)."""
    frame = frame.copy()
    frame["path"] = [
        f"{s}/images/{u}.png" for u, s in zip(frame["uid"], frame["split"], strict=True)
    ]
    frame["mask_path"] = [
        f"{s}/labels/{u}.png" if annotations[u].mask is not None else None
        for u, s in zip(frame["uid"], frame["split"], strict=True)
    ]
    if recipe.task == "detection":
        frame["boxes"] = [len(annotations[u].boxes) for u in frame["uid"]]
    for name in recipe.targets if recipe.task == "regression" else ():
        frame[name] = [annotations[u].targets[name] for u in frame["uid"]]
    return frame


def mask_reader(folder: Path, manifest: pd.DataFrame, size: int) -> Any:
    """``masks(uid, slice)`` for the packed writer: each row's written label map (zeros where
    the image has none)."""
    paths = dict(zip(manifest["uid"].astype(str), manifest["mask_path"], strict=True))

    def masks(uid: str, _slice: int) -> np.ndarray:
        rel = paths.get(uid)
        if rel is None or (isinstance(rel, float) and math.isnan(rel)):
            return np.zeros((size, size), np.uint8)
        with Image.open(folder / str(rel)) as img:
            return np.asarray(img.convert("L"))

    return masks


def write_boxes(
    folder: Path, recipe: Recipe, manifest: pd.DataFrame, annotations: dict[str, Annotation]
) -> None:
    """``boxes.parquet``: one row per box, keyed by the packed row (after the packed index is
    written)."""
    index = pd.read_parquet(folder / INDEX, columns=["split", "index", "uid"])
    where = {str(u): (str(s), int(i)) for s, i, u in index.itertuples(index=False)}
    has_mask = dict(zip(manifest["uid"].astype(str), manifest["mask_path"].notna(), strict=True))
    rows = []
    for uid in manifest["uid"].astype(str):
        split, row = where[uid]
        for n, (label, x0, y0, x1, y1) in enumerate(annotations[uid].boxes):
            rows.append(
                (
                    split,
                    row,
                    uid,
                    n,
                    label,
                    recipe.box_labels.index(label) + 1,
                    x0,
                    y0,
                    x1,
                    y1,
                    bool(has_mask[uid]),
                )
            )
    frame = pd.DataFrame(rows, columns=list(BOX_COLUMNS))
    frame.to_parquet(folder / BOXES, index=False)


def datasheet_lines(
    recipe: Recipe, manifest: pd.DataFrame, annotations: dict[str, Annotation]
) -> list[str]:
    """The datasheet's section on the annotations: where they come from, counts, caveats."""
    lines = ["## Annotations", "", *(f"- {note}" for note in recipe.annotation_notes), ""]
    masks = manifest["mask_path"].notna()
    scaled = manifest["attributes"].str.contains('"mask_scaled_from"', regex=False)
    if recipe.task in ("segmentation", "detection"):
        lines.append(
            f"- {int(masks.sum())} of {len(manifest)} images have a {recipe.mask_label} mask "
            f"(label map: 0 background, 1 {recipe.mask_label}), sampled by nearest neighbour on "
            f"the image's own grid; {int(scaled.sum())} masks were stored at another size of "
            "the same aspect ratio and scaled onto their image."
        )
    if recipe.task == "detection":
        boxes = [b for a in annotations.values() for b in a.boxes]
        per_label = {label: sum(b[0] == label for b in boxes) for label in recipe.box_labels}
        said = ", ".join(f"{n} {label}" for label, n in per_label.items())
        cut = sum(a.cut for a in annotations.values())
        lines.append(
            f"- {len(boxes)} boxes ({said}) in the square copies' pixels "
            f"(`boxes.parquet`, x0 y0 x1 y1); {cut} were shortened by the centre-square cut. "
            "Instance masks are the mask inside each box, where the image has a mask."
        )
    if recipe.task == "regression":
        for name, spec in recipe.targets.items():
            values = manifest[name].astype(float)
            by_split = ", ".join(
                f"{s} {values[manifest['split'] == s].mean():.2f}"
                for s in ("train", "val", "test")
                if (manifest["split"] == s).any()
            )
            lines.append(
                f"- `{name}` ({spec.description or spec.attribute}; {spec.min:g}-{spec.max:g}): "
                f"{len(values)} images, from {values.min():.2f} to {values.max():.2f}; mean per "
                f"split: {by_split}."
                if len(values)
                else f"- `{name}`: no image."
            )
    return [*lines, ""]
