"""asinfer bench: gates and verdicts, the typed report, degraded and slowed models, the Keras stand-in, the CLI.

Gate tests feed made-up rows. The rest use the session's tiny 32x32 run
(``tiny_converted``: a run folder with Keras and every format, and a bundle
with the shipped formats and train_config.json) and the run's own
holdout.npz as the accuracy set, so parity measures the conversion and not
the luck of an untrained model on phantoms.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import requires_tf

from asinfer.benchmarks import bench, gates
from asinfer.benchmarks.report import SCHEMA, BenchReport, read_json
from asinfer.engine import FORMATS, default_model, locate
from asinfer.engine.bundle import ParityRecord, SchemaError

ROW_NAMES = [*FORMATS, *bench.PIPELINE]
SPEED_ONLY = "speed only, weights not the bundle's"


# --- gates: pure functions -----------------------------------------------------------------------------------


def test_parse_rule_reads_ratio_operator_and_limit():
    rule = gates.parse_rule(" onnx-int8 / keras >= 3.0 ", ROW_NAMES)
    assert (rule.numerator, rule.denominator, rule.op, rule.limit) == ("onnx-int8", "keras", ">=", 3.0)
    assert str(rule) == "onnx-int8/keras>=3"
    assert gates.parse_rule("end-to-end/tflite-int8>=1.6", ROW_NAMES).numerator == "end-to-end"


@pytest.mark.parametrize("text, match", [
    ("onnx-int8>=3", "NUM/DEN>=LIMIT"),
    ("onnx-int8/keras=>3", "NUM/DEN>=LIMIT"),
    ("onnx-int8/keras>=fast", "NUM/DEN>=LIMIT"),
    ("onnx-int9/keras>=3", "Did you mean 'onnx-int8'"),
    ("onnx-int8/keras>=0", "must be > 0"),
])
def test_parse_rule_rejects_bad_rules_naming_the_fix(text, match):
    with pytest.raises(ValueError, match=match) as info:
        gates.parse_rule(text, ROW_NAMES)
    assert repr(text) in str(info.value)


def test_speed_gate_passes_fails_and_cannot_evaluate_a_missing_row():
    rule = gates.parse_rule("onnx-int8/keras>=3.0", ROW_NAMES)
    ok = gates.speed_gate(rule, {"onnx-int8": 40.0, "keras": 10.0}, {})
    assert ok.passed and ok.value == pytest.approx(4.0) and "4x" in ok.detail
    slow = gates.speed_gate(rule, {"onnx-int8": 20.0, "keras": 10.0}, {})
    assert slow.passed is False and "FAILS >= 3" in slow.detail
    missing = gates.speed_gate(rule, {"onnx-int8": 20.0, "keras": None}, {"keras": "skipped: not in bundle"})
    assert missing.passed is False and "not in bundle" in missing.detail


def test_gate_batch_is_8_else_the_largest():
    assert gates.gate_batch([1, 8, 32]) == 8 and gates.gate_batch([1, 4]) == 4


@dataclass
class _Row:
    format: str
    status: str = "ok"
    reason: str = ""
    parity: ParityRecord | None = None
    speed_only: bool = False


def _parity(agreement=1.0, interval=None, dauc=0.0, dp=1e-3, n=200, reference="keras"):
    """A made-up record; ``interval`` is agreement's 95% interval (default: a tight one around it)."""
    interval = interval or (max(0.0, agreement - 0.01), min(1.0, agreement + 0.005))
    return ParityRecord(reference=reference, n=n, threshold=0.5, max_abs_dp=dp, mean_abs_dp=dp / 2,
                        agreement=agreement, auc=0.9 + dauc, auc_reference=0.9, dauc=dauc,
                        dauc_interval=(dauc - 0.002, dauc + 0.002), agreement_interval=interval)


def test_accuracy_gates_fail_a_degraded_row_and_a_failed_one_but_not_skipped_ones():
    rows = [_Row("keras"), _Row("onnx-int8", parity=_parity(agreement=0.9)),
            _Row("tflite-int8", parity=_parity()), _Row("onnx-fp16", "skipped", "not in bundle"),
            _Row("onnx-fp32", "failed", "load: boom")]
    found = {g.name: g for g in gates.accuracy_gates(rows, "keras")}
    assert set(found) == {"onnx-int8 parity", "tflite-int8 parity", "onnx-fp32 parity"}
    int8 = found["onnx-int8 parity"]
    assert int8.passed is False and int8.kind == "accuracy" and int8.value == 0.9
    assert "agreement 0.9 (95% 0.89..0.905) FAILS >= 0.99" in int8.detail and "against keras" in int8.detail
    assert found["tflite-int8 parity"].passed is True
    assert found["onnx-fp32 parity"].passed is False and "boom" in found["onnx-fp32 parity"].detail
    assert [g.name for g in gates.failed(found.values())] == ["onnx-int8 parity", "onnx-fp32 parity"]


def test_accuracy_gates_are_the_format_tolerance_judging_on_evidence():
    """The converter's judge: a miss whose 95% interval still reaches the limit is noise, not a failure."""
    noisy = gates.parity_gate("onnx-int8", _parity(agreement=0.98, interval=(0.93, 0.995), n=50))
    assert noisy.passed is True and "within noise >= 0.99" in noisy.detail and "(n=50," in noisy.detail
    expected = FORMATS["onnx-int8"].tolerance.judge(_parity(agreement=0.98, interval=(0.93, 0.995), n=50))
    assert noisy.detail.startswith(expected.summary())
    assert gates.parity_gate("onnx-fp32", _parity(dp=5e-5)).passed
    fp32 = gates.parity_gate("onnx-fp32", _parity(dp=2e-4))
    assert fp32.passed is False and "max_abs_dp 0.0002 FAILS <= 0.0001" in fp32.detail


def test_accuracy_gates_without_a_reference_are_not_checked_and_do_not_fail():
    rows = [_Row("keras", "skipped", "not in bundle"), _Row("onnx-int8")]
    (gate,) = gates.accuracy_gates(rows, None)
    assert gate.passed is None and "keras skipped (not in bundle)" in gate.detail and not gates.failed([gate])


def test_a_speed_only_row_has_no_accuracy_gate_and_is_never_the_reference():
    rows = [_Row("keras", speed_only=True), _Row("onnx-fp16"), _Row("onnx-int8", parity=_parity(reference="onnx-fp16"))]
    assert [g.name for g in gates.accuracy_gates(rows, "onnx-fp16")] == ["onnx-int8 parity"]
    assert gates.accuracy_gates([_Row("keras", "failed", "boom", speed_only=True)], None) == []
    assert gates.choose_reference(["onnx-int8", "onnx-fp16", "tflite-int8"]) == "onnx-fp16"
    assert gates.choose_reference(["onnx-int8"]) is None


# --- options -------------------------------------------------------------------------------------------------


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
    """The copyable CI job gates the shipped bundle: its rules must be valid and evaluable there.

    The bundle's formats and the pipeline rows always are; keras is, as a
    speed-only row, when the bundle carries train_config.json (and TensorFlow
    is installed, as the job installs it).
    """
    lines = (Path(__file__).parent.parent / "docs" / "ci-example.yml").read_text().splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    rules = [gates.parse_rule(r, ROW_NAMES) for r in re.findall(r'--fail-under "([^"]+)"', code)]
    manifest, folder = locate(default_model())
    have = {a.format for a in manifest.artifacts} | set(bench.PIPELINE)
    if (folder / "train_config.json").is_file():
        have.add("keras")
    assert rules and all({r.numerator, r.denominator} <= have for r in rules), [str(r) for r in rules]
    assert "onnx-int8/keras" in {f"{r.numerator}/{r.denominator}" for r in rules}


# --- a run folder: Keras and every format --------------------------------------------------------------------


def _config(model: Path, data: Path, **kwargs) -> bench.BenchConfig:
    options = {"data": data, "quick": True, "rounds": 2, **kwargs}
    return bench.BenchConfig.from_options(model, **options)


@pytest.fixture(scope="module")
def run_dir(tiny_converted) -> Path:
    return tiny_converted[0]


@pytest.fixture(scope="module")
def bundle_dir(tiny_converted) -> Path:
    return tiny_converted[1]


@pytest.fixture(scope="module")
def holdout(tiny_converted) -> Path:
    return tiny_converted[0] / "holdout.npz"


@pytest.fixture(scope="module")
def run_report(run_dir, holdout) -> BenchReport:
    """One quick run of the run folder (Keras is the reference), without child processes."""
    config = _config(run_dir, holdout, rules=["onnx-int8/keras>=0.01", "end-to-end/preprocess>=0.01"])
    return bench.run(replace(config, processes=False))


@requires_tf
def test_run_folder_rows_follow_the_table_and_parity_is_against_keras(run_report, run_dir):
    manifest, _ = locate(run_dir)
    assert [r.format for r in run_report.rows] == list(FORMATS)
    assert all(r.status == ("ok" if manifest.artifact(r.format) else "skipped") for r in run_report.rows)
    keras, int8 = run_report.row("keras"), run_report.row("onnx-int8")
    assert run_report.reference == "keras" and keras.parity is None and not keras.speed_only
    assert isinstance(int8.parity, ParityRecord) and int8.parity.reference == "keras" and int8.parity.n > 0
    assert int8.parity.verdict is not None and int8.parity.verdict.passed
    assert int8.tolerance == FORMATS["onnx-int8"].tolerance and 0 <= int8.auc <= 1 and int8.size_mb > 0
    assert [s.batch for s in int8.img_per_s] == [1, 8] and int8.speed(8).min <= int8.speed(8).median
    assert int8.latency_ms.p50 <= int8.latency_ms.p95
    assert run_report.engine_cli is None and int8.peak_rss_mb is None  # no child processes in this run


@requires_tf
def test_run_folder_pipeline_gates_and_machine(run_report):
    pre, e2e = run_report.pipeline
    assert pre.name == "preprocess" and e2e.artifact == "onnx-int8"
    assert pre.images == e2e.images == run_report.data.files > 0
    assert 0 < run_report.preprocess_share < 5
    assert run_report.passed and all(g.passed for g in run_report.gates) and bench.exit_code(run_report) == 0
    assert {g.name for g in run_report.gates} >= {"onnx-int8 parity", "onnx-int8/keras>=0.01"}
    assert run_report.gate("onnx-int8/keras>=0.01").value > 0
    assert run_report.machine.cores >= 1 and "avx2" in run_report.machine.flags
    assert {"onnxruntime", "numpy"} <= set(run_report.versions) and run_report.schema == SCHEMA == "asinfer-bench/2"
    assert run_report.command.startswith("asinfer bench ")


@requires_tf
def test_json_round_trips_to_the_same_typed_report(run_report, tmp_path):
    out = tmp_path / "new folder" / "bench.json"  # outputs may name folders that do not exist yet
    bench.write_json(run_report, out)
    data = json.loads(out.read_text())
    assert data["schema"] == SCHEMA and data["rows"][0]["format"] == "keras"
    assert data["rows"][3]["parity"]["verdict"]["checks"][0]["name"] == "agreement"
    assert read_json(out) == run_report
    with pytest.raises(SchemaError, match="asinfer-bench/1"):
        BenchReport.from_dict({**data, "schema": "asinfer-bench/1"})
    bad = json.loads(out.read_text())
    bad["rows"][3]["img_per_s"][0]["median"] = "fast"
    with pytest.raises(SchemaError, match=r"rows\[3\]\.img_per_s\[0\]\.median"):
        BenchReport.from_dict(bad)


@requires_tf
def test_markdown_carries_the_machine_command_parity_and_chart(run_report, tmp_path):
    chart = bench.write_markdown(run_report, tmp_path / "new folder" / "benchmarks.md")
    text = (tmp_path / "new folder" / "benchmarks.md").read_text()
    assert chart == tmp_path / "new folder" / "benchmarks.png" and chart.read_bytes()[:4] == b"\x89PNG"
    assert f"`{run_report.command}`" in text and run_report.machine.cpu in text
    assert "## Parity against Keras" in text and "| onnx-int8 parity | accuracy | pass |" in text
    assert "![img/s per format](benchmarks.png)" in text


# --- the bundle: shipped formats, a speed-only Keras row -----------------------------------------------------


@pytest.fixture(scope="module")
def bundle_report(bundle_dir, holdout) -> BenchReport:
    """The bundle with child processes (the slow part, done once); keras is a speed-only stand-in."""
    config = _config(bundle_dir, holdout, rules=["onnx-int8/keras>=0.01", "end-to-end/keras>=0.01"])
    return bench.run(config)


@requires_tf
def test_bundle_skips_absent_formats_saying_why(bundle_report, bundle_dir):
    manifest, _ = locate(bundle_dir)
    shipped = {a.format for a in manifest.artifacts}
    assert "keras" not in shipped and shipped
    for row in bundle_report.rows:
        if row.format not in shipped | {"keras"}:
            assert row.status == "skipped" and row.reason == bench.NOT_IN_BUNDLE, row
        elif row.format in shipped:
            assert row.status == "ok" and row.file == manifest.artifact(row.format).file, row
    expected = gates.choose_reference(shipped)
    assert bundle_report.reference == expected and expected != "keras"
    assert f"against {expected}, the most exact format" in bench.render_text(bundle_report)


@requires_tf
def test_bundle_without_keras_gets_a_speed_only_keras_row(bundle_report):
    keras = bundle_report.row("keras")
    assert keras.status == "ok" and keras.speed_only and keras.note.startswith(SPEED_ONLY)
    assert "train_config.json" in keras.note and "32x32" in keras.note
    assert keras.parity is None and keras.auc is None and keras.file is None and keras.size_mb > 0
    assert keras.speed(8).median > 0 and keras.latency_ms.p50 > 0
    assert keras.peak_rss_mb > 20 and keras.cold_start_s > 0
    assert "keras parity" not in {g.name for g in bundle_report.gates}
    for rule in ("onnx-int8/keras>=0.01", "end-to-end/keras>=0.01"):
        gate = bundle_report.gate(rule)
        assert gate.passed is True and gate.value > 0, gate
    assert bundle_report.passed
    text = bench.render_text(bundle_report)
    assert re.search(r"^keras\s+ok, speed only\s", text, re.M) and f"- keras: {SPEED_ONLY}" in text


@requires_tf
def test_each_format_is_measured_in_a_process_of_its_own(bundle_report):
    rows = {r.format: r for r in bundle_report.rows if r.ok}
    assert all(r.peak_rss_mb > 20 and r.cold_start_s > 0 for r in rows.values()), rows
    # each process ran one format only: the runtimes' footprints differ, none inherits this process's
    assert rows["keras"].peak_rss_mb > rows["tflite-int8"].peak_rss_mb
    how = rows["onnx-int8"].cold_start_how
    assert how.startswith("`asinfer predict") or "-m asinfer.engine predict" in how
    assert bundle_report.engine_cli.error is None and bundle_report.engine_cli.peak_rss_mb > 20


def _without_standin_run(bundle: Path, holdout: Path) -> BenchReport:
    config = _config(bundle, holdout, formats="keras,onnx-int8", batch_sizes="1", rounds=1,
                     rules=["onnx-int8/keras>=0.01"])
    return bench.run(replace(config, processes=False))


@requires_tf
def test_keras_row_without_train_config_is_skipped_saying_why(bundle_dir, holdout, tmp_path):
    copy = shutil.copytree(bundle_dir, tmp_path / "bundle")
    (copy / "train_config.json").unlink()
    report = _without_standin_run(copy, holdout)
    keras = report.row("keras")
    assert keras.status == "skipped" and "no train_config.json" in keras.reason and bench.NOT_IN_BUNDLE in keras.reason
    gate = report.gate("onnx-int8/keras>=0.01")
    assert gate.passed is False and "cannot evaluate" in gate.detail and "train_config.json" in gate.detail


@requires_tf
def test_keras_row_of_another_input_size_is_skipped(bundle_dir, holdout, tmp_path):
    copy = shutil.copytree(bundle_dir, tmp_path / "bundle")
    (copy / "train_config.json").write_text(json.dumps({"image_size": 64}))
    keras = _without_standin_run(copy, holdout).row("keras")
    assert keras.status == "skipped" and "image_size 64 is not the bundle's input 32x32" in keras.reason


@requires_tf
def test_keras_row_without_tensorflow_is_skipped(bundle_dir, holdout, monkeypatch):
    from asinfer.trainer import runtimes

    absent = runtimes.Runtime("keras", "no_such_module_xyz", "pip install 'asinfer[train]'", None)
    monkeypatch.setitem(runtimes.RUNTIMES, "keras", absent)
    keras = _without_standin_run(bundle_dir, holdout).row("keras")
    assert keras.status == "skipped" and "not installed" in keras.reason and "asinfer[train]" in keras.reason


# --- failures the gates must catch ---------------------------------------------------------------------------


@requires_tf
def test_degraded_int8_model_fails_its_parity_gate(run_dir, holdout, tmp_path):
    from asinfer.engine import read_manifest
    from asinfer.trainer.bundle import write_bundle
    from asinfer.trainer.tiny import build_tiny_model

    copy = shutil.copytree(run_dir, tmp_path / "degraded")
    (copy / "model.int8.onnx").write_bytes(build_tiny_model(32, bias=1.0).SerializeToString())
    manifest = read_manifest(copy / "manifest.json")
    write_bundle(copy, manifest, {a.format: a.file for a in manifest.artifacts})  # re-hashed: a "valid" bad model
    # against Keras, and against the most exact format when Keras is absent (as in the shipped bundle)
    for formats, reference in (("keras,onnx-int8", "keras"), ("onnx-fp32,onnx-int8", "onnx-fp32")):
        report = bench.run(replace(_config(copy, holdout, formats=formats), processes=False))
        gate = report.gate("onnx-int8 parity")
        assert report.reference == reference and report.row("onnx-int8").parity.reference == reference
        assert gate.passed is False and "FAILS" in gate.detail and bench.exit_code(report) == 1
    assert f"against {reference}, the most exact format" in bench.render_text(report)


@requires_tf
def test_slowed_model_fails_a_speed_gate_and_a_failing_format_keeps_the_run_going(run_dir, holdout, monkeypatch):
    from asinfer.trainer import runtimes

    def slow(path, threads):  # only the int8 file: 0.2 s more per call
        inner = runtimes.OnnxRuntimeRunner(path, threads)
        return lambda batch: (time.sleep(0.2 if "int8" in path.name else 0), inner(batch))[1]

    def broken(path, threads):
        raise RuntimeError("simulated runtime crash")

    monkeypatch.setitem(runtimes.RUNTIMES, "onnxruntime", runtimes.Runtime("onnxruntime", "onnxruntime", "", slow))
    monkeypatch.setitem(runtimes.RUNTIMES, "litert", runtimes.Runtime("litert", "ai_edge_litert", "", broken))
    config = _config(run_dir, holdout, formats="onnx-fp32,onnx-int8,tflite-int8", rules=["onnx-int8/onnx-fp32>=1.2"])
    report = bench.run(replace(config, processes=False))
    tflite = report.row("tflite-int8")
    assert tflite.status == "failed" and "simulated runtime crash" in tflite.reason
    assert report.gate("tflite-int8 parity").passed is False
    assert report.row("onnx-int8").ok and report.row("onnx-int8").speed(8).median < 60
    speed = next(g for g in report.gates if g.kind == "speed")
    assert speed.passed is False and bench.exit_code(report) == 1
    assert report.stage("end-to-end").status == "ok"  # the run went on past the failed format


@requires_tf
def test_missing_runtime_is_a_skipped_row(run_dir, holdout, monkeypatch):
    from asinfer.trainer import runtimes

    monkeypatch.setitem(runtimes.RUNTIMES, "litert",
                        runtimes.Runtime("litert", "no_such_module_xyz", "pip install x", None))
    report = bench.run(replace(_config(run_dir, holdout, formats="tflite-int8", batch_sizes="1"), processes=False))
    (row,) = report.rows
    assert row.status == "skipped" and "not installed" in row.reason and "pip install x" in row.reason
    assert bench.exit_code(report) == 0


# --- the CLI -------------------------------------------------------------------------------------------------


def _cli(*args):
    from typer.testing import CliRunner

    from asinfer.engine.cli import app

    return CliRunner().invoke(app, ["bench", *map(str, args)])


@requires_tf
def test_cli_quick_writes_json_and_markdown_and_fails_an_impossible_gate(run_dir, holdout, tmp_path):
    out = _cli(run_dir, "--quick", "--data", holdout, "--formats", "onnx-fp32,onnx-int8",
               "--rounds", "2", "--json", tmp_path / "b.json", "--markdown", tmp_path / "b.md",
               "--fail-under", "onnx-int8/onnx-fp32>=1000")
    assert out.exit_code == 1, out.output
    assert "FAIL  onnx-int8/onnx-fp32>=1000" in out.output and "tflite-int8  skipped" not in out.output
    report = read_json(tmp_path / "b.json")
    assert report.passed is False and "--fail-under 'onnx-int8/onnx-fp32>=1000'" in report.command
    assert report.machine.cpu and (tmp_path / "b.png").exists() and (tmp_path / "b.md").exists()


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
