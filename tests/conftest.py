"""Shared fixtures: the real upstream files in ../shared/sources and a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from covid19_images.assemble.build import BuildResult, build
from covid19_images.process.executor import LocalExecutor

SOURCES_ENV = "COVID19_IMAGES_SHARED_SOURCES"
"""Where the real upstream files are, when not at ../shared/sources beside the project."""
REQUIRE_SOURCES_ENV = "COVID19_IMAGES_REQUIRE_SOURCES"
"""Set to 1 (``.ci/run`` does): a run without the real upstream files fails instead of skipping
the tests that read them, so CI cannot pass on skipped tests alone."""

SHARED_SOURCES = Path(
    os.environ.get(SOURCES_ENV) or Path(__file__).resolve().parents[1].parent / "shared" / "sources"
)


def sources_required() -> bool:
    """Whether this run must have the real upstream files (``$COVID19_IMAGES_REQUIRE_SOURCES``)."""
    return os.environ.get(REQUIRE_SOURCES_ENV, "").strip().lower() not in ("", "0", "false", "no")


def missing_sources_message(folder: Path) -> str:
    return (
        f"real upstream files not found at {folder} (no README.md there), and "
        f"{REQUIRE_SOURCES_ENV} is set: the tests that read ../shared/sources cannot run. Put "
        f"the mirror at ../shared/sources (or point {SOURCES_ENV} at it), or unset "
        f"{REQUIRE_SOURCES_ENV} to skip those tests"
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    if sources_required() and not (SHARED_SOURCES / "README.md").is_file():
        pytest.exit(missing_sources_message(SHARED_SOURCES), returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Only a run given explicit paths that select no test (a file without tests, a ``-k`` that
    # matches nothing in the given folder) passes, and only outside CI. The whole suite
    # (``pytest`` with no paths, as ``.ci/run`` runs it) collecting nothing is a broken suite:
    # it stays pytest's exit 5, and so does any run with $COVID19_IMAGES_REQUIRE_SOURCES set.
    if (
        exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
        and session.config.args_source == pytest.Config.ArgsSource.ARGS
        and not sources_required()
    ):
        session.exitstatus = pytest.ExitCode.OK


@pytest.fixture(scope="session", autouse=True)
def _builds_do_not_download() -> Iterator[None]:
    """No build in a test downloads unless the test asks for it (``fetch=True``, ``--fetch``).

    A recipe's ``auto`` sources absent from a test's mirror would otherwise be fetched from the
    internet; tests talk only to servers they start on 127.0.0.1.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COVID19_IMAGES_FETCH", "0")
        yield


def sha256_checksum(data: bytes) -> str:
    """A catalog checksum (``sha256:<hex>``) of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def targz(members: dict[str, bytes], top: str | None = "repo-0123abcd") -> bytes:
    """A .tar.gz of ``members`` under one top-level folder, as GitHub serves a repository."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a connection to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def shared_sources() -> Path:
    """The real upstream files beside the project; tests that need them skip without them
    (and fail where ``$COVID19_IMAGES_REQUIRE_SOURCES`` is set)."""
    if not (SHARED_SOURCES / "README.md").is_file():
        if sources_required():
            pytest.fail(missing_sources_message(SHARED_SOURCES), pytrace=False)
        pytest.skip(f"real upstream files not found at {SHARED_SOURCES} (../shared/sources)")
    return SHARED_SOURCES


@pytest.fixture(scope="session")
def xray_dataset(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """``xray-covid`` from three X-ray sources of ../shared/sources (every class present)."""
    work = tmp_path_factory.mktemp("loaders")
    return build(
        "xray-covid",
        out=work / "out",
        mirror=shared_sources,
        root=work / "root",
        sources=["figure1", "zhanglab", "covid19-image-dataset"],
        executor=LocalExecutor(workers=2, progress=False),
        progress=False,
    )


@dataclass
class Served:
    """A file the test server answers with, and how it misbehaves."""

    body: bytes
    cut_after: int | None = None
    """Send only this many bytes of a full (non-range) answer, then close the connection."""
    cuts_left: int = 0
    honour_range: bool = True


@dataclass
class LocalServer:
    """An HTTP server on 127.0.0.1 started by a test; records every request it gets."""

    base_url: str
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def add(self, path: str, body: bytes, **behaviour: object) -> str:
        self.files[path] = Served(body, **behaviour)  # type: ignore[arg-type]
        return f"{self.base_url}{path}"


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    """A threaded HTTP/1.1 server on 127.0.0.1 with Range support (never the internet)."""
    state = LocalServer(base_url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            state.requests.append((self.path, range_header))
            served = state.files.get(self.path)
            if served is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, status, start = served.body, 200, 0
            match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
            if match and served.honour_range:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            payload = body[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            if served.cuts_left > 0 and served.cut_after is not None:
                served.cuts_left -= 1
                self.wfile.write(payload[: served.cut_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
