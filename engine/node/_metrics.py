"""What the node counts, and ``/healthz`` + ``/metrics`` on a local HTTP port (standard library only).

Every metric is one row of :data:`METRICS`: the exposition, the docs and the tests read that table.
Counters count since the process started (Prometheus handles restarts); gauges are read from the
spool when scraped, so they are right across restarts too. The text is the Prometheus exposition
format 0.0.4, which every Prometheus-compatible scraper reads. Nothing here carries patient data or
UIDs: the values are counts and seconds.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

log = logging.getLogger("asinfer.node")

PREFIX = "asinfer_node_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Histogram bucket upper bounds (seconds): inference is sub-second to seconds, end to end includes the quiet
#: period and, with a destination that is down, hours.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 300.0, 3600.0)


@dataclass(frozen=True)
class Metric:
    """One metric family. ``name`` is exposed as ``asinfer_node_<name>`` (counters get ``_total``)."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    label: str | None = None  # the one label a family may have
    values: tuple[str, ...] = ()  # its values, exposed even before the first event (a histogram's series)

    @property
    def exposed(self) -> str:
        """The family's name in the exposition."""
        return PREFIX + self.name + ("_total" if self.kind == "counter" else "")


#: Every metric the node exposes.
METRICS = (
    Metric("instances_received", "counter", "Instances made durable in the spool and acknowledged with success."),
    Metric("instances_duplicate", "counter", "Instances whose SOP Instance UID was already stored (first copy kept)."),
    Metric("instances_failed_writes", "counter", "Instances that could not be made durable (answered 0xA700)."),
    Metric("instances_refused", "counter", "Instances refused as unparsable or without series/SOP UID (0xC000/0xA900)."),
    Metric("associations_accepted", "counter", "Associations accepted."),
    Metric("associations_rejected", "counter", "Associations rejected (calling AE not allowed, too many, ...)."),
    Metric("connections_refused", "counter", "Connections closed before any DICOM exchange: peer address not allowed."),
    Metric("tls_handshake_failures", "counter", "TLS handshakes that failed or timed out."),
    Metric("series_completed", "counter", "Runs closed as complete (quiet period over, or expected count reached)."),
    Metric("series_ignored", "counter", "Runs closed as ignored: a selection rule failed."),
    Metric("series_processed", "counter", "Runs whose results are durable (done, or queued for the destination)."),
    Metric("series_failed", "counter", "Runs that failed (processing or sending) for good."),
    Metric("series_sent", "counter", "Runs whose every result file was stored at the destination."),
    Metric("series_purged", "counter", "Series whose instance files were deleted after the retention period."),
    Metric("results_sent", "counter", "Result files stored at the destination."),
    Metric("send_failures", "counter", "Failed tries to store a result file at the destination."),
    Metric("instances_predicted_early", "counter", "Instances predicted while their series was still arriving."),
    Metric("worker_restarts", "counter", "Times the worker process died unasked and was started again."),
    Metric("queue_depth", "gauge", "Complete runs waiting for the worker."),
    Metric("outbox_depth", "gauge", "Result files waiting to be stored at the destination."),
    Metric("runs", "gauge", "Runs in the spool, by state.", "state"),
    Metric("associations_active", "gauge", "Associations in progress."),
    Metric("spool_free_bytes", "gauge", "Free bytes on the spool's file system."),
    Metric("inference_seconds", "histogram", "Seconds to decide one complete series (read, preprocess, infer the slices not "
           "predicted early, series rule)."),
    Metric("series_latency_seconds", "histogram", "Seconds from a run's last instance received to its results "
           "durable (until=durable) or stored at the destination (until=sent); includes the quiet period.",
           "until", ("durable", "sent")),
)
_BY_NAME = {m.name: m for m in METRICS}


class _Histogram:
    """Cumulative bucket counts, sum and count of one label set."""

    def __init__(self) -> None:
        self.buckets = [0] * len(BUCKETS)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        at = bisect.bisect_left(BUCKETS, value)
        for i in range(at, len(BUCKETS)):
            self.buckets[i] += 1
        self.sum += value
        self.count += 1


class Metrics:
    """The node's counters and histograms; thread-safe. Gauges come from ``gauges`` at render time.

    Example:
        >>> m = Metrics()
        >>> m.inc("instances_received"); m.count("instances_received")
        1
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters = {m.name: 0 for m in METRICS if m.kind == "counter"}
        self._histograms = {(m.name, v): _Histogram() for m in METRICS if m.kind == "histogram"
                            for v in (m.values or ("",))}

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        _check(name, "counter")
        with self._lock:
            self._counters[name] += n

    def count(self, name: str) -> int:
        """The value of counter ``name``."""
        _check(name, "counter")
        with self._lock:
            return self._counters[name]

    def observe(self, name: str, seconds: float, label: str = "") -> None:
        """Add one observation to histogram ``name`` (with its label value, when the family has a label)."""
        metric = _check(name, "histogram")
        if metric.values and label not in metric.values:
            raise ValueError(f"{name} takes {metric.label} in {metric.values}, got {label!r}")
        if not math.isfinite(seconds):
            return
        with self._lock:
            self._histograms[(name, label)].observe(max(0.0, seconds))

    def observations(self, name: str, label: str = "") -> int:
        """How many values histogram ``name`` holds."""
        with self._lock:
            return self._histograms[(name, label)].count

    def render(self, gauges: dict[str, float | dict[str, float]] | None = None) -> str:
        """The exposition text: every counter and histogram, and the ``gauges`` given (name -> value, or
        label value -> value)."""
        gauges = gauges or {}
        out: list[str] = []
        with self._lock:
            for metric in METRICS:
                if metric.kind == "gauge" and metric.name not in gauges:
                    continue
                out.append(f"# HELP {metric.exposed} {metric.help}")
                out.append(f"# TYPE {metric.exposed} {metric.kind}")
                if metric.kind == "counter":
                    out.append(f"{metric.exposed} {self._counters[metric.name]}")
                elif metric.kind == "gauge":
                    out.extend(_gauge_lines(metric, gauges[metric.name]))
                else:
                    for value in metric.values or ("",):
                        out.extend(_histogram_lines(metric, value, self._histograms[(metric.name, value)]))
        return "\n".join(out) + "\n"


def _check(name: str, kind: str) -> Metric:
    metric = _BY_NAME.get(name)
    if metric is None or metric.kind != kind:
        valid = ", ".join(m.name for m in METRICS if m.kind == kind)
        raise ValueError(f"no {kind} named {name!r}; the {kind}s are: {valid}")
    return metric


def _labels(metric: Metric, value: str, extra: str = "") -> str:
    pairs = ([f'{metric.label}="{value}"'] if metric.label else []) + ([extra] if extra else [])
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2 ** 53 else repr(float(value))


def _gauge_lines(metric: Metric, value: float | dict[str, float]) -> list[str]:
    if isinstance(value, dict):
        return [f"{metric.exposed}{_labels(metric, k)} {_number(v)}" for k, v in value.items()]
    return [f"{metric.exposed} {_number(value)}"]


def _histogram_lines(metric: Metric, value: str, hist: _Histogram) -> list[str]:
    name = metric.exposed
    bounds = [*(_number(b) for b in BUCKETS), "+Inf"]
    counts = [*hist.buckets, hist.count]
    lines = []
    for bound, n in zip(bounds, counts):
        le = f'le="{bound}"'
        lines.append(f"{name}_bucket{_labels(metric, value, le)} {n}")
    lines.append(f"{name}_sum{_labels(metric, value)} {_number(hist.sum)}")
    lines.append(f"{name}_count{_labels(metric, value)} {hist.count}")
    return lines


class MetricsServer:
    """``GET /metrics`` (the exposition) and ``GET /healthz`` (200 or 503, JSON) in a background thread.

    Args:
        host, port: where to listen (port 0 picks a free one: see :attr:`port`); keep it local or firewalled,
            it has no authentication.
        render: returns the exposition text.
        health: returns (healthy, details) for ``/healthz``.
    """

    def __init__(self, host: str, port: int, render: Callable[[], str],
                 health: Callable[[], tuple[bool, dict]]) -> None:
        handler = type("Handler", (_Handler,), {"render": staticmethod(render), "health": staticmethod(health)})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="asinfer-metrics", daemon=True)

    @property
    def port(self) -> int:
        """The port listened on."""
        return self._httpd.server_address[1]

    def start(self) -> MetricsServer:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    render: Callable[[], str]
    health: Callable[[], tuple[bool, dict]]
    server_version = "asinfer-node"
    timeout = 10  # a client that connects and says nothing does not hold a thread for long

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._answer(200, CONTENT_TYPE, self.render())
            elif path == "/healthz":
                healthy, details = self.health()
                self._answer(200 if healthy else 503, "application/json",
                             json.dumps({"status": "ok" if healthy else "unhealthy", **details}) + "\n")
            else:
                self._answer(404, "text/plain; charset=utf-8", "not found: try /metrics or /healthz\n")
        except Exception as exc:  # a scrape must never take the node down; say what failed
            log.error("event=metrics-failed path=%s error=%s", path, type(exc).__name__)
            self._answer(500, "text/plain; charset=utf-8", f"error: {type(exc).__name__}\n")

    def _answer(self, code: int, content_type: str, text: str) -> None:
        body = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the standard library's signature)
        pass  # scrapes every few seconds would drown the node's own log lines
