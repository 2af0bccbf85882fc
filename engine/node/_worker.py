"""The worker: one thread, one loaded :class:`~asinfer.engine.Classifier`, one series at a time.

It takes the oldest complete run from the spool, decides the series (:meth:`Classifier.predict_series`,
the same decision ``asinfer predict`` makes) and writes the SR and Secondary Capture with the engine's
report writer (:meth:`Classifier.report`) plus a ``result.json``, all into a temporary folder that is
fsynced and renamed into place; only then is the run marked ``done`` (or ``sending``, its files queued
in the outbox in the same transaction, when there is a destination). Every step can run twice: a run
found with its result folder in place is marked done without a second inference, and the report's UIDs
come from the series and the model, so a repeated run writes the same objects.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from ._metrics import Metrics
from ._spool import Loop, Run, Spool, fsync_dir, write_durably

log = logging.getLogger("asinfer.node")


class Worker(Loop):
    """Processes complete runs until :meth:`stop`; the run at hand is finished first."""

    def __init__(self, spool: Spool, classifier, *, batch_size: int = 8, max_attempts: int = 3,
                 send: bool = False, on_queued=None, metrics: Metrics | None = None) -> None:
        super().__init__("asinfer-worker")
        self.spool = spool
        self.classifier = classifier
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.send = send  # queue the results for the destination (the sender) instead of stopping at done
        self._on_queued = on_queued or (lambda: None)
        self.metrics = metrics or Metrics()
        self.processed = 0  # runs this worker brought to done or failed

    def run(self) -> None:
        while not self.stopping():
            try:
                run = self.spool.claim_next()
            except Exception as exc:  # the database is unavailable: try again later, never spin
                log.error("event=claim-failed error=%s", type(exc).__name__)
                run = None
            if run is None:
                self.sleep(1.0)
                continue
            self.process(run)

    def process(self, run: Run) -> str:
        """Take one claimed run to ``done``, back to ``complete`` (a retry) or ``failed``; returns the state."""
        started = time.monotonic()
        try:
            state = self._process(run)
        except Exception as exc:  # unexpected: retried up to max_attempts, then failed with the reason
            shutil.rmtree(self.spool.temp_folder(run), ignore_errors=True)
            state = self.spool.fail(run, "internal", f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                                    retry=True, max_attempts=self.max_attempts)
            log.error("event=run-error run=%d attempt=%d error=%s state=%s", run.id, run.attempts,
                      type(exc).__name__, state)
        if state != "complete":
            self.processed += 1
        self._count(run, state)
        log.info("event=run-%s run=%d number=%d attempt=%d seconds=%.3f", state, run.id, run.run, run.attempts,
                 time.monotonic() - started)
        return state

    def _count(self, run: Run, state: str) -> None:
        if state in ("done", "sending"):
            self.metrics.inc("series_processed")
            self.metrics.observe("series_latency_seconds", time.time() - run.last_at, "durable")
        elif state == "failed":
            self.metrics.inc("series_failed")

    def _process(self, run: Run) -> str:
        final = self.spool.result_folder(run)
        if final.is_dir():  # the last attempt renamed its results into place, then the node stopped
            summary = _summary(final)
            return self._finish(run, final, summary.get("label"), summary.get("score"))
        files = self.spool.instance_files(run)
        started = time.monotonic()
        series = [s for s in self.classifier.predict_series(files, self.batch_size) if s.key == run.series_uid]
        self.metrics.observe("inference_seconds", time.monotonic() - started)
        if not series:
            return self.spool.fail(run, "no-slices", f"none of the {len(files)} instance(s) could be read as an image",
                                   retry=False, max_attempts=self.max_attempts)
        decided = series[0]
        tmp = self.spool.temp_folder(run)
        shutil.rmtree(tmp, ignore_errors=True)
        report = self.classifier.report(decided, tmp, run=run.run)
        if not report.ok:
            shutil.rmtree(tmp, ignore_errors=True)
            return self.spool.fail(run, report.reason, report.message or "", retry=report.reason == "report-failed",
                                   max_attempts=self.max_attempts)
        write_durably(tmp, "result.json", _result_json(run, decided, report))
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        return self._finish(run, final, decided.label, decided.score)

    def _finish(self, run: Run, final: Path, label, score) -> str:
        state = self.spool.finish(run, final, label, score, send=self.send)
        if self.send:
            self._on_queued()
        return state


def _result_json(run: Run, series, report) -> bytes:
    """The run's decision for machines: the series row, the files, and which run of the series it is."""
    data = {"run": run.run, "late": run.late, "series": series.to_dict(),
            "sr": report.sr.name if report.sr else None, "sc": [p.name for p in report.sc],
            "note": "NOT FOR DIAGNOSTIC USE"}
    return json.dumps(data, indent=2).encode()


def _summary(folder: Path) -> dict:
    """label and score from a result folder's result.json (empty when unreadable)."""
    try:
        series = json.loads((folder / "result.json").read_text()).get("series", {})
    except (OSError, ValueError):
        return {}
    return {"label": series.get("label"), "score": series.get("score")}
