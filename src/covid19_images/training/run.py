"""A run folder: what a training run wrote, and how to read it back.

```
runs/<name>/
├── config.json            options, dataset (path, recipe, lock.json sha256), classes, size,
│                          normalisation, versions: everything needed to rerun
├── model.safetensors      the best weights (by the validation metric)
├── checkpoints/
│   ├── best.safetensors
│   ├── last.safetensors
│   └── last.state.pt      optimiser, scheduler, scaler, RNG and history, for --resume
├── history.csv            per epoch: losses, validation metric, learning rate, seconds
├── curve.png              the training curve
├── predictions.parquet    uid, split, source, patient_id and the task's columns: per val and
│                          test image prob_<class>... (classification), pred_<score>...
│                          (regression), Dice/IoU/HD95 per image or CT volume (segmentation);
│                          per predicted box label, score, x0..y1 (detection)
├── predictions/           predicted label maps (PNG per image, NIfTI per volume)
├── metrics.json, report.md, figures/    the evaluation (figures/overlays.png: dense tasks)
```

Every file is written whole (temporary file, then rename). A run is complete when
``config.json`` says so; a run stopped part-way keeps its last checkpoint for ``--resume``.

Example:
    >>> run = load_run("runs/xray-covid-resnet18")  # doctest: +SKIP
    >>> run.classes, run.size  # doctest: +SKIP
    (['covid19', 'normal', 'pneumonia'], 64)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from covid19_images.training.config import TrainConfig, TrainError

if TYPE_CHECKING:
    import torch

RUN_VERSION: Final = 1
"""Bump when the run folder changes shape or meaning; other versions are refused."""
CONFIG: Final = "config.json"
WEIGHTS: Final = "model.safetensors"
HISTORY: Final = "history.csv"
PREDICTIONS: Final = "predictions.parquet"
CHECKPOINTS: Final = "checkpoints"


@dataclass
class Run:
    """A run folder read back: its config, and the model and predictions it made."""

    path: Path
    config: dict[str, Any]

    @property
    def train_config(self) -> TrainConfig:
        """The training options."""
        return TrainConfig.from_dict(self.config["train"])

    @property
    def model_name(self) -> str:
        """The registry name of the model."""
        return str(self.config["train"]["model"])

    @property
    def classes(self) -> list[str]:
        """Class names, in the order of the model's outputs."""
        return [str(c) for c in self.config["classes"]]

    @property
    def task(self) -> str:
        """The trainer's task (:data:`covid19_images.training.tasks.TASKS`)."""
        return str(self.config.get("task", "classification"))

    @property
    def size(self) -> int:
        """The input side in pixels."""
        return int(self.config["size"])

    @property
    def mean(self) -> float:
        """Normalisation mean (0-1 scale), the training dataset's."""
        return float(self.config["normalize"]["mean"])

    @property
    def std(self) -> float:
        """Normalisation standard deviation (0-1 scale), the training dataset's."""
        return float(self.config["normalize"]["std"])

    @property
    def dataset(self) -> Path:
        """The dataset folder the run was trained on."""
        return Path(self.config["dataset"]["path"])

    @property
    def complete(self) -> bool:
        """True once training finished and the predictions were written."""
        return bool(self.config.get("complete", False))

    def model(self, which: str = "best", device: str | torch.device = "cpu") -> torch.nn.Module:
        """The trained model in eval mode: ``best`` (``model.safetensors``) or ``last``."""
        from covid19_images.models import create

        file = (
            self.path / WEIGHTS
            if which == "best"
            else self.path / CHECKPOINTS / f"{which}.safetensors"
        )
        if not file.is_file():
            raise TrainError(f"{self.path} has no {which} weights ({file.name}): train it first")
        outputs = int(self.config.get("outputs", len(self.classes)))
        regression = self.task == "regression"  # a classification backbone, a linear head
        model = create(
            self.model_name,
            outputs,
            in_chans=1,
            task="regression" if regression else None,
            # a detection model resizes inside, to the run's size (torchvision's transform)
            image_size=self.size if self.task == "detection" else None,
        )
        load_weights(model, file)
        return model.to(device).eval()

    def predictions(self) -> pd.DataFrame:
        """``predictions.parquet``: one row per val and test image."""
        file = self.path / PREDICTIONS
        if not file.is_file():
            raise TrainError(f"{self.path} has no {PREDICTIONS}: the run did not finish")
        return pd.read_parquet(file)

    def predict(
        self,
        images: np.ndarray,
        *,
        model: torch.nn.Module | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> np.ndarray:
        """Class probabilities (N x classes) of uint8 images (N x S x S, any S), for a
        classification run (other tasks: :meth:`model` and the task's own inference).

        Example:
            >>> test = open_split("datasets/xray-covid", "test")  # doctest: +SKIP
            >>> probs = run.predict(test.images)  # doctest: +SKIP
        """
        import torch

        if self.task != "classification":
            raise TrainError(
                f"{self.path} is a {self.task} run: predict gives class probabilities of a "
                "classification run; use run.model() and the task's inference"
            )

        from covid19_images.training.data import predict_batches, resolve_device

        where = resolve_device(device)
        net = model if model is not None else self.model(device=where)
        batches = (
            (
                torch.from_numpy(np.asarray(images[i : i + batch_size], np.float32) / 255.0)[
                    :, None
                ],
                None,
            )
            for i in range(0, len(images), batch_size)
        )
        probs, _ = predict_batches(
            net,
            batches,
            size=self.size,
            mean=self.mean,
            std=self.std,
            device=where,
            classes=len(self.classes),
        )
        return probs


def load_run(path: Path | str) -> Run:
    """Read a run folder's ``config.json``, refusing another version's format.

    Example:
        >>> try:
        ...     load_run("/nonexistent/run")
        ... except TrainError as exc:
        ...     print(exc)
        /nonexistent/run is not a run folder of covid19-images (no config.json)
    """
    path = Path(path)
    file = path / CONFIG
    if not file.is_file():
        raise TrainError(f"{path} is not a run folder of covid19-images (no {CONFIG})")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainError(f"{file} cannot be read ({exc})") from None
    if not isinstance(config, dict) or config.get("run_version") != RUN_VERSION:
        found = config.get("run_version") if isinstance(config, dict) else None
        raise TrainError(
            f"{path} is a run folder of format {found}, this covid19-images reads format "
            f"{RUN_VERSION}: train it again with this version"
        )
    try:
        TrainConfig.from_dict(config["train"])
        missing = [k for k in ("classes", "size", "normalize", "dataset") if k not in config]
        if missing:
            raise KeyError(missing[0])
    except (KeyError, TypeError) as exc:
        raise TrainError(f"{file} lacks {exc}: the run folder is damaged") from None
    return Run(path, config)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's state dict as safetensors, written atomically."""
    from safetensors.torch import save_file

    from covid19_images.atomic import replacing

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with replacing(path) as tmp:
        save_file(state, str(tmp))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a safetensors state dict saved by :func:`save_weights` (strict)."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise TrainError(f"{path} does not fit the run's model ({str(exc)[:300]})") from None
