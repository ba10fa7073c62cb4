"""All probes at once: JSON without NaN, and files written atomically beside the dataset."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from covid19_images.probe import probe, replace_section, write_probe
from tests.probe._fake import DATASHEET, chest, rows, write_dataset

CLASSES = ["covid19", "normal", "pneumonia"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    manifest = rows({"train": 36, "val": 12, "test": 24}, ["a", "b", "c"], CLASSES, seed=8)
    manifest.loc[manifest["source"] == "c", "age"] = None  # some ages missing
    rng = np.random.default_rng(9)
    images = np.stack([chest(rng, 32) for _ in range(len(manifest))])
    return write_dataset(tmp_path / "ds", manifest, images, CLASSES)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _no_nan(text: str) -> object:
    def refuse(value: str) -> None:
        raise AssertionError(f"{value} in the JSON")

    return json.loads(text, parse_constant=refuse)


def test_probe_writes_its_files_and_one_datasheet_section(folder: Path) -> None:
    lock = (folder / "lock.json").read_bytes()
    (folder / "datasheet.md").chmod(0o644)
    uniform = probe(folder, lambda images: np.full((len(images), 3), 1 / 3), n_boot=20)
    assert uniform.lungs is not None and uniform.lungs.auroc["covid19"] is not None
    assert uniform.lungs.auroc["covid19"].point == pytest.approx(0.5)
    written = write_probe(folder, uniform)
    assert {p.name for p in written} == {
        "probe.json",
        "probe.md",
        "probe_region.png",
        "datasheet.md",
    }
    data = _no_nan((folder / "probe.json").read_text())
    assert isinstance(data, dict) and data["lungs_removed"]["n"] == 24
    assert data["weak_model"]["n_test"] == 24
    sheet = (folder / "datasheet.md").read_text()
    assert sheet.startswith(DATASHEET.rstrip("\n"))  # the build's sections stay as they were
    assert sheet.count("## Shortcut probes") == 1 and "### Lungs removed" in sheet
    assert "![the fixed lung region](probe_region.png)" in sheet
    # again, without a model: the section is replaced, not repeated
    again = probe(folder, n_boot=20)
    write_probe(folder, again)
    sheet = (folder / "datasheet.md").read_text()
    assert sheet.count("## Shortcut probes") == 1 and "### Lungs removed" not in sheet
    assert sheet.count("## Samples") == 1
    assert (folder / "lock.json").read_bytes() == lock
    assert stat.S_IMODE((folder / "datasheet.md").stat().st_mode) == 0o644  # still readable
    assert stat.S_IMODE((folder / "probe.json").stat().st_mode) & 0o044 == 0o044 & ~_umask()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    assert (folder / "probe.md").read_text().startswith("## Shortcut probes")


def test_out_takes_the_files_and_leaves_the_dataset_alone(folder: Path, tmp_path: Path) -> None:
    before = (folder / "datasheet.md").read_text()
    result = probe(folder, out=tmp_path / "run", run="run1", n_boot=10)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["probe.json", "probe.md"]
    assert (folder / "datasheet.md").read_text() == before
    assert result.run == "run1" and not (folder / "probe.json").exists()


def test_replace_section_keeps_the_sections_around_it() -> None:
    doc = "# D\n\n## A\n\na\n\n## Shortcut probes\n\nold\n\n### sub\n\nx\n\n## B\n\nb\n"
    new = replace_section(doc, "## Shortcut probes\n\nnew\n")
    assert new == "# D\n\n## A\n\na\n\n## Shortcut probes\n\nnew\n\n## B\n\nb\n"
    assert replace_section("# D\n\n", "## Shortcut probes\n") == "# D\n\n## Shortcut probes\n"
    assert replace_section(new, "## Shortcut probes\n\nnew\n") == new
