"""The classifier: sources in, one prediction per slice out."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from ._io import MAX_BYTES, MAX_PIXELS
from ._manifest import Artifact, Manifest
from ._preprocess import Preprocessor
from ._series import SeriesCollector, SeriesResult, SeriesRule, SliceIdentity
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
        identity: the DICOM series, study, instance and position of the
            slice (None for other images): what series grouping reads.
    """

    source: str
    frame: int | None
    probability: float | None = None
    label: str | None = None
    reason: str | None = None
    message: str | None = None
    identity: SliceIdentity | None = None

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
                yield Prediction(item.source, item.frame, reason=item.reason, message=item.message,
                                 identity=item.identity)
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
                yield Prediction(s.source, s.frame, reason=s.reason, message=s.message, identity=s.identity)
            else:
                p = float(next(probs))
                yield Prediction(s.source, s.frame, p, labels[int(p >= self.threshold)], identity=s.identity)

    @property
    def series_rule(self) -> SeriesRule:
        """The bundle's fitted series rule; without one, the consecutive rule at the slice threshold."""
        if self.manifest.series_rule is not None:
            return self.manifest.series_rule
        return SeriesRule("consecutive", self.threshold, fitted_on="none: the slice threshold, no series rule fitted")

    def predict_series(self, sources: Source | Iterable[Source] | None = None, batch_size: int = 8, *,
                       groups: Mapping[str, Source | Iterable[Source]] | None = None,
                       strict: bool = False) -> list[SeriesResult]:
        """Predict every slice and decide each series (see :mod:`asinfer.engine` series docs).

        Args:
            sources: as for :meth:`predict`; DICOM groups by SeriesInstanceUID,
                other images by folder, each array on its own.
            batch_size: slices per inference call.
            groups: instead of ``sources``, named groups: each name is one
                series (its slices still ordered by position when DICOM).
            strict: a series with failed slices gets no decision
                (``reason`` ``incomplete-series``) instead of one flagged in ``message``.

        Returns:
            One :class:`SeriesResult` per series, in the order first met.

        Example:
            >>> [(s.key, s.label, s.score) for s in clf.predict_series("study/")]  # doctest: +SKIP
            [('1.2.826...', 'AS', 0.91)]
        """
        if (sources is None) == (groups is None):
            raise ValueError("give either sources or groups")
        collector = SeriesCollector()
        if groups is None:
            for p in self.iter_predict(sources, batch_size):
                collector.add(p)
        else:
            for name, members in groups.items():
                for p in self.iter_predict(members, batch_size):
                    collector.add(p, group=name)
        return collector.results(self.series_rule, self.manifest.labels, strict)
