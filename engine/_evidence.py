"""Grad-CAM for the GAP -> Dense(ReLU) -> Dense(sigmoid) head, exactly and in numpy.

With A the feature map the global average pool reads (C channels of H x W),
g = mean over positions of A, u = W1 g + b1, and the logit z = w2 . relu(u) + b2:

    dz/dA[k, y, x] = dz/dg[k] * dg[k]/dA[k, y, x] = (sum_j w2[j] 1[u[j] > 0] W1[j, k]) / (H W)

The gradient is the same at every position of a channel, so Grad-CAM's
channel weight (the spatial mean of the gradient) is that value itself:

    alpha[k] = sum_j W1[j, k] w2[j] 1[u[j] > 0] / (H W),   CAM = ReLU(sum_k alpha[k] A[k])

No TensorFlow and no second pass: A comes out of the same inference run (the
graph's ``features`` output), and W1, b1, w2 out of the graph too (outputs
``head_w1``, ``head_b1``, ``head_w2``, fetched once at load).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The graph outputs explanation needs (added by the converter's graph surgery).
OUTPUTS = ("features", "head_w1", "head_b1", "head_w2")


@dataclass(frozen=True)
class Head:
    """The classifier head's weights, float32: w1 [C, J] (channels by hidden units), b1 [J], w2 [J]."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray

    @classmethod
    def from_outputs(cls, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, channels: int) -> "Head":
        """Normalise the graph's weights (Gemm may store W1 transposed) to w1 [C, J]."""
        w1 = np.asarray(w1, np.float32)
        if w1.shape[0] != channels:
            w1 = w1.T
        return cls(w1, np.asarray(b1, np.float32).reshape(-1), np.asarray(w2, np.float32).reshape(-1))


def grad_cam(features: np.ndarray, head: Head) -> np.ndarray:
    """Grad-CAM of the positive logit for each image: ``features`` [N, C, H, W] -> CAMs [N, H, W] (float32, >= 0).

    Example:
        >>> head = Head(np.eye(2, dtype=np.float32), np.zeros(2, np.float32), np.ones(2, np.float32))
        >>> grad_cam(np.ones((1, 2, 3, 3), np.float32), head).shape
        (1, 3, 3)
    """
    # einsum, not @: a BLAS product wakes OpenBLAS threads that spin on the cores after it returns
    # and took 20 % off the next inference (benchmarks/evidence.py); these products are tiny.
    a = np.asarray(features, np.float32)
    pooled = a.mean(axis=(2, 3))  # [N, C]
    active = (np.einsum("nc,cj->nj", pooled, head.w1) + head.b1) > 0  # [N, J]
    alpha = np.einsum("nj,cj->nc", active * head.w2, head.w1) / (a.shape[2] * a.shape[3])  # [N, C]
    cam = np.einsum("nc,nchw->nhw", alpha, a)
    return np.maximum(cam, 0.0, out=cam)


def upsample(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A CAM [h, w] stretched to the slice's geometry ``(height, width)`` (bilinear), as the model input was."""
    import cv2

    return cv2.resize(np.ascontiguousarray(cam, np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def overlay(display: np.ndarray, cam: np.ndarray, caption: str) -> np.ndarray:
    """A BGR picture: the 8-bit slice, the CAM as a heat map over it, and ``caption``.

    The heat map is scaled to its own maximum (a CAM's absolute size is not a probability). A CAM
    that is zero everywhere (a confident negative: no region raised the probability) draws no heat,
    and the caption says so rather than leaving a plain grey picture unexplained.
    """
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(display, np.uint8), cv2.COLOR_GRAY2BGR)
    heat = upsample(cam, display.shape[:2])
    peak = float(heat.max())
    if peak <= 0:
        caption = f"{caption}  (no positive evidence)"
    scaled = np.zeros(heat.shape, np.uint8) if peak <= 0 else np.clip(heat / peak * 255, 0, 255).astype(np.uint8)
    coloured = cv2.applyColorMap(scaled, cv2.COLORMAP_JET)
    weight = (scaled.astype(np.float32) / 255.0 * 0.55)[..., None]
    picture = (grey * (1 - weight) + coloured * weight).astype(np.uint8)
    scale = max(0.4, display.shape[1] / 900)
    for text, y in ((caption, int(22 * scale) + 4), ("NOT FOR DIAGNOSTIC USE", display.shape[0] - 8)):
        cv2.putText(picture, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(picture, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return picture
