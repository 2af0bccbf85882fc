"""The node: spool, Storage SCP, the quiet-period monitor and the worker, started and stopped together."""

from __future__ import annotations

import logging
import signal
import threading
import time

from ._config import Destination, NodeConfig
from ._scp import StoreHandler, start_server
from ._sender import Sender
from ._spool import Spool
from ._worker import Worker

log = logging.getLogger("asinfer.node")

EXIT_OK, EXIT_USAGE = 0, 2


class Node:
    """A running DICOM node. Start it, send it series, stop it; its state is in ``config.spool``.

    Args:
        config: see :class:`NodeConfig`.
        classifier: a loaded :class:`~asinfer.engine.Classifier`; None loads ``config.model``.
        process: False receives and completes series but runs no worker (nothing is processed).

    Example:
        >>> with Node(load_config(None, port=0, spool=tmp)) as node:  # doctest: +SKIP
        ...     print(node.port)
    """

    def __init__(self, config: NodeConfig, classifier=None, *, process: bool = True) -> None:
        self.config = config
        self.classifier = classifier
        self.process = process
        self.spool: Spool | None = None
        self.handler: StoreHandler | None = None
        self.worker: Worker | None = None
        self.sender: Sender | None = None
        self._ae = self._server = self._monitor = None
        self._stopping = threading.Event()

    def start(self) -> Node:
        """Open and recover the spool, load the model, start the worker and the monitor, then listen.

        Raises:
            OSError: the spool cannot be used or the address cannot be bound.
            ModelError, ValueError: the model cannot be loaded.
            ModuleNotFoundError: pynetdicom or highdicom is missing (the ``node`` extra).
        """
        import highdicom  # noqa: F401  (the report writer needs it: fail at start, not at the first series)
        import pynetdicom  # noqa: F401

        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its INFO/DEBUG lines quote dataset values
        self.spool = Spool.open(self.config.spool)
        try:
            self._start()
        except BaseException:
            self.stop(grace=0)
            raise
        return self

    def _start(self) -> None:
        recovered = self.spool.recover(self.config.max_attempts)
        log.info("event=spool-recovered " + " ".join(f"{k}={v}" for k, v in recovered.items()))
        config = self.config
        if config.destination is not None:
            self.sender = Sender(self.spool, Destination.parse(config.destination), config.ae_title,
                                 retry_initial=config.retry_initial, retry_max=config.retry_max,
                                 max_send_attempts=config.max_send_attempts)
            self.sender.start()
        elif self.spool.outbox_depth():
            log.warning("event=outbox-waiting files=%d why=no-destination", self.spool.outbox_depth())
        if self.process:
            if self.classifier is None:
                from asinfer import engine

                self.classifier = engine.load(self.config.model, provider=self.config.provider,
                                              threads=self.config.threads)
            self.worker = Worker(self.spool, self.classifier, batch_size=config.batch_size,
                                 max_attempts=config.max_attempts, send=self.sender is not None,
                                 on_queued=self.sender.wake if self.sender is not None else None)
            self.worker.start()
        self._monitor = threading.Thread(target=self._watch, name="asinfer-monitor", daemon=True)
        self._monitor.start()
        self.handler = StoreHandler(self.spool)
        self._ae, self._server = start_server(self.config, self.handler)
        log.info("event=listening host=%s port=%d ae_title=%s allow_ae=%s quiet_period=%g destination=%s",
                 config.host, self.port, config.ae_title, ",".join(config.allow_ae) or "any", config.quiet_period,
                 config.destination or "none")

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when ``config.port`` is 0); 0 before start."""
        return self._server.server_address[1] if self._server is not None else 0

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let associations in progress finish (up to ``grace`` s), finish the run at hand.

        What is not finished stays in the spool in its state and is taken up at the next start.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            deadline = time.monotonic() + grace
            while self._ae.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
            self._ae.shutdown()  # aborts what is left: an unanswered instance is the sender's to send again
        if self._monitor is not None:
            self._monitor.join()
        if self.worker is not None:
            self.worker.stop()
            self.worker.join(max(grace, 1.0) * 6)  # a series' inference; past that it resumes at next start
        if self.sender is not None:
            self.sender.stop()
            self.sender.join(max(grace, 1.0) * 3)  # the file at hand; the rest waits in the outbox
        if self.spool is not None and not any(t is not None and t.is_alive() for t in (self.worker, self.sender)):
            self.spool.close()
        log.info("event=stopped")

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _watch(self) -> None:
        """Close quiet runs; wake the worker when one is complete."""
        tick = min(0.25, max(0.02, self.config.quiet_period / 4))
        while not self._stopping.wait(tick):
            try:
                closed = self.spool.complete_quiet(self.config.quiet_period, self.config.select)
            except Exception as exc:  # a busy or failing database: the next tick tries again
                log.error("event=monitor-failed error=%s", type(exc).__name__)
                continue
            for run in closed:
                log.info("event=run-%s run=%d number=%d instances=%d%s", run.state, run.id, run.run, run.n_instances,
                         f" why={run.message!r}" if run.message else "")
            if self.worker is not None and any(run.state == "complete" for run in closed):
                self.worker.wake()


def serve_forever(config: NodeConfig) -> int:
    """Run a node until SIGTERM or SIGINT, then stop it gracefully; the exit code.

    Raises:
        ModuleNotFoundError: the ``node`` extra is missing (the CLI names it).
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    node = Node(config)
    try:
        try:
            node.start()
        except ModuleNotFoundError:
            raise
        except Exception as exc:
            log.error("event=start-failed error=%s detail=%s", type(exc).__name__, " ".join(str(exc).split()))
            return EXIT_USAGE
        while not stop.wait(0.5):
            pass
        log.info("event=stopping")
        node.stop()
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
