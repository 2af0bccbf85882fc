"""The node: spool, Storage SCP, the completion monitor, the worker, the sender and the HTTP endpoint for
/metrics and /healthz, started and stopped together."""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time

from ._config import Destination, NodeConfig
from ._metrics import Metrics, MetricsServer
from ._process import WorkerProcess
from ._scp import StoreHandler, destination_tls_context, start_server
from ._sender import Sender
from ._spool import STATES, Spool
from ._worker import Worker

log = logging.getLogger("asinfer.node")

EXIT_OK, EXIT_USAGE = 0, 2


class Node:
    """A running DICOM node. Start it, send it series, stop it; its state is in ``config.spool``.

    Args:
        config: see :class:`NodeConfig`.
        classifier: a loaded :class:`~asinfer.engine.Classifier`, used by a worker thread; None loads
            ``config.model`` in a worker process (``config.worker_process``, the default) or thread.
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
        self.metrics = Metrics()
        self._http: MetricsServer | None = None
        self._ae = self._server = self._monitor = None
        self._stopping = threading.Event()
        self._poke = threading.Event()  # an instance was stored: the monitor looks at once (expected counts)
        self._next_purge = 0.0

    def start(self) -> Node:
        """Open and recover the spool, load the model, start the worker and the monitor, then listen.

        Raises:
            OSError: the spool cannot be used or the address cannot be bound.
            ModelError, ValueError: the model cannot be loaded (in a worker thread).
            WorkerStartError: the worker process could not load it (the reason in the message).
            ModuleNotFoundError: pynetdicom or highdicom is missing (the ``node`` extra).
        """
        import importlib.util

        import pynetdicom  # noqa: F401

        if importlib.util.find_spec("highdicom") is None:  # the report writer's: fail at start, not at a series
            raise ModuleNotFoundError("No module named 'highdicom'", name="highdicom")  # (imported by the worker)

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
                                 max_send_attempts=config.max_send_attempts, metrics=self.metrics,
                                 tls=destination_tls_context(config))
            self.sender.start()
        elif self.spool.outbox_depth():
            log.warning("event=outbox-waiting files=%d why=no-destination", self.spool.outbox_depth())
        if self.process:
            on_queued = self.sender.wake if self.sender is not None else None
            if self.classifier is None and config.worker_process:
                self.worker = WorkerProcess(self.spool, config, send=self.sender is not None, on_queued=on_queued,
                                            metrics=self.metrics)
            else:
                if self.classifier is None:
                    from asinfer import engine

                    self.classifier = engine.load(self.config.model, provider=self.config.provider,
                                                  threads=self.config.threads)
                self.worker = Worker(self.spool, self.classifier, batch_size=config.batch_size,
                                     max_attempts=config.max_attempts, send=self.sender is not None,
                                     on_queued=on_queued, metrics=self.metrics,
                                     early=config.select if config.predict_early else None)
            self.worker.start()
        self.handler = StoreHandler(self.spool, on_stored=self._stored, metrics=self.metrics)
        if config.metrics_port is not None:
            self._http = MetricsServer(config.metrics_host, config.metrics_port, self.render_metrics,
                                       self.health).start()
        self._ae, self._server = start_server(self.config, self.handler)
        resumed = self.spool.resume_receiving()  # the senders get a quiet period to send the rest again
        if resumed:
            log.info("event=receiving-resumed runs=%d", resumed)
        self._monitor = threading.Thread(target=self._watch, name="asinfer-monitor", daemon=True)
        self._monitor.start()
        log.info("event=listening host=%s port=%d ae_title=%s allow_ae=%s allow_peer=%s tls=%s quiet_period=%g "
                 "destination=%s destination_tls=%s metrics_port=%s", config.host, self.port, config.ae_title,
                 ",".join(config.allow_ae) or "any", ",".join(config.allow_peer) or "any",
                 "mutual" if config.tls_ca else "on" if config.tls_cert else "off", config.quiet_period,
                 config.destination or "none", "on" if config.destination_tls_ca else "off", self.metrics_port or "off")

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when ``config.port`` is 0); 0 before start."""
        return self._server.server_address[1] if self._server is not None else 0

    @property
    def metrics_port(self) -> int:
        """The port of /metrics and /healthz; 0 when there is none."""
        return self._http.port if self._http is not None else 0

    def render_metrics(self) -> str:
        """The Prometheus exposition: the counters and histograms, and gauges read from the spool now."""
        counts = self.spool.counters()
        gauges = {"queue_depth": counts["complete"], "outbox_depth": counts["outbox"],
                  "runs": {state: counts[state] for state in STATES},
                  "associations_active": len(self._ae.active_associations) if self._ae is not None else 0,
                  "spool_free_bytes": shutil.disk_usage(self.spool.root).free}
        return self.metrics.render(gauges)

    def health(self) -> tuple[bool, dict]:
        """Whether the node does its job: listening, its threads alive, its state database answering."""
        threads = {"monitor": self._monitor, "worker": self.worker, "sender": self.sender}
        checks = {"listening": self._server is not None and not self._stopping.is_set()}
        checks.update({name: thread.is_alive() for name, thread in threads.items() if thread is not None})
        try:
            counts = self.spool.counters()
            checks["database"] = True
        except Exception:  # locked, closed or damaged: unhealthy, with the reason
            counts, checks["database"] = {}, False
        details = {"checks": checks, "queue_depth": counts.get("complete"), "outbox_depth": counts.get("outbox"),
                   "port": self.port}
        return all(checks.values()), details

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let associations in progress finish (up to ``grace`` s), finish the run at hand.

        What is not finished stays in the spool in its state and is taken up at the next start.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._poke.set()
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
        if self._http is not None:
            self._http.stop()
        if self.spool is not None and not any(t is not None and t.is_alive() for t in (self.worker, self.sender)):
            self.spool.close()
        log.info("event=stopped")

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _stored(self) -> None:
        """An instance is durable: the monitor looks at once; an idle worker may predict it early."""
        self._poke.set()
        if self.worker is not None and self.config.predict_early:
            self.worker.wake()

    def _watch(self) -> None:
        """Close quiet (or fully counted) runs, wake the worker when one is complete; purge expired series."""
        config = self.config
        tick = min(0.25, max(0.02, config.quiet_period / 4))
        wait = tick
        while not self._stopping.is_set():
            self._poke.wait(wait)
            self._poke.clear()
            if self._stopping.is_set():
                break
            try:
                self._purge()
            except Exception as exc:  # the retention waits for the next interval; completion goes on
                log.error("event=purge-failed error=%s", type(exc).__name__)
            try:
                closed = self.spool.complete_ready(config.quiet_period, config.select,
                                                   expected=config.expected_instances,
                                                   from_header=config.expected_from_header)
            except Exception as exc:  # a busy or failing database: the next tick tries again
                log.error("event=monitor-failed error=%s", type(exc).__name__)
                continue
            for run in closed:
                self.metrics.inc("series_completed" if run.state == "complete" else "series_ignored")
                log.info("event=run-%s run=%d number=%d instances=%d%s", run.state, run.id, run.run, run.n_instances,
                         f" why={run.message!r}" if run.message else "")
            if self.worker is not None and any(run.state == "complete" for run in closed):
                self.worker.wake()
            wait = self._next_wait(tick)

    def _next_wait(self, tick: float) -> float:
        """Until the next receiving run goes quiet (a series completes then, not up to a tick later), at most a tick."""
        try:
            since = self.spool.quiet_since()
        except Exception:  # the database is busy: the usual tick
            return tick
        if since is None:
            return tick
        return min(tick, max(0.02, since + self.config.quiet_period - time.time() + 0.001))

    def _purge(self) -> None:
        """Every so often, delete the instance files of series final for longer than the retention period."""
        retention = self.config.retention_period
        if not retention or time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + min(60.0, max(0.05, retention / 10))
        purged = self.spool.purge_expired(retention)
        if purged:
            self.metrics.inc("series_purged", purged)


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
