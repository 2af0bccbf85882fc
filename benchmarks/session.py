"""Which ONNX Runtime settings suit a small CPU: spinning, threads, graph optimisation level.

    python -m asinfer.benchmarks.session [MODEL.onnx | BUNDLE] [--batch 8] [--rounds 7]

Each setting is a contender timed interleaved with the others; the engine's
defaults (``asinfer.engine.SessionConfig``) come from this measurement.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from asinfer.engine import PROVIDERS, ModelError, SessionConfig, create_session, locate
from asinfer.engine.bundle import check_artifact, choose_artifact

from ._timing import interleave


def settings(cores: int) -> dict[str, SessionConfig]:
    """The grid: the default, and each setting changed on its own."""
    grid = {"default (all, no spin)": SessionConfig()}
    grid["spinning on"] = SessionConfig(spinning=True)
    grid["extended opt"] = SessionConfig(optimization="extended")
    grid["basic opt"] = SessionConfig(optimization="basic")
    if cores > 1:
        grid["1 thread"] = SessionConfig(threads=1)
    return grid


def _model_file(path: Path) -> str:
    """The artifact the engine would run on CPU, checked against its manifest.

    Raises:
        ModelError: no CPU artifact in the bundle, or its file is missing or modified.
    """
    if not path.is_dir():
        return str(path)
    manifest, folder = locate(path)
    art = choose_artifact(manifest, PROVIDERS["cpu"].formats)
    if art is None:
        raise ModelError(f"{path} has no artifact for CPU (one of {', '.join(PROVIDERS['cpu'].formats)})")
    check = check_artifact(folder, art)
    if not check.ok:
        raise ModelError(check.message)
    return str(folder / art.file)


def main(argv: list[str] | None = None) -> None:
    from asinfer.engine import default_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", type=Path, default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    model = _model_file(args.model or default_model())
    cores = os.cpu_count() or 1
    sessions = {name: create_session(model, PROVIDERS["cpu"], cfg) for name, cfg in settings(cores).items()}
    inp = next(iter(sessions.values())).get_inputs()[0]
    size = inp.shape[1] if isinstance(inp.shape[1], int) else 224
    batch = np.random.default_rng(0).integers(0, 256, (args.batch, size, size, 1), dtype=np.uint8)
    runs = {name: (lambda s=s: s.run(None, {inp.name: batch})) for name, s in sessions.items()}
    timings = interleave(runs, rounds=args.rounds)
    base = timings["default (all, no spin)"].median
    print(f"batch {args.batch} at {size}x{size}, {args.rounds} interleaved rounds, {cores} cores")
    print(f"{'setting':<24} {'img/s':>8} {'min-max img/s':>16} {'vs default':>10}")
    for name, t in timings.items():
        lo, hi = t.spread
        print(f"{name:<24} {t.per_second(args.batch):8.2f} {args.batch / hi:7.2f}-{args.batch / lo:<7.2f} "
              f"{base / t.median:9.2f}x")


if __name__ == "__main__":
    main()
