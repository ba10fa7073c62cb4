"""`build ct-covid` and `build ct-lesion-seg` on the real upstream files: the issue's promises."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from covid19_images.assemble.build import BuildResult, build
from covid19_images.audit import audit_dataset
from covid19_images.process.executor import LocalExecutor

P001 = "covid-ct-md/Sample data/COVID-19 subjects/P001"
POS_CASE = "covid-19-pos-case/COVID-19-pos-case"


def _build(recipe: str, mirror: Path, work: Path, **options: object) -> BuildResult:
    return build(
        recipe,
        out=work / "out",
        mirror=mirror,
        root=work / "root",
        executor=LocalExecutor(workers=2, progress=False),
        progress=False,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def ct_covid(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    return _build("ct-covid", shared_sources, tmp_path_factory.mktemp("ct-covid"))


def test_p001_is_a_148_slice_hu_volume_equal_to_simpleitk(
    ct_covid: BuildResult, shared_sources: Path
) -> None:
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is the test oracle for CT volumes")
    manifest = ct_covid.manifest
    row = manifest[(manifest["source"] == "covid-ct-md") & (manifest["level"] == "volume")]
    assert len(row) == 1
    row = row.iloc[0]
    assert row["patient_id"] == "covid-ct-md:P001" and row["class"] == "covid19"
    assert (row["depth"], row["height"], row["width"]) == (148, 512, 512)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(shared_sources / P001)))
    expected = sitk.DICOMOrient(reader.Execute(), "LPS")
    ours = sitk.DICOMOrient(sitk.ReadImage(str(ct_covid.path / row["path"])), "LPS")
    ours_array = sitk.GetArrayFromImage(ours)
    assert ours_array.shape == (148, 512, 512)
    assert ours_array.dtype == np.int16
    np.testing.assert_array_equal(ours_array, sitk.GetArrayFromImage(expected))
    np.testing.assert_allclose(ours.GetSpacing(), expected.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(ours.GetOrigin(), expected.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(ours.GetDirection(), expected.GetDirection(), atol=1e-6)
    assert ours_array.min() >= -1024 and ours_array.max() > 1000  # Hounsfield units


def test_every_slice_is_a_png_in_its_volumes_split(ct_covid: BuildResult) -> None:
    slices = pd.read_parquet(ct_covid.path / "slices.parquet")
    manifest = ct_covid.manifest
    p001 = manifest[manifest["patient_id"] == "covid-ct-md:P001"].iloc[0]
    own = slices[slices["uid"] == p001["uid"]]
    assert len(own) == 148 and list(own["slice"]) == list(range(148))
    assert set(own["split"]) == {p001["split"]}
    for rel in own["path"].iloc[::37]:
        assert (ct_covid.path / rel).is_file()
    on_disk = {
        p.relative_to(ct_covid.path).as_posix()
        for split in ("train", "val", "test")
        for p in (ct_covid.path / split).glob("*/*.png")
    }
    assert on_disk == set(slices["path"])


def test_no_patient_crosses_splits_and_the_audit_is_clean(ct_covid: BuildResult) -> None:
    slices = pd.read_parquet(ct_covid.path / "slices.parquet")
    per_patient = slices.dropna(subset=["patient_id"]).groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()
    ucsd = ct_covid.manifest[ct_covid.manifest["source"] == "ucsd-covid-ct"]
    assert len(ucsd) > 0
    report = audit_dataset(ct_covid.path)
    assert not report.leakage and not report.broken
    assert report.missing_files == [] and report.unlisted_files == []


def test_localizers_and_the_coronal_image_are_in_no_volume(ct_covid: BuildResult) -> None:
    problems = pd.read_csv(ct_covid.path / "problems.csv")
    pos = problems[problems["source"] == "covid-19-pos-case"]
    assert set(pos[pos["kind"] == "localizer"]["file"].map(lambda f: Path(f).name)) == {
        "IM000116",
        "IM000117",
    }
    assert "IM001062" in set(pos[pos["kind"] == "non-axial"]["file"].map(lambda f: Path(f).name))


def _identifying_values(folder: Path) -> set[bytes]:
    """Every value in the headers of a DICOM folder that identifies a person, place or date."""
    keywords = (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "StudyTime",
        "SeriesTime",
        "AcquisitionTime",
        "ContentTime",
        "InstitutionName",
        "InstitutionAddress",
        "StationName",
        "AccessionNumber",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "FrameOfReferenceUID",
        "ReferringPhysicianName",
        "StudyID",
    )
    values: set[bytes] = set()
    for path in folder.iterdir():
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        for keyword in keywords:
            value = str(ds.get(keyword, "") or "").strip()
            if len(value) >= 4:
                values.add(value.encode())
                if keyword == "PatientName":
                    values.add(value.replace("^", " ").strip().encode())
                if keyword.endswith("Time") and "." in value:
                    values.add(value.split(".")[0].encode())
    return values


def _output_bytes(folder: Path) -> list[tuple[Path, bytes]]:
    out = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            out.append((path, data))
    return out


def test_no_output_holds_a_name_id_uid_or_date_of_the_dicom_studies(
    shared_sources: Path, tmp_path: Path
) -> None:
    # Keep the pos-case study (label unknown) in the dataset, so its volume, slices and manifest
    # rows go through every stage; then read every byte written, NIfTI decompressed.
    from covid19_images.assemble.recipe import load_recipe, with_options

    recipe = with_options(
        load_recipe("ct-covid"),
        classes={"covid19": ["covid19"], "normal": ["normal"], "unlabelled": ["unknown"]},
    )
    result = _build(recipe, shared_sources, tmp_path, sources=["covid-ct-md", "covid-19-pos-case"])  # type: ignore[arg-type]
    manifest = result.manifest
    pos = manifest[manifest["source"] == "covid-19-pos-case"]
    assert len(pos) == 1 and pos.iloc[0]["depth"] == 23
    assert "derived" in list(pos.iloc[0]["tags"])
    secrets = _identifying_values(shared_sources / POS_CASE) | _identifying_values(
        shared_sources / P001
    )
    assert b"HAP ^1" in secrets and b"20200216" in secrets and b"20200305" in secrets
    written = _output_bytes(tmp_path / "out") + _output_bytes(tmp_path / "root" / "processed")
    assert len(written) > 300
    for path, data in written:
        for value in secrets:
            assert value not in data, f"{value!r} from a DICOM header is in {path}"


def test_rebuild_from_the_lock_gives_the_same_manifest(
    ct_covid: BuildResult, shared_sources: Path, tmp_path: Path
) -> None:
    again = build(
        "ct-covid",
        out=tmp_path,
        mirror=shared_sources,
        root=ct_covid.path.parent.parent / "root",
        lock=ct_covid.path / "lock.json",
        executor=LocalExecutor(workers=1, progress=False),
        progress=False,
    )
    assert (again.path / "manifest.parquet").read_bytes() == (
        ct_covid.path / "manifest.parquet"
    ).read_bytes()


def test_lesion_seg_reports_mosmed_masks_without_studies_and_does_not_fail(
    shared_sources: Path, tmp_path: Path
) -> None:
    result = _build("ct-lesion-seg", shared_sources, tmp_path)
    problems = pd.read_csv(result.path / "problems.csv")
    mosmed = problems[(problems["source"] == "mosmeddata") & (problems["kind"] == "missing-study")]
    assert len(mosmed) == 1110
    assert mosmed["detail"].str.contains("mask").sum() == 50
    assert len(result.manifest) == 0
    datasheet = (result.path / "datasheet.md").read_text(encoding="utf-8")
    assert "research" in datasheet.lower()


def test_nifti_outputs_carry_no_upstream_header_text(ct_covid: BuildResult) -> None:
    for rel in ct_covid.manifest[ct_covid.manifest["level"] == "volume"]["path"]:
        img = nib.load(ct_covid.path / rel)
        header = img.header  # type: ignore[attr-defined]
        assert bytes(header["descrip"]).strip(b"\x00") == b""
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")  # type: ignore[attr-defined]


def test_datalist_lists_every_volume_with_its_class_index(ct_covid: BuildResult) -> None:
    datalist = json.loads((ct_covid.path / "datalist.json").read_text(encoding="utf-8"))
    volumes = ct_covid.manifest[ct_covid.manifest["level"] == "volume"]
    listed = datalist["training"] + datalist["validation"] + datalist["test"]
    assert sorted(i["uid"] for i in listed) == sorted(volumes["uid"])
    names = datalist["labels"]
    for item in listed:
        assert (ct_covid.path / item["image"]).is_file()
        row = volumes[volumes["uid"] == item["uid"]].iloc[0]
        assert names[str(item["label"])] == row["class"]


@pytest.fixture(scope="module")
def ct_binary(ct_covid: BuildResult, shared_sources: Path) -> BuildResult:
    work = ct_covid.path.parent.parent  # ct-covid's processed cache: nothing decoded again
    return _build("ct-binary", shared_sources, work)


def test_ct_binary_holds_ucsd_noncovid_slices_split_by_patient(
    ct_binary: BuildResult, ct_covid: BuildResult, shared_sources: Path
) -> None:
    manifest = ct_binary.manifest
    problems = pd.read_csv(ct_binary.path / "problems.csv")
    noncovid = shared_sources / "ucsd-covid-ct" / "Images-processed" / "CT_NonCOVID"
    on_disk = {f"Images-processed/CT_NonCOVID/{p.name}" for p in noncovid.iterdir()}
    copies = problems[(problems["kind"] == "duplicate") & problems["file"].isin(on_disk)]
    ucsd = manifest[(manifest["source"] == "ucsd-covid-ct")]
    non = ucsd[ucsd["finding_raw"] == "CT_NonCOVID"]
    assert set(non["class"]) == {"non_covid"} and set(non["label"]) == {"other_finding"}
    assert set(non["path_raw"]) == on_disk - set(copies["file"])  # every one, less its copies
    assert len(non) >= 25
    left_out = problems[problems["detail"].str.contains("is not a class", na=False)]
    assert set(left_out["detail"]) <= {"label unknown is not a class of recipe ct-binary"}
    # ct-covid's samples are ct-binary's covid19 class
    assert set(manifest[manifest["class"] == "covid19"]["uid"]) == set(ct_covid.manifest["uid"])
    counts = manifest.groupby(["class", "split"]).size().unstack(fill_value=0)
    assert (counts[["train", "test"]] > 0).all().all()
    assert ((counts["train"] / counts.sum(axis=1)).between(0.5, 0.9)).all()
    slices = pd.read_parquet(ct_binary.path / "slices.parquet")
    per_patient = slices.dropna(subset=["patient_id"]).groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()
    assert not audit_dataset(ct_binary.path).leakage
    packed = json.loads((ct_binary.path / "packed.json").read_text(encoding="utf-8"))
    assert packed["classes"] == ["covid19", "non_covid"] and "naive" not in packed


def test_ct_binary_naive_splits_slices_at_random_and_its_audit_sees_it(
    ct_binary: BuildResult, shared_sources: Path
) -> None:
    work = ct_binary.path.parent.parent
    naive = _build("ct-binary", shared_sources, work, naive=True)
    assert naive.path == work / "out" / "ct-binary-naive" and naive.naive
    problems = pd.read_csv(naive.path / "problems.csv")
    kept = problems[(problems["kind"] == "duplicate") & (problems["action"] == "kept")]
    assert len(kept) >= 1 and not (problems["kind"] == "duplicate").all()
    assert len(naive.manifest) == len(ct_binary.manifest) + len(kept)
    slices = pd.read_parquet(naive.path / "slices.parquet")
    p001 = slices[slices["patient_id"] == "covid-ct-md:P001"]
    assert len(p001) == 148 and set(p001["split"]) == {"train", "val", "test"}
    assert all(p.startswith(f"{s}/") for s, p in zip(p001["split"], p001["path"], strict=True))
    audit = json.loads((naive.path / "audit.json").read_text(encoding="utf-8"))
    assert audit["leakage"] and audit["missing_files"] == [] and audit["unlisted_files"] == []
    assert "covid-ct-md:P001" in {p["patient_id"] for p in audit["shared_patients"]}
    lock = json.loads((naive.path / "lock.json").read_text(encoding="utf-8"))
    assert lock["naive"] is True and lock["naive_build"]["split_by"] == "slice"
    packed = json.loads((naive.path / "packed.json").read_text(encoding="utf-8"))
    assert packed["naive"] is True
    assert sum(s["count"] for s in packed["splits"].values()) == len(slices)
