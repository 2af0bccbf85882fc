"""The trainer's commands: ``asinfer synth``, ``asinfer train``, ``asinfer convert``.

Registered lazily by ``asinfer.engine.cli`` (its ``COMMANDS`` table); this
module and what it imports load only when one of these commands runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, rich_markup_mode=None)

EXIT_USAGE, EXIT_PARITY = 2, 3


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)


SOURCES = ("training", "independent")  # asinfer synth --source: the training generator, or the test-only one


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder.")],
    patients: Annotated[int, typer.Option(min=1, help="Virtual patients (one series each).")] = 10,
    slices: Annotated[int, typer.Option(min=1, max=200, help="Slices per series.")] = 12,
    fmt: Annotated[str, typer.Option("--format", help="png or dicom.")] = "png",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives identical files.")] = 0,
    profile: Annotated[Optional[str], typer.Option(
        help="Scanner profile of the training source: mixed (the training distribution), default, low-field, "
             "high-snr, or vendor-b (held out of training) [default: mixed].")] = None,
    anatomy: Annotated[Optional[str], typer.Option(
        help="Anatomy variant of the training source (average, narrow, wide, thin, obese, prominent-foramina, "
             "or elderly, held out of training) [default: a training variant per patient].")] = None,
    positive_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of ASAS-positive patients.")] = 0.5,
    size: Annotated[Optional[int], typer.Option(min=64, max=1024, help="Matrix size [default: random per patient].")] = None,
    source: Annotated[str, typer.Option(
        help="training: the phantom generator models are trained on; independent: phantoms drawn by separate "
             "code, FOR TESTING ONLY (never train on them), to catch a model that learned one generator.")] = "training",
) -> None:
    """Write a synthetic phantom dataset (class folders + labels.csv). Not patient data.

    Example: asinfer synth testset --source independent --patients 40 --format dicom
    """
    from rich.progress import Progress

    if source not in SOURCES:
        raise _fail(f"Invalid source {source!r}. Valid sources are {SOURCES}.")
    if source == "independent" and (profile is not None or anatomy is not None):
        raise _fail("--profile and --anatomy apply to --source training only; the independent source draws its own")
    if out.exists() and any(out.iterdir()):
        raise _fail(f"{out} is not empty; choose a new folder so no stale slices mix with the new ones")
    with Progress(transient=True) as progress:
        task = progress.add_task("phantoms", total=patients)
        try:
            summary = _write_phantoms(source, out, patients=patients, slices=slices, fmt=fmt, seed=seed,
                                      profile=profile, anatomy=anatomy, positive_fraction=positive_fraction, size=size,
                                      progress=lambda done, total: progress.update(task, completed=done))
        except ValueError as exc:
            raise _fail(str(exc))
    typer.echo(f"wrote {summary.n_slices} slices of {summary.n_patients} synthetic patients to {out} "
               f"({summary.n_positive_series} ASAS-positive series); labels in {summary.csv_path}")
    if source == "independent":
        typer.echo("independent test source: FOR TESTING ONLY - never train or tune a model on it")


def _write_phantoms(source: str, out: Path, *, profile: Optional[str], anatomy: Optional[str], **settings):
    """The chosen source's write_dataset."""
    if source == "independent":
        from .altphantoms import write_dataset as write_independent

        return write_independent(out, **settings)
    from .phantoms import TRAINING_PROFILE, write_dataset

    return write_dataset(out, profile=profile or TRAINING_PROFILE, anatomy=anatomy, **settings)


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
    from .train import TrainConfig
    from .train import train as run_training

    try:
        cfg = TrainConfig.load(config) if config else TrainConfig()
        cfg = cfg.override(data=str(data) if data else None, epochs=epochs, image_size=image_size, weights=weights,
                           batch_size=batch_size, freeze_blocks=freeze_blocks)
        manifest = run_training(cfg, out, resume=resume, progress=lambda msg: typer.echo(msg, err=True))
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
    tolerance: Annotated[Optional[list[str]], typer.Option(
        "--tolerance", metavar="FORMAT:FIELD=VALUE[,...]",
        help="Judge a format by other limits (repeatable), e.g. onnx-int8:min_agreement=0.98,max_abs_dauc=0.02; "
             "fields max_abs_dp, min_agreement, max_abs_dauc (none removes one).")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for the parity runs [default: all cores].")] = None,
) -> None:
    """Convert a trained model to ONNX and TFLite (fp32, fp16, int8), parity-checked against Keras.

    Parity is measured on the run's parity.npz (slices not used for calibration). Formats that pass are
    written even when another fails; exit code 3 when any converted format falls outside its tolerance.
    """
    from . import convert as conv

    names = [f.strip() for f in formats.split(",") if f.strip()] if formats else None
    try:
        tolerances = conv.parse_tolerances(tolerance or [])
        result = conv.convert(source, names, out=out, calibration=calibration, tolerances=tolerances,
                              threads=threads, progress=lambda msg: typer.echo(msg, err=True))
    except (FileNotFoundError, ValueError, ModuleNotFoundError) as exc:
        raise _fail(str(exc))
    typer.echo(parity_table(result.records))
    written = ", ".join(a.format for a in result.manifest.artifacts) or "none"
    typer.echo(f"wrote {result.folder}: {written}")
    for problem in result.problems():
        typer.echo(f"parity check failed: {problem}", err=True)
    if result.failed:
        raise typer.Exit(EXIT_PARITY)


def parity_table(records: dict) -> str:
    """A plain-text table of parity records: numbers, 95 % intervals and verdict, one format a row."""
    from .card import interval_text, verdict_text

    rows = [f"{'format':<12} {'n':>5} {'max|dp|':>9} {'agreement [95%]':<26} {'AUC':>6} {'dAUC [95%]':<29} verdict"]
    for fmt, p in records.items():
        agreement = f"{p.agreement:.4f} {interval_text(p.agreement_interval)}"
        dauc = f"{_fmt(p.dauc, '+.4f')} {interval_text(p.dauc_interval, '+.4f')}"
        rows.append(f"{fmt:<12} {p.n:>5} {p.max_abs_dp:>9.2e} {agreement:<26} {_fmt(p.auc, '.4f'):>6} "
                    f"{dauc:<29} {verdict_text(p)}")
    return "\n".join(rows)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)
