"""The engine stays lean: importing it pulls in no TensorFlow, Keras, trainer or heavy runtime."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("tensorflow", "keras", "tf_keras", "tf2onnx", "trainer", "onnx", "torch")


def _modules_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_engine_loads_no_tensorflow_or_trainer():
    loaded = _modules_after("import engine")
    assert not loaded & set(FORBIDDEN), loaded & set(FORBIDDEN)
    # and defers its own heavy dependencies until first use
    assert not loaded & {"cv2", "onnxruntime", "pydicom"}


def test_running_a_prediction_still_loads_no_tensorflow():
    code = ("import numpy as np, engine\n"
            "clf = engine.load(provider='cpu')\n"
            "clf.predict(np.zeros((64, 64), np.uint8))")
    loaded = _modules_after(code)
    assert not loaded & {"tensorflow", "keras", "tf_keras", "tf2onnx", "trainer"}


def test_cli_help_imports_no_runtime():
    loaded = _modules_after("from engine.cli import app")
    assert not loaded & {"tensorflow", "trainer", "cv2", "onnxruntime", "pydicom"}
