"""The ``asinfer bench`` report: typed records, and its JSON (schema :data:`SCHEMA`).

:func:`asinfer.benchmarks.bench.run` returns a :class:`BenchReport`; the
renderers (text, markdown, chart) and ``--json`` take it. The JSON is
:meth:`BenchReport.to_dict` (``asinfer.engine.bundle.to_json_data``), and
:meth:`BenchReport.from_dict` reads it back strictly: a field of the wrong
kind, an unknown field or another schema version is a
:class:`asinfer.engine.bundle.SchemaError` naming the field.

Schema history (the version goes up whenever a field changes):
    ``asinfer-bench/1``: untyped rows; parity as the trainer's dict.
    ``asinfer-bench/2``: typed rows with :class:`~asinfer.engine.bundle.ParityRecord`
    (the reference named in it, judged by the format's tolerance), ``auc``
    per row, ``img_per_s`` as a list per batch size, ``note`` and
    ``speed_only`` (a Keras stand-in built from ``train_config.json``).

Example:
    >>> report = BenchReport.from_dict(json.loads(Path("bench.json").read_text()))  # doctest: +SKIP
    >>> report.row("onnx-int8").speed(8).median, report.passed  # doctest: +SKIP
    (31.2, True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asinfer.engine.bundle import ParityRecord, SchemaError, Tolerance, build_dataclass, to_json_data

SCHEMA = "asinfer-bench/2"

# Row and stage statuses.
OK, SKIPPED, FAILED = "ok", "skipped", "failed"
# Gate kinds.
ACCURACY, SPEED = "accuracy", "speed"


@dataclass(frozen=True)
class Speed:
    """Images per second over interleaved rounds."""

    median: float
    min: float
    max: float
    batch: int | None = None  # the batch size of a format row's calls; None for a pipeline stage


@dataclass(frozen=True)
class Latency:
    """Milliseconds per batch-1 ``predict`` call over the rounds."""

    p50: float
    p95: float
    min: float
    max: float


@dataclass
class Row:
    """One format's results, filled in as the run goes; ``status`` ok, skipped or failed."""

    format: str  # a key of asinfer.engine.FORMATS
    runtime: str
    precision: str
    status: str = OK
    reason: str = ""  # why skipped or failed
    note: str = ""  # a caveat on an ok row: speed only; a process measurement that failed
    speed_only: bool = False  # Keras stand-in from train_config.json: real cost, random weights, never judged
    file: str | None = None  # the artifact's file in the bundle
    size_mb: float | None = None  # file size, 10^6 bytes
    auc: float | None = None  # ROC AUC against the data set's labels; None with one class or not measured
    parity: ParityRecord | None = None  # against the report's reference, judged by ``tolerance``
    latency_ms: Latency | None = None  # batch 1
    img_per_s: tuple[Speed, ...] = ()  # one per batch size, ascending
    peak_rss_mb: float | None = None  # MiB, a process that runs only this format
    cold_start_s: float | None = None
    cold_start_how: str = ""
    tolerance: Tolerance = field(default_factory=Tolerance)  # FORMATS[format].tolerance

    @property
    def ok(self) -> bool:
        return self.status == OK

    def speed(self, batch: int) -> Speed | None:
        """img/s at ``batch``, or None when not measured."""
        return next((s for s in self.img_per_s if s.batch == batch), None)

    def fail(self, exc: BaseException | str, stage: str) -> None:
        """Mark failed with a one-line reason naming the stage that raised."""
        message = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.status, self.reason = FAILED, f"{stage}: {one_line(str(message))}"


@dataclass
class Stage:
    """A pipeline row: preprocessing alone, or the engine end to end, on the same files."""

    name: str  # preprocess | end-to-end
    what: str
    status: str = OK
    reason: str = ""
    artifact: str | None = None  # the format end to end ran
    images: int = 0  # slices per round
    img_per_s: Speed | None = None


@dataclass(frozen=True)
class Gate:
    """The verdict on one gate; ``passed`` None means it could not be checked and does not fail the run."""

    name: str  # "onnx-int8 parity" or the rule, "onnx-int8/keras>=3"
    kind: str  # accuracy | speed
    passed: bool | None
    value: float | None  # accuracy: label agreement; speed: the ratio
    detail: str


@dataclass(frozen=True)
class Machine:
    """Where the numbers were taken (``asinfer.trainer.bundle.machine``)."""

    cpu: str
    flags: dict[str, bool]  # the SIMD flags that decide int8 speed
    cores: int | None
    arch: str
    os: str
    python: str

    @classmethod
    def here(cls) -> "Machine":
        from asinfer.trainer.bundle import machine

        m = machine()
        return cls(str(m["cpu"]), dict(m["flags"]), m["cores"], str(m["arch"]), str(m["os"]), str(m["python"]))


@dataclass(frozen=True)
class ModelInfo:
    """The model benchmarked."""

    path: str
    name: str
    version: str
    threshold: float
    input: tuple[int, int]  # (height, width)


@dataclass(frozen=True)
class DataInfo:
    """The labelled images accuracy was measured on, and the files the pipeline rows read."""

    source: str  # the --data path, or "phantoms"
    description: str
    images: int
    positive: int
    files: int


@dataclass(frozen=True)
class Settings:
    """How the numbers were taken."""

    batch_sizes: tuple[int, ...]
    rounds: int
    rounds_batch1: int
    threads: int
    gate_batch: int  # the batch size speed ratios are taken at
    quick: bool
    e2e_batch: int


@dataclass(frozen=True)
class EngineCli:
    """The engine's own command (``asinfer predict``), new process to exit."""

    command: str
    cold_start_s: float | None
    peak_rss_mb: float | None
    error: str | None = None


@dataclass(frozen=True)
class BenchReport:
    """Everything one ``asinfer bench`` run measured and decided."""

    schema: str
    date: str  # ISO 8601, UTC
    command: str  # a command line that repeats the run
    argv: tuple[str, ...]
    machine: Machine
    versions: dict[str, str]  # installed versions of the packages that decide the numbers
    model: ModelInfo
    data: DataInfo
    settings: Settings
    reference: str | None  # the format parity is measured against; None when none ran
    rows: tuple[Row, ...]  # asinfer.engine.FORMATS order
    pipeline: tuple[Stage, ...]  # preprocess, end-to-end
    preprocess_share: float | None  # preprocessing alone / end to end, medians
    engine_cli: EngineCli | None  # None when child processes were not measured
    gates: tuple[Gate, ...]
    passed: bool  # no gate failed

    def row(self, fmt: str) -> Row:
        """The row of format ``fmt``.

        Raises:
            KeyError: not benchmarked in this run.
        """
        return _named(self.rows, "format", fmt)

    def stage(self, name: str) -> Stage:
        """The pipeline row ``name`` (preprocess, end-to-end)."""
        return _named(self.pipeline, "name", name)

    def gate(self, name: str) -> Gate:
        """The gate called ``name``, e.g. ``onnx-int8 parity`` or ``onnx-int8/keras>=3``."""
        return _named(self.gates, "name", name)

    @property
    def exit_code(self) -> int:
        """0 when every gate passed, 1 when one failed."""
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (tuples as lists)."""
        return to_json_data(self)

    @classmethod
    def from_dict(cls, data: Any) -> "BenchReport":
        """Read a report back from parsed JSON.

        Raises:
            SchemaError: another schema version, or a field of the wrong kind (named by its path).
        """
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != SCHEMA:
            raise SchemaError(f"schema {schema!r} is not {SCHEMA!r}; rerun asinfer bench with this version")
        return build_dataclass(cls, data)


def write_json(report: BenchReport, path: Path) -> None:
    """``report`` as JSON at ``path``, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")


def read_json(path: Path) -> BenchReport:
    """A report written by :func:`write_json`.

    Raises:
        SchemaError: see :meth:`BenchReport.from_dict`.
        OSError, json.JSONDecodeError: the file cannot be read or is not JSON.
    """
    return BenchReport.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def one_line(text: str, limit: int = 240) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    return " ".join(text.split())[:limit]


def _named(items, attr: str, name: str):
    found = next((item for item in items if getattr(item, attr) == name), None)
    if found is None:
        raise KeyError(f"no {name!r} in this report; it has {', '.join(getattr(i, attr) for i in items)}")
    return found
