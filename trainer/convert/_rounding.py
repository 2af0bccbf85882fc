"""The exact rounding search for the int8 weights of the convolution that reads the pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._onnx import input_chain

MAX_SEARCHED_WEIGHTS = 12  # weights per filter; 2**K candidate roundings each


def round_first_conv(pre: Path, path: Path, images: np.ndarray) -> dict:
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

    Args:
        pre: the float graph the quantiser read (pre-processed).
        path: the quantised QDQ graph; rewritten in place.
        images: uint8 [M,H,W,1] calibration slices.

    Returns:
        what was done: the node, the number of filters changed and the
        output MSE of nearest rounding over that of the chosen rounding
        (or ``applied: False`` and the reason).
    """
    import onnx
    from onnx import numpy_helper

    float_graph, model = onnx.load(str(pre)).graph, onnx.load(str(path))
    found = _pixel_conv(float_graph, model.graph)
    if isinstance(found, str):
        return {"applied": False, "reason": found}
    conv, pixels, weight, attrs, dq = found
    inits = {i.name: i for i in model.graph.initializer}
    q = numpy_helper.to_array(inits[dq.input[0]])
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64).reshape(-1, 1)
    exact = weight.reshape(len(weight), -1).astype(np.float64) / scale
    mirror = mirror_permutation(weight.shape[1:])
    moments = _patch_moments(pre, pixels, images, weight.shape[1:], attrs)
    moments = (moments + moments[np.ix_(mirror, mirror)]) / 2  # the calibration slices and their mirrors
    best, nearest_mse, chosen_mse = search_rounding(exact, moments, int(np.abs(q).max()), mirror)
    new = best.reshape(q.shape).astype(q.dtype)
    inits[dq.input[0]].CopyFrom(numpy_helper.from_array(new, dq.input[0]))
    onnx.save(model, str(path))
    changed = int(np.any(new.reshape(len(new), -1) != np.round(exact).astype(q.dtype), axis=1).sum())
    return {"applied": True, "node": conv.name, "filters_changed": changed, "filters": len(exact),
            "output_mse_nearest_over_chosen": round(float(nearest_mse / max(chosen_mse, 1e-30)), 3)}


def _pixel_conv(float_graph, quantised_graph) -> tuple | str:
    """The convolution reading the pixels and its weight DequantizeLinear, or why it is not searched.

    Returns:
        ``(conv, pixel tensor, float weight, conv attributes, DequantizeLinear)``
        or a reason string.
    """
    import onnx
    from onnx import numpy_helper

    pixels = input_chain(float_graph)[-1:] or [float_graph.input[0].name]
    conv = next((n for n in float_graph.node if n.op_type == "Conv" and n.input[0] == pixels[0]), None)
    if conv is None:
        return "no convolution reads the pixels"
    weight = numpy_helper.to_array(next(i for i in float_graph.initializer if i.name == conv.input[1]))
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    k = weight[0].size
    if k > MAX_SEARCHED_WEIGHTS or attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        return f"{k} weights per filter, group {attrs.get('group', 1)}: not searched"
    qconv = next((n for n in quantised_graph.node if n.op_type == "Conv" and n.name == conv.name), None)
    dq = next((n for n in quantised_graph.node if qconv is not None and n.output[0] == qconv.input[1]), None)
    if dq is None or dq.op_type != "DequantizeLinear":
        return f"{conv.name} has no int8 weights in the quantised graph"
    return conv, pixels[0], weight, attrs, dq


def mirror_permutation(kernel: tuple) -> np.ndarray:
    """The order of a flattened ``(channels, kh, kw)`` filter's weights mirrored left-right."""
    return np.arange(int(np.prod(kernel))).reshape(kernel)[:, :, ::-1].ravel()


def search_rounding(exact: np.ndarray, moments: np.ndarray, limit: int,
                    mirror: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """Per filter, the floor/ceil rounding of ``exact`` with the least ``dw' M dw``.

    A filter that is another's left-right mirror (``mirror`` given; mirror-tied models,
    asinfer.trainer.mirror) gets that filter's rounding mirrored, so the int8 graph keeps the
    tie exactly; with moments symmetric under the mirror that rounding is as good as its own.

    Args:
        exact: [filters, K] weights in quantisation steps (float).
        moments: K x K second moments of the input patches, E[x x'].
        limit: the largest |integer| allowed (the quantiser's range).
        mirror: the permutation of a filter's K weights that mirrors it (:func:`mirror_permutation`).

    Returns:
        ``(chosen integers as float [filters, K], output MSE of nearest rounding, of the chosen)``.
    """
    k = exact.shape[1]
    choices = np.array(np.meshgrid(*[[0.0, 1.0]] * k, indexing="ij")).reshape(k, -1).T  # 2**K x K
    best, nearest_mse, chosen_mse = np.empty_like(exact), 0.0, 0.0
    for c, row in enumerate(exact):
        twin = _mirror_twin(exact, c, mirror)
        if twin is not None:
            best[c] = best[twin][mirror]
        else:
            cand = np.floor(row) + choices
            err = cand - row
            mse = np.einsum("ij,jk,ik->i", err, moments, err)
            mse[np.abs(cand).max(axis=1) > limit] = np.inf
            best[c] = cand[int(np.argmin(mse))]
        near, err = np.round(row) - row, best[c] - row
        nearest_mse, chosen_mse = nearest_mse + near @ moments @ near, chosen_mse + float(err @ moments @ err)
    return best, nearest_mse, chosen_mse


def _mirror_twin(exact: np.ndarray, c: int, mirror: np.ndarray | None) -> int | None:
    """An earlier filter whose mirror is filter ``c``, if any."""
    if mirror is None or c == 0:
        return None
    same = np.all(np.abs(exact[:c, mirror] - exact[c]) <= 1e-6, axis=1)
    return int(np.argmax(same)) if same.any() else None


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
