"""The one read-and-preprocess path: sources in, one preprocessed slice (or one failure) out per slice.

Every consumer uses :func:`load_slices`: the classifier, the trainer's
dataset loader, the benchmarks and the phantom contact sheet. It has one
error policy: an input that cannot be used never raises; it yields a
:class:`Slice` carrying a reason code (``engine.REASONS``) and a one-line
message, and the run carries on. What a consumer does with failures
(report them as rows, leave them out of training and list them) is its own
decision, made on the same facts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import numpy as np

from ._errors import InputError
from ._io import MAX_BYTES, MAX_PIXELS, Frame, Reader, ReadLimits, _to_grey, open_reader, walk
from ._preprocess import Preprocessor
from ._series import SliceIdentity

log = logging.getLogger("asinfer")

#: What :func:`load_slices` accepts: a path (file or folder), a 2-D grey or (H, W, 3|4) colour array, or a Frame.
Source = Union[str, os.PathLike, np.ndarray, Frame]


@dataclass(frozen=True)
class Slice:
    """One slice ready for the model, or the reason an input gave none.

    Attributes:
        source: the file path, or ``<array N>`` for the N-th array passed in.
        frame: frame index within the source; None when the source failed whole.
        input_index: position of the source in the sources given (a folder's
            files all share the folder's index).
        image: ``(H, W)`` uint8, the model input size; None on failure.
        reason: failure code from ``engine.REASONS``; None on success.
        message: one line saying what is wrong; None on success.
        identity: the DICOM series and position of the slice (None for
            other images, and for inputs that failed before their header).
    """

    source: str
    frame: int | None
    input_index: int
    image: np.ndarray | None = None
    reason: str | None = None
    message: str | None = None
    identity: SliceIdentity | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def load_slices(sources: Source | Iterable[Source], preprocessor: Preprocessor | None = None, *,
                max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES,
                on_skip: Callable[[str, str], None] | None = None) -> Iterator[Slice]:
    """Read and preprocess every slice of every source, in input order.

    Args:
        sources: a path (file or folder, walked recursively; DICOM found by
            content), an array, a :class:`Frame`, or an iterable of these.
        preprocessor: the bundle's preprocessing; default ``Preprocessor()``
            (the prototype's CLAHE at 224x224). Its thread pool reads and
            preprocesses several inputs at once; results keep input order.
        max_pixels: refuse files holding more pixels than this.
        max_bytes: refuse files decoding to more bytes than this (the
            working memory one input may take; large inputs stream a frame
            at a time, so memory does not grow with the number of frames).
        on_skip: called with ``(path, why)`` for every entry a folder walk
            passes over on purpose (hidden files, files that are no image):
            they get no row, so a caller can count them in its summary.

    Yields:
        One :class:`Slice` per slice; an input that yields no slice gives one
        Slice with ``reason`` and ``message`` set.

    Raises:
        TypeError: a source is neither a path, an array nor a Frame (a
            programming error, not a bad input).

    Example:
        >>> for s in load_slices(["series/", "slice.png"]):  # doctest: +SKIP
        ...     print(s.source, s.frame, s.image.shape if s.ok else s.reason)
    """
    pre = preprocessor or Preprocessor()
    limits = ReadLimits(max_pixels, max_bytes)

    def prepare(item: tuple[int, str, Any]) -> list[Slice] | _Deferred:
        return _prepare(pre, limits, *item)

    for prepared in pre.map(prepare, _expand(sources, on_skip)):
        if isinstance(prepared, _Deferred):
            yield from prepared.stream(pre)
        else:
            yield from prepared


#: An input with more frames, or more decoded bytes, than this is read and
#: preprocessed a frame at a time by the consumer (:class:`_Deferred`) rather
#: than whole by a pool thread: its preprocessed slices are never all held.
EAGER_FRAMES = 16
EAGER_BYTES = 64 << 20


@dataclass(frozen=True)
class _Deferred:
    """A large input whose header passed the checks: decoded and preprocessed frame by frame when its turn comes."""

    index: int
    name: str
    reader: Reader

    def stream(self, pre: Preprocessor) -> Iterator[Slice]:
        frames = _guarded(self.reader, self.name, self.index)
        for item in pre.map(lambda f: f if isinstance(f, Slice) else _one(pre, self.name, self.index, f), frames,
                            ahead=2 * pre.threads):
            yield item


def load_frames(sources: Source | Iterable[Source], *, max_pixels: int = MAX_PIXELS,
                max_bytes: int = MAX_BYTES) -> Iterator[Frame]:
    """The readable frames of every source, in order, one at a time (inputs that fail are passed over).

    The same reading as :func:`load_slices` without the preprocessing, for callers that need the frame
    itself (its 8-bit display, its geometry), e.g. to draw evidence over it.
    """
    limits = ReadLimits(max_pixels, max_bytes)
    for _, name, value in _expand(sources, None):
        if isinstance(value, InputError):
            continue
        if isinstance(value, Frame):
            yield replace(value, source=name) if value.source != name else value
            continue
        try:
            for frame in open_reader(value, limits).frames():
                yield replace(frame, source=name)
        except Exception:  # load_slices reports it; here it is simply not shown
            continue


def _prepare(pre: Preprocessor, limits: ReadLimits, index: int, name: str, value: Any) -> list[Slice] | _Deferred:
    """Read and preprocess one input (or only check its header, when it is large); errors become slices."""
    try:
        if isinstance(value, InputError):
            raise value
        if isinstance(value, Frame):
            return [_one(pre, name, index, value)]
        reader = open_reader(value, limits)
    except Exception as exc:  # never let one odd file stop a batch
        return [_failed(name, None, index, exc)]
    if reader.count > EAGER_FRAMES or reader.nbytes > EAGER_BYTES:
        return _Deferred(index, name, reader)
    return [item if isinstance(item, Slice) else _one(pre, name, index, item)
            for item in _guarded(reader, name, index)]


def _guarded(reader: Reader, name: str, index: int) -> Iterator[Frame | Slice]:
    """The frames, then (if decoding stops with an error) one failed Slice for the frame that broke.

    That slice keeps the file's series identity: a damaged frame counts against its series.
    """
    done = 0
    try:
        for frame in reader.frames():
            yield frame
            done += 1
    except Exception as exc:
        identity = None if reader.identity is None else replace(reader.identity, frame=done)
        yield replace(_failed(name, done if done else None, index, exc), identity=identity)


def _one(pre: Preprocessor, name: str, index: int, frame: Frame) -> Slice:
    try:
        return Slice(name, frame.index, index, pre.one(frame), identity=frame.identity)
    except Exception as exc:
        return replace(_failed(name, frame.index, index, exc), identity=frame.identity)


def _failed(name: str, frame: int | None, index: int, exc: Exception) -> Slice:
    if isinstance(exc, InputError):
        return Slice(name, frame, index, reason=exc.reason, message=exc.message)
    if isinstance(exc, MemoryError):
        return Slice(name, frame, index, reason="too-large", message="not enough memory for this input")
    log.debug("unexpected error reading %s", name, exc_info=True)
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return Slice(name, frame, index, reason="internal", message=text)


def _expand(sources: Source | Iterable[Source],
            on_skip: Callable[[str, str], None] | None) -> Iterator[tuple[int, str, Any]]:
    """(input index, display name, Path | Frame | InputError) for every input, folders walked."""
    if isinstance(sources, (str, os.PathLike, np.ndarray, Frame)):
        sources = [sources]
    for n, source in enumerate(sources):
        if isinstance(source, Frame):
            yield n, source.source, source
            continue
        if isinstance(source, np.ndarray):
            yield n, f"<array {n}>", _array_frame(source, n)
            continue
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"sources must be paths, numpy arrays or Frames, got {type(source).__name__}")
        yield from _expand_path(n, Path(source), on_skip)


def _expand_path(n: int, path: Path, on_skip) -> Iterator[tuple[int, str, Any]]:
    try:
        is_folder = os.path.isdir(path)
    except (OSError, ValueError) as exc:  # e.g. an embedded NUL byte
        yield n, str(path), InputError("unreadable", f"cannot read {path}: {exc}")
        return
    if not is_folder:
        yield n, str(path), path
        return
    found = False
    for item in walk(path, on_skip):
        found = True
        if isinstance(item, tuple):
            yield n, str(item[0]), item[1]
        else:
            yield n, str(item), item
    if not found:
        yield n, str(path), InputError("empty", f"folder {path} holds no image files")


def _array_frame(array: np.ndarray, n: int) -> Frame | InputError:
    try:
        return Frame(_to_grey(array, "RGB"), f"<array {n}>")
    except InputError as exc:
        return exc
