"""Converter: a tiny trained run -> every format -> parity -> engine round trips.

One 32x32 VGG16 run is trained for two steps and converted once per module;
the tests read what that conversion wrote.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_tf

from asinfer import engine
from asinfer.engine import FORMATS

pytestmark = requires_tf

SIZE = 32
ONNX_FORMATS = [name for name, fmt in FORMATS.items() if fmt.runtime == "onnxruntime"]


def _batch(seed: int, patients: int, slices: int) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed phantom slices (uint8 [N,32,32,1]), half of them dimmed and labelled 1.

    Two training steps cannot learn sacroiliitis at 32x32, and a model that
    ranks slices by noise would make AUC parity a coin toss. Brightness is
    something even an untrained ReLU net ranks, so the labels are separable
    and the parity numbers measure the conversion, not luck.
    """
    from asinfer.trainer.phantoms import generate_series

    pre = engine.Preprocessor(size=(SIZE, SIZE), threads=1)
    images = np.concatenate([pre(list(generate_series(seed + k, slices=slices, size=64,
                                                      positive=bool(k % 2)).images)) for k in range(patients)])
    labels = np.arange(len(images)) % 2
    images[labels == 1] = (images[labels == 1] * 0.4).astype(np.uint8)
    return images, labels.astype(np.int8)


def _threshold(p: np.ndarray, labels: np.ndarray) -> float:
    """Midway between the classes' predictions (the tiny model's Youden point)."""
    lo, hi = sorted([p[labels == 0], p[labels == 1]], key=np.mean)
    return float((lo.max() + hi.min()) / 2) if lo.max() < hi.min() else float(np.median(p))


def _write_run(run_dir):
    """A run folder as training writes it, from a 32x32 model trained for two steps."""
    import keras

    from asinfer.trainer.bundle import write_bundle
    from asinfer.trainer.model import build_model

    train, train_labels = _batch(100, 2, 8)
    holdout, labels = _batch(200, 4, 6)
    model = build_model(SIZE, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="binary_crossentropy")  # gentle: keep the ranking
    for _ in range(2):
        model.train_on_batch(train, train_labels.astype(np.float32))
    model.save(run_dir / "model.keras")
    np.savez(run_dir / "holdout.npz", images=holdout, labels=labels)
    np.savez(run_dir / "calibration.npz", images=train)
    (run_dir / "MODEL_CARD.md").write_text("# tiny test model\nSynthetic; not a diagnostic device.\n")
    (run_dir / "roc.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (run_dir / "train_config.json").write_text("{}\n")
    threshold = _threshold(model.predict(holdout, verbose=0).reshape(-1), labels)
    manifest = engine.Manifest(name="convert-test", version="0.0.1", threshold=threshold,
                               input=engine.InputSpec(height=SIZE, width=SIZE), training={"steps": 2})
    write_bundle(run_dir, manifest, {"keras": "model.keras"})


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(run_dir, out, manifest returned for out, progress lines): every format converted once."""
    from asinfer.trainer.convert import convert

    root = tmp_path_factory.mktemp("convert") / "path with spaces"
    run_dir, out = root / "run", root / "bundle"
    run_dir.mkdir(parents=True)
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _write_run(run_dir)
        manifest = convert(run_dir, out=out, progress=lines.append)
    return run_dir, out, manifest, lines


def test_every_format_passes_parity_and_is_recorded(converted):
    run_dir, _, _, lines = converted
    manifest = engine._manifest.read_manifest(run_dir / "manifest.json")
    targets = [name for name in FORMATS if name != "keras"]
    assert sorted(a.format for a in manifest.artifacts) == sorted(FORMATS)
    for name in targets:
        record = manifest.parity[name]
        assert record["passed"] and record["n"] == 24, name
        assert record["tolerance"] == FORMATS[name].tolerance.__dict__
        assert record["auc"] is not None and record["dauc"] is not None
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"} <= set(manifest.tools)
    assert manifest.training == {"steps": 2}  # training's record survives the rewrite
    assert any(line.startswith("onnx-int8: ") and "agreement" in line for line in lines)


@pytest.mark.parametrize("fmt", ONNX_FORMATS)
def test_onnx_artifacts_reload_in_the_engine(converted, fmt):
    run_dir, _, _, _ = converted
    holdout = np.load(run_dir / "holdout.npz")["images"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import keras

        reference = keras.models.load_model(run_dir / "model.keras").predict(holdout, verbose=0).reshape(-1)
    clf = engine.load(run_dir, provider="cpu", artifact=fmt, threads=1)
    dp = np.abs(clf.run(holdout) - reference).max()
    assert dp == pytest.approx(clf.manifest.parity[fmt]["max_abs_dp"], rel=1e-3, abs=1e-6)


def test_onnx_graph_contract(converted):
    import onnx

    run_dir = converted[0]
    graph = onnx.load(str(run_dir / FORMATS["onnx-fp32"].filename)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["probability"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    ops = collections.Counter(n.op_type for n in graph.node)
    # NHWC input, NCHW convolutions: exactly one Transpose is unavoidable.
    assert ops["Transpose"] == 1
    # Batch norm is folded into the 13 convolutions, not left as per-conv arithmetic.
    assert ops["Conv"] == 13 and ops["BatchNormalization"] == 0 and ops["Add"] + ops["Mul"] < 13
    # /255 and grey->RGB are folded into the first convolution: it reads one channel.
    first = next(n for n in graph.node if n.op_type == "Conv")
    weights = {i.name: i for i in graph.initializer}
    assert ops["Concat"] == 0 and list(weights[first.input[1]].dims)[:2] == [64, 1]


def test_int8_settings_say_what_was_chosen_and_why(converted):
    import onnx

    settings = converted[2].parity["onnx-int8"]["settings"]
    assert settings["reduce_range"] in (False, True)
    assert set(settings["reduce_range_trials"]) == {"False", "True"}
    assert "VNNI" in settings["reduce_range_reason"]
    assert any("Sigmoid" in name for name in settings["float_nodes"])
    assert any("MatMul" in name or "Gemm" in name for name in settings["float_nodes"])
    graph = onnx.load(str(converted[0] / FORMATS["onnx-int8"].filename)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert convs and all(n.input[1] in dequantized for n in convs)  # every convolution reads int8 weights
    rounding = settings["first_conv_rounding"]
    assert rounding["applied"] and rounding["node"] == convs[0].name
    assert rounding["output_mse_nearest_over_chosen"] >= 1.0
    assert len(settings["pinned_tensors"]) >= 2  # Cast and the Transpose: the uint8 pixels, exactly


def _pixel_conv_models(tmp_path, weight, scale):
    """A float graph uint8 image -> Cast -> Transpose -> Conv 3x3, and its QDQ twin with int8 weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def model(weight_nodes, inits, name):
        nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
                 helper.make_node("Transpose", ["f"], ["x"], perm=[0, 3, 1, 2]), *weight_nodes,
                 helper.make_node("Conv", ["x", "w"], ["y"], name="pixels", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 8, 8, 1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        path = tmp_path / name
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path

    nearest = np.round(weight / scale).astype(np.int8)
    pre = model([], [numpy_helper.from_array(weight, "w")], "pre.onnx")
    qdq = model([helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0)],
                [numpy_helper.from_array(nearest, "wq"), numpy_helper.from_array(np.array([scale], np.float32), "ws"),
                 numpy_helper.from_array(np.zeros(1, np.int8), "wz")], "int8.onnx")
    return pre, qdq, nearest


def test_first_conv_rounding_cancels_the_error_nearest_rounding_leaves():
    """Eight weights each 0.4 step above an integer: nearest rounds all down, an error of 3.2 steps on flat
    patches; the searched rounding lifts three of them and leaves 0.2 step, and the file still loads."""
    import tempfile

    import onnx
    from onnx import numpy_helper

    from asinfer.trainer.convert import _round_first_conv

    scale = 0.01
    weight = np.full((1, 1, 3, 3), 10.4 * scale, np.float32)
    weight[0, 0, 0, 0] = 127 * scale  # the quantiser's max: scale = max|w| / 127
    images = np.full((4, 8, 8, 1), 200, np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        pre, qdq, nearest = _pixel_conv_models(Path(tmp), weight, scale)
        record = _round_first_conv(pre, qdq, images)
        chosen = numpy_helper.to_array(next(i for i in onnx.load(str(qdq)).graph.initializer if i.name == "wq"))
        import onnxruntime as ort

        ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"]).run(None, {"image": images})
    exact = weight / scale
    assert abs(float(nearest.sum() - exact.sum())) > 3
    assert abs(float(chosen.astype(float).sum() - exact.sum())) <= 0.5
    assert np.abs(chosen.astype(int) - exact).max() < 1 and chosen.max() <= 127  # only floor or ceil, in range
    assert record["applied"] and record["filters_changed"] == 1 and record["output_mse_nearest_over_chosen"] > 10


def test_int8_trials_rank_by_mean_error_within_tolerance():
    """One lucky slice of agreement must not beat a 25 % lower mean error; a failing trial always loses."""
    from asinfer.trainer.convert import _rank

    def trial(agreement, mean, dauc=0.0):
        return {"agreement": agreement, "mean_abs_dp": mean, "max_abs_dp": 10 * mean, "dauc": dauc,
                "abs_dauc": abs(dauc), "auc": 0.9}

    lucky, steady, failing = trial(0.9969, 0.00105), trial(0.9938, 0.00084), trial(0.98, 0.0001)
    assert sorted([lucky, failing, steady], key=_rank) == [steady, lucky, failing]
    assert _rank(trial(0.999, 0.0001, dauc=0.02)) > _rank(lucky)  # |dAUC| over the limit fails too


def test_out_bundle_holds_only_shipped_formats(converted):
    _, out, manifest, _ = converted
    shipped = {name for name, fmt in FORMATS.items() if fmt.shipped}
    assert {a.format for a in manifest.artifacts} == shipped
    assert {p.name for p in out.iterdir()} == {FORMATS[f].filename for f in shipped} | {
        "manifest.json", "MODEL_CARD.md", "roc.png", "train_config.json"}
    assert set(manifest.parity) == set(FORMATS) - {"keras"}  # parity of every format kept
    assert engine.verify(out) == {f: "ok" for f in shipped}
    clf = engine.load(out, provider="cpu", threads=1)
    assert clf.artifact.format == "onnx-int8"


def test_lone_onnx_describes_itself(converted):
    _, out, _, _ = converted
    clf = engine.load(out / FORMATS["onnx-int8"].filename, provider="cpu", threads=1)
    assert clf.artifact.format == "onnx-int8" and clf.manifest.name == "convert-test"
    assert clf.manifest.parity["onnx-int8"]["passed"]


def test_broken_conversion_fails_with_the_numbers(converted, tmp_path, monkeypatch):
    from asinfer.trainer import convert as conv

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("manifest.json", "model.keras", "holdout.npz", "calibration.npz"):
        shutil.copy2(converted[0] / name, run_dir / name)
    original = conv.CONVERTERS["onnx-fp32"]

    def perturbed(job, dest):  # a conversion bug: one conv weight comes out wrong
        settings = original(job, dest)
        _scale_first_conv(dest, 1.5)
        return settings

    monkeypatch.setitem(conv.CONVERTERS, "onnx-fp32", perturbed)
    before = (run_dir / "manifest.json").read_text()
    with pytest.raises(conv.ParityError, match=r"onnx-fp32 .*max_abs_dp [0-9.e-]+ FAILS <= 0\.0001"):
        conv.convert(run_dir, ["onnx-fp32"])
    assert (run_dir / "manifest.json").read_text() == before  # the bad file is not recorded


def test_format_names_are_checked():
    from asinfer.trainer.convert import convert

    with pytest.raises(ValueError, match="Did you mean 'onnx-int8'"):
        convert("nowhere", ["onnx-int9"])
    with pytest.raises(ValueError, match="source, not a target"):
        convert("nowhere", ["keras"])


def test_every_format_has_a_converter():
    from asinfer.trainer.convert import CONVERTERS

    assert set(CONVERTERS) == set(FORMATS) - {"keras"}


def test_import_does_not_load_tensorflow():
    code = ("import sys, trainer.convert; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_calibration_from_a_dataset_folder(tmp_path):
    from asinfer.trainer.convert import _calibration_images
    from asinfer.trainer.phantoms import write_dataset

    write_dataset(tmp_path / "data", patients=2, slices=2, size=64)
    manifest = engine.Manifest(name="t", version="0", input=engine.InputSpec(height=SIZE, width=SIZE))
    images = _calibration_images(tmp_path, tmp_path / "data", manifest)
    assert images.shape == (4, SIZE, SIZE, 1) and images.dtype == np.uint8


def test_formats_done_before_a_parity_failure_stay_recorded(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from asinfer.trainer import convert as conv

    def write(job, dest):
        dest.write_bytes(b"stand-in")
        return {"fake": True}

    ref = np.linspace(0.1, 0.9, 8)
    labels = (ref > 0.5).astype(np.int8)
    good = conv.measure(ref, ref, labels, 0.5)
    bad = conv.measure(ref, ref + 0.2, labels, 0.5)
    job = SimpleNamespace(run_dir=tmp_path, manifest=engine.Manifest(name="t", version="0"), progress=lambda s: None,
                          parity=lambda fmt, path: good if fmt == "tflite-fp32" else bad)
    monkeypatch.setitem(conv.CONVERTERS, "tflite-fp32", write)
    monkeypatch.setitem(conv.CONVERTERS, "tflite-fp16", write)
    with pytest.raises(conv.ParityError, match=r"tflite-fp16 .*max_abs_dp 0\.2 FAILS <= 0\.01"):
        conv._convert_all(job, ["tflite-fp32", "tflite-fp16"])
    written = engine._manifest.read_manifest(tmp_path / "manifest.json")
    assert [a.format for a in written.artifacts] == ["tflite-fp32"]
    assert set(written.parity) == {"tflite-fp32"} and written.parity["tflite-fp32"]["settings"] == {"fake": True}


def test_cli_convert_prints_parity_and_exits_3_on_failure(converted, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from asinfer.engine.cli import app
    from asinfer.trainer import convert as conv

    run_dir = tmp_path / "cli run"
    run_dir.mkdir()
    for name in ("manifest.json", "model.keras", "holdout.npz", "calibration.npz"):
        shutil.copy2(converted[0] / name, run_dir / name)
    runner = CliRunner()
    ok = runner.invoke(app, ["convert", str(run_dir), "--formats", "onnx-fp32"])
    assert ok.exit_code == 0, ok.output
    assert "onnx-fp32" in ok.stdout and "True" in ok.stdout

    original = conv.CONVERTERS["onnx-fp32"]

    def off_by_a_bit(job, dest):
        settings = original(job, dest)
        _scale_first_conv(dest, 2.0)
        return settings

    monkeypatch.setitem(conv.CONVERTERS, "onnx-fp32", off_by_a_bit)
    bad = runner.invoke(app, ["convert", str(run_dir), "--formats", "onnx-fp32"])
    assert bad.exit_code == 3
    assert "parity check failed" in bad.stderr and "FAILS" in bad.stderr
    assert runner.invoke(app, ["convert", str(run_dir), "--formats", "onnx-int9"]).exit_code == 2


def _scale_first_conv(path, factor: float) -> None:
    """Simulate a conversion bug: scale the first convolution's weights in an ONNX file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    weight = next(i for i in model.graph.initializer if i.dims and len(i.dims) == 4)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * factor, weight.name))
    onnx.save(model, str(path))
