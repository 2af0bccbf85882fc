"""``asinfer bench``, registered lazily by ``asinfer.engine.cli`` (its ``COMMANDS`` table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, rich_markup_mode=None)

EXIT_USAGE = 2


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

    Exit code 1 when an accuracy gate (parity against Keras or the most exact
    format, always on) or a --fail-under speed gate fails; 2 on usage or model errors.
    A bundle without Keras gets a speed-only Keras row from its train_config.json
    (random weights) when TensorFlow is installed.

    Example: asinfer bench models/asinfer-vgg16-phantom --fail-under "onnx-int8/keras>=3.0" --json bench.json
    """
    from asinfer import engine

    from . import bench as runner

    try:
        config = runner.BenchConfig.from_options(model, data, formats, batch_sizes, rounds, fail_under or (), quick)
        report = runner.run(config, progress=lambda msg: typer.echo(msg, err=True))
    except (engine.ModelError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE)
    typer.echo(runner.render_text(report))
    if json_out is not None:
        runner.write_json(report, json_out)
    if markdown is not None:
        chart = runner.write_markdown(report, markdown)
        typer.echo(f"wrote {markdown}" + (f" and {chart}" if chart else " (no chart: matplotlib missing)"), err=True)
    raise typer.Exit(report.exit_code)
