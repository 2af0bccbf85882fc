"""The worker in a child process: receiving and deciding do not share one interpreter lock.

pynetdicom's receiving, the report writer (highdicom, pydicom) and the sender are Python; in one process
they take turns with the worker's reading and preprocessing, and a burst of arriving series delays
every result. :class:`WorkerProcess` runs the same :class:`~._worker.Worker` loop in a child process
(spawned: the node's threads are not forked) that opens the same spool without its lock; the spool's
SQLite state stays the only contract between the two. The child sends its counter increments,
histogram observations, log records and "results queued" notices back over a queue; the parent relays
them, so ``/metrics`` and the log look as they do with a thread.

The child dies with the node (``PR_SET_PDEATHSIG`` on Linux, a watch on its parent elsewhere): a
``kill -9`` of the node leaves no worker behind to race the next one. If the child dies on its own (a crash in native code), its run
goes back to ``complete`` (or ``failed`` after ``max_attempts``, as after a node crash) and a new child
starts after a back-off.
"""

from __future__ import annotations

import ctypes
import logging
import logging.handlers
import multiprocessing
import os
import queue
import signal
import threading
import time
from pathlib import Path

from ._config import NodeConfig
from ._metrics import Metrics
from ._spool import Spool

log = logging.getLogger("asinfer.node")

#: Seconds to wait for the child to load the model and say it is ready.
START_TIMEOUT = 300.0


class WorkerStartError(RuntimeError):
    """The child could not load the model; the message is the child's reason."""


class WorkerProcess:
    """A :class:`~._worker.Worker` in a child process, with the thread interface the node uses
    (``start``, ``wake``, ``stop``, ``join``, ``is_alive``, ``processed``)."""

    RESTART_MAX = 60.0  # seconds between restarts of a child that keeps dying, at most

    def __init__(self, spool: Spool, config: NodeConfig, *, send: bool, on_queued=None,
                 metrics: Metrics | None = None) -> None:
        self.spool = spool
        self.config = config
        self.send = send
        self._on_queued = on_queued or (lambda: None)
        self.metrics = metrics or Metrics()
        self._ctx = multiprocessing.get_context("spawn")
        self._wake = self._ctx.Event()
        self._stopping = self._ctx.Event()
        self._events = self._ctx.Queue()
        self._child = None
        self._supervisor: threading.Thread | None = None
        self._stop_local = threading.Event()
        self.processed = 0  # runs the children brought to done or failed

    # --- the thread interface -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the child and wait until it has loaded the model.

        Raises:
            WorkerStartError: the child could not load the model (its reason in the message).
        """
        self._spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                event = self._events.get(timeout=0.5)
            except queue.Empty:
                if not self._child.is_alive():
                    raise WorkerStartError(f"the worker process exited with code {self._child.exitcode} "
                                           "before loading the model") from None
                if time.monotonic() > deadline:
                    self._kill()
                    raise WorkerStartError(f"the worker process did not load the model within {START_TIMEOUT:g} s")
                continue
            if event[0] == "ready":
                break
            if event[0] == "start-failed":
                self._child.join(10)
                raise WorkerStartError(event[1])
            self._relay(event)
        self._supervisor = threading.Thread(target=self._supervise, name="asinfer-worker-supervisor", daemon=True)
        self._supervisor.start()

    def wake(self) -> None:
        """There may be something to do (a series completed, an instance arrived)."""
        self._wake.set()

    def stop(self) -> None:
        """Ask the child to stop after the run at hand; :meth:`join` waits for it."""
        self._stop_local.set()
        self._stopping.set()
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the child to finish its run; past ``timeout`` kill it (the run resumes at the next start)."""
        if self._child is not None:
            self._child.join(timeout)
            if self._child.is_alive():
                log.warning("event=worker-killed why=stop-timeout seconds=%s", timeout)
                self._kill()
        if self._supervisor is not None:
            self._supervisor.join(5.0)
        self._drain()

    def is_alive(self) -> bool:
        """Whether a child is running (between restarts: the supervisor is, which counts)."""
        return self._supervisor is not None and self._supervisor.is_alive()

    @property
    def pid(self) -> int | None:
        """The child's process id (None before start)."""
        return self._child.pid if self._child is not None else None

    # --- the parent's side ----------------------------------------------------------------------------

    def _spawn(self) -> None:
        options = {"model": self.config.model, "provider": self.config.provider, "threads": self.config.threads,
                   "batch_size": self.config.batch_size, "max_attempts": self.config.max_attempts,
                   "send": self.send, "early": self.config.select if self.config.predict_early else None,
                   "log_level": logging.getLogger("asinfer").getEffectiveLevel(), "parent": os.getpid()}
        self._child = self._ctx.Process(target=_child_main, name="asinfer-worker", daemon=True,
                                        args=(str(self.spool.root), options, self._wake, self._stopping,
                                              self._events))
        self._child.start()
        log.info("event=worker-started pid=%d", self._child.pid)

    def _supervise(self) -> None:
        """Relay the child's events; restart it when it dies unasked."""
        delay = 1.0
        while True:
            self._drain(timeout=0.25)
            if self._child.is_alive():
                continue
            self._drain()
            if self._stop_local.is_set():
                return
            log.error("event=worker-died exitcode=%s restart_in=%g", self._child.exitcode, delay)
            self._release()
            if self._stop_local.wait(delay):
                return
            delay = min(delay * 2, self.RESTART_MAX)
            self.metrics.inc("worker_restarts")
            self._spawn()

    def _release(self) -> None:
        """The dead child's run: back to complete, or failed once it used its attempts."""
        try:
            released = self.spool.release_processing(self.config.max_attempts)
        except Exception as exc:  # the next start's recovery does the same
            log.error("event=release-failed error=%s", type(exc).__name__)
            return
        if released["retried"] or released["failed"]:
            log.info("event=runs-released retried=%d failed=%d", released["retried"], released["failed"])
        if released["failed"]:
            self.metrics.inc("series_failed", released["failed"])

    def _drain(self, timeout: float = 0.0) -> None:
        """Relay what the child sent; wait up to ``timeout`` for the first event."""
        try:
            event = self._events.get(timeout=timeout) if timeout else self._events.get_nowait()
            while True:
                self._relay(event)
                event = self._events.get_nowait()
        except (queue.Empty, EOFError, OSError):
            pass

    def _relay(self, event: tuple) -> None:
        kind = event[0]
        if kind == "inc":
            self.metrics.inc(*event[1:])
        elif kind == "observe":
            self.metrics.observe(*event[1:])
        elif kind == "queued":
            self._on_queued()
        elif kind == "processed":
            self.processed += 1
        elif kind == "log":
            record = event[1]
            logging.getLogger(record.name).handle(record)

    def _kill(self) -> None:
        if self._child is not None and self._child.is_alive():
            self._child.kill()
            self._child.join(10)


# --- the child's side ---------------------------------------------------------------------------------


class _RelayedMetrics:
    """What the worker counts, sent to the parent's :class:`Metrics`."""

    def __init__(self, events) -> None:
        self._events = events

    def inc(self, name: str, n: int = 1) -> None:
        self._events.put(("inc", name, n))

    def observe(self, name: str, seconds: float, label: str = "") -> None:
        self._events.put(("observe", name, seconds, label))


def _child_main(root: str, options: dict, wake, stopping, events) -> None:
    """The child: die with the parent, load the model, run the worker loop until asked to stop."""
    _die_with_parent(options["parent"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C or systemd's SIGTERM reach the whole
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # group: the parent decides when the worker stops
    _relay_logging(events, options["log_level"])
    from asinfer import engine

    from ._worker import Worker

    try:
        spool = Spool.open(Path(root), lock=False)
        classifier = engine.load(options["model"], provider=options["provider"], threads=options["threads"])
    except Exception as exc:
        events.put(("start-failed", f"{type(exc).__name__}: {' '.join(str(exc).split())}"))
        events.close()
        events.join_thread()
        return
    worker = Worker(spool, classifier, batch_size=options["batch_size"], max_attempts=options["max_attempts"],
                    send=options["send"], on_queued=lambda: events.put(("queued",)),
                    metrics=_RelayedMetrics(events), early=options["early"], events=(wake, stopping),
                    on_processed=lambda: events.put(("processed",)))
    events.put(("ready",))
    try:
        worker.run()
    finally:
        spool.close()
        events.close()
        events.join_thread()


def _die_with_parent(parent: int) -> None:
    """End this process when the node dies: at once on Linux (PR_SET_PDEATHSIG), within a second elsewhere
    (a thread that watches for the parent to change); at once if it already has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=watch, name="asinfer-parent-watch", daemon=True).start()


def _relay_logging(events, level: int) -> None:
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(_LogQueue(events))]
    root.setLevel(level)


class _LogQueue:
    """The queue a QueueHandler writes to, wrapped as the child's event tuples."""

    def __init__(self, events) -> None:
        self._events = events

    def put_nowait(self, record: logging.LogRecord) -> None:
        self._events.put(("log", record))
