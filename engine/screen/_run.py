"""The screen run: index the inputs into series, run one task per series (or group of small series), account
for every input, and record the run."""

from __future__ import annotations

import collections
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from ._executors import LOCAL, SYNCHRONOUS, DaskExecutor, SyncExecutor
from ._index import SeriesIndex, chunks, decode_paths, encode_paths, scan_chunk
from ._listing import iter_inputs
from ._store import RUN_SCHEMA, Done, ResultsStore, part_id
from ._task import ModelSpec, SeriesSpec, TaskOutcome, TaskSpec, model_info, run_task, write_failed

#: ``progress(phase, done, total)``: phase ``index`` counts files (total None while listing), ``screen`` slices.
Progress = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class ScreenSettings:
    """One screen run.

    Attributes:
        inputs: folders, list files (``.txt``/``.lst``/``.list``: a path a line; ``.csv``: a ``path``
            column) or image files.
        out: the results folder (``slices/``, ``series/``, ``run.json``).
        scheduler: ``synchronous`` (in this process), ``local`` (a LocalCluster started here) or a
            scheduler address (``tcp://host:8786``).
        workers: processes of a local cluster [default: cores // threads_per_worker].
        threads_per_worker: cores each worker's classifier uses (ONNX Runtime and preprocessing threads)
            [default: 1 on a cluster, every core for synchronous].
        resume: skip the series already in ``out``; without it, a folder holding results is refused.
        retries: times a failed task is run again before its series are written as failed.
        task_slices: small series are packed into one task until it holds this many slices.
        index_chunk: files per header-scan task.
        model, provider, artifact, sha256, max_pixels, max_bytes, batch_size, strict: as for
            ``asinfer predict`` (``asinfer.engine.load`` and ``Classifier.predict_series``).
        command: the command line, for run.json.
    """

    inputs: tuple[str, ...]
    out: Path
    scheduler: str = LOCAL
    workers: int | None = None
    threads_per_worker: int | None = None
    resume: bool = False
    retries: int = 2
    task_slices: int = 64
    index_chunk: int = 1000
    model: str | None = None
    provider: str = "auto"
    artifact: str | None = None
    sha256: str | None = None
    max_pixels: int | None = None
    max_bytes: int | None = None
    batch_size: int = 8
    strict: bool = False
    command: tuple[str, ...] = ()

    def validate(self) -> None:
        """Raises ValueError naming a bad value and the valid ones."""
        if not self.inputs:
            raise ValueError("no inputs: give folders, list files or image files")
        if self.scheduler not in (SYNCHRONOUS, LOCAL) and "://" not in self.scheduler:
            raise ValueError(f"scheduler {self.scheduler!r} is not synchronous, local or an address such as "
                             f"tcp://host:8786")
        for name in ("workers", "threads_per_worker"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name in ("retries",):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("task_slices", "index_chunk", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class ScreenSummary:
    """What a run did, and what the results folder holds after it.

    Attributes:
        series, positive, undecided: series totals of the results folder (resumed series included).
        slices, failed_slices: slice rows of the results folder, and those carrying a reason.
        screened: series decided by this run; resumed: series skipped because ``out`` held them;
        retried: series a previous run wrote as failed (``task-failed``), screened again.
        failed_series: series written as failed after their task's retries (reason ``task-failed``).
        files: input files listed; skipped: entries folder walks passed over, by why.
        seconds: ``start`` (cluster and model), ``index`` (listing and header scan), ``screen``.
        slices_per_s: slices this run decided per second of its screening phase.
        interrupted: the run was stopped (Ctrl-C); ``--resume`` continues it.
    """

    out: str
    scheduler: str
    workers: int
    threads_per_worker: int | None
    model: dict
    series: int = 0
    positive: int = 0
    undecided: int = 0
    slices: int = 0
    failed_slices: int = 0
    screened: int = 0
    screened_slices: int = 0
    resumed: int = 0
    retried: int = 0
    failed_series: int = 0
    files: int = 0
    cleaned: int = 0
    skipped: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    slices_per_s: float = 0.0
    interrupted: bool = False
    positive_label: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class ScreenInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; ``summary`` holds what was written (``--resume`` continues)."""

    def __init__(self, summary: ScreenSummary) -> None:
        super().__init__("screen interrupted")
        self.summary = summary


def screen(settings: ScreenSettings, progress: Progress | None = None) -> ScreenSummary:
    """Screen every input: one row per slice (or per input that gave none) and one row per series.

    Args:
        settings: the run (:class:`ScreenSettings`).
        progress: optional ``progress(phase, done, total)``.

    Returns:
        A :class:`ScreenSummary`.

    Raises:
        FileExistsError: ``out`` holds results and ``resume`` is off.
        ValueError: a bad setting, a CSV list without a ``path`` column, or ``resume`` with another model.
        asinfer.engine.ModelError: the model cannot be loaded.
        RuntimeError: another run writes ``out``.
        ScreenInterrupted: Ctrl-C; what was written stays, and run.json says ``interrupted``.

    Example:
        >>> s = screen(ScreenSettings(("archive.txt",), Path("results"), scheduler="synchronous"))  # doctest: +SKIP
        >>> s.series, s.positive, s.failed_series  # doctest: +SKIP
        (160, 41, 0)
    """
    settings = replace(settings, out=Path(settings.out), inputs=tuple(str(i) for i in settings.inputs))
    settings.validate()
    store = ResultsStore(settings.out)
    settings.out.mkdir(parents=True, exist_ok=True)
    with store.lock():
        if store.holds_results() and not settings.resume:
            raise FileExistsError(f"{settings.out} already holds results; add --resume to continue that run, "
                                  f"or choose another folder")
        return _Run(settings, store, progress or (lambda phase, done, total: None)).run()


class _Run:
    def __init__(self, settings: ScreenSettings, store: ResultsStore, progress: Progress) -> None:
        self.settings, self.store, self.progress = settings, store, progress
        local = settings.scheduler != SYNCHRONOUS
        self.threads = settings.threads_per_worker or (1 if local else None)
        self.spec = ModelSpec(settings.model, settings.provider, settings.artifact, self.threads, settings.sha256,
                              settings.max_pixels, settings.max_bytes)
        self.started = datetime.now(timezone.utc)
        self.skipped: collections.Counter = collections.Counter()
        self.shas: set[str] = set()

    def run(self) -> ScreenSummary:
        executor = self._executor()
        try:
            return self._run(executor)
        finally:
            executor.close()

    def _run(self, executor) -> ScreenSummary:
        model = executor.call(model_info, self.spec)  # loaded where the tasks run: the model they will use
        self._check_model(model)
        self.store.prepare()
        cleaned = self.store.clean() if self.settings.resume else 0
        done = self.store.done(model["labels"][1]) if self.settings.resume else Done(set())
        summary = ScreenSummary(str(self.settings.out), self.settings.scheduler, executor.workers, self.threads,
                                model, cleaned=cleaned, resumed=len(done.keys), retried=len(done.failed),
                                positive_label=model["labels"][1])
        summary.seconds["start"] = round(executor.start_seconds, 3)
        self._totals(summary, done)
        self.store.write_run(self._record(summary, "running"))
        try:
            self._screen(executor, done, summary)
        except KeyboardInterrupt:
            summary.interrupted = True
            self._finish(summary)
            raise ScreenInterrupted(summary) from None
        self._finish(summary)
        return summary

    def _check_model(self, model: dict) -> None:
        previous = self.store.read_run() if self.settings.resume else None
        if previous and previous.get("model", {}).get("sha256") not in (None, model["sha256"]):
            raise ValueError(f"{self.settings.out} holds results of model sha256 "
                             f"{previous['model']['sha256'][:16]}…, not of {model['sha256'][:16]}… "
                             f"({model['name']} {model['version']}); resume with that model, or use "
                             f"another folder")

    def _executor(self):
        s = self.settings
        if s.scheduler == SYNCHRONOUS:
            return SyncExecutor()
        from ._plugin import ClassifierPlugin

        workers = s.workers or max(1, (os.cpu_count() or 1) // (self.threads or 1))
        return DaskExecutor(s.scheduler, workers,
                            setup=lambda client: client.register_plugin(ClassifierPlugin(self.spec)))

    def _screen(self, executor, done: Done, summary: ScreenSummary) -> None:
        start = time.perf_counter()
        index = self._index(executor, summary)
        summary.seconds["index"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        try:
            self._schedule(executor, done, summary, index)
        finally:
            summary.seconds["screen"] = round(time.perf_counter() - start, 3)

    def _schedule(self, executor, done: Done, summary: ScreenSummary, index: SeriesIndex) -> None:
        total = sum(e.frames for e in index if (e.grouped_by, e.key) not in done.keys)
        progress = _Counter(self.progress, "screen", total)
        split: list[TaskSpec] = []
        for task, outcome, error in executor.imap(run_task, self._tasks(index, done), self.settings.retries):
            if error is not None and len(task.series) > 1 and not self.store.committed(task.part):
                split.append(task)  # find the series at fault: each alone, once more
                continue
            self._count(summary, task, outcome, error, progress)
        singles = (self._task((s,)) for task in split for s in task.series)
        for task, outcome, error in executor.imap(run_task, singles, self.settings.retries):
            self._count(summary, task, outcome, error, progress)

    def _count(self, summary: ScreenSummary, task: TaskSpec, outcome: TaskOutcome | None,
               error: BaseException | None, progress: _Counter) -> None:
        if error is not None and self.store.committed(task.part):
            # an attempt wrote its part and then died (its worker lost before it reported): that part stands
            outcome = self._written(task.part, summary.positive_label)
        elif error is not None:
            outcome = write_failed(task, error)
            summary.failed_series += outcome.series
        if outcome.sha256:
            self.shas.add(outcome.sha256)
        summary.screened += outcome.series
        summary.screened_slices += outcome.slices
        summary.series += outcome.series
        summary.positive += outcome.positive
        summary.undecided += outcome.undecided
        summary.slices += outcome.slices
        summary.failed_slices += outcome.failed_slices
        progress.add(outcome.slices)

    def _index(self, executor, summary: ScreenSummary) -> SeriesIndex:
        """List the inputs and scan their headers into series (chunks scanned where the tasks run)."""
        def skipped(path, why) -> None:
            self.skipped[str(why)] += 1

        index = SeriesIndex()
        counter = _Counter(self.progress, "index", None)
        listing = chunks(iter_inputs(list(self.settings.inputs), skipped), self.settings.index_chunk)
        for block, scanned, error in executor.imap(scan_chunk, listing, self.settings.retries):
            index.add(scanned if error is None else _by_folder(block))
            counter.add(sum(files for _, files, _ in (scanned or _by_folder(block)).values()))
        summary.files = index.files
        summary.skipped = dict(self.skipped)
        return index

    def _tasks(self, index: SeriesIndex, done: Done) -> Iterator[TaskSpec]:
        """Series not yet done, packed into tasks of about ``task_slices`` slices (a series is never split).

        A series a previous run wrote as failed runs again alone, so its part keeps its name and is replaced.
        """
        batch, weight = [], 0
        for entry in index:
            if (entry.grouped_by, entry.key) in done.keys:
                continue
            series = SeriesSpec(entry.grouped_by, entry.key, bytes(entry.block))
            entry.block = bytearray()  # the task holds it now: the index keeps no second copy
            if (entry.grouped_by, entry.key) in done.failed:  # alone: its new part replaces its failed one
                yield self._task((series,))
                continue
            batch.append(series)
            weight += entry.frames
            if weight >= self.settings.task_slices:
                yield self._task(tuple(batch))
                batch, weight = [], 0
        if batch:
            yield self._task(tuple(batch))

    def _task(self, series: tuple[SeriesSpec, ...]) -> TaskSpec:
        return TaskSpec(part_id((s.grouped_by, s.key) for s in series), str(self.settings.out), self.spec, series,
                        self.settings.batch_size, self.settings.strict)

    def _written(self, part: str, positive_label: str) -> TaskOutcome:
        d = self.store.done(positive_label, [self.store.series / f"part-{part}.parquet"])
        return TaskOutcome(part, d.series, d.positive, d.undecided, d.slices, d.failed_slices)

    @staticmethod
    def _totals(summary: ScreenSummary, done: Done) -> None:
        summary.series, summary.positive, summary.undecided = done.series, done.positive, done.undecided
        summary.slices, summary.failed_slices = done.slices, done.failed_slices

    def _finish(self, summary: ScreenSummary) -> None:
        screen_s = summary.seconds.get("screen")
        if screen_s:
            summary.slices_per_s = round(summary.screened_slices / screen_s, 2)
        if self.shas - {summary.model["sha256"]}:
            summary.model["worker_sha256"] = sorted(self.shas)
        self.store.write_run(self._record(summary, "interrupted" if summary.interrupted else "complete"))

    def _record(self, summary: ScreenSummary, status: str) -> dict:
        s = self.settings
        return {"schema": RUN_SCHEMA, "status": status, "command": list(s.command or sys.argv),
                "started": self.started.isoformat(timespec="seconds"),
                "ended": None if status == "running" else datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "model": summary.model, "scheduler": s.scheduler, "workers": summary.workers,
                "threads_per_worker": self.threads, "resume": s.resume,
                "counts": {k: getattr(summary, k) for k in ("files", "series", "positive", "undecided", "slices",
                                                            "failed_slices", "screened", "screened_slices",
                                                            "resumed", "retried", "failed_series", "cleaned")},
                "skipped": summary.skipped, "seconds": summary.seconds, "slices_per_s": summary.slices_per_s}


class _Counter:
    """Adds up and reports progress."""

    def __init__(self, progress: Progress, phase: str, total: int | None) -> None:
        self.progress, self.phase, self.total, self.done = progress, phase, total, 0
        progress(phase, 0, total)

    def add(self, n: int) -> None:
        self.done += n
        self.progress(self.phase, self.done, self.total)


def _by_folder(block: bytes) -> dict:
    """A chunk whose scan failed after its retries: each file under its folder (the engine's rule without a header)."""
    groups: dict = {}
    for path in decode_paths(block):
        groups.setdefault(("folder", str(Path(path).parent)), []).append(path)
    return {key: (encode_paths(paths), len(paths), len(paths)) for key, paths in groups.items()}
