"""asinfer bench: gate parsing and verdicts, degraded and slowed models, reports, the CLI.

Gate tests feed made-up rows; the rest use one 32x32 run (Keras + onnx-fp32,
onnx-int8, tflite-int8; the other formats are absent on purpose, so their rows
are skipped) and its own holdout.npz as the accuracy set, so parity measures
the conversion and not the luck of an untrained model on phantoms.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import requires_tf

from asinfer.benchmarks import _gates, bench
from asinfer.engine import FORMATS, default_model
from asinfer.engine._formats import Tolerance

ROW_NAMES = [*FORMATS, *bench.PIPELINE]
RUN_FORMATS = ["onnx-fp32", "onnx-int8", "tflite-int8"]


# --- gates: pure functions -----------------------------------------------------------------------------------


def test_parse_rule_reads_ratio_operator_and_limit():
    rule = _gates.parse_rule(" onnx-int8 / keras >= 3.0 ", ROW_NAMES)
    assert (rule.numerator, rule.denominator, rule.op, rule.limit) == ("onnx-int8", "keras", ">=", 3.0)
    assert str(rule) == "onnx-int8/keras>=3"
    assert _gates.parse_rule("end-to-end/tflite-int8>=1.6", ROW_NAMES).numerator == "end-to-end"


@pytest.mark.parametrize("text, match", [
    ("onnx-int8>=3", "NUM/DEN>=LIMIT"),
    ("onnx-int8/keras=>3", "NUM/DEN>=LIMIT"),
    ("onnx-int8/keras>=fast", "NUM/DEN>=LIMIT"),
    ("onnx-int9/keras>=3", "Did you mean 'onnx-int8'"),
    ("onnx-int8/keras>=0", "must be > 0"),
])
def test_parse_rule_rejects_bad_rules_naming_the_fix(text, match):
    with pytest.raises(ValueError, match=match) as info:
        _gates.parse_rule(text, ROW_NAMES)
    assert repr(text) in str(info.value)


def test_speed_gate_passes_fails_and_cannot_evaluate_a_missing_row():
    rule = _gates.parse_rule("onnx-int8/keras>=3.0", ROW_NAMES)
    ok = _gates.speed_gate(rule, {"onnx-int8": 40.0, "keras": 10.0}, {})
    assert ok.passed and ok.value == pytest.approx(4.0) and "4x" in ok.detail
    slow = _gates.speed_gate(rule, {"onnx-int8": 20.0, "keras": 10.0}, {})
    assert slow.passed is False and "FAILS >= 3" in slow.detail
    missing = _gates.speed_gate(rule, {"onnx-int8": 20.0, "keras": None}, {"keras": "skipped: not in bundle"})
    assert missing.passed is False and "not in bundle" in missing.detail


def test_gate_batch_is_8_else_the_largest():
    assert _gates.gate_batch([1, 8, 32]) == 8 and _gates.gate_batch([1, 4]) == 4


class _Row:
    def __init__(self, fmt, status="ok", reason="", parity=None):
        self.format, self.status, self.reason = fmt, status, reason
        self.parity = parity or {}
        self.tolerance = FORMATS[fmt].tolerance


def _parity(agreement=1.0, dauc=0.0, dp=1e-3, n=100):
    return {"n": n, "agreement": agreement, "abs_dauc": abs(dauc), "dauc": dauc, "max_abs_dp": dp}


def test_accuracy_gates_fail_a_degraded_row_and_a_failed_one_but_not_skipped_ones():
    rows = [_Row("keras"), _Row("onnx-int8", parity=_parity(agreement=0.9)),
            _Row("tflite-int8", parity=_parity()), _Row("onnx-fp16", "skipped", "not in bundle"),
            _Row("onnx-fp32", "failed", "load: boom")]
    gates = {g.name: g for g in _gates.accuracy_gates(rows)}
    assert set(gates) == {"onnx-int8 parity", "tflite-int8 parity", "onnx-fp32 parity"}
    assert gates["onnx-int8 parity"].passed is False and "agreement 0.9 FAILS >= 0.99" in gates["onnx-int8 parity"].detail
    assert gates["tflite-int8 parity"].passed is True
    assert gates["onnx-fp32 parity"].passed is False and "boom" in gates["onnx-fp32 parity"].detail
    assert [g.name for g in _gates.failed(gates.values())] == ["onnx-int8 parity", "onnx-fp32 parity"]


def test_accuracy_gates_without_keras_are_not_checked_and_do_not_fail():
    rows = [_Row("keras", "skipped", "not in bundle"), _Row("onnx-int8", parity={"n": 0, "auc": 0.9})]
    (gate,) = _gates.accuracy_gates(rows)
    assert gate.passed is None and "not in bundle" in gate.detail and not _gates.failed([gate])


def test_parity_gate_uses_the_format_tolerance():
    assert _gates.parity_gate("onnx-fp32", _parity(dp=5e-5), Tolerance(max_abs_dp=1e-4)).passed
    assert not _gates.parity_gate("onnx-fp32", _parity(dp=2e-4), Tolerance(max_abs_dp=1e-4)).passed


@pytest.mark.parametrize("kwargs, match", [
    ({"formats": "onnx-int8,tflite-in8"}, "Did you mean 'tflite-int8'"),
    ({"batch_sizes": "1,0"}, "batch size '0'"),
    ({"rounds": 0}, "rounds must be >= 1"),
    ({"rules": ["onnx-int8/keras"]}, "invalid --fail-under rule"),
])
def test_config_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench.BenchConfig.from_options(default_model(), **kwargs)


def test_config_orders_formats_and_repeats_its_command():
    config = bench.BenchConfig.from_options("m", formats="tflite-int8,keras", batch_sizes="8,1,8",
                                            rules=["onnx-int8/keras>=3"], quick=True)
    assert config.formats == ("keras", "tflite-int8") and config.batch_sizes == (1, 8)
    assert config.rounds == bench.DEFAULTS[True]["rounds"]
    assert config.command() == ("asinfer bench m --formats keras,tflite-int8 --batch-sizes 1,8 --rounds 3 "
                                "--fail-under 'onnx-int8/keras>=3' --quick")


def test_ci_example_rules_parse_and_name_rows_the_shipped_bundle_has():
    """The copyable CI job gates the shipped bundle: its rules must be valid and evaluable there."""
    import re

    from asinfer.engine import locate

    lines = (Path(__file__).parent.parent / "docs" / "ci-example.yml").read_text().splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    rules = [_gates.parse_rule(r, ROW_NAMES) for r in re.findall(r'--fail-under "([^"]+)"', code)]
    manifest, _ = locate(default_model())
    have = {a.format for a in manifest.artifacts} | set(bench.PIPELINE)
    assert rules and all({r.numerator, r.denominator} <= have for r in rules), [str(r) for r in rules]


# --- a real tiny run -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 32x32 run folder with Keras and three converted formats (see the module docstring)."""
    from test_convert import _write_run

    from asinfer.trainer.convert import convert

    folder = tmp_path_factory.mktemp("bench") / "path with spaces" / "run"
    folder.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _write_run(folder)
        convert(folder, RUN_FORMATS)
    return folder


def _config(model: Path, **kwargs) -> bench.BenchConfig:
    options = {"data": model / "holdout.npz", "quick": True, "rounds": 2, **kwargs}
    return bench.BenchConfig.from_options(model, **options)


@pytest.fixture(scope="module")
def report(run_dir) -> dict:
    """One quick run over every format, with child processes (the slow part, done once)."""
    config = _config(run_dir, rules=["onnx-int8/keras>=0.01", "end-to-end/preprocess>=0.01"])
    return bench.run(config)


@requires_tf
def test_report_has_a_row_per_format_in_table_order_with_skips_explained(report):
    rows = {r["format"]: r for r in report["rows"]}
    assert list(rows) == list(FORMATS)
    for name in FORMATS:
        expected = "ok" if name in ["keras", *RUN_FORMATS] else "skipped"
        assert rows[name]["status"] == expected, rows[name]
    assert rows["onnx-fp16"]["reason"] == bench.NOT_IN_BUNDLE
    int8 = rows["onnx-int8"]
    assert int8["size_mb"] > 0 and 0 <= int8["parity"]["auc"] <= 1 and int8["parity"]["agreement"] >= 0.99
    assert set(int8["img_per_s"]) == {"1", "8"} and int8["img_per_s"]["8"]["min"] <= int8["img_per_s"]["8"]["median"]
    assert int8["latency_ms"]["p50"] <= int8["latency_ms"]["p95"]
    assert int8["cold_start_how"].startswith("`asinfer predict") or "-m asinfer.engine predict" in int8["cold_start_how"]
    assert all(rows[n]["peak_rss_mb"] > 20 and rows[n]["cold_start_s"] > 0 for n in ["keras", *RUN_FORMATS])
    # each process ran one format only: the runtimes' footprints differ, none inherits this process's
    assert rows["keras"]["peak_rss_mb"] > rows["tflite-int8"]["peak_rss_mb"]
    assert report["engine_cli"]["error"] is None and report["engine_cli"]["peak_rss_mb"] > 20


@requires_tf
def test_report_pipeline_rows_gates_and_machine(report):
    pre, e2e = report["pipeline"]
    assert pre["name"] == "preprocess" and e2e["artifact"] == "onnx-int8"
    assert pre["images"] == e2e["images"] == report["data"]["files"] > 0
    assert 0 < report["preprocess_share"] < 5
    assert report["passed"] and all(g["passed"] for g in report["gates"])
    assert {g["name"] for g in report["gates"]} >= {"onnx-int8 parity", "onnx-int8/keras>=0.01"}
    assert report["machine"]["cores"] >= 1 and "avx2" in report["machine"]["flags"]
    assert {"onnxruntime", "numpy"} <= set(report["versions"]) and report["schema"] == bench.SCHEMA
    assert report["command"].startswith("asinfer bench ")


@requires_tf
def test_json_and_markdown_carry_the_machine_and_command(report, tmp_path):
    out = tmp_path / "new folder"  # outputs may name folders that do not exist yet
    bench.write_json(report, out / "bench.json")
    assert json.loads((out / "bench.json").read_text())["command"] == report["command"]
    chart = bench.write_markdown(report, out / "benchmarks.md")
    text = (out / "benchmarks.md").read_text()
    assert chart == out / "benchmarks.png" and chart.read_bytes()[:4] == b"\x89PNG"
    assert f"`{report['command']}`" in text and report["machine"]["cpu"] in text
    assert "## Parity against Keras" in text and "| onnx-int8 parity | accuracy | pass |" in text
    assert "![img/s per format](benchmarks.png)" in text


@requires_tf
def test_degraded_int8_model_fails_its_parity_gate(run_dir, tmp_path):
    from asinfer.trainer.bundle import write_bundle
    from asinfer.trainer.tiny import build_tiny_model

    from asinfer.engine._manifest import read_manifest

    copy = tmp_path / "degraded"
    shutil.copytree(run_dir, copy)
    (copy / "model.int8.onnx").write_bytes(build_tiny_model(32, bias=1.0).SerializeToString())
    manifest = read_manifest(copy / "manifest.json")
    write_bundle(copy, manifest, {a.format: a.file for a in manifest.artifacts})  # re-hashed: a "valid" bad model
    # against Keras, and against the most exact format when Keras is absent (as in the shipped bundle)
    for formats, reference in (("keras,onnx-int8", "keras"), ("onnx-fp32,onnx-int8", "onnx-fp32")):
        report = bench.run(replace(_config(copy, formats=formats), processes=False))
        gate = next(g for g in report["gates"] if g["name"] == "onnx-int8 parity")
        assert report["reference"] == reference
        assert gate["passed"] is False and "FAILS" in gate["detail"] and bench.exit_code(report) == 1
    assert f"against {reference}, the most exact format" in bench.render_text(report)


@requires_tf
def test_slowed_model_fails_a_speed_gate_and_a_failing_format_keeps_the_run_going(run_dir, monkeypatch):
    from asinfer.benchmarks import _runners

    def slow(path, threads):  # only the int8 file: 0.2 s more per call
        inner = _runners._OnnxRuntime(path, threads)
        return lambda batch: (time.sleep(0.2 if "int8" in path.name else 0), inner(batch))[1]

    def broken(path, threads):
        raise RuntimeError("simulated runtime crash")

    monkeypatch.setitem(_runners.RUNTIMES, "onnxruntime", _runners.Runtime("onnxruntime", "onnxruntime", "", slow))
    monkeypatch.setitem(_runners.RUNTIMES, "litert", _runners.Runtime("litert", "ai_edge_litert", "", broken))
    config = _config(run_dir, formats="onnx-fp32,onnx-int8,tflite-int8", rules=["onnx-int8/onnx-fp32>=1.2"])
    report = bench.run(replace(config, processes=False))
    rows = {r["format"]: r for r in report["rows"]}
    assert rows["tflite-int8"]["status"] == "failed" and "simulated runtime crash" in rows["tflite-int8"]["reason"]
    assert rows["onnx-int8"]["status"] == "ok" and rows["onnx-int8"]["img_per_s"]["8"]["median"] < 60
    speed = next(g for g in report["gates"] if g["kind"] == "speed")
    assert speed["passed"] is False and bench.exit_code(report) == 1
    assert report["pipeline"][1]["status"] == "ok"  # the run went on past the failed format


@requires_tf
def test_missing_runtime_is_a_skipped_row(run_dir, monkeypatch):
    from asinfer.benchmarks import _runners

    monkeypatch.setitem(_runners.RUNTIMES, "litert", _runners.Runtime("litert", "no_such_module_xyz", "pip install x", None))
    config = _config(run_dir, formats="tflite-int8", batch_sizes="1")
    report = bench.run(replace(config, processes=False))
    (row,) = report["rows"]
    assert row["status"] == "skipped" and "not installed" in row["reason"] and "pip install x" in row["reason"]
    assert bench.exit_code(report) == 0


# --- the CLI -------------------------------------------------------------------------------------------------


def _cli(*args):
    from typer.testing import CliRunner

    from asinfer.engine.cli import app

    return CliRunner().invoke(app, ["bench", *map(str, args)])


@requires_tf
def test_cli_quick_writes_json_and_markdown_and_fails_an_impossible_gate(run_dir, tmp_path):
    out = _cli(run_dir, "--quick", "--data", run_dir / "holdout.npz", "--formats", "onnx-fp32,onnx-int8",
               "--rounds", "2", "--json", tmp_path / "b.json", "--markdown", tmp_path / "b.md",
               "--fail-under", "onnx-int8/onnx-fp32>=1000")
    assert out.exit_code == 1, out.output
    assert "FAIL  onnx-int8/onnx-fp32>=1000" in out.output and "tflite-int8  skipped" not in out.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["passed"] is False and "--fail-under 'onnx-int8/onnx-fp32>=1000'" in data["command"]
    assert "cpu" in data["machine"] and (tmp_path / "b.png").exists() and (tmp_path / "b.md").exists()


@pytest.mark.parametrize("args, match", [
    (["--fail-under", "int8>=3"], "invalid --fail-under rule 'int8>=3'"),
    (["--formats", "onnx"], "Invalid format 'onnx'"),
    (["--batch-sizes", "1,eight"], "batch size 'eight'"),
])
def test_cli_usage_errors_exit_2(args, match):
    out = _cli(default_model(), "--quick", *args)
    assert out.exit_code == 2 and match in out.output


def test_cli_missing_model_exits_2(tmp_path):
    out = _cli(tmp_path / "nowhere", "--quick")
    assert out.exit_code == 2 and "does not exist" in out.output
