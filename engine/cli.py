"""The ``asinfer`` command line. Bodies stay thin: parse, call the library, render."""

from __future__ import annotations

import csv
import io
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._version import __version__

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

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_PARITY = 0, 1, 2, 3


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
        writer.writerow(["source", "frame", "probability", "label", "error"])
        for r in results:
            writer.writerow([r.source, "" if r.frame is None else r.frame,
                             "" if r.probability is None else f"{r.probability:.6f}", r.label or "", r.error or ""])
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
    from asinfer.engine import locate

    path = model or engine.default_model()
    try:
        manifest, _ = locate(path)
        checks = engine.verify(path)
        providers = engine.available_providers()
    except (engine.ModelError, ValueError, OSError) as exc:
        raise _fail(str(exc))
    if as_json:
        data = {"path": str(path), "manifest": json.loads(manifest.to_json()), "checks": checks, "providers": providers}
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
        typer.echo(f"  {a.format:<12} {a.file:<22} {a.bytes:>11,} B  sha256 {a.sha256[:16]}…  {checks.get(a.format, '?')}")
    typer.echo(f"providers   {', '.join(providers)}")
    for line in _metric_lines(manifest.metrics):
        typer.echo(f"metrics     {line}")
    typer.echo(f"training    {'SYNTHETIC phantoms' if manifest.synthetic_training_data else manifest.training.get('data', '?')}")
    typer.echo(f"notice      {manifest.notice}")
    if any(v != "ok" and not v.startswith("ok") for v in checks.values()):
        raise typer.Exit(EXIT_USAGE)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder.")],
    patients: Annotated[int, typer.Option(min=1, help="Virtual patients (one series each).")] = 10,
    slices: Annotated[int, typer.Option(min=1, max=200, help="Slices per series.")] = 12,
    fmt: Annotated[str, typer.Option("--format", help="png or dicom.")] = "png",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives identical files.")] = 0,
    profile: Annotated[str, typer.Option(help="Scanner profile (contrast, noise, bias).")] = "default",
    positive_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of ASAS-positive patients.")] = 0.5,
    size: Annotated[Optional[int], typer.Option(min=64, max=1024, help="Matrix size [default: random 256-512 per patient].")] = None,
) -> None:
    """Write a synthetic phantom dataset (class folders + labels.csv). Not patient data."""
    phantoms = _trainer_module("asinfer.trainer.phantoms")
    if out.exists() and any(out.iterdir()):
        raise _fail(f"{out} is not empty; choose a new folder so no stale slices mix with the new ones")
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("phantoms", total=patients)
        try:
            summary = phantoms.write_dataset(out, patients=patients, slices=slices, fmt=fmt, seed=seed,
                                             profile=profile, positive_fraction=positive_fraction, size=size,
                                             progress=lambda done, total: progress.update(task, completed=done))
        except ValueError as exc:
            raise _fail(str(exc))
    typer.echo(f"wrote {summary.n_slices} slices of {summary.n_patients} synthetic patients to {out} "
               f"({summary.n_positive_series} ASAS-positive series); labels in {summary.csv_path}")


@app.command()
def train(
    data: Annotated[Optional[Path], typer.Argument(help="Dataset folder (class folders or labels.csv) or CSV.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")] = Path("runs/train"),
    config: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False, help="train_config.json; options below override it.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1)] = None,
    image_size: Annotated[Optional[int], typer.Option(min=32, max=1024)] = None,
    weights: Annotated[Optional[str], typer.Option(help="none | imagenet | path to VGG16 notop weights (.h5).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1)] = None,
    freeze_blocks: Annotated[Optional[int], typer.Option(min=0, max=5, help="VGG16 blocks 1..k frozen.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's last checkpoint.")] = False,
) -> None:
    """Train the VGG16 classifier; writes model.keras, metrics, curves and a manifest to the run directory."""
    trainer = _trainer_module("asinfer.trainer.train")
    cfg = trainer.TrainConfig.load(config) if config else trainer.TrainConfig()
    overrides = {"data": str(data) if data else None, "epochs": epochs, "image_size": image_size,
                 "weights": weights, "batch_size": batch_size, "freeze_blocks": freeze_blocks}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    try:
        manifest = trainer.train(cfg, out, resume=resume, progress=lambda msg: typer.echo(msg, err=True))
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc))
    test = manifest.metrics.get("test", {})
    typer.echo(f"wrote {out}: test AUC {test.get('auc')}, accuracy {test.get('accuracy')}, "
               f"threshold {manifest.threshold:.4f}; next: asinfer convert {out}")


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Run directory from asinfer train.")],
    formats: Annotated[Optional[str], typer.Option(help="Comma-separated formats [default: all]; see asinfer formats.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(exists=True, help="Dataset for int8 calibration [default: the run's calibration.npz].")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write a bundle with the shipped formats here.")] = None,
) -> None:
    """Convert a trained model to ONNX and TFLite (fp32, fp16, int8), parity-checked against Keras.

    Exit code 3 when a converted model falls outside its parity tolerance.
    """
    conv = _trainer_module("asinfer.trainer.convert")
    names = [f.strip() for f in formats.split(",") if f.strip()] if formats else None
    try:
        manifest = conv.convert(source, names, out=out, calibration=calibration,
                                progress=lambda msg: typer.echo(msg, err=True))
    except conv.ParityError as exc:
        typer.echo(f"parity check failed: {exc}", err=True)
        raise typer.Exit(EXIT_PARITY)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc))
    typer.echo(_parity_table(manifest.parity))


def _parity_table(parity: dict) -> str:
    rows = [f"{'format':<12} {'max|dp|':>10} {'agree':>7} {'AUC':>7} {'dAUC':>8}  passed"]
    for fmt, p in parity.items():
        if isinstance(p, dict) and "passed" in p:
            rows.append(f"{fmt:<12} {_fmt(p.get('max_abs_dp'), '.2e'):>10} {_fmt(p.get('agreement'), '.4f'):>7} "
                        f"{_fmt(p.get('auc'), '.4f'):>7} {_fmt(p.get('dauc'), '+.4f'):>8}  {p['passed']}")
    return "\n".join(rows)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@app.command()
def formats() -> None:
    """List the model formats (the one table the converter, engine and benchmarks read)."""
    from ._formats import FORMATS

    for f in FORMATS.values():
        typer.echo(f"{f.name:<12} {f.runtime:<12} {f.precision:<5} {'engine' if f.engine else '      '} "
                   f"{'shipped' if f.shipped else '       '}  {f.description}")


def _trainer_module(name: str):
    """Import a trainer module, or exit with the install hint."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise _fail(f"{name} is unavailable ({exc}); install the trainer: pip install 'asinfer[train]'")


@app.command()
def bench(
    model: Annotated[Optional[Path], typer.Argument(help="Bundle folder or run directory [default: shipped model, or $ASINFER_MODEL].")] = None,
    data: Annotated[Optional[Path], typer.Option(exists=True, help="Labelled dataset (folder/CSV) or .npz of preprocessed images+labels [default: generated phantom DICOM test set].")] = None,
    formats: Annotated[Optional[str], typer.Option(help="Comma-separated formats [default: all]; see asinfer formats.")] = None,
    batch_sizes: Annotated[Optional[str], typer.Option(help="Comma-separated batch sizes [default: 1,8,32; --quick 1,8].")] = None,
    rounds: Annotated[Optional[int], typer.Option(min=1, help="Interleaved timing rounds per batch size [default: 7; --quick 3].")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the full report as JSON here.")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Write a markdown report here, with an img/s bar chart (.png) beside it.")] = None,
    fail_under: Annotated[Optional[list[str]], typer.Option("--fail-under", help="Speed gate NUM/DEN>=LIMIT on img/s at batch 8 (else the largest batch), e.g. 'onnx-int8/keras>=3.0'; repeatable.")] = None,
    quick: Annotated[bool, typer.Option(help="Small phantom set, fewer rounds and batch sizes: a smoke run for CI.")] = False,
) -> None:
    """Benchmark every format side by side: accuracy parity, latency, img/s, memory, cold start.

    Exit code 1 when an accuracy gate (parity against Keras, always on) or a
    --fail-under speed gate fails; 2 on usage or model errors.

    Example: asinfer bench models/asinfer-vgg16-phantom --fail-under "onnx-int8/keras>=3.0" --json bench.json
    """
    from asinfer import engine

    try:
        from asinfer.benchmarks import bench as runner
    except ImportError as exc:
        raise _fail(f"benchmarks are unavailable ({exc}); install: pip install 'asinfer[train]'")
    try:
        config = runner.BenchConfig.from_options(model, data, formats, batch_sizes, rounds, fail_under or (), quick)
        report = runner.run(config, progress=lambda msg: typer.echo(msg, err=True))
    except (engine.ModelError, ValueError, FileNotFoundError, ImportError) as exc:
        raise _fail(str(exc))
    typer.echo(runner.render_text(report))
    if json_out is not None:
        runner.write_json(report, json_out)
    if markdown is not None:
        chart = runner.write_markdown(report, markdown)
        typer.echo(f"wrote {markdown}" + (f" and {chart}" if chart else " (no chart: matplotlib missing)"), err=True)
    raise typer.Exit(runner.exit_code(report))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
