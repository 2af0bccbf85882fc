"""asinfer screen: series grouping across the listing, every input exactly once, resume, Parquet schema, Dask.

Synchronous scheduler in process for all but one test; one test runs a real LocalCluster of two worker
processes. Data: phantom DICOM series (small matrices) and pydicom's own test files; model: the tiny
shipped bundle (fixed weights, meaningless outputs: only the plumbing is under test).
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import dicom_file

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None,
                                reason="needs pyarrow: pip install -e '.[screen]' (the dev extra has it)")
requires_dask = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                   reason="needs dask.distributed: pip install -e '.[screen]' (the dev extra has it)")

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "models" / "asinfer-tiny"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Six phantom DICOM series (8 slices of 96x96 each) split over two class folders, in a path with spaces."""
    from asinfer.trainer.phantoms import write_dataset

    out = tmp_path_factory.mktemp("screen") / "archive with spaces"
    write_dataset(out, patients=6, slices=8, fmt="dicom", size=96, seed=3)
    return out


@pytest.fixture(scope="module")
def clf():
    from asinfer import engine

    return engine.load(TINY, provider="cpu")


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.dcm"))


def _settings(inputs, out: Path, **kw):
    from asinfer.engine.screen import ScreenSettings

    kw.setdefault("scheduler", "synchronous")
    kw.setdefault("threads_per_worker", 1)
    return ScreenSettings(tuple(str(i) for i in inputs), out, model=str(TINY), provider="cpu", **kw)


def _table(out: Path, kind: str) -> list[dict]:
    import pyarrow.dataset as ds

    return ds.dataset(out / kind, format="parquet").to_table().to_pylist()


def _series_facts(rows) -> list[tuple]:
    return sorted((r["series"], r["n_slices"], r["n_failed"], round(r["score"], 6), r["label"]) for r in rows)


def _assert_exactly_once(out: Path, listed: list[str]) -> list[dict]:
    slices = _table(out, "slices")
    pairs = [(r["source"], r["frame"]) for r in slices]
    assert len(pairs) == len(set(pairs)), "a slice row is duplicated"
    assert {r["source"] for r in slices} == set(listed), "an input is missing, or a row names no input"
    series = [r["series"] for r in _table(out, "series")]
    assert len(series) == len(set(series)), "a series row is duplicated"
    assert {r["series"] for r in slices} == set(series), "a slice row points at no series row"
    return slices


def test_series_group_across_a_shuffled_list_and_index_chunks_as_predict_groups_them(archive, clf, tmp_path):
    from asinfer.engine.screen import screen

    files = _files(archive)
    random.Random(0).shuffle(files)  # a series' slices are spread over the list and over scan chunks
    listing = tmp_path / "archive.txt"
    listing.write_text("# an archive listing\n" + "\n".join(files) + "\n")
    out = tmp_path / "results"
    summary = screen(_settings([listing], out, index_chunk=5, task_slices=1))
    expected = [(s.key, s.n_slices, s.n_failed, round(s.score, 6), s.label) for s in clf.predict_series(archive)]
    assert _series_facts(_table(out, "series")) == sorted(expected)
    assert summary.series == summary.screened == 6 and summary.slices == 48 and summary.failed_slices == 0
    assert {r["grouped_by"] for r in _table(out, "series")} == {"series-uid"}
    _assert_exactly_once(out, files)


def test_every_input_appears_exactly_once_with_bad_files_mixed_in(archive, tmp_path):
    from asinfer.engine.screen import screen

    data = tmp_path / "mixed"
    shutil.copytree(archive, data)
    victim = sorted((data / "negative").glob("*.dcm"))[0]
    whole = victim.read_bytes()
    truncated = victim.with_name("cut short.dcm")
    victim.rename(truncated)
    truncated.write_bytes(whole[: len(whole) - 4000])  # header intact, pixels cut: counts against its series
    (data / "notes.dcm").write_text("not a DICOM file at all\n")
    shutil.copy(dicom_file("CT_small.dcm"), data / "ct.dcm")
    shutil.copy(dicom_file("MR_small.dcm"), data / "mr.dcm")
    shutil.copy(dicom_file("rtplan.dcm"), data / "plan.dcm")  # no pixel data
    missing = data / "gone" / "missing.dcm"
    listing = tmp_path / "list.csv"
    files = _files(data)
    listing.write_text("path,note\n" + "\n".join(f'"{p}",x' for p in [*files, str(missing), files[3]]) + "\n")
    out = tmp_path / "results"
    summary = screen(_settings([listing], out))
    slices = _assert_exactly_once(out, [*files, str(missing)])
    reasons = {r["source"]: r["reason"] for r in slices if r["reason"]}
    assert set(reasons) == {str(truncated), str(data / "notes.dcm"), str(data / "plan.dcm"), str(missing)}
    assert (reasons[str(truncated)], reasons[str(missing)], reasons[str(data / "plan.dcm")]) == (
        "truncated", "not-found", "no-pixel-data")
    assert sum(r["source"] == files[3] for r in slices) == 1  # listed twice, one input
    series = {r["series"]: r for r in _table(out, "series")}
    header_uid = _uid(truncated)
    assert series[header_uid]["n_failed"] == 1 and series[header_uid]["label"] is not None
    assert summary.failed_slices == 4 and summary.files == len(files) + 2  # the missing one, and one twice


def _uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def _failing(monkeypatch, decide):
    """Make the engine raise inside a task: ``decide(paths)`` returns the exception, or None to predict."""
    from asinfer import engine

    real = engine.Classifier.iter_predict

    def iter_predict(self, sources, *args, **kwargs):
        error = decide([str(s) for s in sources])
        if error is not None:
            raise error
        return real(self, sources, *args, **kwargs)

    monkeypatch.setattr(engine.Classifier, "iter_predict", iter_predict)


def test_a_failing_task_is_retried_then_its_series_written_as_failed(archive, tmp_path, monkeypatch):
    from asinfer.engine.screen import TASK_FAILED, screen

    by_uid: dict[str, set] = {}
    for p in _files(archive):
        by_uid.setdefault(_uid(Path(p)), set()).add(p)
    poisoned, flaky = sorted(by_uid)[:2]
    calls = {"poisoned": 0, "flaky": 0}

    def decide(paths):
        if by_uid[poisoned] & set(paths):
            calls["poisoned"] += 1
            return RuntimeError("decoder exploded")
        if by_uid[flaky] & set(paths) and calls["flaky"] == 0:
            calls["flaky"] += 1
            return OSError("NFS hiccup")
        return None

    _failing(monkeypatch, decide)
    out = tmp_path / "results"
    summary = screen(_settings([archive], out, retries=1, task_slices=24))  # three series per task
    # the packed task failed twice, then each of its series ran alone (twice more for the poisoned one)
    assert calls["poisoned"] == 4
    series = {r["series"]: r for r in _table(out, "series")}
    assert series[poisoned]["reason"] == TASK_FAILED and "decoder exploded" in series[poisoned]["message"]
    assert series[poisoned]["n_failed"] == 8 and series[poisoned]["label"] is None
    assert all(r["reason"] is None for key, r in series.items() if key != poisoned)
    slices = _assert_exactly_once(out, _files(archive))
    assert sum(r["reason"] == TASK_FAILED for r in slices) == 8
    assert summary.failed_series == 1 and summary.series == 6
    monkeypatch.undo()  # the fault is gone: --resume screens the failed series again, in place of its failed rows
    again = screen(_settings([archive], out, resume=True, task_slices=24))
    assert again.retried == 1 and again.screened == 1 and again.resumed == 5 and again.failed_series == 0
    slices = _assert_exactly_once(out, _files(archive))
    assert not any(r["reason"] for r in slices) and all(r["label"] for r in _table(out, "series"))
    assert again.series == 6 and again.slices == 48 and again.failed_slices == 0


def test_resume_after_an_interruption_completes_the_union_without_duplicates(archive, tmp_path, monkeypatch):
    from asinfer.engine.screen import ScreenInterrupted, screen

    tasks = []

    def stops_at_the_third(paths):
        tasks.append(paths)
        return KeyboardInterrupt() if len(tasks) == 3 else None  # Ctrl-C in the middle of the run

    _failing(monkeypatch, stops_at_the_third)
    out = tmp_path / "results"
    with pytest.raises(ScreenInterrupted) as stopped:
        screen(_settings([archive], out, task_slices=8))
    assert stopped.value.summary.interrupted and stopped.value.summary.screened == 2
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    # a task killed between its writes: a temporary file, and a slices part without its series part
    (out / "series" / ".part-dead.1.tmp").write_bytes(b"half")
    shutil.copy(next((out / "slices").glob("part-*.parquet")), out / "slices" / "part-orphan.parquet")
    with pytest.raises(FileExistsError, match="--resume"):
        screen(_settings([archive], out))
    monkeypatch.undo()
    summary = screen(_settings([archive], out, resume=True, task_slices=8))
    assert summary.resumed == 2 and summary.screened == 4 and summary.series == 6 and summary.cleaned == 2
    _assert_exactly_once(out, _files(archive))
    assert not list(out.rglob(".part-*"))
    again = screen(_settings([archive], out, resume=True))  # idempotent
    assert again.screened == 0 and again.series == 6 and again.slices == 48
    assert len(_table(out, "slices")) == 48
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["model"]["name"] == "asinfer-tiny"
    assert record["counts"]["series"] == 6 and record["model"]["sha256"]


def test_resume_refuses_results_of_another_model(archive, tmp_path):
    from asinfer.engine.screen import screen

    out = tmp_path / "results"
    screen(_settings([sorted(archive.rglob("*.dcm"))[0]], out))
    with pytest.raises(ValueError, match="sha256"):
        screen(_settings([archive], out, resume=True, artifact="onnx-fp32"))


def test_parquet_datasets_have_the_documented_schema(archive, tmp_path):
    import pyarrow.dataset as ds

    from asinfer.engine.screen import SERIES_COLUMNS, SLICE_COLUMNS, screen, series_schema, slice_schema

    out = tmp_path / "results"
    screen(_settings([archive], out))
    assert ds.dataset(out / "slices", format="parquet").schema.equals(slice_schema())
    assert ds.dataset(out / "series", format="parquet").schema.equals(series_schema())
    assert [c[0] for c in SLICE_COLUMNS] == ["source", "frame", "series", "probability", "label", "reason", "message"]
    assert "driving" in [c[0] for c in SERIES_COLUMNS]
    row = _table(out, "series")[0]
    assert row["driving"] and set(row["driving"][0]) == {"source", "frame"}


def test_list_files_and_index(tmp_path):
    from asinfer.engine.screen import SeriesIndex, encode_paths, iter_inputs, scan_chunk

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.txt").write_text("a/1.png\n\n# comment\nb/2.png\n")
    found = list(iter_inputs([tmp_path / "list.txt", tmp_path / "empty"]))
    assert found == [str(tmp_path / "a" / "1.png"), str(tmp_path / "b" / "2.png"), str(tmp_path / "empty")]
    (tmp_path / "bad.csv").write_text("file\nx.png\n")
    with pytest.raises(ValueError, match="'path' column"):
        list(iter_inputs([tmp_path / "bad.csv"]))
    index = SeriesIndex()
    index.add(scan_chunk(encode_paths(found[:2])))
    index.add(scan_chunk(encode_paths([str(tmp_path / "a" / "3.png")])))
    assert [(s.grouped_by, s.key, s.files) for s in index] == [
        ("folder", str(tmp_path / "a"), 2), ("folder", str(tmp_path / "b"), 1)]
    assert next(iter(index)).paths() == [str(tmp_path / "a" / "1.png"), str(tmp_path / "a" / "3.png")]


def test_cli_screen_synchronous(archive, tmp_path):
    from asinfer.engine.cli import app

    out = tmp_path / "results"
    args = ["screen", str(archive), "--out", str(out), "--scheduler", "synchronous", "-m", str(TINY), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["series"] == 6 and summary["slices"] == 48
    assert "6 series screened" in result.stderr
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.stderr
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0 and json.loads(resumed.stdout)["resumed"] == 6
    bad = CliRunner().invoke(app, ["screen", str(archive), "--out", str(tmp_path / "x"), "--scheduler", "nope"])
    assert bad.exit_code == 2 and "tcp://" in bad.stderr


@requires_dask
def test_a_local_cluster_of_two_worker_processes_gives_the_synchronous_results(archive, tmp_path):
    from asinfer.engine.screen import screen

    sync, local = tmp_path / "sync", tmp_path / "local"
    screen(_settings([archive], sync))
    summary = screen(_settings([archive], local, scheduler="local", workers=2, threads_per_worker=1, task_slices=8))
    assert summary.workers == 2 and summary.series == 6
    assert _series_facts(_table(local, "series")) == _series_facts(_table(sync, "series"))
    _assert_exactly_once(local, _files(archive))
    assert json.loads((local / "run.json").read_text())["status"] == "complete"


def test_cli_names_the_extra_when_pyarrow_is_missing(archive, tmp_path, monkeypatch):
    import sys

    from asinfer.engine.cli import app

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ModuleNotFoundError
    result = CliRunner().invoke(app, ["screen", str(archive), "--out", str(tmp_path / "r"), "--scheduler", "synchronous"])
    assert result.exit_code == 2 and "asinfer[screen]" in result.stderr



@requires_dask
@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_workers_undo_the_nannys_malloc_trim_threshold(monkeypatch):
    """The Dask nanny's MALLOC_TRIM_THRESHOLD_=65536 cost a worker ~20 % of its rate; the plugin resets it."""
    from asinfer.engine.screen import relax_malloc_trim

    assert relax_malloc_trim() is True
    plugin = importlib.import_module("asinfer.engine.screen._plugin")
    calls = []
    monkeypatch.setattr(plugin, "relax_malloc_trim", lambda: calls.append(1))
    monkeypatch.setattr(plugin, "classifier_for", lambda spec: None)
    plugin.ClassifierPlugin(spec=None).setup(worker=None)
    assert calls == [1]
