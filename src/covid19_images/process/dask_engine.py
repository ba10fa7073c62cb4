"""``build --engine dask``: the build's per-item work on a ``dask.distributed`` cluster.

:class:`DaskExecutor` implements :meth:`~covid19_images.process.executor.Executor.map` on a
cluster: an existing one (``--scheduler ADDRESS``) or a ``LocalCluster`` of ``--workers``
processes that it starts on first use and closes with itself. Everything that goes through the
executor runs on the workers: decoding and hashing images, placing masks, reading CT volumes,
writing DICOM copies, hashing a split's images for its audit.

- Bounded memory on the client: at most ``window`` items are submitted and not yet handed to
  the caller; the next is submitted only when the oldest is handed over, so the client never
  holds more than ``window`` results however long the list.
- Order: results come back in input order, as :class:`LocalExecutor`'s do, with the same
  progress bar (:func:`covid19_images.progress.track`).
- Failures: an item is submitted with ``retries``; the tasks of a worker that dies are computed
  again on another one (Dask's ``distributed.scheduler.allowed-failures``). An item that still
  fails becomes its function's failure result (:func:`~covid19_images.process.executor.fails_as`),
  a row of ``problems.csv``, and the build goes on.
- Shared folders: the workers write the processed cache and read the sources under the same
  paths as the client. :meth:`DaskExecutor.check_folders` (called by ``build`` before any work)
  writes a probe file into the cache from the client and has every worker find it and write
  its own beside it: a worker on another file system, or with another working directory for a
  relative path, is one clear :class:`ClusterError`.

Needs ``pip install "covid19-images[dask]"``; without it, creating a :class:`DaskExecutor` is a
:class:`ClusterError` that says so.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from covid19_images.errors import Covid19ImagesError
from covid19_images.process.executor import default_workers, failed_result, single_threaded
from covid19_images.process.image import without_addresses
from covid19_images.progress import track

if TYPE_CHECKING:
    from distributed import Client, Future, LocalCluster

T = TypeVar("T")
R = TypeVar("R")

INSTALL_HINT = 'pip install "covid19-images[dask]"'
PROBE_PREFIX = ".covid19-images-probe-"
WAIT_FOR_WORKERS_S = 120
"""How long a build waits for the first worker of a scheduler that has none yet."""


class ClusterError(Covid19ImagesError):
    """The Dask engine cannot run: dask missing, no scheduler, or folders workers cannot see."""

    exit_code = 2


def _distributed() -> Any:
    """The ``distributed`` module, or a :class:`ClusterError` saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError(
            f"the dask engine needs dask.distributed, which is not installed: {INSTALL_HINT}"
        ) from exc
    return distributed


def _one_thread_plugin() -> Any:
    """A worker plugin that runs :func:`single_threaded` in every worker, restarted ones too."""
    _distributed()
    from distributed import WorkerPlugin

    class SingleThreaded(WorkerPlugin):
        """Numeric libraries on one thread per worker process (the pool's initializer)."""

        def setup(self, worker: object) -> None:
            single_threaded()

    return SingleThreaded()


class DaskExecutor:
    """Runs the build's per-item work on a ``dask.distributed`` cluster.

    Args:
        scheduler: Address of a running scheduler (``tcp://host:8786``); None starts a
            ``LocalCluster`` on first use, closed by :meth:`close`.
        workers: Worker processes of that ``LocalCluster`` (default: all cores); not used
            with ``scheduler``.
        progress: Show the progress bar and print the dashboard address once.
        retries: Further attempts for an item whose function raises.
        batch: Items per Dask task (default: as the local pool's chunks, 1 to 64, about 8
            tasks per worker thread): a task costs the scheduler about a millisecond, an
            image's work a few. A batch that raises runs again item by item.
        window: Most items submitted and not yet handed back (default: 4 batches per worker
            thread, at least 8 batches).
        client: A ``distributed.Client`` to use as it is (not closed by :meth:`close`).
        cluster_options: More ``LocalCluster`` arguments (e.g. ``dashboard_address=None``).

    Example:
        >>> from covid19_images.assemble.build import build
        >>> with DaskExecutor(workers=4) as engine:  # doctest: +SKIP
        ...     build("xray-covid", out="out", mirror="../shared/sources", executor=engine)
        >>> engine = DaskExecutor("tcp://scheduler:8786")  # doctest: +SKIP
        >>> list(engine.map(abs, [-1, 2, -3]))  # doctest: +SKIP
        [1, 2, 3]
        >>> engine.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        workers: int | None = None,
        progress: bool = True,
        retries: int = 2,
        batch: int | None = None,
        window: int | None = None,
        client: Client | None = None,
        cluster_options: dict[str, Any] | None = None,
    ) -> None:
        _distributed()  # fail now, with the install hint, not at the first map
        if scheduler is not None and workers is not None:
            raise ClusterError(
                "--workers sets the size of the local cluster the build starts; a cluster "
                "given by --scheduler has its own workers (start more of them there)"
            )
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, not {retries}")
        if window is not None and window < 1:
            raise ValueError(f"window must be 1 or more, not {window}")
        if batch is not None and batch < 1:
            raise ValueError(f"batch must be 1 or more, not {batch}")
        self.scheduler = scheduler
        self.local_workers = workers or default_workers()
        self.workers = 1 if scheduler is not None else self.local_workers
        """Worker threads on the cluster (known once started)."""
        self.progress = progress
        self.retries = retries
        self.batch = batch
        self.window = window
        self.cluster_options = cluster_options or {}
        self._client: Client | None = client
        self._owns_client = client is None
        self._cluster: LocalCluster | None = None
        self._ready = False

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def client(self) -> Client:
        """The ``distributed.Client``, connected (and the cluster started) on first use."""
        return self.start()

    def start(self) -> Client:
        """Connect to the scheduler, or start the ``LocalCluster``; a no-op once done."""
        if self._client is not None and self._ready:
            return self._client
        distributed = _distributed()
        if self._client is None:
            if self.scheduler is not None:
                try:
                    self._client = distributed.Client(self.scheduler, timeout="20s")
                except (OSError, TimeoutError) as exc:
                    raise ClusterError(
                        f"cannot reach the dask scheduler at {self.scheduler}: {exc}"
                    ) from None
            else:
                options: dict[str, Any] = {
                    "n_workers": self.local_workers,
                    "threads_per_worker": 1,
                    "processes": True,
                    **self.cluster_options,
                }
                self._cluster = distributed.LocalCluster(**options)
                self._client = distributed.Client(self._cluster)
        client = self._client
        assert client is not None
        client.register_plugin(_one_thread_plugin(), name="covid19-images-single-threaded")
        self.workers = max(1, _threads(client))
        self._ready = True
        link = _dashboard(client)
        if self.progress and link:
            from rich.console import Console

            Console(stderr=True).print(f"dask dashboard: {link}", highlight=False, soft_wrap=True)
        return client

    def close(self) -> None:
        """Close the client and the ``LocalCluster`` this executor started (not a given client)."""
        if self._client is not None and self._owns_client:
            self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        self._ready = False

    def map(self, fn: Callable[[T], R], items: Sequence[T], description: str = "") -> Iterator[R]:
        """Apply ``fn`` to every item on the cluster; results in input order, as they arrive.

        An item that fails on every attempt (``retries`` more after the first, or its worker
        dying each time) is ``fn``'s failure result
        (:func:`~covid19_images.process.executor.fails_as`); where ``fn`` declares none, its
        error is raised.
        """
        if not items:
            return iter(())
        return track(self._ordered(fn, items), len(items), description, enabled=self.progress)

    def _ordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        distributed = _distributed()
        client = self.start()
        size = self.batch or max(1, min(64, len(items) // (self.workers * 8)))
        window = self.window or max(8, 4 * self.workers) * size
        size = min(size, window)
        bounds = [(i, min(i + size, len(items))) for i in range(0, len(items), size)]
        name = getattr(fn, "__name__", "item").strip("_") or "item"
        prefix = f"{name}-{uuid.uuid4().hex[:8]}"
        pending: dict[int, Future[list[R]]] = {}
        done: dict[int, tuple[str, Any]] = {}
        arrived = distributed.as_completed(with_results=True, raise_errors=False)
        batch_of: dict[object, int] = {}
        submitted = handed = 0  # batches submitted, items handed back

        def submit_more() -> None:
            nonlocal submitted
            while submitted < len(bounds) and bounds[submitted][1] <= handed + window:
                first, stop = bounds[submitted]
                future = client.submit(
                    run_batch,
                    fn,
                    list(items[first:stop]),
                    key=f"{prefix}-{submitted}",
                    retries=0,  # a batch that raises runs again item by item, with retries
                    pure=False,
                )
                pending[submitted] = future
                batch_of[future.key] = submitted
                arrived.add(future)
                submitted += 1

        try:
            submit_more()
            for number, (first, stop) in enumerate(bounds):
                while number not in done:
                    future, value = next(arrived)
                    arrived_number = batch_of.pop(future.key)
                    if future.status == "error":  # `value` is (type, error, traceback)
                        value = future.exception()
                    done[arrived_number] = (future.status, value)
                    del pending[arrived_number]
                    future.release()
                status, value = done.pop(number)
                if status == "cancelled":  # by the cluster (restarted, closed), not the items
                    raise ClusterError(
                        f"the dask cluster dropped items {first + 1}-{stop} of {len(items)} "
                        "(was the scheduler restarted or closed?); run the build again"
                    )
                if status != "finished":
                    value = self._one_by_one(client, fn, items[first:stop], f"{prefix}-{number}")
                for result in value:
                    handed += 1
                    submit_more()  # never more than `window` items out and not handed back
                    yield result
        finally:
            for future in pending.values():
                future.cancel()  # type: ignore[no-untyped-call]

    def _one_by_one(
        self, client: Client, fn: Callable[[T], R], items: Sequence[T], prefix: str
    ) -> list[R]:
        """The items of a batch that failed, each on its own with ``retries``."""
        distributed = _distributed()
        futures = [
            client.submit(fn, item, key=f"{prefix}-{k}", retries=self.retries, pure=False)
            for k, item in enumerate(items)
        ]
        try:
            distributed.wait(futures)
            results: list[R] = []
            for future, item in zip(futures, items, strict=True):
                if future.status == "finished":
                    results.append(future.result())
                elif future.status == "error":
                    error = future.exception()  # type: ignore[no-untyped-call]
                    results.append(self._failed(fn, item, error))
                else:
                    raise ClusterError(
                        "the dask cluster dropped an item (was the scheduler restarted or "
                        "closed?); run the build again"
                    )
            return results
        finally:
            for future in futures:
                future.release()  # type: ignore[no-untyped-call]

    def _failed(self, fn: Callable[[T], R], item: T, error: BaseException) -> R:
        """``fn``'s failure result for an item given up on; its error where it declares none."""
        distributed = _distributed()
        if isinstance(error, distributed.KilledWorker):
            reason = (
                "processing failed: the worker running it died on every attempt "
                "(out of memory, or a crash in a decoder)"
            )
        elif isinstance(error, Exception):
            kind = type(error).__name__
            reason = (
                f"processing failed on every attempt ({self.retries + 1} on its own, after "
                f"one in a batch): {kind}: {without_addresses(str(error))}"
            )
        else:
            raise error
        try:
            return failed_result(fn, item, reason)
        except LookupError:
            raise error from None

    def check_folders(self, writable: Sequence[Path], readable: Sequence[Path] = ()) -> None:
        """Check that every worker sees ``readable`` and can write the client's ``writable``.

        Each ``writable`` folder gets a probe file written here; every worker must read it back
        under the same path (the same folder, not one of the same name on its own disk) and
        write one of its own beside it. Relative paths are checked as the workers will use
        them, from their working directory.

        Raises:
            ClusterError: One message naming each worker and what it cannot see or write.

        Example:
            >>> with DaskExecutor(workers=2) as engine:  # doctest: +SKIP
            ...     engine.check_folders([Path("/shared/covid19-images/processed")])
        """
        client = self.start()
        if not _threads(client):  # a scheduler whose workers have not connected yet
            try:
                client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
            except TimeoutError:
                raise ClusterError(
                    f"no dask worker connected to the scheduler at {self.scheduler} within "
                    f"{WAIT_FOR_WORKERS_S} s: start some (dask worker {self.scheduler})"
                ) from None
            self.workers = max(1, _threads(client))
        token = uuid.uuid4().hex
        probes: list[Path] = []
        try:
            for folder in writable:
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / f"{PROBE_PREFIX}{token}"
                probe.write_text(token, encoding="utf-8")
                probes.append(probe)
            answers: dict[str, tuple[str, list[str]]] = client.run(
                _worker_sees,
                [str(p) for p in writable],
                [str(p) for p in readable],
                token,
            )
        finally:
            for probe in probes:
                probe.unlink(missing_ok=True)
        blind = {address: answer for address, answer in answers.items() if answer[1]}
        if not blind:
            return
        lines = [
            f"  {address} ({where}): {'; '.join(problems)}"
            for address, (where, problems) in sorted(blind.items())
        ]
        relative = [str(p) for p in [*writable, *readable] if not p.is_absolute()]
        raise ClusterError(
            f"{len(blind)} of {len(answers)} dask workers cannot use the build's folders: the "
            "processed cache (under the data root, --root) must be on a file system every "
            "worker mounts under the same path, and the sources (--mirror, --root) readable "
            "there too (docs/scale.md)\n"
            + "\n".join(lines)
            + (
                f"\n  relative paths ({', '.join(relative)}) are read from each worker's "
                "working directory: give absolute ones"
                if relative
                else ""
            )
        )


def _threads(client: Client) -> int:
    """Worker threads on the cluster now."""
    counts: dict[str, int] = client.nthreads()  # type: ignore[no-untyped-call]
    return sum(counts.values())


def run_batch(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """On a worker: ``fn`` over one batch of items, in order.

    Example:
        >>> run_batch(abs, [-1, 2, -3])
        [1, 2, 3]
    """
    return [fn(item) for item in items]


def _dashboard(client: Client) -> str | None:
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError, ValueError):
        return None
    return str(link) if link else None


def _worker_sees(writable: list[str], readable: list[str], token: str) -> tuple[str, list[str]]:
    """On a worker: (host and working directory, what it cannot see or write)."""
    problems: list[str] = []
    for folder in map(Path, writable):
        probe = folder / f"{PROBE_PREFIX}{token}"
        try:
            seen = probe.read_text(encoding="utf-8")
        except OSError:
            seen = None
        if seen != token:
            what = "another folder of that name" if folder.is_dir() else "no such folder"
            problems.append(f"does not see the client's {folder} ({what})")
            continue
        mine = folder / f"{PROBE_PREFIX}{token}-{os.getpid()}"
        try:
            mine.write_text(token, encoding="utf-8")
            mine.unlink()
        except OSError as exc:
            problems.append(f"cannot write to {folder}: {exc.strerror or exc}")
    for folder in map(Path, readable):
        if not folder.is_dir():
            problems.append(f"does not see {folder}")
        elif not os.access(folder, os.R_OK | os.X_OK):
            problems.append(f"cannot read {folder}")
    return f"{socket.gethostname()}, working directory {Path.cwd()}", problems
