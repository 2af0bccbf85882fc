"""Convert a training run to ONNX and LiteRT, checking every result against Keras.

Input is a run directory as training writes it::

    RUN_DIR/manifest.json     engine Manifest with the "keras" artifact
    RUN_DIR/model.keras       the trained model (the parity reference)
    RUN_DIR/holdout.npz       images uint8 [N,S,S,1], labels int8 [N]: held-out patients
    RUN_DIR/calibration.npz   images uint8 [M,S,S,1]: preprocessed training slices

Each format of :data:`asinfer.engine.FORMATS` has one converter in :data:`CONVERTERS`;
after each conversion the held-out slices run through the new file in its own
runtime (ONNX Runtime, LiteRT) and must match Keras within the format's
tolerance, or :class:`ParityError` stops the run.

TensorFlow, tf2onnx and onnx are imported inside the functions that use them.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from asinfer.engine import FORMATS, Manifest
from asinfer.engine._bundle import sha256_file
from asinfer.engine._formats import get_format
from asinfer.engine._manifest import MANIFEST_NAME, read_manifest
from asinfer.trainer._parity import ParityError, check, measure
from asinfer.trainer.bundle import machine, tool_versions, write_bundle

__all__ = ["CONVERTERS", "ParityError", "convert"]

log = logging.getLogger("asinfer.trainer")

OPSET = 17
BATCH = 32  # slices per inference call during parity and calibration
MAX_CALIBRATION = 512  # slices drawn from a calibration dataset; a few hundred suffice for MinMax
TOOLS = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy")
# copied into the shipped bundle beside the artifacts; train_config.json reproduces the run
EXTRA_FILES = ("*.png", "MODEL_CARD.md", "train_config.json")


@dataclass
class _Job:
    """One conversion run: the reference model, its held-out predictions and shared intermediates."""

    run_dir: Path
    manifest: Manifest
    calibration_source: Path | None
    progress: Callable[[str], None]
    tmp: Path
    model: object = None  # keras.Model, loaded once
    holdout: np.ndarray = field(default=None, repr=False)
    labels: np.ndarray = field(default=None, repr=False)
    reference: np.ndarray = field(default=None, repr=False)  # Keras probabilities on holdout

    @property
    def size(self) -> tuple[int, int]:
        return self.manifest.input.height, self.manifest.input.width

    @functools.cached_property
    def onnx_fp32(self) -> Path:
        """The tf2onnx export, made once and shared by the ONNX formats."""
        return _export_onnx(self.model, self.size, self.tmp / "export.onnx")

    @functools.cached_property
    def calibration(self) -> np.ndarray:
        """uint8 [M,H,W,1] calibration slices (preprocessed by the engine)."""
        images = _calibration_images(self.run_dir, self.calibration_source, self.manifest)
        self.progress(f"calibration: {len(images)} slices")
        return images

    def parity(self, fmt: str, path: Path) -> dict:
        """Parity numbers of the file ``path`` in ``fmt``'s runtime (not yet judged)."""
        predicted = _PREDICTORS[FORMATS[fmt].runtime](path, self.holdout)
        return measure(self.reference, predicted, self.labels, self.manifest.threshold)


def convert(run_dir: Path, formats: Sequence[str] | None = None, out: Path | None = None,
            calibration: Path | None = None, progress: Callable[[str], None] | None = None) -> Manifest:
    """Convert a training run's Keras model, parity-check each result, and record it.

    Args:
        run_dir: a training run folder (see the module docstring).
        formats: names from :data:`asinfer.engine.FORMATS`; default every format but ``keras``.
        out: when given, a bundle folder that receives the *shipped* formats
            (``FORMATS[f].shipped``) among the run's artifacts, plus ``*.png``
            and ``MODEL_CARD.md``; its manifest keeps the parity of every format.
        calibration: images for int8 calibration instead of
            ``run_dir/calibration.npz``: a dataset folder or CSV (read and
            preprocessed with the engine), or an ``.npz`` holding ``images``.
        progress: called with a short line at every step.

    Returns:
        The manifest written: ``out``'s when ``out`` is given, else ``run_dir``'s.
        Its ``parity`` maps each format to its numbers, limits and conversion
        ``settings``; ``tools`` holds the versions used.

    Raises:
        ValueError: an unknown format name (with the closest valid one), or
            ``keras``, which is the source, not a target.
        FileNotFoundError: the run folder lacks a file it needs.
        ParityError: a converted file is outside its tolerance; the formats
            converted before it are still recorded.

    Example:
        >>> m = convert(Path("runs/demo"), ["onnx-int8"], out=Path("models/demo"))  # doctest: +SKIP
        >>> m.parity["onnx-int8"]["agreement"]  # doctest: +SKIP
        1.0
    """
    run_dir = Path(run_dir)
    targets = _targets(formats)
    say = progress or (lambda line: log.info("%s", line))
    if out is not None and Path(out).resolve() == run_dir.resolve():
        raise ValueError(f"out={out} is the run folder itself; pass a separate bundle folder")
    with tempfile.TemporaryDirectory(prefix="asinfer-convert-") as tmp:
        job = _open(run_dir, calibration, say, Path(tmp))
        records = _convert_all(job, targets)
    final = _record(run_dir, job.manifest, records)
    return _ship(final, run_dir, Path(out)) if out is not None else final


def _convert_all(job: _Job, targets: list[str]) -> dict[str, dict]:
    """Convert and judge each target; on a parity failure record the ones done, then raise."""
    records: dict[str, dict] = {}
    for fmt in targets:
        try:
            records[fmt] = _convert_one(job, fmt)
        except ParityError:
            if records:
                _record(job.run_dir, job.manifest, records)
            raise
    return records


def _convert_one(job: _Job, fmt: str) -> dict:
    dest = job.run_dir / FORMATS[fmt].filename
    job.progress(f"{fmt}: converting")
    settings = CONVERTERS[fmt](job, dest)
    measured = job.parity(fmt, dest)
    dauc = "n/a" if measured["dauc"] is None else f"{measured['dauc']:+.4f}"
    job.progress(f"{fmt}: {dest.stat().st_size / 1e6:.1f} MB, max|dp| {measured['max_abs_dp']:.2e}, "
                 f"agreement {measured['agreement']:.4f}, dAUC {dauc}")
    return {**check(fmt, measured, FORMATS[fmt].tolerance), "settings": settings}


def _targets(formats: Sequence[str] | None) -> list[str]:
    """Validated target names in the order given, without repeats."""
    if formats is None:
        return [name for name in FORMATS if name in CONVERTERS]
    if isinstance(formats, str):
        formats = [formats]
    for name in formats:
        get_format(name)  # ValueError with the valid names and a close match
        if name not in CONVERTERS:
            raise ValueError(f"format {name!r} is the conversion source, not a target; choose from "
                             f"{', '.join(CONVERTERS)}")
    return list(dict.fromkeys(formats))


# --- the run folder ------------------------------------------------------------------------------------------


def _open(run_dir: Path, calibration: Path | None, progress, tmp: Path) -> _Job:
    """Read the run folder: manifest, verified Keras model, held-out data and Keras's predictions on it."""
    import keras

    manifest = read_manifest(_need(run_dir, MANIFEST_NAME))
    source = manifest.artifact("keras")
    if source is None:
        raise FileNotFoundError(f"{run_dir / MANIFEST_NAME} lists no 'keras' artifact; convert a training run "
                                f"folder (asinfer train ... --out RUN_DIR)")
    _check_sha256(_need(run_dir, source.file), source.sha256)
    job = _Job(run_dir, manifest, Path(calibration) if calibration is not None else None, progress, tmp)
    progress(f"keras: loading {source.file}")
    job.model = keras.models.load_model(run_dir / source.file)
    with np.load(_need(run_dir, "holdout.npz")) as data:
        job.holdout, job.labels = _images(data, "holdout.npz"), np.asarray(data["labels"])
    job.reference = job.model.predict(job.holdout, batch_size=BATCH, verbose=0).reshape(-1)
    return job


def _need(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; a run folder holds manifest.json, model.keras, holdout.npz "
                                f"and calibration.npz as `asinfer train` writes them")
    return path


def _check_sha256(path: Path, expected: str) -> None:
    digest = sha256_file(path)
    if digest != expected:
        raise ValueError(f"{path} does not match the sha256 in its manifest ({digest[:16]}... vs "
                         f"{expected[:16]}...): the model changed after training; retrain or restore it")


def _images(data, origin: str) -> np.ndarray:
    images = np.asarray(data["images"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 1 or not len(images):
        raise ValueError(f"{origin}: 'images' must be a non-empty uint8 [N,H,W,1] batch, got "
                         f"{images.dtype} {images.shape}")
    return images


def _calibration_images(run_dir: Path, source: Path | None, manifest: Manifest) -> np.ndarray:
    """Calibration slices: ``source`` (dataset or .npz) or the run's calibration.npz."""
    if source is None or source.suffix == ".npz":
        path = source or _need(run_dir, "calibration.npz")
        with np.load(path) as data:
            return _images(data, str(path))
    from asinfer.trainer.data import load_images, read_index

    records = read_index(source)
    if len(records) > MAX_CALIBRATION:  # a seeded draw keeps reruns identical
        pick = np.random.default_rng(0).choice(len(records), MAX_CALIBRATION, replace=False)
        records = [records[i] for i in sorted(pick)]
    images, _, failures = load_images(records, manifest.input.height, manifest.preprocessing)
    if not len(images):
        raise ValueError(f"calibration data {source} gave no readable images ({len(failures)} failed)")
    return images


# --- recording -----------------------------------------------------------------------------------------------


def _record(run_dir: Path, manifest: Manifest, records: dict[str, dict]) -> Manifest:
    """Rewrite the run's manifest with the new artifacts, their parity and the tool versions."""
    files = {a.format: a.file for a in manifest.artifacts if (run_dir / a.file).is_file()}
    files.update({fmt: FORMATS[fmt].filename for fmt in records})
    updated = replace(manifest, artifacts=(), parity={**manifest.parity, **records},
                      tools={**manifest.tools, **_versions()})
    return write_bundle(run_dir, updated, files)


def _ship(manifest: Manifest, run_dir: Path, out: Path) -> Manifest:
    """Copy the shipped artifacts, plots and model card into ``out`` and write its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    files = {a.format: a.file for a in manifest.artifacts if FORMATS[a.format].shipped}
    extras = [p.name for pattern in EXTRA_FILES for p in sorted(run_dir.glob(pattern))]
    for name in [*files.values(), *extras]:
        shutil.copy2(run_dir / name, out / name)
    return write_bundle(out, replace(manifest, artifacts=(), created=""), files)


def _versions() -> dict[str, str]:
    return tool_versions(TOOLS)


# --- ONNX ----------------------------------------------------------------------------------------------------


def _export_onnx(model, size: tuple[int, int], path: Path) -> Path:
    """tf2onnx export: uint8 ``image`` [N,H,W,1] -> float32 ``probability`` [N,1], opset 17.

    The graph keeps exactly one Transpose (NHWC -> NCHW on the input): the
    contract's input is NHWC and ONNX convolutions are NCHW, so one is the
    minimum; tf2onnx's optimiser removes the per-layer ones. The scaling and
    grey->RGB replication are folded into the first convolution.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    spec = [tf.TensorSpec((None, *size, 1), tf.uint8, name="image")]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    _name_batch_dim(proto.graph)
    _fold_grey_input(proto.graph)
    outputs = [o.name for o in proto.graph.output]
    if outputs != ["probability"]:  # from_keras takes it from the output layer's name
        raise ValueError(f"exported outputs {outputs}; the model's output layer must be named 'probability'")
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


_FOLDABLE = {"Mul", "Add", "Concat"}


def _fold_grey_input(graph) -> bool:
    """Fold the in-graph /255 and grey->RGB replication into the first convolution.

    ``conv(concat(s*x, s*x, s*x))`` equals ``conv'(x)`` with
    ``W' = s * W.sum(in_channels)``: one input channel instead of three, and
    no scaling or concat left to quantise (in int8 the first QLinearConv then
    reads the uint8 pixels exactly). The profile of the int8 VGG16 showed
    the first convolution at 29 GMAC/s against ~225 for the others, plus a
    QLinearMul and a QLinearConcat. Only a pure scale folds: with an offset
    (ImageNet's caffe means) zero padding would differ, so the graph is left
    as it is. Returns whether it folded.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            consumers.setdefault(name, []).append(node)
    node = next(iter(consumers.get(graph.input[0].name, [])), None)
    if node is None or node.op_type != "Cast" or len(consumers[graph.input[0].name]) != 1:
        return False
    pixels, scale, dropped = node.output[0], 1.0, []
    while len(nodes := consumers.get(node.output[0], [])) == 1 and nodes[0].op_type in _FOLDABLE:
        node = nodes[0]
        if node.op_type == "Concat":
            if len(set(node.input)) != 1:
                return False
        else:
            const = [numpy_helper.to_array(inits[i]) for i in node.input if i in inits]
            if len(const) != 1 or const[0].size != 1:
                return False
            value = float(const[0])
            if node.op_type == "Mul":
                scale *= value
            elif value != 0.0:  # an offset: padding would not fold
                return False
        dropped.append(node)
    nodes = consumers.get(node.output[0], [])
    if not dropped or len(nodes) != 1 or nodes[0].op_type != "Transpose":
        return False
    transpose = nodes[0]
    conv = consumers.get(transpose.output[0], [None])[0]
    if conv is None or conv.op_type != "Conv" or conv.input[1] not in inits or len(consumers[conv.input[1]]) != 1:
        return False
    weight = numpy_helper.to_array(inits[conv.input[1]])
    folded = (scale * weight.astype(np.float64).sum(axis=1, keepdims=True)).astype(weight.dtype)
    inits[conv.input[1]].CopyFrom(numpy_helper.from_array(folded, conv.input[1]))
    transpose.input[0] = pixels
    for gone in dropped:
        graph.node.remove(gone)
    used = {name for n in graph.node for name in n.input}
    for name in {i for gone in dropped for i in gone.input if i in inits} - used:
        graph.initializer.remove(inits[name])
    return True


def _name_batch_dim(graph) -> None:
    """Call the dynamic batch dimension ``N`` everywhere (tf2onnx names it ``unk__NN``)."""
    old = {v.type.tensor_type.shape.dim[0].dim_param for v in [*graph.input, *graph.output]}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in old - {""}:
                dim.dim_param = "N"


def _onnx_fp32(job: _Job, dest: Path) -> dict:
    shutil.copyfile(job.onnx_fp32, dest)
    return {"exporter": "tf2onnx.convert.from_keras", "opset": OPSET, "transposes": _count_ops(dest, "Transpose")}


def _onnx_fp16(job: _Job, dest: Path) -> dict:
    """fp16 weights and compute, uint8 in and float32 out.

    onnxruntime.transformers' converter, because onnxconverter-common's leaves
    the input Cast at to=FLOAT while declaring its output float16, which ONNX
    Runtime refuses to load.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(onnx.load(str(job.onnx_fp32)), keep_io_types=True)
    onnx.save(half, str(dest))
    return {"converter": "onnxruntime.transformers.float16", "keep_io_types": True}


def _onnx_int8(job: _Job, dest: Path) -> dict:
    """Static QDQ int8; ``reduce_range`` is measured both ways on the held-out data and the better kept."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = job.tmp / "pre.onnx"
    quant_pre_process(str(job.onnx_fp32), str(pre))  # shape inference and fusions (MatMul+Add -> Gemm)
    options = _int8_options(pre)
    trials, rounding = {}, {}
    for reduce_range in (False, True):
        path = job.tmp / f"int8-rr{int(reduce_range)}.onnx"
        _quantize(pre, path, job.calibration, reduce_range, options)
        rounding[reduce_range] = _round_first_conv(pre, path, job.calibration)
        trials[reduce_range] = job.parity("onnx-int8", path)
    choice = min(trials, key=lambda rr: _rank(trials[rr]))  # min() keeps False on a tie: listed first
    shutil.copyfile(job.tmp / f"int8-rr{int(choice)}.onnx", dest)
    return {**_describe_int8(options, len(job.calibration)), "first_conv_rounding": rounding[choice],
            **_reduce_range_record(trials, choice)}


def _round_first_conv(pre: Path, path: Path, images: np.ndarray) -> dict:
    """Round the pixel-reading convolution's int8 weights for the least output error, not to nearest.

    After the grey fold that convolution has one input channel and nine
    weights per filter; its int8 weights were the largest error source of
    the demo VGG16's int8 model (float there: mean |dp| on 192 bench
    phantoms 0.0019 -> 0.0007, but +370 MB at batch 8; this rounding: that
    layer's output MSE / 8, mean |dp| 0.0010, no cost). Keeping the
    quantiser's scales, each filter's weights are rounded up or down,
    whichever of the 2**K choices gives the least mean squared output error
    over the calibration images' input patches, E[(dw . x)^2] =
    dw' E[x x'] dw (AdaRound's objective for one linear layer, solved
    exactly because K is small). Only for filters of at most 12 weights
    (else 2**K is too many); the file is rewritten in place.

    Returns:
        what was done: the node, the number of filters changed and the
        output MSE of nearest rounding over that of the chosen rounding.
    """
    import onnx
    from onnx import numpy_helper

    float_graph, model = onnx.load(str(pre)).graph, onnx.load(str(path))
    pixels = _input_chain(float_graph)[-1:] or [float_graph.input[0].name]
    conv = next((n for n in float_graph.node if n.op_type == "Conv" and n.input[0] == pixels[0]), None)
    if conv is None:
        return {"applied": False, "reason": "no convolution reads the pixels"}
    weight = numpy_helper.to_array(next(i for i in float_graph.initializer if i.name == conv.input[1]))
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    k = weight[0].size
    if k > 12 or attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        return {"applied": False, "reason": f"{k} weights per filter, group {attrs.get('group', 1)}: not searched"}
    qconv = next((n for n in model.graph.node if n.op_type == "Conv" and n.name == conv.name), None)
    dq = next((n for n in model.graph.node if qconv is not None and n.output[0] == qconv.input[1]), None)
    if dq is None or dq.op_type != "DequantizeLinear":
        return {"applied": False, "reason": f"{conv.name} has no int8 weights in the quantised graph"}
    inits = {i.name: i for i in model.graph.initializer}
    q = numpy_helper.to_array(inits[dq.input[0]])
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64).reshape(-1, 1)
    exact = weight.reshape(len(weight), k).astype(np.float64) / scale
    moments = _patch_moments(pre, pixels[0], images, weight.shape[1:], attrs)
    limit = int(np.abs(q).max())
    choices = np.array(np.meshgrid(*[[0.0, 1.0]] * k, indexing="ij")).reshape(k, -1).T  # 2**K x K
    best, nearest_mse, chosen_mse = np.empty_like(exact), 0.0, 0.0
    for c, row in enumerate(exact):
        cand = np.floor(row) + choices
        err = cand - row
        mse = np.einsum("ij,jk,ik->i", err, moments, err)
        mse[np.abs(cand).max(axis=1) > limit] = np.inf
        best[c] = cand[int(np.argmin(mse))]
        near = np.round(row) - row
        nearest_mse, chosen_mse = nearest_mse + near @ moments @ near, chosen_mse + float(mse.min())
    new = best.reshape(q.shape).astype(q.dtype)
    inits[dq.input[0]].CopyFrom(numpy_helper.from_array(new, dq.input[0]))
    onnx.save(model, str(path))
    changed = int(np.any(new.reshape(len(new), -1) != np.round(exact).astype(q.dtype), axis=1).sum())
    return {"applied": True, "node": conv.name, "filters_changed": changed, "filters": len(exact),
            "output_mse_nearest_over_chosen": round(float(nearest_mse / max(chosen_mse, 1e-30)), 3)}


def _patch_moments(model: Path, tensor: str, images: np.ndarray, kernel: tuple, attrs: dict) -> np.ndarray:
    """E[x x'] over every input patch the convolution sees (zero padding included), K x K."""
    import onnx
    import onnx.utils
    import onnxruntime as ort

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(model)))
    head = onnx.utils.Extractor(proto).extract_model([proto.graph.input[0].name], [tensor])  # only the input chain
    session = ort.InferenceSession(head.SerializeToString(), providers=["CPUExecutionProvider"])
    channels, kh, kw = kernel
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    sh, sw = attrs.get("strides", [1, 1])
    total, count = np.zeros((channels * kh * kw,) * 2), 0
    for start in range(0, len(images), 16):
        x = session.run([tensor], {session.get_inputs()[0].name: images[start:start + 16]})[0].astype(np.float64)
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        h, w = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
        cols = np.stack([x[:, c, i:i + sh * h:sh, j:j + sw * w:sw].ravel()
                         for c in range(channels) for i in range(kh) for j in range(kw)])
        total += cols @ cols.T
        count += cols.shape[1]
    return total / count


def _int8_options(pre: Path) -> dict:
    """Float tail and pinned input scales for ``quantize_static``, found in the pre-processed graph."""
    import onnx

    graph = onnx.load(str(pre)).graph
    return {"nodes_to_exclude": _float_tail(graph),
            "extra_options": {"TensorQuantOverrides": _input_overrides(pre, _input_chain(graph))}}


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


def _input_chain(graph) -> list[str]:
    """Tensors from the ``image`` Cast up to the first Conv: the in-graph scaling and grey->RGB."""
    consumers: dict[str, dict] = {}  # tensor -> {node name: node}; Concat reads one tensor three times
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, {})[node.name] = node
    chain, tensor = [], graph.input[0].name
    while len(nodes := list(consumers.get(tensor, {}).values())) == 1 and nodes[0].op_type != "Conv":
        tensor = nodes[0].output[0]
        chain.append(tensor)
    return chain


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


def _quantize(pre: Path, path: Path, images: np.ndarray, reduce_range: bool, options: dict) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    # MinMax: Entropy gave identical scales on VGG16 and Percentile clipped (spike, issue 4).
    quantize_static(str(pre), str(path), _Calibration(images), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, **options)


class _Calibration:
    """ONNX Runtime calibration reader over uint8 slices, exactly what the engine feeds."""

    def __init__(self, images: np.ndarray, batch: int = 16) -> None:
        self.batches = [images[k:k + batch] for k in range(0, len(images), batch)]
        self.next = iter(self.batches)

    def get_next(self) -> dict | None:
        batch = next(self.next, None)
        return None if batch is None else {"image": batch}

    def rewind(self) -> None:
        self.next = iter(self.batches)


def _rank(parity: dict) -> tuple:
    """Sort key, best first: within the int8 tolerance, then mean |dp|, then max |dp|.

    Mean |dp| over every held-out slice is the steadiest measure of the
    quantisation error. Label agreement hangs on the few slices nearest the
    threshold: on the demo VGG16 a single slice of 324 decided between two
    settings whose mean |dp| differed by 10-25 %.
    """
    from dataclasses import asdict

    from asinfer.trainer._parity import _verdict

    limits = {name: limit for name, limit in asdict(FORMATS["onnx-int8"].tolerance).items() if limit is not None}
    within = all(_verdict(name, limit, parity)[0] for name, limit in limits.items())
    return not within, parity["mean_abs_dp"], parity["max_abs_dp"]


def _describe_int8(options: dict, calibration: int) -> dict:
    return {"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ", "per_channel": True,
            "activations": "uint8", "weights": "int8", "calibration": "MinMax", "calibration_slices": calibration,
            "float_nodes": options["nodes_to_exclude"],
            "pinned_tensors": sorted(options["extra_options"]["TensorQuantOverrides"])}


def _reduce_range_record(trials: dict, choice: bool) -> dict:
    cpu = _cpu()
    numbers = {str(rr): {k: trials[rr][k] for k in ("max_abs_dp", "mean_abs_dp", "agreement", "dauc")}
               for rr in trials}
    reason = (f"reduce_range={choice} gave the better held-out parity (within tolerance, then mean|dp|, then "
              f"max|dp|; False on a tie) on this {cpu['machine']} CPU ({'with' if cpu['vnni'] else 'without'} VNNI). "
              f"On AVX2 CPUs without VNNI, u8s8 with reduce_range=False can saturate: measure there before "
              f"deploying to one.")
    return {"reduce_range": choice, "reduce_range_trials": numbers, "reduce_range_reason": reason, "cpu": cpu}


def _cpu() -> dict:
    found = machine(("avx512_vnni", "avx_vnni"))
    return {"machine": found["arch"], "vnni": any(found["flags"].values())}


def _count_ops(path: Path, op_type: str) -> int:
    import onnx

    return sum(node.op_type == op_type for node in onnx.load(str(path)).graph.node)


def _predict_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities from ONNX Runtime on CPU, with the engine's session settings."""
    from asinfer.engine._providers import PROVIDERS, create_session

    session = create_session(path.read_bytes(), PROVIDERS["cpu"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[k:k + BATCH]})[0].reshape(-1)
                           for k in range(0, len(images), BATCH)])


# --- LiteRT --------------------------------------------------------------------------------------------------


def _tflite(precision: str, job: _Job, dest: Path) -> dict:
    """LiteRT from the Keras model (from_concrete_functions yields a variable-less, broken file)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(job.model)
    settings = _TFLITE_SETUP[precision](converter, job)
    dest.write_bytes(converter.convert())
    return {"converter": "tf.lite.TFLiteConverter.from_keras_model", **settings}


def _tflite_fp32(converter, job: _Job) -> dict:
    return {}


def _tflite_fp16(converter, job: _Job) -> dict:
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return {"supported_types": ["float16"]}


def _tflite_int8(converter, job: _Job) -> dict:
    """Full-integer int8: uint8 input as the contract says, float32 output from the model's dequantise."""
    import tensorflow as tf

    images = job.calibration
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([images[k:k + 8]] for k in range(0, len(images), 8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    return {"full_integer": True, "input": "uint8", "output": "float32", "representative_slices": len(images)}


_TFLITE_SETUP = {"fp32": _tflite_fp32, "fp16": _tflite_fp16, "int8": _tflite_int8}


def _predict_litert(path: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities from the LiteRT interpreter, resized to each batch."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=2)
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    probs = []
    for k in range(0, len(images), BATCH):
        batch = images[k:k + BATCH]
        interpreter.resize_tensor_input(inp, batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp, batch)
        interpreter.invoke()
        probs.append(interpreter.get_tensor(out).reshape(-1).copy())
    return np.concatenate(probs)


# --- the tables ----------------------------------------------------------------------------------------------

#: format name -> converter(job, destination) -> settings recorded in the manifest's parity entry.
CONVERTERS: dict[str, Callable[[_Job, Path], dict]] = {
    "onnx-fp32": _onnx_fp32,
    "onnx-fp16": _onnx_fp16,
    "onnx-int8": _onnx_int8,
    "tflite-fp32": functools.partial(_tflite, "fp32"),
    "tflite-fp16": functools.partial(_tflite, "fp16"),
    "tflite-int8": functools.partial(_tflite, "int8"),
}
_PREDICTORS = {"onnxruntime": _predict_onnx, "litert": _predict_litert}

# A format added to the table without a converter (or a stale converter) must fail at import, not mid-run.
if set(CONVERTERS) != set(FORMATS) - {"keras"} or {FORMATS[f].runtime for f in CONVERTERS} - set(_PREDICTORS):
    raise ImportError(f"asinfer.trainer.convert is out of step with engine.FORMATS: converters for {sorted(CONVERTERS)}, "
                      f"formats {sorted(FORMATS)}; add the missing converter or predictor")
