"""``asinfer bench``: every format of a model side by side, plus preprocessing and the end-to-end engine.

One row per format of :data:`asinfer.engine.FORMATS` (in its order): status, size,
AUC, label agreement and max |Δp| against Keras (or, in a bundle without
Keras, the most exact format present), batch-1 latency, img/s per
batch size, peak RSS and cold start of a process that runs only that format.
A bundle without a Keras model gets a speed-only Keras row when TensorFlow is
installed: the architecture of its ``train_config.json`` with random weights.
Two pipeline rows: preprocessing alone (read DICOM -> CLAHE -> resize) and
end to end (``Classifier.predict`` on the files with the int8 artifact).

Contenders are timed interleaved (A B C A B C ...) after a warm-up; ratios
between rows of one run are gated, absolute times only printed. Accuracy
gates (each format's parity tolerance against the reference) are always on.
The result is a typed :class:`~asinfer.benchmarks.report.BenchReport`.

Example:
    >>> config = BenchConfig.from_options("runs/demo", quick=True)  # doctest: +SKIP
    >>> report = run(config)  # doctest: +SKIP
    >>> print(render_text(report))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from asinfer.engine import FORMATS, get_format
from asinfer.engine.bundle import OK as ARTIFACT_OK
from asinfer.engine.bundle import UNHASHED, check_artifact, measure_parity, roc_auc
from asinfer.trainer.runtimes import RUNTIMES, predict_all

from . import _render, gates
from ._child import ProcessStats
from ._data import BenchData, load_data
from ._standin import build_keras_standin
from ._timing import Timing, interleave
from .gates import Rule
from .report import (
    FAILED, OK, SCHEMA, SKIPPED, BenchReport, DataInfo, EngineCli, Latency, Machine, ModelInfo, Row, Settings, Speed, Stage,
    one_line, write_json,
)

__all__ = ["SCHEMA", "BenchConfig", "BenchReport", "run", "render_text", "write_json", "write_markdown",
           "exit_code"]

DEFAULTS = {False: {"rounds": 7, "batch_sizes": (1, 8, 32)}, True: {"rounds": 3, "batch_sizes": (1, 8)}}
PIPELINE = {"preprocess": "read DICOM + CLAHE + resize", "end-to-end": "Classifier.predict: read -> CLAHE -> inference"}
E2E_ARTIFACT, E2E_BATCH = "onnx-int8", 8
NOT_IN_BUNDLE = "not in bundle; reproduce with python -m asinfer.trainer.demo (or asinfer convert RUN_DIR)"
VERSIONS = ("asinfer", "numpy", "onnxruntime", "opencv-python-headless", "pydicom", "tensorflow", "keras",
            "ai-edge-litert", "scikit-learn")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    """What one ``asinfer bench`` run measures; build it with :meth:`from_options`."""

    model: Path
    data: Path | None = None  # dataset folder/CSV, or .npz of preprocessed images+labels; None: phantoms
    formats: tuple[str, ...] = tuple(FORMATS)
    batch_sizes: tuple[int, ...] = DEFAULTS[False]["batch_sizes"]
    rounds: int = DEFAULTS[False]["rounds"]
    rules: tuple[Rule, ...] = ()
    quick: bool = False
    threads: int = os.cpu_count() or 1
    processes: bool = True  # cold start and peak RSS in child processes

    @classmethod
    def from_options(cls, model=None, data=None, formats: str | Sequence[str] | None = None,
                     batch_sizes: str | Sequence[int] | None = None, rounds: int | None = None,
                     rules: Sequence[str] = (), quick: bool = False) -> "BenchConfig":
        """Validate command-line style options.

        Raises:
            ValueError: an unknown format, a bad batch size or rounds, or a
                malformed ``--fail-under`` rule; the message names the bad
                value and the valid ones.
        """
        from asinfer.engine import default_model

        defaults = DEFAULTS[quick]
        sizes = _batch_sizes(batch_sizes) if batch_sizes else defaults["batch_sizes"]
        if rounds is not None and rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        names = [*FORMATS, *PIPELINE]
        return cls(model=Path(model) if model else default_model(), data=Path(data) if data else None,
                   formats=_formats(formats), batch_sizes=sizes, rounds=rounds or defaults["rounds"],
                   rules=tuple(gates.parse_rule(r, names) for r in rules), quick=quick)

    def command(self) -> str:
        """A command line that repeats this run exactly."""
        args = ["asinfer", "bench", str(self.model)] + (["--data", str(self.data)] if self.data else [])
        if self.formats != tuple(FORMATS):
            args += ["--formats", ",".join(self.formats)]
        args += ["--batch-sizes", ",".join(map(str, self.batch_sizes)), "--rounds", str(self.rounds)]
        args += [a for r in self.rules for a in ("--fail-under", str(r))] + (["--quick"] if self.quick else [])
        return shlex.join(args)


def _formats(value) -> tuple[str, ...]:
    """Requested formats in FORMATS order."""
    if not value:
        return tuple(FORMATS)
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    for name in names:
        get_format(name)  # ValueError naming the valid formats and the closest one
    return tuple(n for n in FORMATS if n in names)


def _batch_sizes(value) -> tuple[int, ...]:
    items = value.split(",") if isinstance(value, str) else value
    sizes = []
    for item in items:
        try:
            size = int(str(item).strip())
        except ValueError:
            size = 0
        if not 1 <= size <= 1024:
            raise ValueError(f"batch size {str(item).strip()!r} is not an integer in 1..1024; e.g. --batch-sizes 1,8,32")
        sizes.append(size)
    return tuple(sorted(set(sizes)))


# --- the run -------------------------------------------------------------------------------------------------


def run(config: BenchConfig, progress: Progress | None = None) -> BenchReport:
    """Benchmark every requested format of ``config.model``.

    Raises:
        engine.ModelError: the model cannot be found or read.
        FileNotFoundError, ValueError: unusable ``config.data``.
    """
    from asinfer.engine import locate

    say = progress or (lambda line: None)
    manifest, folder = locate(config.model)
    with tempfile.TemporaryDirectory(prefix="asinfer-bench-") as tmp:  # phantoms, a Keras stand-in
        work = Path(tmp)
        data = load_data(config.data, config.quick, manifest, work, say)
        rows, files = _rows(config, manifest, folder, work, say)
        runners = _load_runners(rows, files, config.threads, say)
        reference = _accuracy(rows, runners, data, manifest.threshold, say)
        _speed(rows, runners, data.images, config, say)
        del runners  # the child processes below measure memory; free the models first
        cli = _processes(rows, files, data, config, say) if config.processes else None
        stages, share = _pipeline(config, manifest, data.files, say)
    return _assemble(config, manifest, rows, stages, share, cli, data, reference)


def _rows(config: BenchConfig, manifest, folder: Path | None, work: Path,
          say: Progress) -> tuple[list[Row], dict[str, Path]]:
    """A row per requested format, and the file each runnable one loads from; skips and failures say why."""
    rows, files = [], {}
    for name in config.formats:
        fmt, art = FORMATS[name], manifest.artifact(name)
        row = Row(name, fmt.runtime, fmt.precision, tolerance=fmt.tolerance)
        missing = RUNTIMES[fmt.runtime].missing()
        if art is None and name == "keras":
            files.update(_keras_standin(row, folder, manifest, work, config.threads, missing, say))
        elif art is None:
            row.status, row.reason = SKIPPED, NOT_IN_BUNDLE
        elif missing:
            row.status, row.reason = SKIPPED, missing
        else:
            check = check_artifact(folder, art) if folder is not None else None
            if check is not None and check.status not in (ARTIFACT_OK, UNHASHED):
                row.fail(f"{check.message}; refusing to benchmark a file the manifest does not describe", "verify")
            else:
                row.file, row.size_mb = art.file, round(art.bytes / 1e6, 2)
                files[name] = folder / art.file if folder is not None else config.model
        rows.append(row)
    return rows, files


def _keras_standin(row: Row, folder: Path | None, manifest, work: Path, threads: int, missing: str | None,
                   say: Progress) -> dict[str, Path]:
    """Make ``row`` the speed-only Keras stand-in (see ``_standin``), or skip it saying why; its file."""
    row.speed_only = True
    if missing:
        row.status, row.reason = SKIPPED, f"{NOT_IN_BUNDLE}; no speed-only stand-in: {missing}"
        return {}
    say("keras: not in the bundle; building a speed-only stand-in (same architecture, random weights)")
    try:
        standin = build_keras_standin(folder, manifest, work / "keras", threads)
    except (FileNotFoundError, ValueError) as exc:
        row.status, row.reason = SKIPPED, f"{NOT_IN_BUNDLE}; no speed-only stand-in: {exc}"
        return {}
    except Exception as exc:  # TensorFlow's own errors: the row fails, the run goes on
        row.fail(exc, "speed-only stand-in")
        return {}
    row.note, row.size_mb = standin.note, round(standin.path.stat().st_size / 1e6, 2)
    return {row.format: standin.path}


def _load_runners(rows: list[Row], files: dict[str, Path], threads: int, say: Progress) -> dict:
    runners = {}
    for row in _ok(rows):
        say(f"{row.format}: loading {files[row.format].name}")
        try:
            runners[row.format] = RUNTIMES[row.runtime].load(files[row.format], threads)
        except Exception as exc:  # any runtime's own error types: the row fails, the run goes on
            row.fail(exc, "load")
    return runners


def _ok(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.ok]


def _accuracy(rows: list[Row], runners: dict, data: BenchData, threshold: float, say: Progress) -> str | None:
    """Each row's AUC on the data and parity against the reference; returns the reference's name.

    The reference is the first of :data:`gates.REFERENCES` that ran: Keras,
    else the most exact format present. None when none of them ran (then
    only AUC is reported). A speed-only row is not predicted on at all.
    """
    probs = {}
    for row in _ok(rows):
        if row.speed_only:
            continue
        try:
            probs[row.format] = predict_all(runners[row.format], data.images)
        except Exception as exc:
            row.fail(exc, "predict")
    reference = gates.choose_reference(probs)
    for row in rows:
        if row.format in probs:
            row.auc = roc_auc(data.labels, probs[row.format])
        if row.format in probs and reference is not None and row.format != reference:
            record = measure_parity(probs[reference], probs[row.format], data.labels, threshold, reference)
            row.parity = gates.judged(row.format, record)
    aucs = ", ".join(f"{r.format} {'-' if r.auc is None else format(r.auc, '.4f')}" for r in rows if r.format in probs)
    say(f"AUC on {len(data.images)} images: {aucs}; parity against {reference or 'nothing (no reference ran)'}")
    return reference


def _speed(rows: list[Row], runners: dict, images: np.ndarray, config: BenchConfig, say: Progress) -> None:
    """img/s per batch size and batch-1 latency, every live format interleaved with the others."""
    for b in config.batch_sizes:
        batch = images[np.arange(b) % len(images)]
        live = {r.format: (lambda fn=runners[r.format]: fn(batch)) for r in _warm(_ok(rows), runners, batch)}
        if not live:
            return
        rounds = _rounds(config, b)
        say(f"batch {b}: {rounds} interleaved rounds of {', '.join(live)}")
        timings = interleave(live, rounds=rounds, warmup=1)
        for row in _ok(rows):
            row.img_per_s += (_per_second(timings[row.format], b, batch=b),)
            if b == 1:
                row.latency_ms = _latency(timings[row.format])


def _per_second(t: Timing, images: int, batch: int | None = None) -> Speed:
    lo, hi = t.spread
    return Speed(round(images / t.median, 2), round(images / hi, 2), round(images / lo, 2), batch)


def _latency(t: Timing) -> Latency:
    ms = np.array(t.seconds) * 1000
    return Latency(round(float(np.median(ms)), 3), round(float(np.percentile(ms, 95)), 3),
                   round(float(ms.min()), 3), round(float(ms.max()), 3))


def _rounds(config: BenchConfig, batch: int) -> int:
    """Batch 1 is cheap and its p95 needs samples: three times the rounds."""
    return config.rounds * 3 if batch == 1 else config.rounds


def _warm(rows: list[Row], runners: dict, batch: np.ndarray) -> list[Row]:
    """Rows whose runner survives one call at this batch size (the others fail)."""
    for row in rows:
        try:
            out = runners[row.format](batch)
            if out.shape != (len(batch),):
                raise ValueError(f"{out.shape} outputs for a batch of {len(batch)}")
        except Exception as exc:
            row.fail(exc, f"batch {len(batch)}")
    return _ok(rows)


# --- child processes -----------------------------------------------------------------------------------------


def _processes(rows: list[Row], files: dict[str, Path], data: BenchData, config: BenchConfig,
               say: Progress) -> EngineCli | None:
    """Peak RSS and cold start of a process per format; ``asinfer predict`` for the engine's int8 cold start."""
    from ._child import measure

    h, w = data.images.shape[1:3]
    for row in _ok(rows):
        say(f"{row.format}: cold start and peak RSS in a new process")
        cmd = [sys.executable, "-m", "asinfer.benchmarks._child", row.runtime, str(files[row.format]),
               "--size", str(h), str(w), "--threads", str(config.threads),
               "--batches", ",".join(map(str, config.batch_sizes))]
        _apply(row, measure(cmd, until_ready=True), "new process -> load -> first batch-1 prediction")
    int8 = next((r for r in _ok(rows) if r.format == E2E_ARTIFACT), None)
    if int8 is None or not data.files:
        return None
    cmd = _predict_command(config.model, data.files[0])
    say(f"{E2E_ARTIFACT}: cold start of `{shlex.join(cmd)}`")
    stats = measure(cmd, until_ready=False)
    if stats.cold_start_s is not None:
        int8.cold_start_s, int8.cold_start_how = stats.cold_start_s, f"`{_display(cmd)}`, new process to exit"
    return EngineCli(_display(cmd), stats.cold_start_s, stats.peak_rss_mb, stats.error)


def _apply(row: Row, stats: ProcessStats, how: str) -> None:
    row.peak_rss_mb, row.cold_start_s, row.cold_start_how = stats.peak_rss_mb, stats.cold_start_s, how
    if stats.error:
        row.note = "; ".join(filter(None, [row.note, f"process measurement: {stats.error}"]))


def _predict_command(model: Path, file: Path) -> list[str]:
    """The real CLI: the ``asinfer`` script when on PATH, else ``python -m asinfer.engine``."""
    import shutil

    exe = shutil.which("asinfer")
    head = [exe] if exe else [sys.executable, "-m", "asinfer.engine"]
    return [*head, "predict", str(file), "--model", str(model), "--artifact", E2E_ARTIFACT, "--provider", "cpu",
            "--format", "json"]


def _display(cmd: list[str]) -> str:
    return shlex.join(["asinfer" if Path(cmd[0]).name == "asinfer" else cmd[0], *cmd[1:]])


# --- pipeline ------------------------------------------------------------------------------------------------


def _pipeline(config: BenchConfig, manifest, files: Sequence[Path], say: Progress) -> tuple[list[Stage], float | None]:
    """Preprocessing alone and the engine end to end on the same files, interleaved; and their time ratio."""
    from asinfer import engine

    stages = [Stage(name, what) for name, what in PIPELINE.items()]
    pre_stage, e2e = stages
    if not files:
        for s in stages:
            s.status, s.reason = SKIPPED, "no image files to read"
        return stages, None
    artifact = E2E_ARTIFACT if manifest.artifact(E2E_ARTIFACT) else None  # else the engine's own CPU choice
    try:
        clf = engine.load(config.model, provider="cpu", artifact=artifact, threads=config.threads)
    except Exception as exc:
        e2e.status, e2e.reason, clf = FAILED, f"load: {one_line(str(exc))}", None
    pre = clf.preprocessor if clf is not None else engine.Preprocessor(
        manifest.preprocessing, (manifest.input.height, manifest.input.width), config.threads)
    contenders = {"preprocess": lambda: list(engine.load_slices(files, pre))}  # the engine's one read path
    if clf is not None:
        e2e.artifact = clf.artifact.format
        contenders["end-to-end"] = lambda: clf.predict(files, batch_size=E2E_BATCH)
    say(f"pipeline: {len(files)} files, {config.rounds} interleaved rounds")
    timings = interleave(contenders, rounds=config.rounds, warmup=1)
    n = sum(s.ok for s in contenders["preprocess"]())
    for stage in stages:
        if stage.name in timings:
            stage.images, stage.img_per_s = n, _per_second(timings[stage.name], n)
    share = timings["preprocess"].median / timings["end-to-end"].median if "end-to-end" in timings else None
    return stages, None if share is None else round(share, 4)


# --- the report ----------------------------------------------------------------------------------------------


def _assemble(config: BenchConfig, manifest, rows: list[Row], stages: list[Stage], share: float | None,
              cli: EngineCli | None, data: BenchData, reference: str | None) -> BenchReport:
    from asinfer.trainer.bundle import tool_versions

    batch = gates.gate_batch(config.batch_sizes)
    found = gates.accuracy_gates(rows, reference) + _speed_gates(config.rules, rows, stages, batch)
    return BenchReport(
        schema=SCHEMA,
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        command=config.command(),
        argv=tuple(sys.argv),
        machine=Machine.here(),
        versions=tool_versions(VERSIONS),
        model=ModelInfo(str(config.model), manifest.name, manifest.version, manifest.threshold,
                        (manifest.input.height, manifest.input.width)),
        data=DataInfo(str(config.data) if config.data else "phantoms", data.description, int(len(data.images)),
                      int(np.sum(data.labels)), len(data.files)),
        settings=Settings(config.batch_sizes, config.rounds, _rounds(config, 1), config.threads, batch, config.quick,
                          E2E_BATCH),
        reference=reference,
        rows=tuple(rows),
        pipeline=tuple(stages),
        preprocess_share=share,
        engine_cli=cli,
        gates=tuple(found),
        passed=not gates.failed(found),
    )


def _speed_gates(rules, rows: list[Row], stages: list[Stage], batch: int) -> list:
    throughput = {r.format: (r.speed(batch).median if r.speed(batch) else None) for r in rows}
    throughput.update({s.name: s.img_per_s.median if s.img_per_s else None for s in stages})
    why = {**{r.format: f"{r.status}: {r.reason}" for r in rows if not r.ok},
           **{s.name: f"{s.status}: {s.reason}" for s in stages if s.status != OK}}
    return [gates.speed_gate(rule, throughput, why) for rule in rules]


def render_text(report: BenchReport) -> str:
    """The table for people."""
    return _render.text(report)


def write_markdown(report: BenchReport, path: Path) -> Path | None:
    """The markdown report, with the img/s bar chart beside it (``<name>.png``); returns the chart path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.with_suffix(".png")
    note = _render.chart(report, png)
    path.write_text(_render.markdown(report, None if note else png.name, note or ""), encoding="utf-8")
    return None if note else png


def exit_code(report: BenchReport) -> int:
    """0 when every gate passed, 1 when one failed."""
    return report.exit_code
