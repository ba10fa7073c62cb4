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
- *Hard negatives*, different films that must stay apart: follow-up films (and other views) of
  one ieee8023 patient (``metadata.csv``: ``patientid``), several films of one Zhang Lab child
  (the id in the file name), and look-alike children (distinct Zhang Lab / Darshan children's
  films whose whole-frame thumbnails correlate >= 0.9).
- *Methods*, run on the same files: ``ours`` (this package, see :func:`ours`), imagededup's
  ``PHash`` (its default Hamming threshold 10, and a looser 15) and cleanvision's
  ``near_duplicates`` check. For each: recall per transformation, family and strength (the
  fraction of (original, copy) pairs in one cluster, clusters being the connected components of
  the pairs it reports), false merges (pairs of different originals with files in one cluster:
  all, hard negatives, those where the two originals themselves are joined, and those the method
  reported directly) and the time it took (decoding included, imports not).

A false merge that joins two originals with thumbnails >= 0.95 and detail >= 0.55 is most likely
a real copy that the reference rule (0.97 / 0.7) did not merge: the output lists the joined pairs.

Run from the repository root (``pip install -e ".[dev,bench]"``)::

    python benchmarks/dedup_study.py                                  # both studies, a table
    python benchmarks/dedup_study.py --study generated --limit 30    # a quick run
    python benchmarks/dedup_study.py --json                           # every figure, as JSON

The defaults (250 originals, about 11,500 files, ``--workers`` = the CPUs available) take about
6.5 minutes on 2 cores. ``--limit 0`` uses every original. The choice of originals is seeded
(``--seed``): up to half come from hard-negative pairs, the rest at random. Generated files go to
a temporary folder that is deleted at the end (``--keep DIR`` keeps them). ``--json-out FILE``
writes the JSON next to the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
import shlex
import shutil
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
# "ours": the package's copy finder. The ONE place that calls the package's dedup API; swap its
# body when that API changes. Everything else only sees file paths in, index pairs out.
# ---------------------------------------------------------------------------------------------


def _ours_decode(path: Path) -> tuple[str, str, np.ndarray, Any, np.ndarray]:
    from covid19_images.process.image import decode_image

    decoded = decode_image(path, sizes=(224,))
    assert decoded.thumb is not None and decoded.content is not None
    return (
        decoded.sha256_pixels,
        decoded.phash,
        decoded.thumb,
        decoded.signature,
        decoded.content,
    )


def ours(paths: list[Path], workers: int = 1) -> list[tuple[int, int]]:
    """Pairs of indices into ``paths`` that the package judges copies of one film."""
    from covid19_images.dedup.near import find_duplicates

    decoded = _map(_ours_decode, paths, workers)
    report = find_duplicates(
        [d[0] for d in decoded],
        [d[1] for d in decoded],
        lambda i: decoded[i][2],
        signatures=[d[3] for d in decoded],
        content=lambda i: decoded[i][4],
    )
    return [(pair.a, pair.b) for pair in report.pairs]


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


def _make_files(task: tuple[int, str, str, int, int]) -> list[tuple[int, str, str]]:
    """Write one original and all its copies; (original index, transform, file name) each."""
    index, source_path, out_dir, seed, max_side = task
    img = _working_copy(Path(source_path), max_side)
    stem = f"o{index:04d}"
    name = f"{stem}__original.png"
    img.save(Path(out_dir) / name, "PNG", **PNG)
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
    return written


# ---------------------------------------------------------------------------------------------
# Methods compared: each takes the folder and its files, returns index pairs (or why not).
# ---------------------------------------------------------------------------------------------


@dataclass
class MethodRun:
    name: str
    pairs: list[tuple[int, int]] | None
    seconds: float
    note: str = ""


def run_ours(paths: list[Path], folder: Path, workers: int) -> list[MethodRun]:
    start = time.perf_counter()
    try:
        pairs = ours(paths, workers)
    except ImportError as exc:
        return [MethodRun("ours", None, 0.0, f"not available: {exc}")]
    return [MethodRun("ours", pairs, time.perf_counter() - start)]


IMAGEDEDUP_THRESHOLDS = (10, 15)  # imagededup's default max_distance_threshold, and a looser one


def run_imagededup(paths: list[Path], folder: Path, workers: int) -> list[MethodRun]:
    start = time.perf_counter()
    try:
        from imagededup.methods import PHash  # imports torch: timed apart
    except ImportError:
        return [
            MethodRun(f"imagededup-{t}", None, 0.0, "not installed") for t in IMAGEDEDUP_THRESHOLDS
        ]
    imported = time.perf_counter() - start
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("imagededup"):  # it logs every search at INFO on stderr
            logging.getLogger(name).setLevel(logging.WARNING)
    index = {path.name: i for i, path in enumerate(paths)}
    hasher = PHash(verbose=False)
    start = time.perf_counter()
    encodings = hasher.encode_images(image_dir=folder, num_enc_workers=workers)
    encoded = time.perf_counter() - start
    failed = sorted(name for name, value in encodings.items() if not value)
    encodings = {name: value for name, value in encodings.items() if value}
    runs = []
    for threshold in IMAGEDEDUP_THRESHOLDS:
        start = time.perf_counter()
        with warnings.catch_warnings():  # "num_enc_workers has no effect", though not given
            warnings.simplefilter("ignore", RuntimeWarning)
            found = hasher.find_duplicates(
                encoding_map=encodings,
                max_distance_threshold=threshold,
                num_dist_workers=workers,
            )
        pairs = {
            (min(index[a], index[b]), max(index[a], index[b]))
            for a, others in found.items()
            for b in others
        }
        note = f"hashing {encoded:.1f} s (+ import {imported:.1f} s, not counted)"
        if failed:
            note += f"; {len(failed)} files not hashed"
        runs.append(
            MethodRun(
                f"imagededup-{threshold}",
                sorted(pairs),
                encoded + time.perf_counter() - start,
                note,
            )
        )
    return runs


def run_cleanvision(paths: list[Path], folder: Path, workers: int) -> list[MethodRun]:
    start = time.perf_counter()
    try:
        from cleanvision import Imagelab
    except ImportError:
        return [MethodRun("cleanvision", None, 0.0, "not installed")]
    imported = time.perf_counter() - start
    index = {path.name: i for i, path in enumerate(paths)}
    start = time.perf_counter()
    lab = Imagelab(data_path=str(folder), verbose=False)
    lab.find_issues({"near_duplicates": {}}, n_jobs=workers, verbose=False)
    # Near sets that equal an exact set are dropped from "near_duplicates": take both.
    sets = lab.info["near_duplicates"]["sets"] + lab.info["exact_duplicates"]["sets"]
    pairs = {
        (
            min(index[Path(a).name], index[Path(b).name]),
            max(index[Path(a).name], index[Path(b).name]),
        )
        for group in sets
        for a, b in combinations(group, 2)
    }
    note = f"identical 64-bit pHash, exact sets included (+ import {imported:.1f} s, not counted)"
    return [MethodRun("cleanvision", sorted(pairs), time.perf_counter() - start, note)]


METHODS: dict[str, Callable[[list[Path], Path, int], list[MethodRun]]] = {
    "ours": run_ours,
    "imagededup": run_imagededup,
    "cleanvision": run_cleanvision,
}


# ---------------------------------------------------------------------------------------------
# Scoring.
# ---------------------------------------------------------------------------------------------


def score(
    run: MethodRun,
    files: list[tuple[int, str, str]],
    hard: dict[tuple[int, int], set[str]],
    position: dict[int, int],
    originals: list[Original],
    corr: np.ndarray,
    corr_detail: np.ndarray,
) -> dict[str, Any]:
    """Recall per transformation / family / strength, false merges and time of one method."""
    if run.pairs is None:
        return {"status": run.note}
    labels = _components(len(files), run.pairs)
    original_file = {o: i for i, (o, t, _) in enumerate(files) if t == "original"}
    family = {t.name: t.family for t in TRANSFORMS}
    strength = {t.name: t.strength for t in TRANSFORMS}
    reported = {(min(a, b), max(a, b)) for a, b in run.pairs}
    hits: dict[str, list[int]] = defaultdict(list)
    direct_hits: dict[str, list[int]] = defaultdict(list)
    for i, (o, t, _) in enumerate(files):
        if t != "original":
            j = original_file[o]
            hits[t].append(int(labels[i] == labels[j]))
            direct_hits[t].append(int((min(i, j), max(i, j)) in reported))

    def rate(groups: dict[str, list[int]]) -> dict[str, float]:
        return {k: round(sum(v) / len(v), 4) for k, v in groups.items() if v}

    by_family: dict[str, list[int]] = defaultdict(list)
    by_strength: dict[str, list[int]] = defaultdict(list)
    by_both: dict[str, list[int]] = defaultdict(list)
    for t, values in hits.items():
        by_family[family[t]] += values
        by_strength[strength[t]] += values
        by_both[f"{family[t]}/{strength[t]}"] += values
    all_hits = [v for values in hits.values() for v in values]
    # The same pairs counted only when the method reported them itself (no chaining through
    # other files): a method whose clusters chain everything together scores high recall above.
    direct_family: dict[str, list[int]] = defaultdict(list)
    for t, values in direct_hits.items():
        direct_family[family[t]] += values
    all_direct = [v for values in direct_hits.values() for v in values]

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
    # Pairs the method itself reported between files of different originals (before clustering).
    origin = [position[o] for o, _, _ in files]
    direct = {
        (min(origin[a], origin[b]), max(origin[a], origin[b]))
        for a, b in run.pairs
        if origin[a] != origin[b]
    }
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
        "status": "ok",
        "note": run.note,
        "seconds": round(run.seconds, 2),
        "pairs_reported": len(run.pairs),
        "recall_all": round(sum(all_hits) / len(all_hits), 4),
        "recall": rate(hits),
        "recall_by_family": rate(by_family),
        "recall_by_strength": rate(by_strength),
        "recall_by_family_strength": rate(by_both),
        "recall_direct_all": round(sum(all_direct) / len(all_direct), 4),
        "recall_direct": rate(direct_hits),
        "recall_direct_by_family": rate(direct_family),
        "false_merges": len(merged),
        "false_merge_file_pairs": file_pairs,
        "hard_negative_merges": len(hard_merged),
        "hard_negative_merges_by_kind": {
            kind: sum(kind in kinds for kinds in hard_merged.values()) for kind in HARD_KINDS
        },
        "false_merges_of_the_originals_themselves": len(themselves),
        "originals_themselves_close_to_reference": len(close),
        "original_pairs_reported_directly": len(direct),
        "file_pairs_reported_across_originals": sum(
            1 for a, b in run.pairs if origin[a] != origin[b]
        ),
        "originals_in_largest_cluster": max(len(counts) for counts in members.values()),
        "files_in_mixed_clusters_by_transform": dict(in_mixed.most_common()),
        "originals_themselves_merged": [describe(a, b) for a, b in themselves[:20]],
        "false_merge_examples": [
            describe(a, b) for a, b in sorted(merged, key=lambda p: -corr[p])[:20]
        ],
    }


def study_generated(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    originals, corr, corr_detail, info = select_originals(args.mirror, args.workers)
    hard_all = hard_negatives(originals, corr, corr_detail)
    chosen = choose(originals, hard_all, args.limit, args.seed)
    timings["reference_and_originals"] = time.perf_counter() - start

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

    start = time.perf_counter()
    tasks = [(o.index, str(o.path), str(folder), args.seed, args.max_side) for o in subset]
    files = [record for batch in _map(_make_files, tasks, args.workers) for record in batch]
    timings["generate"] = time.perf_counter() - start
    paths = [folder / name for _, _, name in files]
    applicable = Counter(t for _, t, _ in files if t != "original")

    methods: dict[str, Any] = {}
    for key in args.methods:
        for run in METHODS[key](paths, folder, args.workers):
            methods[run.name] = score(run, files, hard, position, subset, corr, corr_detail)
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
        "transforms": [
            {
                "name": t.name,
                "family": t.family,
                "strength": t.strength,
                "pairs": applicable.get(t.name, 0),
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
    print(f"{result['files']} files; times (s): {result['seconds']}")
    methods = result["methods"]
    names = list(methods)
    width = max(len(t["name"]) for t in result["transforms"]) + 2
    cols = [max(12, len(n) + 2) for n in names]

    def row(label: str, family: str, strength: str, pairs: Any, cells: list[str]) -> str:
        text = f"{label:<{width}}{family:<10}{strength:<10}{pairs!s:>6}"
        return text + "".join(f"{c:>{w}}" for c, w in zip(cells, cols, strict=True))

    def cell(name: str, key: str, sub: str) -> str:
        m = methods[name]
        if m["status"] != "ok":
            return "n/a"
        value = m[key].get(sub)
        return "-" if value is None else f"{value:.3f}"

    print()
    print(row("transformation", "family", "strength", "pairs", names))
    for t in result["transforms"]:
        cells = [cell(n, "recall", t["name"]) for n in names]
        print(row(t["name"], t["family"], t["strength"], t["pairs"], cells))
    print()
    for family in dict.fromkeys(t["family"] for t in result["transforms"]):
        cells = [cell(n, "recall_by_family", family) for n in names]
        print(row(f"family {family}", "", "", "", cells))
    for strength in ("mild", "moderate", "strong"):
        cells = [cell(n, "recall_by_strength", strength) for n in names]
        print(row(f"strength {strength}", "", "", "", cells))

    def summary(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        cells = [fn(methods[n]) if methods[n]["status"] == "ok" else "n/a" for n in names]
        print(row(label, "", "", "", cells))

    pairs = info["used"] * (info["used"] - 1) // 2
    summary("recall, all copies", lambda m: f"{m['recall_all']:.3f}")
    print("Recall counting only pairs the method reported itself (no chaining through clusters)")
    for family in dict.fromkeys(t["family"] for t in result["transforms"]):
        cells = [cell(n, "recall_direct_by_family", family) for n in names]
        print(row(f"  family {family}", "", "", "", cells))
    summary("  all copies", lambda m: f"{m['recall_direct_all']:.3f}")
    print(f"False merges: pairs of different originals (of {pairs}) with files in one cluster")
    summary("  all", lambda m: str(m["false_merges"]))
    summary(f"  hard negatives (of {hard['pairs']})", lambda m: str(m["hard_negative_merges"]))
    for kind in HARD_KINDS:
        summary(f"    {kind}", lambda m, k=kind: str(m["hard_negative_merges_by_kind"][k]))
    summary(
        "  the two originals joined", lambda m: str(m["false_merges_of_the_originals_themselves"])
    )
    summary(
        "    thumb>=.95, detail>=.55", lambda m: str(m["originals_themselves_close_to_reference"])
    )
    summary("  reported directly", lambda m: str(m["original_pairs_reported_directly"]))
    summary("  file pairs", lambda m: str(m["false_merge_file_pairs"]))
    summary("originals in largest cluster", lambda m: str(m["originals_in_largest_cluster"]))
    summary("time (s)", lambda m: f"{m['seconds']:.1f}")
    for name in names:
        m = methods[name]
        note = m.get("note") if m["status"] == "ok" else m["status"]
        print(f"{name}: {note or '-'}")
        if m["status"] != "ok" or not m["false_merges"]:
            continue
        top = list(m["files_in_mixed_clusters_by_transform"].items())[:5]
        print(f"  files in mixed clusters, most: {', '.join(f'{t} {n}' for t, n in top)}")
        for pair in m["originals_themselves_merged"][:3]:
            print(
                f"  joined: {Path(pair['a']).name} + {Path(pair['b']).name} "
                f"(thumb {pair['thumb_correlation']}, detail {pair['detail_correlation']}"
                f"{', ' + '/'.join(pair['hard_negative']) if pair['hard_negative'] else ''})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path, default=Path("../shared/sources"))
    parser.add_argument("--study", choices=("all", "real", "generated"), default="all")
    parser.add_argument("--limit", type=int, default=250, help="originals used (0: all)")
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
    result: dict[str, Any] = {"command": command}
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
        print(f"\ntotal {result['seconds']} s; rerun with:\n  {command}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
