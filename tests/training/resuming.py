"""Stopping a training run part-way, as a user's Ctrl-C would, for the resume tests.

Example:
    >>> train(dataset, config, out=runs, log=stop_after(1))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable


def stop_after(epoch: int) -> Callable[[str], None]:
    """A ``log`` for :func:`covid19_images.training.train` that raises ``KeyboardInterrupt``
    on the line of ``epoch`` (1-based): after that epoch's checkpoint and history are
    written, before the next epoch starts."""
    prefix = f"epoch {epoch}/"

    def log(line: str) -> None:
        if line.startswith(prefix):
            raise KeyboardInterrupt

    return log
