"""ONNX export (tf2onnx) with the grey-input fold and a named batch dimension; the fp32 and fp16 converters."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ._job import Job

OPSET = 17
_FOLDABLE = {"Mul", "Add", "Concat"}


def export_onnx(model, size: tuple[int, int], path: Path) -> Path:
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
    name_batch_dim(proto.graph)
    fold_grey_input(proto.graph)
    outputs = [o.name for o in proto.graph.output]
    if outputs != ["probability"]:  # from_keras takes it from the output layer's name
        raise ValueError(f"exported outputs {outputs}; the model's output layer must be named 'probability'")
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def fold_grey_input(graph) -> bool:
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
    consumers = _consumers(graph)
    chain = _scale_chain(graph, consumers, inits)
    if chain is None:
        return False
    pixels, scale, dropped, transpose, conv = chain
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


def _consumers(graph) -> dict[str, list]:
    """tensor name -> the nodes reading it (each node once, though Concat reads one tensor thrice)."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            consumers.setdefault(name, []).append(node)
    return consumers


def _scale_chain(graph, consumers: dict[str, list], inits: dict) -> tuple | None:
    """``Cast -> (Mul | Add 0 | Concat of one tensor)+ -> Transpose -> Conv``, or None where it does not fold.

    Returns:
        ``(pixels, scale, dropped nodes, transpose, conv)``: the Cast's output,
        the product of the scales, the nodes to remove and the two kept.
    """
    from onnx import numpy_helper

    node = next(iter(consumers.get(graph.input[0].name, [])), None)
    if node is None or node.op_type != "Cast" or len(consumers[graph.input[0].name]) != 1:
        return None
    pixels, scale, dropped = node.output[0], 1.0, []
    while len(nodes := consumers.get(node.output[0], [])) == 1 and nodes[0].op_type in _FOLDABLE:
        node = nodes[0]
        if node.op_type == "Concat":
            if len(set(node.input)) != 1:
                return None
        else:
            const = [numpy_helper.to_array(inits[i]) for i in node.input if i in inits]
            if len(const) != 1 or const[0].size != 1:
                return None
            value = float(const[0])
            if node.op_type == "Mul":
                scale *= value
            elif value != 0.0:  # an offset: padding would not fold
                return None
        dropped.append(node)
    nodes = consumers.get(node.output[0], [])
    if not dropped or len(nodes) != 1 or nodes[0].op_type != "Transpose":
        return None
    transpose = nodes[0]
    conv = consumers.get(transpose.output[0], [None])[0]
    if conv is None or conv.op_type != "Conv" or conv.input[1] not in inits or len(consumers[conv.input[1]]) != 1:
        return None
    return pixels, scale, dropped, transpose, conv


def name_batch_dim(graph) -> None:
    """Call the dynamic batch dimension ``N`` everywhere (tf2onnx names it ``unk__NN``)."""
    old = {v.type.tensor_type.shape.dim[0].dim_param for v in [*graph.input, *graph.output]}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in old - {""}:
                dim.dim_param = "N"


def input_chain(graph) -> list[str]:
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


def count_ops(path: Path, op_type: str) -> int:
    """Nodes of ``op_type`` in the ONNX file ``path``."""
    import onnx

    return sum(node.op_type == op_type for node in onnx.load(str(path)).graph.node)


def onnx_fp32(job: Job, dest: Path) -> dict:
    """The export as it is."""
    shutil.copyfile(job.onnx_fp32, dest)
    return {"exporter": "tf2onnx.convert.from_keras", "opset": OPSET, "transposes": count_ops(dest, "Transpose")}


def onnx_fp16(job: Job, dest: Path) -> dict:
    """fp16 weights and compute, uint8 in and float32 out; the pixel-reading convolution stays fp32.

    onnxruntime.transformers' converter, because onnxconverter-common's leaves
    the input Cast at to=FLOAT while declaring its output float16, which ONNX
    Runtime refuses to load. The first convolution reads raw 0..255 values
    (the /255 is folded into its weights): in fp16 its sums lose enough to
    move a probability by 0.011 (v2 at 112 px, 1,000 parity slices; the
    limit is 0.01); kept in fp32 (under 2 % of VGG16's work) the largest
    change was 8.5e-4. Every other layer is fp16.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(job.onnx_fp32))
    first_conv = next((n.name for n in model.graph.node if n.op_type == "Conv"), None)
    keep = [first_conv] if first_conv else []
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep or None)
    onnx.save(half, str(dest))
    return {"converter": "onnxruntime.transformers.float16", "keep_io_types": True, "fp32_nodes": keep}
