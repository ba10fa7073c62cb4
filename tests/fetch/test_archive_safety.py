"""Hostile archives: bombs are refused before they fill a disk, lies about sizes are caught while
extracting, and no refusal or failure leaves anything behind in the raw layer."""

from __future__ import annotations

import io
import shutil
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from covid19_images.catalog import SourceEntry
from covid19_images.cli import app
from covid19_images.errors import FetchError, LayoutError, UnsafeArchiveError
from covid19_images.fetch import fetch_source
from covid19_images.fetch.archive import (
    DEFAULT_MAX_EXTRACTED_BYTES,
    ArchiveTooLargeError,
    ExtractionLimits,
    extract_archive,
    parse_size,
)
from covid19_images.fetch.fetcher import default_max_extracted_bytes
from covid19_images.fetch.store import RECEIPT, raw_dir
from tests.conftest import LocalServer
from tests.conftest import sha256_checksum as _sha
from tests.conftest import targz as _targz

MB = 1_000_000
MiB = 1 << 20
NO_RATIO = 1e12  # a ratio limit that never applies, to test the size limit alone

REPO = {"metadata.csv": b"patientid,finding\n1,COVID-19\n", "images/1.png": b"\x89PNG fake"}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _lying_zip(name: str, data: bytes, declared: int) -> bytes:
    """A one-member zip whose local header and central directory both declare ``declared``
    bytes for a member that holds ``len(data)``."""
    raw = bytearray(_zip({name: data}))
    assert raw[:4] == b"PK\x03\x04"
    struct.pack_into("<I", raw, 22, declared)  # local header: uncompressed size
    central = raw.rfind(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, declared)  # central directory: the same
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        assert zf.infolist()[0].file_size == declared  # the lie is what zipfile reads
    return bytes(raw)


def _encrypted_zip(members: dict[str, bytes]) -> bytes:
    """A zip whose members are all marked encrypted (flag bit 0) in both the local header and
    the central directory, as a password-protected zip is."""
    raw = bytearray(_zip(members))
    start = 0
    while (local := raw.find(b"PK\x03\x04", start)) >= 0:
        raw[local + 6] |= 0x1  # local header: general purpose flags
        start = local + 4
    start = 0
    while (central := raw.find(b"PK\x01\x02", start)) >= 0:
        raw[central + 8] |= 0x1  # central directory: the same
        start = central + 4
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        assert all(info.flag_bits & 0x1 for info in zf.infolist())
    return bytes(raw)


def _empty_members(count: int) -> dict[str, bytes]:
    return {f"empty/{i}.txt": b"" for i in range(count)}


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _everything_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- extract_archive: the limits themselves ----------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_members_declaring_more_than_the_limit_are_refused_before_anything_is_written(
    tmp_path: Path, kind: str
) -> None:
    members = {f"zeros/{i}.bin": bytes(400_000) for i in range(3)}  # 1.2 MB in all
    data = _zip(members) if kind == "zip" else _targz(members)
    archive = _write(tmp_path / f"bomb.{kind}", data)
    assert archive.stat().st_size < 20_000
    target = tmp_path / "out"
    target.mkdir()
    before = _everything_under(tmp_path)

    with pytest.raises(ArchiveTooLargeError) as info:
        extract_archive(archive, target, limits=ExtractionLimits(MB, NO_RATIO))

    message = str(info.value)
    assert message.startswith(f"refused to extract bomb.{kind}: its members declare at least")
    assert "over the limit of 976.6 KiB" in message and "--max-extracted-bytes" in message
    assert "\n" not in message
    assert _everything_under(tmp_path) == before


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_members_within_the_limit_are_extracted(tmp_path: Path, kind: str) -> None:
    members = {f"zeros/{i}.bin": bytes(300_000) for i in range(3)}  # 0.9 MB in all
    data = _zip(members) if kind == "zip" else _targz(members, top=None)
    archive = _write(tmp_path / f"ok.{kind}", data)

    extract_archive(archive, tmp_path / "out", limits=ExtractionLimits(MB, NO_RATIO))

    assert (tmp_path / "out/zeros/2.bin").read_bytes() == bytes(300_000)


def test_a_member_that_expands_too_many_times_is_refused(tmp_path: Path) -> None:
    archive = _write(tmp_path / "ratio.zip", _zip({"ok.txt": b"x", "zeros.bin": bytes(2 * MiB)}))
    target = tmp_path / "out"
    target.mkdir()

    with pytest.raises(ArchiveTooLargeError) as info:
        extract_archive(archive, target)  # defaults: 2 TiB, 200:1

    message = str(info.value)
    assert "member zeros.bin expands" in message and "to 2.0 MiB" in message
    assert "over the limit of 200:1" in message and "--max-ratio" in message
    assert _everything_under(target) == set()

    extract_archive(archive, target, limits=ExtractionLimits(max_ratio=5000))
    assert (target / "zeros.bin").stat().st_size == 2 * MiB


def test_a_tar_that_expands_too_many_times_is_refused(tmp_path: Path) -> None:
    # A tar names no compressed size per member: the whole archive is held to the ratio.
    archive = _write(tmp_path / "ratio.tar.gz", _targz({"zeros.bin": bytes(2 * MiB)}))

    with pytest.raises(
        ArchiveTooLargeError, match=r"the archive expands .* over the limit of 200:1"
    ):
        extract_archive(archive, tmp_path / "out")

    assert _everything_under(tmp_path / "out") == set()


def test_small_members_that_compress_well_are_not_held_to_the_ratio(tmp_path: Path) -> None:
    archive = _write(tmp_path / "small.zip", _zip({"zeros.bin": bytes(500_000)}))
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out/zeros.bin").stat().st_size == 500_000


def test_a_member_whose_headers_understate_its_size_is_stopped_while_extracting(
    tmp_path: Path,
) -> None:
    # 3 MB of zeros declared as 100 bytes: no declared size or ratio gives it away, so only
    # counting the bytes while they are written catches it.
    archive = _write(tmp_path / "liar.zip", _lying_zip("scan.dcm", bytes(3 * MB), declared=100))
    target = tmp_path / "out"
    target.mkdir()

    with pytest.raises(ArchiveTooLargeError) as info:
        extract_archive(archive, target, limits=ExtractionLimits(MB))

    assert str(info.value) == (
        "refused to extract liar.zip: member scan.dcm holds more than the 100 B its headers "
        "declare; a damaged or forged archive"
    )
    assert _everything_under(target) == set()


def test_more_than_the_free_space_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _write(tmp_path / "big.zip", _zip({"a.bin": bytes(range(256)) * 40}))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=5000))

    with pytest.raises(ArchiveTooLargeError, match=r"declare 10\.0 KiB but only 4\.9 KiB is free"):
        extract_archive(archive, tmp_path / "out")


def test_an_encrypted_member_is_refused_as_unsupported(tmp_path: Path) -> None:
    archive = _write(tmp_path / "secret.zip", _encrypted_zip({"a.txt": b"a", "b/c.txt": b"c"}))
    target = tmp_path / "out"
    target.mkdir()

    with pytest.raises(FetchError) as info:
        extract_archive(archive, target)

    assert str(info.value) == (
        "refused to extract secret.zip: encrypted member a.txt (and 1 more): not supported "
        "(extract it with the password, then use the folder)"
    )
    assert _everything_under(target) == set()


def test_a_zip_that_fails_to_open_a_member_is_a_fetch_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should zipfile raise its RuntimeError ("password required") for a member the checks let
    # through, it is still one FetchError, not a traceback.
    archive = _write(tmp_path / "odd.zip", _zip({"a.txt": b"a"}))

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("File 'a.txt' is encrypted, password required for extraction")

    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)
    with pytest.raises(FetchError, match=r"odd\.zip is not a readable zip archive: .*encrypted"):
        extract_archive(archive, tmp_path / "out")
    assert _everything_under(tmp_path / "out") == set()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_more_members_than_the_limit_are_refused_though_empty(tmp_path: Path, kind: str) -> None:
    members = _empty_members(101)
    archive = _write(tmp_path / f"many.{kind}", _zip(members) if kind == "zip" else _tar(members))
    target = tmp_path / "out"
    target.mkdir()

    with pytest.raises(ArchiveTooLargeError) as info:
        extract_archive(archive, target, limits=ExtractionLimits(max_members=100))

    assert str(info.value) == (
        f"refused to extract many.{kind}: it holds more members than the limit of 100; an "
        "archive bomb? (if the archive is genuine, pass a higher max_members to fetch_source)"
    )
    assert _everything_under(target) == set()

    extract_archive(archive, target, limits=ExtractionLimits(max_members=101))
    assert len(list((target / "empty").iterdir())) == 101


def test_the_default_member_limit_is_a_million() -> None:
    assert ExtractionLimits().max_members == 1_000_000


def test_sizes_are_read_as_a_person_writes_them() -> None:
    assert parse_size("1000") == 1000
    assert parse_size("1MB") == MB and parse_size("1 MiB") == MiB and parse_size("1m") == MiB
    assert parse_size("2TiB") == 2 * 1024**4 == DEFAULT_MAX_EXTRACTED_BYTES
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


# --- fetch_source: nothing left behind -------------------------------------------------------


def _entry(**download: Any) -> SourceEntry:
    return SourceEntry.model_validate(
        {
            "id": "toy-source",
            "name": "Toy source",
            "summary": "A source made up by the test.",
            "modality": ["xray"],
            "tasks": ["classification"],
            "access": "auto",
            "version": "0123abcd",
            "download": [
                {"kind": "url", "url": "http://unused/repo.tar.gz", "strip_top_level": True}
                | download
            ],
            "layout": {"required": ["metadata.csv", "images/", "images/*.png"]},
        }
    )


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _leftovers(root: Path) -> list[str]:
    """Anything a failed fetch could leave: staging folders, moved-aside versions, temp files."""
    marks = (".partial", ".extracting-", ".old", ".tmp", ".part")
    return [str(p) for p in root.rglob("*") if any(m in p.name for m in marks)]


def _truncated_zip() -> bytes:
    whole = _zip({f"toy/images/{i}.png": bytes(range(256)) * 20 for i in range(50)})
    return whole[: len(whole) // 2]


REFUSED: dict[str, tuple[str, bytes, type[FetchError], str]] = {
    "traversal": (
        "evil.zip",
        _zip({**{f"toy/{k}": v for k, v in REPO.items()}, "../../escaped.txt": b"x"}),
        UnsafeArchiveError,
        r"refused to extract evil\.zip: unsafe members\n  - \.\./\.\./escaped\.txt",
    ),
    "truncated": ("cut.zip", _truncated_zip(), FetchError, r"cut\.zip is not a readable zip"),
    "not-an-archive": (
        "photo.tar.gz",
        b"\xff\xd8\xff\xe0 a JPEG renamed" * 100,
        FetchError,
        r"photo\.tar\.gz is not a readable tar archive",
    ),
    "zip-bomb": (
        "bomb.zip",
        _zip({f"toy/images/{i}.png": bytes(400_000) for i in range(3)}),
        ArchiveTooLargeError,
        r"refused to extract bomb\.zip: its members declare at least .*--max-extracted-bytes",
    ),
    "tar-bomb": (
        "bomb.tar.gz",
        _targz({f"images/{i}.png": bytes(400_000) for i in range(3)}),
        ArchiveTooLargeError,
        r"refused to extract bomb\.tar\.gz: its members declare at least",
    ),
    "encrypted-zip": (
        "secret.zip",
        _encrypted_zip({f"toy/{k}": v for k, v in REPO.items()}),
        FetchError,
        r"refused to extract secret\.zip: encrypted member toy/metadata\.csv \(and 1 more\): "
        r"not supported",
    ),
    "too-many-members": (
        "many.zip",
        _zip({**{f"toy/{k}": v for k, v in REPO.items()}, **_empty_members(100)}),
        ArchiveTooLargeError,
        r"refused to extract many\.zip: it holds more members than the limit of 100",
    ),
    "lying-zip": (
        "liar.zip",
        _lying_zip("toy/images/1.png", bytes(3 * MB), declared=100),
        ArchiveTooLargeError,
        r"member toy/images/1\.png holds more than the 100 B its headers declare",
    ),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_refused_archive_leaves_nothing_and_keeps_the_earlier_version(
    tmp_path: Path, kind: str
) -> None:
    entry = _entry()
    root = tmp_path / "root"
    good = _write(tmp_path / "good.zip", _zip({f"toy/{k}": v for k, v in REPO.items()}))
    earlier = fetch_source(entry, root=root, from_path=good)
    before = _snapshot(earlier.path)
    assert RECEIPT in before
    name, data, error, message = REFUSED[kind]
    bad = _write(tmp_path / name, data)

    with pytest.raises(error, match=message):
        fetch_source(entry, root=root, from_path=bad, max_extracted_bytes=MB, max_members=100)

    assert sorted(p.name for p in (root / "raw" / "toy-source").iterdir()) == ["0123abcd"]
    assert _snapshot(raw_dir(entry, root)) == before
    assert _leftovers(root) == []
    assert not list(tmp_path.rglob("escaped.txt"))


@pytest.mark.parametrize("kind", list(REFUSED))
def test_refused_archive_with_nothing_before_leaves_no_raw_folder(
    tmp_path: Path, kind: str
) -> None:
    name, data, error, message = REFUSED[kind]
    bad = _write(tmp_path / name, data)
    root = tmp_path / "root"

    with pytest.raises(error, match=message):
        fetch_source(_entry(), root=root, from_path=bad, max_extracted_bytes=MB, max_members=100)

    assert not (root / "raw").exists()
    assert _leftovers(root) == []


def test_archive_lacking_the_layout_leaves_nothing(tmp_path: Path) -> None:
    bad = _write(tmp_path / "other.zip", _zip({"README.md": b"not this"}))
    with pytest.raises(LayoutError, match=r"metadata\.csv"):
        fetch_source(_entry(), root=tmp_path / "root", from_path=bad)
    assert not (tmp_path / "root" / "raw").exists()


def test_the_earlier_version_is_put_back_when_the_last_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _entry()
    root = tmp_path / "root"
    good = _write(tmp_path / "good.zip", _zip({f"toy/{k}": v for k, v in REPO.items()}))
    before = _snapshot(fetch_source(entry, root=root, from_path=good).path)
    newer = _write(tmp_path / "newer.zip", _zip({f"toy/{k}": v + b"2" for k, v in REPO.items()}))
    final = raw_dir(entry, root)
    rename = Path.rename

    def failing_rename(self: Path, target: Any) -> Path:
        if Path(target) == final and ".partial" in str(self):
            raise OSError(28, "No space left on device")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError, match="No space"):
        fetch_source(entry, root=root, from_path=newer)

    assert _snapshot(final) == before
    assert _leftovers(root) == []


def test_the_default_limit_follows_the_catalog_size() -> None:
    assert default_max_extracted_bytes(_entry()) == DEFAULT_MAX_EXTRACTED_BYTES
    assert default_max_extracted_bytes(_entry(size=300 * 1024**2)) == 3000 * 1024**2
    assert default_max_extracted_bytes(_entry(size=10)) == 1024**3  # never below 1 GiB


def test_fetch_applies_the_catalog_derived_limit(tmp_path: Path) -> None:
    # Declares 3 GiB (a header patched, nothing that big is written); the catalog says the
    # download is 256 MiB, so at most 2.5 GiB is plausible.
    bomb = _write(tmp_path / "bomb.zip", _lying_zip("toy/x.bin", b"x" * 10, declared=3 * 1024**3))
    entry = _entry(size=256 * MiB)

    with pytest.raises(ArchiveTooLargeError, match=r"over the limit of 2\.5 GiB"):
        fetch_source(entry, root=tmp_path / "root", from_path=bomb, max_ratio=NO_RATIO)

    assert not (tmp_path / "root" / "raw").exists()


def _downloads(root: Path) -> list[Path]:
    return [p for p in (root / "downloads").rglob("*") if p.is_file()]


BAD_DOWNLOADS: dict[str, tuple[str, bytes, str]] = {
    "truncated": ("repo.zip", _truncated_zip(), r"repo\.zip is not a readable zip"),
    "not-an-archive": (
        "repo.tar.gz",
        b"<html>rate limited</html>" * 100,
        r"repo\.tar\.gz is not a readable tar archive",
    ),
    "unsafe-member": (
        "repo.zip",
        _zip({**{f"toy/{k}": v for k, v in REPO.items()}, "../escaped.txt": b"x"}),
        r"unsafe members",
    ),
    "encrypted-member": (
        "repo.zip",
        _encrypted_zip({f"toy/{k}": v for k, v in REPO.items()}),
        r"encrypted member",
    ),
    "lying-header": (
        "repo.zip",
        _lying_zip("toy/images/1.png", bytes(3 * MB), declared=100),
        r"holds more than the 100 B its headers declare",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_DOWNLOADS))
def test_a_bad_unverified_download_leaves_nothing_behind(
    http_server: LocalServer, tmp_path: Path, kind: str
) -> None:
    name, data, message = BAD_DOWNLOADS[kind]
    entry = _entry(url=http_server.add(f"/{name}", data), checksum=None)
    root = tmp_path / "root"

    with pytest.raises(FetchError, match=message):
        fetch_source(entry, root=root, retries=0)

    assert not (root / "raw").exists()
    assert _leftovers(root) == []
    # No checksum vouches for it and it is broken: not kept to be used again as it is.
    assert _downloads(root) == []


def test_an_unverified_download_over_a_limit_is_kept_for_a_second_try(
    http_server: LocalServer, tmp_path: Path
) -> None:
    archive = _targz({**REPO, "images/zeros.png": bytes(2 * MB)})
    entry = _entry(url=http_server.add("/repo.tar.gz", archive), checksum=None)
    root = tmp_path / "root"

    with pytest.raises(ArchiveTooLargeError, match=r"refused to extract repo\.tar\.gz"):
        fetch_source(entry, root=root, retries=0, max_extracted_bytes=MB)

    assert not (root / "raw").exists()
    assert _leftovers(root) == []
    # Its bytes are probably fine: only the limit refused it, so it is not fetched again.
    assert [p.name for p in _downloads(root)] == ["repo.tar.gz"]
    result = fetch_source(entry, root=root, retries=0, max_ratio=NO_RATIO)
    assert result.action == "downloaded" and result.unverified == ["repo.tar.gz"]
    assert (result.path / "images/zeros.png").stat().st_size == 2 * MB
    assert len(http_server.requests) == 1


def test_an_unverified_download_is_kept_when_the_disk_lacks_space(
    http_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _targz({**REPO, "images/big.png": bytes(range(256)) * 40})
    entry = _entry(url=http_server.add("/repo.tar.gz", archive), checksum=None)
    root = tmp_path / "root"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=5000))

    with pytest.raises(ArchiveTooLargeError, match=r"is free where it would be extracted"):
        fetch_source(entry, root=root, retries=0)

    assert [p.name for p in _downloads(root)] == ["repo.tar.gz"]
    assert not (root / "raw").exists() and _leftovers(root) == []


def test_a_verified_download_is_kept_for_a_second_try_with_a_higher_limit(
    http_server: LocalServer, tmp_path: Path
) -> None:
    archive = _targz({**REPO, "images/zeros.png": bytes(2 * MB)})
    entry = _entry(url=http_server.add("/repo.tar.gz", archive), checksum=_sha(archive))
    root = tmp_path / "root"
    with pytest.raises(ArchiveTooLargeError):
        fetch_source(entry, root=root, retries=0, max_extracted_bytes=MB)

    result = fetch_source(entry, root=root, retries=0, max_ratio=NO_RATIO)

    assert result.action == "downloaded"
    assert (result.path / "images/zeros.png").stat().st_size == 2 * MB
    assert len(http_server.requests) == 1
    assert _leftovers(root) == []


# --- the command line ----------------------------------------------------------------------


def test_fetch_command_refuses_a_bomb_in_one_line(tmp_path: Path) -> None:
    bomb = _write(tmp_path / "bomb.zip", _zip({"zeros.bin": bytes(2 * MiB)}))
    root = tmp_path / "root"
    args = ["fetch", "figure1", "--from", str(bomb), "--root", str(root)]

    result = CliRunner().invoke(app, [*args, "--max-extracted-bytes", "1MB"])

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert (
        "error: refused to extract bomb.zip: its members declare at least 2.0 MiB, over the "
        "limit of 976.6 KiB; an archive bomb?" in " ".join(result.output.split())
    )
    assert not (root / "raw").exists()

    result = CliRunner().invoke(app, [*args, "--max-extracted-bytes", "5MB"])
    assert result.exit_code == 1
    assert "over the limit of 200:1" in " ".join(result.output.split())

    result = CliRunner().invoke(app, [*args, "--max-extracted-bytes", "5MB", "--max-ratio", "5000"])
    assert "figure1 folder; missing" in " ".join(result.output.split())  # got past the limits
    assert not (root / "raw").exists() and _leftovers(root) == []


def test_fetch_command_refuses_an_encrypted_zip_in_one_line(tmp_path: Path) -> None:
    secret = _write(tmp_path / "secret.zip", _encrypted_zip({"metadata.csv": b"x"}))
    root = tmp_path / "root"

    result = CliRunner().invoke(
        app, ["fetch", "figure1", "--from", str(secret), "--root", str(root)]
    )

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # not a crash
    assert (
        "error: refused to extract secret.zip: encrypted member metadata.csv: not supported"
        in " ".join(result.output.split())
    )
    assert not (root / "raw").exists() and _leftovers(root) == []


def test_fetch_command_rejects_a_size_it_cannot_read(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["fetch", "figure1", "--from", str(tmp_path), "--max-extracted-bytes", "lots"]
    )
    assert result.exit_code == 2
    assert "not a size" in result.output
