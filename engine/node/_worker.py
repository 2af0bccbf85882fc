"""The worker: one thread, one loaded :class:`~asinfer.engine.Classifier`, one series at a time.

It takes the oldest complete run from the spool, decides the series (:meth:`Classifier.predict_series`,
the same decision ``asinfer predict`` makes) and writes the SR and Secondary Capture with the engine's
report writer (:meth:`Classifier.report`) plus a ``result.json``, all into a temporary folder that is
fsynced and renamed into place; only then is the run marked ``done`` (or ``sending``, its files queued
in the outbox in the same transaction, when there is a destination). Every step can run twice: a run
found with its result folder in place is marked done without a second inference, and the report's UIDs
come from the series and the model, so a repeated run writes the same objects.

While no complete run waits, the worker predicts the slices of series that are still arriving (a batch
at a time, checking for complete runs between batches) and keeps those predictions in memory. When the
series completes, only its remaining slices are predicted; the decision is the one over all of them, as
:meth:`Classifier.predict_series` makes it, so the quiet period is spent on inference instead of waiting.
The memory is a cache: a restart loses it and the series is predicted whole.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from ._config import Selection
from ._metrics import Metrics
from ._spool import Loop, Run, Spool, fsync_dir, write_durably

log = logging.getLogger("asinfer.node")


class Worker(Loop):
    """Processes complete runs until :meth:`stop`; the run at hand is finished first."""

    #: Slice predictions held for series still arriving, at most (beyond it the worker waits for completion).
    EARLY_LIMIT = 20_000

    def __init__(self, spool: Spool, classifier, *, batch_size: int = 8, max_attempts: int = 3,
                 send: bool = False, on_queued=None, metrics: Metrics | None = None,
                 early: Selection | None = None, events=None, on_processed=None) -> None:
        super().__init__("asinfer-worker", events)
        self.spool = spool
        self.classifier = classifier
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.send = send  # queue the results for the destination (the sender) instead of stopping at done
        self._on_queued = on_queued or (lambda: None)
        self.metrics = metrics or Metrics()
        self.processed = 0  # runs this worker brought to done or failed
        self._on_processed = on_processed or (lambda: None)
        self.early = early  # predict arriving series that these rules do not already rule out; None: never
        self._early: dict[str, dict[str, list]] = {}  # series UID -> instance file -> its predictions

    def run(self) -> None:
        _warm_up()
        while not self.stopping():
            try:
                run = self.spool.claim_next()
            except Exception as exc:  # the database is unavailable: try again later, never spin
                log.error("event=claim-failed error=%s", type(exc).__name__)
                run = None
            if run is None:
                if not self._predict_early():
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
            self._on_processed()
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
        series = [s for s in self._decide(run, files) if s.key == run.series_uid]
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

    def _decide(self, run: Run, files: list[Path]) -> list:
        """``predict_series(files)``, with the slices predicted early taken from memory."""
        from asinfer.engine import SeriesCollector

        early = self._early.pop(run.series_uid, {})
        fresh: dict[str, list] = {}
        for p in self.classifier.iter_predict([f for f in files if str(f) not in early], self.batch_size):
            fresh.setdefault(p.source, []).append(p)
        collector = SeriesCollector()
        for f in files:  # the order predict_series would add them in
            for p in early.get(str(f)) or fresh.get(str(f), ()):
                collector.add(p)
        return collector.results(self.classifier.series_rule, self.classifier.manifest.labels)

    def _predict_early(self) -> bool:
        """Predict one batch of slices of series still arriving; False when there was nothing to do."""
        if self.early is None:
            return False
        try:
            receiving = self.spool.runs("receiving")
            if self._early.keys() - {run.series_uid for run in receiving}:  # forget series ignored or given up
                active = {r.series_uid for state in ("receiving", "complete", "processing")
                          for r in self.spool.runs(state)}
                for uid in self._early.keys() - active:
                    del self._early[uid]
        except Exception as exc:  # the database is busy or failing: the run will be predicted whole
            log.debug("event=early-skipped error=%s", type(exc).__name__)
            return False
        if sum(len(v) for v in self._early.values()) >= self.EARLY_LIMIT:
            return False
        for run in receiving:
            if self.early.check(run.header, n_slices=self.early.min_slices) is not None:
                continue  # a selection rule already fails: it will be ignored, not processed
            held = self._early.setdefault(run.series_uid, {})
            todo = [f for f in self.spool.instance_files(run) if str(f) not in held][:self.batch_size]
            if not todo:
                continue
            for p in self.classifier.iter_predict(todo, self.batch_size):
                held.setdefault(p.source, []).append(p)
            self.metrics.inc("instances_predicted_early", len(todo))
            return True
        return False

    def _finish(self, run: Run, final: Path, label, score) -> str:
        state = self.spool.finish(run, final, label, score, send=self.send)
        if self.send:
            self._on_queued()
        return state


def _warm_up() -> None:
    """Import what the report writer needs now, not while the first series waits (highdicom: ~0.3 s)."""
    try:
        import highdicom  # noqa: F401
        from pydicom.sr.codedict import codes

        codes.DCM.ProcessingEquipment  # noqa: B018 (builds the code dictionary's lookup on first use)
    except Exception:  # the report says what is missing when it runs
        log.debug("event=warm-up-skipped", exc_info=True)


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
