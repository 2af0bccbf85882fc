"""Graph surgery for Grad-CAM: expose the feature map the head pools, and the head's weights.

The classifier ends GAP -> Dense(ReLU) -> Dense(sigmoid). Grad-CAM needs the
tensor the global average pool reads (``features``, NCHW, float) and the two
Dense layers' weights; they become extra graph outputs, so the engine needs
no onnx package and no file beside the hash-verified artifact:

    features     [N, C, H, W]   what GlobalAveragePool reads (in int8 graphs: a second
                                DequantizeLinear of the same quantised tensor, so the
                                int8 path and its fusions stay as they were)
    head_w1      the first Dense's weight, float (dequantised in int8 graphs)
    head_b1      its bias
    head_w2      the output Dense's weight

Probabilities must not change: :func:`add_explanation_outputs` only adds nodes
and outputs, and callers check the probabilities are bit-identical.
"""

from __future__ import annotations

from pathlib import Path

OUTPUTS = ("features", "head_w1", "head_b1", "head_w2")
_POOLS = ("GlobalAveragePool", "ReduceMean")
_DENSE = ("Gemm", "MatMul")


def add_explanation_outputs(path: Path) -> dict:
    """Rewrite the ONNX file at ``path`` with the :data:`OUTPUTS`; returns what was found (for the record).

    Raises:
        ValueError: the graph has no GAP -> Dense -> Dense head (naming what was found instead).
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    if {o.name for o in graph.output} & set(OUTPUTS):
        return {"applied": False, "reason": "already has the explanation outputs"}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    pool = next((n for n in graph.node if n.op_type in _POOLS), None)
    if pool is None:
        raise ValueError("no GlobalAveragePool/ReduceMean in the graph: not the GAP -> Dense -> Dense head")
    dense = _following_dense(pool.output[0], consumers, 2)
    if len(dense) != 2:
        raise ValueError(f"expected two Dense layers after the pool, found {[n.op_type for n in dense]}")
    features = _float_features(pool.input[0], producers, graph, helper)
    bias = _bias(dense[0], consumers)
    sources = {"features": features, "head_w1": dense[0].input[1], "head_b1": bias, "head_w2": dense[1].input[1]}
    for name, tensor in sources.items():
        graph.node.append(helper.make_node("Identity", [tensor], [name], name=f"explain_{name}"))
        graph.output.append(onnx.ValueInfoProto(name=name))
    onnx.save(model, str(path))
    return {"applied": True, "outputs": list(OUTPUTS), "pool": pool.name, "dense": [n.name for n in dense]}


def _following_dense(tensor: str, consumers: dict, count: int) -> list:
    """The first ``count`` Gemm/MatMul nodes downstream of ``tensor``, in order, following single consumers."""
    found = []
    while len(found) < count:
        nodes = consumers.get(tensor, [])
        if len(nodes) != 1:
            break
        node = nodes[0]
        if node.op_type in _DENSE:
            found.append(node)
        tensor = node.output[0]
    return found


def _bias(dense, consumers: dict) -> str:
    """The first Dense's bias: Gemm's C input, or the constant of the Add after a MatMul."""
    if dense.op_type == "Gemm" and len(dense.input) > 2:
        return dense.input[2]
    add = next((n for n in consumers.get(dense.output[0], []) if n.op_type == "Add"), None)
    if add is None:
        raise ValueError(f"no bias after {dense.name}")
    return next(i for i in add.input if i != dense.output[0])


def _float_features(tensor: str, producers: dict, graph, helper) -> str:
    """The pooled tensor as float: itself, or in a QDQ graph a second DequantizeLinear of its quantised source."""
    node = producers.get(tensor)
    if node is None or node.op_type != "DequantizeLinear":
        return tensor
    name = f"{tensor}_explain"
    graph.node.append(helper.make_node("DequantizeLinear", list(node.input), [name], name=f"{node.name}_explain",
                                       **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
    return name
