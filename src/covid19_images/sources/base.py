"""What every source adapter shares: the adapter contract, reading metadata, finding files.

An adapter is small and declarative: it says which metadata file and columns (or which folders)
hold a source's facts, and maps them onto :class:`~covid19_images.records.Record`. Reading text in
odd encodings, finding files case-insensitively, noticing files no row names, parsing ages and
mapping labels and views all happen here, once.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import io
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar

import pandas as pd

from covid19_images.catalog import SourceEntry, load_catalog
from covid19_images.problems import ProblemLog
from covid19_images.records import Record
from covid19_images.sources.crosswalk import Crosswalk

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".dcm", ".webp"}
)


class Adapter(abc.ABC):
    """Turns one source's raw folder into records and problems.

    Subclasses set ``source`` (the catalog id) and implement :meth:`records`. They never raise
    on bad input: a bad row or file becomes a problem, and the rest goes on.
    """

    source: ClassVar[str]

    def __init__(self, crosswalk: Crosswalk | None = None) -> None:
        self.crosswalk = crosswalk or Crosswalk.packaged()

    @property
    def entry(self) -> SourceEntry:
        """The catalog entry of this source."""
        return load_catalog().get(self.source)

    @abc.abstractmethod
    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        """Every record of the source found under ``root`` (its raw folder)."""

    def read(self, root: Path, log: ProblemLog) -> list[Record]:
        """:meth:`records`, plus one problem row per file or folder that could not be used as
        found: every folder under ``root`` that cannot be listed (``unreadable-folder``), every
        symbolic link whose target is missing or loops (``broken-link``), and every file that a
        :class:`FileIndex` of this adapter left out because its path differs from another
        file's only in letter case (``name-clash``).

        Adapters need not report these themselves: the indexes they make while
        :meth:`records` runs are collected here.
        """
        scans: list[FileIndex] = []
        token = _SCANS.set(scans)
        try:
            records = self.records(root, log)
        finally:
            _SCANS.reset(token)
        report_skipped(self.source, root, scans, log)
        return records

    # Shared steps adapters call ---------------------------------------------------------------

    def label(self, record: Record, log: ProblemLog, file: str) -> None:
        """Fill ``record.label`` from ``record.finding_raw`` through the crosswalk."""
        label, mapped = self.crosswalk.label(self.source, record.finding_raw)
        record.label = label
        if not mapped and record.finding_raw and record.finding_raw.strip():
            log.add(
                self.source,
                file,
                record.source_row,
                "unmapped-finding",
                "kept-as-unknown",
                f"finding {record.finding_raw!r} is not in the crosswalk",
            )
            record.problems.append("unmapped-finding")

    def view(self, record: Record, raw: str | None, log: ProblemLog, file: str) -> None:
        """Fill ``record.view`` and ``record.view_raw`` through the crosswalk."""
        record.view_raw = raw if raw and raw.strip() else None
        view, known = self.crosswalk.view(raw)
        record.view = view
        if not known:
            log.add(
                self.source,
                file,
                record.source_row,
                "unknown-view",
                "kept-as-unknown",
                f"view {raw!r} is not in the crosswalk",
            )
            record.problems.append("unknown-view")


@dataclass(frozen=True)
class Skipped:
    """A file or folder that a scan could not use as it found it: one ``problems.csv`` row."""

    file: str
    """POSIX path relative to the scanned root (``.`` for the root itself)."""
    kind: str
    """``unreadable-folder``, ``broken-link`` or ``name-clash``."""
    detail: str


def list_files(root: Path, subdir: str = "") -> tuple[list[str], list[Skipped]]:
    """Every file under ``root/subdir`` (recursively) as a POSIX path relative to ``root``,
    sorted as :func:`sorted` sorts paths, and what could not be followed.

    A folder that cannot be listed is one ``unreadable-folder`` entry, a symbolic link whose
    target is missing or loops one ``broken-link`` entry; neither stops the walk. A link to a
    file is followed (listed under its own name); a link to a folder is not descended into, as
    :meth:`pathlib.Path.rglob` and :func:`os.walk` do not.

    Example:
        >>> list_files(Path("/nonexistent"))
        ([], [])
    """
    base = root / subdir if subdir else root
    files: list[str] = []
    skipped: list[Skipped] = []
    if not base.is_dir():
        return files, skipped
    pending = [base]
    while pending:
        folder = pending.pop()
        rel_folder = folder.relative_to(root).as_posix()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            detail = f"cannot list the folder ({reason}): none of its files is used"
            skipped.append(Skipped(rel_folder, "unreadable-folder", detail))
            continue
        for entry in entries:
            rel = entry.name if rel_folder == "." else f"{rel_folder}/{entry.name}"
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_symlink():
                    if stat.S_ISREG(Path(entry.path).stat().st_mode):
                        files.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    files.append(rel)
            except OSError as exc:
                skipped.append(Skipped(rel, "broken-link", _link_problem(entry.path, exc)))
    files.sort(key=lambda rel: rel.split("/"))
    skipped.sort(key=lambda s: (s.file.split("/"), s.kind))
    return files, skipped


def _link_problem(path: str, exc: OSError) -> str:
    """Why a symbolic link cannot be followed, without the absolute path it lies at."""
    try:
        target = str(Path(path).readlink())
    except OSError:
        target = "?"
    if exc.errno == errno.ELOOP:
        return f"the link to {target!r} loops (too many levels of symbolic links)"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"the link's target {target!r} does not exist"
    return f"the link to {target!r} cannot be followed ({exc.strerror or type(exc).__name__})"


_SCANS: ContextVar[list[FileIndex] | None] = ContextVar("covid19_images_scans", default=None)
"""The indexes made while :meth:`Adapter.read` runs, so it can report what they skipped."""


@dataclass
class FileIndex:
    """The image files under a folder, found once, looked up by name, and claimed by rows.

    Files that no row claims are reported as orphans, so that every file is accounted for.
    Lookups ignore letter case; when two paths differ only in case (``IMG.JPEG`` beside
    ``IMG.jpeg``, or folders ``A/`` and ``a/``), a lookup that names one exactly gets that one,
    any other lookup the first in sorted order, and :meth:`clashes` lists the one not used.

    Example:
        >>> index = FileIndex.scan(Path("/nonexistent"))
        >>> index.find("a.png") is None
        True
        >>> index = FileIndex(Path("."), {"a.png": "A.png"}, variants={"a.png": ["A.png", "a.png"]})
        >>> index.find("a.png"), index.find("A.PNG")
        ('a.png', 'A.png')
        >>> [c.file for c in index.clashes()]
        ['a.png']
    """

    root: Path
    files: dict[str, str] = field(default_factory=dict)
    """Relative POSIX path → the same; keyed by its case-folded form for lookups."""
    claimed: set[str] = field(default_factory=set)
    rows: dict[str, int] = field(default_factory=dict)
    """File claimed through :meth:`take` → the metadata row that named it first."""
    variants: dict[str, list[str]] = field(default_factory=dict)
    """Case-folded path → every path of that form, sorted, where there is more than one."""
    skipped: list[Skipped] = field(default_factory=list)
    """Folders that could not be listed and links that could not be followed."""
    _taken: set[str] = field(default_factory=set, repr=False)
    _named: dict[str, str] = field(default_factory=dict, repr=False)
    _stems: dict[str, str] | None = field(default=None, repr=False)

    @classmethod
    def scan(
        cls, root: Path, subdir: str = "", suffixes: Iterable[str] = IMAGE_SUFFIXES
    ) -> FileIndex:
        """Index every file with one of ``suffixes`` under ``root/subdir`` (recursively)."""
        wanted = {s.lower() for s in suffixes}
        found, skipped = list_files(root, subdir)
        index = cls(root=root, skipped=skipped)
        for rel in found:
            if PurePosixPath(rel).suffix.lower() not in wanted:
                continue
            key = rel.casefold()
            first = index.files.setdefault(key, rel)
            if first != rel:
                index.variants.setdefault(key, [first]).append(rel)
        scans = _SCANS.get()
        if scans is not None:
            scans.append(index)
        return index

    def find(self, rel: str) -> str | None:
        """The indexed relative path matching ``rel`` (case-insensitive), or None."""
        key = rel.casefold()
        variants = self.variants.get(key)
        if variants is not None and rel in variants:
            return rel
        return self.files.get(key)

    def find_stem(self, folder: str, stem: str) -> str | None:
        """The file ``folder/stem.<any image suffix>`` (upstream omits the extension)."""
        if self._stems is None:  # built once: upstream sheets name tens of thousands of files
            self._stems = {}
            for key, rel in sorted(self.files.items()):
                self._stems.setdefault(key.rsplit(".", 1)[0], rel)
        prefix = f"{folder}/{stem}".casefold() if folder else stem.casefold()
        return self._stems.get(prefix)

    def take(
        self, rel: str | None, row: int, source: str, log: ProblemLog, metadata: str
    ) -> str | None:
        """The file a metadata row names, claimed for that row; None (and a problem) when the
        file is missing or an earlier row already named it."""
        found = self.find(rel) if rel else None
        if found is None:
            log.add(
                source, rel or metadata, row, "missing-file", "skipped", f"{metadata} row {row}"
            )
            return None
        first = self.rows.setdefault(found, row)
        if first != row:
            log.add(
                source,
                found,
                row,
                "duplicate-row",
                "skipped",
                f"{metadata} rows {first} and {row} name the same file",
            )
            return None
        self.claim(found)
        if rel == found:
            self._named.setdefault(found, f"{metadata} row {row} names it exactly")
        return found

    def claim(self, rel: str) -> None:
        """Mark ``rel`` as named by a row."""
        self.claimed.add(rel.casefold())
        self._taken.add(rel)

    def orphans(self) -> Iterator[str]:
        """Indexed files that no row claimed, in sorted order."""
        for key, rel in sorted(self.files.items()):
            if key not in self.claimed:
                yield rel

    def report_orphans(self, source: str, log: ProblemLog, detail: str) -> None:
        """One ``orphan-file`` problem per unclaimed file."""
        for rel in self.orphans():
            log.add(source, rel, None, "orphan-file", "skipped", detail)

    def clashes(self) -> Iterator[Skipped]:
        """One ``name-clash`` entry per file left out because its path differs from a used
        file's only in letter case: the one a row named exactly (or claimed) is used, else the
        first in sorted order."""
        for key, paths in sorted(self.variants.items()):
            used = [rel for rel in paths if rel in self._taken]
            if not used:
                used = [self.files.get(key, paths[0])]
            chosen = used[0]
            why = self._named.get(chosen) or (
                "first in sorted order" if chosen == paths[0] else "the adapter chose it"
            )
            for rel in paths:
                if rel not in used:
                    yield Skipped(
                        rel,
                        "name-clash",
                        f"differs only in letter case from {chosen}, which is used ({why}); "
                        "this file is not",
                    )


DATA_SUFFIXES = IMAGE_SUFFIXES | {
    ".csv",
    ".tsv",
    ".txt",
    ".xlsx",
    ".xls",
    ".json",
    ".nii",
    ".gz",
    ".mha",
    ".nrrd",
    ".npy",
}
"""Suffixes of the files a source is made of (images, volumes, metadata): a broken link with
another suffix (a README, a script) takes nothing from a dataset and is not reported."""


def _matters(item: Skipped) -> bool:
    """Whether a folder or link the walk could not follow can hide a source's data: not inside
    a hidden folder (``.git``), and, for a link, with a data suffix."""
    if any(part.startswith(".") for part in item.file.split("/")):
        return False
    return item.kind != "broken-link" or Path(item.file).suffix.lower() in DATA_SUFFIXES


def report_skipped(source: str, root: Path, scans: Iterable[FileIndex], log: ProblemLog) -> None:
    """One ``skipped`` problem row per unlisted folder and broken data link (anywhere under
    ``root``, hidden folders aside) and per case clash of ``scans``; each (file, kind) once, in
    path order."""
    rows: dict[tuple[str, str], Skipped] = {}
    for item in list_files(root)[1]:
        if _matters(item):
            rows.setdefault((item.file, item.kind), item)
    for index in scans:
        for item in (*index.skipped, *index.clashes()):
            file = item.file
            if index.root != root:
                with contextlib.suppress(ValueError):
                    file = (index.root / file).relative_to(root).as_posix()
            rows.setdefault((file, item.kind), Skipped(file, item.kind, item.detail))
    for file, kind in sorted(rows, key=lambda fk: (fk[0].split("/"), fk[1])):
        log.add(source, file, None, kind, "skipped", rows[file, kind].detail)


def read_text(path: Path, source: str, log: ProblemLog, rel: str) -> str | None:
    """Read a text file, repairing a byte-order mark or a non-UTF-8 encoding (both logged).

    Returns None (and logs ``unreadable-metadata``) when the file cannot be read at all.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        log.add(source, rel, None, "unreadable-metadata", "skipped", str(exc))
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        log.add(source, rel, None, "bom", "repaired", "UTF-8 byte-order mark removed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        log.add(
            source,
            rel,
            None,
            "bad-encoding",
            "repaired",
            f"not valid UTF-8 ({exc.reason} at byte {exc.start}); read as Windows-1252",
        )
        return data.decode("cp1252", errors="replace")


def read_table(
    root: Path,
    rel: str,
    source: str,
    log: ProblemLog,
    *,
    required: Iterable[str] = (),
    sep: str = ",",
    names: list[str] | None = None,
) -> pd.DataFrame | None:
    """Read a CSV/TSV/space-separated metadata file as strings (blank cells are ``""``).

    Column names are stripped of spaces; a missing required column, an unreadable file or a
    missing file is logged and gives None. The frame has a ``_row`` column: the 1-based data row.

    Example:
        >>> log = ProblemLog()
        >>> read_table(Path("/nonexistent"), "metadata.csv", "x", log) is None
        True
        >>> [p.kind for p in log]
        ['unreadable-metadata']
    """
    text = read_text(root / rel, source, log, rel)
    if text is None:
        return None
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            dtype=str,
            keep_default_na=False,
            header=None if names else "infer",
            names=names,
            engine="python" if sep not in (",", "\t") else "c",
            skip_blank_lines=True,
        )
    except (pd.errors.ParserError, ValueError) as exc:
        log.add(source, rel, None, "unreadable-metadata", "skipped", f"cannot parse: {exc}")
        return None
    return checked_frame(frame, rel, source, log, required)


def read_workbook(
    path: Path,
    rel: str,
    source: str,
    log: ProblemLog,
    required: Iterable[str],
    *,
    sheet: str | int = 0,
    why: str = "",
) -> pd.DataFrame | None:
    """One sheet of a spreadsheet as strings, checked like every metadata table
    (:func:`checked_frame`); None, with one problem row, when it cannot be read.

    ``why`` is added to the problem's detail (what the adapter does without the sheet).

    Example:
        >>> log = ProblemLog()
        >>> read_workbook(Path("/nonexistent.xlsx"), "meta.xlsx", "x", log, []) is None
        True
        >>> log.frame()["kind"].tolist()
        ['unreadable-metadata']
    """
    try:
        frame = pd.read_excel(path, sheet_name=sheet, dtype=str, keep_default_na=False)
    except Exception as exc:  # openpyxl raises many kinds; a missing sheet is ValueError
        detail = f"cannot read sheet {sheet!r}: {type(exc).__name__}: {exc}"
        log.add(source, rel, None, "unreadable-metadata", "skipped", detail + why)
        return None
    return checked_frame(frame.astype(str), rel, source, log, required)


def checked_frame(
    frame: pd.DataFrame, rel: str, source: str, log: ProblemLog, required: Iterable[str]
) -> pd.DataFrame | None:
    """Strip column names, drop unnamed columns, check ``required`` and number the rows.

    Shared by every metadata reader (CSV, spreadsheet): a missing required column is one
    ``missing-column`` problem and None; otherwise the frame gets a 1-based ``_row``.
    """
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.loc[:, [c for c in frame.columns if c and not c.startswith("Unnamed:")]]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        log.add(
            source,
            rel,
            None,
            "missing-column",
            "skipped",
            f"no column {', '.join(missing)}; its {len(frame)} rows were not read",
        )
        return None
    frame = frame.copy()
    frame.insert(0, "_row", range(1, len(frame) + 1))
    return frame


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([YyMmWwDd])?\s*\+?\s*$")


def parse_age(raw: object) -> float | None:
    """Age in years from upstream spellings: ``65``, ``"060Y"``, ``"50+"``, ``"18M"``.

    Example:
        >>> parse_age("060Y"), parse_age("50+"), parse_age("18M"), parse_age(""), parse_age("?")
        (60.0, 50.0, 1.5, None, None)
    """
    if raw is None:
        return None
    match = _AGE.match(str(raw))
    if not match:
        return None
    value = float(match.group(1))
    unit = (match.group(2) or "Y").upper()
    return round(value / {"Y": 1, "M": 12, "W": 52.1775, "D": 365.25}[unit], 3)


def parse_sex(raw: object) -> str | None:
    """``M``/``F`` from upstream spellings, else None.

    Example:
        >>> parse_sex("male"), parse_sex("F"), parse_sex("")
        ('M', 'F', None)
    """
    text = str(raw or "").strip().casefold()
    if text in {"m", "male", "man"}:
        return "M"
    if text in {"f", "female", "woman"}:
        return "F"
    return None


class FolderAdapter(Adapter):
    """Class-per-folder layouts (``<split>/<class>/<image>``), described by a few attributes.

    The class is the name of the folder that holds an image (``finding_raw``, mapped through the
    crosswalk, ``label_origin="folder"``); the folder above it, when listed in ``splits``, is the
    upstream split; a file whose split folder is not listed (when ``splits`` is set) is left out
    and reported. Subclasses override :meth:`describe` to check their layout and add what the
    path tells (patient ids, tags); returning False leaves a file out (it is then reported).

    Attributes:
        subdir: Folder under the raw root where the split/class folders start.
        splits: Folder name (case-folded) → upstream split name (``train``, ``val``, ``test``).
        modality: Modality of every image.
    """

    subdir: ClassVar[str] = ""
    splits: ClassVar[dict[str, str]] = {}
    modality: ClassVar[str] = "XR"

    def records(self, root: Path, log: ProblemLog) -> list[Record]:
        index = FileIndex.scan(root, self.subdir)
        records = []
        for rel in index.files.values():
            parts = Path(rel).parts
            if len(parts) < 2:
                continue
            record = Record(
                source=self.source,
                path_raw=rel,
                modality=self.modality,
                finding_raw=parts[-2],
                label_origin="folder",
                upstream_split=self.splits.get(parts[-3].casefold()) if len(parts) >= 3 else None,
            )
            if self.splits and record.upstream_split is None:
                continue  # not under a split folder this source has: reported as an orphan
            if not self.describe(record, parts, log):
                continue
            index.claim(rel)
            self.label(record, log, rel)
            records.append(record)
        index.report_orphans(self.source, log, "not in a class folder this adapter knows")
        return records

    def describe(self, record: Record, parts: tuple[str, ...], log: ProblemLog) -> bool:
        """Add what the path tells about ``record``; False leaves the file out (reported)."""
        return True


@dataclass
class MaskFolders:
    """Masks in folders beside an image folder, paired with images by file name.

    ``folders`` lists (mask folder, mask map id) in the order the masks apply; ``found`` maps
    each mask folder to {case-folded file name: path}. An image missing a mask from a folder that
    ``required`` names (or from any non-empty folder) is logged and kept without it; a mask with
    no image of its name is a ``missing-study`` problem.

    Example:
        >>> masks = MaskFolders([("rp_msk", "medseg")], {"rp_msk": {"1.nii.gz": "rp_msk/1.nii.gz"}})
        >>> record = Record(source="medseg-volumes", path_raw="rp_im/1.nii.gz")
        >>> log = ProblemLog()
        >>> masks.attach(record, "1.nii.gz", FileIndex(Path(".")), log)
        >>> record.mask_paths, record.attributes["mask_maps"]
        (['rp_msk/1.nii.gz'], ['medseg'])
    """

    folders: Sequence[tuple[str, str]]
    found: dict[str, dict[str, str]]
    required: frozenset[str] = frozenset()

    def attach(self, record: Record, key: str, index: FileIndex, log: ProblemLog) -> None:
        """Add the masks of the image ``key`` to ``record`` (``mask_paths``, ``mask_maps``)."""
        maps: list[str] = []
        for folder, map_id in self.folders:
            mask = self.found[folder].get(key)
            if mask is None:
                if folder in self.required or self.found[folder]:
                    log.add(
                        record.source,
                        f"{folder}/{Path(record.path_raw).name}",
                        None,
                        "missing-file",
                        "kept",
                        f"{record.path_raw} is kept without this mask",
                    )
                continue
            index.claim(mask)
            record.mask_paths.append(mask)
            maps.append(map_id)
        record.attributes["mask_maps"] = maps

    def report_unpaired(
        self,
        source: str,
        images: Iterable[str],
        image_folder: str,
        index: FileIndex,
        log: ProblemLog,
    ) -> None:
        """A ``missing-study`` problem for every mask whose image is not there."""
        present = set(images)
        for folder, _ in self.folders:
            for key, mask in sorted(self.found[folder].items()):
                if key not in present:
                    index.claim(mask)
                    log.add(
                        source,
                        mask,
                        None,
                        "missing-study",
                        "skipped",
                        f"no {image_folder}/ volume of this name",
                    )
