"""Explain a run: Grad-CAM of its model on chosen images, written beside the run.

``explain_run(run)`` takes ``n`` images of the test split (as evenly across the classes as the
split allows), or the images named (uids of the run's dataset, or image files), and writes
into ``<run>/explain/``:

- ``overlays/<uid>.png``: the map of the predicted class over each image;
- ``montage_<class>.png``: one grid per true class, each tile captioned with the true and the
  predicted class and its probability;
- ``explain.csv``: per image its true and predicted class, probability and the share of the
  map's energy inside the lungs (where the manifest has a lung mask);
- ``energy.md``: that share per image and per class, the section the run's ``report.md`` shows.

Research use only: a map shows where the model's evidence lies, not whether it is right.

Example:
    >>> result = explain_run("runs/xray-covid-resnet18-s0", n=16)  # doctest: +SKIP
    >>> result.folder.name  # doctest: +SKIP
    'explain'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from covid19_images.atomic import write_text, write_with
from covid19_images.explanation.energy import (
    ExplainError,
    energy_inside,
    energy_table,
    load_masks,
    mask_area,
)
from covid19_images.explanation.figures import class_montages, save_overlays
from covid19_images.training.run import Run, load_run

if TYPE_CHECKING:
    import torch

ENERGY = "energy.md"


@dataclass
class Explained:
    """What :func:`explain_run` wrote."""

    folder: Path
    table: pd.DataFrame
    """One row per image: ``uid``, ``class`` (None for a file), ``predicted``,
    ``probability``, ``lung_energy`` (NaN without a mask), ``overlay``."""
    montages: dict[str, Path]


def explain_run(
    run: Run | Path | str,
    images: Sequence[str] = (),
    *,
    split: str = "test",
    n: int = 16,
    out: Path | str | None = None,
    root: Path | str | None = None,
    mirror: Path | str | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> Explained:
    """Grad-CAM of ``run``'s model on ``images`` (uids or files) or ``n`` images of ``split``.

    Args:
        run: A run folder (or :class:`~covid19_images.training.run.Run`).
        images: Uids of the run's dataset, or image files (PNG, JPEG, ...); empty: choose.
        split: The split to choose from when no image is named.
        n: How many to choose, spread over the classes.
        out: The folder written (default ``<run>/explain``).
        root: Data root where the lung masks' upstream files are (as for ``build``).
        mirror: A mirror folder where they are.
        device: Where the model runs.
        seed: Chooses the images.

    Raises:
        ExplainError: An image that is neither a uid of the dataset nor a readable file.
    """
    import torch

    from covid19_images.explanation.gradcam import grad_cam_with_logits
    from covid19_images.training.data import open_part, prepare, read_batch, read_manifest

    run = run if isinstance(run, Run) else load_run(run)
    if run.task != "classification":
        raise ExplainError(
            f"{run.path} is a {run.task} run: Grad-CAM explains classification runs (its "
            "predicted label maps are in predictions/)"
        )
    folder = Path(out) if out is not None else run.path / "explain"
    manifest = read_manifest(run.dataset).drop_duplicates("uid").set_index("uid")
    pixels: list[torch.Tensor] = []
    rows: list[str] = []  # the uid of each image (a file: None)
    names: list[str] = []  # its file name in overlays/ (uid, with the slice for CT)
    named_files = [i for i in images if i not in manifest.index]
    uids = [i for i in images if i in manifest.index]
    if not images:
        part = open_part(run.dataset, split)
        has_mask = manifest.reindex(part.facts["uid"])["mask_paths"].map(_any_mask).to_numpy()
        chosen = _spread(part.facts, has_mask, n, seed)
        batch, _ = read_batch(part.dataset, part.segments[0][1][chosen], 0)
        pixels.append(batch)
        picked = part.facts.iloc[chosen]
        rows += picked["uid"].tolist()
        names += [_name(r) for r in picked.to_dict("records")]
    for uid in uids:  # a CT volume's uid: its first slice in the packed split
        part = open_part(run.dataset, str(manifest.loc[uid, "split"]))
        position = int(np.flatnonzero(part.facts["uid"].to_numpy() == uid)[0])
        batch, _ = read_batch(part.dataset, part.segments[0][1][[position]], 0)
        pixels.append(batch)
        rows.append(uid)
        names.append(_name(part.facts.iloc[position].to_dict()))
    for name in named_files:
        pixels.append(_read_file(name, run.size))
        rows.append("")
        names.append(f"file-{Path(name).stem}")
    if len(set(names)) < len(names):
        raise ExplainError("each image may be named once")
    if not rows:
        raise ExplainError(f"no image to explain in split {split!r}")
    x01 = torch.cat(
        [
            torch.nn.functional.interpolate(
                p, size=(run.size, run.size), mode="bilinear", antialias=True, align_corners=False
            )
            if p.shape[-1] != run.size
            else p
            for p in pixels
        ]
    )
    model = run.model(device=device)
    x = prepare(x01, run.size, run.mean, run.std, torch.device(device))
    cams, logits = grad_cam_with_logits(model, run.model_name, x)
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    shown = (x01.squeeze(1).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    predicted = [run.classes[k] for k in probs.argmax(axis=1)]
    truth = [str(manifest.loc[u, "class"]) if u else "unknown" for u in rows]
    frame = manifest.reindex([u or None for u in rows]).reset_index()
    masks = load_masks(frame, run.size, root=root, mirror=mirror, on_error="warn")
    shares = energy_inside(cams, masks)
    areas = mask_area(masks)
    paths = save_overlays(folder / "overlays", shown, cams, [_safe(r) for r in names])
    montages = class_montages(folder, shown, cams, truth, predicted, probs.max(axis=1))
    table = pd.DataFrame(
        {
            "uid": [u or None for u in rows],
            "image": names,
            "class": [t if t != "unknown" else None for t in truth],
            "predicted": predicted,
            "probability": probs.max(axis=1),
            "lung_energy": shares,
            "lung_area": areas,
            "overlay": [str(p.relative_to(folder)) for p in paths],
        }
    )
    write_with(folder / "explain.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_text(folder / ENERGY, _section(table, run, folder))
    if folder == run.path / "explain":
        from covid19_images.training.assess import refresh_report

        refresh_report(run)
    return Explained(folder, table, montages)


def _spread(facts: pd.DataFrame, masked: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` positions, taken in turn from each class; within a class, images with a
    lung mask first (so the energy share is measured where it can be), in a seeded order."""
    rng = np.random.default_rng(seed)
    labels = facts["class"].to_numpy()
    queues = {}
    for label in sorted(facts["class"].unique()):
        members = rng.permutation(np.flatnonzero(labels == label))
        queues[label] = [int(i) for i in members if masked[i]] + [
            int(i) for i in members if not masked[i]
        ]
    chosen: list[int] = []
    while len(chosen) < n and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < n:
                chosen.append(int(queue.pop(0)))
    return np.array(sorted(chosen), dtype=np.int64)


def _any_mask(value: object) -> bool:
    """True where a manifest ``mask_paths`` cell lists a 2-D mask file."""
    try:
        files = [str(f) for f in value]  # type: ignore[attr-defined]
    except TypeError:
        return False
    return any(not f.endswith((".nii", ".nii.gz")) for f in files)


def _name(facts: Mapping[Any, Any]) -> str:
    """An image's name: its uid, and for a CT slice ``<uid>-s<slice>``."""
    value = facts.get("slice")
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return str(facts["uid"])
    return f"{facts['uid']}-s{int(value)}"


def _read_file(name: str, size: int) -> torch.Tensor:
    """An image file as a 0-1 tensor (1 x 1 x size x size), grey: its centre square, as a
    build cuts it, resized."""
    import torch
    from PIL import Image, UnidentifiedImageError

    path = Path(name)
    try:
        with Image.open(path) as image:
            grey = image.convert("L")
            side = min(grey.size)
            left, top = (grey.width - side) // 2, (grey.height - side) // 2
            grey = grey.crop((left, top, left + side, top + side))
            grey = grey.resize((size, size), Image.Resampling.BILINEAR)
    except FileNotFoundError:
        raise ExplainError(f"{name}: not a uid of the run's dataset, and no such file") from None
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ExplainError(f"{name}: cannot be read as an image ({exc})") from None
    array = np.asarray(grey, dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None, None]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _section(table: pd.DataFrame, run: Run, folder: Path) -> str:
    """The report section: where the maps' energy lies, per class and per image."""
    with_mask = table["lung_energy"].notna()
    lines = [
        "## Grad-CAM: where the model looks",
        "",
        f"Grad-CAM of `{run.model_name}` for its predicted class on {len(table)} images "
        f"(overlays and montages in `{folder.name}/`). Where the image has a lung mask "
        f"({int(with_mask.sum())} of {len(table)}), the share of the map's energy inside the "
        "lungs; an even map would put the mask's area there. A share well below the area "
        "means the evidence lies mostly outside the lungs (markers, text, borders).",
        "",
    ]
    if with_mask.any():
        classes = table["class"].fillna("unknown").tolist()
        lines += [energy_table(table["lung_energy"], classes, table["lung_area"]), ""]
        lines += ["| image | class | predicted | probability | energy in lungs | lung area |"]
        lines += ["|---|---|---|---:|---:|---:|"]
        for row in table[with_mask].to_dict("records"):
            lines.append(
                f"| {row['image']} | {row['class']} | {row['predicted']} | "
                f"{row['probability']:.2f} | {_fmt(row['lung_energy'])} | "
                f"{_fmt(row['lung_area'])} |"
            )
    else:
        lines.append("No explained image has a lung mask, so no share is measured.")
    lines += [
        "",
        "| class | montage |",
        "|---|---|",
        *(
            f"| {c} | ![{c}]({folder.name}/montage_{_safe(c)}.png) |"
            for c in sorted(table["class"].dropna().unique())
        ),
        "",
    ]
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.2f}"
