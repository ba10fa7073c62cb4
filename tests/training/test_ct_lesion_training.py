"""CT lesion segmentation in the trainer, on ``ct-lesion-seg`` built from generated MedSeg and
Zenodo layouts with a planted lesion (``tests/ct_lesion_layouts.py``): a 3-D U-Net on the
volumes and a 2-D U-Net on the packed slices, both scored per volume; and on the real mirror,
which holds no CT volume with a lesion mask, one message that says why and how to get some.

The stored per-volume Dice is checked against MONAI's own ``DiceMetric`` on the files a user
reads back (the predicted NIfTI, the stacked slice PNGs) and the dataset's lesion NIfTI. The
lesion bound (mean test Dice above 0.6) cannot be met by a constant map (empty: 0;
everything: under 0.05 on these volumes) nor, as the test shows, by the untrained network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from covid19_images import RESEARCH_USE_NOTICE  # noqa: E402
from covid19_images.assemble.build import BuildResult  # noqa: E402
from covid19_images.process.ct.volume import read_nifti  # noqa: E402
from covid19_images.training import TrainConfig, TrainError, train  # noqa: E402
from covid19_images.training.run import Run  # noqa: E402
from tests.ct_lesion_layouts import SHAPE  # noqa: E402

BOUND = 0.6
"""The mean test Dice a trained run must exceed."""


@pytest.fixture(scope="module")
def run3d(lesion_seg: BuildResult, tmp_path_factory: pytest.TempPathFactory) -> Run:
    torch.set_num_threads(1)
    config = TrainConfig(
        "unet3d", epochs=3, size=32, batch_size=2, lr=3e-3, steps=8, augment="light", seed=0
    )
    return train(lesion_seg.path, config, out=tmp_path_factory.mktemp("runs3d"), n_boot=20)


@pytest.fixture(scope="module")
def run2d(lesion_seg: BuildResult, tmp_path_factory: pytest.TempPathFactory) -> Run:
    torch.set_num_threads(1)
    config = TrainConfig(
        "unet", epochs=3, size=32, batch_size=16, lr=3e-3, steps=8, augment="none", seed=0
    )
    return train(lesion_seg.path, config, out=tmp_path_factory.mktemp("runs2d"), n_boot=20)


def _lesion(folder: Path, row: Any) -> np.ndarray:
    """The dataset's lesion labels of a manifest row, (z, y, x)."""
    return np.asarray(read_nifti(folder / str(row["mask_path"])).array)


def _monai_dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    from monai.metrics import DiceMetric

    def onehot(labels: np.ndarray) -> Any:
        return torch.nn.functional.one_hot(torch.from_numpy(labels.astype(np.int64)), 2).movedim(
            -1, 0
        )[None]

    metric = DiceMetric(include_background=False, reduction="none")
    return float(metric(onehot(predicted), onehot(truth))[0, 0])


def _manifest(dataset: BuildResult) -> pd.DataFrame:
    return dataset.manifest.set_index("uid", drop=False)


def test_the_build_is_a_lesion_dataset_both_runs_can_use(lesion_seg: BuildResult) -> None:
    manifest = lesion_seg.manifest
    assert manifest["split"].value_counts().to_dict() == {"train": 7, "test": 3, "val": 2}
    assert manifest["tags"].map(lambda t: "not-hu" in list(t)).sum() == 5  # both intensity paths


def test_a_3d_run_needs_its_patch_side(lesion_seg: BuildResult, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="give their side in voxels with --size"):
        train(lesion_seg.path, TrainConfig("unet3d"), out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_3d_unet_writes_label_volumes_on_the_image_grid_scored_per_volume(
    lesion_seg: BuildResult, run3d: Run
) -> None:
    assert run3d.task == "volumes" and run3d.config["mask_labels"] == ["background", "lesion"]
    assert run3d.config["scoring"]["per"] == "volume"
    scores = run3d.predictions()
    manifest = _manifest(lesion_seg)
    for split in ("val", "test"):
        rows = scores[scores["split"] == split]
        assert sorted(rows["uid"]) == sorted(manifest[manifest["split"] == split]["uid"])
    for row in scores.to_dict("records"):
        entry = manifest.loc[row["uid"]]
        file = run3d.path / "predictions" / f"{row['uid']}.nii.gz"
        saved, image = nib.load(file), nib.load(lesion_seg.path / str(entry["path"]))
        assert saved.shape == image.shape  # type: ignore[attr-defined]
        np.testing.assert_allclose(saved.affine, image.affine)  # type: ignore[attr-defined]
        predicted = np.asarray(read_nifti(file).array)
        assert set(np.unique(predicted)) <= {0, 1}
        truth = _lesion(lesion_seg.path, entry)
        assert row["dice_lesion"] == pytest.approx(_monai_dice(predicted, truth), abs=1e-6)
        assert row["n_target_lesion"] == int(truth.sum())
        assert row["source"] == entry["source"]
        assert row["patient_id"] == entry["patient_id"] or pd.isna(entry["patient_id"])
    assert (run3d.path / "figures" / "overlays.png").is_file()


def test_the_3d_unet_learns_the_planted_lesion_and_random_weights_do_not(
    lesion_seg: BuildResult, run3d: Run
) -> None:
    from covid19_images.models import create
    from covid19_images.training.segmentation import mean_dice
    from covid19_images.training.tasks import Setting
    from covid19_images.training.volumes import predict_volume, read_pair

    test = run3d.predictions().query("split == 'test'")
    assert test["dice_lesion"].mean() > BOUND, test["dice_lesion"].tolist()
    torch.manual_seed(0)
    untrained = create("unet3d", 2).eval()
    setting = Setting(run3d.size, run3d.mean, run3d.std, torch.device("cpu"), 2)
    manifest = _manifest(lesion_seg)
    chance = []
    for uid in test["uid"]:
        row = manifest.loc[uid].to_dict()
        row["hu"] = json.loads(row["attributes"]).get("hu")
        volume = read_pair(lesion_seg.path, row)
        labels, _ = predict_volume(untrained, volume, setting)
        chance.append(mean_dice(labels[None], volume.label[None]))
    assert max(chance) < BOUND / 2, chance


def test_a_2d_unet_on_ct_slices_is_scored_per_stacked_volume(
    lesion_seg: BuildResult, run2d: Run
) -> None:
    from covid19_images.loaders.packed import open_split

    assert run2d.task == "segmentation" and run2d.config["mask_labels"] == ["background", "lesion"]
    scores = run2d.predictions()
    manifest = _manifest(lesion_seg)
    assert scores["uid"].is_unique and "slice" not in scores
    for split in ("val", "test"):
        rows = scores[scores["split"] == split]
        packed = open_split(lesion_seg.path, split)
        assert sorted(rows["uid"]) == sorted(set(packed.uids))
        for row in rows.to_dict("records"):
            files = [run2d.path / "predictions" / f"{row['uid']}-s{k}.png" for k in range(SHAPE[2])]
            stacked = np.stack([np.asarray(Image.open(f)) for f in files])
            truth = _lesion(lesion_seg.path, manifest.loc[row["uid"]])
            assert stacked.shape == truth.shape  # the slices' grid is the volume's here
            assert row["dice_lesion"] == pytest.approx(_monai_dice(stacked, truth), abs=1e-6)
    test = scores[scores["split"] == "test"]
    assert test["dice_lesion"].mean() > BOUND, test["dice_lesion"].tolist()
    assert (run2d.path / "figures" / "overlays.png").is_file()


@pytest.mark.parametrize("which", ["run3d", "run2d"])
def test_evaluate_reports_per_volume_dice_with_patient_intervals(
    which: str, request: pytest.FixtureRequest
) -> None:
    run: Run = request.getfixturevalue(which)
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["task"] == "segmentation" and metrics["unit"] == "volume"
    assert metrics["hd95_unit"] == "mm" and metrics["bootstrap"]["unit"] == "patient"
    test = run.predictions().query("split == 'test'")
    overall = {r["metric"]: r for r in metrics["volume"] if r["source"] == "all"}
    assert overall["dice_lesion"]["value"] == pytest.approx(test["dice_lesion"].mean())
    patients = {r["metric"]: r for r in metrics["patient"] if r["source"] == "all"}
    dice = patients["dice_lesion"]
    assert dice["n"] == 3 and dice["low"] <= dice["value"] <= dice["high"]
    report = (run.path / "report.md").read_text()
    assert report.startswith(f"> {RESEARCH_USE_NOTICE}") and "## Per volume" in report


def test_the_mirror_says_why_there_is_nothing_to_train_on(
    shared_sources: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from covid19_images.cli import app

    result = CliRunner().invoke(
        app,
        [
            "build",
            "ct-lesion-seg",
            "--mirror",
            str(shared_sources),
            "--root",
            str(tmp_path / "root"),
            "--out",
            str(tmp_path / "out"),
            "--no-fetch",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if "no CT volume" in line]
    assert len(lines) == 1  # one message, on one line
    message = lines[0]
    assert "ct-lesion-seg holds no CT volume with a lesion mask: nothing to train on" in message
    assert "`covid19-images fetch medseg-volumes zenodo-ct-seg` downloads them" in message
    assert "mosmeddata has 50 lesion masks but not their study volumes (1110 absent" in message
    assert "https://mosmed.ai/datasets/covid19_1110" in message
    with pytest.raises(TrainError, match="holds no CT volume with a lesion mask in any split"):
        train(
            tmp_path / "out" / "ct-lesion-seg",
            TrainConfig("unet3d", size=32),
            out=tmp_path / "runs",
        )
    assert not (tmp_path / "runs").exists()
