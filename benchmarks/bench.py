"""``asinfer bench``: every format of a model side by side, plus preprocessing and the end-to-end engine.

One row per format of :data:`asinfer.engine.FORMATS` (in its order): status, size,
AUC, label agreement and max |Δp| against Keras (or, in a bundle without
Keras, the most exact format present), batch-1 latency, img/s per
batch size, peak RSS and cold start of a process that runs only that format.
Two pipeline rows: preprocessing alone (read DICOM -> CLAHE -> resize) and
end to end (``Classifier.predict`` on the files with the int8 artifact).

Contenders are timed interleaved (A B C A B C ...) after a warm-up; ratios
between rows of one run are gated, absolute times only printed. Accuracy
gates (each format's parity tolerance against Keras) are always on.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from asinfer.engine import FORMATS

from . import _gates, _report
from ._child import ProcessStats
from ._gates import Gate, Rule
from ._runners import RUNTIMES, predict_all
from ._timing import Timing, interleave

SCHEMA = "asinfer-bench/1"
DATA_SEED = 9001  # phantom test set: a seed no training recipe uses
PHANTOMS = {False: {"patients": 16, "slices": 12, "size": None}, True: {"patients": 8, "slices": 6, "size": 128}}
DEFAULTS = {False: {"rounds": 7, "batch_sizes": (1, 8, 32)}, True: {"rounds": 3, "batch_sizes": (1, 8)}}
PIPELINE = {"preprocess": "read DICOM + CLAHE + resize", "end-to-end": "Classifier.predict: read -> CLAHE -> inference"}
E2E_ARTIFACT, E2E_BATCH = "onnx-int8", 8
# Parity reference, most exact first: Keras when the model has it (a run folder), else the closest stand-in
# (the shipped bundle has no Keras model; its onnx-fp16 matched Keras to 1e-3 at conversion).
REFERENCES = ("keras", "onnx-fp32", "tflite-fp32", "onnx-fp16", "tflite-fp16")
NOT_IN_BUNDLE = "not in bundle; reproduce with python -m asinfer.trainer.demo (or asinfer convert RUN_DIR)"

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
        from asinfer import engine

        defaults = DEFAULTS[quick]
        sizes = _batch_sizes(batch_sizes) if batch_sizes else defaults["batch_sizes"]
        if rounds is not None and rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        names = [*FORMATS, *PIPELINE]
        return cls(model=Path(model) if model else engine.default_model(), data=Path(data) if data else None,
                   formats=_formats(formats), batch_sizes=sizes, rounds=rounds or defaults["rounds"],
                   rules=tuple(_gates.parse_rule(r, names) for r in rules), quick=quick)

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
    from asinfer.engine._formats import get_format

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


# --- rows ----------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One format's results; ``status`` is ok, skipped or failed (then ``reason`` says why)."""

    format: str
    runtime: str
    precision: str
    status: str = "ok"
    reason: str = ""
    file: str | None = None
    size_mb: float | None = None
    parity: dict = field(default_factory=dict)  # trainer._parity.measure() against Keras; keras: its AUC
    latency_ms: dict | None = None  # batch 1: p50, p95, min, max
    img_per_s: dict = field(default_factory=dict)  # "batch" -> {median, min, max}
    peak_rss_mb: float | None = None
    cold_start_s: float | None = None
    cold_start_how: str = ""
    tolerance: object = None  # engine._formats.Tolerance

    def fail(self, exc: BaseException | str, stage: str) -> None:
        """Mark failed with a one-line reason."""
        message = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.status, self.reason = "failed", f"{stage}: {' '.join(str(message).split())[:240]}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tolerance"] = asdict(self.tolerance) if self.tolerance is not None else {}
        return data


@dataclass
class Stage:
    """A pipeline row: preprocessing alone, or the engine end to end."""

    name: str
    what: str
    status: str = "ok"
    reason: str = ""
    artifact: str | None = None
    images: int = 0
    img_per_s: dict | None = None  # {median, min, max}
    timing: Timing | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "timing"}


@dataclass
class _Data:
    images: np.ndarray  # preprocessed uint8 [N, H, W, 1]
    labels: np.ndarray
    files: list[Path]  # image files for the pipeline rows
    description: str
    tmp: tempfile.TemporaryDirectory | None = None  # a generated phantom set, removed after the run


# --- the run -------------------------------------------------------------------------------------------------


def run(config: BenchConfig, progress: Progress | None = None) -> dict:
    """Benchmark every requested format of ``config.model``; the report as a JSON-ready dict.

    Raises:
        engine.ModelError: the model cannot be found or read.
        FileNotFoundError, ValueError: unusable ``config.data``.
    """
    from asinfer.engine import locate

    say = progress or (lambda line: None)
    manifest, folder = locate(config.model)
    data = _load_data(config, manifest, say)
    try:
        rows = _rows(config, manifest, folder)
        runners = _load_runners(rows, folder, config, say)
        reference = _accuracy(rows, runners, data, manifest.threshold, say)
        _speed(rows, runners, data.images, config, say)
        del runners
        cli = _processes(rows, folder, data, config, say) if config.processes else {}
        stages = _pipeline(config, data.files, say)
    finally:
        if data.tmp is not None:
            data.tmp.cleanup()
    return _assemble(config, manifest, rows, stages, cli, data, reference)


def _rows(config: BenchConfig, manifest, folder: Path | None) -> list[Row]:
    """A row per requested format; skipped or failed ones say why before anything runs."""
    from asinfer import engine

    checks = engine.verify(config.model)
    rows = []
    for name in config.formats:
        fmt, art = FORMATS[name], manifest.artifact(name)
        row = Row(name, fmt.runtime, fmt.precision, tolerance=fmt.tolerance)
        if art is None:
            row.status, row.reason = "skipped", NOT_IN_BUNDLE
        elif RUNTIMES[fmt.runtime].missing():
            row.status, row.reason = "skipped", RUNTIMES[fmt.runtime].missing()
        elif not checks.get(name, "").startswith("ok"):
            row.fail(f"{checks.get(name)} ({art.file}); refusing to benchmark a file the manifest does not describe",
                     "verify")
        else:
            row.file, row.size_mb = art.file, round(art.bytes / 1e6, 2)
        rows.append(row)
    return rows


def _path(folder: Path | None, config: BenchConfig, row: Row) -> Path:
    return folder / row.file if folder is not None else config.model


def _load_runners(rows: list[Row], folder, config: BenchConfig, say: Progress) -> dict:
    runners = {}
    for row in _ok(rows):
        say(f"{row.format}: loading {row.file}")
        try:
            runners[row.format] = RUNTIMES[row.runtime].load(_path(folder, config, row), config.threads)
        except Exception as exc:  # any runtime's own error types: the row fails, the run goes on
            row.fail(exc, "load")
    return runners


def _ok(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.status == "ok"]


def _accuracy(rows: list[Row], runners: dict, data: _Data, threshold: float, say: Progress) -> str | None:
    """Each row's probabilities on the data and parity against the reference; returns the reference's name.

    The reference is the first of :data:`REFERENCES` that ran: Keras, else
    the most exact format present. None when none of them ran (then only
    AUC is reported).
    """
    from asinfer.trainer._parity import _auc, measure

    probs = {}
    for row in _ok(rows):
        try:
            probs[row.format] = predict_all(runners[row.format], data.images)
        except Exception as exc:
            row.fail(exc, "predict")
    reference = next((name for name in REFERENCES if name in probs), None)
    for row in _ok(rows):
        p = probs[row.format]
        row.parity = (measure(probs[reference], p, data.labels, threshold) if reference is not None
                      else {"n": 0, "auc": _auc(data.labels, p)})
    aucs = ", ".join(f"{r.format} {_report._num(r.parity['auc'], '.4f')}" for r in _ok(rows))
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
            t = timings[row.format]
            lo, hi = t.spread
            row.img_per_s[str(b)] = {"median": round(b / t.median, 2), "min": round(b / hi, 2), "max": round(b / lo, 2)}
            if b == 1:
                ms = np.array(t.seconds) * 1000
                row.latency_ms = {"p50": round(float(np.median(ms)), 3), "p95": round(float(np.percentile(ms, 95)), 3),
                                  "min": round(float(ms.min()), 3), "max": round(float(ms.max()), 3)}


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


def _processes(rows: list[Row], folder, data: _Data, config: BenchConfig, say: Progress) -> dict:
    """Peak RSS and cold start of a process per format; ``asinfer predict`` for the engine's int8 cold start."""
    from ._child import measure

    h, w = data.images.shape[1:3]
    for row in _ok(rows):
        say(f"{row.format}: cold start and peak RSS in a new process")
        cmd = [sys.executable, "-m", "asinfer.benchmarks._child", row.runtime, str(_path(folder, config, row)),
               "--size", str(h), str(w), "--threads", str(config.threads),
               "--batches", ",".join(map(str, config.batch_sizes))]
        _apply(row, measure(cmd, until_ready=True), "new process -> load -> first batch-1 prediction")
    int8 = next((r for r in _ok(rows) if r.format == E2E_ARTIFACT), None)
    if int8 is None or not data.files:
        return {}
    cmd = _predict_command(config.model, data.files[0])
    say(f"{E2E_ARTIFACT}: cold start of `{shlex.join(cmd)}`")
    stats = measure(cmd, until_ready=False)
    if stats.cold_start_s is not None:
        int8.cold_start_s, int8.cold_start_how = stats.cold_start_s, f"`{_display(cmd)}`, new process to exit"
    return {"command": _display(cmd), "cold_start_s": stats.cold_start_s, "peak_rss_mb": stats.peak_rss_mb,
            "error": stats.error}


def _apply(row: Row, stats: ProcessStats, how: str) -> None:
    row.peak_rss_mb, row.cold_start_s, row.cold_start_how = stats.peak_rss_mb, stats.cold_start_s, how
    if stats.error:
        row.reason = f"process measurement: {stats.error}"


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


def _pipeline(config: BenchConfig, files: list[Path], say: Progress) -> list[Stage]:
    """Preprocessing alone and the engine end to end on the same files, interleaved."""
    from asinfer import engine

    stages = [Stage(name, what) for name, what in PIPELINE.items()]
    e2e = stages[1]
    if not files:
        for s in stages:
            s.status, s.reason = "skipped", "no image files to read"
        return stages
    try:
        clf = engine.load(config.model, provider="cpu", artifact=_e2e_artifact(config.model), threads=config.threads)
    except Exception as exc:
        e2e.status, e2e.reason = "failed", f"load: {' '.join(str(exc).split())[:240]}"
        clf = None
    contenders = {"preprocess": _preprocess_fn(clf, config, files)}
    if clf is not None:
        e2e.artifact = clf.artifact.format
        contenders["end-to-end"] = lambda: clf.predict(files, batch_size=E2E_BATCH)
    say(f"pipeline: {len(files)} files, {config.rounds} interleaved rounds")
    timings = interleave(contenders, rounds=config.rounds, warmup=1)
    n = _count_slices(contenders["preprocess"]())
    for stage in stages:
        if stage.name in timings:
            t = timings[stage.name]
            lo, hi = t.spread
            stage.images, stage.timing = n, t
            stage.img_per_s = {"median": round(n / t.median, 2), "min": round(n / hi, 2), "max": round(n / lo, 2)}
    return stages


def _e2e_artifact(model: Path) -> str | None:
    """int8 when the bundle has it, else the engine's own CPU choice."""
    from asinfer.engine import locate

    manifest, _ = locate(model)
    return E2E_ARTIFACT if manifest.artifact(E2E_ARTIFACT) else None


def _preprocess_fn(clf, config: BenchConfig, files: list[Path]) -> Callable[[], list]:
    """Read + preprocess every file on the engine's own thread pool, as ``Classifier.predict`` does."""
    from asinfer import engine

    if clf is not None:
        pre = clf.preprocessor
    else:
        from asinfer.engine import locate

        m, _ = locate(config.model)
        pre = engine.Preprocessor(m.preprocessing, (m.input.height, m.input.width), config.threads)
    return lambda: list(pre.map(lambda f: [pre.one(fr) for fr in engine.read_frames(f)], files))


def _count_slices(results: list[list]) -> int:
    return sum(len(r) for r in results)


# --- data ----------------------------------------------------------------------------------------------------


def _load_data(config: BenchConfig, manifest, say: Progress) -> _Data:
    """Preprocessed images and labels for accuracy, and image files for the pipeline rows.

    ``config.data`` may be a dataset (read and preprocessed by the engine, its
    files used by the pipeline rows) or an ``.npz`` of preprocessed images
    (e.g. a run's holdout.npz; the pipeline rows then read a small phantom set).
    """
    from asinfer.trainer.data import load_images, read_index

    size = (manifest.input.height, manifest.input.width)
    if config.data is not None and config.data.suffix == ".npz":
        images, labels = _npz(config.data, size)
        files, desc, tmp = _phantoms(True, say)
        return _Data(images, labels, files, f"{config.data}: {len(images)} preprocessed images, "
                     f"{int(labels.sum())} positive; pipeline rows: {desc}", tmp)
    files, desc, tmp = _phantoms(config.quick, say) if config.data is None else ([], str(config.data), None)
    records = read_index(Path(tmp.name) if tmp is not None else config.data)
    images, labels, failures = load_images(records, size[0], manifest.preprocessing)
    if not len(images):
        raise ValueError(f"data {config.data} gave no readable images ({len(failures)} failed, e.g. "
                         f"{failures[:1]}); pass a dataset folder, CSV, or .npz")
    desc += f": {len(images)} images, {int(labels.sum())} positive" + (f", {len(failures)} unreadable" if failures else "")
    return _Data(images, labels, [r.path for r in records], desc, tmp)


def _phantoms(quick: bool, say: Progress) -> tuple[list[Path], str, tempfile.TemporaryDirectory]:
    """A deterministic phantom DICOM test set in a temporary folder: (files, description, folder)."""
    from asinfer.trainer.phantoms import write_dataset

    shape = PHANTOMS[quick]
    tmp = tempfile.TemporaryDirectory(prefix="asinfer-bench-")
    say(f"data: writing {shape['patients']}x{shape['slices']} phantom DICOM slices (seed {DATA_SEED})")
    write_dataset(Path(tmp.name), fmt="dicom", seed=DATA_SEED, **shape)
    desc = (f"synthetic phantom DICOM test set (seed {DATA_SEED}, {shape['patients']} patients x {shape['slices']} "
            f"slices, matrix {shape['size'] or '256-512'})")
    return sorted(Path(tmp.name).rglob("*.dcm")), desc, tmp


def _npz(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed ``images`` uint8 [N,H,W,1] and ``labels`` from an .npz (e.g. a run's holdout.npz)."""
    with np.load(path) as data:
        if "images" not in data or "labels" not in data:
            raise ValueError(f"{path} must hold 'images' (uint8 [N,H,W,1]) and 'labels', has {sorted(data.files)}")
        images, labels = np.asarray(data["images"]), np.asarray(data["labels"])
    if (images.dtype != np.uint8 or images.shape[1:] != (*size, 1) or len(images) != len(labels)
            or not len(images)):
        raise ValueError(f"{path}: images must be a non-empty uint8 [N,{size[0]},{size[1]},1] batch (the model's "
                         f"input) with one label each, got {images.dtype} {images.shape} and {labels.shape} labels")
    return images, labels


# --- the report ----------------------------------------------------------------------------------------------


def _assemble(config: BenchConfig, manifest, rows: list[Row], stages: list[Stage], cli: dict, data: _Data,
              reference: str | None) -> dict:
    batch = _gates.gate_batch(config.batch_sizes)
    gates = _gates.accuracy_gates(rows, reference) + _speed_gates(config.rules, rows, stages, batch)
    share = _share(stages)
    return {
        "schema": SCHEMA,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": config.command(),
        "argv": sys.argv,
        "machine": _report.machine(),
        "versions": _report.versions(),
        "model": {"path": str(config.model), "name": manifest.name, "version": manifest.version,
                  "threshold": manifest.threshold, "input": [manifest.input.height, manifest.input.width]},
        "data": {"source": str(config.data) if config.data else "phantoms", "description": data.description,
                 "images": int(len(data.images)), "positive": int(np.sum(data.labels)), "files": len(data.files)},
        "settings": {"batch_sizes": list(config.batch_sizes), "rounds": config.rounds,
                     "rounds_batch1": _rounds(config, 1), "threads": config.threads, "gate_batch": batch,
                     "quick": config.quick, "e2e_batch": E2E_BATCH},
        "reference": reference,
        "rows": [r.to_dict() for r in rows],
        "pipeline": [s.to_dict() for s in stages],
        "preprocess_share": share,
        "engine_cli": cli,
        "gates": [g.to_dict() for g in gates],
        "passed": not _gates.failed(gates),
    }


def _speed_gates(rules, rows: list[Row], stages: list[Stage], batch: int) -> list[Gate]:
    throughput = {r.format: (r.img_per_s.get(str(batch)) or {}).get("median") for r in rows}
    throughput.update({s.name: (s.img_per_s or {}).get("median") for s in stages})
    why = {**{r.format: f"{r.status}: {r.reason}" for r in rows if r.status != "ok"},
           **{s.name: f"{s.status}: {s.reason}" for s in stages if s.status != "ok"}}
    return [_gates.speed_gate(rule, throughput, why) for rule in rules]


def _share(stages: list[Stage]) -> float | None:
    """Preprocessing alone as a share of the end-to-end time (medians)."""
    pre, e2e = (s.timing for s in stages)
    return None if pre is None or e2e is None else round(pre.median / e2e.median, 4)


def render_text(report: dict) -> str:
    """The table for people."""
    return _report.text(report)


def write_json(report: dict, path: Path) -> None:
    import json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def write_markdown(report: dict, path: Path) -> Path | None:
    """The markdown report, with the img/s bar chart beside it (``<name>.png``); returns the chart path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.with_suffix(".png")
    note = _report.chart(report, png)
    if note:
        report = {**report, "chart_note": note}
    path.write_text(_report.markdown(report, None if note else png.name), encoding="utf-8")
    return None if note else png


def exit_code(report: dict) -> int:
    """0 when every gate passed, 1 when one failed."""
    return 0 if report["passed"] else 1
