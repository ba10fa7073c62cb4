"""A build killed with SIGKILL at any point, rerun with the same command, completes, reuses what
the killed one processed, and writes the manifest of an uninterrupted build byte for byte; two
builds sharing one data root at the same time both complete with that manifest.

Each build is a real ``covid19-images build`` process on files of ../shared/sources; the test
watches the data root and the output folder and kills the process when a stage is under way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SOURCES = "figure1,zhanglab,covid19-image-dataset"
RECIPE = "xray-covid"


def _command(mirror: Path, out: Path, root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "covid19_images",
        "build",
        RECIPE,
        "--mirror",
        str(mirror),
        "--out",
        str(out),
        "--root",
        str(root),
        "--size",
        "64",
        "--no-fetch",
        "--dicom",
        "--workers",
        "1",
        "--sources",
        SOURCES,
    ]


def _environment() -> dict[str, str]:
    # One pseudonym key for every build, so builds in different data roots (each makes its
    # own salt) write the same de-identified DICOM names.
    return {**os.environ, "COVID19_IMAGES_FETCH": "0", "COVID19_IMAGES_SALT": "kill-test"}


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, capture_output=True, text=True, env=_environment(), timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return done


def _entries(root: Path) -> dict[Path, tuple[int, int]]:
    """Every visible processed-cache entry: its meta.json's inode and modification time."""
    found = {}
    for meta in (root / "processed").rglob("meta.json"):
        if not any(part.startswith(".") for part in meta.relative_to(root).parts):
            stat = meta.stat()
            found[meta.parent] = (stat.st_ino, stat.st_mtime_ns)
    return found


def _visible_entries_are_whole(root: Path) -> None:
    """No entry of the cache is visible without its meta.json (written last, renamed in), and
    every visible DICOM file of the processed layer reads whole."""
    import pydicom

    cache = root / "processed" / "xray"
    if not cache.is_dir():
        return
    for prefix in cache.iterdir():
        if prefix.is_dir() and len(prefix.name) == 2:
            for entry in prefix.iterdir():
                if not entry.name.startswith("."):
                    assert (entry / "meta.json").is_file(), f"half-written cache entry {entry}"
    for file in (cache / "dicom").rglob("*.dcm"):
        if not file.name.startswith("."):
            pydicom.dcmread(file).pixel_array  # noqa: B018 - raises on a truncated file


def _partial(out: Path) -> bool:
    return any(out.glob(f".{RECIPE}.partial-*"))


def _kill_when(command: list[str], ready: Callable[[], bool]) -> None:
    """Start the build, SIGKILL it once ``ready()`` holds, and check it was cut short."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_environment()
    )
    try:
        deadline = time.monotonic() + 300
        while not ready():
            assert process.poll() is None, "the build finished before the kill point"
            assert time.monotonic() < deadline, "the kill point never came"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The manifest of an uninterrupted build in a data root of its own."""
    work = tmp_path_factory.mktemp("uninterrupted")
    _run(_command(shared_sources, work / "out", work / "root"))
    return (work / "out" / RECIPE / "manifest.parquet").read_bytes()


def _points(root: Path, out: Path) -> dict[str, Callable[[], bool]]:
    def processed(n: int) -> Callable[[], bool]:
        # Visible entries, as the checks count them (a meta.json inside an entry's hidden
        # temporary folder, not yet renamed into place, is not one).
        return lambda: len(_entries(root)) >= n

    return {
        "early": lambda: (root / "processed").is_dir(),
        "mid-process": processed(40),
        "writing": lambda: _partial(out),
    }


@pytest.mark.parametrize("point", ["early", "mid-process", "writing"])
def test_a_killed_build_reruns_to_the_uninterrupted_manifest(
    point: str, shared_sources: Path, reference: bytes, tmp_path: Path
) -> None:
    out, root = tmp_path / "out", tmp_path / "root"
    command = _command(shared_sources, out, root)
    _kill_when(command, _points(root, out)[point])

    assert not (out / RECIPE).exists(), "a killed build left a dataset in place"
    _visible_entries_are_whole(root)
    before = _entries(root)

    _run(command)
    assert (out / RECIPE / "manifest.parquet").read_bytes() == reference
    assert not _partial(out), "the killed build's partial folder is still there"
    _visible_entries_are_whole(root)
    after = _entries(root)
    # every entry the killed build finished is reused as it is, not written again
    assert {entry: after.get(entry) for entry in before} == before
    if point == "mid-process":
        assert len(before) >= 40 and len(after) > len(before)


def test_a_build_killed_while_replacing_a_dataset_keeps_the_earlier_one(
    shared_sources: Path, reference: bytes, tmp_path: Path
) -> None:
    out, root = tmp_path / "out", tmp_path / "root"
    command = _command(shared_sources, out, root)
    _run(command)
    _kill_when([*command, "--force"], lambda: _partial(out))
    # the earlier dataset is still whole and in place, and a rerun is again the same
    assert (out / RECIPE / "manifest.parquet").read_bytes() == reference
    _run([*command, "--force"])
    assert (out / RECIPE / "manifest.parquet").read_bytes() == reference
    assert not _partial(out) and not any(out.glob(f".{RECIPE}.old-*"))


def test_two_builds_sharing_a_data_root_both_complete(
    shared_sources: Path, reference: bytes, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    commands = [_command(shared_sources, tmp_path / f"out{k}", root) for k in (1, 2)]
    processes = [
        subprocess.Popen(
            c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_environment()
        )
        for c in commands
    ]
    errors = [p.communicate(timeout=600)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [e[-1500:] for e in errors]
    for k in (1, 2):
        assert (tmp_path / f"out{k}" / RECIPE / "manifest.parquet").read_bytes() == reference
    _visible_entries_are_whole(root)
    # the shared cache is consistent: a third build reuses it and is the same again
    _run(_command(shared_sources, tmp_path / "out3", root))
    assert (tmp_path / "out3" / RECIPE / "manifest.parquet").read_bytes() == reference
