"""Training: a registry model on a built dataset, written to a run folder (research use only).

Example:
    >>> from covid19_images.training import TrainConfig
    >>> TrainConfig("densenet121", epochs=2).epochs
    2
"""

from covid19_images.training.config import TrainConfig, TrainError
from covid19_images.training.loop import default_name, train
from covid19_images.training.run import Run, load_run

__all__ = ["Run", "TrainConfig", "TrainError", "default_name", "load_run", "train"]
