"""The asinfer CLI through typer's CliRunner: formats, output file, exit codes."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from asinfer.engine.cli import app

from conftest import dicom_file, rng_image

runner = CliRunner()


@pytest.fixture()
def inputs(tmp_path):
    folder = tmp_path / "scan folder"
    folder.mkdir()
    shutil.copy(dicom_file("MR_small.dcm"), folder / "IM 0001.dcm")
    cv2.imwrite(str(folder / "slice two.png"), rng_image((80, 80)))
    return folder


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("asinfer ")


def test_help_lists_commands_and_exit_codes():
    result = invoke("--help")
    assert result.exit_code == 0
    for word in ("predict", "info", "synth", "Exit codes"):
        assert word in result.stdout


def test_predict_table(inputs, tiny_bundle):
    result = invoke("predict", inputs, "--model", tiny_bundle)
    assert result.exit_code == 0, result.output
    assert "IM 0001.dcm" in result.stdout and "slice two.png" in result.stdout
    assert "2 slices predicted" in result.stderr


def test_predict_json(inputs, tiny_bundle):
    result = invoke("predict", inputs, "-m", tiny_bundle, "--format", "json", "--provider", "cpu")
    data = json.loads(result.stdout)
    assert result.exit_code == 0
    assert data["model"]["artifact"] == "onnx-int8" and data["model"]["provider"] == "cpu"
    assert len(data["results"]) == 2 and all(0 <= r["probability"] <= 1 for r in data["results"])


def test_predict_csv_to_file_with_a_failure(inputs, tiny_bundle, tmp_path):
    (inputs / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM")
    out = tmp_path / "out dir" / "results.csv"
    out.parent.mkdir()
    result = invoke("predict", inputs, "-m", tiny_bundle, "-f", "csv", "-o", out)
    assert result.exit_code == 1
    assert result.stdout == ""
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["source"].rsplit("/", 1)[-1] for r in rows] == ["IM 0001.dcm", "broken.dcm", "slice two.png"]
    assert rows[1]["reason"] == "truncated" and rows[1]["message"] and not rows[1]["probability"] and rows[0]["label"] in ("AS", "no AS")
    assert "1 failed" in result.stderr and "Traceback" not in result.output


def test_threshold_and_batch_options(inputs, tiny_bundle):
    result = invoke("predict", inputs, "-m", tiny_bundle, "-f", "json", "--threshold", "0", "--batch-size", "1")
    assert {r["label"] for r in json.loads(result.stdout)["results"]} == {"AS"}


@pytest.mark.parametrize("args,message", [
    (["--model", "/no/such/model"], "does not exist"),
    (["--artifact", "onnx-fp8"], "Invalid format"),
    (["--provider", "cuda"], "not available"),
])
def test_model_and_usage_errors_exit_2_without_traceback(inputs, tiny_bundle, args, message):
    base = [] if "--model" in args else ["--model", tiny_bundle]
    result = invoke("predict", inputs, *base, *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output


def test_bad_option_value_exits_2(inputs):
    assert invoke("predict", inputs, "--batch-size", "0").exit_code == 2
    assert invoke("predict", inputs, "--format", "xml").exit_code == 2


def test_info_shows_artifacts_hashes_and_providers(tiny_bundle):
    result = invoke("info", tiny_bundle)
    assert result.exit_code == 0
    assert "onnx-int8" in result.stdout and "sha256" in result.stdout and "cpu" in result.stdout
    data = json.loads(invoke("info", tiny_bundle, "--json").stdout)
    assert data["checks"] == {"onnx-fp32": "ok", "onnx-int8": "ok"}


def test_info_shows_the_shipped_models_test_metrics():
    """Metrics are nested per split in a trained bundle's manifest; info must show them, not an empty line."""
    from asinfer.engine import default_model, locate

    test = locate(default_model())[0].metrics["test"]
    result = invoke("info")
    assert result.exit_code == 0
    assert f"metrics     test: n {test['n']}, accuracy {test['accuracy']:g}, auc {test['auc']:g}" in result.stdout


def test_info_flags_a_tampered_bundle(bundle_copy):
    (bundle_copy / "model.fp32.onnx").write_bytes(b"tampered")
    result = invoke("info", bundle_copy)
    assert result.exit_code == 2 and "sha256 mismatch" in result.stdout


def test_shipped_model_and_console_script():
    """The installed `asinfer` console script (not `python -m`) answers, and the default model checks out."""
    script = Path(sys.executable).parent / ("asinfer.exe" if sys.platform == "win32" else "asinfer")
    assert script.exists(), f"no console script at {script}: is asinfer installed in this environment?"
    out = subprocess.run([str(script), "info", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["manifest"]["name"] == "asinfer-vgg16-phantom" and set(data["checks"].values()) == {"ok"}


def test_python_m_runs_the_same_cli():
    out = subprocess.run([sys.executable, "-m", "asinfer.engine", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("asinfer ")


@pytest.mark.parametrize("fmt", ["png", "dicom"])
def test_synth_then_predict(tmp_path, tiny_bundle, fmt):
    out = tmp_path / "phantom set"
    result = invoke("synth", out, "--patients", 2, "--slices", 2, "--format", fmt, "--size", 96, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert "4 slices of 2 synthetic patients" in result.stdout
    assert (out / "labels.csv").exists()
    predicted = invoke("predict", out, "-m", tiny_bundle, "-f", "csv")
    assert predicted.exit_code == 0 and predicted.stdout.count("\n") == 5  # header + 4 slices


def test_synth_refuses_bad_values_and_non_empty_folders(tmp_path):
    assert "Valid profiles are" in invoke("synth", tmp_path / "a", "--profile", "philips").stderr
    assert "Did you mean 'elderly'" in invoke("synth", tmp_path / "a2", "--anatomy", "eldrly").stderr
    assert invoke("synth", tmp_path / "b", "--format", "nifti").exit_code == 2
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "old.png").write_bytes(b"")
    result = invoke("synth", tmp_path / "c", "--patients", 1)
    assert result.exit_code == 2 and "not empty" in result.stderr


# --- commands of other packages: listed without importing them, a missing extra named -------------------------


def test_help_lists_every_command_without_loading_the_trainer():
    code = ("import sys\nfrom asinfer.engine.cli import app\n"
            "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m.startswith(('asinfer.trainer', 'asinfer.benchmarks', "
            "'tensorflow', 'asinfer.engine.node', 'pynetdicom'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in ("predict", "info", "formats", "synth", "train", "convert", "bench", "serve"):
        assert f"  {name} " in out, name
    assert out.strip().endswith("LOADED []")


def test_missing_extra_names_the_extra_and_synth_does_not_need_it(tmp_path, monkeypatch):
    """Without TensorFlow, train says which extra installs it (exit 2, no traceback); synth still works."""
    for blocked in ("tensorflow", "keras"):
        monkeypatch.setitem(sys.modules, blocked, None)  # import raises ModuleNotFoundError
    data = tmp_path / "data"
    made = invoke("synth", data, "--patients", 2, "--slices", 2, "--size", 64)
    assert made.exit_code == 0, made.output
    result = invoke("train", data, "--out", tmp_path / "run", "--image-size", 32, "--epochs", 1)
    assert result.exit_code == 2, result.output
    assert "it comes with the 'train' extra: pip install 'asinfer[train]'" in result.stderr
    assert "Traceback" not in result.output


def test_a_command_whose_package_cannot_load_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "asinfer.benchmarks.cli", None)
    result = invoke("bench", "--quick")
    assert result.exit_code == 2 and "asinfer bench is unavailable" in result.stderr


@pytest.mark.parametrize("change, message", [
    ({"threshold": "0.5"}, "threshold: expected a number, got the string '0.5'"),
    ({"labels": "ab"}, "labels: expected a list, got the string 'ab'"),
    ({"input": {"height": "224"}}, "input.height: expected an integer"),
    ({"preprocessing": {"clahe_tile_grid": [0, 0]}}, "clahe_tile_grid [0, 0] must be two integers"),
])
def test_manifest_type_confusion_exits_2_with_the_field_named(bundle_copy, inputs, change, message):
    path = bundle_copy / "manifest.json"
    data = json.loads(path.read_text())
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path.write_text(json.dumps(data))
    for args in (("predict", inputs, "-m", bundle_copy), ("info", bundle_copy)):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert message in result.stderr and "Traceback" not in result.output
