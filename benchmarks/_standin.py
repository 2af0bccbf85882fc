"""A speed-only Keras row for a bundle without a Keras model: the prototype's runtime, timed.

A shipped bundle holds no ``model.keras`` (the one-hour training makes it),
yet the ratios users ask for compare with Keras (``onnx-int8/keras``,
``end-to-end/keras``). The bundle's ``train_config.json`` says which network
was trained; building that network with random weights gives a model with
the same layers and cost. Its timing, memory and cold start are real; its
outputs are not the bundle's, so it is never a parity reference and has no
accuracy gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asinfer.trainer.runtimes import limit_tensorflow_threads

SPEED_ONLY = "speed only, weights not the bundle's"
TRAIN_CONFIG = "train_config.json"


@dataclass(frozen=True)
class StandIn:
    """A temporary ``.keras`` file with the bundle's architecture and random weights."""

    path: Path
    note: str  # what it is, for the row's note


def build_keras_standin(folder: Path | None, manifest, workdir: Path, threads: int) -> StandIn:
    """Write ``workdir/model.keras`` from ``folder/train_config.json``: the same architecture, random weights.

    Raises:
        FileNotFoundError: no ``train_config.json`` in the bundle (or a lone ``.onnx`` file was given).
        ValueError: the config cannot be read, or its input size is not the bundle's.
        ModuleNotFoundError: TensorFlow is not installed.
    """
    config = _train_config(folder)
    size = (manifest.input.height, manifest.input.width)
    if (config.image_size, config.image_size) != size:
        raise ValueError(f"{TRAIN_CONFIG} image_size {config.image_size} is not the bundle's input "
                         f"{size[0]}x{size[1]}: a stand-in would time another model")
    limit_tensorflow_threads(threads)
    from asinfer.trainer.model import build_model

    model = build_model(config.image_size, "none", seed=config.seed, batch_norm=config.uses_batch_norm,
                        mirror_tied=config.mirror_tied)
    path = Path(workdir) / "model.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    bn = ", batch norm" if config.uses_batch_norm else ""
    note = (f"{SPEED_ONLY}: the VGG16 of {TRAIN_CONFIG} ({config.image_size}x{config.image_size}{bn}, "
            f"seed {config.seed}) with random weights; timing, memory and cold start only, no parity")
    return StandIn(path, note)


def _train_config(folder: Path | None):
    """The bundle's training config (``asinfer.trainer.train.TrainConfig``)."""
    if folder is None or not (Path(folder) / TRAIN_CONFIG).is_file():
        where = "a lone model file" if folder is None else str(folder)
        raise FileNotFoundError(f"no {TRAIN_CONFIG} in {where} to build a speed-only stand-in from")
    from asinfer.trainer.train import TrainConfig

    try:
        return TrainConfig.load(Path(folder) / TRAIN_CONFIG)
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError; TypeError: a non-object JSON
        raise ValueError(f"{Path(folder) / TRAIN_CONFIG} cannot be read: {exc}") from None
