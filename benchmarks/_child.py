"""A process that runs only one format: cold start and peak memory are measured on it.

    python -m asinfer.benchmarks._child RUNTIME MODEL_FILE --size H W --threads N --batches 1,8

prints ``first`` as soon as its first batch-1 prediction is done, then runs
one call at each batch size and exits. Imports only the runtime it needs.

:func:`measure` runs such a command (or any other, e.g. ``asinfer predict``)
under a small launcher process (``python -m asinfer.benchmarks._child --launch``)
that times new process -> ``first`` line (or -> exit) and reads the peak RSS
with ``os.wait4``. The launcher exists because Linux carries a process's
peak-RSS mark across fork/vfork + exec: spawned straight from the benchmark
(which holds every model), each child would report the benchmark's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

TIMEOUT_S = 600
READY = "first"
LAUNCH = "--launch"


@dataclass(frozen=True)
class ProcessStats:
    """What a measured child process gave."""

    cold_start_s: float | None  # spawn -> first prediction (or -> exit for a whole command)
    peak_rss_mb: float | None  # MiB, from the kernel's ru_maxrss
    error: str | None = None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == LAUNCH:
        ready, command = argv[1] == "ready", argv[3:]  # --launch ready|exit -- CMD...
        print(json.dumps(asdict(_measure_here(command, ready))))
        return
    _run_format(argv)


def _run_format(argv: list[str]) -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runtime")
    parser.add_argument("model", type=Path)
    parser.add_argument("--size", type=int, nargs=2, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batches", default="1")
    args = parser.parse_args(argv)
    from asinfer.trainer.runtimes import RUNTIMES

    predict = RUNTIMES[args.runtime].load(args.model, args.threads)
    image = np.random.default_rng(0).integers(0, 256, (1, *args.size, 1), dtype=np.uint8)
    predict(image)
    print(READY, flush=True)
    for batch in (int(b) for b in args.batches.split(",")):
        predict(np.repeat(image, batch, axis=0))


def measure(command: list[str], until_ready: bool) -> ProcessStats:
    """Run ``command`` under the launcher: time new process -> its ``first`` line (or -> exit), and its peak RSS.

    Never raises for the command's own failure: the error comes back in the stats.
    """
    import subprocess

    launcher = [sys.executable, "-m", "asinfer.benchmarks._child", LAUNCH, "ready" if until_ready else "exit", "--", *command]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": _pythonpath()}
    try:
        done = subprocess.run(launcher, capture_output=True, text=True, env=env, timeout=TIMEOUT_S + 60)
        return ProcessStats(**json.loads(done.stdout.strip().splitlines()[-1]))
    except (subprocess.TimeoutExpired, ValueError, IndexError, TypeError) as exc:
        return ProcessStats(None, None, f"launcher failed: {type(exc).__name__}: {str(exc)[:200]}")


def _measure_here(command: list[str], until_ready: bool) -> ProcessStats:
    """In the launcher: run ``command``, killed after ``TIMEOUT_S``."""
    import subprocess
    import tempfile
    import threading

    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: TensorFlow's chatter cannot block the child
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
        except OSError as exc:
            return ProcessStats(None, None, f"cannot start {command[0]}: {exc}")
        timer = threading.Timer(TIMEOUT_S, proc.kill)
        timer.start()
        ready = _wait_ready(proc) if until_ready else None
        out = proc.stdout.read()
        rss = _reap(proc)
        elapsed = time.perf_counter() - start
        timer.cancel()
        err.seek(0)
        tail = (err.read() or out).strip().splitlines()[-1:]
    if proc.returncode != 0 or (until_ready and ready is None):
        return ProcessStats(None, rss, f"child failed: {(tail or [f'exit code {proc.returncode}'])[0][:200]}")
    return ProcessStats(round(ready - start if until_ready else elapsed, 3), rss)


def _wait_ready(proc) -> float | None:
    """The time the child printed its ready line, or None if it never did."""
    for line in proc.stdout:
        if line.strip() == READY:
            return time.perf_counter()
    return None


def _reap(proc) -> float | None:
    """Wait for the child; its peak RSS in MiB where the OS reports it per process."""
    if not hasattr(os, "wait4"):
        proc.wait()
        return None
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 / 1024 if sys.platform.startswith("linux") else 1 / 1024 / 1024  # KiB on Linux, bytes on macOS
    return round(usage.ru_maxrss * scale, 1)


def _pythonpath() -> str:
    root = str(Path(__file__).resolve().parent.parent)
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)


if __name__ == "__main__":
    main()
