"""fetch_source end to end: downloads from a local server, user downloads, mirrors."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from covid19_images.catalog import SourceEntry, get_source
from covid19_images.errors import (
    FetchError,
    LayoutError,
    SourceNotAvailableError,
    UnsafeArchiveError,
)
from covid19_images.fetch import fetch_source, locate
from covid19_images.fetch.store import RECEIPT, raw_dir
from tests.conftest import LocalServer
from tests.conftest import sha256_checksum as _sha
from tests.conftest import targz as _targz


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


REPO = {"metadata.csv": b"patientid,finding\n1,COVID-19\n", "images/1.png": b"\x89PNG fake"}


def _entry(url: str, checksum: str | None, **download: Any) -> SourceEntry:
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
                {
                    "kind": "url",
                    "url": url,
                    "checksum": checksum,
                    "strip_top_level": True,
                    **download,
                }
            ],
            "layout": {"required": ["metadata.csv", "images/", "images/*.png"]},
        }
    )


def test_auto_source_is_downloaded_verified_and_marked_complete(
    http_server: LocalServer, tmp_path: Path
) -> None:
    archive = _targz(REPO)
    entry = _entry(http_server.add("/repo.tar.gz", archive), _sha(archive))

    result = fetch_source(entry, root=tmp_path, retries=0)

    assert result.action == "downloaded"
    assert result.path == raw_dir(entry, tmp_path) == tmp_path / "raw/toy-source/0123abcd"
    assert (result.path / "metadata.csv").read_bytes() == REPO["metadata.csv"]
    assert (result.path / "images/1.png").read_bytes() == REPO["images/1.png"]
    receipt = json.loads((result.path / RECEIPT).read_text())
    assert receipt["files"][0]["sha256"] == hashlib.sha256(archive).hexdigest()
    assert receipt["files"][0]["verified"] is True
    assert result.unverified == []
    # Nothing half-done is left beside it, and the archive is not kept twice.
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["0123abcd"]
    assert not any(p.is_file() for p in (tmp_path / "downloads").rglob("*"))

    again = fetch_source(entry, root=tmp_path, retries=0)
    assert again.action == "already-fetched"
    assert len(http_server.requests) == 1


def test_checksum_mismatch_marks_nothing_complete(http_server: LocalServer, tmp_path: Path) -> None:
    archive = _targz(REPO)
    entry = _entry(http_server.add("/repo.tar.gz", archive), _sha(b"not this"))

    with pytest.raises(FetchError, match="does not match"):
        fetch_source(entry, root=tmp_path, retries=0)

    assert not raw_dir(entry, tmp_path).exists()
    assert locate(entry, root=tmp_path) is None


def test_interrupted_fetch_is_never_used_and_resumes(
    http_server: LocalServer, tmp_path: Path
) -> None:
    members = {**REPO, "images/big.png": bytes(range(256)) * 4000}
    archive = _targz(members)
    url = http_server.add("/repo.tar.gz", archive, cut_after=len(archive) // 3, cuts_left=1)
    entry = _entry(url, _sha(archive))

    with pytest.raises(FetchError, match="offline"):
        fetch_source(entry, root=tmp_path, retries=0)
    assert locate(entry, root=tmp_path) is None
    assert not raw_dir(entry, tmp_path).exists()

    result = fetch_source(entry, root=tmp_path, retries=0)

    assert result.action == "downloaded"
    assert (result.path / "images/big.png").read_bytes() == members["images/big.png"]
    assert http_server.requests[1][1] == f"bytes={len(archive) // 3}-"


def test_unknown_checksum_is_recorded_and_reported(
    http_server: LocalServer, tmp_path: Path
) -> None:
    archive = _targz(REPO)
    entry = _entry(http_server.add("/repo.tar.gz", archive), None)

    result = fetch_source(entry, root=tmp_path, retries=0)

    assert result.unverified == ["repo.tar.gz"]
    receipt = json.loads((result.path / RECEIPT).read_text())
    assert receipt["files"][0] == {
        "url": f"{http_server.base_url}/repo.tar.gz",
        "filename": "repo.tar.gz",
        "sha256": hashlib.sha256(archive).hexdigest(),
        "size": len(archive),
        "catalog_checksum": None,
        "verified": False,
    }


def test_hostile_download_is_refused_and_nothing_escapes(
    http_server: LocalServer, tmp_path: Path
) -> None:
    archive = _targz({**REPO, "../../../escaped.txt": b"x"})
    entry = _entry(http_server.add("/repo.tar.gz", archive), _sha(archive))
    root = tmp_path / "root"

    with pytest.raises(UnsafeArchiveError):
        fetch_source(entry, root=root, retries=0)

    assert not list(tmp_path.rglob("escaped.txt"))
    assert locate(entry, root=root) is None


def test_nested_zips_are_unpacked_in_place(http_server: LocalServer, tmp_path: Path) -> None:
    inner = _zip({"CT_COVID/a%1.png": b"a", "CT_COVID/b.png": b"b"})
    archive = _targz({"metadata.csv": b"x\n", "Images-processed/CT_COVID.zip": inner})
    entry = SourceEntry.model_validate(
        {
            **_entry("http://unused", None).model_dump(),
            "download": [
                {
                    "kind": "url",
                    "url": http_server.add("/ucsd.tar.gz", archive),
                    "checksum": _sha(archive),
                    "strip_top_level": True,
                    "unpack": ["Images-processed/CT_COVID.zip"],
                }
            ],
            "layout": {"required": ["metadata.csv", "Images-processed/CT_COVID/*.png"]},
        }
    )

    result = fetch_source(entry, root=tmp_path, retries=0)

    folder = result.path / "Images-processed"
    assert sorted(p.name for p in folder.rglob("*")) == ["CT_COVID", "a%1.png", "b.png"]


def test_download_lacking_the_expected_layout_is_not_kept(
    http_server: LocalServer, tmp_path: Path
) -> None:
    archive = _targz({"README.md": b"moved elsewhere"})
    entry = _entry(http_server.add("/repo.tar.gz", archive), _sha(archive))

    with pytest.raises(FetchError, match=r"metadata\.csv"):
        fetch_source(entry, root=tmp_path, retries=0)
    assert locate(entry, root=tmp_path) is None


def _write_tree(folder: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_from_folder_with_missing_files_says_exactly_what(tmp_path: Path) -> None:
    entry = _entry("http://unused", None)
    user = _write_tree(tmp_path / "download", {"images/1.png": b"x"})

    with pytest.raises(LayoutError) as info:
        fetch_source(entry, root=tmp_path / "root", from_path=user)

    assert info.value.missing == ["metadata.csv (file)"]
    assert "metadata.csv" in str(info.value)
    assert locate(entry, root=tmp_path / "root") is None
    assert not (tmp_path / "root" / "raw").exists()
    assert not (tmp_path / "root" / "registered").exists()


def test_from_folder_is_registered_in_place_even_one_level_down(tmp_path: Path) -> None:
    entry = _entry("http://unused", None)
    user = _write_tree(tmp_path / "Downloads" / "toy-master", REPO)
    root = tmp_path / "root"

    result = fetch_source(entry, root=root, from_path=tmp_path / "Downloads")

    assert result.action == "registered"
    assert result.path == user.resolve()
    located = locate(entry, root=root)
    assert located is not None and located.origin == "registered" and located.path == user
    assert not (root / "raw").exists()  # used in place, nothing copied


def test_from_folder_with_copy_lands_in_the_raw_layer(tmp_path: Path) -> None:
    entry = _entry("http://unused", None)
    user = _write_tree(tmp_path / "download", REPO)

    result = fetch_source(entry, root=tmp_path / "root", from_path=user, copy=True)

    assert result.action == "imported"
    assert (result.path / "metadata.csv").read_bytes() == REPO["metadata.csv"]
    assert (user / "metadata.csv").exists()


def test_from_archive_is_extracted_into_the_raw_layer(tmp_path: Path) -> None:
    entry = _entry("http://unused", None)
    archive = tmp_path / "archive.zip"
    archive.write_bytes(_zip({f"toy/{k}": v for k, v in REPO.items()}))

    result = fetch_source(entry, root=tmp_path / "root", from_path=archive)

    assert result.action == "imported"
    assert result.path == raw_dir(entry, tmp_path / "root")
    assert (result.path / "images/1.png").read_bytes() == REPO["images/1.png"]
    receipt = json.loads((result.path / RECEIPT).read_text())
    assert receipt["files"][0]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_manual_source_with_nothing_local_says_how_to_get_it(tmp_path: Path) -> None:
    entry = get_source("covid19-image-dataset")
    assert entry.access != "auto"

    with pytest.raises(SourceNotAvailableError) as info:
        fetch_source(entry, root=tmp_path)

    message = str(info.value)
    assert "--from" in message and "--mirror" in message
    assert entry.manual is not None and entry.manual.steps[0] in message


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


@pytest.mark.parametrize(
    "source", ["ieee8023", "figure1", "covid19-image-dataset", "covid-ct-md", "ucsd-covid-ct"]
)
def test_mirror_is_used_in_place_and_never_written(
    shared_sources: Path, tmp_path: Path, source: str
) -> None:
    entry = get_source(source)
    before = _snapshot(shared_sources)

    result = fetch_source(source, root=tmp_path, mirror=shared_sources)

    assert result.action == "mirror"
    assert result.path.is_relative_to(shared_sources)
    assert _snapshot(shared_sources) == before
    assert not (tmp_path / "raw").exists()
    located = locate(entry, root=tmp_path, mirror=shared_sources)
    assert located is not None and located.path == result.path


def test_subset_entry_is_found_where_its_parent_is(shared_sources: Path, tmp_path: Path) -> None:
    located = locate("ieee8023-ct", root=tmp_path, mirror=shared_sources)
    parent = locate("ieee8023", root=tmp_path, mirror=shared_sources)
    assert located is not None and parent is not None
    assert located.path == parent.path and located.source == "ieee8023-ct"


def test_a_second_concurrent_fetch_is_told_not_left_to_collide(
    http_server: LocalServer, tmp_path: Path
) -> None:
    from filelock import FileLock

    archive = _targz(REPO)
    entry = _entry(http_server.add("/repo.tar.gz", archive), _sha(archive))
    (tmp_path / "locks").mkdir()

    with (
        FileLock(tmp_path / "locks" / "toy-source.lock"),
        pytest.raises(FetchError, match="another fetch"),
    ):
        fetch_source(entry, root=tmp_path, retries=0)

    assert http_server.requests == []
    assert fetch_source(entry, root=tmp_path, retries=0).action == "downloaded"


def test_fetching_a_subset_entry_fetches_its_parent(shared_sources: Path, tmp_path: Path) -> None:
    result = fetch_source("ieee8023-ct", root=tmp_path, mirror=shared_sources)
    assert result.source == "ieee8023"
    assert result.path == shared_sources / "ieee8023-covid-chestxray"
