"""fastai DataLoaders from a built dataset: a Learner trains on them."""

from __future__ import annotations

import pytest

import covid19_images as ci
from covid19_images.assemble.build import BuildResult

pytest.importorskip("fastai", reason="fastai is not installed: pip install '.[fastai]'")


def test_a_learner_trains_a_few_steps(xray_dataset: BuildResult) -> None:
    import torch
    from fastai.callback.progress import ProgressCallback
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy

    dls = ci.load(xray_dataset.path, framework="fastai", bs=16, augment="light")
    manifest = xray_dataset.manifest
    assert dls.vocab == ["covid19", "normal", "pneumonia"] and dls.c == 3
    assert len(dls.train.dataset) == int((manifest["split"] == "train").sum())
    assert len(dls.valid.dataset) == int((manifest["split"] == "val").sum())
    x, y = next(iter(dls.train))
    assert tuple(x.shape) == (16, 1, 224, 224) and y.dtype == torch.int64
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 5, stride=4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 3),
    )
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    learn.remove_cb(ProgressCallback)
    learn.fit(1, lr=1e-3)
    train_loss, valid_loss, acc = learn.recorder.values[-1]
    assert train_loss > 0 and valid_loss > 0 and 0.0 <= acc <= 1.0
