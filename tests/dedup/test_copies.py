"""The copy search on real radiographs: copies made here are found, other films are not merged.

Six real films of ``../shared/sources`` (two ieee8023, two Figure 1, two Zhang Lab) are copied
in ``tmp_path`` the way collections copy each other: a wide black pillarbox, a white band on top,
one-sided and symmetric crops, a squeeze to 299 x 299, a JPEG re-encode and a burnt-in text
line. Every copy must share a cluster with its original, and no two originals may be merged.
The hard negatives are follow-up films of one ieee8023 patient and films of different children.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from covid19_images.dedup.near import DuplicateReport, Pair, find_duplicates
from covid19_images.process.image import decode_image

IEEE = "ieee8023-covid-chestxray"
ZHANG = "zhanglab-chest-xrays/chest_xray/train"

ORIGINALS = {
    "ieee-278": f"{IEEE}/images/000002-11-a.jpg",
    "ieee-283": f"{IEEE}/images/000001-17.jpg",
    "figure1-00001": "figure1-covid-chestxray/images/COVID-00001.jpg",
    "figure1-00004": "figure1-covid-chestxray/images/COVID-00004.jpg",
    "zhang-normal": f"{ZHANG}/NORMAL/NORMAL2-IM-0468-0001.jpeg",
    "zhang-pneumonia": f"{ZHANG}/PNEUMONIA/person35_bacteria_180.jpeg",
}


def _pad(img: Image.Image, left: float, top: float, right: float, colour: int) -> Image.Image:
    w, h = img.size
    lw, rw, th = round(left * w), round(right * w), round(top * h)
    out = Image.new("L", (w + lw + rw, h + th), colour)
    out.paste(img, (lw, th))
    return out


def _crop(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(left * w), round(top * h), w - round(right * w), h - round(bottom * h)))


def _text(img: Image.Image) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    size = max(8, round(0.045 * out.height))
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        font = ImageFont.load_default()
    text = "2020-03-14  08:41  AP PORTABLE  RADIOLOGY DEPT"
    left, top, right, _ = draw.textbbox((0, 0), text, font=font)
    while right - left > 0.9 * out.width and size > 8:
        size = max(8, int(size * 0.85))
        try:
            font = ImageFont.load_default(size=size)
        except (TypeError, OSError):
            break
        left, top, right, _ = draw.textbbox((0, 0), text, font=font)
    draw.text((round(0.03 * out.width) - left, round(0.02 * out.height) - top), text, 250, font)
    return out


@dataclass(frozen=True)
class Copy:
    name: str
    make: Callable[[Image.Image], Image.Image]
    suffix: str = ".png"
    quality: int = 95


COPIES = [
    Copy("pillarbox-black-30pct", lambda im: _pad(im, 0.3, 0.0, 0.3, 0)),
    Copy("white-band-top", lambda im: _pad(im, 0.0, 0.2, 0.0, 255)),
    Copy("crop-left20-top10", lambda im: _crop(im, 0.2, 0.1, 0.0, 0.0)),
    Copy("crop-sym-25pct", lambda im: _crop(im, 0.25, 0.25, 0.25, 0.25)),
    Copy("resize-299x299", lambda im: im.resize((299, 299), Image.Resampling.LANCZOS)),
    Copy("jpeg-q50", lambda im: im, ".jpg", 50),
    Copy("text-line", _text, ".jpg", 95),
]


@dataclass
class Found:
    names: list[str]
    report: DuplicateReport

    def cluster_of(self, name: str) -> set[str]:
        i = self.names.index(name)
        for cluster in self.report.clusters:
            if i in cluster:
                return {self.names[k] for k in cluster}
        return {name}

    def pair(self, a: str, b: str) -> Pair | None:
        i, j = sorted((self.names.index(a), self.names.index(b)))
        for pair in [*self.report.pairs, *self.report.rejected]:
            if (pair.a, pair.b) == (i, j):
                return pair
        return None


def _search(paths: list[Path], names: list[str]) -> Found:
    """``find_duplicates`` with signatures and content, as the build and the benchmark call it."""
    decoded = [decode_image(p, sizes=(224,)) for p in paths]
    for path, d in zip(paths, decoded, strict=True):
        assert d.thumb is not None and d.content is not None and d.signature is not None, path
    report = find_duplicates(
        [d.sha256_pixels for d in decoded],
        [d.phash for d in decoded],
        lambda i: decoded[i].thumb,
        signatures=[d.signature for d in decoded],
        content=lambda i: decoded[i].content,
    )
    return Found(names, report)


def _real(shared_sources: Path, relative: str) -> Path:
    path = shared_sources / relative
    if not path.is_file():
        pytest.skip(f"real file absent: {path}")
    return path


@pytest.fixture(scope="module")
def copies_found(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Found:
    out = tmp_path_factory.mktemp("copies")
    paths: list[Path] = []
    names: list[str] = []
    for key, relative in ORIGINALS.items():
        original = _real(shared_sources, relative)
        paths.append(original)
        names.append(key)
        with Image.open(original) as img:
            if img.mode in ("RGBA", "LA", "PA"):
                white = Image.new("RGBA", img.size, (255, 255, 255, 255))
                grey = Image.alpha_composite(white, img.convert("RGBA")).convert("L")
            else:
                grey = img.convert("L")
        for copy in COPIES:
            target = out / f"{key}--{copy.name}{copy.suffix}"
            made = copy.make(grey)
            if copy.suffix == ".jpg":
                made.save(target, "JPEG", quality=copy.quality)
            else:
                made.save(target)
            paths.append(target)
            names.append(f"{key}--{copy.name}")
    return _search(paths, names)


def _explain(found: Found, a: str, b: str) -> str:
    pair = found.pair(a, b)
    if pair is None:
        return f"{a} / {b}: never a candidate"
    verdict = "confirmed" if pair in found.report.pairs else "rejected"
    return (
        f"{a} / {b}: {verdict}, hamming={pair.hamming} correlation={pair.correlation} "
        f"detail={pair.detail} aligned={pair.aligned}"
    )


@pytest.mark.parametrize("copy", [c.name for c in COPIES])
@pytest.mark.parametrize("original", list(ORIGINALS))
def test_copy_shares_a_cluster_with_its_original(
    copies_found: Found, original: str, copy: str
) -> None:
    name = f"{original}--{copy}"
    cluster = copies_found.cluster_of(original)
    assert name in cluster, _explain(copies_found, original, name)


def test_no_two_originals_are_merged(copies_found: Found) -> None:
    owners = {}
    for key in ORIGINALS:
        cluster = frozenset(copies_found.cluster_of(key))
        owners.setdefault(cluster, []).append(key)
    merged = [keys for keys in owners.values() if len(keys) > 1]
    assert not merged, [
        _explain(copies_found, a, b) for keys in merged for a in keys for b in keys if a < b
    ]


def test_every_cluster_holds_the_copies_of_one_original(copies_found: Found) -> None:
    for cluster in copies_found.report.clusters:
        owners = {copies_found.names[i].split("--")[0] for i in cluster}
        assert len(owners) == 1, sorted(copies_found.names[i] for i in cluster)


def _patient_films(shared_sources: Path, patient: str) -> list[str]:
    metadata = _real(shared_sources, f"{IEEE}/metadata.csv")
    with metadata.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["patientid"] == patient]
    images = shared_sources / IEEE / "images"
    return [row["filename"] for row in rows if (images / row["filename"]).is_file()]


def test_follow_up_films_of_one_patient_are_not_merged(shared_sources: Path) -> None:
    wanted = ["289cb15b.jpg", "f0864aff.jpg", "02b76460.jpg"]
    present = _patient_films(shared_sources, "253")
    missing = [name for name in wanted if name not in present]
    if missing:
        pytest.skip(f"ieee8023 patient 253 films absent from the mirror: {missing}")
    found = _search([shared_sources / IEEE / "images" / name for name in wanted], wanted)
    assert found.report.clusters == [], [
        _explain(found, a, b) for a in wanted for b in wanted if a < b
    ]


def test_films_of_different_children_are_not_merged(shared_sources: Path) -> None:
    wanted = [
        "NORMAL/NORMAL2-IM-0468-0001.jpeg",
        "NORMAL/NORMAL2-IM-0736-0001.jpeg",
        "PNEUMONIA/person35_bacteria_180.jpeg",
        "PNEUMONIA/person1003_virus_1685.jpeg",
    ]
    paths = [_real(shared_sources, f"{ZHANG}/{name}") for name in wanted]
    found = _search(paths, wanted)
    assert found.report.clusters == [], [
        _explain(found, a, b) for a in wanted for b in wanted if a < b
    ]


def test_a_cached_search_answers_new_splits_as_a_fresh_one_without_new_pixel_tests(
    shared_sources: Path, tmp_path: Path
) -> None:
    """The build's leak-free split audits one set of images under several splits: with a
    ``cache``, the candidates and verdicts of one round serve the next ones, and the answer is
    a fresh search's."""
    paths: list[Path] = []
    for key in ("ieee-278", "figure1-00001", "zhang-normal"):
        original = _real(shared_sources, ORIGINALS[key])
        paths.append(original)
        with Image.open(original) as img:
            grey = img.convert("L")
        for copy in (COPIES[0], COPIES[-1]):
            target = tmp_path / f"{key}--{copy.name}{copy.suffix}"
            copy.make(grey).save(target, "JPEG" if copy.suffix == ".jpg" else None)
            paths.append(target)
    decoded = [decode_image(p, sizes=(224,)) for p in paths]
    loads: list[int] = []

    def thumbnail(i: int) -> Any:
        loads.append(i)
        return decoded[i].thumb

    def content(i: int) -> Any:
        loads.append(i)
        return decoded[i].content

    def search(splits: list[str], cache: dict[str, Any] | None) -> DuplicateReport:
        return find_duplicates(
            [None] * len(decoded),
            [d.phash for d in decoded],
            thumbnail,
            signatures=[d.signature for d in decoded],
            content=content,
            only_across=splits,
            cache=cache,
        )

    def found(report: DuplicateReport) -> tuple[list[Any], list[Any]]:
        return (
            [(p.a, p.b, p.correlation, p.aligned) for p in report.pairs],
            [(p.a, p.b, p.correlation, p.aligned) for p in report.rejected],
        )

    cache: dict[str, Any] = {}
    first = ["a", "b", "a"] * 3  # every original's copies on both sides
    assert found(search(first, cache)) == found(search(first, None))
    assert found(search(first, None))[0], "the copies must be found across the split"
    # the same pairs cross with the split names swapped: no pixel is loaded again
    swapped = ["b" if s == "a" else "a" for s in first]
    before = len(loads)
    assert found(search(swapped, cache)) == found(search(swapped, None))
    fresh_loads = len(loads) - before
    before = len(loads)
    search(swapped, cache)
    assert len(loads) == before and fresh_loads > 0
    # other splits: the same answer as a fresh search
    for splits in (["a"] * 6 + ["b"] * 3, ["a", "a", "b"] * 3):
        assert found(search(splits, cache)) == found(search(splits, None))
