"""The classifier: sources in, one prediction per slice out."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ._io import MAX_BYTES, MAX_PIXELS
from ._manifest import Artifact, Manifest
from ._preprocess import Preprocessor
from ._slices import Slice, Source, load_slices

log = logging.getLogger("asinfer")


@dataclass(frozen=True)
class Prediction:
    """The result for one slice, or the reason an input gave none.

    Attributes:
        source: file path, or ``<array N>`` for the N-th array passed in.
        frame: frame index within the source; None when the source failed whole.
        probability: probability of the positive label; None on error.
        label: the manifest label chosen by the threshold; None on error.
        reason: failure code from ``asinfer.engine.REASONS``; None on success.
        message: one line saying what went wrong; None on success.
    """

    source: str
    frame: int | None
    probability: float | None = None
    label: str | None = None
    reason: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def error(self) -> str | None:
        """``"reason: message"`` for display; None on success."""
        return None if self.reason is None else f"{self.reason}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Classifier:
    """A loaded model bundle, ready to predict. Create it with :func:`asinfer.engine.load`.

    Thread-safe: ONNX Runtime sessions and the preprocessor accept concurrent callers.
    """

    def __init__(self, manifest: Manifest, session, artifact: Artifact, provider: str,
                 threshold: float | None = None, preprocess_threads: int | None = None,
                 max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> None:
        self.manifest = manifest
        self.max_pixels, self.max_bytes = max_pixels, max_bytes
        self.artifact = artifact
        self.provider = provider
        self.threshold = manifest.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} is outside [0, 1]")
        spec = manifest.input
        self.preprocessor = Preprocessor(manifest.preprocessing, (spec.height, spec.width), preprocess_threads)
        self._session = session
        self._input = spec.name
        self._output = manifest.output.name
        self.run(np.zeros((1, spec.height, spec.width, 1), np.uint8))  # warm-up

    def predict(self, sources: Source | Iterable[Source], batch_size: int = 8, *,
                on_skip: Callable[[str, str], None] | None = None) -> list[Prediction]:
        """Predict every slice of every source.

        Args:
            sources: a path (file or folder, walked recursively), a 2-D array
                (grey) or ``(H, W, 3|4)`` array (RGB/RGBA), or an iterable of these.
            batch_size: slices per inference call.
            on_skip: called with ``(path, why)`` for each entry a folder walk
                passes over on purpose (see :func:`asinfer.engine.load_slices`).

        Returns:
            One :class:`Prediction` per slice, in input order; an input that
            yields no slice gives one Prediction carrying the reason.

        Example:
            >>> clf = engine.load("models/asinfer-demo")  # doctest: +SKIP
            >>> [p.label for p in clf.predict(["a.dcm", "b.png"])]  # doctest: +SKIP
            ['no AS', 'AS']
        """
        return list(self.iter_predict(sources, batch_size, on_skip=on_skip))

    def iter_predict(self, sources: Source | Iterable[Source], batch_size: int = 8, *,
                     on_skip: Callable[[str, str], None] | None = None) -> Iterator[Prediction]:
        """Like :meth:`predict`, yielding results as their batch completes."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pending: list[Slice] = []
        ready = 0
        for item in load_slices(sources, self.preprocessor, max_pixels=self.max_pixels, max_bytes=self.max_bytes,
                                on_skip=on_skip):
            if not item.ok and not ready:  # nothing before it waits for inference: out it goes, in order
                yield Prediction(item.source, item.frame, reason=item.reason, message=item.message)
                continue
            pending.append(item)
            ready += item.ok
            if ready == batch_size:
                yield from self._infer(pending)
                pending, ready = [], 0
        yield from self._infer(pending)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw inference: uint8 ``[N, H, W, 1]`` -> probabilities ``[N]`` (float32)."""
        return self._session.run([self._output], {self._input: batch})[0].reshape(-1)

    def _infer(self, slices: list[Slice]) -> Iterator[Prediction]:
        images = [s.image for s in slices if s.ok]
        probs = iter(self.run(np.stack(images)[..., None]) if images else ())
        labels = self.manifest.labels
        for s in slices:
            if not s.ok:
                yield Prediction(s.source, s.frame, reason=s.reason, message=s.message)
            else:
                p = float(next(probs))
                yield Prediction(s.source, s.frame, p, labels[int(p >= self.threshold)])
