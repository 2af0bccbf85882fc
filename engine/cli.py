"""The ``asinfer`` command line. Bodies stay thin: parse, call the library, render.

The engine owns ``predict``, ``info`` and ``formats``. Other packages own
their commands (``asinfer.trainer.cli``, ``asinfer.benchmarks.cli``); the
table :data:`COMMANDS` names them, and they are imported only when run, so
``asinfer --help`` and ``asinfer predict`` never load the trainer. A command
whose optional dependency is missing says which extra installs it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import signal
import sys
import traceback
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._commands import COMMANDS as COMMANDS
from ._commands import EXTRAS as EXTRAS
from ._commands import LazyCommand as LazyCommand
from ._commands import _Group
from ._output import WRITERS, _Output, _OutputError, _output_problem, _printable, _Tally, _Writer
from ._version import __version__

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_PARITY = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)
EXIT_BROKEN_PIPE = 141  # predict's reader went away (`| head`): 128 + SIGPIPE, what `yes | head` reports


HELP = """Screen sacroiliac-joint / spine MRI slices for axial spondyloarthritis (AS).

Research software, not a diagnostic device. The shipped models were built
without patient data.

\b
Examples:
  asinfer predict series/ slice.png                  every slice, table on stdout
  asinfer predict scans/ -f csv -o results.csv       CSV for machines
  asinfer predict one.dcm --provider cuda -f json
  asinfer predict series/ --explain overlays/        Grad-CAM of the driving slices
  asinfer report study/ --out results/               DICOM SR + Secondary Capture per series
  asinfer info                                       model, hashes, providers
  asinfer synth demo --patients 4 --format dicom     synthetic phantom dataset
  asinfer train phantoms/ --out runs/x --epochs 5    needs the train extra
  asinfer convert runs/x --out models/my-bundle      ONNX + TFLite, parity-checked
  asinfer bench runs/x --fail-under "onnx-int8/keras>=3.0"

\b
Exit codes:
  0    success (every input predicted)
  1    some inputs failed (each has a row with its reason); report: some
       series not reported (each has a row with its reason); bench: a gate failed
  2    usage, model or output error, or a crash of the tool (one line;
       ASINFER_DEBUG=1 shows the traceback)
  3    convert: a converted model failed its parity check
  130  interrupted (Ctrl-C); predict keeps the rows done
  141  predict: stdout closed early (e.g. piped into head); stops quietly
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode=None, cls=_Group,
                  context_settings={"help_option_names": ["-h", "--help"]})


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


class By(str, Enum):
    slice = "slice"
    series = "series"
    both = "both"


class ProviderChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"asinfer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """asinfer: edge inference for AS screening on MRI (research use only)."""


def _say(text: str) -> None:
    """One message on stderr; a closed or full stderr cannot turn a finished run into a crash."""
    with contextlib.suppress(OSError):
        typer.echo(text, err=True)


def _fail(message: str) -> typer.Exit:
    _say(f"error: {_printable(message)}")
    return typer.Exit(EXIT_USAGE)


# --- predict ---------------------------------------------------------------------------------------------------

ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", help="Bundle folder, manifest.json or .onnx file [default: shipped model, or $ASINFER_MODEL].")]

#: Upper bound of ``--threads``. ONNX Runtime's intra-op pool and the preprocessing pool each start this
#: many threads; past the core count they only add memory and contention (1000 hung session creation,
#: 100000 crashed it). A fixed bound rather than one from os.cpu_count() (which reports the host's cores
#: inside a container) keeps help, scripts and errors the same on every machine; 256 covers the hardware
#: threads of today's largest two-socket servers.
MAX_THREADS = 256
MAX_PIXELS = 1 << 28  # the engine's defaults (asinfer.engine.MAX_PIXELS, MAX_BYTES), kept here so --help imports no reader
MAX_MEMORY_MB = 256


@app.command()
def predict(
    paths: Annotated[list[str], typer.Argument(help="Files or folders (walked recursively; DICOM found by content).", show_default=False)],
    model: ModelOpt = None,
    provider: Annotated[ProviderChoice, typer.Option(help="Where to run: auto takes CUDA when it works, else CPU.")] = ProviderChoice.auto,
    artifact: Annotated[Optional[str], typer.Option(help="Force an artifact format, e.g. onnx-fp32 [default: int8 on CPU, fp16 on CUDA].")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Slices per inference call.")] = 8,
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Decision threshold [default: the model's].")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, max=MAX_THREADS, help="CPU threads [default: all cores].")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="table for people; json, jsonl (streamed, one object a row, then a summary) or csv (streamed) for machines.")] = OutputFormat.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write results to this file (complete, or FILE.partial if interrupted) instead of stdout.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List on stderr the entries folder walks skipped (hidden, not images).")] = False,
    max_pixels: Annotated[int, typer.Option(min=1, max=1 << 34, help="Refuse input files holding more pixels than this (all frames): the decompression-bomb guard.")] = MAX_PIXELS,
    max_memory: Annotated[int, typer.Option(min=1, max=1 << 20, help="MB of decoded image one input may hold at once (a DICOM frame, or a whole PNG/JPEG/TIFF); peak memory is about 3.5x this plus the model.")] = MAX_MEMORY_MB,
    sha256: Annotated[Optional[str], typer.Option(help="Pin the model file to this sha256 (verifies a lone .onnx, which carries no recorded hash).")] = None,
    by: Annotated[Optional[By], typer.Option(help="Rows to write: slice, series or both [default: both; csv: slice]. DICOM groups by SeriesInstanceUID, other images by folder.")] = None,
    strict: Annotated[bool, typer.Option(help="A series with a failed slice gets no decision (reason incomplete-series) instead of a flagged one.")] = False,
    explain: Annotated[Optional[Path], typer.Option("--explain", help="Write Grad-CAM overlays (PNG) of the slices that drove each series' decision into this folder.")] = None,
) -> None:
    """Predict every slice of every input, then decide each series: slice rows, then series rows."""
    from asinfer import engine

    sources = _sources(paths)
    rows = _rows(by, fmt)
    problem = None if output is None else _output_problem(output)
    if problem:
        raise _fail(problem)
    try:
        clf = engine.load(model, provider=provider.value, artifact=artifact, threshold=threshold, threads=threads,
                          sha256=sha256, max_pixels=max_pixels, max_bytes=max_memory << 20)
    except (engine.ModelError, ValueError, OSError) as exc:
        raise _fail(str(exc))
    if explain is not None:
        _check_explain(clf, explain)
    try:
        out = _Output.open(output)
    except OSError as exc:
        raise _fail(f"cannot write results to {output}: {exc.strerror or exc}")
    tally = _Tally(clf.manifest.labels[1])
    writer = WRITERS[fmt.value](out, clf, rows)
    collector = engine.SeriesCollector()
    try:
        writer.begin()
        _run(clf, sources, batch_size, writer, tally, verbose, collector)
        series = collector.results(clf.series_rule, clf.manifest.labels, strict)
        if tally.interrupted:  # some of their slices were never read: no decision from a part of a series
            series = [replace(s, score=None, label=None, driving=(), reason="interrupted",
                              message="the run was stopped before every slice was read") for s in series]
        tally.add_series(series)
        writer.series(series)
        writer.end(tally)
        where = out.commit(tally.interrupted)
        if explain is not None and not tally.interrupted:
            tally.overlays = _write_overlays(clf, series, explain)
    except _OutputError as exc:
        out.discard()
        raise _output_failed(exc) from None
    except BaseException:
        out.discard()
        raise
    _summary(tally, clf, where, verbose)
    raise typer.Exit(EXIT_INTERRUPTED if tally.interrupted else EXIT_SOME_FAILED if tally.failed else EXIT_OK)


def _sources(paths: list[str]) -> list[Path]:
    """The path arguments; an empty one is a usage error (``Path("")`` would silently mean the current folder)."""
    empty = [str(n) for n, path in enumerate(paths, 1) if not path]
    if empty:
        raise _fail(f"path argument {', '.join(empty)} is empty; give a file or folder ('.' for the current folder)")
    return [Path(path) for path in paths]


def _check_explain(clf, folder: Path) -> None:
    """--explain needs a model with Grad-CAM outputs and a folder it can write; checked before the run."""
    if not clf.can_explain:
        raise _fail(f"--explain: {clf.artifact.file} has no Grad-CAM outputs; add them with "
                    f"python -m asinfer.trainer.convert.explain BUNDLE (or convert the model again)")
    _writable(folder, "--explain")


def _writable(folder: Path, option: str) -> None:
    """Make ``folder`` if missing; a usage error when it cannot be made or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"{option} {folder}: {exc.strerror or exc}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _fail(f"{option} {folder} is not writable")


def _write_overlays(clf, series, folder: Path) -> int:
    """One overlay PNG per slice that drove a series' decision (slice, heat map, probability, the notice).

    Negative series too: their driving slice is the one nearest the threshold, and where the model looked
    there is the evidence for "nothing found" (the report's Secondary Capture shows the same).
    """
    import cv2

    from asinfer import engine

    written = 0
    for s in series:
        if s.label is None:
            continue
        wanted = {(source, frame) for source, frame in s.driving}
        for ex in clf.explain(sorted({source for source, _ in wanted}), frames=wanted):
            name = f"{_safe(s.key[-12:])}_{_safe(Path(ex.prediction.source).stem)}_f{ex.prediction.frame}.png"
            caption = f"p={ex.prediction.probability:.3f} series {s.label} ({s.score:.3f})"
            if cv2.imwrite(str(folder / name), engine.overlay(ex.display, ex.cam, caption)):
                written += 1
    return written


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text) or "x"


def _rows(by, fmt) -> str:
    """Which rows the output carries; CSV holds one kind of row."""
    chosen = by.value if by is not None else ("slice" if fmt is OutputFormat.csv else "both")
    if fmt is OutputFormat.csv and chosen == "both":
        raise _fail("csv holds one kind of row: use --by slice or --by series (or --format jsonl for both)")
    return chosen


def _run(clf, sources: list[Path], batch_size: int, writer: _Writer, tally: _Tally, verbose: bool,
         collector) -> None:
    """Hand each prediction to ``writer`` as it comes; Ctrl-C ends the run and keeps what is done."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    console = Console(stderr=True, markup=False, emoji=False, highlight=False)
    stop = _CtrlC()

    def skipped(path, why: str) -> None:
        tally.skipped[str(why)] += 1
        if verbose:
            console.print(Text(f"skipped {_printable(str(path))} ({_printable(str(why))})"), soft_wrap=True)
        if stop.requested:  # a long walk over files that are no images still stops
            raise KeyboardInterrupt

    hidden = not console.is_terminal or (writer.streams and writer.out.isatty())  # rows are the progress there
    with Progress(SpinnerColumn(), TextColumn("{task.completed} slices"), TimeElapsedColumn(), console=console,
                  transient=True, disable=hidden, redirect_stdout=False, redirect_stderr=False) as progress, stop:
        task = progress.add_task("predict", total=None)
        results = clf.iter_predict(sources, batch_size=batch_size, on_skip=skipped)
        try:
            for result in results:
                writer.add(result)
                tally.add(result)
                collector.add(result)
                progress.advance(task)
                if stop.requested:
                    break
        except KeyboardInterrupt:  # the second Ctrl-C, or the first where no handler could be set
            stop.requested = True
        finally:
            getattr(results, "close", lambda: None)()  # stop the read-ahead of the preprocessing pool
    tally.interrupted = stop.requested


class _CtrlC:
    """The first Ctrl-C asks the run to stop after the row at hand, so every row is written whole and
    counted; the second raises KeyboardInterrupt at once. Where SIGINT is ignored (a background job)
    or cannot be handled here (not the main thread), it is left alone."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _CtrlC:
        with contextlib.suppress(ValueError):  # not the main thread
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGINT, self._previous)


def _output_failed(exc: _OutputError) -> typer.Exit:
    """A write error: one line and exit 2; a reader that went away (``| head``): quiet, like SIGPIPE."""
    if exc.stdout:  # the interpreter's last flush of stdout would fail again, with a traceback of its own
        with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
    if exc.errno == errno.EPIPE:
        return typer.Exit(EXIT_BROKEN_PIPE)
    return _fail(f"cannot write results to {exc.name}: {exc.strerror}")


def _summary(tally: _Tally, clf, where: str | None, verbose: bool) -> None:
    """The summary on stderr: counts, model, where the results went, skips, interruption, the notice."""
    m = clf.manifest
    lines = [f"{tally.predicted} slices predicted ({tally.positive} {m.labels[1]}), {tally.failed} failed; "
             f"model {m.name} {m.version}, {clf.artifact.format} on {clf.provider}"
             + (f"; results in {where}" if where else "")]
    if tally.overlays is not None:
        lines.append(f"{tally.overlays} Grad-CAM overlay(s) of driving slices written")
    if tally.series:
        undecided = f", {tally.series_undecided} without a decision" if tally.series_undecided else ""
        lines.append(f"{tally.series} series ({tally.series_positive} {m.labels[1]}{undecided}); series rule "
                     f"{clf.series_rule.kind} at {clf.series_rule.threshold:g}")
    if tally.skipped:
        total = sum(tally.skipped.values())
        kinds = ", ".join(f"{n} {why}" for why, n in tally.skipped.most_common())
        lines.append(f"{total} {'entry' if total == 1 else 'entries'} skipped ({kinds}); "
                     + ("listed above" if verbose else "--verbose lists them"))
    if tally.interrupted:
        done = tally.predicted + tally.failed
        lines.append(f"interrupted: stopped after {done} {'row' if done == 1 else 'rows'}; the results hold only those")
    lines.append(("note: this model was trained on synthetic phantoms. " if m.synthetic_training_data else "note: ")
                 + m.notice)
    _say("\n".join(_printable(line) for line in lines))


def _metric_lines(metrics: dict) -> list[str]:
    """Scalar metrics on one line; each split (test, validation) on its own line."""
    scalars = lambda d: ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in d.items() if not isinstance(v, (dict, list)))
    top = scalars(metrics)
    return ([top] if top else []) + [f"{k}: {scalars(v)}" for k, v in metrics.items() if isinstance(v, dict)]


# --- report ----------------------------------------------------------------------------------------------------


class ReportFormat(str, Enum):
    table = "table"
    json = "json"


@app.command()
def report(
    paths: Annotated[list[str], typer.Argument(help="DICOM files or folders (walked recursively).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the results: one sub-folder per series (its SeriesInstanceUID) with sr.dcm and sc-NNN.dcm.", show_default=False)],
    model: ModelOpt = None,
    provider: Annotated[ProviderChoice, typer.Option(help="Where to run: auto takes CUDA when it works, else CPU.")] = ProviderChoice.auto,
    artifact: Annotated[Optional[str], typer.Option(help="Force an artifact format, e.g. onnx-fp32 [default: int8 on CPU, fp16 on CUDA].")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Slices per inference call.")] = 8,
    threads: Annotated[Optional[int], typer.Option(min=1, max=MAX_THREADS, help="CPU threads [default: all cores].")] = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="table for people, json for machines (stdout).")] = ReportFormat.table,
    max_pixels: Annotated[int, typer.Option(min=1, max=1 << 34, help="Refuse input files holding more pixels than this (all frames).")] = MAX_PIXELS,
    max_memory: Annotated[int, typer.Option(min=1, max=1 << 20, help="MB of decoded image one input may hold at once.")] = MAX_MEMORY_MB,
    sha256: Annotated[Optional[str], typer.Option(help="Pin the model file to this sha256.")] = None,
    strict: Annotated[bool, typer.Option(help="A series with a failed slice gets no decision, hence no report.")] = False,
) -> None:
    """Decide each DICOM series and write its result as DICOM: an SR (TID 1500) and Secondary Capture evidence.

    Per series: sr.dcm (finding present/absent at the sacroiliac joint, the score and its threshold, the
    model and its sha256, references to every slice) and one sc-NNN.dcm per driving slice with the Grad-CAM
    overlay burned in; both in the source's patient and study, marked NOT FOR DIAGNOSTIC USE. Needs the
    dicom extra. Exit 0 when every series was reported, 1 when some were not (each has a row with its
    reason) or some slices failed.
    """
    import importlib.util

    from asinfer import engine

    if importlib.util.find_spec("highdicom") is None:
        raise _fail("asinfer report needs highdicom; it comes with the 'dicom' extra: pip install 'asinfer[dicom]'")
    sources = _sources(paths)
    try:
        clf = engine.load(model, provider=provider.value, artifact=artifact, threads=threads, sha256=sha256,
                          max_pixels=max_pixels, max_bytes=max_memory << 20)
    except (engine.ModelError, ValueError, OSError) as exc:
        raise _fail(str(exc))
    _writable(out, "--out")
    series = clf.predict_series(sources, batch_size, strict=strict)
    results = [(s, clf.report(s, out / _safe(s.key))) for s in series]
    if fmt is ReportFormat.json:
        typer.echo(json.dumps([{"series": s.to_dict(), "sr": None if r.sr is None else str(r.sr),
                                "sc": [str(p) for p in r.sc], "reason": r.reason, "message": r.message}
                               for s, r in results], indent=2))
    else:
        for s, r in results:
            typer.echo(_report_row(s, r))
    done = sum(r.ok for _, r in results)
    failed = sum(s.n_failed for s in series)
    _say(f"{done} of {len(results)} series reported in {_printable(str(out))}"
         + (f"; {failed} slice(s) failed" if failed else "")
         + f"; model {clf.manifest.name} {clf.manifest.version}, {clf.artifact.format} on {clf.provider}\n"
         + "note: NOT FOR DIAGNOSTIC USE; "
         + ("this model was trained on synthetic phantoms." if clf.manifest.synthetic_training_data else clf.manifest.notice))
    raise typer.Exit(EXIT_OK if done == len(results) and not failed else EXIT_SOME_FAILED)


def _report_row(s, r) -> str:
    """One line per series: its key, decision and score, then the files written or why none were."""
    head = f"{_printable(s.key):<40} {_printable(str(s.label or '-')):<6} " \
           f"{'-' if s.score is None else f'{s.score:.3f}':<6} {s.n_slices:>3} slices"
    if not r.ok:
        return f"{head}  not reported: {r.reason}: {_printable(r.message or '')}"
    return f"{head}  {_printable(str(r.sr))} + {len(r.sc)} SC"


@app.command()
def info(
    model: Annotated[Optional[Path], typer.Argument(help="Bundle folder, manifest.json or .onnx [default: shipped model].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest and checks as JSON.")] = False,
    sha256: Annotated[Optional[str], typer.Option(help="The sha256 a lone .onnx must have (it carries no recorded hash: without this it is 'unverified').")] = None,
) -> None:
    """Show a model's manifest, its artifacts and their sha256 checks, and the available providers."""
    from asinfer import engine
    from asinfer.engine import bundle

    path = model or engine.default_model()
    try:
        manifest, _ = bundle.locate(path)
        checks = bundle.verify(path, sha256=sha256)
        providers = engine.available_providers()
    except (engine.ModelError, ValueError, OSError) as exc:
        raise _fail(str(exc))
    if as_json:
        data = {"path": str(path), "manifest": json.loads(manifest.to_json()),
                "checks": {fmt: c.status for fmt, c in checks.items()}, "providers": providers}
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"model       {manifest.name} {manifest.version}  ({path})")
    typer.echo(f"labels      {manifest.labels[0]} / {manifest.labels[1]}, threshold {manifest.threshold:g}")
    spec = manifest.input
    typer.echo(f"input       {spec.name}: {spec.dtype} [N, {spec.height}, {spec.width}, {spec.channels}] {spec.layout}")
    pre = manifest.preprocessing
    typer.echo(f"preprocess  CLAHE clip {pre.clahe_clip_limit:g}, tiles {pre.clahe_tile_grid[0]}x{pre.clahe_tile_grid[1]}, "
               f"resize {pre.resize_down}/{pre.resize_up}, {'all depths' if pre.stretch_8bit else '>8-bit'}: "
               + ("VOI window else " if pre.use_voi_window else "")
               + f"p{pre.percentile_low:g}-p{pre.percentile_high:g}" + ("" if pre.stretch_8bit else "; 8-bit as stored"))
    typer.echo("artifacts")
    for a in manifest.artifacts:
        check = checks.get(a.format)
        typer.echo(f"  {a.format:<12} {a.file:<22} {a.bytes:>11,} B  sha256 {a.sha256[:16]}…  "
                   f"{check.status if check else '?'}")
    typer.echo(f"providers   {', '.join(providers)}")
    for line in _metric_lines(manifest.metrics):
        typer.echo(f"metrics     {line}")
    typer.echo(f"training    {'SYNTHETIC phantoms' if manifest.synthetic_training_data else manifest.training.get('data', '?')}")
    typer.echo(f"notice      {manifest.notice}")
    bad = [c for c in checks.values() if c.status not in (bundle.OK, bundle.UNHASHED)]
    for c in bad:
        typer.echo(f"error: {c.message}", err=True)
    if bad:
        raise typer.Exit(EXIT_USAGE)


@app.command()
def formats() -> None:
    """List the model formats (the one table the converter, engine and benchmarks read)."""
    from ._formats import FORMATS

    for f in FORMATS.values():
        typer.echo(f"{f.name:<12} {f.runtime:<12} {f.precision:<5} {'engine' if f.engine else '      '} "
                   f"{'shipped' if f.shipped else '       '}  {f.description}")


def _route_warnings() -> None:
    """Library warnings (pydicom, OpenCV bindings, onnxruntime) go to the debug log, quoted values elided.

    pydicom quotes element values in its warnings (``Invalid value for VR UI: 'SMITH^JOHN'``): printed to
    stderr by default, that is a channel for patient data. ``ASINFER_DEBUG=1`` shows them, still elided.
    """
    import logging
    import warnings

    log = logging.getLogger("asinfer.warnings")
    if os.environ.get("ASINFER_DEBUG", "") not in ("", "0"):
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = re.sub(r"('[^']*'|\"[^\"]*\")", "'…'", str(message))
        log.debug("%s: %s", category.__name__, text)

    warnings.showwarning = show


def main() -> None:
    """Console-script entry point.

    Exit 1 means "some inputs failed, each has a row", so a crash of the tool itself (it has no
    rows) is one line on stderr and exit 2; ``ASINFER_DEBUG=1`` shows its traceback as well.
    """
    _route_warnings()
    try:
        app()
    except KeyboardInterrupt:  # typer turns Ctrl-C inside a command into 130; this covers start-up
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        debug = os.environ.get("ASINFER_DEBUG", "") not in ("", "0")
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (set ASINFER_DEBUG=1 for the traceback)"
        _say(f"error: internal error: {type(exc).__name__}: {_printable(str(exc))}{hint}")
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
