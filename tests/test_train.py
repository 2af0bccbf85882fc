"""Trainer: a tiny end-to-end run (32x32 phantoms), resume, weights options. Needs TensorFlow."""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from asinfer.engine.cli import app

from conftest import requires_tf

pytestmark = requires_tf
runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from asinfer.trainer.train import TrainConfig

    root = tmp_path_factory.mktemp("train") / "run with spaces"
    root.mkdir()
    cfg = TrainConfig(synth={"patients": 8, "slices": 3, "seed": 4, "size": 96}, image_size=32,
                      epochs=1, batch_size=8, calibration_images=12)
    cfg.save(root.parent / "config.json")
    result = runner.invoke(app, ["train", "--config", str(root.parent / "config.json"), "--out", str(root)])
    assert result.exit_code == 0, result.output
    assert "test AUC" in result.stdout
    return root


def test_run_directory_contract(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [a["format"] for a in manifest["artifacts"]] == ["keras"]
    assert manifest["synthetic_training_data"] is True and "SYNTHETIC" in manifest["notice"]
    assert 0.0 <= manifest["threshold"] <= 1.0 and manifest["input"]["height"] == 32
    test = manifest["metrics"]["test"]
    for key in ("accuracy", "auc", "precision", "recall", "f1", "specificity", "confusion_matrix"):
        assert key in test
    assert manifest["training"]["splits"]["by_patient"] is True
    rule = manifest["series_rule"]  # fitted on the validation patients, measured on the test patients
    assert rule["kind"] in ("consecutive", "max", "top_k_mean") and "validation patients" in rule["fitted_on"]
    assert manifest["metrics"]["series_test"]["n"] == manifest["training"]["splits"]["test"]["patients"]
    holdout = np.load(run_dir / "holdout.npz")
    assert holdout["images"].dtype == np.uint8 and holdout["images"].shape[1:] == (32, 32, 1)
    assert len(holdout["labels"]) == test["n"]
    assert np.load(run_dir / "calibration.npz")["images"].shape[0] <= 12
    for name in ("model.keras", "curves.png", "train_config.json", "history.csv", "checkpoints/last.keras"):
        assert (run_dir / name).exists(), name


def test_exported_model_has_no_augmentation_and_honours_the_contract(run_dir):
    import keras

    model = keras.models.load_model(run_dir / "model.keras")
    assert not [layer.name for layer in model.layers if "random" in layer.name.lower()]
    assert model.input.dtype == "uint8" and tuple(model.input.shape) == (None, 32, 32, 1)
    probs = model.predict(np.zeros((2, 32, 32, 1), np.uint8), verbose=0)
    assert probs.shape == (2, 1) and np.all((probs >= 0) & (probs <= 1))


def test_resume_continues_from_the_checkpoint(run_dir):
    from asinfer.trainer.train import TrainConfig, train

    cfg = TrainConfig.load(run_dir / "train_config.json")
    cfg.epochs = 2
    first_session = json.loads((run_dir / "manifest.json").read_text())["training"]["wall_time_s"]
    (run_dir / "manifest.json").unlink()  # as if the first session had been stopped during training
    messages = []
    started = time.time()
    manifest = train(cfg, run_dir, resume=True, progress=messages.append)
    elapsed = time.time() - started
    assert any("resuming after epoch 1" in m for m in messages)
    # the run's wall time sums both sessions
    assert first_session + 0.8 * elapsed < manifest.training["wall_time_s"] <= first_session + elapsed + 0.5
    assert any(m.startswith("epoch 2:") for m in messages)
    assert not any(m.startswith("epoch 1:") for m in messages)
    assert any(m.startswith("optimizer state carried over (step ") for m in messages), messages
    assert any(m.startswith("phase state after epoch 1: best epoch 1") for m in messages), messages


def test_a_run_killed_before_its_model_was_saved_evaluates_the_best_epoch(run_dir):
    """Killed after the last epoch, before model.keras: the resume evaluates best.keras's epoch, not last.keras's."""
    import keras

    from asinfer.trainer.train import TrainConfig, train

    (run_dir / "manifest.json").unlink()
    (run_dir / "model.keras").unlink()
    messages = []
    train(TrainConfig.load(run_dir / "train_config.json"), run_dir, resume=True, progress=messages.append)
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())["epoch"]
    assert f"the phase had ended; keeping epoch {best + 1}" in messages, messages
    assert not any(m.startswith("training epochs") for m in messages)
    saved = keras.models.load_model(run_dir / "model.keras").get_weights()
    expected = keras.models.load_model(run_dir / "checkpoints" / "best.keras").get_weights()
    assert len(saved) == len(expected) and all(np.array_equal(a, b) for a, b in zip(saved, expected))


def test_the_checkpointed_optimizer_state_carries_into_the_recompiled_model(tmp_path):
    import keras

    train = importlib.import_module("asinfer.trainer.train")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 1)), epochs=3, verbose=0)
    model.save(tmp_path / "last.keras")
    loaded = keras.models.load_model(tmp_path / "last.keras", compile=True)
    checkpointed = loaded.optimizer
    loaded.compile(optimizer=keras.optimizers.Adam(5e-4), loss="mse")
    messages = []
    train._carry_optimizer(checkpointed, loaded, messages.append)
    assert messages == ["optimizer state carried over (step 3)"]
    trained, carried = model.optimizer.variables, loaded.optimizer.variables  # same order: same network
    assert len(trained) == len(carried) == 10
    for before, after in zip(trained, carried):
        expected = 5e-4 if after.path.endswith("/learning_rate") else before.numpy()  # the new rate is kept
        np.testing.assert_allclose(after.numpy(), expected, rtol=1e-6)


def test_best_json_names_the_epoch_best_keras_holds(run_dir):
    """best.keras is the phase's best epoch (first of equals); best.json says which, for a resume."""
    aucs = importlib.import_module("asinfer.trainer.train")._read_history(run_dir / "history.csv")["val_auc"]
    saved = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert saved == {"epoch": int(np.argmax(aucs)), "val_auc": pytest.approx(max(aucs))}


def _phase(tmp_path, patience, aucs, best_epoch, ended=False):
    """Callbacks of a main phase that ran epochs 2.. with ``aucs``; best.keras holds a tiny model."""
    import keras

    train = importlib.import_module("asinfer.trainer.train")
    (tmp_path / "checkpoints").mkdir()
    best = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_initializer="ones")])
    best.save(tmp_path / "checkpoints" / "best.keras")
    (tmp_path / "checkpoints" / "best.json").write_text(json.dumps({"epoch": best_epoch, "val_auc": 0.0}))
    clock = train._Clock(tmp_path / "wall_time_s", False)
    callbacks = train._callbacks(tmp_path, train.TrainConfig(patience=patience), lambda m: None, clock)
    history = {"val_auc": [0.5, 0.6, *aucs]}  # epochs 0-1: the warm-up, another phase
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    messages = []
    result = train._continue_phase(model, callbacks, history, 2, 2 + len(aucs), 2e-4, messages.append, ended=ended)
    return result, callbacks, model, messages


def test_a_resumed_phase_keeps_its_best_epoch_patience_and_rate_cuts(tmp_path):
    import keras

    # epochs 2-5: best at 3 (0.9), two epochs without improvement cut the rate once (x 0.3, patience 2)
    (lr, stopped), callbacks, model, messages = _phase(tmp_path, 5, [0.8, 0.9, 0.85, 0.86], best_epoch=3)
    assert not stopped and lr == pytest.approx(6e-5), messages
    stopper = next(cb for cb in callbacks if isinstance(cb, keras.callbacks.EarlyStopping))
    cutter = next(cb for cb in callbacks if isinstance(cb, keras.callbacks.ReduceLROnPlateau))
    saver = next(cb for cb in callbacks if isinstance(cb, keras.callbacks.ModelCheckpoint) and cb.save_best_only)
    stopper.on_train_begin(), cutter.on_train_begin()  # what fit() calls: must keep the played state
    assert (stopper.best, stopper.best_epoch, stopper.wait, cutter.best, cutter.wait) == (0.9, 3, 2, 0.9, 0)
    assert saver.best == 0.9  # best.keras is replaced only by an epoch better than 0.9
    # the fit goes on without improving: early stopping restores epoch 3's weights, not the resumed ones
    stopper.set_model(model)
    stopper.on_epoch_end(6, {"val_auc": 0.7})
    stopper.on_train_end()
    assert np.all(model.get_weights()[0] == 1.0)
    assert "best epoch 4 (val_auc 0.9000), 2 epoch(s) since, lr 6e-05" in messages[0]


def test_a_phase_that_had_stopped_early_is_not_trained_further(tmp_path):
    (lr, stopped), _, model, messages = _phase(tmp_path, 2, [0.9, 0.8, 0.8], best_epoch=2)
    assert stopped and np.all(model.get_weights()[0] == 1.0)  # the best epoch's weights
    assert "had stopped early after epoch 5; keeping epoch 3" in messages[-1]


def test_a_phase_resumed_right_after_its_last_epoch_ends_on_its_best_epoch(tmp_path):
    # killed after the last epoch, before model.keras: its fit would have restored the best epoch (3)
    (lr, over), _, model, messages = _phase(tmp_path, 5, [0.8, 0.9, 0.85], best_epoch=3, ended=True)
    assert over and np.all(model.get_weights()[0] == 1.0), messages
    assert messages[-1] == "the phase had ended; keeping epoch 4"


def test_a_phase_resumed_after_its_last_epoch_without_best_json_keeps_the_last(tmp_path):
    (lr, over), _, model, messages = _phase(tmp_path, 5, [0.8, 0.9, 0.85], best_epoch=4, ended=True)
    assert over and np.all(model.get_weights()[0] == 0.0)
    assert messages[0].endswith(": keeping the last epoch")


def test_without_the_best_epochs_weights_a_resume_starts_the_callbacks_afresh(tmp_path):
    (lr, stopped), _, model, messages = _phase(tmp_path, 5, [0.8, 0.9, 0.85, 0.86], best_epoch=5)
    assert (lr, stopped) == (2e-4, False) and np.all(model.get_weights()[0] == 0.0)
    assert "start afresh" in messages[0]


class _Killed(Exception):
    pass


@pytest.mark.parametrize("warmup, epochs", [(False, 2), (True, 1), (False, 3)],
                         ids=["the last epoch", "the first epoch after a warm-up", "an epoch before the last"])
def test_a_run_stopped_inside_an_epoch_resumes_after_its_last_checkpointed_batch(tmp_path, monkeypatch, warmup,
                                                                                 epochs):
    """Stopped inside epoch 2: the resume trains only that epoch's remaining batches (Adam's step count ends
    where an uninterrupted run's does), then the phase's later epochs, without a second batch-norm
    re-estimation, and the phase ends on its best epoch."""
    import keras

    train = importlib.import_module("asinfer.trainer.train")
    cfg = train.TrainConfig(synth={"patients": 8, "slices": 3, "seed": 4, "size": 96}, image_size=32 + 16 * warmup,
                            epochs=epochs, warmup_epochs=int(warmup), warmup_size=32, bn_reestimate_batches=1,
                            batch_size=4, calibration_images=4, learning_rate_after_warmup=1e-4)
    run = tmp_path / "run"
    monkeypatch.setattr(train, "PARTIAL_EVERY_S", 0.0)  # a checkpoint after every batch
    saves, save = [], train._save_partial

    def save_then_stop(model, folder, epoch, batches):
        save(model, folder, epoch, batches)
        saves.append((epoch, batches))
        if epoch == 1:
            raise _Killed

    monkeypatch.setattr(train, "_save_partial", save_then_stop)
    first = []
    with pytest.raises(_Killed):
        train.train(cfg, run, progress=first.append)
    steps = saves[-2][1] + 1  # epoch 1 was saved after each batch but its last
    assert steps >= 3 and saves == [*((0, b) for b in range(1, steps)), (1, 1)]
    monkeypatch.setattr(train, "_save_partial", save)
    messages = []
    manifest = train.train(cfg, run, resume=True, progress=messages.append)

    assert f"resuming inside epoch 2 after batch 1 from {run / 'checkpoints' / 'partial-1-1.keras'}" in messages
    size = cfg.image_size
    assert any(m.startswith(f"training the rest of epoch 2 at {size}x{size}: batches 2-{steps} ") for m in messages)
    later = [m for m in messages if m.startswith("training epochs")]
    total = int(warmup) + epochs
    assert [m.split(" at ")[0] for m in later] == ([f"training epochs 3-{total}"] if total > 2 else []), messages
    assert [m.split(":")[0] for m in messages if m.startswith("epoch ")] == [f"epoch {e}" for e in range(2, total + 1)]
    assert [m for m in first if m.startswith("batch norm statistics re-estimated")] == (
        [f"batch norm statistics re-estimated at {size}x{size} over 1 batches"] if warmup else [])  # not at 32 px
    assert not any(m.startswith("batch norm statistics re-estimated") for m in messages), messages  # done before
    assert any(m.startswith("optimizer state carried over (step ") for m in messages), messages
    assert manifest.training["epochs_run"] == total and len(manifest.training["history"]["val_auc"]) == total
    assert not [p.name for p in (run / "checkpoints").iterdir() if "partial" in p.name]
    last = keras.models.load_model(run / "checkpoints" / "last.keras", compile=True)
    # Adam counts the phase's steps (a new phase starts it afresh): the epoch's remaining batches, no more
    assert int(last.optimizer.iterations.numpy()) == cfg.epochs * steps
    saved = keras.models.load_model(run / "model.keras").get_weights()
    best = keras.models.load_model(run / "checkpoints" / "best.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(saved, best))  # the phase ended on its best epoch


def test_a_stale_partial_checkpoint_is_not_resumed_from(tmp_path):
    train = importlib.import_module("asinfer.trainer.train")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "partial-3-5.keras").write_bytes(b"x")
    (folder / "tmp-partial-3-6.keras").write_bytes(b"half written")
    (folder / "partial.json").write_text(json.dumps({"epoch": 3, "batches": 5, "file": "partial-3-5.keras"}))
    assert train._partial_state(folder) == {"epoch": 3, "batches": 5, "file": "partial-3-5.keras"}
    (folder / "partial.json").write_text(json.dumps({"epoch": 3, "batches": 5, "file": "partial-3-4.keras"}))
    assert train._partial_state(folder) == {}  # names a file that is not there
    (folder / "partial.json").write_text("{")
    assert train._partial_state(folder) == {}
    train._drop_partial(folder)
    assert list(folder.iterdir()) == []


def test_resuming_a_finished_run_keeps_its_model(run_dir):
    from asinfer.trainer.train import TrainConfig, train

    before = (run_dir / "model.keras").stat().st_mtime_ns, (run_dir / "manifest.json").read_text()
    messages = []
    manifest = train(TrainConfig.load(run_dir / "train_config.json"), run_dir, resume=True, progress=messages.append)
    assert messages == [f"{run_dir} is a finished run (manifest.json, model.keras); nothing to resume"]
    assert ((run_dir / "model.keras").stat().st_mtime_ns, (run_dir / "manifest.json").read_text()) == before
    assert manifest.name == json.loads(before[1])["name"]


def test_warmup_at_a_smaller_size_continues_with_the_same_weights(tmp_path):
    from asinfer.trainer.train import TrainConfig, train

    cfg = TrainConfig(synth={"patients": 8, "slices": 3, "seed": 4, "size": 96}, image_size=48, warmup_size=32,
                      warmup_epochs=1, epochs=1, batch_size=8, calibration_images=4, freeze_blocks=2)
    messages = []
    manifest = train(cfg, tmp_path / "run", progress=messages.append)
    starts = [m for m in messages if m.startswith("training epochs")]
    assert starts[0].startswith("training epochs 1-1 at 32x32: all blocks trainable")
    assert starts[1].startswith("training epochs 2-2 at 48x48: blocks 1-2 frozen")
    assert manifest.input.height == 48 and manifest.training["epochs_run"] == 2
    from asinfer.trainer.bundle import machine

    assert manifest.training["machine"].startswith(f"{machine()['cpu']}, ")  # the CPU model, for the card
    assert np.load(tmp_path / "run" / "holdout.npz")["images"].shape[1:] == (48, 48, 1)


def test_v2_recipe_knobs_fixres_lower_rate_photometric_augmentation_and_preprocessing(tmp_path):
    """After the warm-up the BN statistics are measured again at the new size (frozen blocks too), the
    rate drops, photometric augmentation runs, and the run's preprocessing is what its manifest records."""
    import keras

    from asinfer.trainer.model import vgg_base
    from asinfer.trainer.train import TrainConfig, photometric_augmentation, train

    cfg = TrainConfig(synth={"patients": 8, "slices": 3, "seed": 4, "size": 96}, image_size=48, warmup_size=32,
                      warmup_epochs=1, epochs=1, batch_size=8, calibration_images=4, freeze_blocks=2,
                      learning_rate=1e-3, learning_rate_after_warmup=2e-4, bn_reestimate_batches=2,
                      gamma=0.3, contrast=0.2, noise=6.0, blur=1.0, bias=0.3, preprocessing={"stretch_8bit": True},
                      warmup_synth={"patients": 8, "slices": 3, "seed": 5, "size": 96, "profile": "default",
                                    "anatomy": "average"})
    messages = []
    manifest = train(cfg, tmp_path / "run", progress=messages.append)
    # Curriculum: the warm-up ran on its own, narrower phantoms.
    warm = json.loads((tmp_path / "run" / "warmup_data" / "dataset.json").read_text())
    assert (warm["profile"], warm["anatomy"]) == ("default", "average") and "writing the warm-up" in " ".join(messages)
    assert any(m.startswith("batch norm statistics re-estimated at 48x48 over 2 batches") for m in messages)
    assert [m for m in messages if m.startswith("training epochs")][1].endswith("lr 0.0002")
    assert manifest.preprocessing.stretch_8bit and engine_spec_round_trips(tmp_path / "run")
    frozen_bn = vgg_base(keras.models.load_model(tmp_path / "run" / "model.keras")).get_layer("block1_bn1")
    assert not frozen_bn.trainable  # the re-estimation left the freezing as it was

    x = np.full((4, 48, 48, 1), 120.0, np.float32)
    x[:, :, 24:] = 60.0
    out = photometric_augmentation(cfg)(x).numpy()
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 255
    assert np.abs(out - x).mean() > 1.0 and len({round(float(o.mean()), 3) for o in out}) == 4  # per image
    assert photometric_augmentation(TrainConfig())(x) is x  # v1 recipes: no photometric augmentation at all


def test_batch_norm_reestimation_moves_statistics_of_frozen_blocks_and_not_weights():
    from asinfer.trainer.model import build_model, freeze, vgg_base
    from asinfer.trainer.train import TrainConfig, reestimate_batch_norm

    model = build_model(32, seed=0, batch_norm=True)
    freeze(vgg_base(model), 2)
    bn, conv = vgg_base(model).get_layer("block1_bn1"), vgg_base(model).get_layer("block1_conv1")
    before_mean, before_kernel = np.array(bn.moving_mean), np.array(conv.kernel)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 1), dtype=np.uint8)
    reestimate_batch_norm(model, {"train": (images, np.zeros(16, np.float32))},
                           TrainConfig(batch_size=8, bn_reestimate_batches=2), lambda _: None)
    assert np.abs(np.array(bn.moving_mean) - before_mean).max() > 1e-3
    np.testing.assert_array_equal(np.array(conv.kernel), before_kernel)
    assert not bn.trainable


def test_batch_norm_reestimation_replaces_the_statistics_rather_than_blending_them():
    from asinfer.trainer.model import build_model, vgg_base
    from asinfer.trainer.train import TrainConfig, reestimate_batch_norm

    model = build_model(32, seed=0, batch_norm=True)
    bn = vgg_base(model).get_layer("block1_bn1")
    momentum = bn.momentum
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 1), dtype=np.uint8)
    plain = TrainConfig(batch_size=16, bn_reestimate_batches=1, rotation=0, shift=0, zoom=0, flip=False)
    data = {"train": (images, np.zeros(16, np.float32))}
    reestimate_batch_norm(model, data, plain, lambda _: None)
    once = np.array(bn.moving_mean)
    reestimate_batch_norm(model, data, plain, lambda _: None)
    # The same single batch again gives the same statistics: they were replaced, not moved 1 % towards the batch.
    np.testing.assert_allclose(np.array(bn.moving_mean), once, rtol=1e-4, atol=1e-5)
    assert np.abs(once).max() > 1e-2 and bn.momentum == momentum


def engine_spec_round_trips(run: Path) -> bool:
    from asinfer.engine.bundle import read_manifest

    return read_manifest(run / "manifest.json").preprocessing.stretch_8bit is True


def test_imagenet_offline_says_how_to_supply_the_file(tmp_path, monkeypatch):
    from asinfer.trainer.model import build_model

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras home"))
    with pytest.raises(FileNotFoundError, match="--weights none"):
        build_model(32, weights="imagenet")
    from asinfer.trainer.phantoms import write_dataset

    write_dataset(tmp_path / "data", patients=4, slices=2, size=64, seed=1)  # a valid dataset: only the weights fail
    result = runner.invoke(app, ["train", str(tmp_path / "data"), "--weights", "imagenet", "--image-size", "32",
                                 "--epochs", "1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "--weights none" in result.stderr and "Traceback" not in result.output


def test_local_weights_file_is_loaded(tmp_path):
    from asinfer.trainer.model import build_model, vgg_base

    source = build_model(32, seed=7, batch_norm=False)
    path = tmp_path / "vgg16_notop.weights.h5"
    vgg_base(source).save_weights(path)
    loaded = build_model(32, weights=str(path))
    a, b = vgg_base(source).get_layer("block5_conv3").kernel, vgg_base(loaded).get_layer("block5_conv3").kernel
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_augmentation_draws_per_image_and_per_epoch():
    """A flip (and the rest) is drawn for each image anew, not once per batch or once per run."""
    from asinfer.trainer.train import TrainConfig, train_dataset

    images = np.zeros((8, 32, 32, 1), np.uint8)
    images[:, 8:24, 4:10] = 200  # a bar on the left
    ds = train_dataset((images, np.zeros(8, np.float32)), TrainConfig(batch_size=8, flip=True))
    flipped = []
    for _ in range(3):
        x = np.array(next(iter(ds))[0])[..., 0]
        flipped.append(tuple((x[:, :, 16:] > 100).sum(axis=(1, 2)) > (x[:, :, :16] > 100).sum(axis=(1, 2))))
    assert any(0 < sum(f) < 8 for f in flipped)  # some images of one batch flipped, others not
    assert len(set(flipped)) > 1  # and not the same images every epoch


def test_the_warm_up_runs_all_its_epochs_early_stopping_only_in_the_main_phase(tmp_path):
    """A clean run's warm-up sat at validation AUC ~0.5 for a few epochs and early stopping ended it (restoring
    an untrained epoch); the warm-up is a fixed number of epochs. Here its rate is 0, so its validation AUC
    cannot improve: with patience 1, early stopping would end it after 2 of its 3 epochs."""
    from asinfer.trainer.train import TrainConfig, train

    cfg = TrainConfig(synth={"patients": 8, "slices": 3, "seed": 4, "size": 96}, image_size=32, warmup_size=32,
                      warmup_epochs=3, epochs=1, batch_size=8, calibration_images=4, batch_norm=False, patience=1,
                      learning_rate=0.0, learning_rate_after_warmup=1e-3,
                      warmup_synth={"patients": 8, "slices": 3, "seed": 5, "size": 96})
    messages = []
    manifest = train(cfg, tmp_path / "run", progress=messages.append)
    epochs = [m.split(":")[0] for m in messages if m.startswith("epoch ")]
    assert epochs == ["epoch 1", "epoch 2", "epoch 3", "epoch 4"] and manifest.training["epochs_run"] == 4
    assert [m for m in messages if m.startswith("training epochs")][1].startswith("training epochs 4-4")
    # history.csv names every column, also the learning rate logged only from the main phase on (Keras's
    # CSVLogger kept the warm-up's header and shifted the main phase's values one column right)
    header, *rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert "learning_rate" in header.split(",") and all(len(r.split(",")) == len(header.split(",")) for r in rows)
    logged = [float(m.rsplit("val_auc ", 1)[1]) for m in messages if m.startswith("epoch ")]
    history = manifest.training["history"]
    assert np.allclose(history["val_auc"], logged, atol=5e-4)  # the log rounds to 3 decimals
    assert history["learning_rate"][:3] == [None] * 3 and history["learning_rate"][3] == pytest.approx(1e-3)
    json.loads((tmp_path / "run" / "manifest.json").read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN


def test_history_written_by_keras_csvlogger_is_read_by_its_keys(tmp_path):
    """Runs before the History callback: a warm-up's header, the main phase's rows with learning_rate added
    in sorted order; 0.5.1's manifest read val_auc from those rows' val_accuracy."""
    train = importlib.import_module("asinfer.trainer.train")
    path = tmp_path / "history.csv"
    path.write_text("epoch,accuracy,auc,loss,val_accuracy,val_auc,val_loss\n"
                    "0,0.5,0.6,0.7,0.2,0.61,1.3\n"
                    "1,0.7,0.8,0.0002,0.5,0.55,0.78,0.54\n")
    history = train._read_history(path)
    assert history["val_auc"] == [0.61, 0.78] and history["val_loss"] == [1.3, 0.54] and history["loss"] == [0.7, 0.5]
    assert np.isnan(history["learning_rate"][0]) and history["learning_rate"][1] == 0.0002
    path.write_text("epoch,auc,val_auc\n0,0.5\n")
    with pytest.raises(ValueError, match="line 2 has 2 values for 3 columns"):
        train._read_history(path)


@requires_tf
def test_mirror_average_fits_on_the_same_scores_the_engine_gives(tiny_run):
    """The trainer's validation scores with mirror_average are the engine's definition: the mean over
    each slice and its left-right mirror (so the threshold is fitted on what the bundle will output)."""
    import importlib

    import keras

    train = importlib.import_module("asinfer.trainer.train")
    model = keras.models.load_model(tiny_run / "model.keras")
    x = np.load(tiny_run / "holdout.npz")["images"][:6]
    plain = model.predict(x, verbose=0).reshape(-1)
    mirrored = model.predict(np.ascontiguousarray(x[:, :, ::-1]), verbose=0).reshape(-1)
    assert np.abs(plain - mirrored).max() > 1e-4
    np.testing.assert_allclose(train._predict(model, x, mirror_average=True), (plain + mirrored) / 2, rtol=1e-5)
    np.testing.assert_allclose(train._predict(model, x), plain, rtol=1e-6)
