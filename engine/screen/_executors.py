"""Where tasks run: in this process (``synchronous``), on a local Dask cluster, or on a running one.

Both executors have one method, :meth:`imap`: run ``fn`` over items, each
retried up to ``retries`` times, and yield ``(item, value, error)`` as they
finish. The Dask one keeps a bounded window of tasks in flight, so neither
the client nor the scheduler ever holds the whole archive's task list.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger("asinfer")

SYNCHRONOUS, LOCAL = "synchronous", "local"


class SyncExecutor:
    """Tasks run one after the other in this process (tests, debugging, one small machine)."""

    kind = SYNCHRONOUS
    workers = 1
    start_seconds = 0.0

    def call(self, fn: Callable, arg: Any) -> Any:
        """``fn(arg)`` where the tasks run."""
        return fn(arg)

    def imap(self, fn: Callable, items: Iterable, retries: int) -> Iterator[tuple[Any, Any, BaseException | None]]:
        for item in items:
            error: BaseException | None = None
            for _ in range(retries + 1):
                try:
                    value = fn(item)
                except Exception as exc:  # retried like a Dask task; KeyboardInterrupt ends the run
                    error = exc
                    log.debug("task failed (retried while retries are left)", exc_info=True)
                    continue
                yield item, value, None
                break
            else:
                yield item, None, error

    def close(self) -> None:
        pass


class DaskExecutor:
    """Tasks on a Dask cluster: a LocalCluster started here, or the scheduler at ``address``.

    Args:
        address: ``local`` or ``tcp://host:8786`` (any address ``distributed.Client`` takes).
        workers: processes of a local cluster. A local worker runs one task at a time; the task's
            classifier uses the worker's threads (no threads x threads oversubscription).
        setup: called with the client once it is connected (e.g. to register a worker plugin).
    """

    def __init__(self, address: str, workers: int, setup: Callable[[Any], None] | None = None) -> None:
        import time

        from distributed import Client, LocalCluster

        start = time.perf_counter()
        self.cluster = None
        try:
            if address == LOCAL:
                # the run records every failure as a row; worker tracebacks only with ASINFER_DEBUG=1
                quiet = logging.DEBUG if os.environ.get("ASINFER_DEBUG", "") not in ("", "0") else logging.CRITICAL
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=quiet)
                self.client = Client(self.cluster)
            else:
                self.client = Client(address, timeout="30s")
            self.kind = address
            self.workers = len(self.client.scheduler_info().get("workers", {})) or workers
            if setup is not None:
                setup(self.client)
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.perf_counter() - start

    def call(self, fn: Callable, arg: Any) -> Any:
        """``fn(arg)`` on a worker (its exception, e.g. a ModelError, is raised here)."""
        return self.client.submit(fn, arg, pure=False).result()

    def _window(self) -> int:
        """Tasks in flight: enough to keep every worker slot busy, few enough to hold little."""
        info = self.client.scheduler_info().get("workers", {})
        slots = sum(w.get("nthreads", 1) for w in info.values()) or 1
        return max(4, 3 * slots)

    def imap(self, fn: Callable, items: Iterable, retries: int) -> Iterator[tuple[Any, Any, BaseException | None]]:
        from distributed import as_completed

        items = iter(items)
        pending: dict = {}  # future key -> (future, item)
        done = as_completed()
        window = self._window()

        def fill() -> None:
            while len(pending) < window:
                item = next(items, None)
                if item is None:
                    return
                future = self.client.submit(fn, item, retries=retries, pure=False)
                pending[future.key] = (future, item)
                done.add(future)

        fill()
        try:
            for future in done:
                _, item = pending.pop(future.key)
                if future.status == "finished":
                    yield item, future.result(), None
                elif future.status == "error":
                    yield item, None, future.exception()
                else:  # cancelled or lost: the scheduler gave up on it
                    yield item, None, RuntimeError(f"the task was {future.status} by the scheduler")
                future.release()
                fill()
        finally:
            if pending:  # interrupted: nothing more runs for this run
                with contextlib.suppress(Exception):
                    self.client.cancel([f for f, _ in pending.values()])

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def relax_malloc_trim(trim: int = 64 << 20, mmap: int = 16 << 20) -> bool:
    """Undo the Dask nanny's ``MALLOC_TRIM_THRESHOLD_=65536`` in this worker (glibc only).

    The nanny sets that variable so that workers hand freed memory back to the OS. With it,
    glibc returns the top of the heap after every slice and maps each buffer of 128 KiB or more
    afresh, so every image and tensor costs page faults: a screening worker ran ~20 % slower
    (sync screen 125 -> 97 slices/s with the variable set). A worker that allocates and frees the
    same few buffers per slice keeps them instead; memory stays bounded by the thresholds.
    Returns whether the settings took effect (False on a libc without ``mallopt``).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already links
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, trim)) and bool(mallopt(_M_MMAP_THRESHOLD, mmap))
