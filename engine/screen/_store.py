"""The results folder: two Parquet datasets written part by part, and ``run.json``.

Layout::

    RESULTS/slices/part-<id>.parquet   one row per slice, or per input that gave none (its reason)
    RESULTS/series/part-<id>.parquet   one row per series
    RESULTS/run.json                   model, command, start/end, counts

A task writes both parts under one name (the digest of its series keys) as
hidden temporary files, fsyncs them, and renames the slices part, then the
series part: the series part is the commit. A part that exists is complete;
``--resume`` takes the series in the series parts as done, removes
temporary files, and removes slices parts without their series part (a task
stopped between its two renames), so nothing is counted twice. Writing a
part again (a retried task) replaces it with the same rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

SLICES, SERIES = "slices", "series"

#: Columns of RESULTS/slices/ (name, Arrow type, nullable, meaning): one table for docs, writers and tests.
SLICE_COLUMNS = (
    ("source", "string", False, "the input file, as listed or found in a folder"),
    ("frame", "int32", True, "frame within the file; null when the file gave no frame"),
    ("series", "string", False, "the series key (SeriesInstanceUID, or the folder)"),
    ("probability", "float64", True, "probability of the positive label; null on failure"),
    ("label", "string", True, "the model's label at its threshold; null on failure"),
    ("reason", "string", True, "failure code (asinfer.engine.REASONS, or task-failed); null on success"),
    ("message", "string", True, "what went wrong, one line; null on success"),
)
#: Columns of RESULTS/series/.
SERIES_COLUMNS = (
    ("series", "string", False, "SeriesInstanceUID for DICOM, the folder for other images"),
    ("grouped_by", "string", False, "series-uid or folder"),
    ("study", "string", False, "StudyInstanceUID ('' for other images)"),
    ("description", "string", False, "SeriesDescription ('' for other images)"),
    ("modality", "string", False, "Modality ('' for other images)"),
    ("n_slices", "int32", False, "slices decided on"),
    ("n_failed", "int32", False, "slices or inputs of the series that failed"),
    ("n_duplicates", "int32", False, "repeated SOP instances left out of the decision"),
    ("score", "float64", True, "the series rule's score; null without a decision"),
    ("label", "string", True, "the decision; null without one (reason says why)"),
    ("reason", "string", True, "no-slices, incomplete-series or task-failed; null when decided"),
    ("message", "string", True, "why, one line"),
    ("ordered_by", "string", False, "position, instance-number or file-name"),
    ("driving", "list<struct<source: string, frame: int32>>", False, "the slices that drove the decision"),
)

#: Series and slice reason of a task that failed after its retries (beside ``asinfer.engine.REASONS``).
TASK_FAILED = "task-failed"
RUN_SCHEMA = "asinfer-screen-run/1"


def _arrow_schema(columns) -> Any:
    import pyarrow as pa

    driving = pa.list_(pa.struct([("source", pa.string()), ("frame", pa.int32())]))
    types = {"string": pa.string(), "int32": pa.int32(), "float64": pa.float64(),
             "list<struct<source: string, frame: int32>>": driving}
    return pa.schema([pa.field(name, types[kind], nullable) for name, kind, nullable, _ in columns])


def slice_schema():
    """The Arrow schema of ``RESULTS/slices/`` (needs pyarrow)."""
    return _arrow_schema(SLICE_COLUMNS)


def series_schema():
    """The Arrow schema of ``RESULTS/series/`` (needs pyarrow)."""
    return _arrow_schema(SERIES_COLUMNS)


def part_id(keys: Iterable[tuple[str, str]]) -> str:
    """A task's part name from the series it holds: the same series give the same name."""
    digest = hashlib.sha256("\n".join(sorted(f"{g}\t{k}" for g, k in keys)).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:24]


@dataclass
class Done:
    """What the series parts already hold (for ``--resume`` and the run's totals); slices count slice rows."""

    keys: set
    failed: set = field(default_factory=set)  # series written as task-failed: --resume runs them again
    series: int = 0
    positive: int = 0
    undecided: int = 0
    slices: int = 0
    failed_slices: int = 0


class ResultsStore:
    """One results folder: writes parts atomically, reads what is done."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.slices = self.out / SLICES
        self.series = self.out / SERIES

    def prepare(self) -> None:
        """Make the folders."""
        self.slices.mkdir(parents=True, exist_ok=True)
        self.series.mkdir(parents=True, exist_ok=True)

    def holds_results(self) -> bool:
        """Any part or run.json there already."""
        return (self.out / "run.json").exists() or any(
            next(folder.glob("part-*.parquet"), None) for folder in (self.slices, self.series) if folder.is_dir())

    def write_part(self, part: str, slice_rows: dict[str, list], series_rows: dict[str, list]) -> None:
        """Both parts of one task: temporary files, fsync, rename slices, then series (the commit)."""
        import pyarrow as pa

        slices = pa.table(slice_rows, schema=slice_schema())
        series = pa.table(series_rows, schema=series_schema())
        tmp_slices = self._write_tmp(self.slices, part, slices)
        tmp_series = self._write_tmp(self.series, part, series)
        os.replace(tmp_slices, self.slices / f"part-{part}.parquet")
        os.replace(tmp_series, self.series / f"part-{part}.parquet")
        _fsync_dir(self.slices)
        _fsync_dir(self.series)

    def _write_tmp(self, folder: Path, part: str, table) -> Path:
        import pyarrow.parquet as pq

        # hidden (a leading dot): Arrow's dataset discovery never reads it; the pid keeps attempts apart
        tmp = folder / f".part-{part}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return tmp

    def clean(self) -> int:
        """Remove temporary files and slices parts without their series part; how many were removed."""
        removed = 0
        for folder in (self.slices, self.series):
            for tmp in folder.glob(".part-*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    removed += 1
        for part in self.slices.glob("part-*.parquet"):
            if not (self.series / part.name).exists():
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
                    removed += 1
        return removed

    def committed(self, part: str) -> bool:
        """The task's series part exists: its results are complete."""
        return (self.series / f"part-{part}.parquet").exists()

    def done(self, positive_label: str, parts: Iterable[Path] | None = None) -> Done:
        """The series already written (in ``parts``, default every series part), with the totals of their rows."""
        import pyarrow.parquet as pq

        done = Done(set())
        for part in sorted(self.series.glob("part-*.parquet")) if parts is None else parts:
            columns = ["grouped_by", "series", "label", "n_slices", "n_failed", "n_duplicates", "reason"]
            table = pq.read_table(part, columns=columns)
            for grouped_by, key, label, n, failed, dups, reason in zip(*(table.column(c).to_pylist()
                                                                         for c in columns)):
                if reason == TASK_FAILED and parts is None:
                    done.failed.add((grouped_by, key))
                    continue
                done.keys.add((grouped_by, key))
                done.series += 1
                done.positive += label == positive_label
                done.undecided += label is None
                done.slices += n + failed + dups  # the series' slice rows: decided, failed, repeated instances
                done.failed_slices += failed
        return done

    def read_run(self) -> dict | None:
        """The previous run.json, or None."""
        try:
            return json.loads((self.out / "run.json").read_text())
        except (OSError, ValueError):
            return None

    def write_run(self, record: dict) -> None:
        """run.json, atomically."""
        tmp = self.out / f".run.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(record, indent=2, ensure_ascii=True) + "\n")
        os.replace(tmp, self.out / "run.json")

    @contextlib.contextmanager
    def lock(self):
        """One run at a time per results folder (an advisory lock on RESULTS/.lock).

        Raises:
            RuntimeError: another run holds the folder.
        """
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        with open(self.out / ".lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"another asinfer screen is writing {self.out}; wait for it or stop it") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
