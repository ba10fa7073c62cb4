"""Layer 2 for 2-D images: decode once, hash, resize, cache by content.

The cache is content-addressed: an image's key is the sha256 of its bytes and of the processing
parameters, and its outputs live in ``<cache>/<key[:2]>/<key>/`` (the square uint8 copies
``224.png``, ``512.png``, and ``meta.json``). A rebuild first compares each file's size and
modification time with the index of the previous run and only reads, hashes and decodes what
changed; a moved or touched file with the same bytes finds its outputs by key. Outputs are written
to a temporary folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from covid19_images.atomic import write_with
from covid19_images.problems import ProblemLog
from covid19_images.process.executor import Executor, LocalExecutor, fails_as
from covid19_images.process.image import (
    MAX_PIXELS,
    DecodeError,
    decode_image,
    describe_error,
    encode_png,
    extension_mismatch,
    size_problem,
    without_addresses,
)
from covid19_images.records import Record

PROCESS_VERSION = 4
"""Bump when what is written for an image changes (pixels or file bytes): every key changes.

4: ``content.png`` and the copy-search signature in ``meta.json``; the perceptual hash and the
thumbnail of the frame reduced to about 256 px.
3: the PNG copies are written by :func:`~covid19_images.process.image.encode_png` (same pixels,
other bytes than Pillow's encoder).
"""
INDEX = "index.parquet"


SIZE_KINDS = frozenset({"too-large", "implausible-size"})
"""Problems found from an image's size alone: never cached, checked again on every run (from
the header, or from the cached width and height), so a new limit takes effect at once."""


@dataclass(frozen=True)
class Params:
    """Processing parameters; all but ``max_pixels`` are part of every cache key."""

    sizes: tuple[int, ...] = (224, 512)
    version: int = PROCESS_VERSION
    max_pixels: int = MAX_PIXELS
    """The most pixels an image's header may declare (``build --max-pixels``); a larger image
    is a ``too-large`` problem and is not decoded. Not in the cache key: it changes which
    images are used, never what is written for one."""

    def token(self) -> bytes:
        fields = asdict(self)
        del fields["max_pixels"]
        return json.dumps(fields, sort_keys=True).encode()


@dataclass(frozen=True)
class _Task:
    path: str
    size: int
    mtime_ns: int
    cache: str
    params: Params
    invert: bool = False
    """MONOCHROME1 pixels, inverted on decoding (part of the key)."""


def _variant_token(params: Params, invert: bool) -> bytes:
    return params.token() + (b"monochrome1" if invert else b"")


def _variant(params: Params, invert: bool) -> str:
    """Short digest of how an image is processed: an index row is reused only for the same."""
    return hashlib.sha256(_variant_token(params, invert)).hexdigest()[:16]


def output_dir(cache: Path, key: str) -> Path:
    """The folder of one processed image."""
    return cache / key[:2] / key


def _failed(task: _Task, reason: str) -> dict[str, Any]:
    """An image an engine gave up on: a problem row, never reused from the index (no variant)."""
    return {
        "path": task.path,
        "size": task.size,
        "mtime_ns": task.mtime_ns,
        "error_kind": "unreadable-file",
        "error": reason,
    }


@fails_as(_failed)
def _process_one(task: _Task) -> dict[str, Any]:
    """Worker: hash the bytes, reuse outputs with the same key, else decode and write them."""
    path, cache = Path(task.path), Path(task.cache)
    result: dict[str, Any] = {"path": task.path, "size": task.size, "mtime_ns": task.mtime_ns}
    try:
        data = path.read_bytes()
    except OSError as exc:
        error = f"cannot read: {describe_error(exc)}"
        return {**result, "error_kind": "unreadable-file", "error": error}
    file_sha = hashlib.sha256(data).hexdigest()
    token = _variant_token(task.params, task.invert)
    key = hashlib.sha256(token + bytes.fromhex(file_sha)).hexdigest()[:32]
    result.update(sha256_file=file_sha, key=key, variant=_variant(task.params, task.invert))
    folder = output_dir(cache, key)
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        return {**result, **json.loads(meta_path.read_text(encoding="utf-8"))}
    try:
        decoded = decode_image(
            path,
            task.params.sizes,
            data=data,
            invert=task.invert,
            max_pixels=task.params.max_pixels,
        )
    except DecodeError as exc:
        if exc.kind in SIZE_KINDS:  # depends on the limits, not only on the key: not cached
            return {**result, "error_kind": exc.kind, "error": str(exc)}
        meta: dict[str, Any] = {"error_kind": exc.kind, "error": str(exc)}
    else:
        meta = {
            "width": decoded.width,
            "height": decoded.height,
            "bits_stored": decoded.bits_stored,
            "format": decoded.format,
            "sha256_pixels": decoded.sha256_pixels,
            "phash": decoded.phash,
            "mean": round(decoded.mean, 4),
            "std": round(decoded.std, 4),
            "signature": decoded.signature.to_json() if decoded.signature else None,
        }
    try:  # the prefix folder exists for all but the first image of 256: no mkdir call
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
    except FileNotFoundError:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
    try:
        if "error_kind" not in meta:
            for side, pixels in decoded.copies.items():
                (tmp / f"{side}.png").write_bytes(encode_png(pixels))
            if decoded.thumb is not None:
                (tmp / "thumb.png").write_bytes(encode_png(decoded.thumb))
            if decoded.content is not None:
                (tmp / "content.png").write_bytes(encode_png(decoded.content))
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
        try:
            tmp.rename(folder)
        except OSError:  # another worker finished the same bytes first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**result, **meta}


_INDEX_COLUMNS = (
    "path",
    "size",
    "mtime_ns",
    "sha256_file",
    "key",
    "variant",
    "width",
    "height",
    "bits_stored",
    "format",
    "sha256_pixels",
    "phash",
    "mean",
    "std",
    "error_kind",
    "error",
)


def process_records(
    records: list[Record],
    roots: dict[str, Path],
    cache: Path,
    *,
    params: Params | None = None,
    executor: Executor | None = None,
    log: ProblemLog | None = None,
) -> tuple[list[Record], ProblemLog]:
    """Process every record's image; return the usable records and the problems.

    Records whose image is empty or cannot be decoded are left out, with one problem each; a file
    whose content differs from its extension (a PNG named ``.jpg``) is kept with a problem.

    Args:
        records: Records from the adapters (``path_raw`` relative to ``roots[record.source]``).
        roots: Each source's raw folder.
        cache: The processed cache folder (created if needed).
        params: Processing parameters (default: 224 and 512 px copies).
        executor: Where the work runs (default: a local pool on all cores).
        log: Problems are added here (a new log if None).

    Example:
        >>> kept, problems = process_records(records, {"figure1": raw}, cache)  # doctest: +SKIP
    """
    params = params or Params()
    executor = executor or LocalExecutor()
    log = log if log is not None else ProblemLog()
    cache.mkdir(parents=True, exist_ok=True)
    index = _read_index(cache)

    tasks: list[_Task] = []
    reuse: dict[str, dict[str, Any]] = {}
    absolute: list[str] = []
    for record in records:
        path = roots[record.source] / record.path_raw
        absolute.append(str(path))
        try:
            stat = path.stat()
        except OSError:
            continue  # reported below as unreadable
        invert = record.attributes.get("photometric_interpretation") == "MONOCHROME1"
        previous = index.get(str(path))
        if (
            previous is not None
            and previous.get("variant") == _variant(params, invert)
            and previous["size"] == stat.st_size
            and previous["mtime_ns"] == stat.st_mtime_ns
            and previous.get("error_kind") not in SIZE_KINDS
            and (
                previous.get("error_kind")
                or (output_dir(cache, previous["key"]) / "meta.json").is_file()
            )
        ):
            reuse[str(path)] = previous
        else:
            tasks.append(
                _Task(str(path), stat.st_size, stat.st_mtime_ns, str(cache), params, invert)
            )

    fresh = {r["path"]: r for r in executor.map(_process_one, tasks, "decoding images")}
    results = {**reuse, **fresh}

    kept: list[Record] = []
    for record, abs_path in zip(records, absolute, strict=True):
        meta = results.get(abs_path)
        if meta is None:
            log.add(
                record.source,
                record.path_raw,
                record.source_row,
                "unreadable-file",
                "skipped",
                "the file disappeared or cannot be opened",
            )
            continue
        if not meta.get("error_kind"):  # outputs cached under other limits are checked again
            problem = size_problem(int(meta["width"]), int(meta["height"]), params.max_pixels)
            if problem is not None:
                meta = {**meta, "error_kind": problem.kind, "error": str(problem)}
        if meta.get("error_kind"):
            log.add(
                record.source,
                record.path_raw,
                record.source_row,
                meta["error_kind"],
                "skipped",
                without_addresses(meta.get("error") or ""),  # caches of earlier versions
            )
            continue
        mismatch = extension_mismatch(record.path_raw, meta.get("format"))
        if mismatch:
            log.add(
                record.source,
                record.path_raw,
                record.source_row,
                "wrong-extension",
                "kept",
                mismatch,
            )
            record.problems.append("wrong-extension")
        record.width, record.height = int(meta["width"]), int(meta["height"])
        record.bits_stored = int(meta["bits_stored"])
        record.sha256_file = meta["sha256_file"]
        record.sha256_pixels = meta["sha256_pixels"]
        record.phash = meta["phash"]
        record.processed_key = meta["key"]
        kept.append(record)

    # Rows another build sharing the cache wrote meanwhile win over this build's older copy
    # of the index; this build's own results win over both.
    _write_index(cache, {**index, **_read_index(cache), **results})
    return kept, log


def _read_index(cache: Path) -> dict[str, dict[str, Any]]:
    try:
        frame = pd.read_parquet(cache / INDEX)
    except (OSError, ValueError):
        return {}
    frame = frame.astype(object).where(frame.notna(), None)
    return {
        str(row["path"]): {str(k): v for k, v in row.items()} for row in frame.to_dict("records")
    }


def _write_index(cache: Path, rows: dict[str, dict[str, Any]]) -> None:
    frame = pd.DataFrame(
        [{c: row.get(c) for c in _INDEX_COLUMNS} for row in rows.values()],
        columns=list(_INDEX_COLUMNS),
    )
    for column in ("width", "height", "bits_stored", "size", "mtime_ns"):
        frame[column] = frame[column].astype("Int64")
    # A temporary name of its own: two builds sharing the cache never write one file.
    write_with(cache / INDEX, lambda tmp: frame.to_parquet(tmp, index=False))
