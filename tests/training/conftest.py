"""Datasets the training tests share, built once per test module: the planted regression
images, ``ct-lesion-seg`` from generated layouts, and ``xray-lung-boxes``, ``xray-lung-seg``
and ``xray-severity`` from ../shared/sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covid19_images.assemble.build import BuildResult, build
from covid19_images.loaders.packed import write_packed
from covid19_images.process.executor import LocalExecutor
from tests.ct_lesion_layouts import SHAPE, write_layouts


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated regression dataset: the top ``extent / 8`` of each 32 px image is bright,
    ``opacity`` is half the extent plus noise; patients of two images, two sources."""
    folder = tmp_path_factory.mktemp("planted") / "planted"
    folder.mkdir()
    rng = np.random.default_rng(0)
    size, rows = 32, []
    for split, n in {"train": 40, "val": 12, "test": 12}.items():
        (folder / split).mkdir()
        for i in range(n):
            extent = float(rng.uniform(0, 8))
            pixels = 60 + rng.normal(0, 10, (size, size))
            pixels[: round(size * extent / 8)] += 120
            uid, path = f"{split}-{i:03d}", f"{split}/{split}-{i:03d}.png"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / path)
            rows.append(
                {
                    "uid": uid,
                    "split": split,
                    "source": "a" if i % 2 else "b",
                    "patient_id": f"p-{split}-{i // 2}",
                    "class": "covid19",
                    "path": path,
                    "extent": extent,
                    "opacity": 0.5 * extent + float(rng.normal(0, 0.3)),
                }
            )
    manifest = pd.DataFrame(rows)
    manifest.to_parquet(folder / "manifest.parquet", index=False)
    write_packed(
        folder,
        manifest,
        ["covid19"],
        size,
        "test",
        targets=["extent", "opacity"],
        task="regression",
    )
    return folder


@pytest.fixture(scope="module")
def lesion_seg(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """``ct-lesion-seg`` built from the generated MedSeg and Zenodo layouts of
    ``tests/ct_lesion_layouts.py`` (a planted lesion in every volume)."""
    work = tmp_path_factory.mktemp("ct-lesion")
    return build(
        "ct-lesion-seg",
        out=work / "out",
        mirror=write_layouts(work / "mirror"),
        root=work / "root",
        size=SHAPE[0],  # square slices at their own size: the packed grid is the NIfTI grid
        fetch=False,
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
    )


def annotated(recipe: str, sources: Path, factory: pytest.TempPathFactory) -> BuildResult:
    """``recipe`` (an ieee8023 annotation recipe) at 64 px from ../shared/sources."""
    work = factory.mktemp(recipe)
    return build(
        recipe,
        out=work / "out",
        mirror=sources,
        root=work / "root",
        size=64,
        sources=["ieee8023"],
        dicom=False,
        fetch=False,
        executor=LocalExecutor(workers=2, progress=False),
        progress=False,
    )


@pytest.fixture(scope="module")
def lung_boxes(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """``xray-lung-boxes`` at 64 px from ../shared/sources."""
    return annotated("xray-lung-boxes", shared_sources, tmp_path_factory)


@pytest.fixture(scope="module")
def lung_seg(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """``xray-lung-seg`` at 64 px from ../shared/sources."""
    return annotated("xray-lung-seg", shared_sources, tmp_path_factory)


@pytest.fixture(scope="module")
def severity(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """``xray-severity`` at 64 px from ../shared/sources."""
    return annotated("xray-severity", shared_sources, tmp_path_factory)
