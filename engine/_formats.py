"""The one table of model formats.

The converter, the engine's artifact choice, the CLI's choices and the
benchmark rows all read :data:`FORMATS`; add a format here and it appears
everywhere.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ._parity import Tolerance


FP32 = Tolerance(max_abs_dp=1e-4)
FP16 = Tolerance(max_abs_dp=1e-2)
INT8 = Tolerance(min_agreement=0.99, max_abs_dauc=0.01)


@dataclass(frozen=True)
class ModelFormat:
    """One way a trained model is stored and run."""

    name: str  # stable identifier used in manifests, CLI options and reports
    runtime: str  # "keras" | "onnxruntime" | "litert"
    precision: str  # "fp32" | "fp16" | "int8"
    filename: str  # default artifact file name inside a bundle
    engine: bool  # the engine (ONNX Runtime) can run it
    shipped: bool  # committed with the demo model (others are reproducible)
    description: str
    tolerance: Tolerance = Tolerance()  # parity against the reference; none for Keras itself


FORMATS: dict[str, ModelFormat] = {
    f.name: f
    for f in (
        ModelFormat("keras", "keras", "fp32", "model.keras", False, False,
                    "Keras 3 model, the prototype's runtime and the parity reference"),
        ModelFormat("onnx-fp32", "onnxruntime", "fp32", "model.fp32.onnx", True, False,
                    "ONNX float32, exported with tf2onnx", FP32),
        ModelFormat("onnx-fp16", "onnxruntime", "fp16", "model.fp16.onnx", True, True,
                    "ONNX float16 weights and compute, uint8 in / float32 out; for CUDA", FP16),
        ModelFormat("onnx-int8", "onnxruntime", "int8", "model.int8.onnx", True, True,
                    "ONNX QDQ int8, static calibration, per-channel weights; for CPU", INT8),
        ModelFormat("tflite-fp32", "litert", "fp32", "model.fp32.tflite", False, False,
                    "LiteRT float32", FP32),
        ModelFormat("tflite-fp16", "litert", "fp16", "model.fp16.tflite", False, False,
                    "LiteRT float16 weights", FP16),
        ModelFormat("tflite-int8", "litert", "int8", "model.int8.tflite", False, True,
                    "LiteRT full-integer int8 (representative dataset), for mobile", INT8),
    )
}


def get_format(name: str) -> ModelFormat:
    """Return the format called ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid ones and the
            closest match.
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(invalid_choice("format", name, FORMATS)) from None


def invalid_choice(kind: str, name: str, valid) -> str:
    """``Invalid <kind> <name>. Valid: ...`` with the closest valid name, for any table of choices."""
    hint = difflib.get_close_matches(name, list(valid), n=1)
    tip = f" Did you mean {hint[0]!r}?" if hint else ""
    return f"Invalid {kind} {name!r}. Valid: {', '.join(valid)}.{tip}"
