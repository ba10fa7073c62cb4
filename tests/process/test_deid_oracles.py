"""De-identification keys against oracles computed here with hmac and hashlib.

The documented scheme (``covid19_images.deid``): the salt is ``$COVID19_IMAGES_SALT`` or a random
key made once in the data root's ``salt`` file; an upstream identifier becomes
``<source>:<first 16 hex digits of HMAC-SHA256(salt, source + NUL + id)>``; a DICOM written for
an image carries ``PatientID`` = the first 16 hex digits of HMAC-SHA256(salt, the record's
source-scoped patient id ``<source>:<id>``). The expected strings below are computed from that
text alone, never with the functions under test.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from PIL import Image

import covid19_images
from covid19_images.assemble.build import build
from covid19_images.assemble.dicoms import deid_salt
from covid19_images.deid import SALT_ENV, pseudonym, salt
from covid19_images.process.dicom import write_secondary_capture
from covid19_images.process.executor import LocalExecutor
from covid19_images.records import Record, scoped_patient


def _hmac16(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


@pytest.fixture(autouse=True)
def _no_salt_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)


# --- the salt -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [salt, deid_salt], ids=["deid.salt", "dicoms.deid_salt"])
def test_salt_is_random_per_root_and_persists(
    make: Callable[[Path], bytes], tmp_path: Path
) -> None:
    first = make(tmp_path / "root-a")
    again = make(tmp_path / "root-a")
    other = make(tmp_path / "root-b")
    assert first == again, "the same data root must keep its salt"
    assert first != other, "two fresh data roots must not share a salt"
    assert len(first) >= 32 and len(other) >= 32  # at least 128 bits as hex
    assert (tmp_path / "root-a" / "salt").read_bytes().strip() == first


def test_salt_is_no_constant_of_the_package(tmp_path: Path) -> None:
    key = salt(tmp_path / "root")
    package = Path(covid19_images.__file__).parent
    for path in package.rglob("*"):
        if path.is_file() and path.suffix in {".py", ".toml", ".json", ".txt"}:
            assert key not in path.read_bytes(), path


def test_the_environment_salt_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(SALT_ENV, "site-secret")
    assert salt(tmp_path / "root") == b"site-secret"
    assert not (tmp_path / "root" / "salt").exists()


# --- pseudonyms ---------------------------------------------------------------------------------

VECTORS = [
    # (salt, source, upstream id)
    ("oracle-salt", "covid-19-pos-case", "AW123"),
    ("oracle-salt", "bimcv-covid19", "AW123"),
    ("another-salt", "covid-19-pos-case", "AW123"),
    ("oracle-salt", "covid-ct-md", "1.2.840.113619.2.55.3"),
]


@pytest.mark.parametrize(("key", "source", "value"), VECTORS)
def test_pseudonym_known_vectors(
    monkeypatch: pytest.MonkeyPatch, key: str, source: str, value: str
) -> None:
    monkeypatch.setenv(SALT_ENV, key)
    expected = f"{source}:{_hmac16(key.encode(), source + chr(0) + value)}"
    assert pseudonym(source, value) == expected


def test_fixed_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    # Written out once from hmac.new(b"oracle-salt", b"covid-19-pos-case\x00AW123", sha256).
    monkeypatch.setenv(SALT_ENV, "oracle-salt")
    expected = hmac.new(b"oracle-salt", b"covid-19-pos-case\x00AW123", hashlib.sha256).hexdigest()
    assert pseudonym("covid-19-pos-case", "AW123") == "covid-19-pos-case:" + expected[:16]


def test_one_upstream_id_in_two_sources_gives_unrelated_pseudonyms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SALT_ENV, "oracle-salt")
    a = pseudonym("covid-19-pos-case", "AW123").split(":", 1)[1]
    b = pseudonym("bimcv-covid19", "AW123").split(":", 1)[1]
    assert a != b
    unscoped = _hmac16(b"oracle-salt", "AW123")
    assert unscoped not in (a, b)


def test_dicom_patient_ids_are_scoped_by_source(tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    Image.new("L", (64, 48), 90).save(image)
    key = b"oracle-salt"
    ids = {}
    for source in ("ieee8023", "figure1"):
        patient = scoped_patient(source, 2)
        assert patient == f"{source}:2"
        record = Record(source=source, path_raw="x.png", patient_id=patient, modality="XR")
        out = tmp_path / f"{source}.dcm"
        write_secondary_capture(image, record, out, salt=key)
        ds = pydicom.dcmread(out)
        assert ds.PatientID == _hmac16(key, f"{source}:2")
        assert ds.PatientID != "2" and patient not in out.read_bytes().decode("latin-1")
        ids[source] = ds.PatientID
    assert ids["ieee8023"] != ids["figure1"]


def test_a_build_keys_its_dicoms_with_its_own_random_salt(
    shared_sources: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    result = build(
        "xray-covid",
        out=tmp_path / "out",
        mirror=shared_sources,
        root=root,
        sources=["figure1"],
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
    )
    key = (root / "salt").read_bytes().strip()
    assert len(key) >= 32
    manifest = pd.read_parquet(result.path / "manifest.parquet")
    sample = manifest.dropna(subset=["dicom_path"]).head(5)
    assert len(sample) == 5
    for row in sample.itertuples():
        ds = pydicom.dcmread(root / "processed" / "xray" / str(row.dicom_path))
        subject = row.patient_id if isinstance(row.patient_id, str) else row.uid
        assert ds.PatientID == _hmac16(key, str(subject)), row.uid
