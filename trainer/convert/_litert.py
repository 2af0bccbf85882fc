"""LiteRT (TFLite) fp32, fp16 and full-integer int8 from the Keras model."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._job import Job

REPRESENTATIVE_BATCH = 8  # slices per representative-dataset step of the int8 converter


def tflite(precision: str, job: Job, dest: Path) -> dict:
    """LiteRT from the Keras model (from_concrete_functions yields a variable-less, broken file)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(job.model)
    settings = _SETUP[precision](converter, job)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints its export's signature: stdout is for results
        dest.write_bytes(converter.convert())
    return {"converter": "tf.lite.TFLiteConverter.from_keras_model", **settings}


def _fp32(converter, job: Job) -> dict:
    """Float32: the converter as it is."""
    return {}


def _fp16(converter, job: Job) -> dict:
    """Float16 weights: post-training float16 quantisation."""
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return {"supported_types": ["float16"]}


def _int8(converter, job: Job) -> dict:
    """Full-integer int8: uint8 input as the contract says, float32 output from the model's dequantise."""
    import tensorflow as tf

    images, step = job.calibration, REPRESENTATIVE_BATCH
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([images[k:k + step]] for k in range(0, len(images), step))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    return {"full_integer": True, "input": "uint8", "output": "float32", "representative_slices": len(images)}


_SETUP = {"fp32": _fp32, "fp16": _fp16, "int8": _int8}
