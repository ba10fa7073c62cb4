"""``export --format coco``: a detection dataset as COCO ``instances`` files, one per split.

Written for a dataset with ``boxes.parquet`` (``xray-lung-boxes``)::

    coco/
      train/<uid>.png  val/...  test/...          the packed-size images (hard links)
      annotations/instances_train.json            one per split
      annotations/instances_val.json
      annotations/instances_test.json

Each file has ``info``, ``licenses``, ``images`` (``id`` = the packed row + 1, ``file_name``
relative to the split folder, ``width``, ``height``, ``uid``), ``categories`` (the recipe's box
labels, ids from 1) and ``annotations``: ``bbox`` ``[x, y, width, height]`` in the image's pixels
(exactly the dataset's boxes), ``category_id``, ``iscrowd`` 0, ``area`` (the instance mask's
pixels where there is a mask, else the box's area) and, where the image has a mask,
``segmentation`` as a compressed RLE (the mask inside the box, as the loaders cut it), which
``pycocotools`` decodes.

Example:
    >>> rle = coco_rle(np.array([[0, 1], [1, 1]], np.uint8))
    >>> rle
    {'size': [2, 2], 'counts': '13'}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covid19_images import RESEARCH_USE_NOTICE, __version__
from covid19_images.assemble.export import ExportError
from covid19_images.assemble.folder import link
from covid19_images.loaders.boxes import BOXES, instance_masks
from covid19_images.loaders.packed import INDEX, SPLITS, open_split, read_meta


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """A binary ``H x W`` mask as COCO's compressed RLE (``pycocotools.mask.encode``'s format:
    runs down the columns, starting with a run of zeros, each written as the difference to the
    run two before in 5-bit groups).

    Example:
        >>> coco_rle(np.zeros((3, 2), np.uint8))
        {'size': [3, 2], 'counts': '6'}
    """
    height, width = mask.shape
    flat = (np.asarray(mask) != 0).reshape(-1, order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat.size and flat[0] == 1:
        runs = [0, *runs]
    return {"size": [int(height), int(width)], "counts": _counts_string(runs)}


def _counts_string(counts: list[int]) -> str:
    """pycocotools' ``rleToString``."""
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def write_coco(folder: Path, target: Path) -> None:
    """Write the COCO layout of the detection dataset in ``folder`` into ``target``.

    Raises:
        ExportError: ``folder`` has no ``boxes.parquet``.
    """
    meta = read_meta(folder)
    if not (folder / BOXES).is_file():
        raise ExportError(
            f"{folder} has no boxes (no {BOXES}): COCO needs a detection dataset "
            "(covid19-images build xray-lung-boxes)"
        )
    index = pd.read_parquet(folder / INDEX)
    lock = json.loads((folder / "lock.json").read_text(encoding="utf-8"))
    recipe = lock.get("recipe", {})
    target.mkdir(parents=True, exist_ok=True)
    (target / "annotations").mkdir()
    for split in SPLITS:
        if split not in meta["splits"]:
            continue
        packed = open_split(folder, split)
        boxes = packed.boxes
        rows = index[index["split"] == split].sort_values("index")
        names = boxes.names if boxes is not None else []
        doc: dict[str, Any] = {
            "info": {
                "description": str(recipe.get("description", "")),
                "version": str(recipe.get("name", "")),
                "contributor": f"covid19-images {__version__}",
                "notice": RESEARCH_USE_NOTICE,
                "licence": "see the dataset's datasheet.md: each source's own licence",
            },
            "licenses": [],
            "categories": [
                {"id": k, "name": name, "supercategory": str(recipe.get("mask_label", ""))}
                for k, name in enumerate(names, 1)
            ],
            "images": [],
            "annotations": [],
        }
        for i, (uid, rel) in enumerate(zip(rows["uid"], rows["path"], strict=True)):
            name = f"{uid}.png"
            link(folder / str(rel), target / split / name)
            doc["images"].append(
                {
                    "id": i + 1,
                    "file_name": name,
                    "width": packed.size,
                    "height": packed.size,
                    "uid": str(uid),
                }
            )
            if boxes is None:
                continue
            xyxy, labels = boxes.boxes[i], boxes.labels[i]
            masked = bool(boxes.masked[i]) and packed.masks is not None
            inst = (
                instance_masks(packed.masks[i], xyxy)
                if masked and packed.masks is not None
                else None
            )
            for n, ((x0, y0, x1, y1), label) in enumerate(zip(xyxy, labels, strict=True)):
                ann: dict[str, Any] = {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "iscrowd": 0,
                    "area": float((x1 - x0) * (y1 - y0)),
                }
                if inst is not None:
                    ann["segmentation"] = coco_rle(inst[n])
                    ann["area"] = float(inst[n].sum())
                doc["annotations"].append(ann)
        (target / split).mkdir(exist_ok=True)
        path = target / "annotations" / f"instances_{split}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
