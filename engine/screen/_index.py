"""The series index: which files belong to which series, from a header-only scan.

The engine's grouping rule (``asinfer.engine.SeriesCollector``): a DICOM file
whose header names a SeriesInstanceUID belongs to that series; every other
input (images, DICOM without the UID, files that cannot be read) belongs to
its folder. The scan reads the first bytes of each file (the engine's
``sniff``) and, for DICOM, the header up to NumberOfFrames with pydicom
(``stop_when``: never the pixel data). The index then decides membership: a
file whose header names a series counts against that series even when its
pixels cannot be read, and every file is in exactly one series.

Memory: a series' paths are kept as one ``bytes`` block (NUL-separated), so
the client holds no Python object per file; chunks of the listing are
scanned where the work runs (workers) and merged here.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

#: The header bytes read first; DICOM headers longer than this (large private groups) are read again,
#: up to :data:`HEADER_MAX`. The series UID (0020,000E) comes early: groups are stored in order.
HEADER_FIRST = 16 << 10
HEADER_MAX = 4 << 20
_LAST_TAG = 0x00280008  # NumberOfFrames: the last element the scan needs

SeriesKey = tuple[str, str]  # (grouped_by, key): ("series-uid", UID) or ("folder", path)


def encode_paths(paths: Iterable[str]) -> bytes:
    """Paths as one NUL-separated block (a path cannot hold a NUL)."""
    return b"\0".join(os.fsencode(p) for p in paths)


def decode_paths(block: bytes) -> list[str]:
    """The paths of :func:`encode_paths`, in order."""
    return [os.fsdecode(p) for p in block.split(b"\0")] if block else []


def series_of(path: str) -> tuple[str, str, int]:
    """(grouped_by, key, frames) of one input file, from its first bytes and DICOM header.

    Never raises: anything that cannot be read belongs to its folder, one frame; the engine
    gives it its row with the reason when the series is screened.
    """
    from asinfer import engine

    folder = ("folder", str(Path(path).parent), 1)
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_FIRST)
    except (OSError, ValueError):
        return folder
    if engine.sniff(head[:132], Path(path).suffix) != "dicom":
        return folder
    found = _dicom_series(path, head)
    return ("series-uid", found[0], found[1]) if found else folder


def _dicom_series(path: str, head: bytes) -> tuple[str, int] | None:
    """(SeriesInstanceUID, frames) from the header, or None without a usable UID."""
    ds = _header(head)
    if ds is None and len(head) == HEADER_FIRST:  # a long header: once more with a bigger bound
        try:
            with open(path, "rb") as fh:
                ds = _header(fh.read(HEADER_MAX))
        except OSError:
            return None
    if ds is None:
        return None
    try:
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()  # the engine's rule (DicomReader.identity)
    except Exception:  # a malformed value: the file belongs to its folder, as in the engine
        return None
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:  # only a weight for packing tasks; the engine reads the real count
        frames = 1
    return (uid, max(1, min(frames, 1 << 20))) if uid else None


def _header(data: bytes):
    """The dataset's elements up to NumberOfFrames, parsed from memory, or None when they cannot be."""
    import warnings

    from pydicom.filereader import read_partial

    def stop(tag, vr, length) -> bool:
        return tag > _LAST_TAG

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = read_partial(io.BytesIO(data), stop_when=stop, force=True)
            if "SeriesInstanceUID" not in ds:
                return None
            ds["SeriesInstanceUID"].value  # noqa: B018  (parsed now, inside the guard)
            return ds
    except Exception:  # pydicom raises many kinds for a malformed or cut header
        return None


def scan_chunk(block: bytes) -> dict[SeriesKey, tuple[bytes, int, int]]:
    """A chunk of the listing (a path block) grouped: ``{key: (path block, files, frames)}``, first-met order.

    Runs where the work runs (a Dask worker, or in process for the synchronous scheduler).
    """
    groups: dict[SeriesKey, tuple[list[str], list[int]]] = {}
    for path in decode_paths(block):
        grouped_by, key, frames = series_of(path)
        paths, counts = groups.setdefault((grouped_by, key), ([], [0]))
        paths.append(path)
        counts[0] += frames
    return {key: (encode_paths(paths), len(paths), counts[0]) for key, (paths, counts) in groups.items()}


@dataclass
class SeriesEntry:
    """One series of the index: its key and its files (a NUL-separated path block)."""

    grouped_by: str
    key: str
    block: bytearray = field(default_factory=bytearray)
    files: int = 0
    frames: int = 0

    def paths(self) -> list[str]:
        return decode_paths(bytes(self.block))


class SeriesIndex:
    """Series of a whole listing, merged from scanned chunks in the order each series was first met.

    Example:
        >>> index = SeriesIndex()
        >>> index.add(scan_chunk(encode_paths(["a/1.png", "a/2.png"])))
        >>> [(s.key, s.files) for s in index]
        [('a', 2)]
    """

    def __init__(self) -> None:
        self._series: dict[SeriesKey, SeriesEntry] = {}
        self.files = 0
        self.frames = 0

    def add(self, chunk: dict[SeriesKey, tuple[bytes, int, int]]) -> None:
        """Merge one scanned chunk: a series met in several chunks is one series."""
        for (grouped_by, key), (block, files, frames) in chunk.items():
            entry = self._series.get((grouped_by, key))
            if entry is None:
                entry = self._series[(grouped_by, key)] = SeriesEntry(grouped_by, key)
            elif entry.block:
                entry.block += b"\0"
            entry.block += block
            entry.files += files
            entry.frames += frames
            self.files += files
            self.frames += frames

    def __iter__(self) -> Iterator[SeriesEntry]:
        return iter(self._series.values())

    def __len__(self) -> int:
        return len(self._series)


def chunks(paths: Iterable[str], size: int) -> Iterator[bytes]:
    """The listing as path blocks of ``size`` paths, read lazily."""
    batch: list[str] = []
    for path in paths:
        batch.append(path)
        if len(batch) == size:
            yield encode_paths(batch)
            batch = []
    if batch:
        yield encode_paths(batch)
