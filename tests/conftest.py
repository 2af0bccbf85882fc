"""Shared fixtures: tiny ONNX bundles (in a path with spaces), real DICOM test files."""

from __future__ import annotations

import importlib.util
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


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow; run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A bundle with onnx-fp32 and onnx-int8 tiny models, under a folder name with spaces."""
    pytest.importorskip("onnx", reason="building test models needs onnx (dev extra)")
    from asinfer.trainer.tiny import write_tiny_bundle

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
    if path is None:
        pytest.skip(f"pydicom test file {name} not installed")
    return Path(path)


def rng_image(shape, dtype=np.uint8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
