"""Resuming the newer tasks: a run stopped after its first epoch and resumed gives exactly the
history (all but the timings), the last weights and the predictions of a run that was never
stopped, on a CPU, for severity regression (the planted regression images), CT volumes
(``unet3d`` on ``ct-lesion-seg`` from generated layouts) and detection (``maskrcnn_light`` on
``xray-lung-boxes`` from ../shared/sources). The classification resume is in
``test_train.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from covid19_images.training import TrainConfig, train  # noqa: E402
from covid19_images.training.run import CHECKPOINTS, HISTORY, Run, load_run  # noqa: E402
from tests.training.resuming import stop_after  # noqa: E402

CONFIGS = {
    "planted": TrainConfig("resnet18", epochs=2, size=32, batch_size=8, steps=2, seed=3),
    "lesion_seg": TrainConfig("unet3d", epochs=2, size=32, batch_size=2, steps=2, seed=3),
    "lung_boxes": TrainConfig("maskrcnn_light", epochs=2, batch_size=4, steps=2, seed=3),
}
"""Two short epochs with augmentation (the default, ``light``) per task, by dataset fixture."""

NEEDS = {"lesion_seg": ("monai",), "lung_boxes": ("torchvision", "pycocotools")}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def last_weights(run: Run) -> dict[str, Any]:
    """The tensors of the run's ``checkpoints/last.safetensors`` by name."""
    from safetensors.torch import load_file

    return load_file(run.path / CHECKPOINTS / "last.safetensors")


@pytest.mark.parametrize("dataset", list(CONFIGS))
def test_a_run_stopped_after_one_epoch_resumes_to_the_uninterrupted_numbers(
    dataset: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    for module in NEEDS.get(dataset, ()):
        pytest.importorskip(module)
    found = request.getfixturevalue(dataset)
    folder = found if isinstance(found, Path) else found.path
    config = CONFIGS[dataset]
    whole = train(folder, config, out=tmp_path, name="whole", evaluate=False)

    with pytest.raises(KeyboardInterrupt):
        train(folder, config, out=tmp_path, name="cut", evaluate=False, log=stop_after(1))
    cut = load_run(tmp_path / "cut")
    assert not cut.complete
    assert list(pd.read_csv(cut.path / HISTORY)["epoch"]) == [1]
    resumed = train(folder, config, out=tmp_path, name="cut", resume=True, evaluate=False)
    assert resumed.complete and resumed.task == whole.task

    history = pd.read_csv(resumed.path / HISTORY)
    assert list(history["epoch"]) == [1, 2]
    pd.testing.assert_frame_equal(
        history.drop(columns=["seconds"]),
        pd.read_csv(whole.path / HISTORY).drop(columns=["seconds"]),
    )
    expected, weights = last_weights(whole), last_weights(resumed)
    assert expected.keys() == weights.keys()
    differ = [k for k in expected if not torch.equal(expected[k], weights[k])]
    assert not differ, f"{len(differ)} of {len(expected)} tensors differ, e.g. {differ[:3]}"
    pd.testing.assert_frame_equal(resumed.predictions(), whole.predictions())
