"""Faults against ``asinfer serve``: kills, a destination that is down, a full disk, a hostile sender.

    python benchmarks/node_faults.py                    # every scenario
    python benchmarks/node_faults.py --only a,d --model models/asinfer-tiny

Scenarios (each a node process, ``asinfer serve``, with a test PACS as its destination):

a. ``kill -9`` mid-receive (in the middle of an association) and mid-processing (a run in ``processing``),
   then restart: every acknowledged instance is in the spool and processed, every run's SR reaches the PACS,
   no SR is stored twice under two UIDs;
b. the destination is down while series are processed, and comes up later: everything arrives;
c. disk full, simulated with a file-size limit on the node process (``prlimit RLIMIT_FSIZE``: every write
   fails with EFBIG, as with ENOSPC): the senders get 0xA700, never success; after the limit is lifted the
   sender's retry is stored and processed;
d. a hostile sender: garbage bytes on raw sockets, a non-image object, a truncated data set, an unknown
   calling AE: the node keeps serving a well-behaved sender at the same time.

Prints one table per scenario; exits 1 when a check fails. Phantoms are synthetic: NOT patient data.
"""

from __future__ import annotations

import argparse
import sqlite3
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from asinfer.benchmarks.node_load import (ROOT, SR_CLASS, ServeProcess, Table, TestPacs, free_port, node_settings,
                                          send_series, write_phantoms)


def runs(spool: Path) -> list[dict]:
    """The spool's runs (read-only; the node may be running: WAL readers see a consistent snapshot)."""
    with sqlite3.connect(f"file:{spool / 'state.sqlite'}?mode=ro", uri=True, timeout=10) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM runs ORDER BY id")]


def stored_uids(spool: Path) -> set[str]:
    with sqlite3.connect(f"file:{spool / 'state.sqlite'}?mode=ro", uri=True, timeout=10) as db:
        return {row[0] for row in db.execute("SELECT sop_uid FROM instances")}


def wait(predicate, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def all_final(spool: Path, n: int | None = None) -> bool:
    found = runs(spool)
    return bool(found) and (n is None or len(found) >= n) and all(r["state"] in ("sent", "done", "ignored", "failed")
                                                                  for r in found)


def sr_check(table: Table, pacs: TestPacs, spool: Path) -> None:
    """One SR per run that ended sent, each SOP Instance UID stored once (a resend keeps its UID)."""
    sent_runs = [r for r in runs(spool) if r["state"] == "sent"]
    srs = pacs.of_class(SR_CLASS)
    uids = [r.sop_uid for r in srs]
    table.check("SR per sent run", len(sent_runs), len(set(uids)), len(set(uids)) == len(sent_runs))
    table.check("SR stored twice (same UID)", 0, len(uids) - len(set(uids)), True)  # a resend after a kill: allowed
    table.rows.append(("runs", ", ".join(f"{r['id']}:{r['state']}(n={r['n_instances']},run={r['run']})"
                                         for r in runs(spool))))


# --- a: kill -9 -----------------------------------------------------------------------------------------------


def scenario_kill(args, workdir: Path, series: list[list[Path]]) -> Table:
    import pydicom
    from pynetdicom import AE

    from asinfer.engine.node import send_c_store

    table = Table("a. kill -9 mid-receive and mid-processing, restart")
    pacs = TestPacs().start()
    settings = node_settings(workdir, quiet=args.quiet_period, model=args.model,
                             destination=f"TESTPACS@127.0.0.1:{pacs.port}")
    spool = Path(settings["spool"])
    node = ServeProcess(workdir, settings, "a").start()
    send_series(node.port, series[0])  # a whole series first
    acked: set[str] = set()
    datasets = [pydicom.dcmread(p) for p in series[1]]
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="ASINFER")
    for n, ds in enumerate(datasets):
        if n == len(datasets) // 2:
            node.kill()  # mid-association: half the series acknowledged
            assoc.abort()
            break
        if int(send_c_store(assoc, ds).Status) == 0:
            acked.add(str(ds.SOPInstanceUID))
    acked |= {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in series[0]}
    table.check("acknowledged before the kill are stored", len(acked), len(acked & stored_uids(spool)),
                acked <= stored_uids(spool))

    node = ServeProcess(workdir, settings, "a").start()
    statuses, _ = send_series(node.port, series[1])  # the sender sends the series again, as scanners do
    table.check("resend after restart", "all 0x0000", "all 0x0000" if set(statuses) == {0} else statuses,
                set(statuses) == {0})
    for paths in series[2:]:
        send_series(node.port, paths)
    processing = wait(lambda: any(r["state"] == "processing" for r in runs(spool)), 60, step=0.005)
    state_at_kill = [r["state"] for r in runs(spool)]
    node.kill()
    table.rows.append(("states at the second kill", ", ".join(state_at_kill)))
    table.check("second kill hit a run in processing", True, bool(processing), bool(processing))

    node = ServeProcess(workdir, settings, "a").start()
    done = wait(lambda: all_final(spool), args.timeout)
    time.sleep(1.0)
    exit_code = node.terminate()
    pacs.stop()
    every = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for s in series for p in s}
    table.check("every instance stored once", len(every), len(stored_uids(spool)), stored_uids(spool) == every)
    table.check("every run final", True, bool(done), bool(done))
    table.check("no run failed", 0, sum(r["state"] == "failed" for r in runs(spool)),
                not any(r["state"] == "failed" for r in runs(spool)))
    table.check("one run per series (the resend joined it)", len(series), len(runs(spool)),
                len(runs(spool)) == len(series))
    sr_check(table, pacs, spool)
    table.check("exit on SIGTERM", 0, exit_code, exit_code == 0)
    return table


# --- b: destination down, then up -------------------------------------------------------------------------------


def scenario_destination(args, workdir: Path, series: list[list[Path]]) -> Table:
    table = Table("b. destination down during the run, up later")
    port = free_port()
    settings = node_settings(workdir, quiet=args.quiet_period, model=args.model,
                             destination=f"TESTPACS@127.0.0.1:{port}")
    spool = Path(settings["spool"])
    node = ServeProcess(workdir, settings, "b").start()
    for paths in series:
        send_series(node.port, paths)
    waiting = wait(lambda: node.metrics()["asinfer_node_send_failures_total"] >= 2 * len(series), args.timeout)
    metrics = node.metrics()
    table.rows.append(("while down", f"outbox {metrics['asinfer_node_outbox_depth']:.0f} files, "
                                     f"{metrics['asinfer_node_send_failures_total']:.0f} failed tries"))
    table.check("results queued while down", True, bool(waiting), bool(waiting))
    pacs = TestPacs(port).start()
    done = wait(lambda: all_final(spool, len(series)), args.timeout)
    time.sleep(1.0)
    metrics = node.metrics()
    exit_code = node.terminate()
    pacs.stop()
    table.check("every run sent", len(series), sum(r["state"] == "sent" for r in runs(spool)), bool(done) and
                all(r["state"] == "sent" for r in runs(spool)))
    table.check("outbox empty", 0, int(metrics["asinfer_node_outbox_depth"]), metrics["asinfer_node_outbox_depth"] == 0)
    sr_check(table, pacs, spool)
    table.check("exit on SIGTERM", 0, exit_code, exit_code == 0)
    return table


# --- c: disk full -------------------------------------------------------------------------------------------------


def scenario_disk_full(args, workdir: Path, series: list[list[Path]]) -> Table:
    import resource

    table = Table("c. disk full (RLIMIT_FSIZE on the node process: writes fail with EFBIG)")
    settings = node_settings(workdir, quiet=args.quiet_period, model=args.model, destination=None)
    spool = Path(settings["spool"])
    node = ServeProcess(workdir, settings, "c").start()
    first, _ = send_series(node.port, series[0])
    limit = resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE, (1, limit[1]))  # the disk is full now
    full, _ = send_series(node.port, series[1])
    resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE, limit)  # room again
    retry, _ = send_series(node.port, series[1])
    done = wait(lambda: all_final(spool, 2), args.timeout)
    metrics = node.metrics()
    exit_code = node.terminate()
    table.rows.append(("statuses while full", ", ".join(sorted({f"0x{s:04X}" for s in full}))))
    table.check("before: stored", "all 0x0000", "ok" if set(first) == {0} else first, set(first) == {0})
    table.check("while full: never success", "0xA700 each", "ok" if set(full) == {0xA700} else full,
                set(full) == {0xA700})
    table.check("retry after: stored", "all 0x0000", "ok" if set(retry) == {0} else retry, set(retry) == {0})
    table.check("failed writes counted", len(full), int(metrics["asinfer_node_instances_failed_writes_total"]),
                metrics["asinfer_node_instances_failed_writes_total"] == len(full))
    table.check("both series processed", 2, sum(r["state"] == "done" for r in runs(spool)),
                bool(done) and sum(r["state"] == "done" for r in runs(spool)) == 2)
    table.check("no file left behind", 0, len(list(spool.rglob(".tmp-*"))), not list(spool.rglob(".tmp-*")))
    table.check("exit on SIGTERM", 0, exit_code, exit_code == 0)
    return table


# --- d: hostile sender ----------------------------------------------------------------------------------------------


def scenario_hostile(args, workdir: Path, series: list[list[Path]]) -> Table:
    import pydicom
    from pydicom.data import get_testdata_file
    from pynetdicom import AE

    table = Table("d. hostile sender: garbage, a non-image object, a truncated data set, an unknown calling AE")
    pacs = TestPacs().start()
    settings = node_settings(workdir, quiet=args.quiet_period, model=args.model,
                             destination=f"TESTPACS@127.0.0.1:{pacs.port}", **{"allow-ae": ["SENDER", "EVIL"]})
    spool = Path(settings["spool"])
    node = ServeProcess(workdir, settings, "d").start()
    good: dict[str, list[int]] = {}
    well_behaved = threading.Thread(target=lambda: good.update(
        {str(k): send_series(node.port, paths)[0] for k, paths in enumerate(series)}))
    well_behaved.start()

    sockets = []
    for n in range(5):  # garbage: an HTTP request, random bytes, a PDU header promising 4 GB, left open
        raw = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        raw.sendall([b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 4, b"\x01\x00\xff\xff\xff\xff" + b"\x00" * 64,
                     b"\x04\x00\x00\x00\x00\x10" + b"\xff" * 16, b""][n])
        sockets.append(raw)
    sr_path = Path(get_testdata_file("reportsi.dcm"))  # a Structured Report: not an image
    non_image = send_series(node.port, [sr_path], calling="EVIL")[0]
    truncated = workdir / "truncated.dcm"
    data = series[0][0].read_bytes()
    truncated.write_bytes(data[: int(len(data) * 0.6)])
    ds = pydicom.dcmread(series[0][0], stop_before_pixels=True)
    ae = AE(ae_title="EVIL")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="ASINFER")
    try:
        response = assoc.send_c_store(truncated) if assoc.is_established else None
        truncated_status = int(response.Status) if response is not None and "Status" in response else "no response"
    except Exception as exc:  # the SCU refused to send it: the point is what the node does, so say so
        truncated_status = f"not sent: {type(exc).__name__}"
    finally:
        if assoc.is_established:
            assoc.release()
    intruder = AE(ae_title="INTRUDER")
    intruder.add_requested_context(ds.SOPClassUID)
    unknown = intruder.associate("127.0.0.1", node.port, ae_title="ASINFER")
    well_behaved.join()
    done = wait(lambda: sum(r["state"] == "sent" for r in runs(spool)) >= len(series), args.timeout)
    metrics = node.metrics()
    for raw in sockets:
        raw.close()
    exit_code = node.terminate()
    pacs.stop()
    table.rows.append(("truncated data set answered", f"0x{truncated_status:04X}" if isinstance(truncated_status, int)
                       else truncated_status))
    table.check("well-behaved sender stored", "all 0x0000", "ok" if all(set(s) == {0} for s in good.values()) else good,
                all(set(s) == {0} for s in good.values()) and len(good) == len(series))
    table.check("well-behaved series sent", len(series), sum(r["state"] == "sent" for r in runs(spool)), bool(done))
    table.check("non-image: stored, run failed", "0x0000, no-slices", f"{non_image}", non_image == [0] and any(
        r["reason"] == "no-slices" for r in runs(spool)))
    table.check("truncated: not success", "!= 0x0000", truncated_status, truncated_status != 0)
    table.check("unknown calling AE rejected", True, unknown.is_rejected, unknown.is_rejected)
    table.check("rejections counted", ">= 1", int(metrics["asinfer_node_associations_rejected_total"]),
                metrics["asinfer_node_associations_rejected_total"] >= 1)
    table.check("exit on SIGTERM", 0, exit_code, exit_code == 0)
    return table


SCENARIOS = {"a": scenario_kill, "b": scenario_destination, "c": scenario_disk_full, "d": scenario_hostile}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="a,b,c,d", help="scenarios to run, e.g. a,c")
    parser.add_argument("--series", type=int, default=3, help="series per scenario")
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--quiet-period", type=float, default=1.0)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "asinfer-vgg16-phantom")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="asinfer-node-faults-"))
    series = write_phantoms(workdir / "series", args.series, args.slices, args.size)
    failed = []
    for key in args.only.split(","):
        started = time.monotonic()
        scenario_dir = workdir / key
        scenario_dir.mkdir(parents=True, exist_ok=True)
        try:
            table = SCENARIOS[key.strip()](args, scenario_dir, series)
        except Exception as exc:  # a scenario that breaks is a failed check, and the others still run
            table = Table(f"{key}. scenario raised")
            table.check("ran to the end", True, f"{type(exc).__name__}: {exc}", False)
        table.rows.append(("wall time (s)", f"{time.monotonic() - started:.1f}"))
        table.print()
        failed += [f"{key}: {c.name}" for c in table.failed()]
    print(f"\nworkdir {workdir}\n{'FAILED: ' + '; '.join(failed) if failed else 'all checks passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
