"""Drawing in millimetres: a float image plus the mm -> pixel affine of a series.

Anatomy is described in patient millimetres (x to the image right, y posterior,
i.e. down the image) so that field of view, matrix and pose only change the
affine, never the anatomy code.
"""
from __future__ import annotations

import cv2
import numpy as np

_SHIFT = 4  # fillPoly fixed-point bits: sub-pixel vertices without anti-aliasing cost
_ONE = 1 << _SHIFT


class Canvas:
    """A float32 image of shape (size, size) and its 2x3 mm -> pixel affine."""

    def __init__(self, size: int, mm_to_px: np.ndarray, spacing_mm: float):
        self.size = size
        self.affine = np.asarray(mm_to_px, dtype=np.float64)
        self.spacing = spacing_mm
        self.img = np.zeros((size, size), np.float32)

    def to_px(self, pts_mm: np.ndarray) -> np.ndarray:
        """Map (n, 2) mm points to (n, 2) pixel (x, y) coordinates."""
        return np.asarray(pts_mm) @ self.affine[:, :2].T + self.affine[:, 2]

    def _fixed(self, polys) -> list[np.ndarray]:
        return [np.round(self.to_px(p) * _ONE).astype(np.int32) for p in polys]

    def fill(self, polys, value: float, img: np.ndarray | None = None) -> None:
        """Fill polygons (mm) with a constant value, into self.img by default."""
        target = self.img if img is None else img
        cv2.fillPoly(target, self._fixed(polys), float(value), cv2.LINE_8, _SHIFT)

    def mask(self, polys) -> np.ndarray:
        """Return a uint8 0/1 mask of the union of polygons (mm)."""
        out = np.zeros((self.size, self.size), np.uint8)
        cv2.fillPoly(out, self._fixed(polys), 1, cv2.LINE_8, _SHIFT)
        return out

    def line(self, pts_mm: np.ndarray, value: float, width_mm: float) -> None:
        """Draw an open polyline (mm) at least one pixel wide."""
        width = max(1, int(round(width_mm / self.spacing)))
        cv2.polylines(self.img, self._fixed([pts_mm]), False, float(value), width, cv2.LINE_8, _SHIFT)

    def put(self, mask: np.ndarray, value: np.ndarray | float) -> None:
        """Set pixels under a uint8/bool mask to a value or to a same-shape field."""
        sel = mask.astype(bool)
        self.img[sel] = value[sel] if isinstance(value, np.ndarray) else value

    def px(self, mm: float) -> float:
        """Convert a length in mm to pixels."""
        return mm / self.spacing


def ellipse(center, axes, angle: float = 0.0, n: int = 36) -> np.ndarray:
    """Points (n, 2) of an ellipse in mm; angle in radians."""
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = axes[0] * np.cos(th), axes[1] * np.sin(th)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], axis=1)


def bezier(p0, p1, p2, n: int = 16) -> np.ndarray:
    """Points (n, 2) of a quadratic Bezier curve."""
    u = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(p, float) for p in (p0, p1, p2))
    return (1 - u) ** 2 * p0 + 2 * (1 - u) * u * p1 + u**2 * p2


def superellipse(a: float, b: float, power: float, n: int = 64) -> np.ndarray:
    """Points of |x/a|^p + |y/b|^p = 1: the rounded-box outline of a pelvis."""
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(th), np.sin(th)
    e = 2.0 / power
    return np.stack([a * np.sign(c) * np.abs(c) ** e, b * np.sign(s) * np.abs(s) ** e], axis=1)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, roughly unit-variance smooth random field (size, size), float32.

    Drawn on a coarse grid and upsampled, which is what keeps it cheap.
    """
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
