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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

import numpy as np

from ._errors import InputError
from ._io import MAX_PIXELS, Frame, _to_grey, iter_files, read_frames
from ._preprocess import Preprocessor

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
    """

    source: str
    frame: int | None
    input_index: int
    image: np.ndarray | None = None
    reason: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def load_slices(sources: Source | Iterable[Source], preprocessor: Preprocessor | None = None, *,
                max_pixels: int = MAX_PIXELS) -> Iterator[Slice]:
    """Read and preprocess every slice of every source, in input order.

    Args:
        sources: a path (file or folder, walked recursively; DICOM found by
            content), an array, a :class:`Frame`, or an iterable of these.
        preprocessor: the bundle's preprocessing; default ``Preprocessor()``
            (the prototype's CLAHE at 224x224). Its thread pool reads and
            preprocesses several inputs at once; results keep input order.
        max_pixels: refuse files holding more pixels than this.

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

    def prepare(item: tuple[int, str, Any]) -> list[Slice]:
        return _prepare(pre, max_pixels, *item)

    for slices in pre.map(prepare, _expand(sources)):
        yield from slices


def _prepare(pre: Preprocessor, max_pixels: int, index: int, name: str, value: Any) -> list[Slice]:
    """Read and preprocess one input; errors become slices that carry them."""
    try:
        if isinstance(value, InputError):
            raise value
        frames = read_frames(value, max_pixels) if isinstance(value, Path) else [value]
    except Exception as exc:  # never let one odd file stop a batch
        return [_failed(name, None, index, exc)]
    out = []
    for number, frame in enumerate(frames):
        try:
            out.append(Slice(name, number, index, pre.one(frame)))
        except Exception as exc:
            out.append(_failed(name, number, index, exc))
    return out


def _failed(name: str, frame: int | None, index: int, exc: Exception) -> Slice:
    if isinstance(exc, InputError):
        return Slice(name, frame, index, reason=exc.reason, message=exc.message)
    log.debug("unexpected error reading %s", name, exc_info=True)
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return Slice(name, frame, index, reason="internal", message=text)


def _expand(sources: Source | Iterable[Source]) -> Iterator[tuple[int, str, Any]]:
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
        path = Path(source)
        if path.is_dir():
            files = iter_files(path)
            first = next(files, None)
            if first is None:
                yield n, str(path), InputError("empty", f"folder {path} holds no image files")
                continue
            yield n, str(first), first
            yield from ((n, str(f), f) for f in files)
        else:
            yield n, str(path), path


def _array_frame(array: np.ndarray, n: int) -> Frame | InputError:
    try:
        return Frame(_to_grey(array, "RGB"), f"<array {n}>")
    except InputError as exc:
        return exc
