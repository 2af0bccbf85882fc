"""ONNX int8: static QDQ quantisation with ONNX Runtime, its options, and the reduce_range trials and choice."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asinfer.engine.bundle import ParityRecord
from asinfer.trainer.bundle import machine

from ._onnx import input_chain
from ._rounding import round_first_conv

if TYPE_CHECKING:
    from ._job import Job

FORMAT = "onnx-int8"


def onnx_int8(job: Job, dest: Path) -> dict:
    """Static QDQ int8; ``reduce_range`` is measured both ways on the parity slices and the better kept."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = job.tmp / "pre.onnx"
    quant_pre_process(str(job.onnx_fp32), str(pre))  # shape inference and fusions (MatMul+Add -> Gemm)
    options = int8_options(pre)
    trials, rounding = {}, {}
    for reduce_range in (False, True):
        path = job.tmp / f"int8-rr{int(reduce_range)}.onnx"
        quantize(pre, path, job.calibration, reduce_range, options)
        rounding[reduce_range] = round_first_conv(pre, path, job.calibration)
        trials[reduce_range] = job.judge(FORMAT, job.measure(FORMAT, path))
    choice = choose_reduce_range(trials)
    shutil.copyfile(job.tmp / f"int8-rr{int(choice)}.onnx", dest)
    return {**_describe(options, len(job.calibration)), "first_conv_rounding": rounding[choice],
            **_reduce_range_record(trials, choice)}


def rank_trial(record: ParityRecord) -> tuple:
    """Sort key, best first: within tolerance (the record's verdict), then mean |dp|, then max |dp|.

    Mean |dp| over every parity slice is the steadiest measure of the
    quantisation error. Label agreement hangs on the few slices nearest the
    threshold: on the demo VGG16 a single slice of 324 decided between two
    settings whose mean |dp| differed by 10-25 %.

    Raises:
        ValueError: the record has no verdict (judge it with the format's tolerance first).
    """
    if record.verdict is None:
        raise ValueError("rank_trial needs a judged record: replace(record, verdict=tolerance.judge(record))")
    return not record.verdict.passed, record.mean_abs_dp, record.max_abs_dp


def choose_reduce_range(trials: dict[bool, ParityRecord]) -> bool:
    """The ``reduce_range`` setting whose judged record ranks first (:func:`rank_trial`); the first listed on a tie."""
    return min(trials, key=lambda rr: rank_trial(trials[rr]))  # min() keeps the first on a tie: False


def int8_options(pre: Path) -> dict:
    """Float tail and pinned input scales for ``quantize_static``, found in the pre-processed graph."""
    import onnx

    graph = onnx.load(str(pre)).graph
    return {"nodes_to_exclude": _float_tail(graph),
            "extra_options": {"TensorQuantOverrides": _input_overrides(pre, input_chain(graph))}}


def _float_tail(graph) -> list[str]:
    """The Sigmoid and the last Dense (Gemm, or MatMul[+Add]) feeding it.

    Quantising the logit would leave ~100 distinct probabilities; in float
    they keep full resolution at a negligible cost.
    """
    producers = {out: node for node in graph.node for out in node.output}
    tail, node = [], producers[graph.output[0].name]
    while node is not None and node.op_type in ("Sigmoid", "Add", "Gemm", "MatMul"):
        tail.append(node.name)
        if node.op_type in ("Gemm", "MatMul"):
            return tail
        node = next((producers[i] for i in node.input if i in producers), None)
    raise ValueError(f"cannot find the final Dense + Sigmoid in the graph (walked {tail}); "
                     f"the model's head must end in Dense(1, activation='sigmoid')")


def _input_overrides(model: Path, tensors: list[str]) -> dict:
    """Quantisation parameters that cover each input-chain tensor's full range exactly.

    Calibrated ranges stop at the brightest calibration pixel, so brighter
    test pixels would clip, and the uint8 input would be requantised with
    loss. These tensors are affine in the pixel value, so all-0 and all-255
    images give their exact range; for 0..255 and 0..1 the scale is 1 and
    1/255 and quantisation is lossless.
    """
    lows, highs = _run_tensors(model, tensors, 0), _run_tensors(model, tensors, 255)
    overrides = {}
    for name, lo, hi in zip(tensors, lows, highs):
        lo, hi = min(float(lo.min()), float(hi.min()), 0.0), max(float(lo.max()), float(hi.max()), 0.0)
        scale = (hi - lo) / 255 or 1.0
        zero = np.array(round(-lo / scale), np.uint8)  # numpy arrays: plain numpy scalars are refused
        overrides[name] = [{"scale": np.array(scale, np.float32), "zero_point": zero}]
    return overrides


def _run_tensors(model: Path, tensors: list[str], pixel: int) -> list[np.ndarray]:
    """Values of the named tensors for a constant image."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(model))
    proto.graph.output.extend([onnx.ValueInfoProto(name=name) for name in tensors])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = [1 if isinstance(d, str) or d is None else d for d in session.get_inputs()[0].shape]
    return session.run(tensors, {session.get_inputs()[0].name: np.full(shape, pixel, np.uint8)})


def quantize(pre: Path, path: Path, images: np.ndarray, reduce_range: bool, options: dict) -> None:
    """``quantize_static`` of ``pre`` into ``path``, calibrated on ``images``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    # MinMax: Entropy gave identical scales on VGG16 and Percentile clipped (spike, issue 4).
    quantize_static(str(pre), str(path), CalibrationReader(images), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, **options)


class CalibrationReader:
    """ONNX Runtime calibration reader over uint8 slices, exactly what the engine feeds."""

    def __init__(self, images: np.ndarray, batch: int = 16) -> None:
        self.batches = [images[k:k + batch] for k in range(0, len(images), batch)]
        self.next = iter(self.batches)

    def get_next(self) -> dict | None:
        batch = next(self.next, None)
        return None if batch is None else {"image": batch}

    def rewind(self) -> None:
        self.next = iter(self.batches)


def _describe(options: dict, calibration: int) -> dict:
    """The quantiser settings, as recorded in the parity record's ``settings``."""
    return {"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ", "per_channel": True,
            "activations": "uint8", "weights": "int8", "calibration": "MinMax", "calibration_slices": calibration,
            "float_nodes": options["nodes_to_exclude"],
            "pinned_tensors": sorted(options["extra_options"]["TensorQuantOverrides"])}


def _reduce_range_record(trials: dict[bool, ParityRecord], choice: bool) -> dict:
    """Both trials' numbers, the choice and why, and the CPU it was measured on."""
    cpu = _cpu()
    numbers = {str(rr): {"max_abs_dp": r.max_abs_dp, "mean_abs_dp": r.mean_abs_dp, "agreement": r.agreement,
                         "dauc": r.dauc, "passed": r.passed} for rr, r in trials.items()}
    reason = (f"reduce_range={choice} gave the better parity on {trials[choice].n} slices (within tolerance by the "
              f"format's verdict, then mean|dp|, then max|dp|; False on a tie) on this {cpu['machine']} CPU "
              f"({'with' if cpu['vnni'] else 'without'} VNNI). On AVX2 CPUs without VNNI, u8s8 with "
              f"reduce_range=False can saturate: measure there before deploying to one.")
    return {"reduce_range": choice, "reduce_range_trials": numbers, "reduce_range_reason": reason, "cpu": cpu}


def _cpu() -> dict:
    """Architecture and whether the CPU has VNNI (it decides whether reduce_range matters)."""
    found = machine(("avx512_vnni", "avx_vnni"))
    return {"machine": found["arch"], "vnni": any(found["flags"].values())}
