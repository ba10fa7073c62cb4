"""CT builds over hostile input made from the real files: each case is one problem row, the rest
of the build completes, with no traceback, no numpy warning and nothing left behind.

The mirrors live in ``tmp_path``: symbolic links to the real files of ``../shared/sources``,
and copies only of the files a test changes (a DICOM slice with another ``BitsAllocated``, a
stray slice of another series, MosMedData studies written on the grid and with the header of
their real lesion masks, with NaN and infinite voxels planted).
"""

from __future__ import annotations

import gzip
import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from covid19_images.assemble.build import BuildResult, build
from covid19_images.assemble.recipe import Recipe, load_recipe, with_options
from covid19_images.process.ct.volume import MIN_SLICES
from covid19_images.process.executor import LocalExecutor

POS_CASE = "covid-19-pos-case"
POS_FOLDER = "COVID-19-pos-case"
BAD_POS_SLICE = "IM001070"  # a slice in the middle of the 23-slice reformatted series
STRAY = "IM009999"  # a copy of one slice, as the only image of another series
P001 = "Sample data/COVID-19 subjects/P001"
NAN, POS_INF, NEG_INF = 100, 5, 3
LOW, HIGH = -850.0, -300.0  # the generated studies: outside / inside the real lesion mask
BOMB_SHAPE = (4096, 4096, 4096)


def _link_tree(source: Path, target: Path, copies: tuple[str, ...] = ()) -> None:
    """``target`` mirrors ``source`` file by file as symbolic links; ``copies`` (relative
    paths) are real copies that a test may change."""
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(source)
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel.as_posix() in copies:
            shutil.copyfile(path, dest)
        else:
            dest.symlink_to(path)


def _bits_allocated_8(path: Path) -> None:
    """One slice of a 16-bit series whose header says 8 bits: its pixel data are twice as long
    as rows x columns x BitsAllocated / 8."""
    ds = pydicom.dcmread(path)
    ds.BitsAllocated = 8
    ds.save_as(path)


def _stray_slice(source: Path, target: Path) -> None:
    """A real slice, re-labelled as the only image of a series of its own."""
    ds = pydicom.dcmread(source)
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesNumber = 999
    ds.save_as(target)


def _recipe() -> Recipe:
    """ct-covid that keeps the covid-19-pos-case study (label unknown) too."""
    return with_options(
        load_recipe("ct-covid"),
        classes={"covid19": ["covid19"], "normal": ["normal"], "unlabelled": ["unknown"]},
    )


def _build(recipe: Recipe | str, mirror: Path, work: Path, sources: list[str]) -> BuildResult:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = build(
            recipe,
            out=work / "out",
            mirror=mirror,
            root=work / "root",
            sources=sources,
            executor=LocalExecutor(workers=1, progress=False),
            progress=False,
            fetch=False,
        )
    numeric = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not numeric, [str(w.message) for w in numeric]
    return result


def _left_behind(work: Path) -> list[Path]:
    """Temporary files or folders of a build that should be gone once it completed."""
    return [
        p
        for p in work.rglob("*")
        if p.name.startswith(".") and (".tmp" in p.name or ".partial" in p.name)
    ]


def _problems(result: BuildResult, source: str) -> pd.DataFrame:
    problems = pd.read_csv(result.path / "problems.csv")
    return problems[problems["source"] == source]


# --- DICOM: a slice whose pixels disagree with its header, a stray slice ------------------------


@pytest.fixture(scope="module")
def dicom_work(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("dicom")
    mirror = work / "mirror"
    pos_bad = f"{POS_FOLDER}/{BAD_POS_SLICE}"
    _link_tree(shared_sources / POS_CASE, mirror / POS_CASE, copies=(pos_bad,))
    _bits_allocated_8(mirror / POS_CASE / pos_bad)
    _stray_slice(
        shared_sources / POS_CASE / POS_FOLDER / "IM001080",
        mirror / POS_CASE / POS_FOLDER / STRAY,
    )
    # COVID-CT-MD P001 is JPEG Lossless: a decoder gives 16-bit pixels whatever the header says
    p001 = shared_sources / "covid-ct-md" / P001
    names = sorted(p.name for p in p001.iterdir())
    bad = f"{P001}/{names[len(names) // 2]}"
    _link_tree(shared_sources / "covid-ct-md", mirror / "covid-ct-md", copies=(bad,))
    _bits_allocated_8(mirror / "covid-ct-md" / bad)
    (work / "bad-p001").write_text(bad, encoding="utf-8")
    return work


@pytest.fixture(scope="module")
def dicom_build(dicom_work: Path) -> BuildResult:
    return _build(_recipe(), dicom_work / "mirror", dicom_work, [POS_CASE, "covid-ct-md"])


def test_a_slice_whose_pixels_disagree_with_its_header_is_dropped_not_its_series(
    dicom_build: BuildResult, dicom_work: Path
) -> None:
    manifest = dicom_build.manifest
    pos = manifest[manifest["source"] == POS_CASE]
    assert list(pos["depth"]) == [22]  # 23 slices, one left out
    rows = _problems(dicom_build, POS_CASE)
    gap = rows[rows["file"] == f"{POS_FOLDER}/{BAD_POS_SLICE}"]
    assert list(gap["kind"]) == ["slice-gap"] and list(gap["action"]) == ["skipped"]
    assert "BitsAllocated 8" in gap.iloc[0]["detail"]
    assert "22 slices are kept, stacked without it" in gap.iloc[0]["detail"]
    assert "positions of the slices after it are approximate" in gap.iloc[0]["detail"]
    assert not rows["kind"].isin(["unreadable-file", "mixed-series"]).any()

    # The same for a JPEG Lossless series: the slice goes, its label with it.
    bad = (dicom_work / "bad-p001").read_text(encoding="utf-8")
    p001 = manifest[manifest["source"] == "covid-ct-md"]
    assert list(p001["depth"]) == [147]
    md = _problems(dicom_build, "covid-ct-md")
    gap = md[md["file"] == bad]
    assert list(gap["kind"]) == ["slice-gap"] and "BitsAllocated 8" in gap.iloc[0]["detail"]
    slices = pd.read_parquet(dicom_build.path / "slices.parquet")
    own = slices[slices["uid"] == p001.iloc[0]["uid"]]
    assert len(own) == 147 and own["slice_label"].notna().all()
    for rel in (dicom_build.path / p001.iloc[0]["path"], *(dicom_build.path / own["path"][::49])):
        assert Path(rel).is_file()
    assert _left_behind(dicom_work) == []


def test_a_stray_single_slice_is_too_few_slices_and_no_volume(
    dicom_build: BuildResult, dicom_work: Path
) -> None:
    rows = _problems(dicom_build, POS_CASE)
    stray = rows[rows["file"] == f"{POS_FOLDER}/{STRAY}"]
    assert list(stray["kind"]) == ["too-few-slices"] and list(stray["action"]) == ["skipped"]
    assert (
        "series 999" in stray.iloc[0]["detail"]
        and f"at least {MIN_SLICES}" in (stray.iloc[0]["detail"])
    )
    manifest = dicom_build.manifest
    volumes = manifest[manifest["level"] == "volume"]
    assert (volumes["depth"] >= MIN_SLICES).all()
    assert len(volumes[volumes["source"] == POS_CASE]) == 1  # the real series only
    assert len(volumes) == 2


# --- NIfTI: NaN and infinite voxels ---------------------------------------------------------------


def _study(mask_path: Path, target: Path, *, plant: bool = False, depth: int | None = None) -> None:
    """A float32 HU study on the grid and with the header of a real MosMedData mask."""
    img = nib.load(mask_path)
    mask = np.asarray(img.dataobj)  # type: ignore[attr-defined]
    data = np.where(mask > 0, HIGH, LOW).astype(np.float32)
    if plant:
        data[:10, :10, 0] = np.nan
        data[100, 100:105, 1] = np.inf
        data[200, 200:203, 2] = -np.inf
    if depth is not None:
        data = data[..., :depth]
    header = img.header.copy()  # type: ignore[attr-defined]
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, img.affine, header), target)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def nifti_work(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("nifti")
    source = shared_sources / "mosmeddata"
    target = work / "mirror" / "mosmeddata"
    target.mkdir(parents=True)
    for name in ("dataset_registry.csv", "LICENSE"):
        (target / name).symlink_to(source / name)
    for n in (255, 256, 257, 258, 259):
        mask = f"masks/study_0{n}_mask.nii.gz"
        (target / "masks").mkdir(exist_ok=True)
        (target / mask).symlink_to(source / mask)
    studies = target / "studies" / "CT-1"
    _study(source / "masks/study_0255_mask.nii.gz", studies / "study_0255.nii.gz", plant=True)
    _study(source / "masks/study_0256_mask.nii.gz", studies / "study_0256.nii.gz")
    _study(source / "masks/study_0257_mask.nii.gz", studies / "study_0257.nii.gz", depth=1)
    nothing = nib.Nifti1Image(np.full((8, 8, 4), np.nan, np.float32), np.eye(4))
    nib.save(nothing, studies / "study_0258.nii.gz")  # type: ignore[attr-defined]
    _bomb(studies / "study_0259.nii.gz")
    return work


def _bomb(target: Path) -> None:
    """A gzipped NIfTI of a few hundred bytes whose header declares 4096^3 int16 voxels
    (128 GiB) and that holds no voxel: nibabel would allocate them all before reading."""
    header = nib.Nifti1Header()  # type: ignore[no-untyped-call]
    header.set_data_shape(BOMB_SHAPE)  # type: ignore[no-untyped-call]
    header.set_data_dtype(np.int16)  # type: ignore[no-untyped-call]
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4  # the header and an empty extension flag: no data
    target.write_bytes(gzip.compress(raw))
    assert target.stat().st_size < 1000


@pytest.fixture(scope="module")
def nifti_build(nifti_work: Path) -> BuildResult:
    return _build("ct-lesion-seg", nifti_work / "mirror", nifti_work, ["mosmeddata"])


def test_nan_and_infinite_voxels_are_repaired_to_int16_and_reported(
    nifti_build: BuildResult, nifti_work: Path
) -> None:
    rows = _problems(nifti_build, "mosmeddata")
    repaired = rows[rows["file"] == "studies/CT-1/study_0255.nii.gz"]
    assert list(repaired["kind"]) == ["bad-value"] and list(repaired["action"]) == ["repaired"]
    detail = repaired.iloc[0]["detail"]
    total = NAN + POS_INF + NEG_INF
    assert f"{total} voxels are not finite ({NAN} NaN, {POS_INF} +inf, {NEG_INF} -inf)" in detail
    assert f"-inf set to {int(LOW)}, +inf to {int(HIGH)}" in detail
    empty = rows[rows["file"] == "studies/CT-1/study_0258.nii.gz"]
    assert list(empty["kind"]) == ["bad-value"] and list(empty["action"]) == ["skipped"]
    assert "no voxel is finite" in empty.iloc[0]["detail"]

    manifest = nifti_build.manifest
    assert sorted(manifest["study_id"]) == ["study_0255", "study_0256"]  # the rest is built
    for row in manifest.itertuples():
        image = nib.load(nifti_build.path / str(row.path))
        assert image.get_data_dtype() == np.int16  # type: ignore[attr-defined]
        voxels = np.asarray(image.dataobj)  # type: ignore[attr-defined]
        assert voxels.dtype == np.int16
        assert (int(voxels.min()), int(voxels.max())) == (int(LOW), int(HIGH))
        label = nib.load(nifti_build.path / str(row.mask_path))
        assert label.shape == image.shape  # type: ignore[attr-defined]
    assert _left_behind(nifti_work) == []


def test_a_tiny_nifti_declaring_a_huge_volume_is_too_large_not_read(
    nifti_build: BuildResult, nifti_work: Path
) -> None:
    rows = _problems(nifti_build, "mosmeddata")
    bomb = rows[rows["file"] == "studies/CT-1/study_0259.nii.gz"]
    assert bomb[["kind", "action", "detail"]].to_dict("records") == [
        {
            "kind": "too-large",
            "action": "skipped",
            "detail": "study_0259.nii.gz: the header declares 4096 x 4096 x 4096 = "
            "68,719,476,736 voxels (128.0 GiB as int16), over the limit of "
            "1,200,000,000 voxels (8 x --max-pixels); not read",
        }
    ]
    assert sorted(nifti_build.manifest["study_id"]) == ["study_0255", "study_0256"]
    assert (nifti_build.path / "manifest.parquet").is_file()
    assert _left_behind(nifti_work) == []


def test_a_one_slice_nifti_is_too_few_slices(nifti_build: BuildResult) -> None:
    rows = _problems(nifti_build, "mosmeddata")
    one = rows[rows["file"] == "studies/CT-1/study_0257.nii.gz"]
    assert list(one["kind"]) == ["too-few-slices"] and list(one["action"]) == ["skipped"]
    assert "study_0257" not in set(nifti_build.manifest["study_id"])


# --- relative paths on the command line ---------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def relative_mirror(shared_sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory, holding ``mirror/`` (real sources linked, a small
    Zenodo COVID-19-CT-Seg layout generated)."""
    mirror = tmp_path / "mirror"
    for folder in ("figure1-covid-chestxray", POS_CASE):
        _link_tree(shared_sources / folder, mirror / folder)
    zen = mirror / "zenodo-ct-seg"
    rng = np.random.default_rng(0)
    shape = (24, 20, 6)
    affine = np.diag([0.8, 0.8, 5.0, 1.0])
    for name in ("coronacases_001", "coronacases_002", "coronacases_003"):
        lungs = np.zeros(shape, np.uint8)
        lungs[:12], lungs[12:] = 1, 2
        lesion = np.zeros(shape, np.uint8)
        lesion[4:8, 4:8, 2:4] = 1
        for folder, data in (
            ("COVID-19-CT-Seg_20cases", rng.integers(-1024, 600, shape).astype(np.int16)),
            ("Lung_Mask", lungs),
            ("Infection_Mask", lesion),
            ("Lung_and_Infection_Mask", np.where(lesion > 0, 3, lungs).astype(np.uint8)),
        ):
            (zen / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, affine), zen / folder / f"{name}.nii.gz")  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)
    return tmp_path


CLI_ENV = {"COLUMNS": "200", "COVID19_IMAGES_FETCH": "0"}


@pytest.mark.parametrize(
    ("recipe", "sources"),
    [
        ("xray-covid", "figure1"),
        ("ct-covid", POS_CASE),
        ("ct-lesion-seg", "zenodo-ct-seg"),
    ],
)
def test_build_with_relative_paths(relative_mirror: Path, recipe: str, sources: str) -> None:
    from covid19_images.cli import app

    args = ["build", recipe, "--mirror", "mirror", "--out", "out", "--root", "root"]
    args += ["--sources", sources, "--workers", "1", "--no-fetch"]
    if recipe == "ct-covid":  # the pos-case study's label is unknown: keep it as a class
        args += ["--class", "covid19=covid19", "--class", "unlabelled=unknown"]
    result = runner.invoke(app, args, env=CLI_ENV)
    assert result.exit_code == 0, result.output
    assert result.exception is None
    folder = relative_mirror / "out" / recipe
    manifest = pd.read_parquet(folder / "manifest.parquet")
    assert len(manifest) > 0
    assert (folder / "packed.json").is_file()
    assert _left_behind(relative_mirror) == []


def test_nan_in_float_tiff_slices_is_repaired_too(tmp_path: Path) -> None:
    """A slice stack of float TIFFs (mode F) with NaN: the same repair, never a cast warning."""
    from PIL import Image

    from covid19_images.problems import ProblemLog
    from covid19_images.process.ct.pipeline import process_volumes, volume_dir
    from covid19_images.records import Record

    records = []
    for name, plant in (("bad", True), ("good", False)):
        files = []
        for k in range(MIN_SLICES):
            pixels = np.full((16, 16), 1024.0 + 100 * k, np.float32)  # stored = HU + 1024
            if plant and k == 1:
                pixels[:4, :4] = np.nan
            rel = f"{name}/IM{k:05d}.tif"
            (tmp_path / name).mkdir(exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / rel)
            files.append(rel)
        records.append(
            Record(
                source="covid-ctset",
                path_raw=name,
                attributes={
                    "format": "slice-stack",
                    "files": files,
                    "hu": True,
                    "hu_offset": -1024,
                },
            )
        )
    log = ProblemLog()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        kept = process_volumes(records, {"covid-ctset": tmp_path}, tmp_path / "cache", log=log)
    assert [r.path_raw for r in kept] == ["bad", "good"]
    assert [(p.file, p.kind, p.action) for p in log] == [("bad", "bad-value", "repaired")]
    assert (
        "16 voxels are not finite (16 NaN, 0 +inf, 0 -inf): NaN and -inf set to 0"
        in next(iter(log)).detail
    )
    for r in kept:
        image = nib.load(volume_dir(tmp_path / "cache", r.processed_key or "") / "image.nii.gz")
        voxels = np.asarray(image.dataobj)  # type: ignore[attr-defined]
        assert voxels.dtype == np.int16 and (int(voxels.min()), int(voxels.max())) == (0, 200)


# --- the pixel limit of a CT build is part of its lock --------------------------------------------

UCSD = "ucsd-covid-ct"
LOW_MAX_PIXELS = 300_000  # under one kept UCSD-AI4H slice (794 x 494 px), over all the others


def test_a_ct_lock_rebuilds_with_the_pixel_limit_of_its_build(
    shared_sources: Path, tmp_path: Path
) -> None:
    first = build(
        "ct-covid",
        out=tmp_path / "out",
        mirror=shared_sources,
        root=tmp_path / "root",
        sources=[UCSD],
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
        fetch=False,
        max_pixels=LOW_MAX_PIXELS,
    )
    rows = _problems(first, UCSD)
    large = rows[rows["kind"] == "too-large"]
    assert len(large) == 1 and "794 x 494" in large.iloc[0]["detail"]
    lock = json.loads((first.path / "lock.json").read_text(encoding="utf-8"))
    assert lock["process"]["max_pixels"] == LOW_MAX_PIXELS

    again = build(
        "ct-covid",
        out=tmp_path / "rebuilt",
        mirror=shared_sources,
        root=tmp_path / "root",
        lock=first.path / "lock.json",
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
        fetch=False,
    )
    pd.testing.assert_frame_equal(again.manifest, first.manifest)
    assert (again.path / "manifest.parquet").read_bytes() == (
        first.path / "manifest.parquet"
    ).read_bytes()
    rows = _problems(again, UCSD)
    assert list(rows[rows["kind"] == "too-large"]["file"]) == list(large["file"])


def test_a_dicom_series_over_the_voxel_limit_is_too_large_before_it_is_allocated(
    shared_sources: Path,
) -> None:
    from covid19_images.process.ct.dicom_series import read_series, scan_series
    from covid19_images.process.ct.volume import VolumeError

    root = shared_sources / POS_CASE
    files = sorted(p.relative_to(root) for p in (root / POS_FOLDER).iterdir() if p.is_file())
    groups, _ = scan_series(root, files)
    group = max(groups, key=lambda g: len(g.files))
    voxels = len(group.files) * group.rows * group.columns
    assert read_series(root, group, max_voxels=voxels).array.size == voxels
    with pytest.raises(VolumeError) as caught:
        read_series(root, group, max_voxels=voxels - 1)
    assert caught.value.kind == "too-large"
    assert f"{len(group.files)} x {group.rows} x {group.columns} = {voxels:,} voxels" in str(
        caught.value
    )


def test_running_out_of_memory_on_a_volume_is_a_too_large_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from covid19_images.problems import ProblemLog
    from covid19_images.process.ct import pipeline
    from covid19_images.records import Record

    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), path)  # type: ignore[attr-defined]

    def out_of_memory(task: object) -> None:
        raise MemoryError

    monkeypatch.setattr(pipeline, "_read_image", out_of_memory)
    log = ProblemLog()
    record = Record(source="mosmeddata", path_raw="ct.nii.gz", attributes={"format": "nifti"})
    kept = pipeline.process_volumes([record], {"mosmeddata": tmp_path}, tmp_path / "cache", log=log)
    assert kept == []
    assert [(p.file, p.kind, p.action) for p in log] == [("ct.nii.gz", "too-large", "skipped")]
