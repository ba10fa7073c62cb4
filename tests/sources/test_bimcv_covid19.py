"""BIMCV-COVID19+ adapter on a fixture generated in its BIDS-like (MIDS) layout.

No real BIMCV files are available here: the fixture follows the documented layout
(``bimcv_covid19_posi_subjects_<n>/sub-S…/ses-E…/mod-rx/`` with 16-bit PNGs, DICOM-JSON sidecars
and CT volumes, ``bimcv_covid19_posi_head_iter1/participants.tsv``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from covid19_images.problems import ProblemLog
from covid19_images.sources import get_adapter, ingest
from covid19_images.sources.bimcv_covid19 import parse_bids_name

SOURCE = "bimcv-covid19"
HEAD = "bimcv_covid19_posi_head_iter1"
PARTICIPANTS = (
    "participant\tmodality_dicom\tage\tgender\n"
    "sub-S00001\t['CR']\t[68, 67]\tM\n"
    "sub-S00002\t['DX', 'CT']\t[45]\tF\n"
    "sub-S00004\t['CR']\t[]\tNone\n"  # no image of this subject is present
    "sub-S00001\t['CR']\t[67]\tM\n"  # repeats row 1
    "sub-S00005\t['DX']\tabc\tF\n"  # not an age; no image either
)
A = "bimcv_covid19_posi_subjects_1/sub-S00001/ses-E00001/mod-rx"
B = "bimcv_covid19_posi_subjects_2/sub-S00002"
C = "bimcv_covid19_posi_subjects_2/sub-S00003/ses-E00004/mod-rx"
PA_CR = f"{A}/sub-S00001_ses-E00001_run-1_bp-chest_vp-pa_cr.png"
LL_CR = f"{A}/sub-S00001_ses-E00001_acq-2_run-1_bp-chest_vp-ll_cr.png"
AP_DX = f"{B}/ses-E00002/mod-rx/sub-S00002_ses-E00002_run-1_bp-chest_vp-ap_dx.png"
CT = f"{B}/ses-E00003/mod-rx/sub-S00002_ses-E00003_run-2_bp-chest_ct.nii.gz"
UNLISTED = f"{C}/sub-S00003_ses-E00004_run-1_bp-chest_vp-pa_dx.png"
NO_SIDECAR = f"{C}/sub-S00003_ses-E00004_run-2_bp-chest_vp-xx_dx.png"
STRAY = "bimcv_covid19_posi_subjects_2/preview.png"


def _tags(**values: Any) -> dict[str, Any]:
    """A DICOM JSON model sidecar, as BIMCV ships them."""
    codes = {
        "modality": ("00080060", "CS"),
        "sex": ("00100040", "CS"),
        "age": ("00101010", "AS"),
        "view": ("00185101", "CS"),
        "photometric": ("00280004", "CS"),
        "bits": ("00280101", "US"),
    }
    return {codes[k][0]: {"vr": codes[k][1], "Value": [v]} for k, v in values.items()}


def _png16(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 20).astype(np.uint16)
    image = Image.fromarray(pixels)
    assert image.mode == "I;16"
    image.save(path)


def _tree(root: Path, participants: str | None = PARTICIPANTS) -> Path:
    if participants is not None:
        (root / HEAD).mkdir(parents=True)
        (root / HEAD / "participants.tsv").write_text(participants, encoding="utf-8")
    sidecars: dict[str, Any] = {
        PA_CR: _tags(modality="CR", sex="M", age="067Y", photometric="MONOCHROME1", bits=12),
        LL_CR: _tags(modality="CR", view="LL", photometric="MONOCHROME2"),
        AP_DX: "{not json",
        UNLISTED: _tags(modality="CR", sex="F", age="050Y"),
        CT: _tags(modality="CT"),
    }
    for rel in (PA_CR, LL_CR, AP_DX, UNLISTED, NO_SIDECAR, STRAY):
        _png16(root / rel)
    (root / CT).parent.mkdir(parents=True)
    (root / CT).write_bytes(b"\x1f\x8b not really a NIfTI volume")
    for rel, tags in sidecars.items():
        side = root / rel.replace(".nii.gz", ".json").replace(".png", ".json")
        side.write_text(tags if isinstance(tags, str) else json.dumps(tags), encoding="utf-8")
    (root / A).parent.joinpath("sub-S00001_ses-E00001_scans.tsv").write_text("filename\n")
    return root


@pytest.fixture
def result(tmp_path: Path):  # type: ignore[no-untyped-def]
    return ingest(SOURCE, path=_tree(tmp_path))


def test_fixture_images_are_16_bit(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    with Image.open(root / PA_CR) as image:
        assert image.mode in {"I;16", "I"}
        assert image.getextrema()[1] > 255


def test_records_from_names_sidecars_and_participants(result) -> None:  # type: ignore[no-untyped-def]
    by_path = {r.path_raw: r for r in result.records}
    assert set(by_path) == {PA_CR, LL_CR, AP_DX, UNLISTED, NO_SIDECAR}
    pa = by_path[PA_CR]
    assert (pa.patient_id, pa.study_id, pa.modality, pa.view, pa.view_raw) == (
        "bimcv-covid19:S00001",
        "E00001",
        "CR",
        "PA",
        "pa",
    )
    assert (pa.finding_raw, pa.label, pa.label_origin) == ("covid19_posi", "covid19", "metadata")
    assert (pa.age, pa.sex, pa.bits_stored) == (67.0, "M", 12)
    assert pa.attributes == {
        "run": "1",
        "archive": "bimcv_covid19_posi_subjects_1",
        "photometric_interpretation": "MONOCHROME1",
    }
    assert pa.license == "BIMCV-COVID19 Dataset Research Use Agreement"
    assert pa.problems == []
    lateral = by_path[LL_CR]
    assert (lateral.view, lateral.attributes["acq"], lateral.attributes["view_position"]) == (
        "LATERAL",
        "2",
        "LL",
    )
    assert lateral.age == 67.0  # no age in the sidecar: the youngest age in participants.tsv
    dx = by_path[AP_DX]
    assert (dx.modality, dx.view, dx.age, dx.sex) == ("DX", "AP", 45.0, "F")
    assert dx.problems == ["unreadable-metadata"]
    unlisted = by_path[UNLISTED]
    assert (unlisted.patient_id, unlisted.age, unlisted.sex, unlisted.modality) == (
        "bimcv-covid19:S00003",
        50.0,
        "F",
        "DX",
    )
    assert unlisted.problems == ["bad-value", "orphan-file"]
    assert by_path[NO_SIDECAR].view == "UNKNOWN"
    assert all(r.label == "covid19" for r in result.records)
    assert len({r.uid for r in result.records}) == len(result.records)


def test_every_row_and_file_is_accounted_for(result) -> None:  # type: ignore[no-untyped-def]
    participants = f"{HEAD}/participants.tsv"
    problems = {(p.kind, p.file, p.row, p.action) for p in result.problems}
    assert problems == {
        ("duplicate-row", participants, 4, "skipped"),
        ("bad-value", participants, 5, "kept"),
        ("missing-file", participants, 3, "skipped"),
        ("missing-file", participants, 5, "skipped"),
        ("unreadable-metadata", AP_DX.replace(".png", ".json"), None, "skipped"),
        ("wrong-modality", CT, None, "excluded"),
        ("bad-value", UNLISTED, None, "kept"),
        ("orphan-file", UNLISTED, None, "kept"),
        ("missing-file", NO_SIDECAR.replace(".png", ".json"), None, "kept"),
        ("orphan-file", NO_SIDECAR, None, "kept"),
        ("unknown-view", NO_SIDECAR, None, "kept-as-unknown"),
        ("orphan-file", STRAY, None, "skipped"),
    }
    assert len(result.problems) == len(problems)
    # Every image file is a record or a problem; every participants row a subject or a problem.
    files = {
        p.relative_to(result.path).as_posix()
        for p in result.path.rglob("*")
        if p.name.endswith((".png", ".nii.gz"))
    }
    handled = {r.path_raw for r in result.records} | {
        p.file for p in result.problems if p.kind in {"orphan-file", "wrong-modality"}
    }
    assert handled == files


def test_without_participants_and_with_the_negative_arm(tmp_path: Path) -> None:
    root = _tree(tmp_path, participants=None)
    negative = (
        "covid19_neg/sub-S09999/ses-E09999/mod-rx/sub-S09999_ses-E09999_run-1_bp-chest_vp-pa_cr.png"
    )
    _png16(root / negative)
    log = ProblemLog()
    records = {r.path_raw: r for r in get_adapter(SOURCE).records(root, log)}
    assert records[PA_CR].age == 67.0 and records[LL_CR].age is None
    assert records[UNLISTED].problems == ["bad-value"]  # no participants.tsv: nobody is unlisted
    assert (records[negative].finding_raw, records[negative].label) == ("covid19_neg", "unknown")
    assert "archive" in records[negative].attributes
    kinds = Counter(p.kind for p in log)
    assert kinds["unreadable-metadata"] == 2  # participants.tsv absent, one malformed sidecar
    assert kinds["unmapped-finding"] == 1
    assert "orphan-file" not in {p.kind for p in log if p.file != STRAY}


def test_unreadable_participants_and_an_empty_folder(tmp_path: Path) -> None:
    root = _tree(tmp_path / "broken", participants="subject\tage\nsub-S00001\t67\n")
    log = ProblemLog()
    records = get_adapter(SOURCE).records(root, log)
    assert len(records) == 5
    assert ("missing-column", f"{HEAD}/participants.tsv") in {(p.kind, p.file) for p in log}

    log = ProblemLog()
    assert get_adapter(SOURCE).records(tmp_path / "empty", log) == []
    assert [p.kind for p in log] == ["unreadable-metadata"]


def test_bids_names() -> None:
    entities, suffix = parse_bids_name(
        "sub-S03044_ses-E06790_run-1_bp-chest_vp-pa_dx-corrected.png"
    )  # type: ignore[misc]
    assert (entities["sub"], entities["vp"], suffix) == ("S03044", "pa", "dx-corrected")
    assert parse_bids_name("sub-S1_run-1_cr.png") is None  # no session
    assert parse_bids_name("sub-S1_ses-E1_bad_cr.png") is None
