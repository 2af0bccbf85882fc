"""The classifier: sources in, one prediction per slice out."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

import numpy as np

from ._errors import InputError
from ._io import MAX_PIXELS, Frame, _to_grey, iter_files, read_frames
from ._manifest import Artifact, Manifest
from ._preprocess import Preprocessor

log = logging.getLogger("asinfer")

Source = Union[str, os.PathLike, np.ndarray]


@dataclass(frozen=True)
class Prediction:
    """The result for one slice, or the reason an input gave none.

    Attributes:
        source: file path, or ``<array N>`` for the N-th array passed in.
        frame: frame index within the source; None when the source failed whole.
        probability: probability of the positive label; None on error.
        label: the manifest label chosen by the threshold; None on error.
        error: ``"reason: message"`` (reason codes in ``asinfer.engine.REASONS``); None on success.
    """

    source: str
    frame: int | None
    probability: float | None = None
    label: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def reason(self) -> str | None:
        """The error's reason code, or None."""
        return self.error.split(":", 1)[0] if self.error else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Slice:
    source: str
    frame: int | None
    image: np.ndarray | None = None  # preprocessed (H, W) uint8
    error: str | None = None


class Classifier:
    """A loaded model bundle, ready to predict. Create it with :func:`asinfer.engine.load`.

    Thread-safe: ONNX Runtime sessions and the preprocessor accept concurrent callers.
    """

    def __init__(self, manifest: Manifest, session, artifact: Artifact, provider: str,
                 threshold: float | None = None, preprocess_threads: int | None = None,
                 max_pixels: int = MAX_PIXELS) -> None:
        self.manifest = manifest
        self.max_pixels = max_pixels
        self.artifact = artifact
        self.provider = provider
        self.threshold = manifest.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} is outside [0, 1]")
        spec = manifest.input
        self.preprocessor = Preprocessor(manifest.preprocessing, (spec.height, spec.width), preprocess_threads)
        self._session = session
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        self.run(np.zeros((1, spec.height, spec.width, 1), np.uint8))  # warm-up

    def predict(self, sources: Source | Iterable[Source], batch_size: int = 8) -> list[Prediction]:
        """Predict every slice of every source.

        Args:
            sources: a path (file or folder, walked recursively), a 2-D array
                (grey) or ``(H, W, 3|4)`` array (RGB/RGBA), or an iterable of these.
            batch_size: slices per inference call.

        Returns:
            One :class:`Prediction` per slice, in input order; an input that
            yields no slice gives one Prediction carrying the error.

        Example:
            >>> clf = engine.load("models/asinfer-demo")  # doctest: +SKIP
            >>> [p.label for p in clf.predict(["a.dcm", "b.png"])]  # doctest: +SKIP
            ['no AS', 'AS']
        """
        return list(self.iter_predict(sources, batch_size))

    def iter_predict(self, sources: Source | Iterable[Source], batch_size: int = 8) -> Iterator[Prediction]:
        """Like :meth:`predict`, yielding results as their batch completes."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pending: list[_Slice] = []
        for slices in self.preprocessor.map(self._prepare, _expand(sources)):
            pending.extend(slices)
            while sum(s.image is not None for s in pending) >= batch_size:
                done, pending = _split(pending, batch_size)
                yield from self._infer(done)
        yield from self._infer(pending)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw inference: uint8 ``[N, H, W, 1]`` -> probabilities ``[N]`` (float32)."""
        return self._session.run([self._output], {self._input: batch})[0].reshape(-1)

    def _infer(self, slices: list[_Slice]) -> Iterator[Prediction]:
        images = [s.image for s in slices if s.image is not None]
        probs = iter(self.run(np.stack(images)[..., None]) if images else ())
        labels = self.manifest.labels
        for s in slices:
            if s.image is None:
                yield Prediction(s.source, s.frame, error=s.error)
            else:
                p = float(next(probs))
                yield Prediction(s.source, s.frame, p, labels[int(p >= self.threshold)])

    def _prepare(self, item: tuple[str, Any]) -> list[_Slice]:
        """Read and preprocess one input; errors become slices that carry them."""
        name, value = item
        try:
            if isinstance(value, InputError):
                raise value
            frames = read_frames(value, self.max_pixels) if isinstance(value, Path) else [value]
        except InputError as exc:
            return [_Slice(name, None, error=str(exc))]
        except Exception as exc:  # never let one odd file stop a batch
            log.debug("unexpected error reading %s", name, exc_info=True)
            return [_Slice(name, None, error=f"internal: {type(exc).__name__}: {exc}")]
        return [self._prepare_frame(name, i, f) for i, f in enumerate(frames)]

    def _prepare_frame(self, name: str, index: int, frame) -> _Slice:
        try:
            return _Slice(name, index, self.preprocessor.one(frame))
        except InputError as exc:
            return _Slice(name, index, error=str(exc))
        except Exception as exc:
            log.debug("unexpected error preprocessing %s", name, exc_info=True)
            return _Slice(name, index, error=f"internal: {type(exc).__name__}: {exc}")


def _split(pending: list[_Slice], batch_size: int) -> tuple[list[_Slice], list[_Slice]]:
    """Cut after the ``batch_size``-th good slice (errors ride along in order)."""
    count = 0
    for i, s in enumerate(pending):
        count += s.image is not None
        if count == batch_size:
            return pending[: i + 1], pending[i + 1:]
    return pending, []


def _expand(sources: Source | Iterable[Source]) -> Iterator[tuple[str, Any]]:
    """(display name, Path | array | InputError) for every input, folders walked."""
    if isinstance(sources, (str, os.PathLike, np.ndarray)):
        sources = [sources]
    for n, source in enumerate(sources):
        if isinstance(source, np.ndarray):
            yield f"<array {n}>", _array_frame(source)
            continue
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"sources must be paths or numpy arrays, got {type(source).__name__}")
        path = Path(source)
        if path.is_dir():
            files = list(iter_files(path))
            if not files:
                yield str(path), InputError("empty", f"folder {path} holds no image files")
            yield from ((str(f), f) for f in files)
        else:
            yield str(path), path


def _array_frame(array: np.ndarray) -> Frame | InputError:
    try:
        return Frame(_to_grey(array, "RGB"), "<array>")
    except InputError as exc:
        return exc
