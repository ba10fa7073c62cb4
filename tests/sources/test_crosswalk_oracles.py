"""ieee8023's findings against a label table written here from what each finding is.

The table covers every distinct ``finding`` of the real ``metadata.csv`` (a test fails when
upstream adds one the table lacks) and a few of the later hierarchical spellings. SARS, MERS and
influenza are viral pneumonias but not COVID-19: a model trained to find COVID-19 must not learn
SARS-CoV-1 films as positives.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from covid19_images.assemble.recipe import load_recipe
from covid19_images.sources import ingest
from covid19_images.sources.crosswalk import Crosswalk

EXPECTED = {
    # every finding of the real metadata.csv
    "COVID-19": "covid19",
    "COVID-19, ARDS": "covid19",
    "SARS": "pneumonia_viral",
    "Influenza": "pneumonia_viral",
    "Varicella": "pneumonia_viral",
    "Streptococcus": "pneumonia_bacterial",
    "Klebsiella": "pneumonia_bacterial",
    "Mycoplasma Bacterial Pneumonia": "pneumonia_bacterial",
    "Legionella": "pneumonia_bacterial",
    "E.Coli": "pneumonia_bacterial",
    "Bacterial": "pneumonia_bacterial",
    "Chlamydophila": "pneumonia_bacterial",
    "Pneumocystis": "pneumonia_fungal",
    "Pneumonia": "pneumonia_other",
    "Lipoid": "pneumonia_other",
    "ARDS": "other_finding",
    "No Finding": "normal",
    "todo": "unknown",
}
HIERARCHICAL = {
    # the later upstream style
    "Pneumonia/Viral/COVID-19": "covid19",
    "Pneumonia/Viral/SARS": "pneumonia_viral",
    "Pneumonia/Viral/MERS-CoV": "pneumonia_viral",
    "Pneumonia/Viral/Influenza": "pneumonia_viral",
    "Pneumonia/Bacterial/Klebsiella": "pneumonia_bacterial",
    "Pneumonia/Fungal/Pneumocystis": "pneumonia_fungal",
    "Pneumonia/Aspiration": "pneumonia_other",
    "MERS": "pneumonia_viral",
    "MERS-CoV": "pneumonia_viral",
}
NOT_COVID = ["SARS", "MERS", "MERS-CoV", "Influenza", "Pneumonia/Viral/SARS"]


@pytest.fixture(scope="module")
def metadata(shared_sources: Path) -> pd.DataFrame:
    path = shared_sources / "ieee8023-covid-chestxray" / "metadata.csv"
    if not path.is_file():
        pytest.skip(f"absent: {path}")
    return pd.read_csv(path)


def test_the_table_covers_every_finding_upstream(metadata: pd.DataFrame) -> None:
    findings = set(metadata["finding"].dropna().astype(str))
    assert "SARS" in findings
    assert findings - set(EXPECTED) == set()


@pytest.mark.parametrize(("finding", "label"), sorted({**EXPECTED, **HIERARCHICAL}.items()))
def test_each_finding_maps_to_its_label(finding: str, label: str) -> None:
    assert Crosswalk.packaged().label("ieee8023", finding) == (label, True)


@pytest.mark.parametrize("finding", NOT_COVID)
def test_other_coronaviruses_and_influenza_are_not_covid19(finding: str) -> None:
    label, mapped = Crosswalk.packaged().label("ieee8023", finding)
    assert mapped and label != "covid19"
    for recipe in ("xray-covid", "xray-binary", "covidx"):
        assert load_recipe(recipe).class_of(label) not in ("covid19", "COVID-19"), recipe


def test_every_ingested_record_has_its_findings_label(
    shared_sources: Path, metadata: pd.DataFrame
) -> None:
    records = ingest("ieee8023", mirror=shared_sources).records
    assert records
    wrong = [
        (r.path_raw, r.finding_raw, r.label)
        for r in records
        if r.finding_raw is not None and EXPECTED.get(str(r.finding_raw)) != r.label
    ]
    assert not wrong, wrong[:10]
    sars = [r for r in records if r.finding_raw == "SARS"]
    assert sars and all(r.label == "pneumonia_viral" for r in sars)
