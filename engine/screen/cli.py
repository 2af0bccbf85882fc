"""``asinfer screen``: listed by the engine's CLI table and imported only when run (see ``_commands.COMMANDS``)."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_THREADS = 256

app = typer.Typer(add_completion=False, rich_markup_mode=None)

SCREEN_HELP = """Screen an archive: every slice of every series, on Dask, resumable; results as Parquet.

Inputs are folders, list files (.txt/.lst/.list: a path a line; .csv: a 'path' column) or image
files. They are indexed into series by a header-only scan (SeriesInstanceUID, else the folder), then
one task per series (small series packed together) runs on the scheduler; each worker loads the model
once. RESULTS gets slices/ and series/ (Parquet datasets, a part per task, written atomically) and
run.json. Every input is a row exactly once: an unreadable file has its reason; a task that fails its
retries has its series written as failed (task-failed). --resume skips the series RESULTS holds.
Needs the screen extra: pip install 'asinfer[screen]'. Research software: NOT FOR DIAGNOSTIC USE.

\b
Examples:
  asinfer screen archive/ --out results/                         local cluster, every core
  asinfer screen archive.txt --out results/ --resume             continue an interrupted run
  asinfer screen list.csv --out results/ --scheduler synchronous one process (tests, debugging)
  asinfer screen list.txt --out /shared/results --scheduler tcp://scheduler:8786 --threads-per-worker 1
  python -c "import pyarrow.dataset as ds; print(ds.dataset('results/series').to_table())"

\b
Exit codes: 0 every slice decided; 1 some inputs or series failed (each has its row); 2 usage or
model error; 130 interrupted (what was written stays: run again with --resume).
"""


class ProviderChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@app.command(help=SCREEN_HELP)
def screen(
    inputs: Annotated[list[str], typer.Argument(help="Folders, list files (.txt/.lst/.list/.csv) or image files.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder: slices/, series/ (Parquet) and run.json.", show_default=False)],
    scheduler: Annotated[str, typer.Option(help="synchronous (this process), local (a Dask LocalCluster) or a scheduler address (tcp://host:8786).")] = "local",
    workers: Annotated[Optional[int], typer.Option(min=1, max=1024, help="Worker processes of the local cluster [default: cores / --threads-per-worker].")] = None,
    threads_per_worker: Annotated[Optional[int], typer.Option(min=1, max=MAX_THREADS, help="Cores each worker's model uses (ONNX Runtime + preprocessing threads) [default: 1; synchronous: all cores].")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Slices per inference call.")] = 8,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Bundle folder, manifest.json or .onnx file [default: shipped model, or $ASINFER_MODEL].")] = None,
    provider: Annotated[ProviderChoice, typer.Option(help="Where the workers run the model: auto takes CUDA when it works, else CPU.")] = ProviderChoice.auto,
    artifact: Annotated[Optional[str], typer.Option(help="Force an artifact format, e.g. onnx-fp32 [default: int8 on CPU, fp16 on CUDA].")] = None,
    sha256: Annotated[Optional[str], typer.Option(help="Pin the model file to this sha256.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip the series RESULTS already holds (same model required).")] = False,
    strict: Annotated[bool, typer.Option(help="A series with a failed slice gets no decision (incomplete-series).")] = False,
    retries: Annotated[int, typer.Option(min=0, max=20, help="Times a failed task runs again before its series are written as failed.")] = 2,
    task_slices: Annotated[int, typer.Option(min=1, max=1 << 20, help="Pack small series into one task up to this many slices (a series is never split).")] = 64,
    max_pixels: Annotated[Optional[int], typer.Option(min=1, max=1 << 34, help="Refuse input files holding more pixels than this [default: the engine's].")] = None,
    max_memory: Annotated[Optional[int], typer.Option(min=1, max=1 << 20, help="MB of decoded image one input may hold at once [default: the engine's].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    from . import ScreenInterrupted, ScreenSettings
    from . import screen as run_screen

    empty = [str(n) for n, item in enumerate(inputs, 1) if not item]
    if empty:
        _fail(f"input argument {', '.join(empty)} is empty; give a folder, list file or file")
    _need("pyarrow")
    if scheduler != "synchronous":
        _need("distributed")
    settings = ScreenSettings(tuple(inputs), out, scheduler, workers, threads_per_worker, resume, retries,
                              task_slices, model=None if model is None else str(model), provider=provider.value,
                              artifact=artifact, sha256=sha256, max_pixels=max_pixels,
                              max_bytes=None if max_memory is None else max_memory << 20, batch_size=batch_size,
                              strict=strict, command=tuple(["asinfer", *sys.argv[1:]]))
    from asinfer import engine

    with _progress() as progress:
        try:
            summary = run_screen(settings, progress)
        except ScreenInterrupted as stop:
            summary = stop.summary
        except (engine.ModelError, ValueError, FileExistsError, RuntimeError, OSError) as exc:
            _fail(str(exc))
    _report(summary, as_json)
    failed = summary.failed_slices or summary.failed_series or summary.undecided
    raise typer.Exit(EXIT_INTERRUPTED if summary.interrupted else EXIT_SOME_FAILED if failed else EXIT_OK)


def _need(module: str) -> None:
    """The extra is named before anything starts (the command's import hint names it)."""
    import importlib

    importlib.import_module(module)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


class _progress:
    """A rich progress line on stderr (files indexed, then slices screened); hidden when stderr is no terminal."""

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        console = Console(stderr=True, markup=False, emoji=False, highlight=False)
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                             disable=not console.is_terminal, redirect_stdout=False, redirect_stderr=False)
        self._bar.__enter__()
        self._tasks: dict[str, int] = {}
        return self

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase not in self._tasks:
            self._tasks[phase] = self._bar.add_task("indexing files" if phase == "index" else "screening slices",
                                                    total=total)
        self._bar.update(self._tasks[phase], completed=done, total=total)

    def __exit__(self, *exc) -> None:
        self._bar.__exit__(*exc)


def _report(summary, as_json: bool) -> None:
    """The summary: JSON on stdout when asked, and always a few lines on stderr."""
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    m = summary.model
    lines = [f"{summary.screened} series screened ({summary.screened_slices} slices) in "
             f"{summary.seconds.get('screen', 0):.1f} s: {summary.slices_per_s:g} slices/s; "
             f"{summary.workers} worker(s) x {summary.threads_per_worker or 'all'} thread(s), "
             f"start {summary.seconds.get('start', 0):.1f} s, index {summary.seconds.get('index', 0):.1f} s",
             f"results: {summary.series} series ({summary.positive} {summary.positive_label}, "
             f"{summary.undecided} without a decision, {summary.failed_series} failed tasks), "
             f"{summary.slices} slice rows ({summary.failed_slices} failed) in {summary.out}"]
    if summary.resumed:
        lines.append(f"resumed: {summary.resumed} series were already in the results"
                     + (f"; {summary.cleaned} unfinished part(s) removed" if summary.cleaned else ""))
    if summary.retried:
        lines.append(f"retried: {summary.retried} series that a previous run wrote as failed")
    if summary.skipped:
        lines.append(f"{sum(summary.skipped.values())} entries skipped by folder walks ("
                     + ", ".join(f"{n} {why}" for why, n in summary.skipped.items()) + ")")
    if summary.interrupted:
        lines.append("interrupted: the parts written are complete; run the same command with --resume to finish")
    lines.append(f"model {m['name']} {m['version']}, {m['artifact']} on {m['provider']}; note: NOT FOR DIAGNOSTIC "
                 "USE" + ("; this model was trained on synthetic phantoms." if m.get("synthetic_training_data")
                          else f"; {m.get('notice', '')}"))
    for line in lines:
        typer.echo(line, err=True)
