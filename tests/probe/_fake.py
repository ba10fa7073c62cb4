"""Small dataset folders written with the real packer, for the probe tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from covid19_images.loaders.packed import write_packed

DATASHEET = "# Datasheet: fake\n\n## Classes per split\n\ntable\n\n## Samples\n\n![s](s.png)\n"


def chest(rng: np.random.Generator, size: int) -> np.ndarray:
    """A radiograph-like picture: a smooth random field, two darker lung fields, noise."""
    coarse = rng.uniform(90, 170, size=(4, 4)).astype(np.uint8)
    field = np.asarray(
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64
    )
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    for cx in (0.25, 0.75):
        field -= 40 * ((((xx - cx) / 0.2) ** 2 + ((yy - 0.42) / 0.33) ** 2) <= 1)
    field += rng.normal(0, 12, size=(size, size))
    return np.clip(field, 0, 255).astype(np.uint8)


def rows(
    counts: dict[str, int],
    sources: list[str],
    classes: list[str],
    *,
    per_patient: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """Manifest rows: ``counts`` images per split, cycling through sources and classes, every
    ``per_patient`` consecutive images of one source one patient."""
    rng = np.random.default_rng(seed)
    out = []
    for split, n in counts.items():
        for i in range(n):
            source = sources[i % len(sources)]
            out.append(
                {
                    "uid": f"{split}-{i:04d}",
                    "split": split,
                    "source": source,
                    "class": classes[(i // len(sources)) % len(classes)],
                    "patient_id": f"{source}:{split}-{i // (per_patient * len(sources))}",
                    "age": float(rng.integers(20, 90)),
                    "sex": "F" if rng.random() < 0.5 else "M",
                    "tags": [],
                    "mask_paths": [],
                    "width": 64,
                    "height": 64,
                }
            )
    return pd.DataFrame(out)


def write_dataset(
    folder: Path, manifest: pd.DataFrame, images: np.ndarray, classes: list[str]
) -> Path:
    """A dataset folder: one PNG per row, ``manifest.parquet``, the packed arrays (by
    :func:`write_packed`), ``datasheet.md`` and a ``lock.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = manifest.copy()
    manifest["path"] = [
        f"{s}/{c}/{u}.png"
        for s, c, u in zip(manifest["split"], manifest["class"], manifest["uid"], strict=True)
    ]
    for rel, pixels in zip(manifest["path"], images, strict=True):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / rel)
    manifest.to_parquet(folder / "manifest.parquet", index=False)
    size = int(images.shape[-1])
    write_packed(folder, manifest[["split", "path", "uid", "class"]], classes, size, "test")
    (folder / "datasheet.md").write_text(DATASHEET, encoding="utf-8")
    (folder / "lock.json").write_text(json.dumps({"manifest_sha256": "x"}), encoding="utf-8")
    return folder
