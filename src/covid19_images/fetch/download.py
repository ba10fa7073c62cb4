"""Verified, resumable downloads on top of pooch.

pooch does the bookkeeping (a registry of expected checksums, retries with back-off, verification
before a file is moved into place). What it lacks is resuming: a 20 GB archive cut at 90 % would
start again from zero. :class:`ResumableDownloader` fills that gap as a pooch downloader: it keeps
the bytes received so far in a stable ``.part`` file and asks the server only for the rest (an HTTP
``Range`` request), falling back to a full download when the server does not honour ranges.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pooch
import requests
import urllib3

from covid19_images.errors import FetchError, HostUnreachableError

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes so far, total bytes or None) while a download streams."""

_CHUNK = 1 << 20


class IncompleteDownloadError(requests.exceptions.RequestException):
    """The connection closed before the announced number of bytes arrived."""


class ResumableDownloader:
    """A pooch downloader that resumes interrupted transfers from a ``.part`` file.

    Args:
        partial_dir: Folder for the ``.part`` files; it must survive between runs.
        timeout: Seconds to wait for the server to answer or send more bytes (to connect: at
            most 20; a server that takes longer to accept a connection is taken as unreachable).
        progress: Optional callback for a progress bar.

    Example:
        >>> import pooch, tempfile
        >>> from pathlib import Path
        >>> folder = Path(tempfile.mkdtemp())
        >>> downloader = ResumableDownloader(folder / ".partial")
        >>> registry = pooch.create(path=folder, base_url="", registry={"a.zip": None},
        ...                         urls={"a.zip": "http://127.0.0.1:1/a.zip"})
        >>> # registry.fetch("a.zip", downloader=downloader) resumes a cut transfer
    """

    def __init__(
        self,
        partial_dir: Path,
        timeout: float = 60.0,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.partial_dir = Path(partial_dir)
        self.timeout = timeout
        self.progress = progress

    def part_file(self, url: str) -> Path:
        """The stable file that holds the bytes of ``url`` received so far."""
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
        return self.partial_dir / f"{digest}.part"

    def __call__(self, url: str, output_file: str | Path, pooch_obj: Any = None) -> None:
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        part = self.part_file(url)
        offset = part.stat().st_size if part.exists() else 0
        # Identity encoding: byte ranges and checksums refer to the file's own bytes.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = requests.get(
                url, headers=headers, stream=True, timeout=(min(self.timeout, 20.0), self.timeout)
            )
        except requests.exceptions.ConnectionError as exc:
            reason = _unreachable(exc)
            if reason is None:
                raise  # a dropped connection: pooch tries again
            # No server answered at all (offline, DNS failure, refused): trying again soon would
            # only fail again, so this is not retried.
            host = urlsplit(url).hostname or url
            raise HostUnreachableError(host, f"could not download {url}: {reason}") from exc
        with response:
            if response.status_code in _NOT_RETRIED:
                raise FetchError(
                    f"could not download {url}: {response.status_code} {response.reason}"
                )
            if response.status_code == 416 and offset:
                # Nothing left to send: the part file is either whole or stale.
                total = _total_from_content_range(response.headers.get("Content-Range"))
                if total != offset:
                    part.unlink()
                    raise IncompleteDownloadError(f"stale partial download of {url} discarded")
            else:
                response.raise_for_status()
                resumed = response.status_code == 206 and offset > 0
                if not resumed:
                    offset = 0
                length = response.headers.get("Content-Length")
                expected = offset + int(length) if length is not None else None
                received = offset
                with part.open("ab" if resumed else "wb") as sink:
                    # read1 hands over every byte that arrived before a connection dropped;
                    # iter_content would drop its last buffer, losing data a resume needs.
                    try:
                        while chunk := response.raw.read1(_CHUNK):
                            sink.write(chunk)
                            received += len(chunk)
                            if self.progress is not None:
                                self.progress(received, expected)
                    except urllib3.exceptions.HTTPError as exc:
                        raise IncompleteDownloadError(
                            f"{url}: connection lost after {received} bytes ({exc}); "
                            "run again to resume"
                        ) from exc
                if expected is not None and received != expected:
                    raise IncompleteDownloadError(
                        f"{url}: received {received} of {expected} bytes; run again to resume"
                    )
        part.replace(output_file)


_NOT_RETRIED = frozenset({400, 401, 403, 404, 405, 410, 451})
"""Answers that another attempt would only repeat (missing or forbidden file)."""


def _unreachable(exc: requests.exceptions.ConnectionError) -> str | None:
    """Why no connection to the server could be made, or None for other connection errors.

    A name that does not resolve, a refused connection, no route, or no answer within the
    connect timeout all mean the server cannot be reached from here right now.
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "no answer from the server within the connect timeout (is this machine offline?)"
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if not isinstance(reason, urllib3.exceptions.NewConnectionError):
        return None
    text = str(reason)
    # urllib3 starts the message with the connection object: keep what follows it.
    _, sep, tail = text.partition("): ")
    return f"{tail if sep else text} (is this machine offline?)"


def _total_from_content_range(value: str | None) -> int | None:
    # "bytes */12345" or "bytes 0-99/12345"
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


@dataclass(frozen=True)
class DownloadedFile:
    """A file that arrived and passed verification."""

    url: str
    path: Path
    sha256: str
    size: int
    verified_against: str | None
    """The catalog checksum it matched, or None where upstream publishes none."""


def download_file(
    url: str,
    filename: str,
    folder: Path,
    checksum: str | None,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    progress: ProgressCallback | None = None,
) -> DownloadedFile:
    """Download ``url`` to ``folder/filename`` through pooch, verified and resumable.

    A file already in ``folder`` that matches ``checksum`` is not downloaded again. A checksum
    mismatch removes the download (nothing is kept that failed verification).

    Args:
        url: Where to download from.
        filename: Name to store the file under.
        folder: The download cache of this source and version.
        checksum: ``"sha256:<hex>"`` (or ``md5:``/``sha1:``), or None where unknown.
        retries: Further attempts after a failed one (a dropped connection or a checksum
            mismatch). A server that cannot be reached at all, or that answers that the file is
            missing or forbidden (404, 403, ...), fails at once.
        timeout: Seconds to wait for the server (for the connection itself, at most 20).
        progress: Optional progress callback.

    Raises:
        HostUnreachableError: No connection to the server could be made (offline).
        FetchError: When the download fails or does not match ``checksum``.

    Example:
        >>> download_file("http://127.0.0.1:8000/data.zip", "data.zip", Path("cache"),
        ...               "sha256:" + "0" * 64)  # doctest: +SKIP
    """
    registry = pooch.create(
        path=folder,
        base_url="",
        registry={filename: checksum},
        urls={filename: url},
        retry_if_failed=retries,
    )
    downloader = ResumableDownloader(folder / ".partial", timeout=timeout, progress=progress)
    try:
        path = Path(registry.fetch(filename, downloader=downloader))
    except ValueError as exc:  # pooch's checksum mismatch
        raise FetchError(
            f"{filename} from {url} does not match its catalog checksum ({exc}); it was not "
            "kept and nothing was marked complete"
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise FetchError(f"could not download {url}: {exc}") from exc
    except OSError as exc:
        raise FetchError(f"could not write {folder / filename}: {exc}") from exc
    finally:
        # The folder of part files goes once empty; a part file kept for resuming keeps it.
        with suppress(OSError):
            downloader.partial_dir.rmdir()
    return DownloadedFile(
        url=url,
        path=path,
        sha256=pooch.file_hash(str(path), alg="sha256"),
        size=path.stat().st_size,
        verified_against=checksum,
    )
