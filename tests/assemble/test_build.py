"""`build xray-covid` on the real upstream files: the issue's promises, measured."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from covid19_images.assemble.build import BuildResult, build
from covid19_images.assemble.recipe import Recipe
from covid19_images.audit import audit_dataset
from covid19_images.catalog import load_catalog
from covid19_images.dedup.near import thumbnail_correlation
from covid19_images.fetch import locate
from covid19_images.process.executor import LocalExecutor


@pytest.fixture(scope="module")
def built(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    work = tmp_path_factory.mktemp("build")
    return build(
        "xray-covid",
        out=work / "out",
        mirror=shared_sources,
        root=work / "root",
        executor=LocalExecutor(workers=2, progress=False),
        progress=False,
    )


def _problems(result: BuildResult) -> pd.DataFrame:
    return pd.read_csv(result.path / "problems.csv", dtype={"row": "Int64"})


def test_folder_is_imagefolder_ready_and_matches_the_manifest(built: BuildResult) -> None:
    manifest = pd.read_parquet(built.path / "manifest.parquet")
    for column in (
        "uid",
        "source",
        "patient_id",
        "label",
        "split",
        "path",
        "sha256_pixels",
        "phash",
        "class",
    ):
        assert column in manifest.columns
    files = sorted(p.relative_to(built.path).as_posix() for p in built.path.glob("*/*/*.png"))
    assert files == sorted(manifest["path"])
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert set(manifest["class"]) == {"covid19", "pneumonia", "normal"}
    for rel in manifest["path"][:20]:
        assert Image.open(built.path / rel).size == (224, 224)
    for name in (
        "problems.csv",
        "duplicates.csv",
        "datasheet.md",
        "lock.json",
        "audit.json",
        "class_balance.png",
        "samples.png",
    ):
        assert (built.path / name).is_file(), name
    datasheet = (built.path / "datasheet.md").read_text()
    assert "Research use only" in datasheet and "rules nothing out" in datasheet
    assert "children's images" in datasheet  # the paediatric controls are called out


def test_every_image_file_is_in_the_manifest_or_the_problems(
    built: BuildResult, shared_sources: Path
) -> None:
    manifest = pd.read_parquet(built.path / "manifest.parquet")
    problems = _problems(built)
    accounted = set(zip(manifest["source"], manifest["path_raw"], strict=True)) | set(
        zip(problems["source"], problems["file"], strict=True)
    )
    catalog = load_catalog()
    for source in built.sources_used:
        located = locate(source, mirror=shared_sources)
        assert located is not None
        for path in located.path.rglob("*"):
            if path.suffix.lower() in {".png", ".jpg", ".jpeg"} and "annotations" not in path.parts:
                rel = path.relative_to(located.path).as_posix()
                assert (source, rel) in accounted, (catalog.get(source).id, rel)


@pytest.mark.parametrize(
    ("source", "metadata", "rows"),
    [
        ("ieee8023", "metadata.csv", 751),
        ("figure1", "metadata.csv", 55),
        ("actualmed", "metadata.csv", 238),
    ],
)
def test_every_metadata_row_is_in_the_manifest_or_the_problems(
    built: BuildResult, source: str, metadata: str, rows: int
) -> None:
    manifest = pd.read_parquet(built.path / "manifest.parquet")
    problems = _problems(built)
    in_manifest = set(manifest.loc[manifest["source"] == source, "source_row"].dropna().astype(int))
    mine = problems[(problems["source"] == source) & problems["row"].notna()]
    in_problems = set(mine["row"].astype(int))
    assert in_manifest | in_problems == set(range(1, rows + 1))


def _whole_frame(path: Path, side: int = 128) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L").resize((side, side), Image.Resampling.BOX))


def _detail(a: np.ndarray) -> np.ndarray:
    blurred = np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(4)), dtype=float)
    return a.astype(float) - blurred


def test_cross_source_copies_are_found_and_distinct_films_are_not_merged(
    built: BuildResult, shared_sources: Path
) -> None:
    """Ground truth by brute force at another scale (128 px, every pair of the copy-prone
    sources), independent of the build's hash index and 64 px thumbnails."""
    roots = {s: locate(s, mirror=shared_sources).path for s in built.sources_used}  # type: ignore[union-attr]
    manifest = pd.read_parquet(built.path / "manifest.parquet")
    problems = _problems(built)
    dropped = problems[problems["kind"] == "duplicate"]
    cluster_of: dict[tuple[str, str], str] = {}
    for row in manifest.itertuples():
        attrs = json.loads(row.attributes)
        cluster_of[(row.source, row.path_raw)] = attrs.get("dup_cluster", row.uid)
    for row in dropped.itertuples():  # every member's cluster id is the uid of the copy kept
        cluster_of[(row.source, row.file)] = row.detail.rsplit("uid ", 1)[1].split(")")[0]

    prone = [
        "ieee8023",
        "figure1",
        "covid19-detection-xray-dataset",
        "covid19-image-dataset",
        "zhanglab",
    ]
    items = [k for k in cluster_of if k[0] in prone]
    frames = {k: _whole_frame(roots[k[0]] / k[1]) for k in items}
    details = {k: _detail(v) for k, v in frames.items()}
    copies = 0
    for a, b in combinations(items, 2):
        if a[0] == b[0]:
            continue
        raw = thumbnail_correlation(frames[a], frames[b])
        fine = thumbnail_correlation(details[a], details[b])
        if raw >= 0.97 and fine >= 0.7:  # unmistakable copies
            copies += 1
            assert cluster_of[a] == cluster_of[b], (a, b, raw, fine)
    assert copies >= 30  # Darshan <- ieee8023 and Zhang Lab, Kaggle <- Figure 1 (37 measured)
    pairs = pd.read_csv(built.path / "duplicates.csv")
    crossing = pairs[pairs["source_a"] != pairs["source_b"]]
    assert {frozenset(p) for p in zip(crossing["source_a"], crossing["source_b"], strict=True)} >= {
        frozenset({"covid19-detection-xray-dataset", "ieee8023"}),
        frozenset({"covid19-detection-xray-dataset", "zhanglab"}),
        frozenset({"covid19-image-dataset", "figure1"}),
    }
    # Every merged pair is the same film at the finer scale too.
    for row in pairs[~pairs["exact"]].itertuples():
        a, b = (row.source_a, row.path_a), (row.source_b, row.path_b)
        fa, fb = _whole_frame(roots[a[0]] / a[1]), _whole_frame(roots[b[0]] / b[1])
        assert thumbnail_correlation(_detail(fa), _detail(fb)) >= 0.4, (a, b)
    # Two different children whose thumbnails correlate at 0.956: not merged.
    darshan = "covid19-detection-xray-dataset/NonAugmentedTrain"
    a = ("covid19-detection-xray-dataset", f"{darshan}/BacterialPneumonia/277.jpeg")
    b = ("covid19-detection-xray-dataset", f"{darshan}/ViralPneumonia/232.jpeg")
    assert cluster_of[a] != cluster_of[b]


def test_images_of_one_patient_stay_together(built: BuildResult) -> None:
    manifest = pd.read_parquet(built.path / "manifest.parquet")
    for _, group in manifest.dropna(subset=["patient_id"]).groupby("patient_id"):
        assert group["split"].nunique() == 1
    figure1 = manifest[manifest["source"] == "figure1"]
    assert figure1["patient_id"].value_counts().max() >= 2  # the test is not vacuous


def test_figure1_covid_00003a_and_b_stay_together(shared_sources: Path, tmp_path: Path) -> None:
    # Both have a blank finding, so the three-class recipes leave them out; a recipe that keeps
    # unknown labels shows where they go. Every seed keeps them on one side.
    recipe = Recipe.model_validate(
        {
            "name": "figure1-all",
            "description": "every Figure 1 image",
            "sources": ["figure1"],
            "views": ["PA", "AP", "AP_SUPINE", "LATERAL"],
            "classes": {"covid19": ["covid19"], "other": ["unknown", "normal", "pneumonia_other"]},
            "split": {"train": 0.5, "val": 0.0, "test": 0.5},
        }
    )
    for seed in range(5):
        result = build(
            recipe,
            out=tmp_path / str(seed),
            mirror=shared_sources,
            root=tmp_path / "root",
            seed=seed,
            executor=LocalExecutor(workers=1, progress=False),
            progress=False,
        )
        rows = result.manifest.set_index("path_raw")
        a, b = rows.loc["images/COVID-00003a.jpg"], rows.loc["images/COVID-00003b.jpg"]
        assert a["patient_id"] == b["patient_id"] == "figure1:COVID-00003"
        assert a["split"] == b["split"]


def test_audit_finds_no_leakage_from_the_images_themselves(built: BuildResult) -> None:
    report = audit_dataset(built.path)
    assert report.shared_patients == []
    assert report.cross_split_duplicates == []
    assert not report.leakage
    assert json.loads((built.path / "audit.json").read_text())["leakage"] is False


def test_audit_catches_leakage_planted_in_a_copy(built: BuildResult, tmp_path: Path) -> None:
    import shutil

    leaky = tmp_path / "leaky"
    shutil.copytree(built.path, leaky)
    manifest = pd.read_parquet(leaky / "manifest.parquet")
    train = manifest[manifest["split"] == "train"].iloc[0]
    test = manifest[manifest["split"] == "test"].index[0]
    shutil.copyfile(leaky / train["path"], leaky / manifest.loc[test, "path"])  # a copy in test
    # A patient id read back from parquet may be None or NaN (a truthy float): pd.isna sees both.
    patient = "planted:1" if pd.isna(train["patient_id"]) else train["patient_id"]
    manifest.loc[manifest["uid"] == train["uid"], "patient_id"] = patient
    manifest.loc[test, "patient_id"] = patient
    manifest.to_parquet(leaky / "manifest.parquet", index=False)
    report = audit_dataset(leaky)
    assert len(report.shared_patients) == 1
    assert len(report.cross_split_duplicates) >= 1
    assert report.leakage


def test_rebuild_from_the_lock_is_byte_identical(
    built: BuildResult, shared_sources: Path, tmp_path: Path
) -> None:
    again = build(
        "ignored-by-lock",
        out=tmp_path / "again",
        mirror=shared_sources,
        root=built.path.parent.parent / "root",
        lock=built.path / "lock.json",
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
    )
    assert (again.path / "manifest.parquet").read_bytes() == (
        built.path / "manifest.parquet"
    ).read_bytes()
    lock = json.loads((built.path / "lock.json").read_text())
    assert lock["seed"] == 0 and lock["recipe"]["name"] == "xray-covid"
    assert set(lock["sources"]) == set(built.sources_used)


def test_each_image_has_a_de_identified_dicom(built: BuildResult) -> None:
    import pydicom

    cache = built.path.parent.parent / "root" / "processed" / "xray"
    manifest = pd.read_parquet(built.path / "manifest.parquet")
    assert manifest["dicom_path"].notna().all()
    sample = manifest.groupby("source").head(5)
    for row in sample.itertuples():
        path = cache / row.dicom_path
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
        assert ds.PatientIdentityRemoved == "YES"
        assert row.source in str(ds.ImageComments)
        assert ds.pixel_array.shape[:2] == (row.height, row.width)
        data = path.read_bytes()
        if isinstance(row.patient_id, str):
            upstream_id = row.patient_id.split(":", 1)[1]
            assert row.patient_id.encode() not in data
            if len(upstream_id) >= 4:  # short numeric ids would match anything
                assert upstream_id.encode() not in data
                assert ds.PatientID != upstream_id
