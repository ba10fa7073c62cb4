"""`covid19-images build` and `audit` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from covid19_images.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def figure1_build(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli")
    result = runner.invoke(
        app,
        [
            "build",
            "xray-covid",
            "--sources",
            "figure1,actualmed",
            "--mirror",
            str(shared_sources),
            "--out",
            str(out / "datasets"),
            "--root",
            str(out / "root"),
            "--workers",
            "1",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "images per class and split" in result.stdout
    assert "Research use only" in result.stdout
    return out / "datasets" / "xray-covid"


def test_build_writes_the_dataset(figure1_build: Path) -> None:
    manifest = pd.read_parquet(figure1_build / "manifest.parquet")
    assert set(manifest["source"]) <= {"figure1", "actualmed"}
    assert len(manifest) == len(list(figure1_build.glob("*/*/*.png")))


def test_audit_text_and_json(figure1_build: Path) -> None:
    text = runner.invoke(app, ["audit", str(figure1_build)])
    assert text.exit_code == 0, text.output
    assert "no leakage found" in text.stdout
    data = json.loads(runner.invoke(app, ["audit", str(figure1_build), "--json"]).stdout)
    assert data["leakage"] is False and data["images"] > 0


def test_audit_exits_non_zero_on_leakage(figure1_build: Path, tmp_path: Path) -> None:
    import shutil

    leaky = tmp_path / "leaky"
    shutil.copytree(figure1_build, leaky)
    manifest = pd.read_parquet(leaky / "manifest.parquet")
    patient = manifest["patient_id"].dropna().iloc[0]
    other = manifest.index[
        manifest["split"] != manifest.loc[manifest["patient_id"] == patient, "split"].iloc[0]
    ][0]
    manifest.loc[other, "patient_id"] = patient
    manifest.to_parquet(leaky / "manifest.parquet", index=False)
    result = runner.invoke(app, ["audit", str(leaky)])
    assert result.exit_code == 1
    assert "LEAKAGE FOUND" in result.stdout


def test_strict_turns_problems_into_an_exit_code(shared_sources: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "build",
            "xray-covid",
            "--sources",
            "figure1",
            "--mirror",
            str(shared_sources),
            "--out",
            str(tmp_path / "d"),
            "--root",
            str(tmp_path / "r"),
            "--workers",
            "1",
            "--strict",
        ],
    )
    assert result.exit_code == 1  # figure1's metadata is not UTF-8: a problem
    assert (tmp_path / "d" / "xray-covid" / "problems.csv").is_file()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["build", "no-such-recipe"], 2, "unknown recipe"),
        (["audit", "/nonexistent/dataset"], 2, "no readable manifest"),
    ],
)
def test_user_errors_are_one_message(args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


def test_build_with_no_source_present_says_what_to_do(tmp_path: Path) -> None:
    empty = tmp_path / "mirror"
    empty.mkdir()
    result = runner.invoke(
        app,
        [
            "build",
            "xray-covid",
            "--mirror",
            str(empty),
            "--root",
            str(tmp_path / "r"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1
    assert "none of its sources is present" in result.output
    assert not (tmp_path / "o" / "xray-covid").exists()


def test_recipe_options_from_the_command_line(shared_sources: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "build",
            "xray-covid",
            "--sources",
            "zhanglab,ieee8023",
            "--mirror",
            str(shared_sources),
            "--out",
            str(tmp_path / "d"),
            "--root",
            str(tmp_path / "r"),
            "--workers",
            "1",
            "--adult-only",
            "--views",
            "PA,AP",
            "--class",
            "covid19=covid19",
            "--class",
            "other=normal,pneumonia_viral,pneumonia_bacterial,pneumonia_other",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = pd.read_parquet(tmp_path / "d" / "xray-covid" / "manifest.parquet")
    assert set(manifest["class"]) == {"covid19", "other"}
    assert set(manifest["view"]) <= {"PA", "AP"}  # no AP_SUPINE, LATERAL or UNKNOWN
    assert "zhanglab" not in set(manifest["source"])  # every Zhang Lab image is a child's
    problems = pd.read_csv(tmp_path / "d" / "xray-covid" / "problems.csv")
    assert (problems["detail"] == "a child's image, and the recipe is adult-only").sum() == 39


def test_bad_class_option_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "xray-covid", "--class", "oops"])
    assert result.exit_code == 2
    assert "NAME=LABEL" in result.output
