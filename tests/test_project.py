"""Project-level promises: the README's two commands, the research-use notice, and an
assemble package without import circles."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
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


ASSEMBLE = ROOT / "src" / "covid19_images" / "assemble"


def _imported_modules(path: Path) -> set[str]:
    """Every module a source file imports (at the top, in functions, under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_assemble_module_imports_alone() -> None:
    modules = sorted(p.stem for p in ASSEMBLE.glob("*.py") if p.stem != "__init__")
    assert {"build", "xray", "ct"} <= set(modules)
    for name in modules:  # a fresh interpreter each: an import circle fails in one of them
        subprocess.run(
            [sys.executable, "-c", f"import covid19_images.assemble.{name}"],
            check=True,
            capture_output=True,
        )


def test_the_assemblies_do_not_import_the_build() -> None:
    build = "covid19_images.assemble.build"
    for path in sorted(ASSEMBLE.glob("*.py")):
        if path.stem != "build":
            assert build not in _imported_modules(path), f"{path.name} imports {build}"
    for sibling in ("xray", "ct"):
        imported = _imported_modules(ASSEMBLE / f"{sibling}.py")
        other = {"xray": "ct", "ct": "xray"}[sibling]
        assert f"covid19_images.assemble.{other}" not in imported
