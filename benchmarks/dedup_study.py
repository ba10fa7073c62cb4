"""How well near-duplicate detection finds copies of one chest film, and keeps films apart.

Two studies, both on the real X-ray files of the mirror (``../shared/sources``):

``real`` (printed first): every pair of images of the copy-prone X-ray sources is compared by
brute force (no index), with the same whole-frame 64 x 64 thumbnails and perceptual hashes the
build uses. "Unmistakable copies" (thumbnail correlation >= 0.97 and detail correlation >= 0.7)
are the reference the index must not miss; the script prints, for several Hamming thresholds,
how many candidates the test looks at, how many it confirms, how many reference copies it misses,
and the closest pairs it rejects, so the defaults can be checked on any mirror.

``generated``: a near-duplicate benchmark with known answers.

- *Originals*: the X-ray images of ieee8023 (its CT slices left out), Figure 1, Actualmed,
  Zhang Lab, the Kaggle Covid-19 Image Dataset and the Darshan folder dataset (without its
  ``Oversampled`` augmented copies). The mirror holds real copies across those sources, so the
  files are first reduced to one image per real-copy cluster with the reference rule above
  (brute force over all pairs; clusters are connected components), keeping the copy of the
  upstream source (ieee8023, Figure 1, Actualmed, Zhang Lab before the re-publishers). Each
  original is converted to 8-bit grey, its long side capped at ``--max-side``, and saved as PNG.
- *Copies*: ~46 transformations (borders, crops, resizes with and without the aspect ratio,
  JPEG re-encoding, brightness/contrast/gamma, burnt-in text and markers, combinations), each at
  several strengths, applied to every original with a seeded RNG and saved as files (JPEG
  quality 95 unless the transformation is the encoding itself). Borders *removed* are the same
  unordered pairs as borders added (a pair detector sees no direction); in addition
  ``border-removed-existing`` trims the uniform margin that some real originals already have.
- *Refused by decode*: every generated file goes through the build's own decode
  (``covid19_images.process.image.decode_image``), once. A file it refuses (a ``DecodeError``:
  e.g. a side under ``MIN_SIDE`` px, as ``resize-0.25x`` makes of a small original) can never
  enter a dataset, so it can be neither a leak nor a duplicate. **Recall is over the copies the
  build accepts**: a refused copy is moved to ``refused-by-decode/``, takes part in no method's
  search (``ours``, imagededup and cleanvision are all scored on the same accepted copies) and
  is counted apart, per transformation ("refused" column; JSON ``refused_by_decode``). An
  original the decode refuses is dropped from the selection (no copies made), counted and
  logged on stderr. Every generated file is either scored or counted as refused.
- *Hard negatives*, different films that must stay apart: follow-up films (and other views) of
  one ieee8023 patient (``metadata.csv``: ``patientid``), several films of one Zhang Lab child
  (the id in the file name), and look-alike children (distinct Zhang Lab / Darshan children's
  films whose whole-frame thumbnails correlate >= 0.9).
- *Methods*, run on the same files: ``ours`` (this package, see :func:`ours`), imagededup's
  ``PHash`` (its default Hamming threshold 10, and a looser 15) and cleanvision's
  ``near_duplicates`` check. Each decodes or hashes every file once; its search then runs on
  subsets of the files:

  - **isolated** (the headline): for each transformation T, on all originals plus their T copies
    only. Recall(T) is the fraction of originals whose (accepted) T copy is in one cluster with
    it (clusters are the connected components of the pairs the method reports), then per family,
    strength and over all accepted copies. False merges: pairs of different originals in one
    cluster, summed over the isolated sets (and the hard negatives among them). For ``ours``,
    each missed copy is shown with its numbers when the search tested and rejected it, or as
    never a candidate. Copies of *other* originals under the same T can still link a copy to its
    original (e.g. many films framed by one wide border): read recall together with the false
    merges.
  - **pooled**: once on all files together. With ~46 copies of every original in one set,
    clusters chain through other copies, so pooled recall is inflated (a crop is "found" through
    some other copy; ``ours`` does not even test a pair already joined that way); it is kept for
    comparison and for the false merges over all files: all, hard negatives, and those where the
    two originals themselves are joined.

  Time: the decode/hashing done once (for ``ours``, the study's decode check of every file),
  then the searches (isolated, pooled); imports not counted.
  cleanvision's sets are read off its one run on all files (see :func:`run_cleanvision`).

A false merge that joins two originals with thumbnails >= 0.95 and detail >= 0.55 is most likely
a real copy that the reference rule (0.97 / 0.7) did not merge: the output lists the joined pairs.

Run from the repository root (``pip install -e ".[dev,bench]"``)::

    python benchmarks/dedup_study.py                                  # both studies, a table
    python benchmarks/dedup_study.py --study generated --limit 30    # a quick run
    python benchmarks/dedup_study.py --json                           # every figure, as JSON

The defaults (150 originals, about 6,900 files, ``--workers`` = the CPUs available) take about
9 minutes on 2 cores, 6 of them the pooled run of ``ours``, which grows faster than the number
of files (90 s for 4,600 files, 370 s for 6,900, 850 s for 11,500): ``--limit 100`` takes 3.5
minutes, ``--limit 250`` 19.
``--limit 0`` uses every original. The choice of originals is seeded (``--seed``): up to half
come from hard-negative pairs, the rest at random. Generated files go to a temporary folder that
is deleted at the end (``--keep DIR`` keeps them). ``--json-out FILE`` writes the JSON next to
the table.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

FOLDERS = {
    "ieee8023": "ieee8023-covid-chestxray/images",
    "figure1": "figure1-covid-chestxray/images",
    "actualmed": "actualmed-covid-chestxray/images",
    "darshan": "covid19-detection-xray-dataset",
    "covid19-image-dataset": "covid19-image-dataset",
    "zhanglab": "zhanglab-chest-xrays",
}
# Which copy of a real-copy cluster stands for it: the upstream source before re-publishers.
SOURCE_PRIORITY = [
    "ieee8023",
    "figure1",
    "actualmed",
    "zhanglab",
    "covid19-image-dataset",
    "darshan",
]
DARSHAN_CHILDREN = ("Normal", "ViralPneumonia", "BacterialPneumonia")
REFERENCE_CORRELATION = 0.97
REFERENCE_DETAIL = 0.7
LOOKALIKE_CORRELATION = 0.9
THUMB = 64


def _image_paths(mirror: Path) -> list[tuple[str, Path]]:
    """(source, path) of every copy-prone X-ray image in the mirror, in a fixed order."""
    found: list[tuple[str, Path]] = []
    for source, folder in FOLDERS.items():
        for path in sorted((mirror / folder).rglob("*")):
            if path.suffix.lower() in {".jpg", ".jpeg", ".png"} and "Oversampled" not in str(path):
                found.append((source, path))
    return found


def _standardise(rows: np.ndarray) -> np.ndarray:
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-12)


# ---------------------------------------------------------------------------------------------
# The real-pairs study (unchanged): thresholds of the build's test, checked on the real files.
# ---------------------------------------------------------------------------------------------


def study_real(mirror: Path) -> dict[str, Any]:
    """The Hamming sweep of the build's own test over every pair of real files."""
    from covid19_images.dedup.near import (
        DEFAULT_MAX_HAMMING,
        DEFAULT_MIN_CORRELATION,
        DEFAULT_MIN_DETAIL,
        detail,
    )
    from covid19_images.process.image import decode_image

    paths = [path for _, path in _image_paths(mirror)]
    hashes, thumbs, details = [], [], []
    for path in paths:
        decoded = decode_image(path, sizes=(224,))
        assert decoded.thumb is not None
        hashes.append(int(decoded.phash, 16))
        thumbs.append(decoded.thumb.astype(np.float64).ravel())
        details.append(detail(decoded.thumb).ravel())
    raw = _standardise(np.array(thumbs))
    fine = _standardise(np.array(details))
    corr, corr_detail = raw @ raw.T, fine @ fine.T
    values = np.array(hashes, dtype=np.uint64)
    ham = np.bitwise_count(values[:, None] ^ values[None, :]).astype(np.int64)
    upper = np.triu_indices(len(paths), 1)
    c, d, h = corr[upper], corr_detail[upper], ham[upper]
    reference = (c >= REFERENCE_CORRELATION) & (d >= REFERENCE_DETAIL)
    rule = (c >= DEFAULT_MIN_CORRELATION) & (d >= DEFAULT_MIN_DETAIL)
    sweep = []
    for t in (6, 8, 10, 12, 14, 16):
        candidates = h <= t
        confirmed = candidates & rule
        sweep.append(
            {
                "max_hamming": t,
                "candidates": int(candidates.sum()),
                "confirmed": int(confirmed.sum()),
                "reference_copies_missed": int((reference & ~confirmed).sum()),
                "confirmed_beyond_reference": int((confirmed & ~reference).sum()),
            }
        )
    rejected = (h <= DEFAULT_MAX_HAMMING) & ~rule
    confirmed = (h <= DEFAULT_MAX_HAMMING) & rule
    return {
        "images": len(paths),
        "pairs": len(c),
        "reference_copies": int(reference.sum()),
        "sweep": sweep,
        "defaults": {
            "max_hamming": DEFAULT_MAX_HAMMING,
            "min_correlation": DEFAULT_MIN_CORRELATION,
            "min_detail": DEFAULT_MIN_DETAIL,
        },
        "confirmed_min_correlation": round(float(c[confirmed].min()), 3),
        "confirmed_min_detail": round(float(d[confirmed].min()), 3),
        "rejected_max_correlation": round(float(c[rejected].max()), 3),
        "rejected_max_detail": round(float(d[rejected].max()), 3),
        # Distinct films the whole-thumbnail test alone would merge (within 16 bits).
        "raw_only_would_merge": int(
            ((h <= 16) & (c >= DEFAULT_MIN_CORRELATION) & (d < DEFAULT_MIN_DETAIL)).sum()
        ),
    }


def print_real(result: dict[str, Any]) -> None:
    print(
        f"{result['images']} images, {result['pairs']} pairs, "
        f"{result['reference_copies']} unmistakable copies"
    )
    for row in result["sweep"]:
        print(row)
    for key in (
        "confirmed_min_correlation",
        "confirmed_min_detail",
        "rejected_max_correlation",
        "rejected_max_detail",
        "raw_only_would_merge",
    ):
        print(f"{key}: {result[key]}")


# ---------------------------------------------------------------------------------------------
# "ours": the package's copy finder. The ONE place that calls the package's dedup API; swap these
# bodies when that API changes. Everything else only sees file paths in, index pairs out.
# ---------------------------------------------------------------------------------------------

OursDecoded = tuple[str, str, np.ndarray, Any, np.ndarray]
_DECODED: dict[str, OursDecoded] = {}
"""Each file the build's decode accepts, decoded once (path -> what :func:`find_duplicates`
needs), filled by :func:`ours_decode_all`; every run of :func:`ours` on any subset only looks
files up here."""
_REFUSED: dict[str, Any] = {}
"""Each file the build's decode refuses (path -> its ``DecodeError``): it can never enter a
dataset, so :func:`ours` leaves it out of every search."""
_DECODE_SECONDS = [0.0]
"""Wall time spent filling the two caches (one decode of every file)."""


def _ours_decode(path: Path) -> OursDecoded | Exception:
    """What the search needs of ``path``, or the build's ``DecodeError`` when it refuses it."""
    from covid19_images.process.image import DecodeError, decode_image

    try:
        decoded = decode_image(path, sizes=(224, 512))  # the build's sizes: the same decode
    except DecodeError as exc:
        return exc
    assert decoded.thumb is not None and decoded.content is not None
    return (
        decoded.sha256_pixels,
        decoded.phash,
        decoded.thumb,
        decoded.signature,
        decoded.content,
    )


def ours_decode_all(paths: list[Path], workers: int = 1) -> dict[str, Any]:
    """Decode every file not decoded yet with the build's decode, in ``workers`` processes, into
    the module's caches; the files of ``paths`` that the decode refuses (path -> DecodeError)."""
    start = time.perf_counter()
    todo = [
        str(path)
        for path in dict.fromkeys(paths)
        if str(path) not in _DECODED and str(path) not in _REFUSED
    ]
    for path, decoded in zip(
        todo, _map(_ours_decode, [Path(p) for p in todo], workers), strict=True
    ):
        if isinstance(decoded, Exception):
            _REFUSED[path] = decoded
        else:
            _DECODED[path] = decoded
    _DECODE_SECONDS[0] += time.perf_counter() - start
    return {str(path): _REFUSED[str(path)] for path in paths if str(path) in _REFUSED}


def ours(
    paths: list[Path], workers: int = 1
) -> tuple[list[tuple[int, int]], dict[tuple[int, int], dict[str, float]]]:
    """Pairs of indices into ``paths`` that the package judges copies of one film, and the
    candidate pairs it tested and rejected, with their numbers (keys ``(a, b)``, ``a < b``).

    Files come from the decode cache (decoded here first if missing, never twice). A file the
    build's decode refuses takes no part in the search: it is left out, and the indices of the
    others are mapped back to ``paths``."""
    from covid19_images.dedup.near import find_duplicates

    ours_decode_all(paths, workers)
    kept = [k for k, path in enumerate(paths) if str(path) in _DECODED]
    decoded = [_DECODED[str(paths[k])] for k in kept]
    report = find_duplicates(
        [d[0] for d in decoded],
        [d[1] for d in decoded],
        lambda i: decoded[i][2],
        signatures=[d[3] for d in decoded],
        content=lambda i: decoded[i][4],
    )
    rejected = {
        (min(kept[p.a], kept[p.b]), max(kept[p.a], kept[p.b])): {
            "hamming": int(p.hamming),
            "correlation": float(p.correlation),
            "detail": float(p.detail),
            "aligned": float(p.aligned),
        }
        for p in report.rejected
    }
    return [(kept[pair.a], kept[pair.b]) for pair in report.pairs], rejected


# ---------------------------------------------------------------------------------------------
# Helpers: parallel map, grey frames, the reference rule's thumbnails.
# ---------------------------------------------------------------------------------------------


def _map(fn: Callable[[Any], Any], items: list[Any], workers: int) -> list[Any]:
    """``list(map(fn, items))``, in ``workers`` processes when more than one."""
    if workers <= 1 or len(items) < 2:
        return [fn(item) for item in items]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(fn, items, chunksize=max(1, len(items) // (workers * 8))))


def _grey(img: Image.Image) -> Image.Image:
    """8-bit grey, as the build sees it: alpha over white, 16-bit scaled to its 0.5-99.5 %."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(img, dtype=np.float64)
        lo, hi = np.percentile(pixels, (0.5, 99.5))
        scaled = (pixels - lo) * (255.0 / max(hi - lo, 1e-9))
        return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))
    if img.mode == "L":
        return img.copy()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("L")


def _open_grey(path: Path, at_least: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """The whole frame in grey (JPEGs decoded reduced to >= ``at_least`` px) and its full size."""
    with Image.open(path) as img:
        size = img.size
        if at_least and img.format == "JPEG":
            img.draft("L", (at_least, at_least))
        img.load()
        return _grey(img), size


def _reference_thumb(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """The study's whole-frame 64 x 64 thumbnail (aspect not kept) and the image's size.

    The same decode the build does (JPEG reduced to >= 224 px, BOX resize), written out here so
    the reference does not move when the package's own thumbnails change.
    """
    frame, size = _open_grey(path, 224)
    return np.asarray(frame.resize((THUMB, THUMB), Image.Resampling.BOX)), size


def _detail(thumb: np.ndarray) -> np.ndarray:
    """The thumbnail minus its Gaussian blur (radius 2), as in the study's reference rule."""
    blurred = Image.fromarray(thumb).filter(ImageFilter.GaussianBlur(2))
    out: np.ndarray = thumb.astype(np.float64) - np.asarray(blurred, dtype=np.float64)
    return out


def _components(n: int, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Cluster label of each of ``n`` items: connected components of ``pairs``."""
    edges = np.array(list(pairs), dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    out: np.ndarray = labels
    return out


# ---------------------------------------------------------------------------------------------
# Originals and hard negatives.
# ---------------------------------------------------------------------------------------------


@dataclass
class Original:
    index: int
    """Position among all real files (stable whatever ``--limit`` is)."""
    source: str
    path: Path
    size: tuple[int, int]
    patient: str | None = None
    offset: str | None = None
    child: bool = False
    copies_merged: list[str] = field(default_factory=list)
    """Other real files of the mirror that the reference rule calls copies of this one."""


_ZHANG_PATIENT = re.compile(r"^(person\d+)_|^((?:NORMAL2-)?IM-\d+)-")


def _ieee_metadata(mirror: Path) -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    table = mirror / "ieee8023-covid-chestxray" / "metadata.csv"
    if table.exists():
        with table.open(newline="", encoding="utf-8", errors="replace") as handle:
            for row in csv.DictReader(handle):
                rows[row.get("filename") or ""].append(row)
    return rows


def select_originals(
    mirror: Path, workers: int
) -> tuple[list[Original], np.ndarray, np.ndarray, dict[str, Any]]:
    """One original per real-copy cluster, with their reference thumbnails' correlations."""
    files = _image_paths(mirror)
    meta = _ieee_metadata(mirror)
    # ieee8023 keeps CT slices in the same folder; the benchmark is about X-ray films.
    ct = {
        i
        for i, (source, path) in enumerate(files)
        if source == "ieee8023"
        and meta.get(path.name)
        and all(row.get("modality") != "X-ray" for row in meta[path.name])
    }
    decoded = _map(_reference_thumb, [path for _, path in files], workers)
    thumbs = np.array([thumb.ravel() for thumb, _ in decoded], dtype=np.float64)
    details = np.array([_detail(thumb).ravel() for thumb, _ in decoded])
    raw, fine = _standardise(thumbs), _standardise(details)
    corr, corr_detail = raw @ raw.T, fine @ fine.T
    upper = np.triu_indices(len(files), 1)
    is_copy = (corr[upper] >= REFERENCE_CORRELATION) & (corr_detail[upper] >= REFERENCE_DETAIL)
    copy_pairs = list(zip(upper[0][is_copy].tolist(), upper[1][is_copy].tolist(), strict=True))
    labels = _components(len(files), copy_pairs)
    clusters: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels.tolist()):
        if i not in ct:
            clusters[label].append(i)

    def rank(i: int) -> tuple[int, int, str]:
        source, path = files[i]
        w, h = decoded[i][1]
        return SOURCE_PRIORITY.index(source), -w * h, str(path)

    originals: list[Original] = []
    for members in clusters.values():
        members.sort(key=rank)
        keep = members[0]
        source, path = files[keep]
        original = Original(keep, source, path, decoded[keep][1])
        original.copies_merged = [str(files[i][1].relative_to(mirror)) for i in members[1:]]
        if source == "ieee8023" and meta.get(path.name):
            original.patient = f"ieee8023:{meta[path.name][0].get('patientid')}"
            original.offset = meta[path.name][0].get("offset")
        if source == "zhanglab":
            match = _ZHANG_PATIENT.match(path.name)
            original.patient = f"zhanglab:{(match.group(1) or match.group(2))}" if match else None
            original.child = True
        if source == "darshan" and path.parent.name in DARSHAN_CHILDREN:
            original.child = True
        originals.append(original)
    originals.sort(key=lambda o: o.index)
    keep_rows = np.array([o.index for o in originals])
    info = {
        "real_files": len(files),
        "ct_slices_left_out": len(ct),
        "reference_copy_pairs": len(copy_pairs),
        "real_copy_clusters": sum(1 for m in clusters.values() if len(m) > 1),
        "files_merged_into_another": sum(len(m) - 1 for m in clusters.values()),
        "originals": len(originals),
        "by_source": dict(Counter(o.source for o in originals)),
    }
    sub = np.ix_(keep_rows, keep_rows)
    return originals, corr[sub], corr_detail[sub], info


HARD_KINDS = ("ieee8023-same-patient", "zhanglab-same-child", "lookalike-children")


def hard_negatives(
    originals: list[Original], corr: np.ndarray, corr_detail: np.ndarray
) -> dict[tuple[int, int], set[str]]:
    """Pairs (positions in ``originals``) of different films that must stay apart, by kind."""
    kinds: dict[tuple[int, int], set[str]] = defaultdict(set)
    for a, b in combinations(range(len(originals)), 2):
        oa, ob = originals[a], originals[b]
        if (corr[a, b] >= REFERENCE_CORRELATION) & (corr_detail[a, b] >= REFERENCE_DETAIL):
            continue  # a real copy by the reference rule (cannot happen after the reduction)
        if oa.patient and oa.patient == ob.patient:
            kind = "ieee8023-same-patient" if oa.source == "ieee8023" else "zhanglab-same-child"
            kinds[(a, b)].add(kind)
        if oa.child and ob.child and corr[a, b] >= LOOKALIKE_CORRELATION:
            kinds[(a, b)].add("lookalike-children")
    return dict(kinds)


def choose(
    originals: list[Original],
    hard: dict[tuple[int, int], set[str]],
    limit: int,
    seed: int,
) -> list[int]:
    """``limit`` originals (positions), seeded; up to half of them from hard-negative pairs."""
    if limit <= 0 or limit >= len(originals):
        return list(range(len(originals)))
    rng = np.random.default_rng(seed)
    queues = []
    for kind in HARD_KINDS:
        pairs = sorted(p for p, k in hard.items() if kind in k)
        queues.append([pairs[i] for i in rng.permutation(len(pairs))])
    chosen: list[int] = []
    taken: set[int] = set()
    while len(chosen) < limit // 2 and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit // 2:
                for i in queue.pop(0):
                    if i not in taken:
                        taken.add(i)
                        chosen.append(i)
    for i in rng.permutation(len(originals)).tolist():
        if len(chosen) >= limit:
            break
        if i not in taken:
            taken.add(i)
            chosen.append(i)
    return sorted(chosen[:limit])


# ---------------------------------------------------------------------------------------------
# Transformations.
# ---------------------------------------------------------------------------------------------

Encoded = tuple[Image.Image, str, dict[str, Any]]  # image, file extension, save() options
JPEG95: dict[str, Any] = {"quality": 95}
PNG: dict[str, Any] = {"compress_level": 1}
SIDES = ("left", "top", "right", "bottom")


@dataclass(frozen=True)
class Transform:
    name: str
    family: str
    strength: str  # mild, moderate, strong
    apply: Callable[[Image.Image, np.random.Generator], Encoded | None]


def _border(img: Image.Image, widths: dict[str, float], colour: int) -> Image.Image:
    w, h = img.size
    left, right = round(widths.get("left", 0) * w), round(widths.get("right", 0) * w)
    top, bottom = round(widths.get("top", 0) * h), round(widths.get("bottom", 0) * h)
    out = Image.new("L", (w + left + right, h + top + bottom), colour)
    out.paste(img, (left, top))
    return out


def _crop(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(left * w), round(top * h), w - round(right * w), h - round(bottom * h)))


def _resize(img: Image.Image, width: int, height: int) -> Image.Image:
    width, height = max(8, width), max(8, height)
    down = width * height < img.width * img.height
    method = Image.Resampling.LANCZOS if down else Image.Resampling.BICUBIC
    return img.resize((width, height), method)


def _jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("L")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(6, size))
    except (TypeError, OSError):  # Pillow without FreeType: one bitmap size
        return ImageFont.load_default()


def _text_line(img: Image.Image, rng: np.random.Generator, where: str) -> Image.Image:
    """A burnt-in annotation line (invented date, view and department) along one edge."""
    out = img.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    size = round(rng.uniform(0.03, 0.06) * h)
    day = f"2020-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
    clock = f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}"
    view = ["AP PORTABLE", "PA ERECT", "AP SUPINE", "SEMI-ERECT"][rng.integers(4)]
    place = ["GENERAL HOSPITAL", "RADIOLOGY DEPT", "CITY MEDICAL CENTRE", "WARD 7"][rng.integers(4)]
    tokens = [day, clock, view, place]
    font = _font(size)
    while True:
        text = "  ".join(tokens)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left <= 0.92 * w or (len(tokens) == 1 and size <= 6):
            break
        if len(tokens) > 2:
            tokens.pop()
        else:
            size = max(6, int(size * 0.85))
            font = _font(size)
    x = round(rng.uniform(0.02, max(0.02, 0.98 - (right - left) / w)) * w)
    margin = round(rng.uniform(0.01, 0.03) * h)
    y = margin - top if where == "top" else h - margin - bottom
    draw.text((x, y), text, fill=int(rng.integers(225, 256)), font=font)
    return out


def _corner(rng: np.random.Generator, w: int, h: int, bw: int, bh: int) -> tuple[int, int]:
    mx, my = round(rng.uniform(0.02, 0.06) * w), round(rng.uniform(0.02, 0.06) * h)
    x = mx if rng.integers(2) else w - mx - bw
    y = my if rng.integers(2) else h - my - bh
    return x, y


def _letter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A lead side marker, "L" or "R", in a corner, 3-6 % of the frame high."""
    out = img.copy()
    draw = ImageDraw.Draw(out)
    font = _font(round(rng.uniform(0.03, 0.06) * out.height / 0.72))  # cap height ~0.72 em
    letter = "LR"[rng.integers(2)]
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
    x, y = _corner(rng, out.width, out.height, right - left, bottom - top)
    draw.text((x - left, y - top), letter, fill=255, font=font)
    return out


def _square(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A bright square marker, 3-6 % of the shorter side, near a corner."""
    out = img.copy()
    side = max(3, round(rng.uniform(0.03, 0.06) * min(out.size)))
    x, y = _corner(rng, out.width, out.height, side, side)
    ImageDraw.Draw(out).rectangle((x, y, x + side - 1, y + side - 1), fill=255)
    return out


def _trim_margin(img: Image.Image) -> Image.Image | None:
    """The image without the near-uniform margin it already has (None when it has none)."""
    a = np.asarray(img, dtype=np.int16)

    def lead(lines: np.ndarray) -> int:
        lo, hi = np.percentile(lines, (1, 99), axis=1)
        flat = (hi - lo) <= 12
        return len(flat) if flat.all() else int(np.argmin(flat))

    h, w = a.shape
    top, bottom = lead(a), lead(a[::-1])
    left, right = lead(a.T), lead(a.T[::-1])
    top, bottom = min(top, int(0.45 * h)), min(bottom, int(0.45 * h))
    left, right = min(left, int(0.45 * w)), min(right, int(0.45 * w))
    if max(top / h, bottom / h, left / w, right / w) < 0.02:
        return None
    return img.crop((left, top, w - right, h - bottom))


def _one_side(rng: np.random.Generator) -> str:
    return SIDES[rng.integers(4)]


def _transforms() -> list[Transform]:
    out: list[Transform] = []
    strength = {0.05: "mild", 0.2: "moderate", 0.5: "strong"}
    for width in (0.05, 0.2, 0.5):
        for colour_name, colour in (("black", 0), ("white", 255), ("grey", 128)):
            if colour_name == "grey" and width != 0.2:
                continue

            def one(img: Image.Image, rng: np.random.Generator, w=width, c=colour) -> Encoded:
                return _border(img, {_one_side(rng): w}, c), "jpg", JPEG95

            def every(img: Image.Image, rng: np.random.Generator, w=width, c=colour) -> Encoded:
                return _border(img, dict.fromkeys(SIDES, w), c), "jpg", JPEG95

            s = strength[width]
            out.append(Transform(f"border-one-{width}-{colour_name}", "border", s, one))
            out.append(Transform(f"border-all-{width}-{colour_name}", "border", s, every))

    def trimmed(img: Image.Image, rng: np.random.Generator) -> Encoded | None:
        cut = _trim_margin(img)
        return None if cut is None else (cut, "jpg", JPEG95)

    out.append(Transform("border-removed-existing", "border", "moderate", trimmed))

    crops: list[tuple[str, str, Callable[[np.random.Generator], tuple[float, ...]]]] = [
        ("crop-sym-0.05", "mild", lambda rng: (0.05,) * 4),
        ("crop-sym-0.15", "moderate", lambda rng: (0.15,) * 4),
        ("crop-sym-0.25", "strong", lambda rng: (0.25,) * 4),
        ("crop-one-0.25", "moderate", lambda rng: tuple(np.eye(4)[rng.integers(4)] * 0.25)),
        ("crop-random-0.25", "strong", lambda rng: tuple(rng.uniform(0, 0.25, 4).tolist())),
    ]
    for name, s, fractions in crops:

        def cropped(img: Image.Image, rng: np.random.Generator, f=fractions) -> Encoded:
            left, top, right, bottom = f(rng)
            return _crop(img, left, top, right, bottom), "jpg", JPEG95

        out.append(Transform(name, "crop", s, cropped))

    resizes: list[tuple[str, str, Callable[[int, int], tuple[int, int]], str]] = [
        ("resize-0.25x", "moderate", lambda w, h: (round(w / 4), round(h / 4)), "jpg"),
        ("resize-0.5x", "mild", lambda w, h: (round(w / 2), round(h / 2)), "jpg"),
        ("resize-2x", "mild", lambda w, h: (2 * w, 2 * h), "jpg"),
        # As the COVID-19 Radiography Database stores every image: 299 x 299 PNG.
        ("resize-299x299", "moderate", lambda w, h: (299, 299), "png"),
        ("resize-stretch-w1.3", "moderate", lambda w, h: (round(1.3 * w), h), "jpg"),
        ("resize-squash-h0.75", "moderate", lambda w, h: (w, round(0.75 * h)), "jpg"),
    ]
    for name, s, target, ext in resizes:

        def resized(img: Image.Image, rng: np.random.Generator, t=target, e=ext) -> Encoded:
            return _resize(img, *t(*img.size)), e, JPEG95 if e == "jpg" else PNG

        out.append(Transform(name, "resize", s, resized))

    out.append(Transform("copy-png", "reencode", "mild", lambda img, rng: (img, "png", PNG)))
    out.append(
        Transform("png-to-jpeg-95", "reencode", "mild", lambda img, rng: (img, "jpg", JPEG95))
    )
    for quality, s in ((90, "mild"), (70, "moderate"), (50, "strong")):

        def encoded(img: Image.Image, rng: np.random.Generator, q=quality) -> Encoded:
            return img, "jpg", {"quality": q}

        out.append(Transform(f"jpeg-{quality}", "reencode", s, encoded))
    out.append(
        Transform(
            "jpeg-70-then-png",
            "reencode",
            "moderate",
            lambda img, rng: (_jpeg_roundtrip(img, 70), "png", PNG),
        )
    )

    def lut(img: Image.Image, gamma: float) -> Image.Image:
        return img.point([round(255 * (v / 255) ** gamma) for v in range(256)])

    intensity: list[tuple[str, str, Callable[[Image.Image], Image.Image]]] = [
        ("brightness+10%", "mild", lambda img: ImageEnhance.Brightness(img).enhance(1.1)),
        ("brightness-10%", "mild", lambda img: ImageEnhance.Brightness(img).enhance(0.9)),
        ("contrast-0.8", "moderate", lambda img: ImageEnhance.Contrast(img).enhance(0.8)),
        ("contrast-1.2", "moderate", lambda img: ImageEnhance.Contrast(img).enhance(1.2)),
        ("gamma-0.8", "moderate", lambda img: lut(img, 0.8)),
        ("gamma-1.25", "moderate", lambda img: lut(img, 1.25)),
    ]
    for name, s, fn in intensity:

        def changed(img: Image.Image, rng: np.random.Generator, f=fn) -> Encoded:
            return f(img), "jpg", JPEG95

        out.append(Transform(name, "intensity", s, changed))

    texts: list[tuple[str, str, Callable[[Image.Image, np.random.Generator], Image.Image]]] = [
        ("text-marker-letter", "mild", _letter),
        ("text-square-marker", "mild", _square),
        ("text-line-top", "moderate", lambda img, rng: _text_line(img, rng, "top")),
        ("text-line-bottom", "moderate", lambda img, rng: _text_line(img, rng, "bottom")),
    ]
    for name, s, burn in texts:

        def burnt(img: Image.Image, rng: np.random.Generator, b=burn) -> Encoded:
            return b(img, rng), "jpg", JPEG95

        out.append(Transform(name, "text", s, burnt))

    def crop_border_jpeg(img: Image.Image, rng: np.random.Generator) -> Encoded:
        framed = _border(_crop(img, 0.1, 0.1, 0.1, 0.1), dict.fromkeys(SIDES, 0.1), 0)
        return framed, "jpg", {"quality": 70}

    def resize_text(img: Image.Image, rng: np.random.Generator) -> Encoded:
        small = _resize(img, round(img.width / 2), round(img.height / 2))
        return _text_line(small, rng, "bottom"), "jpg", JPEG95

    def border_299(img: Image.Image, rng: np.random.Generator) -> Encoded:
        return _resize(_border(img, {_one_side(rng): 0.2}, 0), 299, 299), "png", PNG

    def crop_resize_jpeg(img: Image.Image, rng: np.random.Generator) -> Encoded:
        left, top, right, bottom = rng.uniform(0, 0.15, 4).tolist()
        cut = _crop(img, left, top, right, bottom)
        return (
            _letter(_resize(cut, round(cut.width / 2), round(cut.height / 2)), rng),
            "jpg",
            {"quality": 70},
        )

    out += [
        Transform("combo-crop0.1-border0.1-jpeg70", "combo", "strong", crop_border_jpeg),
        Transform("combo-resize0.5-text", "combo", "moderate", resize_text),
        Transform("combo-border0.2-resize299", "combo", "strong", border_299),
        Transform("combo-crop0.15-resize0.5-letter-jpeg70", "combo", "strong", crop_resize_jpeg),
    ]
    return out


TRANSFORMS = _transforms()


def _working_copy(path: Path, max_side: int) -> Image.Image:
    frame, _ = _open_grey(path, max_side if max_side > 0 else None)
    if max_side > 0 and max(frame.size) > max_side:
        scale = max_side / max(frame.size)
        size = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
        frame = frame.resize(size, Image.Resampling.LANCZOS)
    return frame


def _make_files(task: tuple[int, str, str, int, int]) -> tuple[list[tuple[int, str, str]], str]:
    """Write one original and all its copies; (original index, transform, file name) each.

    An original that the build's decode refuses is deleted again and gets no copies: ``([],
    why)``; otherwise ``why`` is empty."""
    from covid19_images.process.image import DecodeError, decode_image

    index, source_path, out_dir, seed, max_side = task
    img = _working_copy(Path(source_path), max_side)
    stem = f"o{index:04d}"
    name = f"{stem}__original.png"
    img.save(Path(out_dir) / name, "PNG", **PNG)
    try:
        decode_image(Path(out_dir) / name, sizes=(224, 512))
    except DecodeError as exc:
        (Path(out_dir) / name).unlink()
        return [], f"{exc.kind}: {exc}"
    written = [(index, "original", name)]
    for transform in TRANSFORMS:
        rng = np.random.default_rng([seed, index, zlib.crc32(transform.name.encode())])
        result = transform.apply(img, rng)
        if result is None:
            continue
        copy, ext, options = result
        name = f"{stem}__{transform.name}.{ext}"
        copy.save(Path(out_dir) / name, "JPEG" if ext == "jpg" else "PNG", **options)
        written.append((index, transform.name, name))
    return written, ""


# ---------------------------------------------------------------------------------------------
# Methods compared. Each decodes or hashes every file ONCE (``prepare``), then ``find`` runs its
# search on any subset of the files: all of them (pooled) or one transformation's (isolated).
# ---------------------------------------------------------------------------------------------

Found = tuple[list[tuple[int, int]], dict[tuple[int, int], dict[str, float]] | None]
"""Pairs of indices into all files, and (ours only) the rejected candidates with their numbers."""


@dataclass
class Method:
    name: str
    find: Callable[[list[int]], Found] | None
    """Runs the method on the files at these indices (None: the method is not available)."""
    prepare_seconds: float = 0.0
    note: str = ""
    check: Callable[[list[int]], str] | None = None
    """Run once, untimed, on one isolated subset: checks a shortcut ``find`` takes."""


def run_ours(paths: list[Path], folder: Path, workers: int) -> list[Method]:
    try:
        ours_decode_all(paths, workers)  # done already by the study's decode check
    except ImportError as exc:
        return [Method("ours", None, note=f"not available: {exc}")]
    prepared = _DECODE_SECONDS[0]  # that one decode of every file, the refused ones included

    def find(indices: list[int]) -> Found:
        pairs, rejected = ours([paths[i] for i in indices], workers)
        back = indices.__getitem__
        return (
            [(back(a), back(b)) for a, b in pairs],
            {(back(a), back(b)): numbers for (a, b), numbers in rejected.items()},
        )

    note = "each file decoded once (build sizes 224, 512), by the study's decode check"
    return [Method("ours", find, prepared, note)]


IMAGEDEDUP_THRESHOLDS = (10, 15)  # imagededup's default max_distance_threshold, and a looser one


def run_imagededup(paths: list[Path], folder: Path, workers: int) -> list[Method]:
    start = time.perf_counter()
    try:
        from imagededup.methods import PHash  # imports torch: timed apart
    except ImportError:
        return [
            Method(f"imagededup-{t}", None, note="not installed") for t in IMAGEDEDUP_THRESHOLDS
        ]
    imported = time.perf_counter() - start
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("imagededup"):  # it logs every search at INFO on stderr
            logging.getLogger(name).setLevel(logging.WARNING)
    hasher = PHash(verbose=False)
    start = time.perf_counter()
    encodings = hasher.encode_images(image_dir=folder, num_enc_workers=workers)  # once, all files
    encoded = time.perf_counter() - start
    names = [path.name for path in paths]
    index = {name: i for i, name in enumerate(names)}
    failed = sorted(name for name, value in encodings.items() if not value)
    note = f"hashed once (+ import {imported:.1f} s, not counted)"
    if failed:
        note += f"; {len(failed)} files not hashed"

    def finder(threshold: int) -> Callable[[list[int]], Found]:
        def find(indices: list[int]) -> Found:
            subset = {names[i]: encodings[names[i]] for i in indices if encodings.get(names[i])}
            with warnings.catch_warnings():  # "num_enc_workers has no effect", though not given
                warnings.simplefilter("ignore", RuntimeWarning)
                found = hasher.find_duplicates(
                    encoding_map=subset,
                    max_distance_threshold=threshold,
                    # A process pool only pays off on the pooled set.
                    num_dist_workers=workers if len(subset) > 2000 else 0,
                )
            pairs = {
                (min(index[a], index[b]), max(index[a], index[b]))
                for a, others in found.items()
                for b in others
            }
            return sorted(pairs), None

        return find

    return [Method(f"imagededup-{t}", finder(t), encoded, note) for t in IMAGEDEDUP_THRESHOLDS]


def _cleanvision_sets(files: list[str], workers: int) -> list[list[str]]:
    """cleanvision's near and exact duplicate sets of ``files`` (near sets that equal an exact
    set are dropped from ``near_duplicates``: both are taken)."""
    from cleanvision import Imagelab

    lab = Imagelab(filepaths=files, verbose=False)
    with contextlib.redirect_stdout(io.StringIO()):
        lab.find_issues({"near_duplicates": {}}, n_jobs=workers, verbose=False)
    sets: list[list[str]] = (
        lab.info["near_duplicates"]["sets"] + lab.info["exact_duplicates"]["sets"]
    )
    return sets


def run_cleanvision(paths: list[Path], folder: Path, workers: int) -> list[Method]:
    """cleanvision run once, on all files; a subset's result is read off that run.

    cleanvision 0.3.x (``issue_managers/duplicate_issue_manager.py``) hashes each image on its
    own (near: ``imagehash.phash``, 8 x 8; exact: md5 of the pixels) and makes each set from the
    images sharing one hash string: two images are in one set exactly when their own hashes are
    equal, whatever else the folder holds. So the pairs it reports on a subset are the pairs of the
    whole run with both images in the subset. ``check`` runs cleanvision on one subset itself and
    compares.
    """
    start = time.perf_counter()
    try:
        from cleanvision import Imagelab  # noqa: F401  (timed apart)
    except ImportError:
        return [Method("cleanvision", None, note="not installed")]
    imported = time.perf_counter() - start
    start = time.perf_counter()
    files = [str(path.resolve()) for path in paths]
    index = {path: i for i, path in enumerate(files)}
    groups = [sorted(index[f] for f in group) for group in _cleanvision_sets(files, workers)]
    in_groups: dict[int, list[int]] = defaultdict(list)
    for g, group in enumerate(groups):
        for i in group:
            in_groups[i].append(g)
    prepared = time.perf_counter() - start

    def find(indices: list[int]) -> Found:
        chosen = set(indices)
        touched = {g for i in indices for g in in_groups.get(i, [])}
        pairs = {
            pair for g in touched for pair in combinations([i for i in groups[g] if i in chosen], 2)
        }
        return sorted(pairs), None

    def check(indices: list[int]) -> str:
        own = _cleanvision_sets([files[i] for i in indices], workers)
        direct = {
            (min(index[a], index[b]), max(index[a], index[b]))
            for group in own
            for a, b in combinations(group, 2)
        }
        read_off = set(find(indices)[0])
        if direct != read_off:
            raise AssertionError("cleanvision run on a subset differs from the pooled run's")
        return (
            f"checked: run on a subset of {len(indices)} files itself, the same {len(direct)} pairs"
        )

    note = (
        f"identical 64-bit pHash, exact sets included; hashed once, a subset's sets read off the "
        f"whole run (+ import {imported:.1f} s, not counted)"
    )
    return [Method("cleanvision", find, prepared, note, check)]


METHODS: dict[str, Callable[[list[Path], Path, int], list[Method]]] = {
    "ours": run_ours,
    "imagededup": run_imagededup,
    "cleanvision": run_cleanvision,
}


# ---------------------------------------------------------------------------------------------
# Scoring.
# ---------------------------------------------------------------------------------------------

FAMILY = {t.name: t.family for t in TRANSFORMS}
STRENGTH = {t.name: t.strength for t in TRANSFORMS}


def _rates(hits: dict[str, list[int]]) -> dict[str, Any]:
    """Recall per transformation, family, family/strength and strength, and over all copies."""

    def rate(groups: dict[str, list[int]]) -> dict[str, float]:
        return {k: round(sum(v) / len(v), 4) for k, v in groups.items() if v}

    by_family: dict[str, list[int]] = defaultdict(list)
    by_strength: dict[str, list[int]] = defaultdict(list)
    by_both: dict[str, list[int]] = defaultdict(list)
    for t, values in hits.items():
        by_family[FAMILY[t]] += values
        by_strength[STRENGTH[t]] += values
        by_both[f"{FAMILY[t]}/{STRENGTH[t]}"] += values
    all_hits = [v for values in hits.values() for v in values]
    return {
        "recall_all": round(sum(all_hits) / len(all_hits), 4) if all_hits else None,
        "recall": rate(hits),
        "recall_by_family": rate(by_family),
        "recall_by_strength": rate(by_strength),
        "recall_by_family_strength": rate(by_both),
    }


def score_pooled(
    pairs: list[tuple[int, int]],
    files: list[tuple[int, str, str]],
    hard: dict[tuple[int, int], set[str]],
    position: dict[int, int],
    originals: list[Original],
    corr: np.ndarray,
    corr_detail: np.ndarray,
) -> dict[str, Any]:
    """Pooled run (all files in one set): recall (inflated by chaining) and false merges."""
    labels = _components(len(files), pairs)
    original_file = {o: i for i, (o, t, _) in enumerate(files) if t == "original"}
    hits: dict[str, list[int]] = defaultdict(list)
    for i, (o, t, _) in enumerate(files):
        if t != "original":
            hits[t].append(int(labels[i] == labels[original_file[o]]))

    members: dict[int, Counter[int]] = defaultdict(Counter)
    by_original: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for i, (o, _, name) in enumerate(files):
        members[int(labels[i])][o] += 1
        by_original[position[o]].append((int(labels[i]), name))
    merged: set[tuple[int, int]] = set()
    file_pairs = 0
    for counts in members.values():
        if len(counts) > 1:
            total = sum(counts.values())
            file_pairs += (total * total - sum(c * c for c in counts.values())) // 2
            for a, b in combinations(sorted(counts), 2):
                merged.add((position[a], position[b]))
    hard_merged = {pair: hard[pair] for pair in merged if pair in hard}
    # Which files make the mixed clusters, and whether the two originals themselves were joined
    # (rather than only copies of them, e.g. two films framed by the same wide black border).
    mixed = {label for label, counts in members.items() if len(counts) > 1}
    in_mixed = Counter(t for i, (_, t, _) in enumerate(files) if int(labels[i]) in mixed)
    label_of = {position[o]: int(labels[i]) for o, i in original_file.items()}
    themselves = sorted(
        ((a, b) for a, b in merged if label_of[a] == label_of[b]), key=lambda p: -corr[p]
    )
    close = [p for p in themselves if corr[p] >= 0.95 and corr_detail[p] >= 0.55]

    def describe(a: int, b: int) -> dict[str, Any]:
        shared = {label for label, _ in by_original[a]} & {label for label, _ in by_original[b]}
        via = [
            [name for x in (a, b) for label, name in by_original[x] if label == component][:8]
            for component in sorted(shared)[:3]
        ]
        return {
            "a": str(originals[a].path),
            "b": str(originals[b].path),
            "thumb_correlation": round(float(corr[a, b]), 3),
            "detail_correlation": round(float(corr_detail[a, b]), 3),
            "hard_negative": sorted(hard.get((a, b), [])),
            "clusters_shared": len(shared),
            "via": via,
        }

    return {
        "pairs_reported": len(pairs),
        **_rates(hits),
        "false_merges": len(merged),
        "false_merge_file_pairs": file_pairs,
        "hard_negative_merges": len(hard_merged),
        "hard_negative_merges_by_kind": {
            kind: sum(kind in kinds for kinds in hard_merged.values()) for kind in HARD_KINDS
        },
        "false_merges_of_the_originals_themselves": len(themselves),
        "originals_themselves_close_to_reference": len(close),
        "originals_in_largest_cluster": max(len(counts) for counts in members.values()),
        "files_in_mixed_clusters_by_transform": dict(in_mixed.most_common()),
        "originals_themselves_merged": [describe(a, b) for a, b in themselves[:20]],
        "false_merge_examples": [
            describe(a, b) for a, b in sorted(merged, key=lambda p: -corr[p])[:20]
        ],
    }


CHECK_TRANSFORMS = ("copy-png", "jpeg-90", "resize-0.5x", "gamma-1.25", "text-marker-letter")


def evaluate(
    method: Method,
    files: list[tuple[int, str, str]],
    hard: dict[tuple[int, int], set[str]],
    position: dict[int, int],
    originals: list[Original],
    corr: np.ndarray,
    corr_detail: np.ndarray,
) -> dict[str, Any]:
    """One method: isolated runs (one per transformation), then the pooled run on all files."""
    if method.find is None:
        return {"status": method.note}
    originals_at = [i for i, (_, t, _) in enumerate(files) if t == "original"]
    file_of = {files[i][0]: i for i in originals_at}
    copies: dict[str, list[int]] = defaultdict(list)
    for i, (_, t, _) in enumerate(files):
        if t != "original":
            copies[t].append(i)

    hits: dict[str, list[int]] = defaultdict(list)
    clean: dict[str, list[int]] = defaultdict(list)
    merges_by_transform: dict[str, int] = {}
    hard_by_kind: Counter[str] = Counter()
    hard_total = 0
    merged_pairs: set[tuple[int, int]] = set()
    missed: dict[str, list[dict[str, Any]]] = {}
    seconds = 0.0
    for transform in TRANSFORMS:
        name = transform.name
        if not copies.get(name):
            continue
        indices = originals_at + copies[name]
        start = time.perf_counter()
        pairs, rejected = method.find(indices)
        seconds += time.perf_counter() - start
        local = {g: k for k, g in enumerate(indices)}
        labels = _components(len(indices), [(local[a], local[b]) for a, b in pairs])
        members: dict[int, set[int]] = defaultdict(set)
        for k, g in enumerate(indices):
            members[int(labels[k])].add(position[files[g][0]])
        joined = {
            pair
            for group in members.values()
            if len(group) > 1
            for pair in combinations(sorted(group), 2)
        }
        merges_by_transform[name] = len(joined)
        merged_pairs |= joined
        for pair in joined:
            if pair in hard:
                hard_total += 1
                hard_by_kind.update(hard[pair])
        lost = []
        for g in copies[name]:
            o = files[g][0]
            a = file_of[o]
            found = bool(labels[local[a]] == labels[local[g]])
            hits[name].append(int(found))
            # Found, and no other original in that cluster: not found by chaining through others.
            clean[name].append(int(found and len(members[int(labels[local[g]])]) == 1))
            if found or rejected is None:
                continue
            numbers = rejected.get((min(a, g), max(a, g)))
            with_other = sorted(
                str(originals[p].path.name)
                for p in members[int(labels[local[g]])]
                if p != position[o]
            )
            lost.append(
                {
                    "original": files[a][2],
                    "copy": files[g][2],
                    "rejected": numbers,  # None: never a candidate
                    "copy_joined_with": with_other[:3],
                }
            )
        if lost:
            missed[name] = lost[:20]

    checked = ""
    if method.check is not None:  # untimed: a mixed subset with exact and near copies
        checked = method.check(originals_at + [i for t in CHECK_TRANSFORMS for i in copies[t]])
    start = time.perf_counter()
    pooled_pairs, _ = method.find(list(range(len(files))))
    pooled_seconds = time.perf_counter() - start
    pooled = score_pooled(pooled_pairs, files, hard, position, originals, corr, corr_detail)
    return {
        "status": "ok",
        "note": "; ".join(x for x in (method.note, checked) if x),
        "seconds": {
            "prepare_once": round(method.prepare_seconds, 2),
            "isolated_find": round(seconds, 2),
            "pooled_find": round(pooled_seconds, 2),
        },
        "isolated": {
            **_rates(hits),
            "clean": _rates(clean),
            "false_merges": sum(merges_by_transform.values()),
            "false_merges_by_transform": {k: v for k, v in merges_by_transform.items() if v},
            "false_merge_original_pairs_distinct": len(merged_pairs),
            "hard_negative_merges": hard_total,
            "hard_negative_merges_by_kind": {k: hard_by_kind[k] for k in HARD_KINDS},
            "missed": missed,
        },
        "pooled": pooled,
    }


REFUSED_FOLDER = "refused-by-decode"
"""Where the copies that the build's decode refuses are moved (out of the methods' folder)."""


def study_generated(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    originals, corr, corr_detail, info = select_originals(args.mirror, args.workers)
    hard_all = hard_negatives(originals, corr, corr_detail)
    chosen = choose(originals, hard_all, args.limit, args.seed)
    timings["reference_and_originals"] = time.perf_counter() - start

    start = time.perf_counter()
    tasks = [
        (originals[p].index, str(originals[p].path), str(folder), args.seed, args.max_side)
        for p in chosen
    ]
    made = _map(_make_files, tasks, args.workers)
    timings["generate"] = time.perf_counter() - start
    # An original the build's decode refuses can never be in a dataset: out of the selection.
    refused_originals = [
        {"original": str(originals[p].path), "reason": why}
        for p, (_, why) in zip(chosen, made, strict=True)
        if why
    ]
    if refused_originals:
        print(
            f"dedup_study: {len(refused_originals)} of {len(chosen)} originals dropped, refused "
            f"by the build's decode: {refused_originals[:5]}",
            file=sys.stderr,
        )
    chosen = [p for p, (_, why) in zip(chosen, made, strict=True) if not why]
    generated = [record for batch, _ in made for record in batch]

    subset = [originals[p] for p in chosen]
    sub = np.ix_(chosen, chosen)
    corr, corr_detail = corr[sub], corr_detail[sub]
    renumber = {old: new for new, old in enumerate(chosen)}
    hard = {
        (renumber[a], renumber[b]): kinds
        for (a, b), kinds in hard_all.items()
        if a in renumber and b in renumber
    }
    position = {o.index: p for p, o in enumerate(subset)}

    # The build's decode of every generated file, once (the cache that ``ours`` searches). A copy
    # it refuses (e.g. a side under MIN_SIDE) can be neither a leak nor a duplicate: it is moved
    # out of the folder, left out of every method's sets and counted per transformation.
    start = time.perf_counter()
    refusals = ours_decode_all([folder / name for _, _, name in generated], args.workers)
    timings["build_decode_check"] = time.perf_counter() - start
    files = [record for record in generated if str(folder / record[2]) not in refusals]
    refused = [record for record in generated if str(folder / record[2]) in refusals]
    assert not any(t == "original" for _, t, _ in refused), "originals were checked when written"
    assert len(files) + len(refused) == len(generated)
    if refused:
        (folder / REFUSED_FOLDER).mkdir()
        for _, _, name in refused:
            (folder / name).rename(folder / REFUSED_FOLDER / name)
    refused_copies = [
        {
            "copy": name,
            "transform": t,
            "kind": refusals[str(folder / name)].kind,
            "reason": str(refusals[str(folder / name)]),
        }
        for _, t, name in refused
    ]
    paths = [folder / name for _, _, name in files]
    applicable = Counter(t for _, t, _ in files if t != "original")
    refused_by_transform = Counter(t for _, t, _ in refused)

    methods: dict[str, Any] = {}
    for key in args.methods:
        for method in METHODS[key](paths, folder, args.workers):
            methods[method.name] = evaluate(
                method, files, hard, position, subset, corr, corr_detail
            )
    return {
        "originals": {
            **info,
            "used": len(subset),
            "used_by_source": dict(Counter(o.source for o in subset)),
            "rule": (
                f"real copies merged by the reference rule: thumbnail correlation >= "
                f"{REFERENCE_CORRELATION} and detail >= {REFERENCE_DETAIL}, brute force"
            ),
        },
        "hard_negatives": {
            "pairs": len(hard),
            "by_kind": {k: sum(k in v for v in hard.values()) for k in HARD_KINDS},
            "pairs_before_limit": len(hard_all),
            "by_kind_before_limit": {k: sum(k in v for v in hard_all.values()) for k in HARD_KINDS},
        },
        "files": len(files),
        "files_generated": len(generated),
        "refused_by_decode": {
            "rule": (
                "a file the build's decode (covid19_images.process.image.decode_image) refuses "
                "can never enter a dataset, so it is neither a leak nor a duplicate: recall is "
                "over the copies the decode accepts, and every method is scored on those same "
                "copies; refused copies are counted here, apart"
            ),
            "copies": len(refused),
            "copies_by_transform": {
                t.name: refused_by_transform[t.name]
                for t in TRANSFORMS
                if refused_by_transform[t.name]
            },
            "copies_by_kind": dict(Counter(r["kind"] for r in refused_copies)),
            "copies_list": refused_copies,
            "originals": len(refused_originals),
            "originals_list": refused_originals,
        },
        "transforms": [
            {
                "name": t.name,
                "family": t.family,
                "strength": t.strength,
                "pairs": applicable.get(t.name, 0),
                "refused_by_decode": refused_by_transform[t.name],
            }
            for t in TRANSFORMS
        ],
        "methods": methods,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }


def print_generated(result: dict[str, Any]) -> None:
    info, hard = result["originals"], result["hard_negatives"]
    print(
        f"Originals: {info['real_files']} real files ({info['ct_slices_left_out']} ieee8023 CT "
        f"slices left out); {info['files_merged_into_another']} files merged into "
        f"{info['real_copy_clusters']} real-copy clusters ({info['rule']}; "
        f"{info['reference_copy_pairs']} pairs) -> {info['originals']} originals; "
        f"{info['used']} used {info['used_by_source']}."
    )
    kinds = ", ".join(f"{k} {v}" for k, v in hard["by_kind"].items())
    before = ", ".join(f"{k} {v}" for k, v in hard["by_kind_before_limit"].items())
    print(
        f"Hard negatives among them: {hard['pairs']} pairs ({kinds}); "
        f"among all originals: {hard['pairs_before_limit']} ({before})."
    )
    refused = result["refused_by_decode"]
    print(
        f"{result['files_generated']} files generated, {result['files']} scored, "
        f"{refused['copies']} copies refused by decode; times (s): {result['seconds']}"
    )
    kinds = ", ".join(f"{k} {v}" for k, v in refused["copies_by_kind"].items()) or "none"
    print(
        f"Refused by decode: {refused['copies']} copies ({kinds}) and {refused['originals']} "
        "originals (dropped from the selection, with no copies made). The build's decode "
        "refuses them (covid19_images.process.image.decode_image), so they can never enter a "
        "dataset and are neither leaks nor duplicates: RECALL IS OVER THE COPIES THE BUILD "
        "ACCEPTS; refused copies are left out of every method's sets (all methods are scored on "
        "the same accepted copies) and counted in the 'refused' column."
    )
    methods = result["methods"]
    names = list(methods)
    ok = [n for n in names if methods[n]["status"] == "ok"]
    width = max(len(t["name"]) for t in result["transforms"]) + 2
    cols = [max(12, len(n) + 2) for n in names]

    def row(
        label: str, family: str, strength: str, pairs: Any, cells: list[str], refused: Any = ""
    ) -> str:
        text = f"{label:<{width}}{family:<10}{strength:<10}{pairs!s:>6}{refused!s:>9}"
        return text + "".join(f"{c:>{w}}" for c, w in zip(cells, cols, strict=True))

    def cell(name: str, mode: str, key: str, sub: str) -> str:
        m = methods[name]
        if m["status"] != "ok":
            return "n/a"
        value = m[mode][key].get(sub)
        return "-" if value is None else f"{value:.3f}"

    def summary(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        cells = [fn(methods[n]) if methods[n]["status"] == "ok" else "n/a" for n in names]
        print(row(label, "", "", "", cells))

    families = list(dict.fromkeys(t["family"] for t in result["transforms"]))

    def groups(mode: str, indent: str) -> None:
        for family in families:
            cells = [cell(n, mode, "recall_by_family", family) for n in names]
            print(row(f"{indent}family {family}", "", "", "", cells))
        for strength in ("mild", "moderate", "strong"):
            cells = [cell(n, mode, "recall_by_strength", strength) for n in names]
            print(row(f"{indent}strength {strength}", "", "", "", cells))
        cells = [
            f"{methods[n][mode]['recall_all']:.3f}" if methods[n]["status"] == "ok" else "n/a"
            for n in names
        ]
        accepted = sum(t["pairs"] for t in result["transforms"])
        print(row(f"{indent}all copies", "", "", accepted, cells, refused["copies"]))

    print()
    print(
        "ISOLATED recall (the headline): each transformation T run on its own set, all originals "
        "+ their T copies; the fraction of originals whose T copy is in one cluster with it"
    )
    print(
        "  pairs: copies the build's decode accepts (recall is over these); refused: copies it "
        "refuses (not scored)"
    )
    print(row("transformation", "family", "strength", "pairs", names, "refused"))
    for t in result["transforms"]:
        cells = [cell(n, "isolated", "recall", t["name"]) for n in names]
        print(row(t["name"], t["family"], t["strength"], t["pairs"], cells, t["refused_by_decode"]))
    print()
    groups("isolated", "")
    print("Clean isolated recall: found, and no other original in the copy's cluster")
    for family in families:
        cells = [
            f"{methods[n]['isolated']['clean']['recall_by_family'][family]:.3f}"
            if methods[n]["status"] == "ok"
            else "n/a"
            for n in names
        ]
        print(row(f"  family {family}", "", "", "", cells))
    summary("  all copies", lambda m: f"{m['isolated']['clean']['recall_all']:.3f}")
    pairs = info["used"] * (info["used"] - 1) // 2
    print(
        f"Isolated false merges: pairs of different originals (of {pairs}) in one cluster, "
        f"summed over the {sum(1 for t in result['transforms'] if t['pairs'])} isolated sets"
    )
    summary("  all", lambda m: str(m["isolated"]["false_merges"]))
    summary(
        "  distinct original pairs",
        lambda m: str(m["isolated"]["false_merge_original_pairs_distinct"]),
    )
    summary("  hard negatives", lambda m: str(m["isolated"]["hard_negative_merges"]))
    for kind in HARD_KINDS:
        summary(
            f"    {kind}", lambda m, k=kind: str(m["isolated"]["hard_negative_merges_by_kind"][k])
        )
    for name in ok:
        worst = sorted(
            methods[name]["isolated"]["false_merges_by_transform"].items(), key=lambda kv: -kv[1]
        )[:6]
        if worst:
            print(f"  {name}, most: {', '.join(f'{t} {n}' for t, n in worst)}")

    print()
    print(
        "POOLED run (all files in one set, each method run once): recall inflated by chaining "
        "through other copies; false merges over all files"
    )
    groups("pooled", "  ")
    print(
        f"Pooled false merges: pairs of different originals (of {pairs}) with files in one cluster"
    )
    summary("  all", lambda m: str(m["pooled"]["false_merges"]))
    summary(
        f"  hard negatives (of {hard['pairs']})", lambda m: str(m["pooled"]["hard_negative_merges"])
    )
    for kind in HARD_KINDS:
        summary(
            f"    {kind}", lambda m, k=kind: str(m["pooled"]["hard_negative_merges_by_kind"][k])
        )
    summary(
        "  the two originals joined",
        lambda m: str(m["pooled"]["false_merges_of_the_originals_themselves"]),
    )
    summary(
        "    thumb>=.95, detail>=.55",
        lambda m: str(m["pooled"]["originals_themselves_close_to_reference"]),
    )
    summary("  file pairs", lambda m: str(m["pooled"]["false_merge_file_pairs"]))
    summary(
        "originals in largest cluster", lambda m: str(m["pooled"]["originals_in_largest_cluster"])
    )
    print("Time (s)")
    summary("  decode/hash every file once", lambda m: f"{m['seconds']['prepare_once']:.1f}")
    summary("  isolated runs (all)", lambda m: f"{m['seconds']['isolated_find']:.1f}")
    summary("  pooled run", lambda m: f"{m['seconds']['pooled_find']:.1f}")
    for name in names:
        m = methods[name]
        print(f"{name}: {(m.get('note') if m['status'] == 'ok' else m['status']) or '-'}")
        if m["status"] != "ok" or not m["pooled"]["false_merges"]:
            continue
        top = list(m["pooled"]["files_in_mixed_clusters_by_transform"].items())[:5]
        print(f"  pooled, files in mixed clusters, most: {', '.join(f'{t} {n}' for t, n in top)}")
        for pair in m["pooled"]["originals_themselves_merged"][:3]:
            print(
                f"  pooled, joined: {Path(pair['a']).name} + {Path(pair['b']).name} "
                f"(thumb {pair['thumb_correlation']}, detail {pair['detail_correlation']}"
                f"{', ' + '/'.join(pair['hard_negative']) if pair['hard_negative'] else ''})"
            )
    for name in ok:
        missed = methods[name]["isolated"]["missed"]
        if not missed:
            continue
        print()
        print(f"{name}, isolated: missed copies (up to 3 per transformation with recall < 1)")
        for t in result["transforms"]:
            for example in missed.get(t["name"], [])[:3]:
                numbers = example["rejected"]
                why = (
                    "never a candidate"
                    if numbers is None
                    else "rejected: hamming {hamming}, thumb {correlation:.3f}, "
                    "detail {detail:.3f}, aligned {aligned:.3f}".format(**numbers)
                )
                joined = (
                    f"; copy joined with {', '.join(example['copy_joined_with'])}"
                    if example["copy_joined_with"]
                    else ""
                )
                print(f"  {t['name']}: {example['original']} -> {example['copy']}: {why}{joined}")


def _code_version() -> str:
    """The commit this ran on, and whether the package's source differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--short", "src"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" (working tree modified: src)" if changed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path, default=Path("../shared/sources"))
    parser.add_argument("--study", choices=("all", "real", "generated"), default="all")
    parser.add_argument("--limit", type=int, default=150, help="originals used (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, default=1024, help="cap of an original's long side")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, of {','.join(METHODS)}"
    )
    parser.add_argument("--keep", type=Path, help="write the generated files here and keep them")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    parser.add_argument("--json-out", type=Path, help="also write the JSON to this file")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # imagededup's and cleanvision's progress bars
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods: {sorted(unknown)}")

    command = shlex.join(
        ["python", "benchmarks/dedup_study.py", "--study", args.study, "--mirror", str(args.mirror)]
        + ["--limit", str(args.limit), "--seed", str(args.seed), "--max-side", str(args.max_side)]
        + ["--workers", str(args.workers), "--methods", ",".join(args.methods)]
        + (["--json"] if args.json else [])
        + (["--json-out", str(args.json_out)] if args.json_out else [])
    )
    began = time.perf_counter()
    result: dict[str, Any] = {"command": command, "code": _code_version()}
    if args.study in ("all", "real"):
        try:
            result["real"] = study_real(args.mirror)
        except (ImportError, AttributeError, TypeError) as exc:  # the package API moved
            result["real"] = {"status": f"not available: {exc!r}"}
        if not args.json:
            print("== real pairs: the build's test swept over every pair of real files ==")
            if "sweep" in result["real"]:
                print_real(result["real"])
            else:
                print(result["real"]["status"])
            print()
    if args.study in ("all", "generated"):
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            if any(args.keep.iterdir()):
                parser.error(f"--keep {args.keep} is not empty")
            folder = args.keep
        else:
            folder = Path(tempfile.mkdtemp(prefix="dedup-bench-"))
        try:
            result["generated"] = study_generated(args, folder)
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
        if not args.json:
            print("== generated copies: recall per transformation (fraction found) ==")
            print_generated(result["generated"])
    result["seconds"] = round(time.perf_counter() - began, 1)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"\ntotal {result['seconds']} s on code {result['code']}; rerun with:\n  {command}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
