"""One screen task, where it runs: load the classifier once per process, decide a few series, write their part.

A task carries paths and settings, never pixels or models: :class:`TaskSpec`
holds the series keys and their path blocks. The classifier comes from a
per-process cache (:func:`classifier_for`), so a worker loads it once, with
ONNX Runtime and preprocessing threads set to the worker's share of cores.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path

from ._index import decode_paths
from ._store import SERIES_COLUMNS, SLICE_COLUMNS, TASK_FAILED, ResultsStore


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the classifier (the arguments of ``asinfer.engine.load``)."""

    path: str | None = None
    provider: str = "cpu"
    artifact: str | None = None
    threads: int | None = None
    sha256: str | None = None
    max_pixels: int | None = None
    max_bytes: int | None = None

    def load(self):
        from asinfer import engine

        limits = {k: v for k, v in (("max_pixels", self.max_pixels), ("max_bytes", self.max_bytes)) if v}
        return engine.load(self.path, provider=self.provider, artifact=self.artifact, threads=self.threads,
                           sha256=self.sha256, **limits)


@dataclass(frozen=True)
class SeriesSpec:
    """One series of a task: its key and its files (NUL-separated path block)."""

    grouped_by: str
    key: str
    block: bytes

    def paths(self) -> list[str]:
        return decode_paths(self.block)


@dataclass(frozen=True)
class TaskSpec:
    """What a task needs: its part name, the results folder, the model and its series (paths only)."""

    part: str
    out: str
    model: ModelSpec
    series: tuple[SeriesSpec, ...]
    batch_size: int = 8
    strict: bool = False


@dataclass(frozen=True)
class TaskOutcome:
    """What a task reports back: counts, and the artifact that decided (for run.json)."""

    part: str
    series: int
    positive: int
    undecided: int
    slices: int
    failed_slices: int
    sha256: str = ""


_CACHE: dict[ModelSpec, object] = {}
_CACHE_LOCK = threading.Lock()


def classifier_for(spec: ModelSpec):
    """The process' classifier for ``spec``, loaded on first use (a worker loads its model once)."""
    with _CACHE_LOCK:
        clf = _CACHE.get(spec)
        if clf is None:
            clf = spec.load()
            if len(_CACHE) >= 2:  # a long-lived process that screens with several models keeps the last two
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[spec] = clf
        return clf


def model_info(spec: ModelSpec) -> dict:
    """What run.json records about the model, from the classifier a worker loaded (loading it if needed)."""
    clf = classifier_for(spec)
    m = clf.manifest
    return {"name": m.name, "version": m.version, "artifact": clf.artifact.format, "sha256": clf.artifact.sha256,
            "provider": clf.provider, "path": spec.path or "", "labels": list(m.labels), "threshold": clf.threshold,
            "series_rule": clf.series_rule.kind, "synthetic_training_data": m.synthetic_training_data,
            "notice": m.notice}


def run_task(task: TaskSpec) -> TaskOutcome:
    """Screen the task's series and write their part; raises on anything that is not an input's fault."""
    clf = classifier_for(task.model)
    owners, paths = _owners(task.series)
    slice_rows = _rows(SLICE_COLUMNS)
    collector = _collector()
    for p in clf.iter_predict(paths, task.batch_size):
        n = _owner(owners, p.source)
        collector.add(p, group=str(n))
        _add(slice_rows, source=p.source, frame=p.frame, series=task.series[n].key, probability=p.probability,
             label=p.label, reason=p.reason, message=p.message)
    results = [replace(r, key=task.series[int(r.key)].key, grouped_by=task.series[int(r.key)].grouped_by)
               for r in collector.results(clf.series_rule, clf.manifest.labels, task.strict)]
    ResultsStore(task.out).write_part(task.part, slice_rows, series_rows(results))
    return TaskOutcome(task.part, len(results), sum(r.label == clf.manifest.labels[1] for r in results),
                       sum(r.label is None for r in results), len(slice_rows["source"]),
                       sum(r is not None for r in slice_rows["reason"]), clf.artifact.sha256)


def write_failed(task: TaskSpec, error: BaseException) -> TaskOutcome:
    """The task's series as failed, every input a row with the reason (a task that failed its retries)."""
    message = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    slice_rows = _rows(SLICE_COLUMNS)
    series = _rows(SERIES_COLUMNS)
    for s in task.series:
        paths = list(dict.fromkeys(s.paths()))
        for path in paths:
            _add(slice_rows, source=path, frame=None, series=s.key, probability=None, label=None,
                 reason=TASK_FAILED, message=message)
        _add(series, series=s.key, grouped_by=s.grouped_by, study="", description="", modality="", n_slices=0,
             n_failed=len(paths), n_duplicates=0, score=None, label=None, reason=TASK_FAILED,
             message=f"the task failed after its retries: {message}", ordered_by="", driving=[])
    ResultsStore(task.out).write_part(task.part, slice_rows, series)
    return TaskOutcome(task.part, len(task.series), 0, len(task.series), len(slice_rows["source"]),
                       len(slice_rows["source"]))


def series_rows(results) -> dict[str, list]:
    """The series table's columns from ``SeriesResult`` objects."""
    rows = _rows(SERIES_COLUMNS)
    for r in results:
        _add(rows, series=r.key, grouped_by=r.grouped_by, study=r.study_uid, description=r.description,
             modality=r.modality, n_slices=r.n_slices, n_failed=r.n_failed, n_duplicates=r.n_duplicates,
             score=r.score, label=r.label, reason=r.reason, message=r.message, ordered_by=r.ordered_by,
             driving=[{"source": s, "frame": f} for s, f in r.driving])
    return rows


def _owners(series: tuple[SeriesSpec, ...]) -> tuple[dict[str, int], list[str]]:
    """path -> index of its series, and the task's paths once each, in order (a path listed twice is one input)."""
    owners: dict[str, int] = {}
    for n, s in enumerate(series):
        for path in s.paths():
            owners.setdefault(path, n)
    return owners, list(owners)


def _owner(owners: dict[str, int], source: str) -> int:
    """The series of a prediction: its file's, or (for a folder input walked again) the nearest folder's."""
    n = owners.get(source)
    if n is not None:
        return n
    for parent in Path(source).parents:
        n = owners.get(str(parent))
        if n is not None:
            return n
    raise RuntimeError(f"the engine returned a row for {source!r}, which this task did not ask for")


def _collector():
    from asinfer import engine

    return engine.SeriesCollector()


def _rows(columns) -> dict[str, list]:
    """Empty columns of a table in :data:`SLICE_COLUMNS` / :data:`SERIES_COLUMNS` form."""
    return {column[0]: [] for column in columns}


def _add(rows: dict[str, list], **values) -> None:
    for name, value in values.items():
        rows[name].append(value)
