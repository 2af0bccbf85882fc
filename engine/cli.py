"""The ``asinfer`` command line. Bodies stay thin: parse, call the library, render.

The engine owns ``predict``, ``info`` and ``formats``. Other packages own
their commands (``asinfer.trainer.cli``, ``asinfer.benchmarks.cli``); the
table :data:`COMMANDS` names them, and they are imported only when run, so
``asinfer --help`` and ``asinfer predict`` never load the trainer. A command
whose optional dependency is missing says which extra installs it.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core
import typer.main

from ._version import __version__

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_PARITY = 0, 1, 2, 3


@dataclass(frozen=True)
class LazyCommand:
    """A command that lives in another package, loaded when it runs."""

    module: str  # holds a typer app named ``app`` with this command
    help: str  # the one-line help shown by ``asinfer --help`` without importing the module


#: Commands of other packages, in the order ``asinfer --help`` lists them.
COMMANDS: dict[str, LazyCommand] = {
    "synth": LazyCommand("asinfer.trainer.cli", "Write a synthetic phantom dataset (class folders + labels.csv). Not patient data."),
    "train": LazyCommand("asinfer.trainer.cli", "Train the VGG16 classifier; writes a run directory (needs the train extra)."),
    "convert": LazyCommand("asinfer.trainer.cli", "Convert a trained model to ONNX and TFLite, parity-checked (needs the train extra)."),
    "bench": LazyCommand("asinfer.benchmarks.cli", "Benchmark every format side by side: parity, latency, img/s, memory, cold start."),
}

#: Importable module -> the extra of ``pyproject.toml`` that installs it.
EXTRAS: dict[str, str] = {
    "tensorflow": "train", "keras": "train", "tf2onnx": "train", "onnx": "train", "ai_edge_litert": "train",
    "sklearn": "train", "matplotlib": "train", "sympy": "train", "pytest_benchmark": "dev",
}


def install_hint(exc: ModuleNotFoundError) -> str:
    """What to install for a missing module, named by the import that failed."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra:
        return f"{top} is not installed; it comes with the {extra!r} extra: pip install 'asinfer[{extra}]'"
    return f"{exc.name or exc} is not installed; reinstall asinfer (pip install asinfer) or install {top or 'it'}"


class _Group(typer.core.TyperGroup):
    """Lists :data:`COMMANDS` from the table and imports one only when it is invoked."""

    def __init__(self, **attrs) -> None:
        super().__init__(**attrs)
        for name, lazy in COMMANDS.items():
            self.commands.setdefault(name, _placeholder(name, lazy.help, None))

    def resolve_command(self, ctx, args):
        if args and args[0] in COMMANDS and getattr(self.commands.get(args[0]), "_asinfer_placeholder", False):
            self.commands[args[0]] = _load(args[0])
        return super().resolve_command(ctx, args)


def _load(name: str):
    """The real command ``name`` from its package, its missing dependencies turned into an install hint."""
    lazy = COMMANDS[name]
    try:
        group = typer.main.get_command(importlib.import_module(lazy.module).app)
    except ModuleNotFoundError as exc:
        return _placeholder(name, lazy.help, install_hint(exc))
    command = group.commands[name] if isinstance(group, typer.core.TyperGroup) else group
    command.callback = _hinting(command.callback)
    return command


def _hinting(callback):
    def run(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except ModuleNotFoundError as exc:
            typer.echo(f"error: {install_hint(exc)}", err=True)
            raise typer.Exit(EXIT_USAGE) from None

    return run


def _placeholder(name: str, help_text: str, failure: str | None):
    """A stand-in: its help line for listings, or (when its package cannot load) the reason."""

    def fail() -> None:
        typer.echo(f"error: asinfer {name} is unavailable: {failure}", err=True)
        raise typer.Exit(EXIT_USAGE)

    command = typer.core.TyperCommand(name=name, help=help_text, callback=fail,
                                      context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                                        "help_option_names": []})
    command._asinfer_placeholder = failure is None
    return command

HELP = """Screen sacroiliac-joint / spine MRI slices for axial spondyloarthritis (AS).

Research software, not a diagnostic device. The shipped models were built
without patient data.

\b
Examples:
  asinfer predict series/ slice.png                  every slice, table on stdout
  asinfer predict scans/ -f csv -o results.csv       CSV for machines
  asinfer predict one.dcm --provider cuda -f json
  asinfer info                                       model, hashes, providers
  asinfer synth demo --patients 4 --format dicom     synthetic phantom dataset
  asinfer train phantoms/ --out runs/x --epochs 5    needs the train extra
  asinfer convert runs/x --out models/my-bundle      ONNX + TFLite, parity-checked
  asinfer bench runs/x --fail-under "onnx-int8/keras>=3.0"

\b
Exit codes:
  0  success (every input predicted)
  1  some inputs failed (each has a row with its reason); bench: a gate failed
  2  usage or model error
  3  convert: a converted model failed its parity check
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode=None, cls=_Group,
                  context_settings={"help_option_names": ["-h", "--help"]})


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


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


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", help="Bundle folder, manifest.json or .onnx file [default: shipped model, or $ASINFER_MODEL].")]


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked recursively; DICOM found by content).")],
    model: ModelOpt = None,
    provider: Annotated[ProviderChoice, typer.Option(help="Where to run: auto takes CUDA when it works, else CPU.")] = ProviderChoice.auto,
    artifact: Annotated[Optional[str], typer.Option(help="Force an artifact format, e.g. onnx-fp32 [default: int8 on CPU, fp16 on CUDA].")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Slices per inference call.")] = 8,
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Decision threshold [default: the model's].")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads [default: all cores].")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="table for people, json/csv for machines.")] = OutputFormat.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write results to this file instead of stdout.")] = None,
) -> None:
    """Predict every slice of every input: one row per slice, or per failed input."""
    from asinfer import engine

    try:
        clf = engine.load(model, provider=provider.value, artifact=artifact, threshold=threshold, threads=threads)
    except (engine.ModelError, ValueError, OSError) as exc:
        raise _fail(str(exc))
    results = _run_with_progress(clf, paths, batch_size)
    text = _render(results, clf, fmt)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    _summary(results, clf, output)
    raise typer.Exit(EXIT_SOME_FAILED if any(not r.ok for r in results) else EXIT_OK)


def _run_with_progress(clf, paths, batch_size):
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    results = []
    with Progress(SpinnerColumn(), TextColumn("{task.completed} slices"), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("predict", total=None)
        for result in clf.iter_predict(paths, batch_size=batch_size):
            results.append(result)
            progress.advance(task)
    return results


def _render(results, clf, fmt: OutputFormat) -> str:
    if fmt is OutputFormat.json:
        return json.dumps({"model": _model_summary(clf), "results": [r.to_dict() for r in results]}, indent=2) + "\n"
    if fmt is OutputFormat.csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["source", "frame", "probability", "label", "reason", "message"])
        for r in results:
            writer.writerow([r.source, "" if r.frame is None else r.frame,
                             "" if r.probability is None else f"{r.probability:.6f}", r.label or "", r.reason or "",
                             r.message or ""])
        return buf.getvalue()
    return _table(results)


def _table(results) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    for col, justify in (("source", "left"), ("frame", "right"), ("probability", "right"), ("label", "left"), ("error", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for r in results:
        table.add_row(r.source, "" if r.frame is None else str(r.frame),
                      "" if r.probability is None else f"{r.probability:.4f}", r.label or "", r.error or "")
    console = Console(file=io.StringIO(), width=max(100, Console().width), soft_wrap=False)
    with console.capture() as cap:
        console.print(table)
    return cap.get()


def _model_summary(clf) -> dict:
    m = clf.manifest
    return {"name": m.name, "version": m.version, "artifact": clf.artifact.format, "sha256": clf.artifact.sha256,
            "provider": clf.provider, "threshold": clf.threshold, "labels": list(m.labels),
            "synthetic_training_data": m.synthetic_training_data, "notice": m.notice}


def _summary(results, clf, output: Optional[Path]) -> None:
    failed = sum(not r.ok for r in results)
    positive = sum(r.ok and r.label == clf.manifest.labels[1] for r in results)
    m = clf.manifest
    lines = [f"{len(results) - failed} slices predicted ({positive} {m.labels[1]}), {failed} failed; "
             f"model {m.name} {m.version}, {clf.artifact.format} on {clf.provider}"
             + (f"; results in {output}" if output else "")]
    if m.synthetic_training_data:
        lines.append("note: this model was trained on synthetic phantoms. " + m.notice)
    else:
        lines.append("note: " + m.notice)
    typer.echo("\n".join(lines), err=True)


def _metric_lines(metrics: dict) -> list[str]:
    """Scalar metrics on one line; each split (test, validation) on its own line."""
    scalars = lambda d: ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in d.items() if not isinstance(v, (dict, list)))
    top = scalars(metrics)
    return ([top] if top else []) + [f"{k}: {scalars(v)}" for k, v in metrics.items() if isinstance(v, dict)]


@app.command()
def info(
    model: Annotated[Optional[Path], typer.Argument(help="Bundle folder, manifest.json or .onnx [default: shipped model].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest and checks as JSON.")] = False,
) -> None:
    """Show a model's manifest, its artifacts and their sha256 checks, and the available providers."""
    from asinfer import engine
    from asinfer.engine import bundle

    path = model or engine.default_model()
    try:
        manifest, _ = bundle.locate(path)
        checks = bundle.verify(path)
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
               f"resize {pre.resize_down}/{pre.resize_up}, >8-bit: VOI window else p{pre.percentile_low:g}-p{pre.percentile_high:g}")
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
