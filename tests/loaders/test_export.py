"""`covid19-images export` on datasets built from ../shared/sources and the seg fixtures.

Every format is checked row by row against the dataset's own ``manifest.parquet`` and
``packed.parquet`` (not a first line only), and every file written is searched for a missing
value written as text (``nan``, ``NaN``, ``None``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from covid19_images.assemble.build import BuildResult, build
from covid19_images.assemble.export import COVIDX_LABELS, ExportError, export
from covid19_images.cli.app import app
from covid19_images.loaders.packed import INDEX, read_meta
from covid19_images.process.executor import LocalExecutor

# the generated ct-lesion-seg dataset (its own module's fixtures), for the nnU-Net export
from tests.assemble.test_ct_seg_build import mirror, seg  # noqa: F401

MISSING = re.compile(r"\b(nan|NaN|None)\b")
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def xray_binary(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """``xray-binary`` (covid19, non_covid): figure1 and Darshan's dataset (no patient ids)."""
    work = tmp_path_factory.mktemp("binary")
    return build(
        "xray-binary",
        out=work / "out",
        mirror=shared_sources,
        root=work / "root",
        sources=["figure1", "covid19-detection-xray-dataset"],
        executor=LocalExecutor(workers=2, progress=False),
        progress=False,
    )


def _expected(folder: Path) -> pd.DataFrame:
    """Every packed sample with its manifest row's patient id and source: what an export holds."""
    samples = pd.read_parquet(folder / INDEX)
    manifest = pd.read_parquet(folder / "manifest.parquet", columns=["uid", "patient_id", "source"])
    rows = samples.merge(manifest, on="uid", how="left", validate="many_to_one")
    assert rows["source"].notna().all()
    rows["file"] = rows["path"].map(lambda p: Path(str(p)).name)
    return rows


def _no_missing_written(target: Path) -> int:
    """Fail on ``nan``/``NaN``/``None`` in any file under ``target``; returns the files read.

    Text files are searched as text; Parquet and Arrow files cell by cell in their string
    columns (a proper null there is a missing value, not text).
    """
    read = 0
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        if path.suffix in (".txt", ".json", ".csv", ".md"):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                assert not MISSING.search(line), f"{path}:{n}: {line}"
        elif path.suffix in (".parquet", ".arrow"):
            table = (
                pq.read_table(path)
                if path.suffix == ".parquet"
                else pa.ipc.open_stream(path).read_all()
            )
            for column in table.flatten().columns:
                if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                    values = [v for v in column.to_pylist() if v is not None]
                    bad = [v for v in values if MISSING.search(v)]
                    assert not bad, f"{path}: {bad[:3]}"
        else:
            continue
        read += 1
    return read


def _covidx_rows(target: Path) -> pd.DataFrame:
    """The label files read the way COVID-Net's data.py does: each line split on whitespace."""
    rows = []
    for split in SPLITS:
        for line in (target / f"{split}.txt").read_text(encoding="utf-8").splitlines():
            fields = line.split()
            assert len(fields) == 4, line  # patient_id filename label source
            assert line == " ".join(fields)  # single spaces, nothing else
            rows.append(dict(zip(("patient", "file", "label", "source"), fields, strict=True)))
            assert (target / split / fields[1]).is_file()
            rows[-1]["split"] = split
    return pd.DataFrame(rows)


def _check_covidx(target: Path, folder: Path, labels: dict[str, str]) -> pd.DataFrame:
    """Every line of every split against the dataset; returns the expected rows."""
    expected = _expected(folder)
    found = _covidx_rows(target)
    assert len(found) == len(expected)
    assert found["file"].is_unique
    written = found.rename(columns={c: f"written_{c}" for c in found.columns if c != "file"})
    merged = written.merge(expected, on="file", how="outer", validate="one_to_one", indicator=True)
    assert (merged["_merge"] == "both").all()
    assert (merged["written_split"] == merged["split"]).all()
    assert (merged["written_label"] == merged["class"].map(labels)).all()
    assert (merged["written_source"] == merged["source"]).all()
    known = merged["patient_id"].notna()
    assert (merged.loc[known, "written_patient"] == merged.loc[known, "patient_id"]).all()
    assert (merged.loc[~known, "written_patient"] == merged.loc[~known, "uid"]).all()
    # a patient never in two splits (all images without an id were one patient "nan" before)
    splits_of = merged.groupby("written_patient")["split"].nunique()
    assert (splits_of == 1).all(), splits_of[splits_of > 1].head()
    # COVID-Net's way, too: a space-separated file of four columns and no missing value
    for split in SPLITS:
        frame = pd.read_csv(target / f"{split}.txt", sep=" ", header=None)
        assert frame.shape == (int((expected["split"] == split).sum()), 4)
        assert not frame.isna().any().any()
    assert _no_missing_written(target) >= len(SPLITS)
    return expected


def test_imagefolder_every_file(xray_dataset: BuildResult, tmp_path: Path) -> None:
    target = export(xray_dataset.path, "imagefolder", tmp_path / "if")
    expected = _expected(xray_dataset.path)
    found = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    want = expected["split"] + "/" + expected["class"] + "/" + expected["file"]
    assert found == sorted(want) and len(found) == len(xray_dataset.manifest)
    for rel, written in zip(expected["path"], want, strict=True):
        assert (target / written).stat().st_ino == (xray_dataset.path / str(rel)).stat().st_ino
    assert not any(MISSING.search(name) for name in found)


def test_covidx_every_line_and_patient(xray_dataset: BuildResult, tmp_path: Path) -> None:
    target = export(xray_dataset.path, "covidx", tmp_path / "cx")
    expected = _check_covidx(target, xray_dataset.path, dict(COVIDX_LABELS))
    without = expected[expected["patient_id"].isna()]
    # not vacuous: Kaggle covid19-image-dataset has no patient ids, figure1 and zhanglab have
    assert len(without) > 0 and set(without["source"]) == {"covid19-image-dataset"}
    assert expected["patient_id"].notna().sum() > 0
    lines = (target / "train.txt").read_text(encoding="utf-8").splitlines()
    assert set(line.split()[2] for line in lines) <= {"COVID-19", "pneumonia", "normal"}


def test_covidx_binary_task(xray_dataset: BuildResult, tmp_path: Path) -> None:
    target = export(xray_dataset.path, "covidx", tmp_path / "cb", covidx_task="binary")
    labels = {"covid19": "positive", "normal": "negative", "pneumonia": "negative"}
    expected = _check_covidx(target, xray_dataset.path, labels)
    found = _covidx_rows(target)
    for split in SPLITS:
        counts = found[found["split"] == split]["label"].value_counts().to_dict()
        rows = expected[expected["split"] == split]
        covid = int((rows["class"] == "covid19").sum())
        assert counts == {
            k: v for k, v in {"positive": covid, "negative": len(rows) - covid}.items() if v
        }


def test_xray_binary_dataset_exports_binary_only(xray_binary: BuildResult, tmp_path: Path) -> None:
    assert read_meta(xray_binary.path)["classes"] == ["covid19", "non_covid"]
    target = export(xray_binary.path, "covidx", tmp_path / "cb", covidx_task="binary")
    expected = _check_covidx(
        target, xray_binary.path, {"covid19": "positive", "non_covid": "negative"}
    )
    without = expected[expected["patient_id"].isna()]
    assert len(without) > 0 and set(without["source"]) == {"covid19-detection-xray-dataset"}
    found = _covidx_rows(target)
    assert set(found["label"]) == {"positive", "negative"}
    assert int((found["label"] == "positive").sum()) == int((expected["class"] == "covid19").sum())
    with pytest.raises(ExportError, match=r"COVIDx labels are COVID-19, pneumonia and normal"):
        export(xray_binary.path, "covidx", tmp_path / "c3")
    assert not (tmp_path / "c3").exists() and not (tmp_path / ".c3.partial").exists()
    with pytest.raises(ExportError, match="covidx only"):
        export(xray_binary.path, "imagefolder", tmp_path / "if", covidx_task="binary")
    with pytest.raises(ExportError, match="tasks: 3class, binary"):
        export(xray_binary.path, "covidx", tmp_path / "x", covidx_task="5class")  # type: ignore[arg-type]


def test_imagefolder_layout_matches_the_splits(xray_dataset: BuildResult, tmp_path: Path) -> None:
    target = export(xray_dataset.path, "imagefolder", tmp_path / "if")
    manifest = xray_dataset.manifest
    found = sorted(p.relative_to(target).as_posix() for p in target.glob("*/*/*.png"))
    assert found == sorted(manifest["path"])  # same split/class/file layout
    one = manifest["path"].iloc[0]
    assert (target / one).stat().st_ino == (xray_dataset.path / one).stat().st_ino  # a link


def test_monai_datalist_every_item(xray_dataset: BuildResult, tmp_path: Path) -> None:
    target = export(xray_dataset.path, "monai", tmp_path / "monai")
    data = json.loads((target / "datalist.json").read_text(encoding="utf-8"))
    classes = read_meta(xray_dataset.path)["classes"]
    assert data["labels"] == {str(i): c for i, c in enumerate(classes)}
    expected = _expected(xray_dataset.path)
    for split, key in zip(SPLITS, ("training", "validation", "test"), strict=True):
        rows = expected[expected["split"] == split].sort_values("index")
        assert [i["uid"] for i in data[key]] == list(rows["uid"])
        for item, row in zip(data[key], rows.to_dict("records"), strict=True):
            assert item["image"] == f"{split}/{row['class']}/{row['file']}"
            assert item["label"] == row["label"] == classes.index(row["class"])
            assert (target / item["image"]).is_file()
    assert sum(len(data[k]) for k in ("training", "validation", "test")) == len(expected)
    assert _no_missing_written(target) == 1


def test_hf_every_row(xray_dataset: BuildResult, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    saved = export(xray_dataset.path, "hf", tmp_path / "hf")
    dd = datasets.load_from_disk(str(saved))
    expected = _expected(xray_dataset.path)
    assert {k: len(v) for k, v in dd.items()} == expected["split"].value_counts().to_dict()
    classes = read_meta(xray_dataset.path)["classes"]
    for split in SPLITS:
        ds = dd[split].cast_column("image", datasets.Image(decode=False))
        assert ds.features["label"].names == classes
        rows = expected[expected["split"] == split].sort_values("index")
        assert ds["uid"] == list(rows["uid"])
        assert ds["label"] == list(rows["label"])
        # save_to_disk embeds each image: the dataset's own file's bytes, under its file name
        for image, rel in zip(ds["image"], rows["path"], strict=True):
            assert image["path"] == Path(str(rel)).name
            assert image["bytes"] == (xray_dataset.path / str(rel)).read_bytes()
    assert _no_missing_written(saved) >= len(SPLITS)


def test_nnunet_every_case(seg: BuildResult, tmp_path: Path) -> None:  # noqa: F811
    target = export(seg.path, "nnunet", tmp_path / "raw") / "Dataset501_COVID19Lesion"
    manifest = seg.manifest
    dataset = json.loads((target / "dataset.json").read_text(encoding="utf-8"))
    assert (
        dataset["description"]
        == json.loads((seg.path / "lock.json").read_text(encoding="utf-8"))["recipe"]["description"]
    )
    for test, images, labels in ((False, "imagesTr", "labelsTr"), (True, "imagesTs", "labelsTs")):
        uids = sorted(manifest.loc[(manifest["split"] == "test") == test, "uid"])
        assert sorted(p.name for p in (target / images).iterdir()) == [
            f"{u}_0000.nii.gz" for u in uids
        ]
        assert sorted(p.name for p in (target / labels).iterdir()) == [f"{u}.nii.gz" for u in uids]
    folds = json.loads((target / "splits_final.json").read_text(encoding="utf-8"))
    for split in ("train", "val"):
        assert folds[0][split] == sorted(manifest.loc[manifest["split"] == split, "uid"])
    assert _no_missing_written(target) == 2


def test_bad_requests_are_one_clear_error(xray_dataset: BuildResult, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="nnU-Net needs a segmentation dataset"):
        export(xray_dataset.path, "nnunet", tmp_path / "nn")
    with pytest.raises(ExportError, match="unknown format 'voc'"):
        export(xray_dataset.path, "voc", tmp_path / "x")
    with pytest.raises(ExportError, match="COCO needs a detection dataset"):
        export(xray_dataset.path, "coco", tmp_path / "c")
    assert not (tmp_path / "c").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ExportError, match="not empty"):
        export(xray_dataset.path, "imagefolder", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text(encoding="utf-8") == "mine"
    result = CliRunner().invoke(app, ["export", str(xray_dataset.path), "--format", "voc"])
    assert result.exit_code == 2 and "unknown format" in result.output
    assert "Traceback" not in result.output


def test_cli_export_writes_under_the_dataset(xray_dataset: BuildResult) -> None:
    result = CliRunner().invoke(app, ["export", str(xray_dataset.path), "--format", "covidx"])
    assert result.exit_code == 0, result.output
    written = xray_dataset.path / "exports" / "covidx"
    assert (written / "test.txt").is_file()
    counts = pd.read_csv(written / "test.txt", sep=" ", header=None)
    assert len(counts) == int((xray_dataset.manifest["split"] == "test").sum())


def test_cli_covidx_task(xray_dataset: BuildResult) -> None:
    runner = CliRunner()
    args = ["export", str(xray_dataset.path), "--format", "covidx", "--covidx-task"]
    result = runner.invoke(app, [*args, "binary"])
    assert result.exit_code == 0, result.output
    written = xray_dataset.path / "exports" / "covidx-binary"
    labels = pd.read_csv(written / "train.txt", sep=" ", header=None)[2]
    assert set(labels) == {"positive", "negative"}
    bad = runner.invoke(app, [*args, "4class"])
    assert bad.exit_code == 2 and "'3class'" in bad.output and "'binary'" in bad.output
    other = runner.invoke(
        app, ["export", str(xray_dataset.path), "--format", "monai", "--covidx-task", "binary"]
    )
    assert other.exit_code == 2 and "covidx only" in other.output
    assert "Traceback" not in bad.output + other.output
