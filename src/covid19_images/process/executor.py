"""One interface for running per-item work: a local process pool, or a Dask cluster.

Every long step of a build calls :meth:`Executor.map` with a picklable top-level function and a
list of items; results come back in input order with a progress bar. :class:`LocalExecutor` runs
them in a local process pool; :class:`~covid19_images.process.dask_engine.DaskExecutor` (``build
--engine dask``) implements the same map on a ``dask.distributed`` cluster.

A per-item function turns the bad input it expects into a result (``error_kind`` and ``error``,
an error text, None), which its caller makes a row of ``problems.csv``. :func:`fails_as` says
which result stands for an item that an engine gave up on (it raised on every attempt, or its
worker died each time), so a cluster engine can hand the caller that instead of failing the
whole build; :func:`check_workers` lets an engine whose workers may run on other machines check
that they see the folders the work reads and writes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from covid19_images.progress import track

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs a function over items, in order, with progress."""

    workers: int

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], description: str = ""
    ) -> Iterator[R]: ...


_FAILED: dict[Callable[..., Any], Callable[[Any, str], Any]] = {}
"""Per-item function → what it returns for an item an engine gave up on."""


def fails_as(
    result: Callable[[T, str], R],
) -> Callable[[Callable[[T], R]], Callable[[T], R]]:
    """Declare a per-item function's result for an item that failed on every attempt.

    ``result(item, reason)`` builds what the function itself returns for bad input, so the
    caller writes the same kind of ``problems.csv`` row. The function is returned unchanged
    (still picklable by reference).

    Example:
        >>> @fails_as(lambda item, reason: {"item": item, "error": reason})
        ... def double(item: int) -> dict[str, object]:
        ...     return {"item": item, "value": 2 * item}
        >>> failed_result(double, 3, "worker died")
        {'item': 3, 'error': 'worker died'}
    """

    def mark(fn: Callable[[T], R]) -> Callable[[T], R]:
        _FAILED[fn] = result
        return fn

    return mark


def failed_result(fn: Callable[[T], R], item: T, reason: str) -> R:
    """``fn``'s result for ``item`` given up on (see :func:`fails_as`).

    Raises:
        LookupError: ``fn`` declares none; the engine should raise the item's error instead.

    Example:
        >>> failed_result(abs, -1, "worker died")
        Traceback (most recent call last):
        ...
        LookupError: abs declares no result for a failed item (process.executor.fails_as)
    """
    try:
        make = _FAILED[fn]
    except (KeyError, TypeError):
        name = getattr(fn, "__qualname__", repr(fn))
        raise LookupError(
            f"{name} declares no result for a failed item (process.executor.fails_as)"
        ) from None
    result: R = make(item, reason)
    return result


def check_workers(
    executor: Executor, writable: Sequence[Path], readable: Sequence[Path] = ()
) -> None:
    """Have ``executor`` check that its workers see these folders, if it can run elsewhere.

    Workers of a cluster engine may run on other machines: before any work, they must see the
    processed cache (``writable``) and the sources (``readable``) under the same paths as this
    process. A :class:`LocalExecutor`'s workers are this machine's processes: nothing to check.

    Example:
        >>> check_workers(LocalExecutor(workers=1), [Path("cache")])  # nothing to check
    """
    check = getattr(executor, "check_folders", None)
    if callable(check):
        check(list(writable), list(readable))


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def single_threaded() -> None:
    """Limit a worker's numeric libraries to one thread each (BLAS, OpenMP, OpenCV).

    The build's parallelism is its processes, one item each. A worker whose BLAS also starts a
    thread per core for a small product competes with the other workers for every core and
    spins while it waits: measured, the X-ray build's per-image work took 2.5 times as long
    with two workers.

    Example (skipped as a test: it limits the process it runs in for good):
        >>> single_threaded()  # doctest: +SKIP
    """
    from threadpoolctl import threadpool_limits

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"  # libraries loaded later in this worker (a spawned one)
    threadpool_limits(limits=1)  # those loaded already (a forked worker has numpy's)
    try:
        import cv2
    except ImportError:  # OpenCV is only needed by the copy search
        return
    cv2.setNumThreads(1)


class LocalExecutor:
    """A local process pool (``workers=1`` runs in this process, with no pool at all).

    Example:
        >>> list(LocalExecutor(workers=1, progress=False).map(abs, [-1, 2, -3]))
        [1, 2, 3]
    """

    def __init__(self, workers: int | None = None, progress: bool = True) -> None:
        self.workers = max(1, workers or default_workers())
        self.progress = progress

    def map(self, fn: Callable[[T], R], items: Sequence[T], description: str = "") -> Iterator[R]:
        """Apply ``fn`` to every item; results in input order.

        ``fn`` turns the bad input it expects into a result of its own; an exception it raises
        fails the map, and the build. (The Dask engine, whose workers can die under an item,
        hands back the item's :func:`fails_as` result instead.)"""
        if not items:
            return iter(())
        if self.workers == 1:
            results: Iterable[R] = map(fn, items)
            return self._with_progress(results, len(items), description)
        chunk = max(1, min(64, len(items) // (self.workers * 8)))
        pool = ProcessPoolExecutor(max_workers=self.workers, initializer=single_threaded)

        def run() -> Iterator[R]:
            with pool:
                yield from pool.map(fn, items, chunksize=chunk)

        return self._with_progress(run(), len(items), description)

    def _with_progress(self, results: Iterable[R], total: int, description: str) -> Iterator[R]:
        return track(results, total, description, enabled=self.progress)
