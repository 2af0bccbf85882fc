"""The node's worker as a child process (the default without a classifier given): it decides series
with its metrics relayed, dies with the node, is started again when it dies alone, and says why it
could not load a model."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pydicom
import pytest

pytest.importorskip("pynetdicom", reason="needs the node extra (the dev extra installs it)")
pytest.importorskip("highdicom", reason="needs the node extra (the dev extra installs it)")

from test_node import TINY, associate, node_config, runs_in, send_c_store, wait_for, write_series  # noqa: E402
from test_node_crash import Serve  # noqa: E402

from asinfer.engine.node import Node, WorkerStartError  # noqa: E402


@pytest.fixture(scope="module")
def series5(tmp_path_factory) -> list[Path]:
    return write_series(tmp_path_factory.mktemp("series"), seed=3)


def _send(port: int, paths: list[Path]) -> None:
    assoc = associate(port, [pydicom.dcmread(paths[0])])
    try:
        for path in paths:
            assert int(send_c_store(assoc, pydicom.dcmread(path)).Status) == 0
    finally:
        assoc.release()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return re.search(r"State:\s+Z", state) is not None  # a zombie has stopped running


def test_the_worker_process_decides_series_and_its_metrics_reach_the_node(tmp_path, series5):
    with Node(node_config(tmp_path, model=TINY)) as node:
        assert node.worker.pid not in (None, os.getpid()) and node.health()[0]
        _send(node.port, series5)
        run = runs_in(node.spool, "done")[0]
        assert run.n_instances == len(series5) and (node.spool.results / Path(run.results).name).is_dir()
        wait_for(lambda: node.metrics.count("series_processed") == 1, 10, "the child's count relayed")
        assert node.metrics.observations("inference_seconds") == 1
        assert node.metrics.observations("series_latency_seconds", "durable") == 1
        assert node.worker.processed == 1


def test_a_worker_process_that_dies_alone_is_started_again_and_the_node_goes_on(tmp_path, series5, caplog):
    with Node(node_config(tmp_path, model=TINY)) as node:
        first = node.worker.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: node.metrics.count("worker_restarts") == 1 and node.worker.pid != first, 20,
                 "a new worker process")
        _send(node.port, series5)
        runs_in(node.spool, "done")
        assert node.health()[0]
    assert "event=worker-died" in caplog.text


def test_a_model_the_worker_process_cannot_load_stops_the_start_with_the_reason(tmp_path):
    node = Node(node_config(tmp_path, model=tmp_path / "no-such-model"))
    with pytest.raises(WorkerStartError, match="no-such-model"):
        node.start()
    assert node.port == 0  # it never listened


def test_the_worker_process_dies_with_a_killed_node(tmp_path):
    serve = Serve(tmp_path / "spool", quiet=1.0)
    try:
        pid = int(re.search(r"event=worker-started pid=(\d+)", serve.log).group(1))
        assert not _gone(pid)
        serve.proc.send_signal(signal.SIGKILL)
        serve.proc.wait(10)
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pid), "the worker outlived the node"
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()


_ORPHAN = """
import ctypes, importlib, os, sys, time
def no_prctl(*args, **kwargs):
    raise OSError("no prctl here")  # as on macOS: only the parent watch is left
ctypes.CDLL = no_prctl
importlib.import_module("asinfer.engine.node._process")._die_with_parent(int(sys.argv[1]))
open(sys.argv[2], "w").close()  # watching now
time.sleep(60)
"""

_NODE = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2]],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
deadline = time.monotonic() + 30
while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.05)
"""


def test_without_pdeathsig_the_worker_still_notices_that_the_node_died(tmp_path):
    import subprocess
    import sys

    watching = tmp_path / "watching"
    node = subprocess.run([sys.executable, "-c", _NODE, _ORPHAN, str(watching)], capture_output=True, text=True,
                          timeout=60)
    pid = int(node.stdout.split()[0])
    assert watching.exists(), "the worker never started watching"
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid), "the worker outlived its node without PR_SET_PDEATHSIG"
