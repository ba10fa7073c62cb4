"""The probes on a dataset built from the real upstream files (ieee8023 with its lung masks,
and the Zhang Lab paediatric radiographs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from covid19_images.assemble.build import build
from covid19_images.explanation.energy import load_masks
from covid19_images.loaders.packed import open_split
from covid19_images.probe import probe, write_probe
from covid19_images.process.executor import LocalExecutor


@pytest.fixture(scope="module")
def built(shared_sources: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("probe-real")
    result = build(
        "xray-covid",
        out=work / "out",
        mirror=shared_sources,
        root=work / "root",
        size=64,
        sources=["ieee8023", "zhanglab"],
        executor=LocalExecutor(workers=2, progress=False),
        progress=False,
    )
    return result.path


def test_real_figures(built: Path, shared_sources: Path) -> None:
    seen: list[np.ndarray] = []

    def predict(images: np.ndarray) -> np.ndarray:
        """A stand-in for a run's model: brighter images are more likely covid19."""
        seen.append(images.copy())
        score = images.reshape(len(images), -1).mean(axis=1) / 255
        return np.stack([score, (1 - score) / 2, (1 - score) / 2], axis=1)

    result = probe(built, predict, mirror=shared_sources, n_boot=100)
    manifest = pd.read_parquet(built / "manifest.parquet").set_index("uid")
    test = open_split(built, "test")
    rows = manifest.loc[test.uids]

    # source: adults' figures against children's radiographs are told apart
    source = result.source
    assert source.ran and source.sources == ["ieee8023", "zhanglab"]
    assert source.balanced_accuracy is not None and source.chance == 0.5
    assert source.balanced_accuracy.low > source.chance, source.balanced_accuracy

    # age: every Zhang Lab image is a child's, no covid19 image is
    demo = result.demographics
    assert demo.classes["covid19"].children == 0.0
    zhang = manifest[manifest["source"] == "zhanglab"]
    normals = manifest[manifest["class"] == "normal"]
    assert (zhang["tags"].map(lambda t: "paediatric" in t)).all()
    assert demo.classes["normal"].n == len(normals)

    # weak model: scikit-learn's AUROC on its own predictions
    frame = result.weak.predictions
    auroc = result.weak.auroc["covid19"]
    assert auroc is not None
    assert auroc.point == pytest.approx(
        roc_auc_score(frame["class"] == "covid19", frame["prob_covid19"])
    )

    # lungs removed: the ieee8023 test images with a lung mask were blacked out along it
    lungs = result.lungs
    assert lungs is not None and lungs.n == len(test.uids)
    has_mask = rows["mask_paths"].map(len).to_numpy() > 0
    assert lungs.real_masks == int(has_mask.sum()) > 0
    masked = np.concatenate(seen[len(seen) // 2 :])
    real = load_masks(rows.reset_index(), 64, mirror=shared_sources)
    for k in np.flatnonzero(has_mask):
        mask = real[k]
        assert mask is not None
        assert (masked[k][mask] == 0).all()
        assert not np.array_equal(masked[k], test.images[k])

    written = write_probe(built, result, mirror=shared_sources)
    assert all(p.is_file() for p in written)
    json.loads((built / "probe.json").read_text())
    assert (built / "datasheet.md").read_text().count("## Shortcut probes") == 1
