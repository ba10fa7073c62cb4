"""The detail test is what keeps look-alike films of different children apart.

Three paediatric films of the Darshan covid19-detection-xray-dataset (taken from Zhang Lab: one
labelled bacterial, two viral pneumonia, so different children) have whole-frame thumbnails that
correlate above the 0.95 threshold, as chest films of children do. Their whole-frame hashes are
14 and 16 bits apart and their keypoints agree on no map, so the search as the build runs it
does not even test them; with the radius widened, it does, and only their detail (ribs, tubes,
lesions: the thumbnail minus its blur) tells them apart. Both numbers are computed here with
numpy and Pillow, not with the package, so a search that confirmed candidates on correlation
alone would merge them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from covid19_images.dedup.near import DEFAULT_MIN_CORRELATION, DEFAULT_MIN_DETAIL, find_duplicates
from covid19_images.process.image import Decoded, decode_image

DARSHAN = "covid19-detection-xray-dataset/covid19-detection-xray-dataset/NonAugmentedTrain"
FILMS = ["BacterialPneumonia/277.jpeg", "ViralPneumonia/232.jpeg", "ViralPneumonia/339.jpeg"]
LOOK_ALIKE = [(0, 1), (0, 2)]
"""Pairs whose whole-frame thumbnails correlate at 0.956 and 0.952 (measured)."""


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def _fine(thumb: np.ndarray) -> np.ndarray:
    """The thumbnail minus its Gaussian blur (radius 2), as docs/deduplication.md defines detail."""
    blurred = Image.fromarray(thumb.astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    return thumb.astype(np.float64) - np.asarray(blurred, dtype=np.float64)


def _bits(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


@pytest.fixture(scope="module")
def films(shared_sources: Path) -> list[Decoded]:
    paths = [shared_sources / DARSHAN / name for name in FILMS]
    missing = [p for p in paths if not p.is_file()]
    assert not missing, f"the mirror lacks the Darshan films this test is about: {missing}"
    decoded = [decode_image(p, sizes=(224,)) for p in paths]
    for path, d in zip(paths, decoded, strict=True):
        assert d.thumb is not None and d.signature is not None and d.content is not None, path
    return decoded


def test_the_films_are_distinct_but_correlate_above_the_threshold(films: list[Decoded]) -> None:
    assert len({d.sha256_pixels for d in films}) == len(films)
    for i, j in LOOK_ALIKE:
        a, b = films[i].thumb, films[j].thumb
        assert a is not None and b is not None
        assert _pearson(a, b) >= DEFAULT_MIN_CORRELATION, FILMS[i] + " / " + FILMS[j]
        assert _pearson(_fine(a), _fine(b)) < DEFAULT_MIN_DETAIL, FILMS[i] + " / " + FILMS[j]


def test_look_alike_films_are_not_merged_as_the_build_searches(films: list[Decoded]) -> None:
    report = find_duplicates(
        [d.sha256_pixels for d in films],
        [d.phash for d in films],
        lambda i: films[i].thumb,
        signatures=[d.signature for d in films],
        content=lambda i: films[i].content,
    )
    tested = {(p.a, p.b): p for p in report.rejected}
    for i, j in LOOK_ALIKE:
        pair = tested.get((i, j))
        if pair is not None:  # tested (not a candidate: their keypoints agree on no map)
            assert pair.correlation >= DEFAULT_MIN_CORRELATION, pair
            assert pair.detail < DEFAULT_MIN_DETAIL, pair
    assert report.pairs == [], report.pairs
    assert report.clusters == []


def test_look_alike_films_within_the_hamming_radius_are_not_merged(films: list[Decoded]) -> None:
    # Whole frames only: with the radius widened to take in the pairs' own distances (14 and 16
    # bits), both are candidates of the whole-frame test, which must reject them on detail.
    hashes = [int(str(d.phash), 16) for d in films]
    radius = max(_bits(hashes[i], hashes[j]) for i, j in LOOK_ALIKE)
    assert radius <= 16
    report = find_duplicates(
        [d.sha256_pixels for d in films],
        [d.phash for d in films],
        lambda i: films[i].thumb,
        max_hamming=radius,
    )
    tested = {(p.a, p.b): p for p in report.rejected}
    for i, j in LOOK_ALIKE:
        pair = tested.get((i, j))
        assert pair is not None, f"{FILMS[i]} / {FILMS[j]} is not a whole-frame candidate"
        assert pair.hamming == _bits(hashes[i], hashes[j])
        assert pair.correlation >= DEFAULT_MIN_CORRELATION, pair
    assert report.clusters == []


def test_a_real_copy_of_one_of_them_is_still_merged(
    shared_sources: Path, films: list[Decoded], tmp_path: Path
) -> None:
    # The detail test does not reject everything: a JPEG re-encode of 277 is its copy.
    copy = tmp_path / "277-q80.jpg"
    with Image.open(shared_sources / DARSHAN / FILMS[0]) as img:
        img.convert("L").save(copy, "JPEG", quality=80)
    both = [films[0], decode_image(copy, sizes=(224,)), films[1]]
    report = find_duplicates(
        [d.sha256_pixels for d in both],
        [d.phash for d in both],
        lambda i: both[i].thumb,
        signatures=[d.signature for d in both],
        content=lambda i: both[i].content,
    )
    assert report.clusters == [[0, 1]]
