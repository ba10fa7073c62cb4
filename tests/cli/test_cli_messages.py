"""The command line names the real cause of a build that cannot start, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from covid19_images.cli.app import app

runner = CliRunner()


def _build(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(
        app,
        ["build", "xray-covid", "--root", str(tmp_path / "r"), "--out", str(tmp_path / "o"), *args],
    )
    return result.exit_code, " ".join(result.output.split())  # unwrapped


def test_a_mirror_that_does_not_exist_is_named(tmp_path: Path) -> None:
    code, out = _build(tmp_path, "--no-fetch", "--mirror", str(tmp_path / "no-such-dir"))
    assert code == 1
    assert "mirror folder" in out and "does not exist" in out and "no-such-dir" in out
    assert "pass --mirror" not in out and "Traceback" not in out
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_a_source_of_another_modality_is_named(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    code, out = _build(
        tmp_path, "--no-fetch", "--mirror", str(tmp_path / "m"), "--sources", "mosmeddata"
    )
    assert code == 1
    assert "mosmeddata" in out and "X-ray" in out
    assert "looked for nothing" not in out and "Traceback" not in out


def test_unusable_metadata_is_named_not_called_absent(shared_sources: Path, tmp_path: Path) -> None:
    upstream = shared_sources / "figure1-covid-chestxray"
    mirror = tmp_path / "m"
    (mirror / "figure1-covid-chestxray").mkdir(parents=True)
    (mirror / "figure1-covid-chestxray" / "images").symlink_to(upstream / "images")
    header, rest = (upstream / "metadata.csv").read_bytes().split(b"\n", 1)
    assert b",finding," in header
    renamed = header.replace(b",finding,", b",diagnosis,")  # the column the adapter needs
    (mirror / "figure1-covid-chestxray" / "metadata.csv").write_bytes(renamed + b"\n" + rest)

    code, out = _build(tmp_path, "--no-fetch", "--mirror", str(mirror), "--sources", "figure1")

    assert code == 1
    assert "figure1 is present but gave no image" in out
    assert "metadata.csv" in out and "finding" in out
    assert "none of its sources is present" not in out and "Traceback" not in out


@pytest.mark.parametrize("recipe", ["xray-covid", "ct-covid"])
def test_recipes_reject_sources_of_the_other_modality_before_any_work(
    tmp_path: Path, recipe: str
) -> None:
    from covid19_images.assemble.build import BuildError, build

    other = "mosmeddata" if recipe == "xray-covid" else "figure1"
    with pytest.raises(BuildError, match=other):
        build(recipe, out=tmp_path / "o", root=tmp_path / "r", sources=[other], fetch=False)
    assert not (tmp_path / "o").exists()


def test_an_out_path_that_is_a_file_fails_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "o").write_text("not a folder", encoding="utf-8")
    code, out = _build(tmp_path, "--no-fetch", "--mirror", str(tmp_path / "m"))
    assert code == 1
    assert "is a file, not a folder" in out and "Traceback" not in out
    assert not (tmp_path / "r").exists()  # nothing was fetched, hashed or decoded


def test_a_negative_seed_is_refused_when_parsed(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    code, out = _build(tmp_path, "--no-fetch", "--mirror", str(tmp_path / "m"), "--seed", "-1")
    assert code == 2
    assert "--seed" in out and "Traceback" not in out
    assert not (tmp_path / "r").exists()


def test_an_unknown_recipe_gets_a_suggestion() -> None:
    result = runner.invoke(app, ["build", "xray-covi", "--no-fetch"])
    out = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "did you mean xray-covid" in out and "Traceback" not in out


def test_an_unknown_view_is_one_line_without_a_url(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    code, out = _build(tmp_path, "--no-fetch", "--mirror", str(tmp_path / "m"), "--views", "PX")
    assert code == 2
    assert "unknown views ['PX']" in out
    assert "http" not in out and "Traceback" not in out


def test_audit_exit_codes_tell_an_error_from_a_finding(tmp_path: Path) -> None:
    not_a_dataset = runner.invoke(app, ["audit", str(tmp_path / "typo")])
    assert not_a_dataset.exit_code == 2
    assert "manifest.parquet" in not_a_dataset.output


def test_export_of_a_typo_leaves_nothing_behind(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(tmp_path / "typo"), "--format", "imagefolder"])
    assert result.exit_code == 2
    assert "not a dataset" in " ".join(result.output.split())
    assert not (tmp_path / "typo").exists()


def test_a_forced_rebuild_keeps_the_exports_a_user_made(
    shared_sources: Path, tmp_path: Path
) -> None:
    args = ["--no-fetch", "--mirror", str(shared_sources), "--sources", "figure1"]
    code, out = _build(tmp_path, *args)
    assert code == 0, out
    dataset = tmp_path / "o" / "xray-covid"
    exported = runner.invoke(app, ["export", str(dataset), "--format", "imagefolder"])
    assert exported.exit_code == 0, exported.output
    made = sorted(p.relative_to(dataset) for p in (dataset / "exports").rglob("*.png"))
    assert made

    code, out = _build(tmp_path, *args, "--force")

    assert code == 0, out
    assert sorted(p.relative_to(dataset) for p in (dataset / "exports").rglob("*.png")) == made
    assert not list((tmp_path / "o").glob(".*"))  # no partial or old folder left beside it


def test_strict_fails_on_input_problems_only(shared_sources: Path, tmp_path: Path) -> None:
    upstream = shared_sources / "figure1-covid-chestxray"
    mirror = tmp_path / "m" / "figure1-covid-chestxray"
    mirror.mkdir(parents=True)
    (mirror / "images").symlink_to(upstream / "images")
    text = (upstream / "metadata.csv").read_bytes().decode("cp1252")  # upstream is not UTF-8
    for vague, years in (("early 40s", "42"), ("mid 50s", "55")):  # ages that are not numbers
        text = text.replace(f",{vague},", f",{years},")
    last = text.rstrip("\n").splitlines()[-1].split(",", 1)
    absent = f"COVID-99999,{last[1]}\n"  # a row whose image the download does not hold
    (mirror / "metadata.csv").write_text(text.rstrip("\n") + "\n" + absent, encoding="utf-8")

    code, out = _build(tmp_path, "--no-fetch", "--mirror", str(tmp_path / "m"))
    assert code == 0, out
    assert "no input problems" in out
    assert "1 row whose file is absent (missing-file 1)" in out
    code, out = _build(tmp_path, "--no-fetch", "--mirror", str(tmp_path / "m"), "--strict")
    assert code == 0, out

    # A real problem (the file is not UTF-8 again) turns --strict into an exit code.
    (mirror / "metadata.csv").write_bytes((upstream / "metadata.csv").read_bytes())
    code, out = _build(tmp_path, "--no-fetch", "--mirror", str(tmp_path / "m"), "--strict")
    assert code == 1
    assert "bad-encoding 1" in out


def test_brackets_in_paths_are_printed_as_they_are(tmp_path: Path) -> None:
    odd = tmp_path / "[covid]" / "[/x]"  # rich markup, if it were read as markup
    result = runner.invoke(app, ["audit", str(odd)])
    out = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "[covid]" in out and "[/x]" in out and "Traceback" not in out
