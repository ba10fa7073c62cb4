"""Patients linked through a dropped copy share a split.

Film A of patient p1 is kept; A' (patient p2) is a copy of A that deduplication dropped; B is
another film of p2. p1 and p2 are one person under two ids, so A and B must land on one side:
the split groups are made from every record before deduplication (``everything=``), not only
from the kept ones.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from PIL import Image

from covid19_images.assemble.build import build
from covid19_images.assemble.recipe import Recipe, load_recipe
from covid19_images.assemble.splits import merge_groups, split_records
from covid19_images.process.executor import LocalExecutor
from covid19_images.records import Record

SEEDS = range(40)


def _record(name: str, patient: str, label: str = "covid19", cluster: str | None = None) -> Record:
    attributes = {"dup_cluster": cluster} if cluster else {}
    return Record(
        source="test-source",
        path_raw=f"images/{name}.png",
        patient_id=f"test-source:{patient}",
        label=label,
        modality="XR",
        view="PA",
        attributes=attributes,
    )


def _fixture() -> tuple[Record, Record, Record, list[Record]]:
    a = _record("A", "p1", cluster="k1")
    a_copy = _record("A-copy", "p2", cluster="k1")
    b = _record("B", "p2")
    fillers = [_record(f"f{i}", f"q{i}", label="covid19" if i % 2 else "normal") for i in range(12)]
    return a, a_copy, b, fillers


def test_a_dropped_copy_links_its_patient_with_the_kept_copys_patient() -> None:
    recipe = load_recipe("xray-covid")
    a, a_copy, b, fillers = _fixture()
    kept = [a, b, *fillers]
    everything = [a, a_copy, b, *fillers]
    classes = {r.uid: r.label for r in everything}
    old_apart = []
    for seed in SEEDS:
        splits = split_records(recipe, kept, classes, False, seed, everything=everything)
        assert len(splits) == len(kept)
        assert splits[0] == splits[1], f"seed {seed}: A in {splits[0]}, B in {splits[1]}"
        old = split_records(recipe, kept, classes, False, seed)
        if old[0] != old[1]:
            old_apart.append(seed)
    # Without the dropped copy the two patients are unrelated and some seed parts them: the
    # test above would catch a build that forgot ``everything``.
    assert old_apart, "the kept records alone never parted A and B: the test shows nothing"


def test_kept_records_missing_from_everything_are_their_own_group() -> None:
    recipe = load_recipe("xray-covid")
    a, a_copy, b, fillers = _fixture()
    late = _record("late", "p9")
    kept = [a, b, late, *fillers]
    everything = [a, a_copy, b, *fillers]
    classes = {r.uid: r.label for r in [*everything, late]}
    for seed in range(5):
        splits = split_records(recipe, kept, classes, False, seed, everything=everything)
        assert splits[0] == splits[1]
        assert splits[2] in {"train", "val", "test"}


def test_links_put_kept_records_on_one_side() -> None:
    recipe = load_recipe("xray-covid")
    _, _, _, fillers = _fixture()
    classes = {r.uid: r.label for r in fillers}
    apart = []
    for seed in SEEDS:
        old = split_records(recipe, fillers, classes, False, seed)
        if old[0] != old[3]:
            apart.append(seed)
        linked = split_records(recipe, fillers, classes, False, seed, links=[(0, 3), (3, 5)])
        assert linked[0] == linked[3] == linked[5], f"seed {seed}: {linked}"
    assert apart, "records 0 and 3 were never apart without the link: the test shows nothing"


def test_upstream_splits_ignore_groups() -> None:
    recipe = load_recipe("xray-covid")
    a, a_copy, b, _ = _fixture()
    a.upstream_split, b.upstream_split = "train", "test"
    classes = {r.uid: r.label for r in (a, a_copy, b)}
    splits = split_records(recipe, [a, b], classes, True, 0, everything=[a, a_copy, b])
    assert splits == ["train", "test"]


@pytest.mark.parametrize(
    ("groups", "links", "expected"),
    [
        (["a", "b", "c"], [], ["a", "b", "c"]),
        (["a", "b", "c", "c"], [(0, 3)], ["a", "b", "a", "a"]),
        (["a", "b", "c", "d"], [(0, 1), (2, 3)], ["a", "a", "c", "c"]),
        # A chain links transitively, whichever way round each pair is given.
        (["d", "c", "b", "a"], [(0, 1), (2, 1), (3, 2)], ["a", "a", "a", "a"]),
        # A link within one group, and a repeated link, change nothing else.
        (["x", "x", "y"], [(0, 1), (0, 1)], ["x", "x", "y"]),
    ],
)
def test_merge_groups(groups: list[str], links: list[tuple[int, int]], expected: list[str]) -> None:
    assert merge_groups(groups, links) == expected


def test_merge_groups_keeps_every_image_of_a_merged_group_together() -> None:
    groups = [f"g{i % 7}" for i in range(35)]
    merged = merge_groups(groups, [(0, 1), (8, 2)])  # g0-g1, then g1-g2
    same = {g for g, m in zip(groups, merged, strict=True) if m == merged[0]}
    assert same == {"g0", "g1", "g2"}
    assert len(set(merged)) == 5
    assert merge_groups(groups, []) == groups


# ---------------------------------------------------------------------------------------------
# End to end: a small Figure 1 mirror in tmp_path with a padded copy under another patient id.
# ---------------------------------------------------------------------------------------------

FIGURE1 = "figure1-covid-chestxray"
FILLERS = ["COVID-00003b", "COVID-00007", "COVID-00010", "COVID-00011", "COVID-00004"]


def _grey(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("L")


def _small_figure1_mirror(shared_sources: Path, mirror: Path) -> None:
    """Film A = COVID-00001 (patient COVID-00001); COVID-09999a = A in a wide black pillarbox,
    COVID-09999b = another film (COVID-00009 mirrored): one patient, COVID-09999."""
    real = shared_sources / FIGURE1
    names = ["COVID-00001", "COVID-00009", *FILLERS]
    for name in names:
        if not (real / "images" / f"{name}.jpg").is_file():
            pytest.skip(f"real Figure 1 image absent: {real / 'images' / name}.jpg")
    raw = (real / "metadata.csv").read_bytes().decode("latin-1")
    rows = list(csv.DictReader(io.StringIO(raw)))
    fields = list(rows[0])
    template = next(r for r in rows if r["patientid"] == "COVID-00001")
    folder = mirror / FIGURE1 / "images"
    folder.mkdir(parents=True)

    def add(name: str, img: Image.Image) -> dict[str, str]:
        side = max(img.size)
        if side > 1200:  # keep the build quick
            img = img.resize((img.width * 1200 // side, img.height * 1200 // side))
        img.save(folder / f"{name}.jpg", quality=95)
        return {**template, "patientid": name}

    out_rows = [add("COVID-00001", _grey(real / "images" / "COVID-00001.jpg"))]
    original = _grey(real / "images" / "COVID-00001.jpg")
    w, h = original.size
    padded = Image.new("L", (w + 2 * round(0.3 * w), h), 0)
    padded.paste(original, (round(0.3 * w), 0))
    out_rows.append(add("COVID-09999a", padded))
    other = _grey(real / "images" / "COVID-00009.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out_rows.append(add("COVID-09999b", other))
    out_rows += [add(name, _grey(real / "images" / f"{name}.jpg")) for name in FILLERS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(out_rows)
    (mirror / FIGURE1 / "metadata.csv").write_bytes(buffer.getvalue().encode("latin-1"))


def test_build_keeps_patients_linked_by_a_dropped_copy_together(
    shared_sources: Path, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror"
    _small_figure1_mirror(shared_sources, mirror)
    recipe = Recipe.model_validate(
        {
            "name": "figure1-linked",
            "description": "a small Figure 1 mirror with a copy under another patient",
            "sources": ["figure1"],
            "views": ["PA", "AP", "AP_SUPINE", "LATERAL"],
            "classes": {"covid19": ["covid19"], "other": ["unknown", "normal", "pneumonia_other"]},
            "split": {"train": 0.5, "val": 0.0, "test": 0.5},
        }
    )
    for seed in range(3):
        result = build(
            recipe,
            out=tmp_path / f"out{seed}",
            mirror=mirror,
            root=tmp_path / "root",
            seed=seed,
            executor=LocalExecutor(workers=1, progress=False),
            progress=False,
            fetch=False,
        )
        rows = result.manifest.set_index("path_raw")
        present = {"images/COVID-00001.jpg", "images/COVID-09999a.jpg"} & set(rows.index)
        # One of the two copies of film A is dropped; the film of patient COVID-09999 is kept.
        assert len(present) == 1, sorted(rows.index)
        assert "images/COVID-09999b.jpg" in rows.index
        kept_a = rows.loc[present.pop()]
        film_b = rows.loc["images/COVID-09999b.jpg"]
        assert kept_a["split"] == film_b["split"], (
            f"seed {seed}: {kept_a['split']}, {film_b['split']}"
        )
