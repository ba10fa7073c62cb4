"""The X-ray annotation recipes on the real upstream files (../shared/sources).

The mirror holds 178 ieee8023 images (of 751 metadata rows): 40 of them have a lungVAE mask (2
of those are coronal CT images of the collection), 36 have COCO lung boxes (the file lists 167
images) and 27 have severity scores (the file scores 94). The COVID-19 Radiography Database is
there as its sheets only, without images or masks. Measured here (64 px):

- ``xray-lung-seg``: 38 images with 38 masks (the 2 CT images are ``wrong-modality`` rows);
- ``xray-lung-boxes``: 36 images, 72 boxes (36 right lung, 36 left lung), 15 of them with a
  lung mask; the two upstream annotations whose ``bbox`` is ``[None, None, None, None]`` and
  the 130 COCO images absent from the mirror that have usable boxes are problem rows (131 are
  absent: the 131st has only those two unusable boxes);
- ``xray-severity``: 27 images with both scores.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

import covid19_images as ci
from covid19_images.assemble.build import BuildResult, build
from covid19_images.assemble.export import export
from covid19_images.loaders.packed import SPLITS, open_split
from covid19_images.process.executor import LocalExecutor

SIZE = 64
IEEE = "ieee8023-covid-chestxray"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xray-annotations-mirror")  # one processed cache


def _build(recipe: str, mirror: Path, work: Path) -> BuildResult:
    return build(
        recipe,
        out=work / "out",
        mirror=mirror,
        root=work / "root",
        size=SIZE,
        executor=LocalExecutor(workers=2, progress=False),
        progress=False,
        dicom=False,
        fetch=False,
    )


def _sound(result: BuildResult) -> None:
    """Patient-grouped splits, a clean audit, a datasheet and a lock."""
    audit = json.loads((result.path / "audit.json").read_text(encoding="utf-8"))
    assert not audit["leakage"] and not audit["shared_patients"]
    assert not audit["missing_files"] and not audit["unlisted_files"]
    splits = result.manifest.groupby("patient_id")["split"].nunique()
    assert (splits == 1).all()
    assert set(result.manifest["split"]) == set(SPLITS)
    assert (result.path / "lock.json").is_file() and (result.path / "datasheet.md").is_file()


def _contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """How much darker the mask's pixels are than a band around it (lungs are dark)."""
    ring = ndimage.binary_dilation(mask, iterations=4) & ~mask
    return float(image[ring].mean() - image[mask].mean())


def test_lung_segmentation_on_the_mirror(shared_sources: Path, work: Path) -> None:
    result = _build("xray-lung-seg", shared_sources, work)
    _sound(result)
    manifest = result.manifest
    masks = list((shared_sources / IEEE / "annotations" / "lungVAE-masks").glob("*_mask.png*"))
    assert len(masks) >= 200  # upstream's 209 masks; most of their images are absent here
    assert len(manifest) == 38 and set(manifest["source"]) == {"ieee8023"}
    assert manifest["mask_path"].notna().all()
    assert set(manifest["view"]) <= {"PA", "AP", "AP_SUPINE"}
    problems = pd.read_csv(result.path / "problems.csv")
    ct = problems[problems["kind"] == "wrong-modality"]
    stems = {m.name.split("_mask")[0] for m in masks}
    assert ct["file"].map(lambda f: Path(f).stem in stems).sum() == 2  # CT rows with masks
    # every mask sits on its lungs: darker inside than around it, more than when shifted
    gains = []
    for split in SPLITS:
        packed = open_split(result.path, split)
        assert packed.masks is not None
        for image, mask in zip(packed.images, packed.masks, strict=True):
            inside = mask.astype(bool)
            assert 0.1 < inside.mean() < 0.6
            here = _contrast(np.asarray(image, float), inside)
            assert here > 10
            shifted = [
                _contrast(np.asarray(image, float), np.roll(inside, s, axis=a))
                for s in (-SIZE // 8, SIZE // 8)
                for a in (0, 1)
            ]
            gains.append(here - max(shifted))
    assert np.median(gains) > 5
    datasheet = (result.path / "datasheet.md").read_text(encoding="utf-8")
    assert "made by a model, lungVAE" in datasheet and "not outlined by experts" in datasheet


def test_lung_boxes_on_the_mirror(shared_sources: Path, work: Path) -> None:
    result = _build("xray-lung-boxes", shared_sources, work)
    _sound(result)
    assert len(result.manifest) == 36
    boxes = pd.read_parquet(result.path / "boxes.parquet")
    assert len(boxes) == 72 and boxes["label"].value_counts().to_dict() == {
        "right_lung": 36,
        "left_lung": 36,
    }
    assert int(result.manifest["mask_path"].notna().sum()) == 15
    for _, pair in boxes.groupby("uid"):  # the patient's right lung is on the image's left
        centre = pair.set_index("label")[["x0", "x1"]].sum(axis=1) / 2
        assert centre["right_lung"] < SIZE / 2 < centre["left_lung"]
        assert ((pair["x1"] - pair["x0"]) > SIZE / 8).all() and (
            pair[["x0", "y0"]] >= 0
        ).all().all()
        assert (pair[["x1", "y1"]] <= SIZE).all().all()
    for split in SPLITS:  # the lung masks lie inside the boxes
        packed = open_split(result.path, split)
        assert packed.boxes is not None and packed.masks is not None
        for i in np.flatnonzero(packed.boxes.masked):
            mask = packed.masks[i].astype(bool)
            inside = np.zeros_like(mask)
            for x0, y0, x1, y1 in packed.boxes.boxes[i]:
                inside[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
            assert (mask & inside).sum() / mask.sum() > 0.85
    problems = pd.read_csv(result.path / "problems.csv")
    coco = problems[problems["detail"].str.contains("bounding_boxes.json image id", na=False)]
    assert len(coco) == 167 - 36 - 1 and set(coco["kind"]) == {"missing-file"}
    assert ((problems["kind"] == "bad-value") & problems["detail"].str.contains("None")).sum() == 2
    target = export(result.path, "coco")
    coco_api = pytest.importorskip("pycocotools.coco")
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = coco_api.COCO(str(target / "annotations" / "instances_train.json"))
    train = ci.load(result.path, "train", framework="torch")
    assert len(loaded.getImgIds()) == len(train) and len(loaded.getAnnIds()) == 2 * len(train)


def test_severity_on_the_mirror(shared_sources: Path, work: Path) -> None:
    result = _build("xray-severity", shared_sources, work)
    _sound(result)
    lines = (shared_sources / IEEE / "annotations" / "covid-severity-scores.csv").read_text(
        encoding="utf-8"
    )
    body = "\n".join(line for line in lines.splitlines() if not line.startswith("#"))
    scores = pd.read_csv(io.StringIO(body)).set_index("filename")
    manifest = result.manifest
    assert len(manifest) == 27
    for row in manifest.itertuples():
        name = Path(str(row.path_raw)).name
        assert row.geographic_extent == pytest.approx(scores.loc[name, "geographic_mean"])
        assert row.opacity == pytest.approx(scores.loc[name, "opacity_mean"])
    assert (
        manifest["geographic_extent"].between(0, 8).all()
        and manifest["opacity"].between(0, 6).all()
    )
    train = ci.load(result.path, "train", framework="torch")
    _, target = train[0]
    assert target.shape == (2,) and str(target.dtype) == "torch.float32"
    datasheet = (result.path / "datasheet.md").read_text(encoding="utf-8")
    assert (
        "mean of three blinded radiologists" in datasheet and "spread is not available" in datasheet
    )
