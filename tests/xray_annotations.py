"""A small mirror in the upstream layouts of ieee8023's annotations and the COVID-19 Radiography
Database's masks, generated for tests of the X-ray annotation recipes.

Every radiograph is noise on a mid-grey field with two dark "lungs" (rectangles): the right lung
on the image's left, the left lung on its right. Its lung mask covers exactly the two
rectangles, its COCO boxes are the rectangles, so the anatomy an image shows, its mask and its
boxes can be compared after any resampling or augmentation. Each case below plants one kind of
bad input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

IEEE = "ieee8023-covid-chestxray"
RADIOGRAPHY = "covid19-radiography-database"
DATASET = "COVID-19_Radiography_Dataset"
BOXES = "annotations/imageannotation_ai_lung_bounding_boxes.json"
SEVERITY = "annotations/covid-severity-scores.csv"
DARK, LIGHT = (30, 70), (140, 235)
"""Grey ranges of the lungs and of everything else: a pixel under 110 is lung."""


@dataclass(frozen=True)
class Case:
    """One generated radiograph of ieee8023 and what is planted with it."""

    name: str
    patient: int
    width: int
    height: int
    mask: str | None = "same"
    """``same``, ``half`` (half the size, same aspect), ``aspect`` (another aspect), ``empty``."""
    boxes: str | None = "ok"
    """``ok``, ``partly`` (right box past the right edge), ``wholly`` (a third box outside
    the image), ``frame`` (COCO declares a frame of another aspect)."""
    scores: tuple[float, float] | str | None = (3.0, 2.0)
    """``(geographic, opacity)``, ``blank`` (a row without scores) or ``range`` (opacity 9)."""

    def lungs(self) -> list[tuple[int, int, int, int]]:
        """The two lungs ``(x0, y0, x1, y1)`` in pixels: right lung (image left), left lung;
        where exactly differs from image to image (seeded by the name)."""
        rng = np.random.default_rng(sum(self.name.encode()))
        w, h = self.width, self.height
        f = rng.uniform([0.1, 0.15, 0.36, 0.7, 0.56, 0.75], [0.2, 0.3, 0.44, 0.85, 0.62, 0.9])
        return [
            (round(w * f[0]), round(h * f[1]), round(w * f[2]), round(h * f[3])),
            (round(w * f[4]), round(h * f[1] * 1.1), round(w * f[5]), round(h * f[3] * 0.97)),
        ]


CASES: tuple[Case, ...] = (
    Case("a.png", 1, 200, 160, scores=(3.0, 2.0)),
    Case("b.png", 1, 160, 200, scores=(1.0, 1.0)),
    Case("c.png", 2, 240, 160, mask="half", scores=(4.5, 3.0)),
    Case("d.png", 3, 180, 180, mask="aspect", scores=(2.0, 1.0)),
    Case("e.png", 4, 200, 150, mask="empty", scores=(0.0, 0.0)),
    Case("f.png", 5, 220, 170, boxes="partly", scores=(5.0, 4.0)),
    Case("g.png", 6, 170, 210, boxes="wholly", scores=(6.3, 3.7)),
    Case("h.png", 7, 200, 200, boxes="frame", scores="blank"),
    Case("i.png", 8, 190, 160, scores="range"),
    Case("j.jpg", 9, 1300, 1100, scores=(2.7, 2.0)),
    Case("k.png", 10, 210, 180, boxes=None, scores=(1.7, 1.3)),
    Case("l.png", 11, 200, 170, mask=None, scores=(3.3, 2.3)),
    Case("m.png", 12, 180, 200, scores=(7.0, 5.0)),
    Case("n.png", 13, 230, 190, scores=(0.3, 0.3)),
    Case("o.png", 14, 250, 150, scores=(2.3, 1.7)),
    Case("p.png", 15, 150, 230, scores=(3.7, 2.7)),
)
GHOST = "ghost.png"
"""A COCO image that is not in ``images/``."""
RADIOGRAPHY_IMAGES = ("COVID-1", "COVID-2", "Normal-1")
"""299 x 299 images with 256 x 256 masks, as the database ships them."""


@dataclass
class Mirror:
    root: Path
    cases: dict[str, Case] = field(default_factory=dict)


def chest(width: int, height: int, lungs: list[tuple[int, int, int, int]], seed: int) -> np.ndarray:
    """A grey radiograph with dark rectangular lungs. No two alike (the copy search must keep
    them all): each gets its own smooth field of bright blobs and its own noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    field = np.zeros((height, width))
    for _ in range(6):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.25) * min(width, height)
        field += np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r))
    field = field / max(field.max(), 1e-9)
    low, high = LIGHT
    pixels = low + (high - low - 12) * field + rng.integers(0, 12, size=(height, width))
    pixels = pixels.astype(np.uint8)
    for x0, y0, x1, y1 in lungs:
        pixels[y0:y1, x0:x1] = rng.integers(*DARK, size=(y1 - y0, x1 - x0), dtype=np.uint8)
    return pixels


def lung_mask(width: int, height: int, lungs: list[tuple[int, int, int, int]]) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    for x0, y0, x1, y1 in lungs:
        mask[y0:y1, x0:x1] = 255
    return mask


def write_mirror(root: Path) -> Mirror:
    """Both sources under ``root`` in their upstream layouts."""
    mirror = Mirror(root)
    base = root / IEEE
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "lungVAE-masks").mkdir(parents=True)
    rows = []
    coco_images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    severity = [
        "## COVID-19 Pneumonia Severity Scores (Mean of 3 expert raters),,",
        "## License: CC BY-SA,,",
        "filename,geographic_mean,opacity_mean",
    ]
    for n, case in enumerate(CASES, 1):
        mirror.cases[case.name] = case
        lungs = case.lungs()
        pixels = chest(case.width, case.height, lungs, seed=n)
        image = Image.fromarray(pixels)
        if case.name.endswith(".jpg"):
            image.save(base / "images" / case.name, quality=95)
        else:
            image.save(base / "images" / case.name)
        rows.append(f"{case.patient},0,F,50,COVID-19,Y,PA,X-ray,images,{case.name},CC BY 4.0")
        _write_mask(base, case, lungs)
        if case.boxes is not None:
            frame = (case.width, case.height) if case.boxes != "frame" else (100, 300)
            coco_images.append(
                {"id": n, "file_name": case.name, "width": frame[0], "height": frame[1]}
            )
            boxes = [list(b) for b in lungs]
            if case.boxes == "partly":
                boxes[1][2] = case.width + 40
            if case.boxes == "wholly":
                boxes.append([case.width + 10, 5, case.width + 50, 60])
            for k, (x0, y0, x1, y1) in enumerate(boxes):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": n,
                        "category_id": 1 if k == 0 else 2,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "segmentation": [],
                    }
                )
        if isinstance(case.scores, tuple):
            severity.append(f"{case.name},{case.scores[0]},{case.scores[1]}")
        elif case.scores == "blank":
            severity.append(f"{case.name},,")
        elif case.scores == "range":
            severity.append(f"{case.name},4.0,9.0")
    coco_images.append({"id": 99, "file_name": GHOST, "width": 200, "height": 200})
    annotations.append(
        {"id": 999, "image_id": 99, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500}
    )
    header = (
        "patientid,offset,sex,age,finding,RT_PCR_positive,view,modality,folder,filename,license"
    )
    (base / "metadata.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    (base / SEVERITY).write_text("\n".join(severity) + "\n", encoding="utf-8")
    coco = {
        "info": {"description": "generated"},
        "categories": [
            {"supercategory": "Lungs", "id": 1, "name": "Right Lung"},
            {"supercategory": "Lungs", "id": 2, "name": "Left Lung"},
        ],
        "images": coco_images,
        "annotations": annotations,
        "licenses": [],
    }
    (base / BOXES).write_text(json.dumps(coco), encoding="utf-8")
    _write_radiography(root / RADIOGRAPHY / DATASET)
    return mirror


def _write_mask(base: Path, case: Case, lungs: list[tuple[int, int, int, int]]) -> None:
    if case.mask is None:
        return
    stem = Path(case.name).stem
    mask = lung_mask(case.width, case.height, lungs)
    image = Image.fromarray(mask)
    if case.mask == "half":
        image = image.resize((case.width // 2, case.height // 2), Image.Resampling.NEAREST)
    elif case.mask == "aspect":
        image = image.resize((case.width, case.height * 2 // 3), Image.Resampling.NEAREST)
    elif case.mask == "empty":
        image = Image.new("L", (case.width, case.height), 0)
    image.save(base / "annotations" / "lungVAE-masks" / f"{stem}_mask.png")


def _write_radiography(folder: Path) -> None:
    for seed, name in enumerate(RADIOGRAPHY_IMAGES, 100):
        cls = name.split("-")[0]
        lungs = [(40 + seed % 7, 60, 125, 240 - seed % 9), (174, 55 + seed % 5, 254, 240)]
        (folder / cls / "images").mkdir(parents=True, exist_ok=True)
        (folder / cls / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(chest(299, 299, lungs, seed)).save(folder / cls / "images" / f"{name}.png")
        mask = Image.fromarray(lung_mask(299, 299, lungs)).resize(
            (256, 256), Image.Resampling.NEAREST
        )
        mask.save(folder / cls / "masks" / f"{name}.png")
    for cls in ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"):  # all four, as upstream
        names = [n for n in RADIOGRAPHY_IMAGES if n.startswith(cls)]
        sheet = pd.DataFrame(
            {
                "FILE NAME": names,
                "FORMAT": ["PNG"] * len(names),
                "SIZE": ["256*256"] * len(names),
                "URL": ["https://sirm.org/category/senza-categoria/covid-19/"] * len(names),
            }
        )
        sheet.to_excel(folder / f"{cls}.metadata.xlsx", index=False)


def copy_boxes(case: Case, size: int, scale: int = 1) -> list[tuple[float, float, float, float]]:
    """Where ``case``'s lungs land on its ``size`` px square copy (centre square of the frame
    decoded at ``1 / scale``, resized), clipped to the copy: the expected boxes."""
    w, h = -(-case.width // scale), -(-case.height // scale)
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    k = size / side
    out = []
    for x0, y0, x1, y1 in case.lungs():
        u0, v0 = (x0 / scale - left) * k, (y0 / scale - top) * k
        u1, v1 = (x1 / scale - left) * k, (y1 / scale - top) * k
        out.append((max(u0, 0.0), max(v0, 0.0), min(u1, float(size)), min(v1, float(size))))
    return out
