"""Safe extraction of downloaded archives.

Every member is checked before a single byte is written: absolute paths, ``..`` components, links
(symbolic or hard) that point outside the target, and device or FIFO files make the whole archive
refused with :class:`~covid19_images.errors.UnsafeArchiveError`. Tar archives go through the
standard library's ``filter="data"`` (PEP 706); zip archives, which have no such filter, get the
equivalent checks here.

Archive bombs are refused too, before anything is written, with
:class:`ArchiveTooLargeError`: an archive whose members declare more than
``max_extracted_bytes`` in all, more than the free space of the target's disk, that expand
more than ``max_ratio`` times (one zip member against its compressed bytes, or the whole archive
against its file size), or that hold more than ``max_members`` members (empty files and folders
cost no bytes but an inode each). Declared sizes can lie, so bytes are also counted while
extracting: a zip member that expands past the size its headers declare stops the extraction at
once (:class:`MemberSizeMismatchError`), and the running total may never pass the limit.
Encrypted zip members are refused as unsupported. Whatever was extracted before a refusal is
removed.
"""

from __future__ import annotations

import copy
import lzma
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from covid19_images.errors import FetchError, UnsafeArchiveError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

DEFAULT_MAX_EXTRACTED_BYTES = 2 * 1024**4
"""2 TiB: the most one archive may expand to when nothing better is known.

The largest public COVID-19 imaging collections ship in archives of tens to a few hundred GB, so
no genuine archive of one comes near this, while it still stops a bomb long before a data disk
fills; the free space of the target's disk is checked as well.
"""

DEFAULT_MAX_RATIO = 200.0
"""How many times its compressed size a member (or a whole archive) may expand to.

Radiographs and CT slices are stored as PNG, JPEG, DICOM or NIfTI, which deflate, bzip2 or xz
shrink little (from about 1:1 for PNG and JPEG to about 10:1 for DICOM or NIfTI with much air),
while a bomb made of zeros reaches 1000:1 with deflate and far more with bzip2 or xz. 200:1 leaves
a wide margin for genuine data; an uncompressed segmentation mask of mostly zeros can go beyond
it, and then ``max_ratio`` (``--max-ratio``) lets it through.
"""

DEFAULT_MAX_MEMBERS = 1_000_000
"""The most members (files, folders, links) one archive may hold.

The largest public COVID-19 imaging collections hold a few hundred thousand files (one PNG or
DICOM per slice or radiograph), so a genuine archive stays well below this, while an archive of
millions of empty members, which no byte limit catches, is refused before it exhausts the disk's
inodes or, for a tar, the memory that holds its list of members.
"""

RATIO_FLOOR = 1 << 20
"""Members (and archives) that expand to less than this (1 MiB) are not held to the ratio: a small
file of repeated bytes compresses extremely well and does no harm."""

_CHUNK = 1 << 20


class ArchiveTooLargeError(UnsafeArchiveError):
    """An archive declares or expands to more bytes than allowed, expands implausibly much, or
    holds too many members: over a limit (or the free space), not necessarily broken."""


class MemberSizeMismatchError(ArchiveTooLargeError):
    """A zip member holds more bytes than its headers declare: the archive is damaged or
    forged."""


@dataclass(frozen=True)
class ExtractionLimits:
    """How far one archive may expand.

    Example:
        >>> ExtractionLimits(max_extracted_bytes=10 * 1024**3, max_ratio=100).max_ratio
        100
        >>> ExtractionLimits().max_members
        1000000
    """

    max_extracted_bytes: int = DEFAULT_MAX_EXTRACTED_BYTES
    """The most bytes the members of one archive may expand to, in all."""
    max_ratio: float = DEFAULT_MAX_RATIO
    """The most times its compressed size a member (or the whole archive) may expand to."""
    max_members: int = DEFAULT_MAX_MEMBERS
    """The most members (files, folders, links) one archive may hold: 1,000,000 by default,
    where the largest real collections hold a few hundred thousand files."""


def parse_size(text: str) -> int:
    """A number of bytes from ``"5000000"``, ``"500MB"`` (powers of 1000) or ``"2TiB"``/``"2T"``
    (powers of 1024).

    Raises:
        ValueError: ``text`` is not a size.

    Example:
        >>> parse_size("1.5GiB"), parse_size("2TB"), parse_size("512k"), parse_size("100")
        (1610612736, 2000000000000, 524288, 100)
    """
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:([kmgtp])(i)?(b)?|b)?", text.strip(), re.I)
    if match is None:
        raise ValueError(f"{text!r} is not a size (examples: 500000000, 500MB, 20GiB, 2T)")
    number, prefix, binary, byte = match.groups()
    power = "kmgtp".index(prefix.lower()) + 1 if prefix else 0
    base = 1000 if byte and not binary else 1024
    return int(float(number) * base**power)


def human_size(n: float) -> str:
    """``n`` bytes for a person (powers of 1024).

    Example:
        >>> human_size(1536), human_size(2 * 1024**4), human_size(12)
        ('1.5 KiB', '2.0 TiB', '12 B')
    """
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"


def is_archive(path: Path) -> bool:
    """Whether ``path`` has the suffix of an archive this module extracts.

    Example:
        >>> is_archive(Path("COVID-CT-master.tar.gz")), is_archive(Path("metadata.csv"))
        (True, False)
    """
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(
    archive: Path,
    destination: Path,
    *,
    strip_top_level: bool = False,
    limits: ExtractionLimits | None = None,
) -> None:
    """Extract ``archive`` into ``destination`` after checking every member.

    Args:
        archive: A ``.zip`` or ``.tar*`` file.
        destination: Folder to extract into (created if needed).
        strip_top_level: Drop the single folder that holds everything (GitHub archives wrap the
            repository in ``<repo>-<commit>/``).
        limits: How far the archive may expand (default :class:`ExtractionLimits`: 2 TiB,
            200:1 and 1,000,000 members).

    Raises:
        UnsafeArchiveError: A member would escape ``destination`` or is a device, FIFO or
            outside-pointing link. Nothing is written in that case.
        ArchiveTooLargeError: The members declare, or turn out to hold, more than the limits
            allow, or there are more of them than ``max_members``. Nothing is left behind in
            that case. :class:`MemberSizeMismatchError` (a subclass): a zip member holds more
            than its headers declare.
        FetchError: The archive is corrupt or truncated, or a zip member is encrypted.

    Example:
        >>> extract_archive(Path("repo.tar.gz"), Path("raw/figure1"),
        ...                 strip_top_level=True)  # doctest: +SKIP
    """
    limits = limits or ExtractionLimits()
    destination.mkdir(parents=True, exist_ok=True)
    staging = destination / f".extracting-{archive.name}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        name = archive.name.lower()
        if name.endswith(".zip"):
            _extract_zip(archive, staging, limits)
        else:
            _extract_tar(archive, staging, limits)
        root = _single_top_level(staging) if strip_top_level else staging
        for child in list(root.iterdir()):
            target = destination / child.name
            if target.exists() or target.is_symlink():
                raise FetchError(f"{archive.name}: {child.name} already exists in {destination}")
            child.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _Budget:
    """The checks on sizes: what the members declare, and what they turn out to hold."""

    def __init__(self, archive: Path, staging: Path, limits: ExtractionLimits) -> None:
        self.archive = archive
        self.limits = limits
        self.archive_size = archive.stat().st_size
        self.free = shutil.disk_usage(_existing_parent(staging)).free
        self.declared = 0
        self.written = 0
        self.members = 0

    def _refuse(self, why: str, hint: str) -> ArchiveTooLargeError:
        return ArchiveTooLargeError(
            f"refused to extract {self.archive.name}: {why}; an archive bomb? "
            f"(if the archive is genuine, {hint})"
        )

    def count(self, members: int = 1) -> None:
        """Add members (of any kind, empty ones too); refuse once there are too many."""
        self.members += members
        limit = self.limits.max_members
        if self.members > limit:
            raise self._refuse(
                f"it holds more members than the limit of {limit:,}",
                "pass a higher max_members to fetch_source",
            )

    def declare(self, name: str, size: int, compressed: int | None = None) -> None:
        """Add a member's declared size; refuse as soon as the total or a ratio is implausible."""
        self.declared += size
        limit = self.limits.max_extracted_bytes
        if self.declared > limit:
            raise self._refuse(
                f"its members declare at least {human_size(self.declared)}, over the limit of "
                f"{human_size(limit)}",
                "raise the limit with --max-extracted-bytes",
            )
        if self.declared > self.free:
            raise ArchiveTooLargeError(
                f"refused to extract {self.archive.name}: its members declare "
                f"{human_size(self.declared)} but only {human_size(self.free)} is free where "
                "it would be extracted"
            )
        if compressed is not None:
            self._check_ratio(f"member {name}", size, compressed)
        self._check_ratio("the archive", self.declared, self.archive_size)

    def _check_ratio(self, what: str, size: int, compressed: int) -> None:
        ratio = self.limits.max_ratio
        if size >= RATIO_FLOOR and size > ratio * compressed:
            shown = f"{size / compressed:,.0f}:1" if compressed else "from nothing"
            raise self._refuse(
                f"{what} expands {shown} ({human_size(compressed)} to {human_size(size)}), "
                f"over the limit of {ratio:g}:1",
                "raise the limit with --max-ratio",
            )

    def wrote(self, count: int) -> None:
        """Count bytes as they are written; stop once the total passes the limit."""
        self.written += count
        limit = self.limits.max_extracted_bytes
        if self.written > limit:
            raise self._refuse(
                f"it expanded past the limit of {human_size(limit)} while being extracted, "
                f"though its members declare {human_size(self.declared)}",
                "raise the limit with --max-extracted-bytes",
            )


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _extract_tar(archive: Path, staging: Path, limits: ExtractionLimits) -> None:
    try:
        budget = _Budget(archive, staging, limits)
        with tarfile.open(archive) as tar:
            members = []
            refused = []
            # Headers are read one by one, so a bomb is refused before its bulk is decompressed.
            for member in tar:
                budget.count()  # before the list of members grows past the limit
                members.append(member)
                # The data filter would quietly turn "/etc/x" into "etc/x": refuse it instead.
                if member.name.startswith(("/", "\\")) or PureWindowsPath(member.name).drive:
                    refused.append(f"{member.name}: absolute path")
                    continue
                try:
                    tarfile.data_filter(member, str(staging))
                except tarfile.FilterError as exc:
                    refused.append(f"{member.name}: {exc}")
                    continue
                if member.isreg():  # a sparse member declares its full size here too
                    budget.declare(member.name, member.size)
            if refused:
                raise UnsafeArchiveError(_refusal(archive, refused))
            staging.mkdir(parents=True)
            tar.extractall(staging, members=_counted(members, budget), filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise FetchError(f"{archive.name} is not a readable tar archive: {exc}") from exc


def _counted(members: Iterable[tarfile.TarInfo], budget: _Budget) -> Iterator[tarfile.TarInfo]:
    """The members, each counted before it is written (tar writes exactly ``size`` bytes)."""
    for member in members:
        if member.isreg():
            budget.wrote(member.size)
        yield member


def _extract_zip(archive: Path, staging: Path, limits: ExtractionLimits) -> None:
    try:
        budget = _Budget(archive, staging, limits)
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            budget.count(len(infos))
            encrypted = [i.filename for i in infos if i.flag_bits & 0x1]
            if encrypted:
                more = f" (and {len(encrypted) - 1:,} more)" if len(encrypted) > 1 else ""
                raise FetchError(
                    f"refused to extract {archive.name}: encrypted member {encrypted[0]}{more}: "
                    "not supported (extract it with the password, then use the folder)"
                )
            refused = [f"{i.filename}: {why}" for i in infos if (why := _zip_member_problem(i))]
            if refused:
                raise UnsafeArchiveError(_refusal(archive, refused))
            for info in infos:
                if not info.is_dir():
                    budget.declare(info.filename, info.file_size, info.compress_size)
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
                _copy_zip_member(zf, info, target, budget)
    except (
        zipfile.BadZipFile,
        EOFError,
        OSError,
        zlib.error,
        NotImplementedError,
        RuntimeError,  # zipfile's "encrypted, password required", should one get past the check
    ) as exc:
        raise FetchError(f"{archive.name} is not a readable zip archive: {exc}") from exc


def _copy_zip_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: _Budget
) -> None:
    """Copy one member, counting its bytes against the size its headers declare.

    zipfile stops reading a member at its declared size and then fails its CRC check, so a member
    whose headers understate its size would only show up as corrupt. It is asked here to read on
    past the declared size, a chunk at a time, so that such a member is refused by name as soon
    as it passes the size it declares; the running total is counted against the limit as well.
    """
    unbounded = copy.copy(info)
    unbounded.file_size = info.file_size + 2 * _CHUNK  # its CRC is checked at its true end
    got = 0
    with zf.open(unbounded) as src, target.open("wb") as dst:
        while chunk := src.read(_CHUNK):
            got += len(chunk)
            if got > info.file_size:
                raise MemberSizeMismatchError(
                    f"refused to extract {budget.archive.name}: member {info.filename} holds "
                    f"more than the {human_size(info.file_size)} its headers declare; a "
                    "damaged or forged archive"
                )
            budget.wrote(len(chunk))
            dst.write(chunk)


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
