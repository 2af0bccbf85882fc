"""The spool: every acknowledged instance on disk, and the state of every series, surviving ``kill -9``.

Layout of ``SPOOL/``::

    state.sqlite (+ -wal)          series runs, instances, counters: the node's whole state
    .lock                          held (flock) while a node uses the spool: one node per spool
    instances/<series>/<sop>.dcm   each instance as the sender encoded it (DICOM Part 10)
    results/<series>/              run 1's results: sr.dcm, sc-NNN.dcm, result.json
    results/<series>.run-N/        results of run N > 1 (late instances after completion)
    results/.tmp-<id>/             a result being written; removed at start, never mistaken for done

With a destination (``--destination AET@HOST:PORT``) each result file also gets an *outbox* row in the
same transaction that ends processing; the sender stores it at the destination (C-STORE SCU), with
back-off while the destination is down, and the run goes ``sending`` -> ``sent``.

A *run* is one pass over a series: ``receiving`` -> ``complete`` (quiet period over, selection rules
hold) or ``ignored`` (a rule failed: recorded, never processed) -> ``processing`` -> ``done`` (results
durable; no destination) or ``sending`` -> ``sent`` (every result stored at the destination), or
``failed`` (with a reason). An instance that arrives after its series left ``receiving``
opens run 2 (then 3 ...), which processes the whole series again: nothing acknowledged is dropped.
A first run also completes at once when it holds the instance count expected of its series (a setting,
or NumberOfSeriesRelatedInstances/ImagesInAcquisition of its first instance).

Retention: once every run of a series is ``ignored``, ``done`` or ``sent`` for longer than the retention
period, its instance files are deleted and its runs get ``purged_at``; the rows stay (a resend is still a
duplicate). Nothing of a series with a run in any other state is deleted.

Why SQLite (WAL journal, ``synchronous=FULL``) and not state files renamed between folders (mercure):

* One transaction moves a run and its counts together; a crash leaves the state before or after it,
  never between (the WAL is fsynced at every commit with ``synchronous=FULL``, so a committed
  transition survives power loss too; plain WAL + NORMAL could lose the last ones).
* ``instances.sop_uid`` is the primary key: duplicate detection across concurrent associations and
  across restarts is one indexed lookup, not a scan of folders.
* Recovery is a query (``state = 'processing'``), not a walk that has to tell half-moved folders apart.
* It is in the standard library and is one file; readers (a status command, metrics) see a consistent
  snapshot while the node writes.

Order of durability, which is what makes a crash at any point safe:

1. the instance file: temporary name in its folder, write, fsync, rename, fsync the folder;
2. its row, committed (fsynced); only then does the C-STORE handler answer success.

A file without a row was never acknowledged (the sender got a failure or nothing) and is removed at
start; a row always has its file. Results go to a temporary folder (files fsynced by the report
writer), which is fsynced and renamed into place before the run is marked ``done``; a run found
``processing`` at start is retried, and one whose result folder already exists is just marked done.

Wall-clock times (``time.time()``) are stored because they must survive a restart; a clock stepped
forward by more than the quiet period can complete a series early (its next instance then opens a
new run, so nothing is lost).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ._config import Selection

log = logging.getLogger("asinfer.node")

#: Run states, in the order a run goes through them.
STATES = ("receiving", "complete", "ignored", "processing", "done", "sending", "sent", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    series_uid TEXT NOT NULL,
    run INTEGER NOT NULL,               -- 1, then 2, 3 ... for instances that came after completion
    state TEXT NOT NULL,
    folder TEXT NOT NULL,               -- instances/<folder>, shared by the runs of a series
    header TEXT NOT NULL,               -- JSON: modality, description, body_part, image_type (selection)
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,              -- wall clock of the last instance: the quiet period counts from it
    n_instances INTEGER NOT NULL DEFAULT 0,
    n_duplicates INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT, message TEXT,
    label TEXT, score REAL, results TEXT,
    updated_at REAL NOT NULL,           -- also: when a run reached its final state (the retention clock)
    purged_at REAL,                     -- when its instance files were deleted (retention); the rows stay
    UNIQUE (series_uid, run)
);
CREATE INDEX IF NOT EXISTS runs_state ON runs (state, id);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    file TEXT NOT NULL,                 -- relative to the spool
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_run ON instances (run_id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    file TEXT NOT NULL,                 -- relative to the spool
    state TEXT NOT NULL,                -- queued | sent | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,              -- wall clock of the next try (back-off)
    error TEXT,
    sent_at REAL,
    UNIQUE (run_id, file)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_at);
"""


@dataclass(frozen=True)
class Run:
    """One pass over a series, as the state database holds it. UIDs stay out of logs: log ``id``."""

    id: int
    series_uid: str
    run: int
    state: str
    folder: str
    header: dict
    first_at: float
    last_at: float
    n_instances: int
    n_duplicates: int
    attempts: int
    reason: str | None
    message: str | None
    label: str | None
    score: float | None
    results: str | None
    purged_at: float | None = None  # its instance files were deleted after the retention period

    @property
    def late(self) -> bool:
        """Opened by instances that arrived after the series was complete."""
        return self.run > 1


class Spool:
    """The spool folder and its state database. Thread-safe; open it with :meth:`open`.

    Example:
        >>> spool = Spool.open(Path("spool"))  # doctest: +SKIP
        >>> spool.store(sop_uid, series_uid, {"modality": "MR"}, data)  # doctest: +SKIP
        'stored'
    """

    def __init__(self, root: Path, db: sqlite3.Connection, lock_fd: int | None) -> None:
        self.root = root
        self.instances = root / "instances"
        self.results = root / "results"
        self._db = db
        self._lock_fd = lock_fd
        self._cond = threading.Condition(threading.RLock())
        self._claims: set[str] = set()  # SOP instances being written now
        self._busy: Counter[str] = Counter()  # series with writes in flight: not complete yet

    @classmethod
    def open(cls, root: Path, *, lock: bool = True) -> Spool:
        """Open (creating if needed) the spool at ``root`` and lock it for this process.

        ``lock=False`` is for the node's own worker process, which shares the spool with the node that
        holds the lock.

        Raises:
            OSError: the folder cannot be made, or another node holds the spool.
            sqlite3.DatabaseError: ``state.sqlite`` is not a database.
        """
        root = Path(root)
        for folder in (root, root / "instances", root / "results"):
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                fsync_dir(folder.parent)
        lock_fd = _lock(root / ".lock") if lock else None
        try:
            db = sqlite3.connect(root / "state.sqlite", isolation_level=None, check_same_thread=False, timeout=30)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            _migrate(db)
        except BaseException:
            _unlock(lock_fd)
            raise
        return cls(root, db, lock_fd)

    def close(self) -> None:
        """Close the database and release the spool lock."""
        with self._cond:
            self._db.close()
            _unlock(self._lock_fd)
            self._lock_fd = None

    # --- receiving (called from the association threads) -----------------------------------------------

    def store(self, sop_uid: str, series_uid: str, header: dict[str, str], data: bytes) -> str:
        """Make one received instance durable and record it; ``stored`` or ``duplicate``.

        A SOP instance already stored (or being stored by another association) keeps its first copy:
        this one is counted and left out. The caller may acknowledge only after this returns.

        Raises:
            OSError: the file or its record could not be made durable (disk full, I/O error); nothing
                was recorded and the sender must be told so.
        """
        with self._cond:
            while sop_uid in self._claims:  # the first copy is in flight: its fate decides this one's
                self._cond.wait()
            if self._known(sop_uid):
                self._count_duplicate(sop_uid)
                return "duplicate"
            self._claims.add(sop_uid)
            self._busy[series_uid] += 1
        try:
            folder = self.instances / _name(series_uid)
            path = write_durably(folder, _name(sop_uid) + ".dcm", data)
            with self._cond:
                try:
                    self._record(sop_uid, series_uid, header, path.relative_to(self.root).as_posix())
                except sqlite3.Error as exc:
                    raise OSError(f"the state database could not record the instance: {exc}") from exc
            return "stored"
        finally:
            with self._cond:
                self._claims.discard(sop_uid)
                self._busy[series_uid] -= 1
                if not self._busy[series_uid]:
                    del self._busy[series_uid]
                self._cond.notify_all()

    def _known(self, sop_uid: str) -> bool:
        return self._db.execute("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone() is not None

    def _count_duplicate(self, sop_uid: str) -> None:
        """Count a duplicate (best effort: the first copy is durable whatever happens to the count)."""
        try:
            with self._tx() as db:
                db.execute("UPDATE runs SET n_duplicates = n_duplicates + 1 WHERE id = "
                           "(SELECT run_id FROM instances WHERE sop_uid = ?)", (sop_uid,))
                _bump(db, "duplicates")
        except sqlite3.Error as exc:
            log.warning("event=duplicate-not-counted error=%s", type(exc).__name__)

    def _record(self, sop_uid: str, series_uid: str, header: dict[str, str], file: str) -> None:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT id, run, state FROM runs WHERE series_uid = ? ORDER BY run DESC LIMIT 1",
                             (series_uid,)).fetchone()
            if row is not None and row["state"] == "receiving":
                run_id = row["id"]
            else:
                number = 1 if row is None else row["run"] + 1
                run_id = db.execute(
                    "INSERT INTO runs (series_uid, run, state, folder, header, first_at, last_at, updated_at) "
                    "VALUES (?, ?, 'receiving', ?, ?, ?, ?, ?)",
                    (series_uid, number, _name(series_uid), json.dumps(header), now, now, now)).lastrowid
                log.info("event=run-opened run=%d number=%d%s", run_id, number, " late=1" if number > 1 else "")
            db.execute("INSERT INTO instances (sop_uid, run_id, file, received_at) VALUES (?, ?, ?, ?)",
                       (sop_uid, run_id, file, now))
            db.execute("UPDATE runs SET n_instances = n_instances + 1, last_at = ?, updated_at = ? WHERE id = ?",
                       (now, now, run_id))
            _bump(db, "instances")

    # --- series completion (the monitor thread) --------------------------------------------------------

    def complete_quiet(self, quiet_period: float, selection: Selection, now: float | None = None) -> list[Run]:
        """Close every receiving run quiet for ``quiet_period`` seconds (see :meth:`complete_ready`)."""
        return self.complete_ready(quiet_period, selection, now=now, from_header=False)

    def complete_ready(self, quiet_period: float, selection: Selection, *, expected: int = 0,
                       from_header: bool = True, now: float | None = None) -> list[Run]:
        """Close every receiving run that is quiet for ``quiet_period`` seconds, or that is a series' first run
        and holds the expected number of instances: ``complete`` or ``ignored``.

        The expected number is ``expected`` when set (> 0), else (``from_header``) the first instance's
        NumberOfSeriesRelatedInstances or ImagesInAcquisition when it has one. Later runs (late instances)
        always wait for the quiet period: one run per burst of late instances, not one per instance. A series
        with a write in flight is not closed. Returns the runs closed.
        """
        now = time.time() if now is None else now
        with self._cond:
            rows = [row for row in self._db.execute("SELECT * FROM runs WHERE state = 'receiving' ORDER BY id")
                    if row["series_uid"] not in self._busy
                    and (row["last_at"] <= now - quiet_period or _counted(row, expected, from_header))]
            return self._close(rows, selection, now) if rows else []  # the usual tick writes nothing

    def _close(self, rows: list[sqlite3.Row], selection: Selection, now: float) -> list[Run]:
        closed = []
        with self._tx() as db:
            for row in rows:
                total = db.execute("SELECT COUNT(*) FROM instances i JOIN runs r ON i.run_id = r.id "
                                   "WHERE r.series_uid = ? AND r.run <= ?", (row["series_uid"], row["run"])).fetchone()[0]
                why = selection.check(json.loads(row["header"]), total)
                state = "ignored" if why else "complete"
                db.execute("UPDATE runs SET state = ?, reason = ?, message = ?, updated_at = ? WHERE id = ?",
                           (state, "not-selected" if why else None, why, now, row["id"]))
                closed.append(_run(row, state=state, reason="not-selected" if why else None, message=why))
        return closed

    # --- processing (the worker thread) ------------------------------------------------------------------

    def claim_next(self) -> Run | None:
        """The oldest complete run, now ``processing`` (one more attempt counted); None when none waits."""
        with self._cond:
            row = self._db.execute("SELECT * FROM runs WHERE state = 'complete' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            with self._tx() as db:
                db.execute("UPDATE runs SET state = 'processing', attempts = attempts + 1, updated_at = ? "
                           "WHERE id = ?", (time.time(), row["id"]))
            return _run(row, state="processing", attempts=row["attempts"] + 1)

    def instance_files(self, run: Run) -> list[Path]:
        """Every instance of the run's series up to this run (a late run decides the whole series)."""
        with self._cond:
            rows = self._db.execute("SELECT i.file FROM instances i JOIN runs r ON i.run_id = r.id "
                                    "WHERE r.series_uid = ? AND r.run <= ? AND r.purged_at IS NULL "
                                    "ORDER BY i.received_at",
                                    (run.series_uid, run.run)).fetchall()
        return [self.root / row["file"] for row in rows]

    def result_folder(self, run: Run) -> Path:
        """Where a run's results live once done."""
        return self.results / (_name(run.series_uid) + ("" if run.run == 1 else f".run-{run.run}"))

    def temp_folder(self, run: Run) -> Path:
        """Where a run's results are written before they are renamed into place."""
        return self.results / f".tmp-{run.id}"

    def finish(self, run: Run, results: Path, label: str | None, score: float | None, *, send: bool = False) -> str:
        """Mark a run ``done`` (or ``sending``, its DICOM files queued in the outbox, when ``send``).

        Call only once its results are durable in ``results``. Returns the new state.
        """
        now = time.time()
        state = "sending" if send else "done"
        with self._cond, self._tx() as db:
            db.execute("UPDATE runs SET state = ?, label = ?, score = ?, results = ?, reason = NULL, "
                       "message = NULL, updated_at = ? WHERE id = ?",
                       (state, label, score, results.relative_to(self.root).as_posix(), now, run.id))
            if send:  # the SR first: it is the result; the Secondary Captures are its evidence
                files = sorted(results.glob("*.dcm"), key=lambda p: (p.name != "sr.dcm", p.name))
                db.executemany("INSERT OR IGNORE INTO outbox (run_id, file, state, next_at) VALUES (?, ?, 'queued', ?)",
                               [(run.id, f.relative_to(self.root).as_posix(), now) for f in files])
        return state

    # --- the outbox (the sender thread) -------------------------------------------------------------------

    def due(self, limit: int = 64, now: float | None = None) -> list[OutboxItem]:
        """Queued outbox items whose time has come, oldest first."""
        now = time.time() if now is None else now
        with self._cond:
            rows = self._db.execute("SELECT id, run_id, file, attempts FROM outbox WHERE state = 'queued' "
                                    "AND next_at <= ? ORDER BY id LIMIT ?", (now, limit)).fetchall()
        return [OutboxItem(row["id"], row["run_id"], self.root / row["file"], row["attempts"]) for row in rows]

    def next_due(self) -> float | None:
        """When the next queued item is due (wall clock); None when the outbox is empty."""
        with self._cond:
            return self._db.execute("SELECT MIN(next_at) FROM outbox WHERE state = 'queued'").fetchone()[0]

    def sent(self, item: OutboxItem) -> bool:
        """Record an item stored at the destination; True when that completed its run (now ``sent``)."""
        now = time.time()
        with self._cond, self._tx() as db:
            db.execute("UPDATE outbox SET state = 'sent', sent_at = ?, error = NULL WHERE id = ?", (now, item.id))
            left = db.execute("SELECT COUNT(*) FROM outbox WHERE run_id = ? AND state != 'sent'",
                              (item.run_id,)).fetchone()[0]
            if not left:
                db.execute("UPDATE runs SET state = 'sent', updated_at = ? WHERE id = ? AND state = 'sending'",
                           (now, item.run_id))
        return not left

    def send_failed(self, item: OutboxItem, error: str, retry_at: float | None) -> bool:
        """Record a failed try: again at ``retry_at``, or (None) never, failing its run with reason ``send-failed``.

        Returns True when this failed the run (it was not failed before)."""
        now = time.time()
        with self._cond, self._tx() as db:
            db.execute("UPDATE outbox SET state = ?, attempts = attempts + 1, next_at = ?, error = ? WHERE id = ?",
                       ("queued" if retry_at is not None else "failed", retry_at or now, error[:300], item.id))
            if retry_at is None:
                return db.execute("UPDATE runs SET state = 'failed', reason = 'send-failed', message = ?, "
                                  "updated_at = ? WHERE id = ? AND state != 'failed'",
                                  (error[:500], now, item.run_id)).rowcount > 0
        return False

    def outbox_depth(self) -> int:
        """Result files waiting to be sent."""
        with self._cond:
            return self._db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'queued'").fetchone()[0]

    def fail(self, run: Run, reason: str, message: str, *, retry: bool, max_attempts: int) -> str:
        """Record a failed attempt: back to ``complete`` while ``retry`` and attempts remain, else ``failed``."""
        state = "complete" if retry and run.attempts < max_attempts else "failed"
        with self._cond, self._tx() as db:
            db.execute("UPDATE runs SET state = ?, reason = ?, message = ?, updated_at = ? WHERE id = ?",
                       (state, reason, message[:500], time.time(), run.id))
        return state

    def quiet_since(self) -> float | None:
        """The oldest last-instance time of the runs still receiving (the next to go quiet); None when none."""
        with self._cond:
            return self._db.execute("SELECT MIN(last_at) FROM runs WHERE state = 'receiving'").fetchone()[0]

    def last_at(self, run_id: int) -> float | None:
        """When run ``run_id`` received its last instance (wall clock); None when there is no such run."""
        with self._cond:
            row = self._db.execute("SELECT last_at FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else row[0]

    # --- retention (the monitor thread) ---------------------------------------------------------------------

    def purge_expired(self, retention: float, now: float | None = None, limit: int = 50) -> int:
        """Delete the instance files of series whose every run is final (``ignored``, ``done``, ``sent``) since
        ``retention`` seconds; their rows stay (a resent instance is still a duplicate). Returns the series purged.

        A series with a run receiving, complete, processing, sending or failed keeps its files: results that are
        not yet durable or sent, and failures an operator may want to look at, are never purged. Only the files
        recorded for the purged runs are deleted, so an instance arriving meanwhile is kept.
        """
        now = time.time() if now is None else now
        with self._cond:
            candidates = [row[0] for row in self._db.execute(_EXPIRED, (now - retention, limit))]
        purged = 0
        for series_uid in candidates:
            with self._cond:
                if series_uid in self._busy:
                    continue
                purged += self._purge(series_uid, now - retention, now)
        return purged

    def _purge(self, series_uid: str, cutoff: float, now: float) -> int:
        with self._tx() as db:
            if db.execute(_EXPIRED_ONE, (series_uid, cutoff)).fetchone() is None:  # changed since the query
                return 0
            files = [row[0] for row in db.execute(
                "SELECT i.file FROM instances i JOIN runs r ON i.run_id = r.id "
                "WHERE r.series_uid = ? AND r.purged_at IS NULL", (series_uid,))]
            folders = set()
            for file in files:
                path = self.root / file
                folders.add(path.parent)
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:  # not deletable (permissions): left, and the series still marked purged
                    log.warning("event=purge-file-failed error=%s", type(exc).__name__)
            for folder in folders:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty: a newer instance may be in it
            db.execute("UPDATE runs SET purged_at = ? WHERE series_uid = ? AND purged_at IS NULL", (now, series_uid))
        log.info("event=series-purged instances=%d", len(files))
        return 1

    # --- start-up ---------------------------------------------------------------------------------------

    def recover(self, max_attempts: int) -> dict[str, int]:
        """Put the spool in order after a stop or a crash; returns what was done (for the log).

        Runs left ``processing`` go back to ``complete`` (or ``failed`` once they used ``max_attempts``:
        a series that crashes the node must not crash it forever); half-written results and instance
        files that were never acknowledged are removed.
        """
        released = self.release_processing(max_attempts)
        with self._cond:
            known = {row[0] for row in self._db.execute("SELECT file FROM instances")}
        orphans = 0
        for folder in self.instances.iterdir():
            for path in folder.iterdir() if folder.is_dir() else ():
                if path.relative_to(self.root).as_posix() not in known:
                    with contextlib.suppress(OSError):
                        path.unlink()
                        orphans += 1
        return {**released, "unacknowledged": orphans}

    def release_processing(self, max_attempts: int) -> dict[str, int]:
        """Runs left ``processing`` by a worker that died: back to ``complete``, or ``failed`` once they
        used ``max_attempts``; their half-written results removed. Call only while no worker runs."""
        now = time.time()
        with self._cond, self._tx() as db:
            retried = db.execute("UPDATE runs SET state = 'complete', updated_at = ? "
                                 "WHERE state = 'processing' AND attempts < ?", (now, max_attempts)).rowcount
            given_up = db.execute(
                "UPDATE runs SET state = 'failed', reason = 'interrupted', updated_at = ?, message = "
                "'processing was interrupted ' || attempts || ' time(s) (a crash or a kill)' "
                "WHERE state = 'processing'", (now,)).rowcount
        partial = 0
        for tmp in self.results.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
            partial += 1
        return {"retried": retried, "failed": given_up, "partial_results": partial}

    def resume_receiving(self, now: float | None = None) -> int:
        """Give every run still ``receiving`` a fresh quiet period from ``now`` (call when listening again).

        A run cut off by a stop or a crash would otherwise complete at once if the node was down for longer
        than the quiet period, and the sender's resend of the rest would open a second, late run: two
        results for one series. Returns the runs resumed.
        """
        now = time.time() if now is None else now
        with self._cond, self._tx() as db:
            return db.execute("UPDATE runs SET last_at = MAX(last_at, ?) WHERE state = 'receiving'", (now,)).rowcount

    # --- reading the state --------------------------------------------------------------------------------

    def runs(self, state: str | None = None) -> list[Run]:
        """Every run (of one state), oldest first."""
        with self._cond:
            rows = self._db.execute("SELECT * FROM runs" + (" WHERE state = ?" if state else "") + " ORDER BY id",
                                    (state,) if state else ()).fetchall()
        return [_run(row) for row in rows]

    def counters(self) -> dict[str, int]:
        """``instances`` stored and ``duplicates`` left out since the spool was made, ``outbox`` files waiting
        to be sent, and runs per state."""
        with self._cond:
            counts = {name: value for name, value in self._db.execute("SELECT name, value FROM counters")}
            states = dict(self._db.execute("SELECT state, COUNT(*) FROM runs GROUP BY state").fetchall())
            outbox = self._db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'queued'").fetchone()[0]
        return {"instances": counts.get("instances", 0), "duplicates": counts.get("duplicates", 0),
                "outbox": outbox, **{state: states.get(state, 0) for state in STATES}}

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; committed (and, with synchronous=FULL, on disk) when the block ends."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise


@dataclass(frozen=True)
class OutboxItem:
    """One result file to store at the destination."""

    id: int
    run_id: int
    path: Path
    attempts: int  # tries so far


def _run(row: sqlite3.Row, **changes: Any) -> Run:
    values = {key: row[key] for key in row.keys() if key not in ("updated_at",)}
    values["header"] = json.loads(values["header"])
    values.update(changes)
    return Run(**values)


_FINAL = "('ignored', 'done', 'sent')"
_EXPIRED = (f"SELECT series_uid FROM runs GROUP BY series_uid HAVING SUM(state NOT IN {_FINAL}) = 0 "
            "AND MAX(updated_at) <= ? AND SUM(purged_at IS NULL) > 0 ORDER BY MIN(id) LIMIT ?")
_EXPIRED_ONE = (f"SELECT 1 FROM runs WHERE series_uid = ? GROUP BY series_uid HAVING SUM(state NOT IN {_FINAL}) = 0 "
                "AND MAX(updated_at) <= ? AND SUM(purged_at IS NULL) > 0")


def _counted(row: sqlite3.Row, expected: int, from_header: bool) -> bool:
    """Whether a receiving run is a first run that holds the number of instances expected of its series."""
    if row["run"] != 1:
        return False
    if expected <= 0 and from_header:
        header = json.loads(row["header"])
        stated = [header.get(key, "") for key in ("series_related_instances", "images_in_acquisition")]
        expected = next((int(v) for v in stated if v.isdigit() and int(v) > 0), 0)
    return expected > 0 and row["n_instances"] >= expected


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a spool made by an earlier version up to this schema (columns are only ever added)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    if "purged_at" not in columns:
        db.execute("ALTER TABLE runs ADD COLUMN purged_at REAL")


def _bump(db: sqlite3.Connection, name: str) -> None:
    db.execute("INSERT INTO counters (name, value) VALUES (?, 1) "
               "ON CONFLICT (name) DO UPDATE SET value = value + 1", (name,))


_UID = re.compile(r"[0-9][0-9.]{0,63}")


def _name(uid: str) -> str:
    """A file name for a UID: the UID itself when it is one (digits and dots), else a hash of it.

    Senders choose these values; nothing they send can name a path outside the spool.
    """
    if _UID.fullmatch(uid) and ".." not in uid:
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def write_durably(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` as ``folder/name`` whole or not at all, and on disk before returning.

    Raises:
        OSError: anything failed; no temporary file is left behind.
    """
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        fsync_dir(folder.parent)  # the new folder's entry must survive too
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".dcm")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        target = folder / name
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
    return target


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(path: Path) -> int | None:
    """Hold an exclusive lock on ``path`` for this process (released by the kernel if it dies)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one node per spool is then the operator's promise
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise OSError(f"the spool {path.parent} is in use by another asinfer serve; stop it or use another "
                      "--spool") from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


class Loop(threading.Thread):
    """A daemon thread that sleeps until :meth:`wake` (or its own timeout) and ends after :meth:`stop`.

    The worker and the sender are both this: ``run`` loops while :meth:`stopping` is false and waits
    on :meth:`sleep` between rounds; ``stop`` lets the item at hand finish.
    """

    def __init__(self, name: str, events=None) -> None:
        super().__init__(name=name, daemon=True)
        # (wake, stopping): threading.Event by default; multiprocessing.Event when run in a child process
        self._wake, self._stopping = events or (threading.Event(), threading.Event())

    def wake(self) -> None:
        """There may be something to do."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after the item at hand; join() to wait for it."""
        self._stopping.set()
        self._wake.set()

    def stopping(self) -> bool:
        return self._stopping.is_set()

    def sleep(self, seconds: float) -> None:
        """Wait up to ``seconds``, less if woken."""
        self._wake.wait(seconds)
        self._wake.clear()
