"""What Dask costs beside the plain engine, how it scales, and what survives a fault: ``asinfer screen``.

    python -m asinfer.benchmarks.screen [--slices 2000] [--rounds 3] [--model BUNDLE] [--json out.json]

Data: phantom DICOM series (12 slices each, so 2,000 slices are ~167 series; seed 0). Every contender
is the real command in a fresh process, timed end to end, interleaved round by round:

* ``predict``: ``asinfer predict DATA -f jsonl -o FILE`` (the plain engine, every core);
* ``sync``: ``asinfer screen --scheduler synchronous`` (every core in one process);
* ``local 1x2``, ``local 2x1``, ``local 1x1``: a LocalCluster of W workers x T threads.

slices/s of a screen contender leaves out its cluster start (Dask and the workers' model loads, from
run.json), which is its own column; the issue's target is every Dask mode >= 0.9x ``predict``, and
1 -> 2 workers at one thread each >= 85 % efficient (``local 2x1`` screening rate over twice ``local 1x1``'s).

Faults (each checked against the listing: every input a row exactly once, no duplicate series):
* ``kill-worker``: SIGKILL one worker process of a 2-worker LocalCluster once parts appear; the run
  must complete (the nanny restarts it, Dask reruns its task);
* ``sigint-resume``: SIGINT the client once parts appear (exit 130, run.json ``interrupted``), then the
  same command with ``--resume``: the union is complete, without duplicates.

Share the machine with nothing else while measuring (``nice`` does not make a busy machine idle).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SLICES_PER_SERIES = 12


def _asinfer(*args: str) -> list[str]:
    """The console script users run (its ``__main__`` guard is what Dask's spawned workers need)."""
    script = Path(sys.executable).parent / "asinfer"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "asinfer.engine", *args]


def make_data(root: Path, slices: int) -> list[str]:
    from asinfer.trainer.phantoms import write_dataset

    patients = max(1, round(slices / SLICES_PER_SERIES))
    write_dataset(root / "data", patients=patients, slices=SLICES_PER_SERIES, fmt="dicom", size=256, seed=0)
    return sorted(str(p) for p in (root / "data").rglob("*.dcm"))


def contenders(data: Path, model: list[str]) -> dict[str, list[str]]:
    screen = ["screen", str(data), *model]
    return {
        "predict": ["predict", str(data), *model, "-f", "jsonl", "-o", "{out}/predict.jsonl"],
        "sync": [*screen, "--out", "{out}", "--scheduler", "synchronous"],
        "local 1x2": [*screen, "--out", "{out}", "--workers", "1", "--threads-per-worker", "2"],
        "local 2x1": [*screen, "--out", "{out}", "--workers", "2", "--threads-per-worker", "1"],
        "local 1x1": [*screen, "--out", "{out}", "--workers", "1", "--threads-per-worker", "1"],
    }


def run_once(args: list[str], out: Path) -> dict:
    out.mkdir(parents=True)
    command = [a.replace("{out}", str(out)) for a in args]
    start = time.perf_counter()
    done = subprocess.run(_asinfer(*command), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
    record = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else None
    seconds = record["seconds"] if record else {}
    return {"wall_s": wall, "start_s": seconds.get("start", 0.0), "index_s": seconds.get("index"),
            "screen_s": seconds.get("screen"), "screen_rate": record["slices_per_s"] if record else None}


def measure(root: Path, files: list[str], model: list[str], rounds: int) -> dict:
    n = len(files)
    runs: dict[str, list[dict]] = {name: [] for name in contenders(root / "data", model)}
    for r in range(rounds):
        for name, args in contenders(root / "data", model).items():
            runs[name].append(run_once(args, root / f"r{r}-{name.replace(' ', '_')}"))
    rows = {}
    for name, rs in runs.items():
        rates = [n / (x["wall_s"] - x["start_s"]) for x in rs]
        rows[name] = {"slices_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
                      "start_s": statistics.median(x["start_s"] for x in rs),
                      "wall_s": statistics.median(x["wall_s"] for x in rs),
                      "screen_phase_slices_per_s": _median([x["screen_rate"] for x in rs])}
    plain = rows["predict"]["slices_per_s"]
    for row in rows.values():
        row["vs_predict"] = row["slices_per_s"] / plain
    one, two = rows["local 1x1"]["screen_phase_slices_per_s"], rows["local 2x1"]["screen_phase_slices_per_s"]
    return {"slices": n, "rounds": rounds, "rows": rows,
            "scaling_efficiency_1_to_2_workers": (two / (2 * one)) if one and two else None}


def _median(values):
    values = [v for v in values if v]
    return statistics.median(values) if values else None


def check_exactly_once(out: Path, files: list[str]) -> dict:
    """Every listed file has rows, no (source, frame) and no series twice."""
    import pyarrow.dataset as ds

    slices = ds.dataset(out / "slices", format="parquet").to_table(columns=["source", "frame"]).to_pylist()
    series = ds.dataset(out / "series", format="parquet").to_table(columns=["series"]).column("series").to_pylist()
    pairs = [(r["source"], r["frame"]) for r in slices]
    return {"rows": len(pairs), "duplicate_rows": len(pairs) - len(set(pairs)),
            "missing_inputs": len(set(files) - {s for s, _ in pairs}), "series": len(series),
            "duplicate_series": len(series) - len(set(series)),
            "ok": len(pairs) == len(set(pairs)) and set(files) <= {s for s, _ in pairs}
            and len(series) == len(set(series))}


def _wait_for_parts(out: Path, proc: subprocess.Popen, at_least: int, timeout: float = 600) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        parts = len(list((out / "series").glob("part-*.parquet"))) if (out / "series").is_dir() else 0
        if parts >= at_least:
            return parts
        time.sleep(0.1)
    raise RuntimeError(f"no {at_least} parts appeared in {out} (exit {proc.poll()})")


def fault_kill_worker(root: Path, files: list[str], model: list[str]) -> dict:
    import psutil

    out = root / "fault-kill"
    args = _asinfer("screen", str(root / "data"), *model, "--out", str(out), "--workers", "2",
                    "--threads-per-worker", "1", "--task-slices", "12")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_parts(out, proc, 2)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "spawn_main" in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())]
    victim = workers[-1] if workers else None
    if victim is not None:
        victim.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=900)
    record = json.loads((out / "run.json").read_text())
    return {"command": " ".join(["asinfer", *args[args.index("screen"):]]),
            "killed_pid": victim.pid if victim else None, "exit": proc.returncode, "status": record["status"], "failed_series": record["counts"]["failed_series"],
            **check_exactly_once(out, files)}


def fault_sigint_resume(root: Path, files: list[str], model: list[str]) -> dict:
    out = root / "fault-sigint"
    args = _asinfer("screen", str(root / "data"), *model, "--out", str(out), "--workers", "2",
                    "--threads-per-worker", "1", "--task-slices", "12")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    parts = _wait_for_parts(out, proc, 2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=300)
    first = {"exit": proc.returncode, "status": json.loads((out / "run.json").read_text())["status"],
             "parts_when_interrupted": parts, "series_written": len(list((out / "series").glob("part-*.parquet")))}
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True)
    record = json.loads((out / "run.json").read_text())
    return {"command": " ".join(["asinfer", *args[args.index("screen"):]]) + "  (SIGINT, then with --resume)",
            "interrupted": first, "resume_exit": resumed.returncode, "resumed_series": record["counts"]["resumed"],
            "status": record["status"], **check_exactly_once(out, files)}


def _sigint_default() -> None:
    """A child of a background job inherits SIGINT ignored; a user's Ctrl-C reaches a foreground one."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def render(result: dict) -> str:
    m = result.get("measure")
    lines = [] if m is None else _table(m)
    for name in ("kill_worker", "sigint_resume"):
        if name in result:
            lines.append(f"{name}: {json.dumps(result[name])}")
    return "\n".join(lines)


def _table(m: dict) -> list[str]:
    lines = [f"{m['slices']} phantom slices, {m['rounds']} interleaved round(s); slices/s leave out the cluster "
             f"start; median (min-max)", "",
             "| contender | slices/s | vs predict | cluster start s | screen-phase slices/s | wall s |",
             "|---|---|---|---|---|---|"]
    for name, row in m["rows"].items():
        phase = row["screen_phase_slices_per_s"]
        lines.append(f"| {name} | {row['slices_per_s']:.1f} ({row['min']:.1f}-{row['max']:.1f}) | "
                     f"{row['vs_predict']:.2f}x | {row['start_s']:.2f} | {'-' if phase is None else f'{phase:.1f}'} | "
                     f"{row['wall_s']:.1f} |")
    eff = m["scaling_efficiency_1_to_2_workers"]
    return [*lines, "", f"1 -> 2 workers at 1 thread: efficiency {'-' if eff is None else f'{eff:.0%}'}", ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="bundle [default: the shipped model]")
    parser.add_argument("--no-faults", action="store_true", help="only the throughput table")
    parser.add_argument("--faults-only", action="store_true", help="only the fault checks")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    model = [] if args.model is None else ["--model", str(args.model)]
    with tempfile.TemporaryDirectory(prefix="asinfer-screen-bench-") as tmp:
        root = Path(tmp)
        files = make_data(root, args.slices)
        result = {"machine": {"cpus": os.cpu_count(), "load_1m_before": os.getloadavg()[0]},
                  "command": " ".join(["python -m asinfer.benchmarks.screen", *(argv or sys.argv[1:])])}
        if not args.faults_only:
            result["measure"] = measure(root, files, model, args.rounds)
        if not args.no_faults:
            result["kill_worker"] = fault_kill_worker(root, files, model)
            result["sigint_resume"] = fault_sigint_resume(root, files, model)
        result["machine"]["load_1m_after"] = os.getloadavg()[0]
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
