"""Commands that live in other packages (the trainer's, the benchmarks'), listed by the engine's CLI and
imported only when one of them runs."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import typer
import typer.core
import typer.main

EXIT_USAGE = 2

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
    "serve": LazyCommand("asinfer.engine.node.cli", "Run a DICOM node: receive series (C-STORE), screen each, write SR + SC (needs the node extra)."),
    "screen": LazyCommand("asinfer.engine.screen.cli", "Screen an archive on Dask, resumable, every input once; Parquet results (needs the screen extra)."),
}

#: Importable module -> the extra of ``pyproject.toml`` that installs it.
EXTRAS: dict[str, str] = {
    "tensorflow": "train", "keras": "train", "tf2onnx": "train", "onnx": "train", "ai_edge_litert": "train",
    "sklearn": "train", "matplotlib": "train", "sympy": "train", "pytest_benchmark": "dev", "highdicom": "dicom",
    "pynetdicom": "node", "tomli": "node", "dask": "screen", "distributed": "screen", "pyarrow": "screen",
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
