"""CI cannot go green on nothing: missing upstream files and empty runs fail where CI runs.

``.ci/run`` sets ``COVID19_IMAGES_REQUIRE_SOURCES=1``; a run with it and without the real upstream
files stops with one clear message instead of skipping every test that reads them. Each run here
is a pytest of its own, pointed at a folder that does not exist through
``COVID19_IMAGES_SHARED_SOURCES``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import REQUIRE_SOURCES_ENV, SOURCES_ENV, pytest_sessionfinish

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).relative_to(ROOT).as_posix()


def test_reads_the_mirror(shared_sources: Path) -> None:
    """The test the runs below select: it needs the real upstream files."""
    assert (shared_sources / "README.md").is_file()


def _pytest(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    environ.pop(REQUIRE_SOURCES_ENV, None)
    environ[SOURCES_ENV] = str(tmp_path / "no-such-sources")
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_missing_sources_skip_without_the_variable(tmp_path: Path) -> None:
    run = _pytest(tmp_path, f"{HERE}::test_reads_the_mirror", "-rs")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout
    assert "real upstream files not found" in run.stdout


def test_missing_sources_fail_the_run_where_required(tmp_path: Path) -> None:
    run = _pytest(tmp_path, f"{HERE}::test_reads_the_mirror", **{REQUIRE_SOURCES_ENV: "1"})
    output = run.stdout + run.stderr
    assert run.returncode not in (0, 5), output
    assert "passed" not in output and "skipped" not in output
    assert f"real upstream files not found at {tmp_path / 'no-such-sources'}" in output
    assert REQUIRE_SOURCES_ENV in output


def test_ci_exports_the_variable_before_the_readme_command() -> None:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    command = next(i for i, line in enumerate(lines) if line.rstrip().endswith("&& pytest"))
    exports = [i for i, line in enumerate(lines) if line == f"export {REQUIRE_SOURCES_ENV}=1"]
    assert exports and exports[0] < command


def test_a_whole_suite_run_that_collects_nothing_fails(tmp_path: Path) -> None:
    # No paths: the test paths come from the configuration, as when .ci/run calls ``pytest``.
    run = _pytest(tmp_path, "-o", f"testpaths={HERE}", "-k", "no_test_has_this_name")
    assert run.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, run.stdout + run.stderr


def test_an_explicit_path_that_selects_nothing_passes_only_outside_ci(tmp_path: Path) -> None:
    run = _pytest(tmp_path, HERE, "-k", "no_test_has_this_name")
    assert run.returncode == 0, run.stdout + run.stderr
    run = _pytest(tmp_path, HERE, "-k", "no_test_has_this_name", **{REQUIRE_SOURCES_ENV: "1"})
    assert run.returncode != 0


@pytest.mark.parametrize(
    ("source", "required", "expected"),
    [
        (pytest.Config.ArgsSource.TESTPATHS, False, pytest.ExitCode.NO_TESTS_COLLECTED),
        (pytest.Config.ArgsSource.INVOCATION_DIR, False, pytest.ExitCode.NO_TESTS_COLLECTED),
        (pytest.Config.ArgsSource.ARGS, True, pytest.ExitCode.NO_TESTS_COLLECTED),
        (pytest.Config.ArgsSource.ARGS, False, pytest.ExitCode.OK),
    ],
)
def test_exit_5_becomes_success_only_for_explicit_paths(
    monkeypatch: pytest.MonkeyPatch,
    source: pytest.Config.ArgsSource,
    required: bool,
    expected: pytest.ExitCode,
) -> None:
    if required:
        monkeypatch.setenv(REQUIRE_SOURCES_ENV, "1")
    else:
        monkeypatch.delenv(REQUIRE_SOURCES_ENV, raising=False)
    session = SimpleNamespace(
        config=SimpleNamespace(args_source=source),
        exitstatus=pytest.ExitCode.NO_TESTS_COLLECTED,
    )
    pytest_sessionfinish(session, pytest.ExitCode.NO_TESTS_COLLECTED)  # type: ignore[arg-type]
    assert session.exitstatus == expected
    failed = SimpleNamespace(config=session.config, exitstatus=pytest.ExitCode.TESTS_FAILED)
    pytest_sessionfinish(failed, pytest.ExitCode.TESTS_FAILED)  # type: ignore[arg-type]
    assert failed.exitstatus == pytest.ExitCode.TESTS_FAILED
