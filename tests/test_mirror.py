"""Mirror-tied weights (trainer.mirror): a slice and its left-right mirror get the same probability, in
Keras and after conversion, by construction. Needs TensorFlow; 32x32 models."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from conftest import SIZE, requires_tf, tiny_batch, write_tiny_run

pytestmark = requires_tf


def _mirror(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[:, :, ::-1])


def _trained(mirror_tied: bool, tie: bool):
    """A 32x32 model after a few steps on random batches (their mirror statistics differ per channel)."""
    import keras

    from asinfer.trainer.mirror import tie_statistics
    from asinfer.trainer.model import build_model

    model = build_model(SIZE, seed=3, mirror_tied=mirror_tied)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    x, y = tiny_batch(7, 2, 8)
    for _ in range(3):
        model.train_on_batch(x, y.astype(np.float32))
    if tie:
        tie_statistics(model)
    return model


def test_tied_weights_give_a_slice_and_its_mirror_the_same_probability():
    x, _ = tiny_batch(11, 2, 6)
    tied, untied = _trained(True, tie=True), _trained(False, tie=True)
    p, q = tied.predict(x, verbose=0).ravel(), tied.predict(_mirror(x), verbose=0).ravel()
    assert p.std() > 1e-4  # not a constant output
    np.testing.assert_allclose(q, p, atol=1e-6)
    u, v = untied.predict(x, verbose=0).ravel(), untied.predict(_mirror(x), verbose=0).ravel()
    assert np.abs(u - v).max() > 1e-4  # the same architecture untied is not symmetric


def test_the_moving_statistics_need_tying_too():
    """The optimiser keeps the weights tied; batch norm's moving statistics come from batches whose mirror
    halves differ, so without tie_statistics the model is not symmetric at inference."""
    from asinfer.trainer.mirror import tie_statistics

    x, _ = tiny_batch(12, 2, 6)
    model = _trained(True, tie=False)
    assert np.abs(model.predict(x, verbose=0) - model.predict(_mirror(x), verbose=0)).max() > 1e-6
    tie_statistics(model)
    np.testing.assert_allclose(model.predict(_mirror(x), verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_the_projection_keeps_tied_weights_and_is_its_own_inverse():
    from asinfer.trainer.mirror import MirrorTie, conv_tie

    w = np.random.default_rng(0).normal(size=(3, 3, 4, 6)).astype(np.float32)
    tie = conv_tie(first=False)
    np.testing.assert_array_equal(np.asarray(tie.mirror(tie.mirror(w))), w)
    tied = np.asarray(tie(w))
    np.testing.assert_allclose(np.asarray(tie(tied)), tied, atol=1e-7)
    # output channel j + 3 is channel j's kernel mirrored left-right, reading the input pairs swapped
    np.testing.assert_allclose(tied[:, :, :, 3], tied[:, ::-1, [2, 3, 0, 1], 0], atol=1e-7)
    assert MirrorTie.from_config(tie.get_config()).get_config() == tie.get_config()


def test_mirror_tied_refuses_what_cannot_stay_symmetric():
    from asinfer.trainer.model import build_model

    with pytest.raises(ValueError, match="multiple of 16"):
        build_model(40, mirror_tied=True)  # a 5-px map after two pools: a 2x2 pool drops a column
    with pytest.raises(ValueError, match="batch_norm"):
        build_model(32, batch_norm=False, mirror_tied=True)


def test_the_converted_int8_model_gives_a_mirror_the_same_probability_and_a_mirrored_grad_cam(tmp_path):
    """After conversion (batch norm folded, int8 quantised per channel) the graph is a plain VGG16 whose
    paired channels hold the same numbers mirrored: the probability of a mirror is bit-identical and
    its Grad-CAM is the mirrored map."""
    from asinfer import engine
    from asinfer.engine import Tolerance
    from asinfer.trainer.convert import convert

    run = tmp_path / "run"
    run.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_tiny_run(run, mirror_tied=True)
        # the tiny model's outputs sit close together, so its labels may disagree with Keras'; symmetry is the point
        result = convert(run, ["onnx-int8"], out=tmp_path / "bundle",
                         tolerances={"onnx-int8": Tolerance(min_agreement=0.5, max_abs_dauc=1.0)})
    assert not result.failed
    shutil.rmtree(run)
    model = engine.load(tmp_path / "bundle", provider="cpu", threads=2)
    x, _ = tiny_batch(13, 2, 6)
    p, cams = model.run_explained(x)
    q, mirrored_cams = model.run_explained(_mirror(x))
    assert p.std() > 1e-4
    np.testing.assert_array_equal(q, p)
    np.testing.assert_allclose(mirrored_cams, cams[:, :, ::-1], rtol=1e-5, atol=1e-6)


def test_the_rounding_search_gives_a_mirrored_filter_the_mirrored_rounding():
    """The first convolution's rounding search picks each filter's rounding on its own; a filter that
    mirrors another takes the other's rounding mirrored, so the int8 weights keep the tie."""
    import importlib

    rounding = importlib.import_module("asinfer.trainer.convert._rounding")
    rng = np.random.default_rng(1)
    mirror = rounding.mirror_permutation((1, 3, 3))
    filters = rng.normal(size=(4, 9)) * 20
    exact = np.concatenate([filters, filters[:, mirror]])
    a = rng.normal(size=(9, 9))
    moments = a @ a.T  # not mirror-symmetric: on their own, twins round differently
    alone, _, _ = rounding.search_rounding(exact, moments, 127)
    assert np.any(alone[4:] != alone[:4][:, mirror])
    tied, _, _ = rounding.search_rounding(exact, moments, 127, mirror)
    np.testing.assert_array_equal(tied[4:], tied[:4][:, mirror])
    np.testing.assert_array_equal(tied[:4], alone[:4])


def test_a_mirror_tied_training_run_saves_a_symmetric_model(tmp_path):
    """train() with mirror_tied: batch norm's statistics are tied before every validation and at the end,
    so the checkpoints and the saved model are symmetric; the model card's description says what it is."""
    from asinfer.trainer.model import load
    from asinfer.trainer.train import TrainConfig, train

    cfg = TrainConfig(synth={"patients": 8, "slices": 3, "seed": 4, "size": 96}, image_size=32, epochs=2,
                      batch_size=8, calibration_images=4, mirror_tied=True, learning_rate=1e-3)
    manifest = train(cfg, tmp_path / "run")
    assert "mirror-tied" in manifest.description
    x = np.load(tmp_path / "run" / "holdout.npz")["images"]
    for path in (tmp_path / "run" / "model.keras", tmp_path / "run" / "checkpoints" / "last.keras"):
        model = load(path)
        p = model.predict(x, verbose=0)
        np.testing.assert_allclose(model.predict(_mirror(x), verbose=0), p, atol=1e-6)
