"""The packaged catalog: it loads, covers the field survey, and matches the real upstream files."""

from __future__ import annotations

from pathlib import Path

import pytest

from covid19_images.catalog import Catalog, SourceEntry, load_catalog
from covid19_images.catalog.registry import read_entry
from covid19_images.errors import CatalogError, UnknownSourceError
from covid19_images.fetch.layout import missing_paths
from covid19_images.fetch.store import find_in_mirror

# The field survey's datasets and the sources listed under it, each with the id it must have.
SURVEY = {
    "COVID-CTset": "covid-ctset",
    "COVIDx": "covidx",
    "MosMedData": "mosmeddata",
    "SIRM": "sirm",
    "BIMCV-COVID19+": "bimcv-covid19",
    "Covid Dataset Qatar IEEE": "covid19-radiography-database",
    "Covid Dataset Isfahan": "isfahan-covid",
    "Covid Dataset Kohen": "ieee8023",
    "Covid-19 Image Dataset": "covid19-image-dataset",
    "COVID-19 Radiography Database": "covid19-radiography-database",
    "AIforCOVID Imaging Archive": "aiforcovid",
    "Radiopaedia": "radiopaedia",
    "UCSD COVID-CT": "ucsd-covid-ct",
    "CT Machine Learning Dataset": "ieee8023-ct",
    "CT Segmentation Dataset 1": "medseg-slices",
    "CT Segmentation Dataset 2": "medseg-volumes",
    "CT Segmentation Dataset 3": "zenodo-ct-seg",
    "Figure1": "figure1",
    "Actualmed": "actualmed",
    "COVID-CT-MD": "covid-ct-md",
    "AH Paris CT": "ah-paris-ct",
    "Zhang Lab": "zhanglab",
    "NIH ChestX-ray sample": "nih-sample",
    "covid-19-pos-case": "covid-19-pos-case",
    "Darshan Deshpande folder dataset": "covid19-detection-xray-dataset",
}

# Folders of ../shared/sources and the entry each one is a mirror of.
MIRROR_FOLDERS = {
    "ieee8023-covid-chestxray": "ieee8023",
    "figure1-covid-chestxray": "figure1",
    "actualmed-covid-chestxray": "actualmed",
    "covid19-detection-xray-dataset": "covid19-detection-xray-dataset",
    "covid-ct-md": "covid-ct-md",
    "covid-19-pos-case": "covid-19-pos-case",
    "mosmeddata": "mosmeddata",
    "covid-ctset": "covid-ctset",
    "covidx": "covidx",
    "ucsd-covid-ct": "ucsd-covid-ct",
    "covid19-image-dataset": "covid19-image-dataset",
    "covid19-radiography-database": "covid19-radiography-database",
    "nih-chestxray-sample": "nih-sample",
    "zhanglab-chest-xrays": "zhanglab",
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.mark.parametrize(("survey_name", "source_id"), SURVEY.items())
def test_every_survey_dataset_has_an_entry(
    catalog: Catalog, survey_name: str, source_id: str
) -> None:
    entry = catalog.get(survey_name)
    assert entry.id == source_id
    assert survey_name in entry.also_known_as or survey_name == entry.name


def test_entries_are_complete_enough_to_choose_and_get_a_source(catalog: Catalog) -> None:
    assert len(catalog) >= len(set(SURVEY.values()))
    for entry in catalog:
        assert entry.summary and entry.modality and entry.tasks, entry.id
        assert entry.references, f"{entry.id}: where do its facts come from?"
        if entry.subset_of:
            continue
        # An unknown upstream layout is said so in the notes, never left silently empty.
        assert entry.layout.required or entry.layout.notes, entry.id
        if entry.access == "auto":
            assert entry.download and entry.version, entry.id
        else:
            assert entry.manual and entry.manual.steps, entry.id
            assert any(f"fetch {entry.id}" in step for step in entry.manual.steps), entry.id


def test_github_downloads_are_pinned_to_full_commits(catalog: Catalog) -> None:
    pinned = [d for e in catalog for d in e.download if d.kind == "github"]
    assert pinned
    for item in pinned:
        assert item.commit is not None and len(item.commit) == 40
        assert item.resolved_url().endswith(f"/archive/{item.commit}.tar.gz")


def test_counts_always_say_where_the_number_comes_from(catalog: Catalog) -> None:
    for entry in catalog:
        for count in entry.counts:
            assert len(count.reference) > 10, f"{entry.id}: {count}"
            assert (count.images, count.patients, count.studies) != (None, None, None)


def test_known_overlaps_are_recorded(catalog: Catalog) -> None:
    def overlaps(source: str) -> set[str]:
        return {o.source for o in catalog.get(source).overlaps}

    assert "ieee8023" in overlaps("covid19-detection-xray-dataset")
    assert "zhanglab" in overlaps("covid19-detection-xray-dataset")
    assert "ieee8023" in overlaps("covidx")
    assert "ieee8023" in overlaps("covid19-radiography-database")
    assert "ieee8023" in overlaps("sirm") | {o.source for o in catalog.get("ieee8023").overlaps}


@pytest.mark.parametrize(("folder", "source_id"), MIRROR_FOLDERS.items())
def test_each_real_upstream_folder_is_found_as_a_mirror(
    shared_sources: Path, folder: str, source_id: str
) -> None:
    entry = load_catalog().get(folder)  # the folder name is an alias of its entry
    assert entry.id == source_id
    assert missing_paths(entry, shared_sources / folder) == []
    assert find_in_mirror(entry, shared_sources) == shared_sources / folder


def test_every_mirror_folder_is_covered(shared_sources: Path) -> None:
    folders = {p.name for p in shared_sources.iterdir() if p.is_dir()}
    assert folders <= set(MIRROR_FOLDERS), folders - set(MIRROR_FOLDERS)


def test_lookup_is_forgiving_and_unknown_ids_get_suggestions(catalog: Catalog) -> None:
    assert catalog.get("IEEE8023").id == "ieee8023"
    assert catalog.get("covid_ct_md").id == "covid-ct-md"
    with pytest.raises(UnknownSourceError) as info:
        catalog.get("mosmeddta")
    assert "mosmeddata" in info.value.suggestions
    assert "did you mean" in str(info.value)


def test_filters(catalog: Catalog) -> None:
    ct = catalog.filter(modality="ct")
    assert {"mosmeddata", "covid-ct-md", "ucsd-covid-ct"} <= {e.id for e in ct}
    assert all("ct" in e.modality for e in ct)
    seg = catalog.filter(task="segmentation", access="auto")
    assert seg and all("segmentation" in e.tasks and e.access == "auto" for e in seg)


def _toml(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
id = "{id}"
name = "A"
summary = "s"
modality = ["xray"]
tasks = ["classification"]
access = "manual"
references = ["r"]
[manual]
steps = ["download"]
"""


def test_invalid_entry_names_the_file_and_field(tmp_path: Path) -> None:
    bad = _toml(tmp_path, "bad.toml", MINIMAL.format(id="bad").replace('"xray"', '"mri"'))
    with pytest.raises(CatalogError, match=r"bad\.toml.*modality"):
        read_entry(bad)
    typo = _toml(tmp_path, "typo.toml", MINIMAL.format(id="typo") + 'licence = "x"\n')
    with pytest.raises(CatalogError, match="licence"):
        read_entry(typo)


def test_auto_entry_without_download_or_bad_checksum_is_rejected(tmp_path: Path) -> None:
    text = MINIMAL.format(id="a1").replace('"manual"', '"auto"')
    with pytest.raises(CatalogError, match="download"):
        read_entry(_toml(tmp_path, "a1.toml", text))
    text = MINIMAL.format(id="a2") + '[[download]]\nkind = "url"\nurl = "http://x"\n'
    text += 'checksum = "sha256:1234"\n'
    with pytest.raises(CatalogError, match="checksum"):
        read_entry(_toml(tmp_path, "a2.toml", text))


def test_catalog_rejects_clashing_names_and_dangling_references(tmp_path: Path) -> None:
    one = read_entry(_toml(tmp_path, "one.toml", MINIMAL.format(id="one")))
    dup = SourceEntry.model_validate(
        {**one.model_dump(), "id": "two", "name": "B", "aliases": ["one"]}
    )
    with pytest.raises(CatalogError, match="names both"):
        Catalog([one, dup])
    dangling = SourceEntry.model_validate(
        {**one.model_dump(), "id": "three", "name": "C", "subset_of": "nope"}
    )
    with pytest.raises(CatalogError, match="unknown source 'nope'"):
        Catalog([one, dangling])
