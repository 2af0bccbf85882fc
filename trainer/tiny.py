"""Tiny ONNX models that honour the engine's input contract, built with onnx.helper.

They stand in for the trained VGG16 in fast tests and in the first demo: a
3x3 convolution bank and a logistic read-out with fixed weights. They have
no diagnostic meaning whatsoever.

    python -m asinfer.trainer.tiny models/asinfer-tiny      # rebuild the shipped tiny bundle
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from asinfer.engine import InputSpec, Manifest, OutputSpec

NOTICE = ("Structural stand-in with fixed, untrained weights: its outputs mean nothing. "
          "Research software, not a diagnostic device.")


def build_tiny_model(size: int = 224, seed: int = 0, bias: float = 0.0):
    """uint8 ``[N, size, size, 1]`` -> float32 ``[N, 1]`` ONNX model (opset 17).

    Inside: /255, grey -> 3 channels, NHWC -> NCHW, Conv 3x3 (4 filters),
    Relu, global average pool, Gemm 4 -> 1, Sigmoid.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (4, 3, 3, 3)).astype(np.float32)
    w[0] = 0
    w[0, :, 1, 1] = 1 / 3  # filter 0 is the mean intensity, so outputs vary with content
    gemm_w = np.array([[6.0, 1.0, -1.0, 0.5]], np.float32)
    gemm_b = np.array([bias - 3.0], np.float32)
    inits = [
        numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
        numpy_helper.from_array(w, "conv_w"),
        numpy_helper.from_array(np.zeros(4, np.float32), "conv_b"),
        numpy_helper.from_array(gemm_w, "gemm_w"),
        numpy_helper.from_array(gemm_b, "gemm_b"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "scale"], ["x01"]),
        helper.make_node("Concat", ["x01", "x01", "x01"], ["rgb"], axis=3),
        helper.make_node("Transpose", ["rgb"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "gemm_w", "gemm_b"], ["logit"], transB=1),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
    ]
    graph = helper.make_graph(
        nodes, "asinfer_tiny",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 1])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="asinfer.tiny")
    model.ir_version = 8
    return model


def quantize_tiny(src: Path, dst: Path, size: int, seed: int = 0) -> None:
    """Static QDQ int8 of a tiny model, calibrated on random uint8 batches."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(seed)
            self._batches = iter([{"image": rng.integers(0, 256, (1, size, size, 1), np.uint8)} for _ in range(4)])

        def get_next(self):
            return next(self._batches, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv"])


def write_tiny_bundle(out: Path, size: int = 224, formats=("onnx-fp32", "onnx-int8"), seed: int = 0,
                      bias: float = 0.0, name: str = "asinfer-tiny", mirror_average: bool = False) -> Manifest:
    """A complete bundle folder with tiny models: what tests and the first demo load."""
    import onnx

    from .bundle import write_bundle

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / "model.fp32.onnx"
    onnx.save(build_tiny_model(size, seed, bias), str(fp32))
    files = {"onnx-fp32": fp32.name}
    if "onnx-int8" in formats:
        quantize_tiny(fp32, out / "model.int8.onnx", size, seed)
        files["onnx-int8"] = "model.int8.onnx"
    if "onnx-fp32" not in formats:
        fp32.unlink()
        del files["onnx-fp32"]
    manifest = Manifest(
        name=name, version="0.0.1", input=InputSpec(height=size, width=size),
        output=OutputSpec(mirror_average=mirror_average),
        description="Tiny fixed-weight ONNX model for tests and the first demo (see trainer/tiny.py).",
        notice=NOTICE, synthetic_training_data=False,
        training={"data": "none: weights are fixed, not trained"},
        created="2026-01-01T00:00:00+00:00",  # fixed so the rebuilt bundle is byte-identical
    )
    return write_bundle(out, manifest, files)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "models/asinfer-tiny")
    written = write_tiny_bundle(target)
    print(f"wrote {target}: {', '.join(a.format for a in written.artifacts)}")
