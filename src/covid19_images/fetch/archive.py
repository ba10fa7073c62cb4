"""Safe extraction of downloaded archives.

Every member is checked before a single byte is written: absolute paths, ``..`` components, links
(symbolic or hard) that point outside the target, and device or FIFO files make the whole archive
refused with :class:`~covid19_images.errors.UnsafeArchiveError`. Tar archives go through the
standard library's ``filter="data"`` (PEP 706); zip archives, which have no such filter, get the
equivalent checks here.
"""

from __future__ import annotations

import lzma
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from covid19_images.errors import FetchError, UnsafeArchiveError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def is_archive(path: Path) -> bool:
    """Whether ``path`` has the suffix of an archive this module extracts.

    Example:
        >>> is_archive(Path("COVID-CT-master.tar.gz")), is_archive(Path("metadata.csv"))
        (True, False)
    """
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(archive: Path, destination: Path, *, strip_top_level: bool = False) -> None:
    """Extract ``archive`` into ``destination`` after checking every member.

    Args:
        archive: A ``.zip`` or ``.tar*`` file.
        destination: Folder to extract into (created if needed).
        strip_top_level: Drop the single folder that holds everything (GitHub archives wrap the
            repository in ``<repo>-<commit>/``).

    Raises:
        UnsafeArchiveError: A member would escape ``destination`` or is a device, FIFO or
            outside-pointing link. Nothing is written in that case.
        FetchError: The archive is corrupt or truncated.

    Example:
        >>> extract_archive(Path("repo.tar.gz"), Path("raw/figure1"),
        ...                 strip_top_level=True)  # doctest: +SKIP
    """
    destination.mkdir(parents=True, exist_ok=True)
    staging = destination / f".extracting-{archive.name}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        name = archive.name.lower()
        if name.endswith(".zip"):
            _extract_zip(archive, staging)
        else:
            _extract_tar(archive, staging)
        root = _single_top_level(staging) if strip_top_level else staging
        for child in list(root.iterdir()):
            target = destination / child.name
            if target.exists() or target.is_symlink():
                raise FetchError(f"{archive.name}: {child.name} already exists in {destination}")
            child.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_tar(archive: Path, staging: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            refused = []
            for member in members:
                # The data filter would quietly turn "/etc/x" into "etc/x": refuse it instead.
                if member.name.startswith(("/", "\\")) or PureWindowsPath(member.name).drive:
                    refused.append(f"{member.name}: absolute path")
                    continue
                try:
                    tarfile.data_filter(member, str(staging))
                except tarfile.FilterError as exc:
                    refused.append(f"{member.name}: {exc}")
            if refused:
                raise UnsafeArchiveError(_refusal(archive, refused))
            staging.mkdir(parents=True)
            tar.extractall(staging, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        if isinstance(exc, UnsafeArchiveError):
            raise
        raise FetchError(f"{archive.name} is not a readable tar archive: {exc}") from exc


def _extract_zip(archive: Path, staging: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            refused = [f"{i.filename}: {why}" for i in infos if (why := _zip_member_problem(i))]
            if refused:
                raise UnsafeArchiveError(_refusal(archive, refused))
            staging.mkdir(parents=True)
            root = staging.resolve()
            for info in infos:
                target = (staging / info.filename).resolve()
                if not target.is_relative_to(root):  # belt and braces after the name checks
                    raise UnsafeArchiveError(_refusal(archive, [info.filename]))
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        if isinstance(exc, UnsafeArchiveError):
            raise
        raise FetchError(f"{archive.name} is not a readable zip archive: {exc}") from exc


def _zip_member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\x00" in name:
        return "NUL byte in name"
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith("\\"):
        return "absolute path"
    if ".." in posix.parts or ".." in windows.parts:
        return "path climbs out with '..'"
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode):  # a Unix file type is recorded
        if stat.S_ISLNK(mode):
            return "symbolic link"
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return "device, FIFO or socket"
    return None


def _single_top_level(folder: Path) -> Path:
    children = list(folder.iterdir())
    if len(children) == 1 and children[0].is_dir():
        return children[0]
    return folder


def _refusal(archive: Path, refused: list[str]) -> str:
    shown = "\n".join(f"  - {r}" for r in refused[:10])
    more = f"\n  … and {len(refused) - 10} more" if len(refused) > 10 else ""
    return f"refused to extract {archive.name}: unsafe members\n{shown}{more}"
