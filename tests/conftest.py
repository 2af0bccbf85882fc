"""Shared fixtures: tiny ONNX bundles (in a path with spaces), real DICOM test files, and one tiny
TensorFlow run, trained and converted once per session for every test that needs one."""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

SIZE = 32  # tiny model input: engine tests run in seconds

requires_tf = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf2onnx") is None,
    reason="needs TensorFlow and tf2onnx: pip install -e '.[train]' (.ci/run installs it)",
)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A bundle with onnx-fp32 and onnx-int8 tiny models, under a folder name with spaces."""
    from asinfer.trainer.tiny import write_tiny_bundle  # needs onnx (the dev extra): fails loudly without it

    folder = tmp_path_factory.mktemp("models") / "path with spaces" / "tiny bundle"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_tiny_bundle(folder, size=SIZE)
    return folder


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy of the tiny bundle that a test may tamper with."""
    dst = tmp_path / "bundle copy"
    shutil.copytree(tiny_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def classifier(tiny_bundle):
    from asinfer import engine

    return engine.load(tiny_bundle, provider="cpu", artifact="onnx-fp32", threads=2)


def dicom_file(name: str) -> Path:
    """A real DICOM file shipped with pydicom's test data."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None, f"pydicom no longer ships its test file {name}; pick another"
    return Path(path)


def rng_image(shape, dtype=np.uint8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


# --- one tiny TensorFlow run for the whole session ---------------------------------------------------------------


def tiny_batch(seed: int, patients: int, slices: int) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed phantom slices (uint8 [N,32,32,1]), half of them dimmed and labelled 1.

    Two training steps cannot learn sacroiliitis at 32x32, and a model that
    ranks slices by noise would make AUC parity a coin toss. Brightness is
    something even an untrained ReLU net ranks, so the labels are separable
    and the parity numbers measure the conversion, not luck.
    """
    from asinfer import engine
    from asinfer.trainer.phantoms import generate_series

    pre = engine.Preprocessor(size=(SIZE, SIZE), threads=1)
    images = np.concatenate([pre(list(generate_series(seed + k, slices=slices, size=64,
                                                      positive=bool(k % 2)).images)) for k in range(patients)])
    labels = np.arange(len(images)) % 2
    images[labels == 1] = (images[labels == 1] * 0.4).astype(np.uint8)
    return images, labels.astype(np.int8)


def _midway_threshold(p: np.ndarray, labels: np.ndarray) -> float:
    """Midway between the classes' predictions (the tiny model's Youden point)."""
    lo, hi = sorted([p[labels == 0], p[labels == 1]], key=np.mean)
    return float((lo.max() + hi.min()) / 2) if lo.max() < hi.min() else float(np.median(p))


def write_tiny_run(run_dir: Path, mirror_tied: bool = False) -> None:
    """A run folder as training writes it, from a 32x32 VGG16 trained for two steps."""
    import keras

    from asinfer import engine
    from asinfer.trainer.bundle import write_bundle
    from asinfer.trainer.model import build_model

    train, train_labels = tiny_batch(100, 2, 8)
    holdout, labels = tiny_batch(200, 4, 6)
    model = build_model(SIZE, seed=0, mirror_tied=mirror_tied)
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="binary_crossentropy")  # gentle: keep the ranking
    for _ in range(2):
        model.train_on_batch(train, train_labels.astype(np.float32))
    if mirror_tied:
        from asinfer.trainer.mirror import tie_statistics

        tie_statistics(model)
    model.save(run_dir / "model.keras")
    np.savez(run_dir / "holdout.npz", images=holdout, labels=labels)
    np.savez(run_dir / "parity.npz", images=holdout, labels=labels, split=np.full(len(labels), "test"))
    np.savez(run_dir / "calibration.npz", images=train)
    (run_dir / "MODEL_CARD.md").write_text("# tiny test model\nSynthetic; not a diagnostic device.\n")
    (run_dir / "roc.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (run_dir / "train_config.json").write_text(
        json.dumps({"image_size": SIZE, "batch_norm": True, "mirror_tied": mirror_tied}) + "\n")
    threshold = _midway_threshold(model.predict(holdout, verbose=0).reshape(-1), labels)
    manifest = engine.Manifest(name="convert-test", version="0.0.1", threshold=threshold,
                               input=engine.InputSpec(height=SIZE, width=SIZE), training={"steps": 2})
    write_bundle(run_dir, manifest, {"keras": "model.keras"})


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A pristine tiny run folder (Keras only); copy it before changing anything in it."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("needs TensorFlow: pip install -e '.[train]'")
    run_dir = tmp_path_factory.mktemp("tiny run") / "path with spaces" / "run"
    run_dir.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_tiny_run(run_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_converted(tiny_run, tmp_path_factory):
    """(run_dir, bundle, the bundle's manifest, progress lines): a copy of ``tiny_run`` with every format
    converted once (run_dir: all artifacts; bundle: the shipped ones)."""
    from asinfer.trainer.convert import convert

    root = tmp_path_factory.mktemp("converted") / "path with spaces"
    run_dir, out = root / "run", root / "bundle"
    shutil.copytree(tiny_run, run_dir)
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = convert(run_dir, out=out, progress=lines.append)
    return run_dir, out, result.manifest, lines
