"""Training the VGG16 classifier on a dataset (or synthetic phantoms), writing a run directory.

Run directory (what ``asinfer.trainer.convert`` reads):
    manifest.json      engine manifest; artifacts = [keras]; metrics, threshold, config
    model.keras        the best model (validation AUC)
    holdout.npz        test split, preprocessed: images uint8 [N,S,S,1], labels
    calibration.npz    preprocessed training slices for int8 calibration (at most half the training set)
    parity.npz         every other preprocessed slice (training slices not calibrated on, validation,
                       test; at most PARITY_CAP): images, labels, split; conversion parity is judged on it
    train_config.json  the config that reproduces the run
    history.csv, roc.png, curves.png, checkpoints/last.keras (resume)
    checkpoints/partial.json + partial-E-B.keras: inside an epoch (resume there); gone at its end
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from asinfer.engine import InputSpec, Manifest, OutputSpec, PreprocessSpec
from asinfer.engine.bundle import read_manifest

from .data import load_indexed, read_dataset_info, read_index, split_by_patient

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PARITY_CAP = 1000  # slices for conversion parity: enough for a steady agreement and ΔAUC, cheap to run
# A checkpoint inside an epoch at most this often: an epoch at 224 px takes about an hour on two cores, and a
# run stopped in it resumes after the last such batch instead of from the epoch's start.
PARTIAL_EVERY_S = 600.0
log = logging.getLogger("asinfer.trainer")


@dataclass
class TrainConfig:
    """Everything a run depends on; stored as train_config.json in the run."""

    data: str = ""  # dataset folder or CSV; empty when ``synth`` makes one
    synth: dict[str, Any] = field(default_factory=dict)  # phantom dataset: write_dataset kwargs
    name: str = "asinfer-vgg16"
    version: str = "0.1.0"
    image_size: int = 224
    weights: str = "none"  # none | imagenet | path to VGG16 notop weights
    freeze_blocks: int = 3  # from scratch: VGG16 blocks 1..k frozen to save time
    batch_norm: bool | None = None  # VGG16-BN; None: on from scratch, off with pretrained weights
    warmup_epochs: int = 0  # from scratch: first train at warmup_size (cheap steps), then at image_size
    warmup_size: int = 112
    warmup_freeze_blocks: int = 0
    warmup_synth: dict[str, Any] = field(default_factory=dict)  # curriculum: easier phantoms for the warm-up
    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 1e-4
    head_epochs: int = 3  # pretrained only: phase 1 trains the head on a frozen base
    fine_tune_blocks: int = 1  # pretrained only: phase 2 unfreezes the last k blocks
    fine_tune_learning_rate: float = 1e-5
    patience: int = 4  # early stopping on validation AUC
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    rotation: float = 0.05  # augmentation, as the prototype: fraction of a full turn
    shift: float = 0.05
    zoom: float = 0.1
    flip: bool = True
    # Acquisition-like augmentation of the model input (0 = off, as in v1 recipes); per image:
    gamma: float = 0.0  # gamma drawn log-uniform in exp(+-gamma)
    contrast: float = 0.0  # contrast about the image mean scaled by 1 +- contrast
    noise: float = 0.0  # Gaussian noise, sigma up to this many 8-bit levels
    blur: float = 0.0  # Gaussian blur, sigma up to this many pixels (one sigma per batch)
    bias: float = 0.0  # smooth multiplicative field exp(bias * u * N(0,1) on a 4x4 grid), u in 0..1
    preprocessing: dict[str, Any] = field(default_factory=dict)  # PreprocessSpec fields (e.g. stretch_8bit)
    learning_rate_after_warmup: float | None = None  # from scratch: the rate at image_size [default: learning_rate]
    bn_reestimate_batches: int = 0  # FixRes: BN statistics measured again at image_size after the warm-up
    target_sensitivity: float | None = None  # else the threshold maximises Youden's J
    mirror_average: bool = False  # a slice's probability: mean over it and its mirror (thresholds fitted so too)
    mirror_tied: bool = False  # weights tied so that a mirror cannot change the output (trainer.mirror), one pass
    calibration_images: int = 300
    seed: int = 0

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        """Read a JSON config; unknown keys are an error naming the valid ones."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        valid = {f.name for f in fields(cls)}
        unknown = set(data) - valid
        if unknown:
            raise ValueError(f"unknown config key(s) {sorted(unknown)}; valid: {sorted(valid)}")
        return cls(**data)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    def override(self, **values: Any) -> "TrainConfig":
        """A copy with the given fields replaced; None leaves a field as it is (unset command-line options)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    @property
    def preprocess_spec(self) -> PreprocessSpec:
        """The preprocessing this run trains with, and its bundle records."""
        return PreprocessSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.preprocessing.items()})

    @property
    def uses_batch_norm(self) -> bool:
        """``batch_norm`` with its default resolved: on from scratch, off with pretrained weights."""
        return self.batch_norm if self.batch_norm is not None else self.weights == "none"


def train(config: TrainConfig, out: Path, resume: bool = False,
          progress: Callable[[str], None] | None = None) -> Manifest:
    """Train, pick the threshold on validation, evaluate on test, write the run directory.

    Args:
        config: the run's settings.
        out: run directory (created).
        resume: continue from ``out/checkpoints/last.keras`` if present; a
            finished run (manifest.json and model.keras written) is returned as it is.
        progress: called with one-line status messages.

    Returns:
        The run's manifest (artifact: keras).

    Example:
        >>> train(TrainConfig(data="phantoms/", epochs=1, image_size=64), Path("runs/x"))  # doctest: +SKIP
    """
    say = progress or (lambda msg: log.info(msg))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / "manifest.json").exists() and (out / "model.keras").exists():
        # A finished run: its model is the best epoch EarlyStopping restored, which
        # checkpoints/last.keras is not; re-evaluating that would replace it.
        say(f"{out} is a finished run (manifest.json, model.keras); nothing to resume")
        return read_manifest(out / "manifest.json")
    clock = _Clock(out / "wall_time_s", resume)
    config.save(out / "train_config.json")
    data_path = _dataset(config, out, say)
    splits, split_info, failures, members = _load_splits(data_path, config, out, say)
    warm = None
    if config.warmup_epochs and config.weights == "none":
        warm_path = _warmup_dataset(config, out, say) or data_path
        warm = _load_splits(warm_path, config, out, lambda _: None, config.warmup_size)[0]
    model, history = _fit(config, splits, out, resume, say, clock, warm)
    say("evaluating on validation (threshold) and test")
    metrics, threshold, p_test, p_val = _evaluate(model, splits, config)
    series_rule = _fit_series(members, p_val, p_test, metrics, config, split_info["by_patient"], say)
    _save_conversion_data(out, splits, config)
    _plots(out, history, splits["test"][1], p_test)
    model.save(out / "model.keras")
    wall = clock.save()
    return _write_manifest(out, config, data_path, split_info, failures, metrics, threshold, wall, history,
                           series_rule)


def _dataset(config: TrainConfig, out: Path, say) -> Path:
    if config.data:
        if read_dataset_info(Path(config.data)).get("test_only"):
            raise ValueError(f"{config.data} is a test-only dataset (dataset.json says test_only): it exists to "
                             "catch a model that learned one generator, so no model may be trained or tuned on it")
        return Path(config.data)
    if not config.synth:
        raise ValueError("config needs data (a dataset folder or CSV) or synth (phantom settings)")
    from .phantoms import write_dataset

    target = out / "data"
    if not (target / "labels.csv").exists():
        say(f"writing synthetic phantom dataset to {target}")
        write_dataset(target, **config.synth)
    return target


def _warmup_dataset(config: TrainConfig, out: Path, say) -> Path | None:
    """Curriculum: the warm-up's own phantoms (``warmup_synth``), e.g. one scanner preset and one anatomy.

    A network trained from scratch may never find a small lesion among everything the full
    distribution varies; it finds it on a narrow one within a few epochs, then keeps it while the
    main phase trains on the full variety. None: the warm-up uses the main data.
    """
    if not config.warmup_synth:
        return None
    from .phantoms import write_dataset

    target = out / "warmup_data"
    if not (target / "labels.csv").exists():
        say(f"writing the warm-up phantom dataset to {target}")
        write_dataset(target, **config.warmup_synth)
    return target


def _load_splits(data: Path, config: TrainConfig, out: Path, say, size: int | None = None):
    records = read_index(data)
    split = split_by_patient(records, config.val_fraction, config.test_fraction, config.seed)
    say(f"{len(records)} slices; split {'by patient' if split.by_patient else 'by slice'}: "
        + ", ".join(f"{k} {v['slices']} ({v['patients']} patients)" for k, v in split.info.items()))
    splits, failures, members = {}, [], {}
    for name in ("train", "val", "test"):
        chosen = [records[i] for i in getattr(split, name)]
        loaded = load_indexed(chosen, size or config.image_size, config.preprocess_spec, out / "cache")
        splits[name] = (loaded.images, loaded.labels.astype(np.float32))
        members[name] = (chosen, loaded.index)  # which record each image is: series are fitted per patient
        failures += loaded.failures
    if failures:
        say(f"{len(failures)} files could not be read and were left out (listed in the manifest)")
    return splits, split.info | {"by_patient": split.by_patient}, failures, members


class _Clock:
    """Wall time of a run, summed over the sessions that resumed it (kept in ``path``)."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path, self.started = path, time.time()
        self.prior = float(path.read_text()) if resume and path.exists() else 0.0

    def save(self) -> float:
        total = self.prior + time.time() - self.started
        self.path.write_text(f"{total:.1f}\n")
        return total


def _fit(config: TrainConfig, splits, out: Path, resume: bool, say, clock: _Clock, warm=None):
    """Train through the phases; returns the model and the history.

    Phases: (epochs, learning rate, frozen blocks, image size, data). From
    scratch, an optional warm-up at a smaller size comes first: convolution
    weights do not depend on the image size, so the same weights continue at
    ``image_size`` (progressive resizing), and a step there costs ~1/4.
    """
    from .model import build_model, freeze, load, vgg_base

    ckpt = out / "checkpoints" / "last.keras"
    history_csv = out / "history.csv"
    done = _epochs_done(history_csv) if resume and ckpt.exists() else 0
    partial = _partial_state(ckpt.parent) if resume else {}
    if partial.get("epoch") != done:  # none, or older than the last finished epoch, or another run's
        _drop_partial(ckpt.parent)
        partial = {}
    if partial:
        say(f"resuming inside epoch {done + 1} after batch {partial['batches']} from "
            f"{ckpt.parent / partial['file']}")
        model = load(ckpt.parent / partial["file"], compile=True)
    elif done:
        say(f"resuming after epoch {done} from {ckpt}")
        model = load(ckpt, compile=True)
    else:
        history_csv.unlink(missing_ok=True)
        model = build_model(config.image_size, config.weights, config.freeze_blocks, seed=config.seed,
                            batch_norm=config.batch_norm, mirror_tied=config.mirror_tied)
    size = config.image_size
    # (epochs, rate, frozen blocks, size, data, fixed: all its epochs at its rate, no early stop)
    if config.weights != "none":
        phases = [(config.head_epochs, config.learning_rate, 5, size, splits, False),
                  (config.epochs, config.fine_tune_learning_rate, 5 - config.fine_tune_blocks, size, splits, False)]
    else:
        phases = [(config.warmup_epochs, config.learning_rate, config.warmup_freeze_blocks, config.warmup_size,
                   warm, True)] if warm is not None else []
        after = config.learning_rate_after_warmup if warm is not None else None
        phases.append((config.epochs, after or config.learning_rate, config.freeze_blocks, size, splits, False))
    start = 0
    for epochs, lr, frozen, size, data, fixed in phases:
        end = start + epochs
        if done < end:
            resized = model.input_shape[1] != size
            if resized:
                model = _resized(model, size, config)
            freeze(vgg_base(model), frozen)
            if resized and done <= start and start > 0 and config.bn_reestimate_batches:  # trained weights only
                reestimate_batch_norm(model, data, config, say)
            callbacks = _callbacks(out, config, say, clock, fixed=fixed)
            if done > start and not fixed:  # resumed inside this phase
                lr, stopped = _continue_phase(model, callbacks, _read_history(history_csv), start, done, lr, say)
                if stopped:
                    start = end
                    continue
            skip = partial.get("batches", 0) if start <= done < end else 0  # of epoch `done`, already trained
            checkpointed = model.optimizer if (done > start or skip) and not resized else None
            _compile(model, lr)
            if checkpointed is not None:
                _carry_optimizer(checkpointed, model, say)
            frozen_text = f"blocks 1-{frozen} frozen" if frozen else "all blocks trainable"
            first = max(done, start)
            fit = dict(validation_data=data["val"], class_weight=_class_weights(data["train"][1]),
                       callbacks=callbacks, verbose=0)
            if skip:
                steps = math.ceil(len(data["train"][0]) / config.batch_size)
                say(f"training the rest of epoch {first + 1} at {size}x{size}: batches {skip + 1}-{steps} "
                    f"(drawn afresh; its training metrics cover these), {frozen_text}, lr {lr:g}")
                dataset = train_dataset(data["train"], config).take(steps - skip)
                if _finish_epoch(model, dataset, first, skip, first + 1 == end, fit):
                    start = end
                    continue
                first += 1
            say(f"training epochs {first + 1}-{end} at {size}x{size}: {frozen_text}, lr {lr:g}")
            model.fit(train_dataset(data["train"], config), initial_epoch=first, epochs=end, **fit)
        elif done == end > start and not fixed:
            # resumed right after the phase's last epoch: its fit ended by restoring the best epoch, which
            # checkpoints/last.keras (the last epoch) does not hold
            callbacks = _callbacks(out, config, say, clock)
            _continue_phase(model, callbacks, _read_history(history_csv), start, done, lr, say, ended=True)
        start = end
    if model.input_shape[1] != config.image_size:  # resumed after the last epoch of the warm-up
        model = _resized(model, config.image_size, config)
    return model, _read_history(history_csv)


def _finish_epoch(model, dataset, epoch: int, skip: int, last: bool, fit: dict) -> bool:
    """Train the rest of epoch ``epoch``, which a stopped run had trained ``skip`` batches of.

    A fit of its own, so two things one uninterrupted fit would not do are held back: early stopping
    restoring the best epoch's weights at its end (unless the phase ends here: stopped early, or
    ``last``), and the next fit resetting what early stopping and the rate cuts have counted.

    Returns:
        Whether the phase is over; if so, its best epoch's weights are in ``model``.
    """
    import keras

    callbacks = fit["callbacks"]
    counters = [cb for cb in callbacks
                if isinstance(cb, (keras.callbacks.EarlyStopping, keras.callbacks.ReduceLROnPlateau))]
    stopper = next((cb for cb in counters if isinstance(cb, keras.callbacks.EarlyStopping)), None)
    next(cb for cb in callbacks if hasattr(cb, "skip")).skip = skip
    if stopper is not None:
        stopper.on_train_end = lambda logs=None: None
    model.fit(dataset, initial_epoch=epoch, epochs=epoch + 1, **fit)
    over = bool(model.stop_training) or last
    for cb in counters:
        cb.on_train_begin = lambda logs=None: None  # the fit after this one goes on counting
    if stopper is not None:
        del stopper.on_train_end
        if over:
            stopper.on_train_end()
    return over


def _partial_state(folder: Path) -> dict:
    """checkpoints/partial.json ({epoch, batches, file}) if the file it names is there, else {}."""
    try:
        state = json.loads((folder / "partial.json").read_text())
        return state if (folder / state["file"]).is_file() and state["batches"] > 0 else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _save_partial(model, folder: Path, epoch: int, batches: int) -> None:
    """Model and optimizer after ``batches`` batches of ``epoch``: the file first, then partial.json naming it
    (each written whole, then renamed), then the older file goes; a kill at any point leaves a pair that agrees."""
    name = f"partial-{epoch}-{batches}.keras"
    model.save(folder / f"tmp-{name}")
    os.replace(folder / f"tmp-{name}", folder / name)
    tmp = folder / "partial.json.tmp"
    tmp.write_text(json.dumps({"epoch": epoch, "batches": batches, "file": name}))
    os.replace(tmp, folder / "partial.json")
    for stale in folder.glob("*partial-*.keras"):
        if stale.name != name:
            stale.unlink()


def _drop_partial(folder: Path) -> None:
    (folder / "partial.json").unlink(missing_ok=True)
    for stale in folder.glob("*partial-*.keras"):
        stale.unlink()


def reestimate_batch_norm(model, data, config: TrainConfig, say) -> None:
    """FixRes: measure every batch norm's statistics again at the new input size, weights untouched.

    After a warm-up at a smaller size the moving means and variances describe 112-px images; frozen
    blocks would keep them for good. Forward passes in training mode over augmented training batches
    (every BN layer briefly trainable; no optimiser step) replace them by the new size's statistics:
    batch k is weighted 1/(k+1), so the result is the plain average over the batches, not a
    momentum-0.99 blend that would keep most of the old size's values.
    """
    import keras

    from .mirror import tie_statistics
    from .model import all_layers

    layers = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.trainable, layer.momentum) for layer in layers]
    for layer in layers:
        layer.trainable = True
    batches = 0
    for x, _ in train_dataset(data["train"], config).take(config.bn_reestimate_batches):
        for layer in layers:
            layer.momentum = batches / (batches + 1)  # new = old * momentum + batch * (1 - momentum)
        model(x, training=True)
        batches += 1
    for layer, (trainable, momentum) in zip(layers, saved):
        layer.trainable, layer.momentum = trainable, momentum
    tie_statistics(model)  # a mirror-tied model's pairs measured on different batches; no-op otherwise
    say(f"batch norm statistics re-estimated at {model.input_shape[1]}x{model.input_shape[1]} over {batches} batches")


def _resized(model, size: int, config: TrainConfig):
    """The same weights in a model built for ``size`` x ``size`` input."""
    from .model import build_model

    new = build_model(size, "none", seed=config.seed, batch_norm=config.uses_batch_norm,
                      mirror_tied=config.mirror_tied)
    new.set_weights(model.get_weights())
    return new


def _compile(model, lr: float) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")])


def train_dataset(train, config: TrainConfig):
    """Shuffled, augmented uint8 batches; augmentation stays out of the exported model."""
    import keras
    import tensorflow as tf
    from keras import layers

    aug = keras.Sequential([
        layers.RandomRotation(config.rotation, fill_mode="constant", seed=config.seed),
        layers.RandomTranslation(config.shift, config.shift, fill_mode="constant", seed=config.seed),
        layers.RandomZoom(config.zoom, fill_mode="constant", seed=config.seed),
        *([layers.RandomFlip("horizontal", seed=config.seed)] if config.flip else []),
    ], name="augment")

    photometric = photometric_augmentation(config)

    def augment(x, y):
        x = photometric(aug(tf.cast(x, tf.float32), training=True))
        return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8), y

    images, labels = train
    return (tf.data.Dataset.from_tensor_slices((images, labels))
            .shuffle(len(images), seed=config.seed, reshuffle_each_iteration=True)
            .batch(config.batch_size).map(augment, num_parallel_calls=1).prefetch(1))


def photometric_augmentation(config: TrainConfig):
    """Per-image gamma, bias field, contrast, blur and noise on a float batch in 0..255 (identity when all 0)."""
    import tensorflow as tf

    if not any((config.gamma, config.bias, config.contrast, config.blur, config.noise)):
        return lambda x: x
    gen = tf.random.Generator.from_seed(config.seed + 7)

    def apply(x):
        n = tf.shape(x)[0]
        uniform = lambda lo, hi: gen.uniform(tf.stack([n, 1, 1, 1]), lo, hi)
        v = x / 255.0
        if config.gamma:
            v = tf.pow(tf.clip_by_value(v, 1e-6, 1.0), tf.exp(uniform(-config.gamma, config.gamma)))
        if config.bias:
            coarse = gen.normal(tf.stack([n, 4, 4, 1]))
            v *= tf.exp(config.bias * uniform(0.0, 1.0) * tf.image.resize(coarse, tf.shape(x)[1:3], "bicubic"))
        if config.contrast:
            mean = tf.reduce_mean(v, axis=[1, 2, 3], keepdims=True)
            v = (v - mean) * uniform(1 - config.contrast, 1 + config.contrast) + mean
        if config.blur:
            sigma = tf.maximum(gen.uniform([], 0.0, config.blur), 1e-3)
            taps = tf.exp(-tf.range(-3.0, 4.0) ** 2 / (2 * sigma ** 2))
            taps /= tf.reduce_sum(taps)
            v = tf.nn.conv2d(v, tf.reshape(taps, [7, 1, 1, 1]), 1, "SAME")
            v = tf.nn.conv2d(v, tf.reshape(taps, [1, 7, 1, 1]), 1, "SAME")
        if config.noise:
            v += gen.normal(tf.shape(v)) * uniform(0.0, config.noise / 255.0)
        return tf.clip_by_value(v, 0.0, 1.0) * 255.0

    return apply


def _class_weights(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights so the rarer class counts as much in the loss."""
    n, pos = len(labels), float(labels.sum())
    if pos in (0, n):
        return {0: 1.0, 1: 1.0}
    return {0: n / (2 * (n - pos)), 1: n / (2 * pos)}


def _callbacks(out: Path, config: TrainConfig, say, clock: _Clock, fixed: bool = False):
    """Checkpoints, history and progress; early stopping and rate cuts too unless ``fixed``.

    The warm-up is ``fixed``: it runs all its epochs at its rate. From scratch its validation AUC sits
    near 0.5 for several epochs before it climbs, so early stopping ended a clean run's warm-up after
    9 of 20 epochs (training AUC 0.65) and restored epoch 4's weights, and the main phase started from
    an untrained network. (0.2.0's warm-up escaped this only because it was resumed, which resets the
    callbacks.)
    """
    import keras

    from .mirror import TieStatistics

    (out / "checkpoints").mkdir(exist_ok=True)

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            clock.save()
            say(f"epoch {epoch + 1}: loss {logs.get('loss', 0):.4f} auc {logs.get('auc', 0):.3f} "
                f"val_loss {logs.get('val_loss', 0):.4f} val_auc {logs.get('val_auc', 0):.3f}")

    class BestEpoch(keras.callbacks.Callback):
        """Writes which epoch best.keras holds into best.json (placed right after its ModelCheckpoint,
        it sees that checkpoint's ``best`` change exactly when it saved); a resume restores that epoch."""

        def __init__(self, saver):
            super().__init__()
            self.saver, self.best_json, self.seen = saver, Path(saver.filepath).with_suffix(".json"), None

        def on_train_begin(self, logs=None):
            self.seen = self.saver.best

        def on_epoch_end(self, epoch, logs=None):
            if self.saver.best is not None and self.saver.best != self.seen:
                self.seen = self.saver.best
                tmp = self.best_json.with_suffix(".json.tmp")
                tmp.write_text(json.dumps({"epoch": epoch, "val_auc": float(self.seen)}))
                os.replace(tmp, self.best_json)

    class History(keras.callbacks.Callback):
        """history.csv, one row per epoch over every phase and resume, under a header naming every key.

        Keras's CSVLogger, appending, keeps the header it finds: a key logged only from a later phase on
        (``learning_rate``, once ReduceLROnPlateau runs after the warm-up) shifted those rows' values one
        column right of their names, so "val_auc" read val_accuracy. Here the file is rewritten whole
        (it is small) with the union of the keys.
        """

        def on_epoch_end(self, epoch, logs=None):
            path = out / "history.csv"
            history = _read_history(path)
            rows = [dict(zip(history, values)) for values in zip(*history.values())]
            rows = [r for r in rows if r["epoch"] < epoch]  # a redone epoch replaces its row
            rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
            keys = ["epoch", *sorted({k for r in rows for k in r} - {"epoch"})]
            tmp = path.with_suffix(".csv.tmp")
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, keys, restval="NA")
                writer.writeheader()
                for r in rows:
                    writer.writerow({k: int(v) if k == "epoch" else "NA" if math.isnan(v) else repr(v)
                                     for k, v in r.items()})
            os.replace(tmp, path)

    class MidEpoch(keras.callbacks.Callback):
        """A checkpoint inside the epoch every PARTIAL_EVERY_S (never after its last batch: the epoch's end
        writes last.keras); dropped once the epoch's row is in history.csv. ``skip``: batches of the first
        epoch trained before a resume."""

        skip = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.since = epoch, time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            if time.monotonic() - self.since >= PARTIAL_EVERY_S and batch + 1 < (self.params.get("steps") or 0):
                _save_partial(self.model, out / "checkpoints", self.epoch, self.skip + batch + 1)
                clock.save()
                self.since = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            self.skip = 0
            _drop_partial(out / "checkpoints")

    best = keras.callbacks.ModelCheckpoint(out / "checkpoints" / "best.keras", monitor="val_auc", mode="max",
                                           save_best_only=True)
    return [
        keras.callbacks.ModelCheckpoint(out / "checkpoints" / "last.keras"),
        best,
        BestEpoch(best),
        *([] if fixed else [
            keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=config.patience,
                                          restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.3, patience=2, min_lr=1e-6),
        ]),
        History(),
        MidEpoch(),  # after History: the epoch's row is written before its partial checkpoint goes
        Report(),
        *([TieStatistics()] if config.mirror_tied else []),
    ]


def _continue_phase(model, callbacks, history: dict[str, list[float]], start: int, done: int, lr: float, say,
                    ended: bool = False):
    """Give a phase resumed after epoch ``done`` the state one uninterrupted fit would have had.

    EarlyStopping and ReduceLROnPlateau start afresh with every fit, so a resumed phase used to forget
    its best epoch (and restore the best of the epochs after the resume), its patience count and its
    rate cuts. Here the phase's finished epochs (their validation AUC in history.csv) are played to
    the fresh callbacks on a stand-in model, which gives their counters, best value and learning rate
    as Keras computed them; the best epoch's weights come from checkpoints/best.keras when best.json
    says it holds that epoch (Adam's state: ``_carry_optimizer``).

    ``ended``: epoch ``done`` was the phase's last; the best epoch's weights go into ``model``, as
    early stopping restores them at the end of a fit.

    Returns:
        (learning rate to continue at, whether the phase is over: stopped early or ``ended``); if it is,
        the best epoch's weights are now in ``model`` and the caller skips the rest of the phase.
    """
    import warnings
    from types import SimpleNamespace

    import keras

    from .model import load

    stopper = next(cb for cb in callbacks if isinstance(cb, keras.callbacks.EarlyStopping))
    cutter = next(cb for cb in callbacks if isinstance(cb, keras.callbacks.ReduceLROnPlateau))
    marker = next(cb for cb in callbacks if hasattr(cb, "best_json"))
    # get_weights: not None, or EarlyStopping takes every epoch for the first one it has seen
    stand_in = SimpleNamespace(optimizer=SimpleNamespace(learning_rate=lr), stop_training=False,
                               get_weights=lambda: [])
    for cb in (stopper, cutter):
        cb.set_model(stand_in)
        cb.on_train_begin()
    aucs = history.get("val_auc", [])
    for epoch in range(start, done):
        value = aucs[epoch] if epoch < len(aucs) else math.nan
        with warnings.catch_warnings(action="ignore"):  # an epoch without validation; Keras warned then
            for cb in (stopper, cutter):
                cb.on_epoch_end(epoch, {} if math.isnan(value) else {"val_auc": value})
    try:
        saved = json.loads(marker.best_json.read_text())
    except (OSError, ValueError):
        saved = {}
    if stopper.best is None or saved.get("epoch") != stopper.best_epoch:
        found = f"checkpoints/best.keras does not hold the phase's best epoch so far ({saved or 'no best.json'})"
        say(f"{found}: keeping the last epoch" if ended
            else f"{found}: early stopping and rate cuts start afresh, as in a new fit")
        return lr, ended
    stopper.best_weights = load(marker.saver.filepath, compile=False).get_weights()
    marker.saver.best = stopper.best  # best.keras is replaced only by a better epoch
    for cb in (stopper, cutter):
        cb.on_train_begin = lambda logs=None: None  # the fit must not reset the played state
    lr = float(stand_in.optimizer.learning_rate)
    say(f"phase state after epoch {done}: best epoch {stopper.best_epoch + 1} (val_auc {stopper.best:.4f}), "
        f"{stopper.wait} epoch(s) since, lr {lr:g}")
    if stand_in.stop_training or ended:
        how = f"stopped early after epoch {stopper.stopped_epoch + 1}" if stand_in.stop_training else "ended"
        say(f"the phase had {how}; keeping epoch {stopper.best_epoch + 1}")
        model.set_weights(stopper.best_weights)
        return lr, True
    return lr, False


def _carry_optimizer(old, model, say) -> None:
    """Adam's step count and moment estimates from the checkpoint into the newly compiled optimizer.

    Compiling again (the phase's frozen blocks and rate) builds a fresh Adam, whose moments would
    restart at zero and its bias correction at step 1. Variables pair by name; the rate stays the new
    one (the checkpoint is written before a rate cut of its epoch takes effect). Nothing is carried if
    the two do not match one for one.
    """
    new = model.optimizer
    new.build(model.trainable_variables)

    def named(optimizer):
        return {v.path.split("/", 1)[-1]: v for v in optimizer.variables if not v.path.endswith("/learning_rate")}

    src, dst = named(old), named(new)
    if not src or src.keys() != dst.keys() or any(src[k].shape != dst[k].shape for k in src):
        say("optimizer state not carried over (the checkpoint's variables differ): Adam starts afresh")
        return
    for key, variable in dst.items():
        variable.assign(src[key])
    say(f"optimizer state carried over (step {int(new.iterations.numpy())})")


def _epochs_done(history_csv: Path) -> int:
    return len(_read_history(history_csv).get("epoch", []))


def _read_history(path: Path) -> dict[str, list[float]]:
    if not path.exists():
        return {}
    with open(path, newline="") as fh:
        header, *lines = [line for line in csv.reader(fh) if line] or [[]]
    rows = []
    for number, line in enumerate(lines, 2):
        names = header
        if len(line) == len(header) + 1 and "learning_rate" not in header:
            # written by Keras's CSVLogger (before the History callback): it kept the first phase's header
            # and wrote a later phase's rows with learning_rate added, every row's keys sorted
            names = [header[0], *sorted([*header[1:], "learning_rate"])]
        if len(line) != len(names):
            raise ValueError(f"{path}: line {number} has {len(line)} values for {len(names)} columns")
        rows.append(dict(zip(names, line)))
    # NA: a metric an epoch did not log (e.g. a phase without validation data); every key keeps one
    # value per epoch (nan: none)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [float(r[k]) if r.get(k) not in (None, "", "NA") else math.nan for r in rows] for k in keys}


def _evaluate(model, splits, config: TrainConfig):
    from .metrics import binary_metrics, choose_threshold

    p_val = _predict(model, splits["val"][0], config.mirror_average)
    threshold = choose_threshold(splits["val"][1], p_val, config.target_sensitivity)
    p_test = _predict(model, splits["test"][0], config.mirror_average)
    metrics = {"test": binary_metrics(splits["test"][1], p_test, threshold),
               "validation": binary_metrics(splits["val"][1], p_val, threshold)}
    return metrics, threshold, p_test, p_val


def _fit_series(members, p_val, p_test, metrics: dict, config: TrainConfig, by_patient: bool, say):
    """The series rule, fitted on the validation patients; series metrics on both held-out splits.

    None (the engine then uses the slice threshold) when the split is not by patient or the
    validation patients hold one class.
    """
    from .series import fit_series_rule, series_from_slices, series_metrics

    if not by_patient:
        say("no patient ids: no series rule fitted (the engine will use the slice threshold)")
        return None
    val, test = (series_from_slices(*members[name], probs) for name, probs in (("val", p_val), ("test", p_test)))
    try:
        rule = fit_series_rule(val, config.target_sensitivity)
    except ValueError as exc:
        say(f"no series rule fitted: {exc}")
        return None
    metrics["series_validation"], metrics["series_test"] = series_metrics(val, rule), series_metrics(test, rule)
    say(f"series rule {rule.kind} at {rule.threshold:.4f}; test series AUC {metrics['series_test']['auc']}")
    return rule


def _predict(model, images: np.ndarray, mirror_average: bool = False) -> np.ndarray:
    """Slice probabilities as the bundle will define them (``OutputSpec.mirror_average``)."""
    p = model.predict(images, batch_size=32, verbose=0).reshape(-1)
    if mirror_average:
        p = (p + model.predict(np.ascontiguousarray(images[:, :, ::-1]), batch_size=32, verbose=0).reshape(-1)) / 2
    return p


def _save_conversion_data(out: Path, splits, config: TrainConfig) -> None:
    """holdout.npz (test), calibration.npz and parity.npz: what the converter reads (module docstring).

    Conversion fidelity does not need held-out data, only slices the
    quantiser did not calibrate on; so calibration takes at most half of the
    training slices and parity gets everything else, up to PARITY_CAP.
    """
    images, labels = splits["test"]
    np.savez(out / "holdout.npz", images=images, labels=labels.astype(np.int8))
    train_images, train_labels = splits["train"]
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(train_images))
    n_cal = min(config.calibration_images, max(1, len(train_images) // 2))
    calibrate, rest = np.sort(order[:n_cal]), np.sort(order[n_cal:])
    np.savez(out / "calibration.npz", images=train_images[calibrate])
    pool = [(train_images[rest], train_labels[rest], "train"), (*splits["val"], "validation"), (*splits["test"], "test")]
    images = np.concatenate([p[0] for p in pool])
    labels = np.concatenate([p[1] for p in pool]).astype(np.int8)
    split = np.concatenate([np.full(len(p[0]), p[2]) for p in pool])
    if len(images) > PARITY_CAP:
        keep = np.sort(rng.choice(len(images), PARITY_CAP, replace=False))
        images, labels, split = images[keep], labels[keep], split[keep]
    np.savez(out / "parity.npz", images=images, labels=labels, split=split)


def _plots(out: Path, history: dict, labels: np.ndarray, probs: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [e + 1 for e in history.get("epoch", [])]
    for key, ax in (("loss", axes[0]), ("auc", axes[1])):
        if key in history:
            ax.plot(epochs, history[key], "o-", label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s-", label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.suptitle("Training curves (synthetic phantom data, not diagnostic)")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=80)
    plt.close(fig)
    if len(set(labels.tolist())) == 2:
        fpr, tpr, _ = roc_curve(labels, probs)
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot(fpr, tpr)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        ax.set_title("ROC, held-out test patients")
        fig.tight_layout()
        fig.savefig(out / "roc.png", dpi=80)
        plt.close(fig)


def _write_manifest(out, config, data_path, split_info, failures, metrics, threshold, wall, history,
                    series_rule=None) -> Manifest:
    from .bundle import describe_machine, write_bundle

    synthetic = _is_synthetic(data_path)
    manifest = Manifest(
        name=config.name, version=config.version, threshold=round(float(threshold), 6),
        input=InputSpec(height=config.image_size, width=config.image_size),
        output=OutputSpec(mirror_average=config.mirror_average),
        preprocessing=config.preprocess_spec,
        description=_describe(config),
        synthetic_training_data=synthetic,
        notice=("Trained on SYNTHETIC phantoms only: not a diagnostic device, no clinical validity."
                if synthetic else "Research software. Not a diagnostic device."),
        training={"data": str(data_path), "synthetic": synthetic, "splits": split_info,
                  "unreadable_files": failures[:50], "config": asdict(config),
                  "epochs_run": len(history.get("epoch", [])), "wall_time_s": round(wall, 1),
                  "machine": describe_machine(),
                  # an epoch that did not log a key (the warm-up's learning_rate): null, as strict JSON has no NaN
                  "history": {k: [None if math.isnan(v) else v for v in values] for k, values in history.items()}},
        metrics=metrics,
        series_rule=series_rule,
        tools=_tool_versions(),
    )
    return write_bundle(out, manifest, {"keras": "model.keras"})


def _describe(config: TrainConfig) -> str:
    if config.mirror_tied:
        return ("VGG16-BN slice classifier with mirror-tied weights: the prototype's VGG16 with batch norm after "
                "each convolution (folded into the convolutions at conversion), each layer's channels in "
                "left-right mirrored pairs and no pool after block 5, so that a slice and its mirror get the "
                "same probability; uint8 grey input.")
    if config.uses_batch_norm:
        return ("VGG16-BN slice classifier: the prototype's VGG16 with batch norm after each convolution "
                "(folded into the convolutions at conversion), uint8 grey input.")
    return "VGG16 slice classifier (prototype architecture), uint8 grey input."


def _is_synthetic(data: Path) -> bool:
    return bool(read_dataset_info(data).get("synthetic"))


def _tool_versions() -> dict[str, str]:
    from .bundle import tool_versions

    return tool_versions(("asinfer", "tensorflow", "keras", "numpy", "opencv-python-headless", "pydicom",
                          "onnxruntime"))
