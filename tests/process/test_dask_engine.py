"""`build --engine dask` on a real dask.distributed LocalCluster of two worker processes.

The cluster is started once for the module: two worker processes (one thread each, no
dashboard), each behind a nanny that restarts it if it dies.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pytest
from typer.testing import CliRunner

from covid19_images.assemble.build import BuildResult, build
from covid19_images.cli import app
from covid19_images.fetch import locate
from covid19_images.process.executor import LocalExecutor

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")

from covid19_images.process.dask_engine import (  # noqa: E402
    ClusterError,
    DaskExecutor,
    run_batch,
)

pytestmark = pytest.mark.filterwarnings(  # the scheduler's HTTP port, taken by another cluster
    "ignore:Port .* is already in use:UserWarning"
)

T = TypeVar("T")
R = TypeVar("R")

SOURCES = ["figure1", "covid19-image-dataset"]
"""Two small X-ray collections of the mirror that share copies (the copy search runs)."""
SIZE = 64


def _build(mirror: Path, work: Path, executor: Any, **options: Any) -> BuildResult:
    return build(
        "xray-covid",
        out=work / "out",
        mirror=mirror,
        root=options.pop("root", work / "root"),
        sources=SOURCES,
        size=SIZE,
        dicom=False,
        fetch=False,
        progress=False,
        executor=executor,
        **options,
    )


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as connected:
        yield connected


@pytest.fixture(scope="module")
def local(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """The reference: the same build on the local engine."""
    work = tmp_path_factory.mktemp("local")
    return _build(shared_sources, work, LocalExecutor(workers=1, progress=False))


def _same_outputs(result: BuildResult, reference: BuildResult) -> None:
    for name in ("manifest.parquet", "problems.csv", "duplicates.csv"):
        assert (result.path / name).read_bytes() == (reference.path / name).read_bytes(), name
    packed = sorted(p.relative_to(reference.path) for p in reference.path.rglob("*.npy"))
    assert packed, "the build packs each split"
    assert sorted(p.relative_to(result.path) for p in result.path.rglob("*.npy")) == packed
    for rel in packed:
        assert (result.path / rel).read_bytes() == (reference.path / rel).read_bytes(), rel
    lock = json.loads((result.path / "lock.json").read_text(encoding="utf-8"))
    assert lock == json.loads((reference.path / "lock.json").read_text(encoding="utf-8"))


def test_dask_build_matches_the_local_build(
    client: Any, local: BuildResult, shared_sources: Path, tmp_path: Path
) -> None:
    engine = DaskExecutor(client=client, progress=False)
    result = _build(shared_sources, tmp_path, engine)
    assert len(result.manifest) > 50
    _same_outputs(result, local)
    assert (tmp_path / "root" / "processed" / "xray").is_dir()  # the cache the workers wrote
    assert not list((tmp_path / "root" / "processed").glob(".covid19-images-probe-*"))
    assert set(client.run(os.getenv, "OMP_NUM_THREADS").values()) == {"1"}  # as pool workers


class _KillsAWorker:
    """Runs maps on ``engine``; in the first long one, SIGKILLs a busy worker's process."""

    def __init__(self, engine: DaskExecutor, pids: dict[str, int], after: int) -> None:
        self.engine, self.pids, self.after = engine, pids, after
        self.workers = engine.workers
        self.killed: tuple[int, list[str]] | None = None

    def check_folders(self, writable: Sequence[Path], readable: Sequence[Path] = ()) -> None:
        self.engine.check_folders(writable, readable)

    def map(self, fn: Callable[[T], R], items: Sequence[T], description: str = "") -> Iterator[R]:
        for n, result in enumerate(self.engine.map(fn, items, description), start=1):
            if self.killed is None and n == self.after and len(items) > 4 * self.after:
                self._kill()
            yield result

    def _kill(self) -> None:
        for _ in range(200):  # a worker that is running items of this map now
            busy = {a: list(keys) for a, keys in self.engine.client.processing().items() if keys}
            if busy:
                break
            time.sleep(0.005)
        address, keys = sorted(busy.items())[0] if busy else (sorted(self.pids)[0], [])
        os.kill(self.pids[address], signal.SIGKILL)
        self.killed = (self.pids[address], [str(k) for k in keys])


def test_a_worker_killed_mid_build_changes_nothing(
    client: Any, local: BuildResult, shared_sources: Path, tmp_path: Path
) -> None:
    pids: dict[str, int] = client.run(os.getpid)
    assert len(pids) == 2
    killer = _KillsAWorker(DaskExecutor(client=client, progress=False), pids, after=5)
    result = _build(shared_sources, tmp_path, killer)
    assert killer.killed is not None
    pid, busy = killer.killed
    assert busy, "the killed worker was running items of the build"
    _same_outputs(result, local)
    client.wait_for_workers(2, timeout=60)  # the nanny started a new process
    now = client.run(os.getpid)
    assert pid not in now.values() and len(now) == 2


class _FailsOn:
    """Installed on each worker: decoding one file raises, and each attempt is counted."""

    def __init__(self, path: Path, attempts: Path) -> None:
        self.path, self.attempts = str(path), attempts

    def install(self) -> None:
        from covid19_images.process import pipeline

        real = pipeline.decode_image
        target, attempts = self.path, self.attempts

        def decode(path: Path, *args: Any, **kwargs: Any) -> Any:
            if str(path) == target:
                with attempts.open("a") as counted:
                    counted.write(f"{os.getpid()}\n")
                raise RuntimeError(f"decoder bug on {Path(target).name}")
            return real(path, *args, **kwargs)

        decode.real = real  # type: ignore[attr-defined]
        pipeline.decode_image = decode


def _install(hook: _FailsOn) -> None:
    hook.install()


def _uninstall() -> None:
    from covid19_images.process import pipeline

    pipeline.decode_image = getattr(pipeline.decode_image, "real", pipeline.decode_image)


def test_an_item_failing_on_every_attempt_is_a_problem_row(
    client: Any, local: BuildResult, shared_sources: Path, tmp_path: Path
) -> None:
    first = local.manifest.sort_values("uid").iloc[0]
    name = Path(first["path_raw"]).name
    located = locate(first["source"], root=tmp_path / "root", mirror=shared_sources)
    assert located is not None
    attempts = tmp_path / "attempts.txt"
    client.run(_install, _FailsOn(located.path / first["path_raw"], attempts))
    try:
        engine = DaskExecutor(client=client, progress=False, retries=2)
        result = _build(shared_sources, tmp_path, engine)
    finally:
        client.run(_uninstall)
    assert len(attempts.read_text().splitlines()) == 4  # in its batch, then alone + 2 retries
    problems = pd.read_csv(result.path / "problems.csv")
    row = problems[problems["file"] == first["path_raw"]]
    assert list(row["kind"]) == ["unreadable-file"] and list(row["action"]) == ["skipped"]
    detail = row["detail"].iloc[0]
    assert detail.startswith("processing failed on every attempt (3 on its own")
    assert detail.endswith(f"RuntimeError: decoder bug on {name}")
    assert first["path_raw"] not in set(result.manifest["path_raw"])
    assert len(result.manifest) >= len(local.manifest) - 1  # one image fewer (its copy stays)


def test_a_cache_the_workers_cannot_see_is_one_clear_message(
    client: Any, shared_sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The workers run in another working directory, as on other machines; each has a folder of
    # the same relative name there, but not the client's: they must not write into it.
    here, elsewhere = tmp_path / "client", tmp_path / "worker"
    (elsewhere / "root" / "processed").mkdir(parents=True)
    here.mkdir()
    monkeypatch.chdir(here)
    cwd: dict[str, str] = client.run(os.getcwd)
    client.run(os.chdir, str(elsewhere))
    try:
        engine = DaskExecutor(client=client, progress=False)
        with pytest.raises(ClusterError) as raised:
            _build(shared_sources, tmp_path, engine, root=Path("root"))
    finally:
        for address, folder in cwd.items():
            client.run(os.chdir, folder, workers=[address])
    message = str(raised.value)
    assert message.startswith("2 of 2 dask workers cannot use the build's folders")
    assert "does not see the client's root/processed (another folder of that name)" in message
    assert "give absolute ones" in message and "docs/scale.md" in message
    assert not list((elsewhere / "root" / "processed").iterdir())  # nothing written there
    assert not (tmp_path / "out" / "xray-covid").exists()


def test_a_folder_missing_on_the_workers_is_named(client: Any, tmp_path: Path) -> None:
    (tmp_path / "sources").mkdir()
    engine = DaskExecutor(client=client, progress=False)
    engine.check_folders([tmp_path / "cache"], [tmp_path / "sources"])  # all visible: fine
    with pytest.raises(ClusterError, match="does not see /nonexistent/mirror"):
        engine.check_folders([tmp_path / "cache"], [Path("/nonexistent/mirror")])


def test_results_come_back_in_order_within_a_bounded_window(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted: list[int] = []
    submit = client.submit

    def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        submitted.append(len(args[1]) if fn is run_batch else 1)  # items in the task
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(client, "submit", counted)
    items = list(range(-400, 0))
    for window in (3, 40):
        submitted.clear()
        engine = DaskExecutor(client=client, progress=False, window=window)
        ahead: list[int] = []
        results: list[int] = []
        for result in engine.map(abs, items):
            results.append(result)
            ahead.append(sum(submitted) - len(results))  # out and not handed back yet
        assert results == list(range(400, 0, -1))
        assert max(ahead) <= window and ahead[-1] == 0
        assert len(submitted) > 1  # in several tasks


def test_without_dask_the_engine_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails
    with pytest.raises(ClusterError, match=r'pip install "covid19-images\[dask\]"'):
        DaskExecutor()
    result = CliRunner().invoke(
        app, ["build", "xray-covid", "--engine", "dask", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert 'pip install "covid19-images[dask]"' in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_cli_builds_on_a_running_scheduler(
    client: Any, local: BuildResult, shared_sources: Path, tmp_path: Path
) -> None:
    args = ["build", "xray-covid", "--sources", ",".join(SOURCES), "--size", str(SIZE)]
    args += ["--no-dicom", "--no-fetch", "--mirror", str(shared_sources)]
    args += ["--out", str(tmp_path / "out"), "--root", str(tmp_path / "root")]
    both = CliRunner().invoke(
        app, [*args, "--scheduler", client.scheduler.address, "--workers", "2"]
    )
    assert both.exit_code == 2 and "has its own workers" in both.output
    local_only = CliRunner().invoke(app, [*args, "--engine", "local", "--scheduler", "x:1"])
    assert local_only.exit_code == 2 and "use it with --engine dask" in local_only.output
    ran = CliRunner().invoke(
        app, [*args, "--engine", "dask", "--scheduler", client.scheduler.address]
    )
    assert ran.exit_code == 0, ran.output
    built = tmp_path / "out" / "xray-covid" / "manifest.parquet"
    assert built.read_bytes() == (local.path / "manifest.parquet").read_bytes()


def test_a_scheduler_without_workers_is_one_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from covid19_images.process import dask_engine

    monkeypatch.setattr(dask_engine, "WAIT_FOR_WORKERS_S", 1)
    empty = distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None)
    with (
        empty,
        DaskExecutor(empty.scheduler_address, progress=False) as engine,
        pytest.raises(ClusterError, match="no dask worker connected to the scheduler"),
    ):
        engine.check_folders([tmp_path / "cache"])
