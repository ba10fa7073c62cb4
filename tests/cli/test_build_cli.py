"""`covid19-images build` and `audit` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from covid19_images import RESEARCH_USE_NOTICE
from covid19_images.assemble.build import BuildResult
from covid19_images.cli import app
from covid19_images.loaders.packed import open_split

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
        (["build", "xray-covid", "--naive", "--lock", "lock.json"], 2, "drop --naive"),
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


def test_naive_build_keeps_the_copies_leaks_on_purpose_and_exits_0(
    xray_dataset: BuildResult, shared_sources: Path, tmp_path: Path
) -> None:
    honest = xray_dataset.path  # xray-covid of figure1, zhanglab, covid19-image-dataset
    result = runner.invoke(
        app,
        [
            "build",
            "xray-covid",
            "--naive",
            "--sources",
            "figure1,zhanglab,covid19-image-dataset",
            "--mirror",
            str(shared_sources),
            "--out",
            str(tmp_path / "d"),
            "--root",
            str(honest.parent.parent / "root"),  # the honest build's cache: nothing decoded
            "--workers",
            "2",
        ],
        env={"COLUMNS": "80"},
    )
    assert result.exit_code == 0, result.output
    naive = tmp_path / "d" / "xray-covid-naive"
    assert not (tmp_path / "d" / "xray-covid").exists()
    audit = json.loads((naive / "audit.json").read_text(encoding="utf-8"))
    found = len(audit["shared_patients"]), len(audit["cross_split_duplicates"])
    assert audit["leakage"] is True and sum(found) > 0
    assert json.loads((honest / "audit.json").read_text(encoding="utf-8"))["leakage"] is False
    # one line, even at 80 columns, with what the audit found
    lines = [line for line in result.stderr.splitlines() if "leakage by design" in line]
    assert len(lines) == 1
    assert f"found {found[0]} patient" in lines[0] and f"and {found[1]} cop" in lines[0]
    assert "never for reporting results" in lines[0]

    ours = pd.read_parquet(naive / "manifest.parquet")
    theirs = pd.read_parquet(honest / "manifest.parquet")
    assert set(theirs["uid"]) < set(ours["uid"])  # every honest image, and the copies
    extra = ours[~ours["uid"].isin(theirs["uid"])]
    problems = pd.read_csv(naive / "problems.csv")
    kept = problems[(problems["kind"] == "duplicate") & (problems["action"] == "kept")]
    extra_files = set(zip(extra["source"], extra["path_raw"], strict=True))
    assert extra_files == set(zip(kept["source"], kept["file"], strict=True))
    assert ((problems["kind"] == "duplicate") & (problems["action"] == "excluded")).sum() == 0
    # split by image: the recipe's fractions within each class, not by patient
    for _, group in ours.groupby("class"):
        counts = group["split"].value_counts()
        assert abs(counts.get("train", 0) - 0.7 * len(group)) <= 1
        assert abs(counts.get("test", 0) - 0.2 * len(group)) <= 1

    lock = json.loads((naive / "lock.json").read_text(encoding="utf-8"))
    assert lock["naive"] is True and lock["naive_build"]["images_kept"] == len(extra)
    assert json.loads((honest / "lock.json").read_text(encoding="utf-8"))["naive"] is False
    assert json.loads((naive / "packed.json").read_text(encoding="utf-8"))["naive"] is True
    assert open_split(naive, "test").labels.size == (ours["split"] == "test").sum()
    head = (naive / "datasheet.md").read_text(encoding="utf-8").splitlines()[:6]
    assert head[0].startswith("# Datasheet: xray-covid-naive")
    assert "**NAIVE DATASET: deliberately leaky, for comparison only. Never report" in head[2]
    assert RESEARCH_USE_NOTICE in "\n".join(head)

    again = runner.invoke(app, ["audit", str(naive)])
    assert again.exit_code == 1 and "LEAKAGE FOUND" in again.stdout
