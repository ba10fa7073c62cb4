"""One interface for running per-item work: a local process pool now, a cluster engine later.

Every long step of a build calls :meth:`Executor.map` with a picklable top-level function and a
list of items; results come back in input order with a progress bar. A Dask engine only has to
implement the same method.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol, TypeVar

from covid19_images.progress import track

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs a function over items, in order, with progress."""

    workers: int

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], description: str = ""
    ) -> Iterator[R]: ...


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
        """Apply ``fn`` to every item; results in input order."""
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
