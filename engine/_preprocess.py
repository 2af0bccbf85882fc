"""The one preprocessing definition: any slice -> uint8 model input.

    grey (any depth) -> 8 bit (VOI window, else percentile stretch; MONOCHROME1
    inverted) -> CLAHE at native resolution -> resize to the model input
    -> uint8 batch [N, H, W, 1]

The engine runs it before inference; the trainer runs the same code for
training data, quantisation calibration and parity checks.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from ._errors import InputError
from ._io import Frame
from ._manifest import PreprocessSpec

_INTERPOLATION = {"area": "INTER_AREA", "linear": "INTER_LINEAR", "cubic": "INTER_CUBIC",
                  "nearest": "INTER_NEAREST", "lanczos": "INTER_LANCZOS4"}


def to_uint8(frame: Frame | np.ndarray, spec: PreprocessSpec = PreprocessSpec()) -> np.ndarray:
    """Map one grey slice to 8 bit, as a display would.

    uint8 passes through unless ``spec.stretch_8bit``. Deeper data (and
    uint8 with ``stretch_8bit``) uses the frame's DICOM VOI window (linear
    function of PS3.3 C.11.2.1.2, on the rescaled values) when it has one
    and ``spec.use_voi_window``; otherwise the ``spec`` percentiles are
    stretched to 0..255. The DICOM modality LUT (``frame.rescale``) is
    folded into that one linear map, so no float copy of the frame is made.
    MONOCHROME1 frames are inverted after the mapping.

    Args:
        frame: a :class:`Frame` or a 2-D array.
        spec: the bundle's preprocessing parameters.

    Returns:
        ``(H, W)`` uint8 array.

    Raises:
        InputError: ``empty`` for an image without pixels.
    """
    if isinstance(frame, Frame):
        pixels, window, invert, (slope, intercept) = frame.pixels, frame.window, frame.invert, frame.rescale
    else:
        pixels, window, invert, slope, intercept = np.asarray(frame), None, False, 1.0, 0.0
    if pixels.ndim != 2 or pixels.size == 0:
        raise InputError("empty", f"expected a non-empty 2-D slice, got shape {pixels.shape}")
    if pixels.dtype == np.uint8 and (slope, intercept) == (1.0, 0.0) and not spec.stretch_8bit:
        out = pixels
    elif pixels.dtype == np.bool_:
        out = pixels.view(np.uint8) * np.uint8(255)
    else:
        if window is not None and spec.use_voi_window:
            center, width = window
            lo = center - 0.5 - (width - 1) / 2
            hi = lo + max(width - 1, 1e-6)
        else:
            raw = _percentiles(pixels, spec.percentile_low, spec.percentile_high)
            lo, hi = sorted(slope * value + intercept for value in raw)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        out = _stretch(pixels, slope * scale, (intercept - lo) * scale)
    return 255 - out if invert else out


def _percentiles(pixels: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Robust intensity range; a histogram for 8- and 16-bit data (fast), else np.percentile."""
    if pixels.dtype in (np.uint8, np.uint16, np.int16):
        offset = 32768 if pixels.dtype == np.int16 else 0
        counts = (np.bincount(pixels.ravel(), minlength=256) if pixels.dtype == np.uint8
                  else _histogram16(pixels.ravel(), offset))
        cdf = np.cumsum(counts)
        lo = np.searchsorted(cdf, cdf[-1] * low / 100, side="right") - offset
        hi = np.searchsorted(cdf, cdf[-1] * high / 100, side="left") - offset
    else:
        finite = pixels[np.isfinite(pixels)] if pixels.dtype.kind == "f" else pixels
        if finite.size == 0:
            raise InputError("empty", "slice holds no finite values")
        lo, hi = np.percentile(finite, [low, high])
    return float(lo), float(hi)


def _histogram16(values: np.ndarray, offset: int, chunk: int = 1 << 20) -> np.ndarray:
    """Counts of each 16-bit value, a chunk at a time: bincount's int64 copy of a large frame stays small."""
    counts = np.zeros(65536, np.int64)
    for start in range(0, values.size, chunk):
        part = values[start:start + chunk]
        counts += np.bincount(part.astype(np.int32) + offset if offset else part, minlength=65536)
    return counts


def _stretch(pixels: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """``pixels * alpha + beta``, saturated to 0..255 and rounded.

    One OpenCV call (it releases the GIL, so preprocessing threads scale)
    where OpenCV takes the dtype; numpy otherwise.
    """
    import cv2

    if pixels.dtype in _CV_DEPTHS:
        return cv2.addWeighted(pixels, alpha, pixels, 0.0, beta, dtype=cv2.CV_8U)
    out = pixels.astype(np.float32)
    out *= np.float32(alpha)
    out += np.float32(beta + 0.5)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


_CV_DEPTHS = {np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64)}


class Preprocessor:
    """Turn slices into the model's uint8 batch ``[N, H, W, 1]``.

    Holds its settings and a thread pool; slices of a batch are processed in
    parallel (OpenCV releases the GIL), each thread reusing its own CLAHE
    object. Safe to call from several threads at once.

    Args:
        spec: preprocessing parameters, normally ``manifest.preprocessing``.
        size: model input ``(height, width)``.
        threads: worker threads; default ``os.cpu_count()``. 1 runs inline.

    Example:
        >>> pre = Preprocessor(size=(224, 224))
        >>> batch = pre([np.zeros((512, 512), np.uint16)])
        >>> batch.shape, batch.dtype
        ((1, 224, 224, 1), dtype('uint8'))
    """

    def __init__(self, spec: PreprocessSpec = PreprocessSpec(), size: tuple[int, int] = (224, 224),
                 threads: int | None = None) -> None:
        import cv2

        self.spec = spec
        self.size = (int(size[0]), int(size[1]))
        self.threads = max(1, threads or os.cpu_count() or 1)
        self._down = getattr(cv2, _interpolation(spec.resize_down))
        self._up = getattr(cv2, _interpolation(spec.resize_up))
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __call__(self, slices: Sequence[Frame | np.ndarray]) -> np.ndarray:
        """Preprocess a batch of slices (frames or 2-D arrays of any depth).

        Raises:
            InputError: for the first slice that cannot be processed; use
                :meth:`one` per slice to isolate failures.
        """
        batch = np.empty((len(slices), *self.size, 1), np.uint8)

        def work(i: int) -> None:
            batch[i, :, :, 0] = self.one(slices[i])

        list(self.map(work, range(len(slices))))
        return batch

    def one(self, image: Frame | np.ndarray) -> np.ndarray:
        """One slice -> ``(H, W)`` uint8: 8-bit mapping, CLAHE, resize."""
        grey = to_uint8(image, self.spec)
        equalised = self._clahe().apply(np.ascontiguousarray(grey))
        return self._resize(equalised)

    def map(self, fn, items, ahead: int = 32):
        """``fn`` over ``items`` on the pool, results in order.

        Lazy, unlike ``Executor.map``: at most ``ahead`` items are in flight,
        so a folder of 100k files does not sit in memory at once.
        """
        if self.threads == 1:
            return map(fn, items)
        return _bounded_map(self._executor(), fn, items, max(ahead, self.threads))

    def _resize(self, img: np.ndarray) -> np.ndarray:
        import cv2

        height, width = self.size
        if img.shape == (height, width):
            return img
        shrink = height * width < img.shape[0] * img.shape[1]
        return cv2.resize(img, (width, height), interpolation=self._down if shrink else self._up)

    def _clahe(self):
        clahe = getattr(self._local, "clahe", None)
        if clahe is None:
            import cv2

            clahe = cv2.createCLAHE(clipLimit=self.spec.clahe_clip_limit,
                                    tileGridSize=tuple(self.spec.clahe_tile_grid))
            self._local.clahe = clahe
        return clahe

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="asinfer-pre")
            return self._pool

    def close(self) -> None:
        """Stop the worker threads (they also stop at interpreter exit)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


def _bounded_map(executor: ThreadPoolExecutor, fn, items, ahead: int):
    futures: deque = deque()
    for item in items:
        futures.append(executor.submit(fn, item))
        if len(futures) >= ahead:
            yield futures.popleft().result()
    while futures:
        yield futures.popleft().result()


def _interpolation(name: str) -> str:
    try:
        return _INTERPOLATION[name]
    except KeyError:
        raise ValueError(f"Invalid interpolation {name!r}. Valid: {', '.join(_INTERPOLATION)}") from None
