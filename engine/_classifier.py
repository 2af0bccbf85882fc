"""The classifier: sources in, one prediction per slice out."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from ._io import MAX_BYTES, MAX_PIXELS
from ._manifest import Artifact, Manifest
from ._evidence import OUTPUTS as EVIDENCE_OUTPUTS
from ._evidence import Head, grad_cam, upsample
from ._preprocess import Preprocessor, to_uint8
from ._series import SeriesCollector, SeriesResult, SeriesRule, SliceIdentity
from ._slices import Slice, Source, load_frames, load_slices

if TYPE_CHECKING:
    from ._report import ReportFiles

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


@dataclass(frozen=True)
class Explanation:
    """A slice's prediction with its evidence.

    Attributes:
        prediction: as :meth:`Classifier.predict` gives it.
        cam: Grad-CAM in model space ``[h, w]`` (7 x 7 for VGG16 at 224), >= 0.
        display: the slice as 8 bit in its own geometry (the engine's VOI/stretch mapping).
    """

    prediction: Prediction
    cam: np.ndarray
    display: np.ndarray

    def heatmap(self) -> np.ndarray:
        """The CAM stretched to the slice's geometry, as the model input was."""
        return upsample(self.cam, self.display.shape[:2])

    def peak(self) -> tuple[int, int]:
        """(row, column) of the CAM's maximum in the slice's geometry."""
        heat = self.heatmap()
        return tuple(int(v) for v in np.unravel_index(int(np.argmax(heat)), heat.shape))


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
        self._head = self._load_head(np.zeros((1, spec.height, spec.width, 1), np.uint8))  # also the warm-up

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
        """Inference on preprocessed slices: uint8 ``[N, H, W, 1]`` -> probabilities ``[N]`` (float32).

        The manifest's definition of a slice's probability: the graph's output, or with
        ``output.mirror_average`` the mean of the outputs for the slice and its left-right mirror.
        """
        if not self.manifest.output.mirror_average:
            return self.run_graph(batch)
        return _halves_mean(self.run_graph(_with_mirror(batch)))

    def run_graph(self, batch: np.ndarray) -> np.ndarray:
        """One pass of the graph, without test-time mirroring: uint8 ``[N, H, W, 1]`` -> outputs ``[N]``."""
        return self._session.run([self._output], {self._input: batch})[0].reshape(-1)

    @property
    def can_explain(self) -> bool:
        """The graph has the Grad-CAM outputs (``features`` and the head's weights)."""
        return self._head is not None

    def run_explained(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inference with evidence: probabilities ``[N]`` and Grad-CAMs ``[N, h, w]`` (model-space, >= 0).

        Raises:
            ValueError: the artifact has no explanation outputs (convert it again, or see
                ``python -m asinfer.trainer.convert.explain``).
        """
        if self._head is None:
            raise ValueError(f"{self.artifact.file} has no Grad-CAM outputs; re-convert the model to explain it")
        mirror = self.manifest.output.mirror_average
        feed = _with_mirror(batch) if mirror else batch
        probs, features = self._session.run([self._output, "features"], {self._input: feed})
        probs, cams = probs.reshape(-1), grad_cam(features, self._head)
        if not mirror:
            return probs, cams
        n = len(batch)  # the mirror's map is turned back before the two are averaged
        return _halves_mean(probs), _halves_mean(np.concatenate([cams[:n], cams[n:, :, ::-1]]))

    def explain(self, sources: Source | Iterable[Source], frames: set[tuple[str, int]] | None = None) -> list[Explanation]:
        """Predictions with their Grad-CAM evidence, slice by slice (a secondary path: read, then explain).

        Args:
            sources: files, folders or arrays, as for :meth:`predict`.
            frames: only these ``(source, frame)`` pairs (e.g. a series' driving slices); default all.

        Returns:
            One :class:`Explanation` per readable slice; unreadable ones are left out
            (:meth:`predict` reports them).
        """
        out = []
        for item in load_frames(sources, max_pixels=self.max_pixels, max_bytes=self.max_bytes):
            if frames is not None and (item.source, item.index) not in frames:
                continue
            try:
                image = self.preprocessor.one(item)
            except Exception:  # the same slice failed in predict, with its reason
                continue
            (p,), (cam,) = self.run_explained(image[None, ..., None])
            prediction = Prediction(item.source, item.index, float(p), self.manifest.labels[int(p >= self.threshold)],
                                    identity=item.identity)
            out.append(Explanation(prediction, cam, to_uint8(item, self.manifest.preprocessing)))
        return out

    def _load_head(self, zeros: np.ndarray) -> Head | None:
        """The warm-up run; it also fetches the head's weights when the graph exposes them."""
        names = {o.name for o in self._session.get_outputs()}
        if not set(EVIDENCE_OUTPUTS) <= names:
            self.run_graph(zeros)
            return None
        _, features, w1, b1, w2 = self._session.run([self._output, *EVIDENCE_OUTPUTS], {self._input: zeros})
        return Head.from_outputs(w1, b1, w2, channels=features.shape[1])

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

    def report(self, series: SeriesResult, out, *, run: int = 1) -> "ReportFiles":
        """Write a decided DICOM series' result as DICOM into the folder ``out``: SR + Secondary Capture.

        The SR (TID 1500) holds the decision, the score, the threshold and the model; one Secondary
        Capture image per driving slice carries its Grad-CAM overlay (none when the model has no
        Grad-CAM outputs). See :mod:`asinfer.engine._report` for the content. Needs the ``dicom`` extra.
        ``run`` > 1 (a series decided again after late instances) gives the objects UIDs of their own.

        Returns:
            A :class:`ReportFiles`: the files, or the reason nothing was written (``not-dicom``,
            ``no-decision``, ``report-failed``); expected failures are not raised.
        """
        from pathlib import Path

        from ._report import reportable, write_report
        from ._version import __version__

        evidence: list[Explanation] = []
        if reportable(series) is None and self.can_explain and series.driving:
            wanted = set(series.driving)
            order = {(p.source, p.frame): n for n, p in enumerate(series.slices)}
            evidence = sorted(self.explain(sorted({source for source, _ in wanted}), frames=wanted),
                              key=lambda ex: order.get((ex.prediction.source, ex.prediction.frame), 0))
        return write_report(series, evidence, Path(out), manifest=self.manifest, artifact=self.artifact,
                            rule=self.series_rule, labels=self.manifest.labels, software_version=__version__,
                            run=run)


def _with_mirror(batch: np.ndarray) -> np.ndarray:
    """``[N, H, W, C]`` -> ``[2N, H, W, C]``: the batch, then each slice's left-right mirror."""
    return np.concatenate([batch, batch[:, :, ::-1]])


def _halves_mean(values: np.ndarray) -> np.ndarray:
    """The mean of the first and second halves of a :func:`_with_mirror` batch's results (float32)."""
    n = len(values) // 2
    return (values[:n] + values[n:]) * np.float32(0.5)
