"""The engine stays lean: importing it pulls in no TensorFlow, Keras, trainer or heavy runtime."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("tensorflow", "keras", "tf_keras", "tf2onnx", "asinfer.trainer", "asinfer.benchmarks", "onnx", "torch")


def _modules_after(code: str) -> set[str]:
    """Top-level modules, and asinfer's packages by their full name, loaded after ``code``."""
    script = (f"{code}\nimport json, sys\n"
              "print(json.dumps(sorted({'.'.join(m.split('.')[:2 if m.startswith('asinfer.') else 1]) "
              "for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_engine_loads_no_tensorflow_or_trainer():
    loaded = _modules_after("import asinfer.engine")
    assert not loaded & set(FORBIDDEN), loaded & set(FORBIDDEN)
    # and defers its own heavy dependencies until first use
    assert not loaded & {"cv2", "onnxruntime", "pydicom", "pynetdicom", "highdicom", "dask", "distributed", "pyarrow"}


def test_import_screen_loads_no_dask_or_arrow():
    """asinfer screen's library imports dask.distributed and pyarrow only when a run starts."""
    loaded = _modules_after("import asinfer.engine.screen; import asinfer.engine.screen.cli")
    assert not loaded & {"dask", "distributed", "pyarrow", "onnxruntime", "tensorflow", "asinfer.trainer"}


def test_import_node_loads_no_network_stack():
    """The node's library (config, spool) imports pynetdicom only when it starts serving."""
    loaded = _modules_after("import asinfer.engine.node")
    assert not loaded & {"pynetdicom", "highdicom", "onnxruntime", "tensorflow", "asinfer.trainer"}


def test_running_a_prediction_still_loads_no_tensorflow():
    code = ("import numpy as np\nfrom asinfer import engine\n"
            "clf = engine.load(provider='cpu')\n"
            "clf.predict(np.zeros((64, 64), np.uint8))")
    loaded = _modules_after(code)
    assert not loaded & {"tensorflow", "keras", "tf_keras", "tf2onnx", "asinfer.trainer"}


def test_cli_help_imports_no_runtime():
    loaded = _modules_after("from asinfer.engine.cli import app")
    assert not loaded & {"tensorflow", "asinfer.trainer", "cv2", "onnxruntime", "pydicom"}
