"""asinfer serve as a process: kill -9 in the middle of an association, restart, nothing acknowledged is lost;
SIGTERM stops it cleanly (exit 0) with its work in the spool."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pydicom
import pytest

pytest.importorskip("pynetdicom", reason="needs the node extra (the dev extra installs it)")
pytest.importorskip("highdicom", reason="needs the node extra (the dev extra installs it)")

from test_node import TINY, associate, send_c_store, wait_for, write_series  # noqa: E402


class Serve:
    """``asinfer serve`` in a child process on a free port; its stderr collected as it comes."""

    def __init__(self, spool: Path, quiet: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "asinfer.engine", "serve", "--host", "127.0.0.1", "--port", "0", "--spool",
             str(spool), "--quiet-period", str(quiet), "--model", str(TINY)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self._listening = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(30):
            self.proc.kill()
            raise AssertionError("asinfer serve did not start:\n" + "".join(self.lines))
        self.port = int(re.search(r"event=listening .*port=(\d+)", "".join(self.lines)).group(1))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if "event=listening" in line:
                self._listening.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)


def _runs(spool: Path) -> list[dict]:
    with sqlite3.connect(spool / "state.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM runs ORDER BY id")]


def test_kill_9_mid_association_then_restart_processes_every_acknowledged_instance(tmp_path):
    series = write_series(tmp_path / "series", seed=11, slices=5)
    spool = tmp_path / "spool with spaces"
    first = Serve(spool, quiet=60)  # nothing completes before the kill
    assoc = associate(first.port, [pydicom.dcmread(series[0])])
    acknowledged = []
    for path in series[:3]:
        ds = pydicom.dcmread(path)
        if int(send_c_store(assoc, ds).Status) == 0:
            acknowledged.append(ds.SOPInstanceUID)
    first.proc.send_signal(signal.SIGKILL)  # mid-association: two instances never sent
    assert first.proc.wait(10) == -signal.SIGKILL
    assert len(acknowledged) == 3
    wait_for(lambda: not assoc.is_established, 10, "the sender to see the association end")

    second = Serve(spool, quiet=0.3)
    try:
        run = wait_for(lambda: next((r for r in _runs(spool) if r["state"] == "done"), None), 20, "the run done")
        assert (run["n_instances"], run["attempts"]) == (3, 1)
        result = json.loads((spool / run["results"] / "result.json").read_text())
        assert result["series"]["n_slices"] == 3
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(15) == 0, second.log
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
    assert "event=stopped" in second.log and "unacknowledged=0" in second.log
    assert len(_runs(spool)) == 1 and [p.name for p in (spool / "results").iterdir()] == [Path(run["results"]).name]
