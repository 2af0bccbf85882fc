"""One runner per runtime: load a model file, then call it on uint8 batches.

    runner = RUNTIMES["onnxruntime"].load(Path("model.int8.onnx"), threads=2)
    probs = runner(batch)            # uint8 [N, H, W, 1] -> float32 [N]

Keys are the ``runtime`` names of :data:`asinfer.engine.FORMATS`; every format runs
through the runner of its runtime. The converter checks parity with these
runners and ``asinfer bench`` times them: both measure the same code. Each
runtime's package is imported only when a model of that runtime is loaded.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Runtime:
    """How to run one runtime's models."""

    name: str  # FORMATS[...].runtime
    module: str  # the package that must be importable
    install: str  # how to get it when missing
    load: Callable[[Path, int], Predict]  # (model file, threads) -> predict

    def missing(self) -> str | None:
        """Why this runtime cannot run here, or None when it can."""
        if importlib.util.find_spec(self.module) is None:
            return f"runtime {self.name} not installed ({self.module}); {self.install}"
        return None


def limit_tensorflow_threads(threads: int) -> None:
    """Size TensorFlow's thread pools as every runner here is sized: ``threads`` intra-op, one inter-op.

    Only possible before TensorFlow starts its pools (the first model built or
    loaded in the process); afterwards the pools already set are kept.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already running in this process
        pass


class KerasRunner:
    """Keras on TensorFlow, the prototype's runtime and the parity reference."""

    def __init__(self, path: Path, threads: int) -> None:
        limit_tensorflow_threads(threads)
        from .model import load

        self.model = load(path)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(batch), np.float32).reshape(-1)


class OnnxRuntimeRunner:
    """ONNX Runtime on CPU with exactly the engine's session settings, reading the file by path as the engine does."""

    def __init__(self, path: Path, threads: int) -> None:
        from asinfer.engine import PROVIDERS, SessionConfig, create_session

        self.session = create_session(str(path), PROVIDERS["cpu"], SessionConfig(threads=threads))
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output], {self.input: batch})[0].reshape(-1)


class LiteRTRunner:
    """LiteRT interpreter (XNNPACK on CPU), its input resized when the batch size changes."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.shape: tuple[int, ...] | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape != self.shape:
            self.interpreter.resize_tensor_input(self.input, batch.shape)
            self.interpreter.allocate_tensors()
            self.shape = batch.shape
        self.interpreter.set_tensor(self.input, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).reshape(-1).copy()


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("keras", "tensorflow", "pip install 'asinfer[train]'", KerasRunner),
        Runtime("onnxruntime", "onnxruntime", "pip install asinfer", OnnxRuntimeRunner),
        Runtime("litert", "ai_edge_litert", "pip install ai-edge-litert (or 'asinfer[train]')", LiteRTRunner),
    )
}


def load_runner(runtime: str, path: Path, threads: int | None = None) -> Predict:
    """The runner of ``runtime`` (a key of :data:`RUNTIMES`) for the model file ``path``.

    Raises:
        ValueError: unknown runtime.
        ModuleNotFoundError: the runtime's package is not installed (the message says how to get it).
    """
    if runtime not in RUNTIMES:
        from asinfer.engine import invalid_choice

        raise ValueError(invalid_choice("runtime", runtime, RUNTIMES))
    entry = RUNTIMES[runtime]
    why = entry.missing()
    if why:
        raise ModuleNotFoundError(why, name=entry.module)
    return entry.load(Path(path), threads or os.cpu_count() or 1)


def predict_all(predict: Predict, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Probabilities for every image, ``batch`` at a time."""
    return np.concatenate([predict(images[k:k + batch]) for k in range(0, len(images), batch)])
