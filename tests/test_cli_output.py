"""`asinfer predict` output that survives odd names, broken outputs and Ctrl-C, and exit codes that mean what
the README says (issue 11). Each test reproduces one failure found on main; inputs are built here, tiny."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from asinfer import engine
from asinfer.engine import cli
from asinfer.engine.cli import MAX_THREADS, app

from conftest import rng_image

runner = CliRunner()
POSIX = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals, file names and pipes")
needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(),
                                    reason="needs /dev/full (Linux, BSD); this platform lacks it")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(text: str) -> str:
    """The whole of stderr when it must be one `error:` line and no traceback."""
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in text, text
    return lines[0]


def png(path: Path, side: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", rng_image((side, side)))  # imwrite cannot take every name we test
    path.write_bytes(data.tobytes())
    return path


@pytest.fixture()
def here(tmp_path, monkeypatch) -> Path:
    """Run from tmp_path, so rows carry short relative names that the table never folds."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def two_pngs(here) -> Path:
    png(here / "in" / "a.png")
    png(here / "in" / "b.png")
    return Path("in")


# --- fake classifiers: the real tiny model, with a walk that skips, or a run that crashes or is interrupted ------


class Wrapped:
    """The session's tiny classifier with ``iter_predict`` replaced."""

    def __init__(self, clf, iter_predict) -> None:
        self._clf, self.iter_predict = clf, iter_predict

    def __getattr__(self, name):
        return getattr(self._clf, name)


def use(monkeypatch, clf, iter_predict) -> None:
    monkeypatch.setattr(engine, "load", lambda *a, **k: Wrapped(clf, iter_predict))


def rows_then(clf, exc: BaseException, rows: int = 2):
    def iter_predict(sources, batch_size=8, *, on_skip=None):
        yield from list(clf.iter_predict(sources, batch_size))[:rows]
        raise exc
    return iter_predict


# --- 1. rich markup in a name: crashed with 0 rows, or named another file --------------------------------------


def test_markup_in_names_is_shown_verbatim(here, tiny_bundle):
    """Was: MarkupError after the whole run (exit 1, no rows); `[bold]x.png` was shown as `x.png`."""
    for name in ("scan[/b]01.png", "[bold]x.png", "[red]y[/red].png"):
        png(here / "in" / name)
    result = invoke("predict", "in", "-m", tiny_bundle)
    assert result.exit_code == 0, result.output
    for shown in ("in/scan[/b]01.png", "in/[bold]x.png", "in/[red]y[/red].png"):
        assert shown in result.stdout
    assert "3 slices predicted" in result.stderr


# --- 2. names that are not UTF-8 or hold control characters ----------------------------------------------------


@POSIX
def test_control_characters_and_non_utf8_names_are_escaped(here, tiny_bundle):
    """Was: a latin-1 name gave UnicodeEncodeError and a 0-byte `-o` file; ESC and newline in a name reached the
    terminal raw (clear the screen, fake a row)."""
    try:
        png(Path(os.fsdecode(b"in/caf\xe9.png")))
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    png(here / "in" / "evil\x1b[2J\nfake.png")

    table = invoke("predict", "in", "-m", tiny_bundle, "--by", "slice")
    assert table.exit_code == 0, table.output
    assert "in/caf\\xe9.png" in table.stdout and "in/evil\\x1b[2J\\nfake.png" in table.stdout
    assert "\x1b" not in table.stdout and len(table.stdout.strip().splitlines()) == 2 + 2  # header, rule, 2 rows
    with_series = invoke("predict", "in", "-m", tiny_bundle)  # the series table names the same files, escaped
    assert "\x1b" not in with_series.stdout and "evil\\x1b[2J\\nfake.png#0" in with_series.stdout

    for fmt in ("csv", "json", "jsonl"):
        result = invoke("predict", "in", "-m", tiny_bundle, "-f", fmt, "-o", f"out.{fmt}")
        assert result.exit_code == 0, result.output
        text = Path(f"out.{fmt}").read_bytes().decode("utf-8")  # strict: valid UTF-8 throughout
        assert "\x1b" not in text
    rows = list(csv.DictReader(io.StringIO(Path("out.csv").read_text())))
    assert sorted(r["source"] for r in rows) == ["in/caf\\xe9.png", "in/evil\\x1b[2J\\nfake.png"]
    assert len(Path("out.csv").read_text().splitlines()) == 3  # one line per row
    assert {r["source"] for r in json.loads(Path("out.json").read_text())["results"]} == {
        "in/caf\\xe9.png", "in/evil\x1b[2J\nfake.png"}  # json escapes control characters itself


# --- 2. the output target, checked before the run --------------------------------------------------------------


@pytest.mark.parametrize("target, message", [
    ("missing/out.csv", "the folder missing does not exist"),
    ("in", "is a folder"),
    ("", "is a folder"),
    ("in/a.png/out.csv", "does not exist"),
])
def test_output_target_is_checked_before_the_run(two_pngs, tiny_bundle, monkeypatch, target, message):
    """Was: a traceback (FileNotFoundError, IsADirectoryError) after the whole run."""
    monkeypatch.setattr(engine, "load", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    result = invoke("predict", two_pngs, "-m", tiny_bundle, "-o", target)
    assert result.exit_code == 2 and message in one_error_line(result.stderr)


@POSIX
def test_read_only_folder_is_checked_before_the_run(two_pngs, tiny_bundle, monkeypatch):
    """Was: PermissionError traceback after the run. Root writes into a 0o500 folder, so as root the check
    is shown a folder that refuses writes instead."""
    locked = Path("locked")
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: real(path, mode) and Path(path) != locked)
    monkeypatch.setattr(engine, "load", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    try:
        result = invoke("predict", two_pngs, "-m", tiny_bundle, "-o", locked / "out.csv")
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 2 and "not writable" in one_error_line(result.stderr)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where nobody can create a file")
def test_output_that_cannot_be_created_is_one_line_before_the_run(two_pngs, classifier, monkeypatch):
    """The checks pass (root may write to /proc, says access()), creating the file fails: still before any row."""
    use(monkeypatch, classifier, lambda *a, **k: pytest.fail("the run started"))
    result = invoke("predict", two_pngs, "-o", "/proc/asinfer-results.csv")
    assert result.exit_code == 2 and "/proc/asinfer-results.csv" in one_error_line(result.stderr)


@needs_dev_full
def test_output_file_on_a_full_device_is_one_line_before_the_run(two_pngs, tiny_bundle):
    """Was: OSError traceback after the run; now the CSV header hits ENOSPC before any work."""
    result = invoke("predict", two_pngs, "-m", tiny_bundle, "-f", "csv", "-o", "/dev/full")
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == "error: cannot write results to /dev/full: No space left on device"


@needs_dev_full
@pytest.mark.parametrize("fmt", ["csv", "table"])
def test_stdout_on_a_full_device_is_one_line(two_pngs, tiny_bundle, fmt):
    """Was: OSError traceback and exit 1 (the code for "some inputs failed")."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "asinfer.engine", "predict", two_pngs, "-m", tiny_bundle,
                               "-f", fmt], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 2
    assert one_error_line(done.stderr) == "error: cannot write results to stdout: No space left on device"


def test_a_crash_leaves_no_file_and_keeps_the_old_one(two_pngs, tiny_bundle, classifier, monkeypatch, capsys):
    """Was: a crash after `-o` had truncated the target lost the previous results; now results are written
    beside the target and renamed only when complete."""
    Path("out.csv").write_text("old results\n")
    use(monkeypatch, classifier, rows_then(classifier, RuntimeError("boom")))
    code = run_main(monkeypatch, "predict", two_pngs, "-f", "csv", "-o", "out.csv")
    assert code == 2 and "internal error: RuntimeError: boom" in one_error_line(capsys.readouterr().err)
    assert Path("out.csv").read_text() == "old results\n"
    assert sorted(p.name for p in Path().iterdir()) == ["in", "out.csv"]  # no temporary file left behind


# --- 2. streaming and Ctrl-C -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_folder(tmp_path_factory) -> Path:
    """200 smooth 1024x1024 PNGs (small files, a full decode each): a run of seconds, long enough to stop part way.

    Distinct files, not links: a folder walk reads a file reached twice (by another link) only once.
    """
    import cv2

    folder = tmp_path_factory.mktemp("many slices")
    ramp = np.tile(np.arange(1024, dtype=np.uint16) // 4, (1024, 1)).astype(np.uint8)
    for n in range(200):
        cv2.imwrite(str(folder / f"{n:03d}.png"), np.roll(ramp, n, axis=1))
    return folder


def start(*args) -> subprocess.Popen:
    """``asinfer predict`` in a child that takes Ctrl-C as a terminal would send it (even from a background job)."""
    return subprocess.Popen([sys.executable, "-m", "asinfer.engine", "predict", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@POSIX
def test_sigint_keeps_the_streamed_rows_and_exits_130(slow_folder, tiny_bundle):
    """Was: Ctrl-C wrote nothing (results were rendered only at the end) and exited 1 via click's Abort."""
    child = start(slow_folder, "-m", tiny_bundle, "-f", "jsonl", "--batch-size", "1", "--threads", "1")
    first = child.stdout.readline()  # a row is out while the run goes on: it streams
    child.send_signal(signal.SIGINT)
    lines = [first, *child.stdout.read().splitlines()]
    err = child.stderr.read()
    assert child.wait(timeout=30) == 130, err
    objects = [json.loads(line) for line in lines]
    rows, summary = [o for o in objects if "source" in o], objects[-1]["summary"]
    assert 1 <= len(rows) < 200 and all(r["label"] in ("AS", "no AS") for r in rows)
    assert summary["series"] == summary["series_undecided"] == 1  # part of a series gets no decision
    assert summary["interrupted"] is True and summary["predicted"] == len(rows)
    assert f"interrupted: stopped after {len(rows)} row" in err and "Traceback" not in err


@POSIX
def test_broken_pipe_stops_quietly(slow_folder, tiny_bundle):
    """`asinfer predict ... | head -1`: was a traceback and exit 1; now silent, 141 as for SIGPIPE."""
    child = start(slow_folder, "-m", tiny_bundle, "-f", "csv", "--batch-size", "1", "--threads", "1")
    assert child.stdout.readline().startswith("source,frame,")
    child.stdout.close()
    err = child.stderr.read()
    assert child.wait(timeout=30) == cli.EXIT_BROKEN_PIPE and err == ""


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_ctrl_c_to_a_file_keeps_the_rows_done_as_partial(two_pngs, classifier, monkeypatch, fmt):
    """Interrupted `-o out`: the rows done go to out.partial (json/table rendered from them); out is untouched."""
    use(monkeypatch, classifier, rows_then(classifier, KeyboardInterrupt(), rows=1))
    result = invoke("predict", two_pngs, "-f", fmt, "-o", "out")
    assert result.exit_code == 130, result.output
    assert not Path("out").exists() and "in/a.png" in Path("out.partial").read_text()
    assert "results in out.partial\n" in result.stderr
    assert "interrupted: stopped after 1 row;" in result.stderr
    if fmt == "json":
        assert json.loads(Path("out.partial").read_text())["summary"]["interrupted"] is True


# --- 3. exit codes: a crash is 2 with one line, Ctrl-C is 130 --------------------------------------------------


def run_main(monkeypatch, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["asinfer", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return exit_.value.code


def test_a_crash_is_exit_2_with_one_line(two_pngs, classifier, monkeypatch, capsys):
    """Was: a rich traceback and exit 1, the code that promises a row per failed input."""
    use(monkeypatch, classifier, rows_then(classifier, RuntimeError("boom\non two lines")))
    assert run_main(monkeypatch, "predict", two_pngs) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == ("error: internal error: RuntimeError: boom\\non two lines "
                    "(set ASINFER_DEBUG=1 for the traceback)")

    monkeypatch.setenv("ASINFER_DEBUG", "1")
    assert run_main(monkeypatch, "predict", two_pngs) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err


def test_ctrl_c_outside_predict_exits_130(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "app", interrupted)
    assert run_main(monkeypatch, "info") == 130


def test_ctrl_c_while_loading_the_model_exits_130(two_pngs, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(engine, "load", interrupted)
    assert invoke("predict", two_pngs).exit_code == 130


# --- 4. bounded threads, empty paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("threads, code", [("0", 2), (str(MAX_THREADS + 1), 2), ("100000", 2), (str(MAX_THREADS), 0)])
def test_threads_are_bounded_by_the_option(two_pngs, classifier, monkeypatch, threads, code):
    """Was: --threads 1000 hung in session creation, 100000 crashed it."""
    asked = []
    monkeypatch.setattr(engine, "load", lambda *a, threads=None, **k: asked.append(threads) or classifier)
    result = invoke("predict", two_pngs, "--threads", threads)
    assert result.exit_code == code, result.output
    assert asked == ([int(threads)] if code == 0 else [])
    if code:
        assert "--threads" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("args", [[""], ["in", ""]])
def test_an_empty_path_is_a_usage_error(two_pngs, monkeypatch, args):
    """Was: `asinfer predict ""` predicted every image under the current folder."""
    monkeypatch.setattr(engine, "load", lambda *a, **k: pytest.fail("an empty path reached the model"))
    result = invoke("predict", *args)
    assert result.exit_code == 2 and "is empty" in one_error_line(result.stderr)


# --- the summary counts what the walk skipped; machine formats --------------------------------------------------


def skipping(clf):
    def iter_predict(sources, batch_size=8, *, on_skip=None):
        for path, why in (("in/.DS_Store", "hidden"), ("in/.hidden.png", "hidden"), ("in/notes\x1b[2J.txt", "not an image")):
            on_skip(path, why)
        yield from clf.iter_predict(sources, batch_size)
    return iter_predict


def test_summary_counts_skipped_entries_and_verbose_lists_them(two_pngs, classifier, monkeypatch):
    use(monkeypatch, classifier, skipping(classifier))
    result = invoke("predict", two_pngs, "-f", "jsonl")
    assert result.exit_code == 0, result.output
    assert "3 entries skipped (2 hidden, 1 not an image); --verbose lists them" in result.stderr
    assert "DS_Store" not in result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["summary"]["skipped"] == 3

    verbose = invoke("predict", two_pngs, "-v")
    assert "skipped in/.DS_Store (hidden)" in verbose.stderr
    assert "skipped in/notes\\x1b[2J.txt (not an image)" in verbose.stderr and "\x1b" not in verbose.stderr
    assert "3 entries skipped (2 hidden, 1 not an image); listed above" in verbose.stderr


def test_jsonl_is_one_object_a_row_then_the_summary_and_csv_keeps_its_columns(two_pngs, tiny_bundle):
    result = invoke("predict", two_pngs, "-m", tiny_bundle, "-f", "jsonl")
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 0 and len(objects) == 4  # two slice rows, the folder's series, the summary
    assert [o["source"] for o in objects[:2]] == ["in/a.png", "in/b.png"]
    assert set(objects[0]) == {"source", "frame", "probability", "label", "reason", "message", "identity"}
    assert objects[2]["series"]["n_slices"] == 2 and objects[2]["series"]["grouped_by"] == "folder"
    assert objects[3]["summary"]["predicted"] == 2 and objects[3]["summary"]["model"]["name"]
    header = invoke("predict", two_pngs, "-m", tiny_bundle, "-f", "csv").stdout.splitlines()[0]
    assert header == "source,frame,probability,label,reason,message"
