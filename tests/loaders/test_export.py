"""`covid19-images export` on datasets built from ../shared/sources and the seg fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from covid19_images.assemble.build import BuildResult
from covid19_images.assemble.export import ExportError, export
from covid19_images.cli.app import app


def test_imagefolder_layout_matches_the_splits(xray_dataset: BuildResult, tmp_path: Path) -> None:
    target = export(xray_dataset.path, "imagefolder", tmp_path / "if")
    manifest = xray_dataset.manifest
    found = sorted(p.relative_to(target).as_posix() for p in target.glob("*/*/*.png"))
    assert found == sorted(manifest["path"])  # same split/class/file layout
    one = manifest["path"].iloc[0]
    assert (target / one).stat().st_ino == (xray_dataset.path / one).stat().st_ino  # a link


def test_covidx_label_files(xray_dataset: BuildResult, tmp_path: Path) -> None:
    target = export(xray_dataset.path, "covidx", tmp_path / "cx")
    manifest = xray_dataset.manifest
    lines = (target / "train.txt").read_text(encoding="utf-8").splitlines()
    rows = manifest[manifest["split"] == "train"]
    assert len(lines) == len(rows)
    patient, filename, label, source = lines[0].split(" ")
    first = rows.iloc[0]
    assert filename == f"{first['uid']}.png" and (target / "train" / filename).is_file()
    assert (
        label
        == {"covid19": "COVID-19", "pneumonia": "pneumonia", "normal": "normal"}[first["class"]]
    )
    assert source == first["source"] and patient == str(first["patient_id"]).replace(" ", "_")


def test_monai_datalist_and_hf_round_trip(xray_dataset: BuildResult, tmp_path: Path) -> None:
    target = export(xray_dataset.path, "monai", tmp_path / "monai")
    data = json.loads((target / "datalist.json").read_text(encoding="utf-8"))
    items = data["training"] + data["validation"] + data["test"]
    assert len(items) == len(xray_dataset.manifest)
    assert all((target / i["image"]).is_file() for i in items)
    datasets = pytest.importorskip("datasets")
    saved = export(xray_dataset.path, "hf", tmp_path / "hf")
    dd = datasets.load_from_disk(str(saved))
    assert {k: len(v) for k, v in dd.items()} == xray_dataset.manifest[
        "split"
    ].value_counts().to_dict()


def test_bad_requests_are_one_clear_error(xray_dataset: BuildResult, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="nnU-Net needs a segmentation dataset"):
        export(xray_dataset.path, "nnunet", tmp_path / "nn")
    with pytest.raises(ExportError, match="unknown format 'coco'"):
        export(xray_dataset.path, "coco", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ExportError, match="not empty"):
        export(xray_dataset.path, "imagefolder", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text(encoding="utf-8") == "mine"
    result = CliRunner().invoke(app, ["export", str(xray_dataset.path), "--format", "coco"])
    assert result.exit_code == 2 and "unknown format" in result.output
    assert "Traceback" not in result.output


def test_cli_export_writes_under_the_dataset(xray_dataset: BuildResult) -> None:
    result = CliRunner().invoke(app, ["export", str(xray_dataset.path), "--format", "covidx"])
    assert result.exit_code == 0, result.output
    written = xray_dataset.path / "exports" / "covidx"
    assert (written / "test.txt").is_file()
    counts = pd.read_csv(written / "test.txt", sep=" ", header=None)
    assert len(counts) == int((xray_dataset.manifest["split"] == "test").sum())
