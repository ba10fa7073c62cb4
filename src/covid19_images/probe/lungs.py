"""Lungs removed: the run's model scored on test images whose lung fields are blacked out.

A model that reads COVID-19 from the lungs cannot do so when the lungs are black: its AUROC
falls towards 0.5. A model that keeps a high AUROC reads something outside them (the body's
size, markers, text, the field of view, the collection the image came from); Maguolo and Nanni
(2021, "A critic evaluation of methods for COVID-19 automatic detection from X-ray images",
Information Fusion 76) found exactly that for models trained on the usual COVID-19 collections.

The lung fields come from a real lung mask where the manifest names one of a source known to
ship lung masks (:data:`LUNG_MASK_SOURCES`), read at the packed size with the geometry of the
build by :func:`covid19_images.explanation.energy.load_masks` (centre square, then
nearest-neighbour resampling); elsewhere from a fixed region,
:data:`LUNG_ELLIPSES`: two ellipses where the lungs of a frontal (PA or AP) radiograph lie in
its centre square. Their geometry was fitted to the 209 lungVAE lung masks of the ieee8023
collection (read at 64 px as above): among symmetric pairs of ellipses that black out at most
half the image, this pair covers the most lung, on average 87% of each mask's lung pixels (79%
or more for nine masks in ten), while blacking out 31% of the pixels outside the lungs. Less
lung covered would leave a lung-reading model part of its signal; more image blacked out
would hide what lies outside the lungs. The corners, the top and bottom edges, the
mediastinum strip and the flanks stay visible.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from covid19_images.errors import Covid19ImagesError
from covid19_images.evaluation.metrics import BootstrapCI
from covid19_images.explanation.energy import load_masks
from covid19_images.probe._data import (
    auroc_ci,
    ci_dict,
    fmt,
    fmt_ci,
    json_dict,
    load_split,
    md_table,
    metric_frame,
)

__all__ = [
    "LUNG_ELLIPSES",
    "LUNG_MASK_SOURCES",
    "LungsRemoved",
    "draw_lung_region",
    "lung_region",
    "lungs_removed",
]

LUNG_ELLIPSES: Final = ((0.24, 0.42, 0.22, 0.36), (0.76, 0.42, 0.22, 0.36))
"""The fixed lung region: two ellipses ``(centre x, centre y, half-width, half-height)`` as
fractions of the square image's side (x from the image's left, y from its top)."""

LUNG_MASK_SOURCES: Final = {
    "ieee8023": "lungVAE lung masks (annotations/lungVAE-masks)",
    "covid19-radiography-database": "lung masks (<class>/masks)",
}
"""Sources whose ``mask_paths`` are lung masks (other sources' masks are lesions or absent)."""

Predict = Callable[[np.ndarray], Any]
"""Takes uint8 images (N x S x S, as packed) and returns class probabilities (N x K)."""


class ProbeError(Covid19ImagesError):
    """A probe cannot run on what it was given (a ``predict`` of the wrong shape...)."""


def lung_region(
    size: int, ellipses: Sequence[tuple[float, float, float, float]] = LUNG_ELLIPSES
) -> np.ndarray:
    """The fixed lung region at ``size`` x ``size`` px: True inside either ellipse (pixel
    centres).

    Example:
        >>> region = lung_region(64)
        >>> round(float(region.mean()), 2), bool(region[0, 0]), bool(region[27, 15])
        (0.5, False, True)
    """
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    region = np.zeros((size, size), dtype=bool)
    for cx, cy, ax, ay in ellipses:
        region |= ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0
    return region


MaskSpec = Literal["auto", "region"] | Callable[[pd.Series], "np.ndarray | None"]


def _masks(
    rows: pd.DataFrame,
    size: int,
    masks: MaskSpec,
    mirror: Path | str | None,
    root: Path | str | None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per row the area to black out, whether it is a real mask, and notes."""
    region = lung_region(size)
    out = np.repeat(region[None], len(rows), axis=0)
    real = np.zeros(len(rows), dtype=bool)
    notes: list[str] = []
    if masks == "region":
        return out, real, notes
    if callable(masks):
        found = [masks(row) for _, row in rows.iterrows()]
    else:
        keep = rows["source"].isin(list(LUNG_MASK_SOURCES)).to_numpy()
        paths = [p if k else [] for p, k in zip(rows["mask_paths"], keep, strict=True)]
        lung_rows = rows.assign(mask_paths=pd.Series(paths, index=rows.index, dtype=object))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = list(load_masks(lung_rows, size, root=root, mirror=mirror, on_error="warn"))
        failed = [str(w.message) for w in caught if "mask" in str(w.message)]
        if failed:
            notes.append(
                f"{len(failed)} lung mask(s) could not be read, the fixed region stands in "
                f"(first: {failed[0]})."
            )
    for i, mask in enumerate(found):
        if mask is not None and np.asarray(mask).any():
            out[i] = np.asarray(mask, dtype=bool)
            real[i] = True
    return out, real, notes


def _predict(predict: Predict, images: np.ndarray, k: int, batch: int) -> np.ndarray:
    parts = []
    for start in range(0, len(images), batch):
        chunk = np.ascontiguousarray(images[start : start + batch], dtype=np.uint8)
        probs = np.asarray(predict(chunk), dtype=float)
        if probs.shape != (len(chunk), k):
            raise ProbeError(
                f"predict returned an array of shape {probs.shape} for {len(chunk)} images; "
                f"expected ({len(chunk)}, {k}): one probability per class"
            )
        parts.append(probs)
    return np.concatenate(parts) if parts else np.zeros((0, k))


@dataclass(frozen=True)
class LungsRemoved:
    """What :func:`lungs_removed` found."""

    split: str
    n: int
    real_masks: int
    """Images blacked out along a real lung mask (the others: the fixed region)."""
    classes: list[str]
    auroc: dict[str, BootstrapCI | None]
    """Per class against the rest, the model on the images as they are."""
    auroc_masked: dict[str, BootstrapCI | None]
    """The same with the lung fields blacked out."""
    masked_area: float
    """Mean share of the image blacked out."""
    notes: list[str] = field(default_factory=list)

    @property
    def share_real_mask(self) -> float:
        """Share of the images blacked out along a real lung mask.

        Example:
            >>> lungs_removed(predict, "datasets/xray-covid").share_real_mask  # doctest: +SKIP
            0.085
        """
        return self.real_masks / self.n if self.n else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (no NaN).

        Example:
            >>> lungs_removed(predict, "datasets/xray-covid").to_dict()  # doctest: +SKIP
        """
        return json_dict(
            {
                "split": self.split,
                "n": self.n,
                "real_masks": self.real_masks,
                "share_real_mask": self.share_real_mask,
                "masked_area": self.masked_area,
                "region": {
                    "ellipses": [
                        dict(zip(("cx", "cy", "ax", "ay"), e, strict=True)) for e in LUNG_ELLIPSES
                    ],
                },
                "auroc": {k: ci_dict(v) for k, v in self.auroc.items()},
                "auroc_masked": {k: ci_dict(v) for k, v in self.auroc_masked.items()},
                "notes": self.notes,
            }
        )

    def to_markdown(self, level: int = 3, figure: str | None = None) -> str:
        """A report section: AUROC with and without the lungs, and a one-line reading.

        Example:
            >>> print(lungs_removed(predict, "datasets/xray-covid").to_markdown())  # doctest: +SKIP
        """
        rows = [
            [c, fmt_ci(self.auroc.get(c)), fmt_ci(self.auroc_masked.get(c))] for c in self.classes
        ]
        lines = [
            "#" * level + " Lungs removed",
            "",
            f"The model on the {self.n} {self.split} images as they are and with the lung "
            f"fields blacked out ({self.real_masks} along a real lung mask, "
            f"{fmt(self.share_real_mask, percent=True)}; the others along the fixed region of "
            f"two ellipses; on average {fmt(self.masked_area, percent=True)} of the image "
            "black). AUROC per class against the rest, 95% patient-bootstrap intervals.",
            "",
            md_table(["class", "AUROC", "AUROC, lungs removed"], rows),
            "",
            self.verdict(),
            "",
        ]
        if figure:
            lines += [f"![the fixed lung region]({figure})", ""]
        lines += [f"- {n}" for n in self.notes]
        if self.notes:
            lines.append("")
        return "\n".join(lines)

    def verdict(self) -> str:
        """One sentence: does the model keep its AUROC without the lungs?

        Example:
            >>> lungs_removed(predict, "datasets/xray-covid").verdict()  # doctest: +SKIP
            'Without the lungs the model still finds covid19 well above chance: ...'
        """
        works = [c for c, ci in self.auroc.items() if ci is not None and ci.low > 0.5]
        if not works:
            return "The model does not find any class above chance here, lungs or not."
        masked = {c: self.auroc_masked.get(c) for c in works}
        outside = [c for c, ci in masked.items() if ci is not None and ci.low > 0.6]
        above = [c for c, ci in masked.items() if ci is not None and ci.low > 0.5]
        if outside:
            return (
                f"Without the lungs the model still finds {', '.join(outside)} well above "
                "chance: it reads something outside the lungs."
            )
        if above:
            return (
                f"Without the lungs the model stays above chance for {', '.join(above)}: part "
                "of what it reads lies outside the lungs."
            )
        return "Without the lungs the model falls to chance: what it reads lies in the lung fields."


def lungs_removed(
    predict: Predict,
    folder: Path | str,
    split: str = "test",
    *,
    masks: MaskSpec = "auto",
    mirror: Path | str | None = None,
    root: Path | str | None = None,
    classes: Sequence[str] | None = None,
    batch: int = 256,
    n_boot: int = 1000,
    seed: int = 0,
) -> LungsRemoved:
    """Score ``predict`` on ``split``'s images as packed and with their lung fields blacked out.

    ``predict`` takes a uint8 array of ``batch`` images or fewer (N x S x S, as packed) and
    returns class probabilities (N x K), its columns the classes ``classes`` (by default the
    dataset's, in its order). ``masks``: ``"auto"`` blacks out a real lung mask where the
    manifest names one of a source in :data:`LUNG_MASK_SOURCES` that can be found (``mirror``
    and ``root`` locate the source folders as for the build), the fixed region
    (:func:`lung_region`) elsewhere; ``"region"`` uses the fixed region for every image; a
    callable gets each image's row (``uid``, ``source``, ``mask_paths``, ...) and returns its
    S x S boolean mask, or None for the fixed region. Black is 0.

    Example:
        >>> import numpy as np
        >>> def predict(images):  # a "model" that reads the brightness of the top-left corner
        ...     p = images[:, :4, :4].mean(axis=(1, 2)) / 255
        ...     return np.stack([p, 1 - p], axis=1)
        >>> lungs_removed(predict, "datasets/xray-binary").auroc_masked  # doctest: +SKIP
    """
    folder = Path(folder)
    data = load_split(folder, split)
    names = list(classes) if classes is not None else data.classes
    unknown = set(data.rows["class"]) - set(names)
    if unknown:
        raise ProbeError(f"classes {sorted(unknown)} of {folder} are not among {names}")
    area, real, notes = _masks(data.rows, data.size, masks, mirror, root)
    k = len(names)
    plain = _predict(predict, data.images, k, batch)
    blacked = np.empty((0, data.size, data.size), dtype=np.uint8)
    masked_parts = []
    for start in range(0, len(data.images), batch):
        blacked = np.array(data.images[start : start + batch], dtype=np.uint8)
        blacked[area[start : start + batch]] = 0
        masked_parts.append(_predict(predict, blacked, k, batch))
    masked = np.concatenate(masked_parts) if masked_parts else np.zeros((0, k))
    frame = metric_frame(data.rows, **{f"prob_{c}": plain[:, j] for j, c in enumerate(names)})
    frame_masked = metric_frame(
        data.rows, **{f"prob_{c}": masked[:, j] for j, c in enumerate(names)}
    )
    return LungsRemoved(
        split=split,
        n=len(data.rows),
        real_masks=int(real.sum()),
        classes=names,
        auroc={c: auroc_ci(frame, c, f"prob_{c}", n=n_boot, seed=seed) for c in names},
        auroc_masked={
            c: auroc_ci(frame_masked, c, f"prob_{c}", n=n_boot, seed=seed) for c in names
        },
        masked_area=float(area.mean()) if len(area) else math.nan,
        notes=notes,
    )


def draw_lung_region(
    path: Path | str,
    folder: Path | str | None = None,
    split: str = "test",
    *,
    masks: Mapping[str, np.ndarray] | None = None,
    scale: int = 256,
) -> Path:
    """Draw the fixed lung region into a PNG: over the mean image of ``folder``'s ``split``
    (a grey field without a folder), over the mean of ``masks`` (real lung masks at one size,
    by uid) where given, and one image blacked out; returns ``path``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Image.open(draw_lung_region(f"{tmp}/region.png")).size
        (536, 284)
    """
    path = Path(path)
    panels: list[tuple[str, np.ndarray]] = []
    if folder is not None:
        data = load_split(Path(folder), split)
        images = np.asarray(data.images[: min(len(data.images), 2000)], dtype=np.float64)
        mean = images.mean(axis=0) if len(images) else np.full((64, 64), 128.0)
        panels.append((f"mean {split} image", mean))
        if len(images):
            example = images[0].copy()
            example[lung_region(example.shape[0])] = 0
            panels.append(("blacked out", example))
    else:
        panels.append(("fixed region", np.full((64, 64), 128.0)))
    if masks:
        stack = np.stack([np.asarray(m, dtype=np.float64) for m in masks.values()])
        panels.append((f"mean of {len(stack)} lung masks", stack.mean(axis=0) * 255))
    if len(panels) == 1:
        example = panels[0][1].copy()
        example[lung_region(example.shape[0])] = 0
        panels.append(("blacked out", example))
    pad, label = 8, 20
    canvas = Image.new("RGB", (pad + len(panels) * (scale + pad), scale + label + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, pixels) in enumerate(panels):
        tile = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")
        x = pad + i * (scale + pad)
        canvas.paste(tile.resize((scale, scale), Image.Resampling.BILINEAR), (x, label))
        for cx, cy, ax, ay in LUNG_ELLIPSES:
            box = (
                x + (cx - ax) * scale,
                label + (cy - ay) * scale,
                x + (cx + ax) * scale,
                label + (cy + ay) * scale,
            )
            draw.ellipse(box, outline=(220, 30, 30), width=2)
        draw.text((x, 4), title, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
