"""The command line, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from covid19_images import RESEARCH_USE_NOTICE, __version__
from covid19_images.cli import app
from tests.catalog.test_catalog import SURVEY

runner = CliRunner()


def test_catalog_json_lists_every_source_with_the_essentials() -> None:
    result = runner.invoke(app, ["catalog", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    ids = {row["id"] for row in rows}
    assert set(SURVEY.values()) <= ids
    for row in rows:
        assert row["modality"] and row["tasks"]
        assert row["access"] in {"auto", "manual", "registration"}
        assert "license" in row and row["license_label"]


def test_catalog_filters() -> None:
    result = runner.invoke(app, ["catalog", "--json", "--modality", "ct", "--access", "auto"])
    rows = json.loads(result.stdout)
    assert rows and all("ct" in r["modality"] and r["access"] == "auto" for r in rows)
    result = runner.invoke(app, ["catalog", "--json", "--task", "localization"])
    assert all("localization" in r["tasks"] for r in json.loads(result.stdout))


def test_catalog_table_carries_the_research_notice() -> None:
    result = runner.invoke(app, ["catalog"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert "ieee8023" in result.stdout and "ucsd-covid-ct" in result.stdout
    assert " ".join(RESEARCH_USE_NOTICE.split()[:4]) in result.stdout


def test_bad_filter_value_is_a_usage_error() -> None:
    result = runner.invoke(app, ["catalog", "--modality", "mri"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_info_for_an_auto_source_says_how_it_is_downloaded(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["info", "ieee8023", "--root", str(tmp_path)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "covid19-images fetch ieee8023" in result.stdout
    assert "github.com/ieee8023/covid-chestxray-dataset/archive/" in result.stdout
    assert "local copy" in result.stdout and "none yet" in result.stdout


def test_info_for_a_manual_source_gives_the_steps(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["info", "covid19-radiography-database", "--root", str(tmp_path)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "kaggle.com" in result.stdout
    assert "fetch covid19-radiography-database --from" in result.stdout


def test_info_json_reports_the_local_copy_in_a_mirror(shared_sources: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["info", "figure1", "--json", "--root", str(tmp_path), "--mirror", str(shared_sources)]
    )
    data = json.loads(result.stdout)
    assert data["id"] == "figure1"
    assert data["local"] == {
        "path": str(shared_sources / "figure1-covid-chestxray"),
        "origin": "mirror",
    }


@pytest.mark.parametrize("command", [["info", "ieee"], ["fetch", "mosmeddta"]])
def test_unknown_source_exits_2_with_suggestions(command: list[str]) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    assert "did you mean" in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_fetch_manual_source_offline_says_how_to_get_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["fetch", "covid19-image-dataset", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "--from" in result.output and "--mirror" in result.output
    assert "Traceback" not in result.output


def test_fetch_from_incomplete_folder_lists_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "dl" / "images").mkdir(parents=True)
    result = runner.invoke(
        app, ["fetch", "figure1", "--from", str(tmp_path / "dl"), "--root", str(tmp_path / "r")]
    )
    assert result.exit_code == 1
    assert "metadata.csv (file)" in result.output


def test_fetch_from_mirror(shared_sources: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["fetch", "figure1", "ucsd-covid-ct", "--root", str(tmp_path)],
        env={"COVID19_IMAGES_MIRROR": str(shared_sources), "COLUMNS": "300"},
    )
    assert result.exit_code == 0, result.output
    assert "figure1: mirror" in result.stdout
    assert "ucsd-covid-ct: mirror" in result.stdout


def test_installed_command_runs_and_reports_its_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "covid19_images", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"covid19-images {__version__}"
