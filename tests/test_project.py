"""Project-level promises: the README's two commands and the research-use notice."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from covid19_images import RESEARCH_USE_NOTICE
from covid19_images.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quick_start_is_two_commands_and_ci_runs_the_second_verbatim() -> None:
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert "covid19-images" in commands[0]
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci_lines


def test_research_use_notice_is_in_readme_and_help() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    head = readme[:800]
    assert "Research use only" in head and "rules nothing out" in head
    assert "diagnostic device" in head
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert " ".join(RESEARCH_USE_NOTICE.split()) in " ".join(result.stdout.split())
