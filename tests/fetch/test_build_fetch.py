"""`build` fetches the recipe's missing auto sources, from a server on 127.0.0.1 only.

Every ``auto`` entry of the catalog is pointed at the test's server for the test's duration, so
no request can leave the machine; an entry the test serves nothing for answers 404.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import Result
from typer.testing import CliRunner

from covid19_images.assemble.build import BuildError, BuildResult, build
from covid19_images.catalog import get_source, load_catalog
from covid19_images.cli import app
from covid19_images.fetch import FetchEvent, ensure_sources
from covid19_images.fetch.store import MIRROR_ENV, RECEIPT
from covid19_images.process.executor import LocalExecutor
from tests.conftest import LocalServer, closed_port, sha256_checksum, targz

runner = CliRunner()
Serve = Callable[[str, dict[str, bytes]], None]


@pytest.fixture
def local_catalog(http_server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """Point every auto source's download at the local server; ``serve(id, members)`` serves one.

    The served archive has one top-level folder, as GitHub's archives do, and its checksum goes
    into the entry, so the download is verified like a pinned one.
    """
    catalog = load_catalog()
    entries = catalog._entries  # the cached catalog every lookup reads
    for entry in list(entries.values()):
        if entry.access != "auto" or not entry.download:
            continue
        local = [
            d.model_copy(
                update={
                    "kind": "url",
                    "url": f"{http_server.base_url}/{entry.id}/{d.resolved_filename()}",
                    "strip_top_level": d.strips_top_level(),
                    "checksum": None,
                }
            )
            for d in entry.download
        ]
        monkeypatch.setitem(entries, entry.id, entry.model_copy(update={"download": local}))
    monkeypatch.delenv(MIRROR_ENV, raising=False)

    def serve(source: str, members: dict[str, bytes]) -> None:
        entry = entries[source]
        (item,) = entry.download
        archive = targz(members, top=f"{source}-0123abcd" if item.strips_top_level() else None)
        http_server.add(item.resolved_url().removeprefix(http_server.base_url), archive)
        pinned = item.model_copy(update={"checksum": sha256_checksum(archive)})
        monkeypatch.setitem(entries, source, entry.model_copy(update={"download": [pinned]}))

    yield serve


def _figure1_members(shared_sources: Path, images: int = 8) -> dict[str, bytes]:
    """figure1's metadata and its smallest images, read from the mirror at test time."""
    folder = shared_sources / "figure1-covid-chestxray"
    smallest = sorted((folder / "images").iterdir(), key=lambda p: p.stat().st_size)[:images]
    members = {"metadata.csv": (folder / "metadata.csv").read_bytes()}
    members |= {f"images/{p.name}": p.read_bytes() for p in smallest}
    return members


def _build(tmp_path: Path, **options: Any) -> BuildResult:
    return build(
        "xray-covid",
        out=tmp_path / "out",
        root=tmp_path / "root",
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
        dicom=False,
        **options,
    )


def test_build_fetches_a_missing_auto_source_and_builds_from_it(
    local_catalog: Serve, http_server: LocalServer, shared_sources: Path, tmp_path: Path
) -> None:
    members = _figure1_members(shared_sources)
    local_catalog("figure1", members)
    events: list[FetchEvent] = []

    result = build(
        "xray-covid",
        out=tmp_path / "out",
        root=tmp_path / "root",
        sources=["figure1"],
        fetch=True,
        on_fetch=events.append,
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
        dicom=False,
    )

    raw = tmp_path / "root" / "raw" / "figure1" / str(get_source("figure1").version)
    assert (raw / RECEIPT).is_file()
    assert (raw / "metadata.csv").read_bytes() == members["metadata.csv"]
    assert result.fetch is not None and list(result.fetch.fetched) == ["figure1"]
    assert result.sources_used["figure1"].origin == "fetched"
    assert result.sources_used["figure1"].path == raw
    assert [(e.source, e.kind) for e in events] == [("figure1", "start"), ("figure1", "done")]
    manifest = pd.read_parquet(result.path / "manifest.parquet")
    assert len(manifest) > 0 and set(manifest["source"]) == {"figure1"}
    assert set(manifest["path_raw"]) <= {name for name in members if name.startswith("images/")}
    lock = json.loads((result.path / "lock.json").read_text())
    assert lock["sources"]["figure1"]["origin"] == "fetched"
    assert len(http_server.requests) == 1

    # The fetched source is an input like any other: the same build again is up to date and
    # asks the server for nothing.
    again = _build(tmp_path, sources=["figure1"], fetch=True)
    assert again.up_to_date
    assert again.fetch is not None and again.fetch.fetched == {}
    assert len(http_server.requests) == 1


def test_a_lock_rebuilds_on_a_fresh_data_root_by_fetching(
    local_catalog: Serve, http_server: LocalServer, shared_sources: Path, tmp_path: Path
) -> None:
    local_catalog("figure1", _figure1_members(shared_sources))
    first = _build(tmp_path / "first", sources=["figure1"], fetch=True)

    again = _build(tmp_path / "second", lock=first.path / "lock.json", fetch=True)

    assert again.fetch is not None and list(again.fetch.fetched) == ["figure1"]
    assert (again.path / "manifest.parquet").read_bytes() == (
        first.path / "manifest.parquet"
    ).read_bytes()
    assert len(http_server.requests) == 2  # once per data root


def test_a_failed_download_is_a_problem_row_and_the_build_goes_on(
    local_catalog: Serve, http_server: LocalServer, shared_sources: Path, tmp_path: Path
) -> None:
    local_catalog("figure1", _figure1_members(shared_sources))  # actualmed: nothing served, 404

    result = _build(tmp_path, sources=["actualmed", "figure1"], fetch=True)

    assert result.fetch is not None and result.fetch.fetched.keys() == {"figure1"}
    assert "404" in result.fetch.failed["actualmed"]
    assert result.sources_missing == ["actualmed"]
    problems = pd.read_csv(result.path / "problems.csv")
    failed = problems[problems["kind"] == "fetch-failed"]
    assert list(failed["source"]) == ["actualmed"] and list(failed["action"]) == ["skipped"]
    assert "404" in failed["detail"].iloc[0]
    assert len(pd.read_parquet(result.path / "manifest.parquet")) > 0
    asked = sorted(path for path, _ in http_server.requests)
    assert [p.split("/")[1] for p in asked] == ["actualmed", "figure1"]  # a 404 is not retried


def test_offline_build_fails_fast_once_per_host_and_says_what_to_do(
    local_catalog: Serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A port nobody listens on stands for a machine without network (connection refused).
    dead = f"http://127.0.0.1:{closed_port()}"
    entries = load_catalog()._entries
    for source in ("actualmed", "figure1", "ieee8023", "covid19-detection-xray-dataset"):
        entry = entries[source]
        moved = [d.model_copy(update={"url": f"{dead}/{source}.tar.gz"}) for d in entry.download]
        monkeypatch.setitem(entries, source, entry.model_copy(update={"download": moved}))

    with pytest.raises(BuildError) as info:
        _build(tmp_path, fetch=True)

    message = str(info.value)
    assert "none of its sources is present" in message
    assert "Connection refused" in message and "not tried: 127.0.0.1" in message
    assert "--from" in message and "--mirror" in message and "--no-fetch" in message
    assert "zhanglab" in message  # a manual source, with where to read how to get it
    assert not (tmp_path / "out" / "xray-covid").exists()


def test_no_fetch_makes_no_request(
    local_catalog: Serve, http_server: LocalServer, shared_sources: Path, tmp_path: Path
) -> None:
    local_catalog("figure1", _figure1_members(shared_sources))

    with pytest.raises(BuildError, match="Downloads are off") as info:
        _build(tmp_path, sources=["figure1", "zhanglab"], fetch=False)

    assert http_server.requests == []
    assert "covid19-images fetch figure1" in str(info.value)
    report = ensure_sources(["figure1"], root=tmp_path / "root", fetch=False)
    assert report.not_fetched == ["figure1"] and http_server.requests == []


def test_a_source_in_the_mirror_is_not_fetched(
    local_catalog: Serve, http_server: LocalServer, shared_sources: Path, tmp_path: Path
) -> None:
    report = ensure_sources(
        ["figure1", "actualmed"], root=tmp_path, mirror=shared_sources, fetch=True
    )
    assert report.fetched == {} and report.failed == {} and http_server.requests == []


def _cli_build(tmp_path: Path, *args: str) -> Result:
    return runner.invoke(
        app,
        [
            "build",
            "xray-covid",
            "--root",
            str(tmp_path / "root"),
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "1",
            "--no-dicom",
            *args,
        ],
        env={"COLUMNS": "200"},
    )


def test_cli_prints_what_it_fetches_and_the_manual_sources(
    local_catalog: Serve, shared_sources: Path, tmp_path: Path
) -> None:
    local_catalog("figure1", _figure1_members(shared_sources))
    mirror = tmp_path / "mirror"  # holds zhanglab only, read in place through a link
    mirror.mkdir()
    (mirror / "zhanglab").symlink_to(shared_sources / "zhanglab-chest-xrays")

    result = _cli_build(
        tmp_path,
        "--fetch",
        "--mirror",
        str(mirror),
        "--sources",
        "figure1,zhanglab,covid19-radiography-database,bimcv-covid19",
    )

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "fetching figure1" in out and "figure1: downloaded" in out
    assert "needs a download by hand" in out
    radiography = get_source("covid19-radiography-database")
    assert radiography.manual is not None and radiography.manual.url in out
    assert "bimcv-covid19 (download after registration)" in out
    assert "covid19-images fetch SOURCE --from" in out
    assert "zhanglab (" not in out  # present in the mirror: not listed
    assert "Traceback" not in result.output


def test_cli_no_fetch_makes_no_request_and_says_so(
    local_catalog: Serve, http_server: LocalServer, tmp_path: Path
) -> None:
    result = _cli_build(tmp_path, "--no-fetch", "--sources", "figure1")

    assert result.exit_code == 1
    assert "none of its sources is present" in result.output
    assert "Traceback" not in result.output
    assert http_server.requests == []


def test_cli_fetch_failure_is_a_warning_not_a_traceback(
    local_catalog: Serve, shared_sources: Path, tmp_path: Path
) -> None:
    local_catalog("figure1", _figure1_members(shared_sources))

    result = _cli_build(tmp_path, "--fetch", "--sources", "figure1,actualmed")

    assert result.exit_code == 0, result.output
    assert "actualmed" in result.stderr and "building without it" in result.stderr
    assert "fetch-failed" in result.output
