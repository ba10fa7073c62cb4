"""Progress bars for every long step of a build, one look everywhere.

A step that walks many items (decoding, comparing candidate pairs, packing arrays, hashing a
dataset for its audit) wraps its loop in :func:`track`. The bar goes to stderr, so a command's
own output (a table, JSON) stays clean, and it disappears when the step ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def track(
    items: Iterable[T], total: int | None, description: str, enabled: bool = True
) -> Iterator[T]:
    """Yield ``items``, with a transient progress bar on stderr when ``enabled``.

    Example:
        >>> list(track([1, 2, 3], 3, "counting", enabled=False))
        [1, 2, 3]
    """
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task(description or "working", total=total)
        for item in items:
            yield item
            bar.advance(task)
