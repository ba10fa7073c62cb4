"""What a training run is asked to do, saved as ``config.json`` so the run can be repeated.

Example:
    >>> config = TrainConfig(model="resnet18", epochs=3, size=64)
    >>> config.balance, config.augment
    ('class-weights', 'light')
    >>> TrainConfig.from_dict(config.to_dict()) == config
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Final

from covid19_images.errors import Covid19ImagesError

BALANCE: Final = ("class-weights", "none")
"""How class imbalance is handled: inverse-frequency weights in the loss, or nothing."""
DEVICES: Final = ("auto", "cpu", "cuda")


class TrainError(Covid19ImagesError):
    """A run cannot be trained, resumed or read (bad option, dataset, or run folder)."""


class NotTrainableError(TrainError):
    """The rows chosen cannot train or score a model (one class, an empty split)."""


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run.

    Attributes:
        model: A name of :func:`covid19_images.models.available`.
        epochs: Most passes over the training split.
        size: Input side in pixels (default: the dataset's packed size, raised to the model's
            smallest size, e.g. 75 px for ``inception_v3``); batches are resized on the fly.
        batch_size: Images per step.
        lr: Peak learning rate of AdamW (cosine decay over ``epochs``).
        weight_decay: AdamW's weight decay.
        augment: ``none``, ``light`` or ``standard`` (:mod:`covid19_images.loaders.augment`).
        seed: Seeds the weights, the batch order and the augmentation draws.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``. AMP runs on CUDA.
        patience: Stop when the validation metric has not improved for this many epochs
            (0: never stop early).
        balance: ``class-weights`` (loss weighted by inverse class frequency) or ``none``.
        pretrained: ``False``, ``True`` (the library's weights; needs internet), a checkpoint
            path, or ``xrv:<weights>`` (see :func:`covid19_images.models.create`).
        workers: Loader processes (0: batches are read in the training process).
        leave_out: A source held out: training and validation leave it out, and it becomes
            the test set (leave-one-source-out).
        steps: Most steps per epoch (None: the whole split), for quick checks.
    """

    model: str
    epochs: int = 10
    size: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: str = "light"
    seed: int = 0
    device: str = "auto"
    patience: int = 5
    balance: str = "class-weights"
    pretrained: bool | str = False
    workers: int = 0
    leave_out: str | None = None
    steps: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, not {self.epochs}")
        if self.batch_size < 2:
            problems.append(f"batch size must be at least 2, not {self.batch_size}")
        if not self.lr > 0:
            problems.append(f"learning rate must be positive, not {self.lr}")
        if self.size is not None and self.size < 16:
            problems.append(f"size must be at least 16 px, not {self.size}")
        if self.device not in DEVICES:
            problems.append(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.balance not in BALANCE:
            problems.append(f"balance must be one of {', '.join(BALANCE)}, not {self.balance!r}")
        if self.patience < 0 or self.workers < 0:
            problems.append("patience and workers cannot be negative")
        if self.augment not in ("none", "light", "standard"):
            problems.append(f"augment must be none, light or standard, not {self.augment!r}")
        if self.steps is not None and self.steps < 1:
            problems.append(f"steps must be at least 1, not {self.steps}")
        if problems:
            raise TrainError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config of a ``config.json`` ``train`` section; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainError(f"unknown training options: {', '.join(unknown)}")
        return cls(**data)

    def differences(self, other: TrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
        """The options that differ from ``other``'s, as ``name: mine -> theirs``.

        Example:
            >>> TrainConfig("resnet18", lr=0.1).differences(TrainConfig("resnet18"))
            ['lr: 0.1 -> 0.001']
        """
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{name}: {mine[name]} -> {theirs[name]}"
            for name in mine
            if name not in ignore and mine[name] != theirs[name]
        ]
