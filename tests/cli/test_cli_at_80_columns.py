"""The command line at 80 columns: help, catalog and info stay complete and copyable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from covid19_images.catalog import load_catalog


def _run(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "from covid19_images.cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_build_help_keeps_env_vars_and_syntax_whole() -> None:
    text = _run("build", "--help")
    assert "COVID19_IMAGES_MIRROR" in text and "COVID19_IMAGES_HOME" in text
    assert "--class NAME=LABEL[,LABEL...]" in text
    assert "<bool>" not in text and "<list[str]>" not in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.parametrize("command", ["catalog", "info", "fetch", "build", "audit", "export"])
def test_every_help_names_its_placeholders_and_fits(command: str) -> None:
    text = _run(command, "--help")
    for typed in ("<str>", "<path>", "<bool>", "<list[str]>", "<int range>", "<float range>"):
        assert typed not in text, (command, typed)
    assert max(len(line) for line in text.splitlines()) <= 80, command


def test_info_prints_every_download_url_on_one_line() -> None:
    catalog = load_catalog()
    for source in ("ieee8023", "covid19-detection-xray-dataset", "covidx"):
        entry = catalog.get(source)
        lines = _run("info", source).splitlines()
        urls = [item.resolved_url() for item in entry.download]
        if entry.manual is not None and entry.manual.url:
            urls.append(entry.manual.url)
        assert urls, source
        for url in urls:
            assert any(line.strip() == url for line in lines), (source, url)


def test_catalog_shows_every_licence() -> None:
    text = " ".join(_run("catalog").split())
    for entry in load_catalog():
        assert entry.id in text
        assert " ".join(entry.license.label().split()) in text, entry.id
    assert "…" not in text
