"""Classification in the trainer: class weights, cross-entropy, macro AUROC on val, and one row
of class probabilities per val and test image (research use only).

Example:
    >>> ClassificationTask().name
    'classification'
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from covid19_images.training.config import NotTrainableError, TrainConfig
from covid19_images.training.data import Part, in_order, predict_batches, prepare
from covid19_images.training.tasks import Setting, Task

if TYPE_CHECKING:
    import torch


class ClassificationTask(Task):
    """One class per image: the registry's classifiers, cross-entropy weighted by inverse
    class frequency (``--balance class-weights``), macro one-vs-rest AUROC on val."""

    name = "classification"
    model_task = "classification"
    evaluator = "covid19_images.training.assess:evaluate_classification"

    def __init__(self) -> None:
        self.classes = 0
        self.criterion: torch.nn.Module | None = None
        self.plain: torch.nn.Module | None = None

    def outputs(self, folder: Path, facts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.classes = len(facts["classes"])
        return self.classes, {}

    def min_size(self, model: str) -> int:
        from covid19_images.models.registry import get_spec

        return get_spec(model).min_size

    def check(self, parts: dict[str, Part], classes: list[str]) -> None:
        super().check(parts, classes)
        present = sorted({classes[i] for i in parts["train"].labels})
        if len(present) < 2:
            raise NotTrainableError(f"the training split holds one class only ({present[0]})")

    def setup(self, parts: dict[str, Part], config: TrainConfig, setting: Setting) -> None:
        import torch

        weights = (
            class_weights(parts["train"].labels, self.classes)
            if config.balance == "class-weights"
            else None
        )
        self.criterion = torch.nn.CrossEntropyLoss(
            weight=None if weights is None else weights.to(setting.device)
        )
        self.plain = torch.nn.CrossEntropyLoss()

    def loss(
        self, model: torch.nn.Module, batch: Any, setting: Setting
    ) -> tuple[torch.Tensor, int]:
        images, labels = batch
        assert self.criterion is not None
        x = prepare(images, setting.size, setting.mean, setting.std, setting.device)
        return self.criterion(model(x), labels.to(setting.device)), len(labels)

    def validate(
        self, model: torch.nn.Module, part: Part, setting: Setting
    ) -> tuple[float, str, float]:
        probs, loss = self.probabilities(model, part, setting)
        metric, name = val_metric(part.labels, probs, loss, probs.shape[1])
        return metric, name, loss

    def probabilities(
        self, model: torch.nn.Module, part: Part, setting: Setting
    ) -> tuple[np.ndarray, float]:
        """Softmax probabilities of every row of ``part`` and the mean (unweighted) loss."""
        import torch

        classes = int(part.facts["label"].max()) + 1 if len(part) else 0
        return predict_batches(
            model,
            in_order(part, 2 * setting.batch_size),
            size=setting.size,
            mean=setting.mean,
            std=setting.std,
            device=setting.device,
            classes=classes,
            criterion=self.plain or torch.nn.CrossEntropyLoss(),
        )

    def predictions(
        self,
        run_dir: Path,
        model: torch.nn.Module,
        parts: dict[str, Part],
        setting: Setting,
        record: dict[str, Any],
    ) -> pd.DataFrame:
        """One row per val and test image: its facts and ``prob_<class>`` per class."""
        classes = [str(c) for c in record["classes"]]
        frames = []
        for split in ("val", "test"):
            probs, _ = self.probabilities(model, parts[split], setting)
            frame = parts[split].facts.drop(columns=["label"]).assign(split=split)
            for k, cls in enumerate(classes):
                frame[f"prob_{cls}"] = probs[:, k] if len(probs) else np.zeros(0, dtype=np.float32)
            frames.append(frame)
        predictions = pd.concat(frames, ignore_index=True)
        columns = ["uid", "split", "source", "patient_id", "class"]
        columns += ["slice"] if "slice" in predictions else []
        return predictions[columns + [f"prob_{c}" for c in classes]]


def class_weights(labels: np.ndarray, n: int) -> torch.Tensor:
    """Inverse class frequency, scaled so a balanced set gets weight 1 for every class.

    Example:
        >>> class_weights(np.array([0, 0, 0, 1]), 2).tolist()
        [0.6666666865348816, 2.0]
    """
    import torch

    counts = np.bincount(labels, minlength=n).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def val_metric(labels: np.ndarray, probs: np.ndarray, loss: float, n: int) -> tuple[float, str]:
    """Macro one-vs-rest AUROC over the classes val can score; minus the loss otherwise.

    Example:
        >>> val_metric(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), 0.3, 2)
        (1.0, 'auroc')
    """
    from sklearn.metrics import roc_auc_score

    scores = [
        roc_auc_score(labels == k, probs[:, k])
        for k in range(n)
        if 0 < int((labels == k).sum()) < len(labels)
    ]
    if scores:
        return float(np.mean(scores)), "auroc"
    return -loss, "neg_loss"
