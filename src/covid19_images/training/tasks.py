"""What differs between the trainer's tasks, behind one interface (research use only).

:func:`covid19_images.training.train` owns what every task shares: the checks before a run
folder is touched, the optimiser and schedule, AMP, checkpoints, ``--resume``, early stopping,
``history.csv`` and the curve. A :class:`Task` says the rest: which model to build, what one
training step's loss is, how validation scores a model, what the prediction rows are, and how
``evaluate`` scores them. Each task lives in its own module and is imported only when a run of
that task is trained or evaluated:

==============  ==============================  ===========================================
task            dataset (``packed.json``)        module
==============  ==============================  ===========================================
classification  classes per image                :mod:`~covid19_images.training.classification`
segmentation    a label map per image or slice   :mod:`~covid19_images.training.segmentation`
volumes         the same, a 3-D model            :mod:`~covid19_images.training.volumes`
regression      float scores per image           :mod:`~covid19_images.training.regression`
detection       boxes (and masks) per image      :mod:`~covid19_images.training.detection`
==============  ==============================  ===========================================

Example:
    >>> task_name("segmentation", "unet3d"), task_name("classification", "resnet18")
    ('volumes', 'classification')
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from covid19_images.training.config import TrainConfig, TrainError
from covid19_images.training.data import Part, iterate, open_part

if TYPE_CHECKING:
    import torch

    from covid19_images.training.run import Run

TASKS = {
    "classification": "covid19_images.training.classification:ClassificationTask",
    "segmentation": "covid19_images.training.segmentation:SegmentationTask",
    "volumes": "covid19_images.training.volumes:VolumeTask",
    "regression": "covid19_images.training.regression:RegressionTask",
    "detection": "covid19_images.training.detection:DetectionTask",
}
"""Task name → ``module:class`` of its :class:`Task`."""

VOLUME_MODELS = frozenset({"unet3d"})
"""Models that take whole volumes (the ``volumes`` task on a segmentation dataset)."""


def task_name(dataset_task: str, model: str) -> str:
    """The trainer's task for a dataset of ``dataset_task`` and a model.

    A 3-D model on a segmentation dataset trains on its volumes; every other pair trains the
    dataset's own task.
    """
    if dataset_task == "segmentation" and model in VOLUME_MODELS:
        return "volumes"
    return dataset_task


@dataclass
class Setting:
    """What every step of a run needs: the input side, the normalisation and the device."""

    size: int
    mean: float
    std: float
    device: torch.device
    batch_size: int


class Task:
    """One task of the trainer. Subclasses override what differs from classification-like
    defaults; every method receives what it needs, so one instance serves a whole run.

    Attributes:
        name: The task's name (a key of :data:`TASKS`).
        model_task: The registry task of its models (:func:`covid19_images.models.available`).
        evaluator: ``module:function`` that scores a finished run; it takes the run and those
            of ``dataset``, ``split``, ``out``, ``rule``, ``n_boot``, ``seed`` and ``device``
            its signature names.
    """

    name = "task"
    model_task = "classification"
    evaluator = ""
    """``module:function`` that scores a finished run (``evaluate``)."""

    def outputs(self, folder: Path, facts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The model's number of outputs, and what ``config.json`` records about them."""
        return len(facts["classes"]), {}

    def min_size(self, model: str) -> int:
        """The smallest input side the model takes."""
        return 32

    def parts(self, folder: Path, config: TrainConfig) -> dict[str, Part]:
        """Train (augmented), val and test rows."""
        return {
            "train": open_part(folder, "train", augment=config.augment, seed=config.seed),
            "val": open_part(folder, "val"),
            "test": open_part(folder, "test"),
        }

    def check(self, parts: dict[str, Part], classes: list[str]) -> None:
        """Refuse parts nothing can be trained or scored on
        (:class:`~covid19_images.training.config.NotTrainableError`)."""
        from covid19_images.training.config import NotTrainableError

        if len(parts["train"]) < 2:
            raise NotTrainableError(
                "the training split has fewer than 2 images: nothing to train on"
            )
        for name in ("val", "test"):
            if len(parts[name]) == 0:
                raise NotTrainableError(
                    f"the {name} split is empty: rebuild with more data or other ratios"
                )

    def model(self, config: TrainConfig, outputs: int, record: dict[str, Any]) -> torch.nn.Module:
        """The model, built by the registry."""
        from covid19_images.models import create

        return create(config.model, outputs, in_chans=1, pretrained=config.pretrained)

    def setup(self, parts: dict[str, Part], config: TrainConfig, setting: Setting) -> None:
        """Build what the steps need (a loss with class weights, say) once per run."""

    def batches(self, part: Part, config: TrainConfig, epoch: int) -> tuple[Iterator[Any], int]:
        """One epoch's shuffled, augmented training batches, and how many there are."""
        chunks = part.batches(config.batch_size, epoch, shuffle=True, seed=config.seed)
        steps = min(len(chunks), config.steps or 10**9)
        batches = iterate(
            part,
            config.batch_size,
            epoch,
            shuffle=True,
            seed=config.seed,
            steps=config.steps,
            workers=config.workers,
        )
        return batches, steps

    def loss(
        self, model: torch.nn.Module, batch: Any, setting: Setting
    ) -> tuple[torch.Tensor, int]:
        """One training batch's loss (with autocast around it) and its number of images."""
        raise NotImplementedError

    def validate(
        self, model: torch.nn.Module, part: Part, setting: Setting
    ) -> tuple[float, str, float]:
        """The validation metric (higher is better), its name, and the validation loss."""
        raise NotImplementedError

    def predictions(
        self,
        run_dir: Path,
        model: torch.nn.Module,
        parts: dict[str, Part],
        setting: Setting,
        record: dict[str, Any],
    ) -> pd.DataFrame:
        """One row per val and test item (``predictions.parquet``); files beside it (label
        maps, figures) go into ``run_dir``."""
        raise NotImplementedError

    def evaluate(
        self,
        run: Run,
        *,
        dataset: Path | str | None,
        split: str,
        out: Path | str | None,
        rule: str,
        n_boot: int,
        seed: int,
        device: str,
    ) -> dict[str, Any]:
        """Score a finished run's ``split``: ``metrics.json`` and ``report.md`` (and figures),
        by the task's :attr:`evaluator` (given the options its signature names)."""
        import inspect

        module, name = self.evaluator.split(":")
        function = getattr(importlib.import_module(module), name)
        options = {
            "dataset": dataset,
            "split": split,
            "out": out,
            "rule": rule,
            "n_boot": n_boot,
            "seed": seed,
            "device": device,
        }
        taken = inspect.signature(function).parameters
        result: dict[str, Any] = function(run, **{k: v for k, v in options.items() if k in taken})
        return result


def get_task(name: str) -> Task:
    """The :class:`Task` of ``name``.

    Example:
        >>> get_task("classification").name
        'classification'
    """
    target = TASKS.get(name)
    if target is None:
        raise TrainError(f"train does not take {name} datasets (tasks: {', '.join(TASKS)})")
    module, cls = target.split(":")
    task: Task = getattr(importlib.import_module(module), cls)()
    return task
