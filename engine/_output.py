"""Where ``asinfer predict``'s rows go: one writer per format, an output target that survives failure,
and text that cannot lie about a file name.

The ``--output`` target is checked before any work and written beside itself, then renamed; csv and
jsonl stream (each row flushed); table and json render at the end. Every file name and message is
escaped for any terminal and encoding before it is printed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import secrets
import stat
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

# --- text that cannot lie about a file name --------------------------------------------------------------------

#: Characters that move the cursor, break a row or reorder what follows: C0/C1 controls, DEL, line and
#: paragraph separators, bidirectional overrides; and lone surrogates (bytes of a file name that are
#: not UTF-8, which Python decodes as U+DC80..U+DCFF).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # one byte of a non-UTF-8 name, shown as the byte it was
        return f"\\x{code - 0xDC00:02x}"
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _printable(text: str) -> str:
    """``text`` on one line, safe for any terminal and encoding: unsafe characters become visible escapes."""
    return _UNSAFE.sub(_escape_char, text)


def _json_safe(value):
    """``value`` with lone surrogates escaped (``\\xe9``), so the JSON is valid Unicode; json escapes the rest."""
    if isinstance(value, str):
        return _SURROGATE.sub(_escape_char, value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


@dataclass
class _Tally:
    """What a run did: the summary line on stderr and the summary object of json/jsonl."""

    positive_label: str
    predicted: int = 0
    positive: int = 0
    failed: int = 0
    skipped: Counter = field(default_factory=Counter)  # why -> entries a folder walk passed over on purpose
    interrupted: bool = False
    series: int = 0
    series_positive: int = 0
    series_undecided: int = 0
    overlays: int | None = None

    def add(self, result) -> None:
        if result.ok:
            self.predicted += 1
            self.positive += result.label == self.positive_label
        else:
            self.failed += 1

    def add_series(self, results) -> None:
        self.series = len(results)
        self.series_positive = sum(r.label == self.positive_label for r in results)
        self.series_undecided = sum(r.label is None for r in results)

    def to_dict(self) -> dict:
        return {"predicted": self.predicted, "positive": self.positive, "failed": self.failed,
                "skipped": sum(self.skipped.values()), "series": self.series,
                "series_positive": self.series_positive, "series_undecided": self.series_undecided,
                "interrupted": self.interrupted}


# --- where results go ------------------------------------------------------------------------------------------


class _OutputError(Exception):
    """Writing the results failed (disk full, reader gone, I/O error)."""

    def __init__(self, name: str, exc: OSError, stdout: bool) -> None:
        super().__init__(f"{name}: {exc.strerror or exc}")
        self.name, self.errno, self.strerror, self.stdout = name, exc.errno, exc.strerror or str(exc), stdout


def _output_problem(path: Path) -> str | None:
    """Why ``--output path`` cannot take the results, checked before any work; None when it can."""
    folder = path.parent
    if path.is_dir():
        return f"--output {path} is a folder; give a file name, e.g. {path / 'results.csv'}"
    if not folder.is_dir():
        return f"--output {path}: the folder {folder} does not exist; create it first"
    if path.exists() and not os.access(path, os.W_OK):
        return f"--output {path} is not writable"
    if (not path.exists() or path.is_file()) and not os.access(folder, os.W_OK | os.X_OK):
        return f"--output {path}: cannot create files in {folder} (not writable)"
    return None


class _Output:
    """The results stream: stdout, or the file of ``--output``.

    A new or regular file is written to a hidden temporary file beside it, fsynced and renamed into
    place when the run ends, so FILE only ever holds a whole run and a failed run leaves nothing; an
    interrupted run's rows go to ``FILE.partial`` and FILE is left as it was. Devices and pipes
    (``/dev/stdout``, a FIFO) are written in place.
    """

    def __init__(self, stream: TextIO, name: str, final: Path | None = None, tmp: Path | None = None,
                 is_stdout: bool = False) -> None:
        self.stream, self.name, self.final, self.tmp, self.is_stdout = stream, name, final, tmp, is_stdout
        self.encoding = getattr(stream, "encoding", None) or "utf-8"

    @classmethod
    def open(cls, target: Path | None) -> _Output:
        """Open where results go; raises OSError when the file cannot be created."""
        if target is None:
            with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
                sys.stdout.reconfigure(errors="backslashreplace")  # a name the terminal's encoding lacks
            return cls(sys.stdout, "stdout", is_stdout=True)
        if target.exists() and not target.is_file():
            return cls(open(target, "w", encoding="utf-8", errors="backslashreplace"), str(target))
        final = target.resolve()  # a symlink keeps pointing at the new results
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        if final.exists():
            with contextlib.suppress(OSError):
                os.chmod(tmp, stat.S_IMODE(final.stat().st_mode))
        return cls(open(fd, "w", encoding="utf-8", errors="backslashreplace"), str(target), final, tmp)

    def write(self, text: str) -> None:
        try:
            self.stream.write(text)
        except OSError as exc:
            raise _OutputError(self.name, exc, self.is_stdout) from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            raise _OutputError(self.name, exc, self.is_stdout) from None

    def isatty(self) -> bool:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            return self.stream.isatty()
        return False

    def commit(self, interrupted: bool) -> str | None:
        """Flush and put the file in place; returns where the results are (None: stdout)."""
        self.flush()
        if self.is_stdout:
            return None
        try:
            if self.tmp is not None:
                os.fsync(self.stream.fileno())
            self.stream.close()
            if self.tmp is None:
                return self.name
            dest = self.final.with_name(self.final.name + ".partial") if interrupted else self.final
            os.replace(self.tmp, dest)
        except OSError as exc:
            raise _OutputError(self.name, exc, False) from None
        self.tmp = None
        _fsync_folder(dest.parent)
        if not interrupted:
            return self.name
        return str(dest) if Path(self.name).is_symlink() else f"{self.name}.partial"  # the name as the user gave it

    def discard(self) -> None:
        """After a failure: close, and remove the temporary file so nothing half-written is left."""
        if not self.is_stdout:
            with contextlib.suppress(OSError):
                self.stream.close()
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- the formats: one writer each ------------------------------------------------------------------------------


class _Writer:
    """Turns predictions, then series results, into one output format; ``table`` and ``json`` render at the end.

    ``by`` is ``slice``, ``series`` or ``both``: which rows this output carries.
    """

    streams = False  # True: each row is written and flushed as it comes

    def __init__(self, out: _Output, clf, by: str = "both") -> None:
        self.out, self.clf, self.by, self.rows, self.series_rows = out, clf, by, [], []

    @property
    def slices(self) -> bool:
        return self.by in ("slice", "both")

    def begin(self) -> None:
        """Before the first row."""

    def add(self, result) -> None:
        if self.slices:
            self.rows.append(result)

    def series(self, results) -> None:
        """The series decisions, once every slice is in."""
        if self.by != "slice":
            self.series_rows.extend(results)

    def end(self, tally: _Tally) -> None:
        """After the last row, or after Ctrl-C with the rows done."""


class _Table(_Writer):
    def end(self, tally: _Tally) -> None:
        parts = [_table(self.rows, self.out.encoding)] if self.slices else []
        if self.series_rows:
            parts.append(_series_table(self.series_rows, self.out.encoding))
        self.out.write("\n".join(parts))


class _Json(_Writer):
    def end(self, tally: _Tally) -> None:
        data = {"model": _model_summary(self.clf)}
        if self.slices:
            data["results"] = [r.to_dict() for r in self.rows]
        if self.by != "slice":
            data["series"] = [s.to_dict() for s in self.series_rows]
        data["summary"] = tally.to_dict()
        self.out.write(json.dumps(_json_safe(data), indent=2) + "\n")


class _JsonLines(_Writer):
    """One JSON object a slice row, one ``{"series": {...}}`` a series, then ``{"summary": {...}}``; each flushed."""

    streams = True

    def add(self, result) -> None:
        if self.slices:
            self._line(result.to_dict())

    def series(self, results) -> None:
        if self.by != "slice":
            for s in results:
                self._line({"series": s.to_dict()})

    def end(self, tally: _Tally) -> None:
        self._line({"summary": {"model": _model_summary(self.clf), **tally.to_dict()}})

    def _line(self, data: dict) -> None:
        self.out.write(json.dumps(_json_safe(data)) + "\n")
        self.out.flush()


class _Csv(_Writer):
    """Slice rows (``--by slice``) or series rows (``--by series``), flushed as they come; names escaped."""

    streams = True
    COLUMNS = ("source", "frame", "probability", "label", "reason", "message")
    SERIES_COLUMNS = ("series", "grouped_by", "description", "slices", "failed", "duplicates", "score", "label",
                      "reason", "message", "driving")

    def begin(self) -> None:
        self._csv = csv.writer(self.out, lineterminator="\n")
        self._line(self.COLUMNS if self.slices else self.SERIES_COLUMNS)

    def add(self, r) -> None:
        if self.slices:
            self._line([_printable(r.source), "" if r.frame is None else r.frame,
                        "" if r.probability is None else f"{r.probability:.6f}", _printable(r.label or ""),
                        r.reason or "", _printable(r.message or "")])

    def series(self, results) -> None:
        if self.slices:
            return
        for s in results:
            self._line([_printable(s.key), s.grouped_by, _printable(s.description), s.n_slices, s.n_failed,
                        s.n_duplicates, "" if s.score is None else f"{s.score:.6f}", _printable(s.label or ""),
                        s.reason or "", _printable(s.message or ""), _printable(_driving(s))])

    def _line(self, fields) -> None:
        self._csv.writerow(fields)
        self.out.flush()


#: One writer per ``--format``.
WRITERS: dict[str, type[_Writer]] = {"table": _Table, "json": _Json, "jsonl": _JsonLines, "csv": _Csv}


def _driving(s) -> str:
    """The slices that drove a series decision, as ``file#frame`` joined by ``;``."""
    return ";".join(f"{Path(source).name}#{frame}" if frame is not None else Path(source).name
                    for source, frame in s.driving)


def _render(table, encoding: str) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=max(100, Console().width), soft_wrap=False,
                      markup=False, emoji=False, highlight=False)
    with console.capture() as cap:
        console.print(table)
    return cap.get()


def _text_table(columns, rows, encoding: str):
    """A rich Table of plain-text cells: no markup, unsafe characters escaped, missing glyphs escaped."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def fit(text: str) -> str:
        return _printable(text).encode(encoding, "backslashreplace").decode(encoding)

    table = Table(show_edge=False, header_style="bold", box=box.HEAVY_HEAD if fit("━┃") == "━┃" else box.ASCII2)
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold")
    for cells in rows:
        table.add_row(*(Text(fit(cell)) for cell in cells))
    return table


def _table(results, encoding: str = "utf-8") -> str:
    """The slice rows as a table for ``encoding``."""
    columns = (("source", "left"), ("frame", "right"), ("probability", "right"), ("label", "left"), ("error", "left"))
    rows = [(r.source, "" if r.frame is None else str(r.frame),
             "" if r.probability is None else f"{r.probability:.4f}", r.label or "", r.error or "") for r in results]
    return _render(_text_table(columns, rows, encoding), encoding)


def _series_table(results, encoding: str = "utf-8") -> str:
    """One row per series: its key, slices, score, decision and the slices that drove it."""
    columns = (("series", "left"), ("slices", "right"), ("failed", "right"), ("score", "right"), ("label", "left"),
               ("driving slices", "left"), ("note", "left"))
    rows = [(_short(s.key), str(s.n_slices), str(s.n_failed), "" if s.score is None else f"{s.score:.4f}",
             s.label or "", _driving(s), " ".join(filter(None, [s.reason, s.message,
                                                                 f"{s.n_duplicates} duplicate(s) left out"
                                                                 if s.n_duplicates else None])))
            for s in results]
    return _render(_text_table(columns, rows, encoding), encoding)


def _short(key: str) -> str:
    """A series key for a table cell: long UIDs keep their last digits, which tell series apart."""
    return key if len(key) <= 24 else "…" + key[-23:]


def _model_summary(clf) -> dict:
    m = clf.manifest
    return {"name": m.name, "version": m.version, "artifact": clf.artifact.format, "sha256": clf.artifact.sha256,
            "provider": clf.provider, "threshold": clf.threshold, "labels": list(m.labels),
            "synthetic_training_data": m.synthetic_training_data, "notice": m.notice}
