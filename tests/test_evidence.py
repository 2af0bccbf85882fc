"""Grad-CAM: the closed form against a numerical gradient and against TensorFlow's GradientTape; overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asinfer import engine
from asinfer.engine import Head, grad_cam

from conftest import requires_tf


def _logit(a: np.ndarray, head: Head, b2: float = 0.3) -> float:
    g = a.mean(axis=(1, 2))
    return float(np.maximum(g @ head.w1 + head.b1, 0) @ head.w2 + b2)


def test_closed_form_equals_grad_cam_by_numerical_gradient():
    """alpha = spatial mean of dz/dA, computed by finite differences on a random head: the derivation holds."""
    rng = np.random.default_rng(0)
    c, h, w, j = 6, 3, 4, 5
    head = Head(rng.normal(size=(c, j)).astype(np.float64), rng.normal(size=j) * 0.1, rng.normal(size=j))
    a = rng.uniform(0, 1, size=(c, h, w))
    eps = 1e-6
    grad = np.zeros_like(a)
    for index in np.ndindex(a.shape):
        bumped = a.copy()
        bumped[index] += eps
        grad[index] = (_logit(bumped, head) - _logit(a, head)) / eps
    alpha = grad.mean(axis=(1, 2))
    expected = np.maximum(np.einsum("c,chw->hw", alpha, a), 0)
    np.testing.assert_allclose(grad_cam(a[None].astype(np.float32), head)[0], expected, rtol=1e-3, atol=1e-5)


@requires_tf
def test_engine_grad_cam_matches_tensorflow_gradient_tape(tiny_converted):
    """The converted fp32 graph's CAM, from its features and head outputs, equals GradientTape's on the Keras model."""
    import keras
    import tensorflow as tf

    run_dir = tiny_converted[0]
    model = keras.models.load_model(run_dir / "model.keras")
    features = keras.Model(model.input, model.get_layer("gap").input)
    gap, fc, out = (model.get_layer(name) for name in ("gap", "fc", "probability"))
    x = np.load(run_dir / "holdout.npz")["images"][:6]
    with tf.GradientTape() as tape:
        a = features(x, training=False)
        tape.watch(a)
        logit = tf.matmul(fc(gap(a)), out.kernel) + out.bias  # the sigmoid's input
    grads = tape.gradient(logit, a).numpy()  # NHWC
    alpha = grads.mean(axis=(1, 2))
    expected = np.maximum(np.einsum("nc,nhwc->nhw", alpha, a.numpy()), 0)
    clf = engine.load(run_dir, provider="cpu", artifact="onnx-fp32", threads=1)
    assert clf.can_explain
    probs, cams = clf.run_explained(x)
    np.testing.assert_allclose(cams, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probs, clf.run(x))  # the explained run predicts the same


@requires_tf
@pytest.mark.parametrize("fmt", ["onnx-int8", "onnx-fp16"])
def test_every_onnx_format_carries_the_explanation_outputs(tiny_converted, fmt):
    clf = engine.load(tiny_converted[0], provider="cpu", artifact=fmt, threads=1)
    x = np.load(tiny_converted[0] / "holdout.npz")["images"][:4]
    probs, cams = clf.run_explained(x)
    assert clf.can_explain and cams.shape[0] == 4 and (cams >= 0).all()
    np.testing.assert_array_equal(probs, clf.run(x))


def test_mirror_averaged_evidence_turns_the_mirrors_map_back(tmp_path):
    """With output.mirror_average the CAM is the mean of the slice's map and its mirror's map turned back.
    The shipped model's maps are mirror-symmetric (tied weights, since 0.5.0), so its first convolution's
    right-hand weights are halved here: an asymmetric model, once plain and once as a mirroring bundle."""
    from dataclasses import replace

    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from asinfer.trainer.bundle import write_bundle

    shipped = engine.load(provider="cpu", artifact="onnx-int8", threads=1)
    graph = onnx.load(str(engine.default_model() / shipped.artifact.file))
    first = next(i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4)
    w = numpy_helper.to_array(first).copy()
    w[..., -1] //= 2
    first.CopyFrom(numpy_helper.from_array(w, first.name))
    bundles = {}
    for name, mirror in (("plain", False), ("mirrored", True)):
        (tmp_path / name).mkdir()
        onnx.save(graph, str(tmp_path / name / shipped.artifact.file))
        manifest = replace(shipped.manifest, output=replace(shipped.manifest.output, mirror_average=mirror),
                           artifacts=())
        write_bundle(tmp_path / name, manifest, {"onnx-int8": shipped.artifact.file})
        bundles[name] = engine.load(tmp_path / name, provider="cpu", threads=1)
    plain, clf = bundles["plain"], bundles["mirrored"]
    samples = Path(__file__).resolve().parents[1] / "docs" / "samples"
    x = plain.preprocessor(list(engine.load_frames(sorted(samples.rglob("P0000_s0[2-6].dcm")))))
    (p0, c0), (p1, c1) = plain.run_explained(x), plain.run_explained(np.ascontiguousarray(x[:, :, ::-1]))
    probs, cams = clf.run_explained(x)
    assert not np.allclose(c0, c1[:, :, ::-1])  # the two maps differ: a wrong turn would show
    np.testing.assert_allclose(probs, (p0 + p1) / 2, rtol=1e-6)
    np.testing.assert_allclose(cams, (c0 + c1[:, :, ::-1]) / 2, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(probs, clf.run(x))


def test_the_shipped_model_gives_a_mirrored_slice_the_same_probability_and_the_mirrored_map():
    """The demo model's weights are mirror-tied (trainer.mirror): on the sample series' slices, mirrored
    after preprocessing, the int8 graph answers bit-identically and its Grad-CAM is the mirrored map."""
    clf = engine.load(provider="cpu", artifact="onnx-int8", threads=1)
    assert clf.can_explain and not clf.manifest.output.mirror_average
    samples = Path(__file__).resolve().parents[1] / "docs" / "samples"
    x = clf.preprocessor(list(engine.load_frames(sorted(samples.rglob("P0000_s0[2-6].dcm")))))
    (p0, c0), (p1, c1) = clf.run_explained(x), clf.run_explained(np.ascontiguousarray(x[:, :, ::-1]))
    assert p0.max() - p0.min() > 0.1  # lesion and non-lesion slices: not a constant answer
    np.testing.assert_array_equal(p1, p0)
    np.testing.assert_allclose(c1[:, :, ::-1], c0, rtol=1e-5, atol=1e-6)


def test_explain_gives_the_slice_its_evidence_and_an_overlay(tmp_path):
    """The shipped bundle explains: one explanation per slice, a CAM, a peak inside the image, an overlay."""
    import cv2

    from conftest import dicom_file

    clf = engine.load(provider="cpu")
    (ex,) = clf.explain(dicom_file("MR_small.dcm"))
    assert ex.cam.ndim == 2 and ex.display.shape == (64, 64) and ex.prediction.ok
    row, col = ex.peak()
    assert 0 <= row < 64 and 0 <= col < 64 and ex.heatmap().shape == (64, 64)
    picture = engine.overlay(ex.display, ex.cam, f"p={ex.prediction.probability:.2f}")
    assert picture.shape == (64, 64, 3) and cv2.imwrite(str(tmp_path / "o.png"), picture)


def test_a_graph_without_the_outputs_says_how_to_get_them(tiny_bundle):
    clf = engine.load(tiny_bundle, provider="cpu")
    assert not clf.can_explain
    with pytest.raises(ValueError, match="no Grad-CAM outputs"):
        clf.run_explained(np.zeros((1, 32, 32, 1), np.uint8))


def test_cli_explain_writes_overlays_of_the_driving_slices_of_every_decided_series(tmp_path, tiny_bundle):
    import cv2
    from typer.testing import CliRunner

    from asinfer.engine.cli import app
    from asinfer.trainer.phantoms import write_dataset

    write_dataset(tmp_path / "data", patients=2, slices=4, fmt="dicom", seed=5, size=128, positive_fraction=1.0)
    runner = CliRunner()
    refused = runner.invoke(app, ["predict", str(tmp_path / "data"), "-m", str(tiny_bundle), "--explain",
                                  str(tmp_path / "x")])
    assert refused.exit_code == 2 and "no Grad-CAM outputs" in refused.stderr
    done = runner.invoke(app, ["predict", str(tmp_path / "data"), "--explain", str(tmp_path / "overlays"),
                               "-f", "json", "--by", "series"])
    assert done.exit_code == 0, done.output
    import json

    decided = [s for s in json.loads(done.stdout)["series"] if s["label"]]
    pictures = sorted((tmp_path / "overlays").glob("*.png"))
    assert len(decided) == 2 and len(pictures) == sum(len(s["driving"]) for s in decided)
    assert f"{len(pictures)} Grad-CAM overlay(s)" in done.stderr and cv2.imread(str(pictures[0])).shape[2] == 3


class _Pointer:
    """A stand-in classifier whose CAM peaks on the lesion (``aim="lesion"``) or in the far corner."""

    def __init__(self, aim: str) -> None:
        from types import SimpleNamespace

        self.aim, self.manifest = aim, SimpleNamespace(labels=("no AS", "AS"))
        self.masks: dict[int, np.ndarray] = {}

    def explain(self, frames):
        out = []
        for f in frames:
            cam = np.zeros((7, 7), np.float32)
            mask = self.masks.get(f.index)
            if self.aim == "lesion" and mask is not None and mask.any():
                r, c = np.argwhere(mask).mean(axis=0) / np.array(mask.shape) * 7
                cam[int(r), int(c)] = 1.0
            else:
                cam[0, 0] = 1.0
            p = engine.Prediction(f.source, f.index, 0.9, "AS")
            out.append(engine.Explanation(p, cam, np.zeros(f.pixels.shape, np.uint8)))
        return out


@pytest.mark.parametrize("aim, expected", [("lesion", 1.0), ("corner", 0.0)])
def test_the_pointing_game_scores_where_the_map_peaks(aim, expected, monkeypatch):
    """The benchmark's figure is 1 for a map on every lesion and 0 for one that never is: it can fail."""
    from asinfer.benchmarks import evidence
    from asinfer.trainer import phantoms

    pointer = _Pointer(aim)
    real = phantoms.generate_series

    def remembered(*args, **kwargs):
        series = real(*args, **kwargs)
        pointer.masks = dict(enumerate(series.masks))
        return series

    monkeypatch.setattr(phantoms, "generate_series", remembered)
    game = evidence.pointing_game(pointer, patients=2, seed=3, size=128)
    assert game["slices"] > 0 and game["share"] == expected
    low, high = game["interval_95"]
    assert low <= expected <= high


@requires_tf
def test_the_card_says_whether_the_pointing_game_meets_its_target(tiny_converted, tmp_path):
    import json
    import shutil

    from asinfer.trainer.card import write_card

    bundle = shutil.copytree(tiny_converted[1], tmp_path / "bundle")
    data = json.loads((bundle / "manifest.json").read_text())
    for share, word in ((0.27, "**misses**"), (0.91, "meets")):
        data["metrics"]["pointing_game"] = {"hits": int(share * 100), "slices": 100, "share": share,
                                           "interval_95": [share - 0.08, share + 0.08], "rule": "r", "data": "d",
                                           "patients": 80, "seed": 4242}
        (bundle / "manifest.json").write_text(json.dumps(data))
        text = write_card(bundle).read_text()
        assert f"This {word} the target of 0.80" in text and "--patients 80 --seed 4242" in text
