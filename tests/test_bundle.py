"""Bundles: manifest round trip and validation, sha256 refusal, lone ONNX, artifact and provider choice."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from asinfer import engine
from asinfer.engine import Manifest, ModelError, SessionConfig, bundle

PROVIDERS_MODULE = "asinfer.engine._providers"  # monkeypatch targets: the seams where providers are found

from conftest import SIZE


def test_manifest_json_round_trip(tiny_bundle):
    manifest = bundle.read_manifest(tiny_bundle / "manifest.json")
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.input.height == SIZE and manifest.schema_version == bundle.SCHEMA_VERSION
    assert {a.format for a in manifest.artifacts} == {"onnx-fp32", "onnx-int8"}


@pytest.mark.parametrize("change,message", [
    ({"schema_version": 99}, "schema_version 99"),
    ({"threshold": 1.5}, "threshold 1.5"),
    ({"labels": ["only one"]}, r"labels: expected a list of 2"),
    ({"labels": ["AS", "AS"]}, "labels must be two different"),
    ({"labels": "ab"}, r"labels: expected a list, got the string 'ab'"),
    ({"threshold": "0.5"}, r"threshold: expected a number, got the string '0.5'"),
    ({"threshold": True}, r"threshold: expected a number, got the boolean true"),
    ({"input": {"height": "224"}}, r"input.height: expected an integer, got the string '224'"),
    ({"preprocessing": {"clahe_tile_grid": [0, 0]}}, "clahe_tile_grid"),
    ({"preprocessing": {"clahe_clip_limit": -1}}, "clahe_clip_limit"),
    ({"preprocessing": {"resize_down": "bicubic"}}, "resize_down 'bicubic' is not one of"),
    ({"output": {"mirror_average": "yes"}}, r"output.mirror_average: expected true or false, got the string .yes."),
    ({"training": {"a": json.loads("[" * 40 + "1" + "]" * 40)}}, "nested deeper"),
    ({"parity": {"onnx-int8": {"n": "many"}}}, r"parity.onnx-int8"),
    ({"colour": "blue"}, "unknown field"),
    ({"input": {"dtype": "float32"}}, "input must be uint8"),
    ({"artifacts": [{"format": "onnx-int4", "file": "m.onnx", "sha256": "", "bytes": 0}]}, "unknown format"),
    ({"artifacts": [{"format": "onnx-int8", "file": "../../etc/passwd", "sha256": "", "bytes": 0}]},
     "must be a plain path inside the bundle folder"),
])
def test_invalid_manifest_is_refused_with_the_reason(tiny_bundle, change, message):
    data = json.loads((tiny_bundle / "manifest.json").read_text())
    data.update(change)
    with pytest.raises(ModelError, match=message):
        Manifest.from_dict(data)


def test_manifest_that_is_not_json():
    with pytest.raises(ModelError, match="not valid JSON"):
        Manifest.from_json("{'python': 'dict'}")


def test_cpu_prefers_int8_and_artifact_can_be_forced(tiny_bundle):
    assert engine.load(tiny_bundle, provider="cpu").artifact.format == "onnx-int8"
    assert engine.load(tiny_bundle, provider="cpu", artifact="onnx-fp32").artifact.format == "onnx-fp32"


def test_auto_on_a_cpu_build_takes_cpu(tiny_bundle):
    assert engine.load(tiny_bundle).provider == "cpu"


def test_manifest_file_path_also_loads(tiny_bundle):
    assert engine.load(tiny_bundle / "manifest.json").manifest.name == "asinfer-tiny"


def test_sha256_mismatch_is_refused(bundle_copy):
    path = bundle_copy / "model.int8.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        engine.load(bundle_copy, provider="cpu")
    assert {f: c.status for f, c in engine.verify(bundle_copy).items()} == {
        "onnx-fp32": bundle.OK, "onnx-int8": bundle.MISMATCH}


def test_artifact_replaced_while_loading_is_refused(bundle_copy, monkeypatch):
    """The hash is checked before ONNX Runtime reads the file; a swap in between must not slip through."""
    path = bundle_copy / "model.int8.onnx"
    real = engine.create_session

    def swap_then_load(model, provider, config=SessionConfig()):
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.unlink()
        path.write_bytes(bytes(data))
        return real(model, provider, config)

    monkeypatch.setattr("asinfer.engine._bundle.create_session", swap_then_load)
    with pytest.raises(ModelError, match="changed while it was being loaded"):
        engine.load(bundle_copy, provider="cpu")


def test_missing_artifact_file(bundle_copy):
    (bundle_copy / "model.int8.onnx").unlink()
    with pytest.raises(ModelError, match="cannot be read"):
        engine.load(bundle_copy, provider="cpu")


def test_lone_onnx_describes_itself(tiny_bundle, tmp_path):
    lone = tmp_path / "moved.onnx"
    shutil.copy(tiny_bundle / "model.int8.onnx", lone)
    clf = engine.load(lone, provider="cpu")
    assert clf.manifest.name == "asinfer-tiny"
    assert clf.artifact.format == "onnx-int8"
    assert clf.run(np.zeros((2, SIZE, SIZE, 1), np.uint8)).shape == (2,)


def test_onnx_without_manifest_is_refused(tmp_path):
    import onnx  # the dev extra; a missing one must fail, not skip

    from asinfer.trainer.tiny import build_tiny_model

    onnx.save(build_tiny_model(SIZE), str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelError, match="carries no asinfer manifest"):
        engine.load(tmp_path / "bare.onnx")


def test_not_a_model(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not protobuf")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        engine.load(tmp_path / "x.onnx")
    with pytest.raises(ModelError, match="does not exist"):
        engine.load(tmp_path / "nothing-here")


def test_unknown_provider_and_artifact_names_suggest_fixes(tiny_bundle):
    with pytest.raises(ValueError, match="Did you mean 'cuda'"):
        engine.load(tiny_bundle, provider="cudaa")
    with pytest.raises(ValueError, match="Did you mean 'onnx-int8'"):
        engine.load(tiny_bundle, artifact="onnx-int"+"9")
    with pytest.raises(ValueError, match="not run by the engine"):
        engine.load(tiny_bundle, artifact="tflite-int8")


def test_explicit_cuda_without_it_is_a_clear_error(tiny_bundle, monkeypatch):
    monkeypatch.setattr(f"{PROVIDERS_MODULE}.available_providers", lambda: ["cpu"])
    with pytest.raises(ModelError, match=r"provider 'cuda' is not available.*asinfer\[gpu\]"):
        engine.load(tiny_bundle, provider="cuda")


def test_auto_falls_back_to_cpu_when_cuda_cannot_start(tiny_bundle, monkeypatch, caplog):
    """A CUDA build without a usable device: auto says so and runs on CPU with the CPU artifact."""
    monkeypatch.setattr(f"{PROVIDERS_MODULE}.available_providers", lambda: ["cuda", "cpu"])
    real = engine.create_session
    tried = []

    def fake(model, provider, config=SessionConfig()):
        tried.append(provider.name)
        return None if provider.name == "cuda" else real(model, provider, config)

    monkeypatch.setattr("asinfer.engine._bundle.create_session", fake)
    with caplog.at_level("WARNING", logger="asinfer"):
        clf = engine.load(tiny_bundle, provider="auto")
    assert tried == ["cuda", "cpu"]
    assert (clf.provider, clf.artifact.format) == ("cpu", "onnx-int8")
    assert "provider cuda could not start" in caplog.text
    with pytest.raises(ModelError, match="'cuda' could not start"):
        engine.load(tiny_bundle, provider="cuda")


def test_bundle_without_a_runnable_artifact(bundle_copy):
    manifest = engine._manifest.read_manifest(bundle_copy / "manifest.json")
    keep = tuple(a for a in manifest.artifacts if a.format == "onnx-fp32")
    (bundle_copy / "manifest.json").write_text(replace(manifest, artifacts=keep).to_json())
    with pytest.raises(ModelError, match="no runnable artifact.*onnx-fp32"):
        engine.load(bundle_copy, artifact="onnx-fp16")


@pytest.mark.parametrize("change, message", [
    ({"input": {"name": "pixels"}}, r"graph inputs \['image'\], manifest input 'pixels'"),
    ({"output": {"name": "logit"}}, r"graph outputs \['probability'\], manifest output 'logit'"),
    ({"input": {"height": 64, "width": 64}}, r"has shape \['N', 32, 32, 1\], manifest says \[N, 64, 64, 1\]"),
])
def test_manifest_that_does_not_describe_its_graph_is_refused(bundle_copy, change, message):
    path = bundle_copy / "manifest.json"
    data = json.loads(path.read_text())
    for key, value in change.items():
        data[key] = {**data[key], **value}
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=message):
        engine.load(bundle_copy, provider="cpu")
