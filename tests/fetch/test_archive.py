"""Safe extraction: hostile archives are refused whole, nothing lands outside the target."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from covid19_images.errors import FetchError, UnsafeArchiveError
from covid19_images.fetch.archive import extract_archive


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


def _everything_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_github_style_archive_is_extracted_without_its_top_folder(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "repo.tar.gz",
        [
            (_file("repo-abc123/metadata.csv"), b"a,b\n1,2\n"),
            (_file("repo-abc123/images/x.png"), b"png"),
        ],
    )
    target = tmp_path / "out"
    extract_archive(archive, target, strip_top_level=True)
    assert (target / "metadata.csv").read_bytes() == b"a,b\n1,2\n"
    assert (target / "images" / "x.png").read_bytes() == b"png"
    assert _everything_under(target) == {"metadata.csv", "images", "images/x.png"}


def test_links_inside_the_archive_are_kept(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "ok.tar.gz",
        [(_file("data/a.txt"), b"a"), (_link("data/b.txt", "a.txt"), None)],
    )
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "data" / "b.txt").read_bytes() == b"a"


@pytest.mark.parametrize(
    ("member", "data"),
    [
        (_file("ABSOLUTE/evil-absolute.txt"), b"x"),
        (_file("../evil-parent.txt"), b"x"),
        (_file("data/../../evil-nested.txt"), b"x"),
        (_link("data/escape", "../../outside"), None),
        (_link("data/abs-link", "/etc/passwd"), None),
        (_link("data/hard", "../../outside.txt", tarfile.LNKTYPE), None),
        (_device("data/null"), None),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "symlink-out", "symlink-abs", "hardlink", "dev"],
)
def test_hostile_tar_is_refused_and_writes_nothing(
    tmp_path: Path, member: tarfile.TarInfo, data: bytes | None
) -> None:
    absolute = tmp_path / "elsewhere" / "evil-absolute.txt"
    member.name = member.name.replace("ABSOLUTE", str(absolute.parent))
    archive = _tar(tmp_path / "evil.tar.gz", [(_file("data/good.txt"), b"ok"), (member, data)])
    outer = tmp_path / "outer"
    target = outer / "target"
    target.mkdir(parents=True)
    before = _everything_under(tmp_path)

    with pytest.raises(UnsafeArchiveError, match="refused to extract"):
        extract_archive(archive, target)

    assert _everything_under(tmp_path) == before  # not even the good member
    assert not absolute.exists()


def _zip(path: Path, names: list[str], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, b"x")
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "../../outside")
    return path


@pytest.mark.parametrize(
    ("names", "symlink"),
    [
        (["ok.txt", "../evil.txt"], None),
        (["ok.txt", "/abs/evil.txt"], None),
        (["ok.txt", "a/../../evil.txt"], None),
        (["ok.txt", "..\\evil.txt"], None),
        (["ok.txt", "C:/evil.txt"], None),
        (["ok.txt"], "link"),
    ],
    ids=["dotdot", "absolute", "nested", "backslash", "drive", "symlink"],
)
def test_hostile_zip_is_refused_and_writes_nothing(
    tmp_path: Path, names: list[str], symlink: str | None
) -> None:
    archive = _zip(tmp_path / "evil.zip", names, symlink)
    target = tmp_path / "outer" / "target"
    target.mkdir(parents=True)
    before = _everything_under(tmp_path)

    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, target)

    assert _everything_under(tmp_path) == before


def test_zip_is_extracted(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "ok.zip", ["CT_COVID/a%1.png", "CT_COVID/b.png"])
    extract_archive(archive, tmp_path / "out")
    assert _everything_under(tmp_path / "out") == {"CT_COVID", "CT_COVID/a%1.png", "CT_COVID/b.png"}


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_truncated_archive_is_a_clear_error(tmp_path: Path, suffix: str) -> None:
    good = tmp_path / f"good{suffix}"
    if suffix == ".zip":
        _zip(good, [f"f{i}.txt" for i in range(50)])
    else:
        _tar(good, [(_file(f"f{i}.txt"), bytes(2000)) for i in range(50)])
    truncated = tmp_path / f"cut{suffix}"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    target = tmp_path / "out"

    with pytest.raises(FetchError, match="not a readable"):
        extract_archive(truncated, target)
    assert _everything_under(target) == set()
