"""Downloads over real HTTP from a server on 127.0.0.1: verification, retries, resuming."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from covid19_images.errors import FetchError, HostUnreachableError
from covid19_images.fetch.download import ResumableDownloader, download_file
from tests.conftest import LocalServer, closed_port
from tests.conftest import sha256_checksum as _sha


def _payload(size: int = 300_000) -> bytes:
    return os.urandom(size)


def test_verified_download_is_kept_and_reported(http_server: LocalServer, tmp_path: Path) -> None:
    body = _payload()
    url = http_server.add("/data.bin", body)

    got = download_file(url, "data.bin", tmp_path, _sha(body), retries=0)

    assert got.path.read_bytes() == body
    assert "sha256:" + got.sha256 == _sha(body)
    assert got.size == len(body)
    assert got.verified_against == _sha(body)


def test_present_verified_file_is_not_downloaded_again(
    http_server: LocalServer, tmp_path: Path
) -> None:
    body = _payload(1000)
    url = http_server.add("/data.bin", body)
    download_file(url, "data.bin", tmp_path, _sha(body), retries=0)
    download_file(url, "data.bin", tmp_path, _sha(body), retries=0)
    assert len(http_server.requests) == 1


def test_checksum_mismatch_keeps_nothing(http_server: LocalServer, tmp_path: Path) -> None:
    body = _payload(5000)
    url = http_server.add("/data.bin", body)
    wrong = _sha(b"something else")

    with pytest.raises(FetchError, match="does not match its catalog checksum"):
        download_file(url, "data.bin", tmp_path, wrong, retries=1)

    assert len(http_server.requests) == 2  # retried once, then gave up
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []


def test_interrupted_download_resumes_with_a_range_request(
    http_server: LocalServer, tmp_path: Path
) -> None:
    body = _payload(400_000)
    cut = 150_000
    url = http_server.add("/big.bin", body, cut_after=cut, cuts_left=1)

    # No retries: the first attempt fails and leaves its bytes behind.
    with pytest.raises(FetchError):
        download_file(url, "big.bin", tmp_path, _sha(body), retries=0)
    assert not (tmp_path / "big.bin").exists()
    part = ResumableDownloader(tmp_path / ".partial").part_file(url)
    assert part.stat().st_size == cut

    got = download_file(url, "big.bin", tmp_path, _sha(body), retries=0)

    assert got.path.read_bytes() == body
    assert http_server.requests == [("/big.bin", None), ("/big.bin", f"bytes={cut}-")]
    assert not part.exists()


def test_retry_within_one_call_resumes(http_server: LocalServer, tmp_path: Path) -> None:
    body = _payload(200_000)
    url = http_server.add("/big.bin", body, cut_after=50_000, cuts_left=1)

    got = download_file(url, "big.bin", tmp_path, _sha(body), retries=2)

    assert got.path.read_bytes() == body
    assert [r for _, r in http_server.requests] == [None, "bytes=50000-"]


def test_server_that_ignores_ranges_gets_a_full_download(
    http_server: LocalServer, tmp_path: Path
) -> None:
    body = _payload(100_000)
    url = http_server.add("/big.bin", body, cut_after=30_000, cuts_left=1, honour_range=False)

    with pytest.raises(FetchError):
        download_file(url, "big.bin", tmp_path, _sha(body), retries=0)
    got = download_file(url, "big.bin", tmp_path, _sha(body), retries=0)

    assert got.path.read_bytes() == body  # the 200 answer replaced the stale part


def test_stale_part_longer_than_the_file_is_discarded(
    http_server: LocalServer, tmp_path: Path
) -> None:
    body = _payload(1000)
    url = http_server.add("/small.bin", body)
    part = ResumableDownloader(tmp_path / ".partial").part_file(url)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 5000)

    got = download_file(url, "small.bin", tmp_path, _sha(body), retries=1)

    assert got.path.read_bytes() == body


def test_unknown_checksum_records_the_sha256(http_server: LocalServer, tmp_path: Path) -> None:
    body = _payload(1000)
    url = http_server.add("/x.bin", body)
    got = download_file(url, "x.bin", tmp_path, None, retries=0)
    assert got.verified_against is None
    assert got.sha256 == hashlib.sha256(body).hexdigest()


def test_missing_file_is_a_clear_error(http_server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="404"):
        download_file(f"{http_server.base_url}/nope", "nope", tmp_path, None, retries=0)


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="could not download"):
        download_file("http://127.0.0.1:9/x", "x", tmp_path, None, retries=0, timeout=2)


def test_unreachable_server_fails_at_once_without_retries(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/x.tar.gz"
    start = time.monotonic()

    with pytest.raises(HostUnreachableError, match="offline") as info:
        download_file(url, "x.tar.gz", tmp_path, None, retries=3, timeout=2)

    # Retrying would sleep 1 + 2 + 3 s between attempts and fail the same way each time.
    assert time.monotonic() - start < 1.0
    assert info.value.host == "127.0.0.1"


def test_missing_file_is_asked_for_once(http_server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="404"):
        download_file(f"{http_server.base_url}/nope", "nope", tmp_path, None, retries=3)
    assert len(http_server.requests) == 1
