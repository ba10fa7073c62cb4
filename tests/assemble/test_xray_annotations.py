"""The X-ray annotation recipes on generated files in the upstream layouts (tests/xray_annotations).

Each radiograph shows two dark lungs; its mask and boxes cover exactly them. The builds must
keep image, mask and boxes on one grid (also through augmentation), turn every planted bad input
into one problems row and go on, and export COCO that pycocotools reads back.
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
from covid19_images.assemble.export import ExportError, export
from covid19_images.loaders.packed import open_split
from covid19_images.loaders.warp import warp_labels
from covid19_images.process.executor import LocalExecutor
from tests.xray_annotations import (
    BOXES,
    CASES,
    GHOST,
    IEEE,
    SEVERITY,
    copy_boxes,
    write_mirror,
)

SIZE = 96
LUNG = 110
"""A packed pixel darker than this is lung (lungs 30-70, the rest 150-190)."""


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("xray-annotations-mirror")
    write_mirror(root)
    return root


def _build(recipe: str, mirror: Path, work: Path) -> BuildResult:
    return build(
        recipe,
        out=work / "out",
        mirror=mirror,
        root=work / "root",
        size=SIZE,
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
        dicom=False,
        fetch=False,
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xray-annotations")  # one data root: one processed cache


@pytest.fixture(scope="module")
def seg(mirror: Path, work: Path) -> BuildResult:
    return _build("xray-lung-seg", mirror, work)


@pytest.fixture(scope="module")
def boxes(mirror: Path, work: Path) -> BuildResult:
    return _build("xray-lung-boxes", mirror, work)


@pytest.fixture(scope="module")
def severity(mirror: Path, work: Path) -> BuildResult:
    return _build("xray-severity", mirror, work)


def _problems(result: BuildResult) -> pd.DataFrame:
    return pd.read_csv(result.path / "problems.csv", dtype={"row": "Int64"})


def _names(result: BuildResult, source: str = "ieee8023") -> set[str]:
    rows = result.manifest[result.manifest["source"] == source]
    return {Path(p).name for p in rows["path_raw"]}


def _overlap(mask: np.ndarray, region: np.ndarray) -> float:
    """Intersection over union of two boolean maps."""
    union = (mask | region).sum()
    return float((mask & region).sum() / union) if union else 0.0


# -- segmentation --------------------------------------------------------------------------------


def test_segmentation_keeps_the_images_with_a_usable_mask(seg: BuildResult) -> None:
    assert _names(seg) == {c.name for c in CASES if c.mask in ("same", "half")}
    assert len(seg.manifest[seg.manifest["source"] == "covid19-radiography-database"]) == 3
    assert seg.manifest["mask_path"].notna().all()
    assert set(seg.manifest["split"]) == {"train", "val", "test"}
    # patient 1's two images share a split
    ones = seg.manifest[seg.manifest["patient_id"] == "ieee8023:1"]
    assert len(ones) == 2 and ones["split"].nunique() == 1
    audit = json.loads((seg.path / "audit.json").read_text(encoding="utf-8"))
    assert not audit["leakage"] and not audit["missing_files"] and not audit["unlisted_files"]


def test_masks_sit_on_the_lungs_of_their_images(seg: BuildResult) -> None:
    meta = json.loads((seg.path / "packed.json").read_text(encoding="utf-8"))
    assert meta["task"] == "segmentation"
    for split in ("train", "val", "test"):
        packed = open_split(seg.path, split)
        assert packed.masks is not None and packed.masks.shape == packed.images.shape
        assert set(np.unique(packed.masks)) == {0, 1}
        for image, mask in zip(packed.images, packed.masks, strict=True):
            assert _overlap(mask == 1, image < LUNG) > 0.9
    from PIL import Image

    for row in seg.manifest.itertuples():  # the label files are the packed masks
        with (
            Image.open(seg.path / str(row.mask_path)) as label,
            Image.open(seg.path / str(row.path)) as image,
        ):
            assert label.size == image.size == (SIZE, SIZE)
            assert _overlap(np.asarray(label) == 1, np.asarray(image) < LUNG) > 0.9


def test_bad_masks_are_rows_and_the_build_goes_on(seg: BuildResult) -> None:
    problems = _problems(seg)
    by_file = {
        (Path(f).name, k): a
        for f, k, a in zip(problems["file"], problems["kind"], problems["action"], strict=True)
    }
    assert by_file[("d_mask.png", "mask-mismatch")] == "skipped"  # another aspect ratio
    assert by_file[("e_mask.png", "empty-mask")] == "skipped"
    assert by_file[("l.png", "filtered")] == "excluded"  # no mask at all
    scaled = seg.manifest[seg.manifest["attributes"].str.contains("mask_scaled_from")]
    names = {Path(p).name for p in scaled["path_raw"]}
    assert names == {"c.png", "COVID-1.png", "COVID-2.png", "Normal-1.png"}  # same aspect
    c = scaled[scaled["path_raw"].str.endswith("c.png")].iloc[0]
    assert json.loads(c["attributes"])["mask_scaled_from"] == [120, 80]
    datasheet = (seg.path / "datasheet.md").read_text(encoding="utf-8")
    assert "made by a model, lungVAE" in datasheet and "not outlined by experts" in datasheet
    assert "4 masks were stored at another size" in datasheet


def test_exports_that_cannot_hold_the_pairs_refuse(seg: BuildResult, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="PNG pairs"):
        export(seg.path, "nnunet", tmp_path / "nn")
    with pytest.raises(ExportError, match="COCO needs a detection dataset"):
        export(seg.path, "coco", tmp_path / "coco")
    assert not (tmp_path / "nn").exists() and not (tmp_path / "coco").exists()


def test_segmentation_loader_moves_masks_with_images(seg: BuildResult) -> None:
    train = ci.load(seg.path, "train", framework="torch", augment="standard", normalize=False)
    ones = np.ones((1, SIZE, SIZE), np.uint8)
    for epoch in range(3):
        train.set_epoch(epoch)
        images, masks = train[list(range(len(train)))]
        assert str(masks.dtype) == "torch.int64" and masks.shape == images[:, 0].shape
        draws = train.draws(range(len(train)), epoch)
        for image, mask, d in zip(images[:, 0].numpy(), masks.numpy(), draws, strict=True):
            valid = warp_labels(ones, d)[0].astype(bool)
            inner = ndimage.binary_erosion(valid, iterations=1)
            lo, hi = np.percentile(image[inner], [5, 95])
            dark = (image < (lo + hi) / 2) & inner
            assert _overlap(mask == 1, dark) > 0.85


# -- detection -----------------------------------------------------------------------------------


def test_boxes_follow_the_centre_square_and_resize(boxes: BuildResult) -> None:
    kept = _names(boxes)
    assert kept == {c.name for c in CASES if c.boxes is not None and c.boxes != "frame"}
    table = pd.read_parquet(boxes.path / "boxes.parquet")
    by_uid = {u: g.sort_values("box") for u, g in table.groupby("uid")}
    for row in boxes.manifest.itertuples():
        case = next(c for c in CASES if row.path_raw.endswith("/" + c.name))
        expected = copy_boxes(case, SIZE, scale=2 if case.name.endswith(".jpg") else 1)
        if case.boxes == "partly":  # the left lung's box reached past the edge: clipped there
            edge = copy_boxes(case, SIZE)[1]
            side = min(case.width, case.height)
            right = (case.width - (case.width - side) // 2) * SIZE / side
            expected[1] = (edge[0], edge[1], min(right, SIZE), edge[3])
        found = by_uid[row.uid]
        assert list(found["label"]) == ["right_lung", "left_lung"]
        assert list(found["category_id"]) == [1, 2]
        np.testing.assert_allclose(found[["x0", "y0", "x1", "y1"]].to_numpy(), expected, atol=1e-9)


def test_bad_boxes_are_rows_and_the_build_goes_on(boxes: BuildResult) -> None:
    problems = _problems(boxes)
    rows = {
        (Path(f).name, k, a)
        for f, k, a in zip(problems["file"], problems["kind"], problems["action"], strict=True)
    }
    assert ("f.png", "box-outside", "repaired") in rows  # partly outside: clipped
    assert ("g.png", "box-outside", "skipped") in rows  # wholly outside: dropped
    assert ("h.png", "bad-value", "skipped") in rows  # a COCO frame of another aspect
    assert (GHOST, "missing-file", "skipped") in rows  # the COCO file names an absent image
    assert ("d_mask.png", "mask-mismatch", "skipped") in rows
    assert ("e_mask.png", "empty-mask", "skipped") in rows
    ghost = problems[problems["file"].str.endswith(GHOST)]
    assert BOXES in ghost.iloc[0]["detail"]
    table = pd.read_parquet(boxes.path / "boxes.parquet")
    g = boxes.manifest[boxes.manifest["path_raw"].str.endswith("/g.png")].iloc[0]
    assert (table["uid"] == g["uid"]).sum() == 2  # the third box left, the two lungs stay
    masked = dict(zip(table["uid"], table["mask"], strict=False))
    for name, has in (("d.png", False), ("e.png", False), ("l.png", False), ("a.png", True)):
        uid = boxes.manifest[boxes.manifest["path_raw"].str.endswith("/" + name)].iloc[0]["uid"]
        assert masked[uid] is has or bool(masked[uid]) == has


def _lung_under(mask: np.ndarray, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The dark region (a lung) of an augmented 0-1 ``image`` that ``mask`` lies on: the
    connected dark component it overlaps most, inside the moved frame (``valid``, one pixel in
    from its edge, where bilinear resampling blends the image with the black outside)."""
    inner = ndimage.binary_erosion(valid, iterations=1)
    lo, hi = np.percentile(image[inner], [5, 95])
    components, _ = ndimage.label((image < (lo + hi) / 2) & inner)
    hits = components[mask & (components > 0)]
    assert hits.size, "the mask lies on no dark region at all"
    return np.asarray(components == np.bincount(hits).argmax())


def test_detection_targets_move_with_the_image(boxes: BuildResult) -> None:
    train = ci.load(boxes.path, "train", framework="torch", augment="standard", normalize=False)
    assert type(train).__name__ == "DetectionDataset"
    assert train.categories == ["right_lung", "left_lung"]
    checked = 0
    for epoch in range(4):
        train.set_epoch(epoch)
        for i in range(len(train)):
            image, target = train[i]
            assert target["boxes"].shape[1] == 4 and str(target["boxes"].dtype) == "torch.float32"
            assert str(target["labels"].dtype) == "torch.int64"
            assert str(target["masks"].dtype) == "torch.uint8"
            assert target["masks"].shape == (len(target["boxes"]), SIZE, SIZE)
            ones = np.ones((1, SIZE, SIZE), np.uint8)
            valid = warp_labels(ones, train.draws([i], epoch)[0])[0].astype(bool)
            for box, mask in zip(target["boxes"].numpy(), target["masks"].numpy(), strict=True):
                if not mask.any():
                    continue  # an image without a lung mask
                inside = mask.astype(bool)
                lung = _lung_under(inside, image[0].numpy(), valid)
                shared = (inside & lung).sum()
                assert shared / inside.sum() > 0.9 and shared / lung.sum() > 0.9
                rows, cols = np.nonzero(lung)  # the box still encloses the whole lung
                x0, y0, x1, y1 = box
                assert cols.min() + 0.5 >= x0 - 1 and cols.max() + 0.5 <= x1 + 1
                assert rows.min() + 0.5 >= y0 - 1 and rows.max() + 0.5 <= y1 + 1
                checked += 1
    assert checked >= 4 * 10


def test_coco_export_loads_in_pycocotools_with_the_datasets_boxes(boxes: BuildResult) -> None:
    coco_api = pytest.importorskip("pycocotools.coco")
    target = export(boxes.path, "coco")
    for split in ("train", "val", "test"):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = coco_api.COCO(str(target / "annotations" / f"instances_{split}.json"))
        ds = ci.load(boxes.path, split, framework="torch")
        assert len(coco.getImgIds()) == len(ds)
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["right_lung", "left_lung"]
        for info in coco.loadImgs(coco.getImgIds()):
            assert (target / split / info["file_name"]).is_file()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=info["id"]))
            _, t = ds[info["id"] - 1]
            xyxy = [
                [
                    a["bbox"][0],
                    a["bbox"][1],
                    a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3],
                ]
                for a in anns
            ]
            np.testing.assert_allclose(xyxy, t["boxes"].numpy(), atol=1e-4)
            assert [a["category_id"] for a in anns] == t["labels"].tolist()
            for ann, mask in zip(anns, t["masks"].numpy(), strict=True):
                if "segmentation" in ann:
                    assert np.array_equal(coco.annToMask(ann), mask) and mask.any()
                    assert ann["area"] == int(mask.sum())
                else:
                    assert not mask.any()


# -- regression ----------------------------------------------------------------------------------


def test_severity_targets_are_the_upstream_scores(severity: BuildResult, mirror: Path) -> None:
    scored = {c.name: c.scores for c in CASES if isinstance(c.scores, tuple)}
    assert _names(severity) == set(scored)
    problems = _problems(severity)
    rows = {(Path(f).name, k) for f, k in zip(problems["file"], problems["kind"], strict=True)}
    assert (Path(SEVERITY).name, "bad-value") in rows  # h.png's row has no scores
    assert ("i.png", "bad-value") in rows  # opacity 9 is out of 0-6
    index = pd.read_parquet(severity.path / "packed.parquet")
    manifest = severity.manifest.set_index("uid")
    for split in ("train", "val", "test"):
        ds = ci.load(severity.path, split, framework="torch")
        assert ds.target_names == ["geographic_extent", "opacity"]
        part = index[index["split"] == split].sort_values("index")
        for i, uid in enumerate(part["uid"]):
            _, target = ds[i]
            assert str(target.dtype) == "torch.float32"
            name = Path(str(manifest.loc[uid, "path_raw"])).name
            np.testing.assert_allclose(target.numpy(), scored[name], rtol=1e-6)
    csv = (mirror / IEEE / SEVERITY).read_text(encoding="utf-8")
    assert csv.startswith("##")  # the comment header is upstream's


def test_detection_and_regression_refuse_frameworks_that_would_drop_their_targets(
    severity: BuildResult,
) -> None:
    with pytest.raises(ValueError, match="regression dataset"):
        ci.load(severity.path, "train", framework="hf")
