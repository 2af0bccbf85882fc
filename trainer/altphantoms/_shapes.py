"""Signed-distance shapes on a posed pixel grid, and a two-channel painter.

World coordinates are millimetres in the patient's axial plane: x to the
image right (patient left), y to the image bottom (posterior). Every shape is
a signed distance in mm (negative inside) evaluated on the pixels of a
region of interest, so edges are soft by construction and thicknesses (cortex,
cartilage, fat planes) are exact in mm at any matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_EPS = 1e-6


@dataclass(frozen=True)
class Pose:
    """Where the patient lies in the field of view."""

    theta: float  # in-plane rotation, radians
    shift: tuple[float, float]  # (x, y) mm, image coordinates
    scale: float  # patient size factor


class Grid:
    """World (mm) coordinates of every pixel of a square matrix under a pose."""

    def __init__(self, size: int, spacing: float, pose: Pose) -> None:
        self.size, self.spacing, self.pose = size, spacing, pose
        c = (np.arange(size, dtype=np.float64) + 0.5 - size / 2) * spacing
        u, v = np.meshgrid(c, c)
        cos, sin = np.cos(pose.theta), np.sin(pose.theta)
        u, v = u - pose.shift[0], v - pose.shift[1]
        # image = R(theta) @ (scale * world) + shift, inverted per pixel
        self.x = ((cos * u + sin * v) / pose.scale).astype(np.float32)
        self.y = ((-sin * u + cos * v) / pose.scale).astype(np.float32)
        self.mm_per_px = spacing / pose.scale  # world millimetres across one pixel

    def to_px(self, pts: np.ndarray) -> np.ndarray:
        """World points (k, 2) to pixel coordinates (k, 2) as (column, row)."""
        pts = np.asarray(pts, np.float64) * self.pose.scale
        cos, sin = np.cos(self.pose.theta), np.sin(self.pose.theta)
        img = np.stack([cos * pts[:, 0] - sin * pts[:, 1], sin * pts[:, 0] + cos * pts[:, 1]], 1)
        img += np.asarray(self.pose.shift)
        return img / self.spacing + self.size / 2 - 0.5

    def roi(self, lo: tuple[float, float], hi: tuple[float, float], pad_mm: float = 4.0) -> tuple[slice, slice] | None:
        """Pixel window (rows, cols) covering the world box lo..hi plus a margin; None when off the image."""
        corners = np.array([[lo[0] - pad_mm, lo[1] - pad_mm], [hi[0] + pad_mm, lo[1] - pad_mm],
                            [lo[0] - pad_mm, hi[1] + pad_mm], [hi[0] + pad_mm, hi[1] + pad_mm]])
        px = self.to_px(corners)
        c0, r0 = np.floor(px.min(0)).astype(int) - 1
        c1, r1 = np.ceil(px.max(0)).astype(int) + 2
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, self.size), min(r1, self.size)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def roi_of(self, pts: np.ndarray, pad_mm: float = 4.0) -> tuple[slice, slice] | None:
        """Pixel window around a set of world points."""
        pts = np.asarray(pts, np.float64)
        return self.roi(tuple(pts.min(0)), tuple(pts.max(0)), pad_mm)


@dataclass
class Field:
    """A signed distance (mm) on a pixel window of the grid."""

    roi: tuple[slice, slice]
    sd: np.ndarray

    def coverage(self, soft_mm: float) -> np.ndarray:
        """Partial-volume fraction of the shape in each pixel (1 inside, 0 outside)."""
        return np.clip(0.5 - self.sd / soft_mm, 0.0, 1.0)

    def full(self, size: int, fill: float = 1e3) -> np.ndarray:
        out = np.full((size, size), fill, np.float32)
        out[self.roi] = self.sd
        return out


# --- primitives ---------------------------------------------------------------------------------------------


def ellipse(grid: Grid, c, r, angle: float = 0.0) -> Field | None:
    """Ellipse with centre c, radii r = (rx, ry), rotated by angle (radians)."""
    big = max(r) + 1.0
    roi = grid.roi((c[0] - big, c[1] - big), (c[0] + big, c[1] + big))
    if roi is None:
        return None
    x, y = grid.x[roi] - c[0], grid.y[roi] - c[1]
    ca, sa = np.cos(angle), np.sin(angle)
    x, y = ca * x + sa * y, -sa * x + ca * y
    q = np.sqrt((x / r[0]) ** 2 + (y / r[1]) ** 2)
    grad = np.sqrt((x / r[0] ** 2) ** 2 + (y / r[1] ** 2) ** 2) / np.maximum(q, _EPS)
    return Field(roi, ((q - 1.0) / np.maximum(grad, _EPS)).astype(np.float32))


def radial_blob(grid: Grid, c, radius_fn, r_max: float) -> Field | None:
    """Star-shaped region: inside where the distance to c is below radius_fn(angle) (mm)."""
    roi = grid.roi((c[0] - r_max, c[1] - r_max), (c[0] + r_max, c[1] + r_max))
    if roi is None:
        return None
    x, y = grid.x[roi] - c[0], grid.y[roi] - c[1]
    return Field(roi, (np.hypot(x, y) - radius_fn(np.arctan2(y, x))).astype(np.float32))


def capsule(grid: Grid, a, b, ra: float, rb: float | None = None) -> Field | None:
    """Segment a-b swept by a radius that runs from ra to rb (a tapered capsule)."""
    rb = ra if rb is None else rb
    pts = np.array([a, b], np.float64)
    roi = grid.roi_of(pts, pad_mm=max(ra, rb) + 2.0)
    if roi is None:
        return None
    d, h = _segment_distance(grid.x[roi], grid.y[roi], pts[0], pts[1])
    return Field(roi, (d - (ra + (rb - ra) * h)).astype(np.float32))


def _segment_distance(x, y, a, b):
    ab = b - a
    h = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / max(float(ab @ ab), _EPS), 0.0, 1.0)
    return np.hypot(x - a[0] - h * ab[0], y - a[1] - h * ab[1]), h


def polyline_distance(x: np.ndarray, y: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned distance to a polyline and the side of it (+1 left of travel in image axes, -1 right)."""
    dist = np.full(x.shape, np.inf, np.float32)
    side = np.ones(x.shape, np.float32)
    for a, b in zip(pts[:-1], pts[1:]):
        d, _ = _segment_distance(x, y, a, b)
        cross = (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0])
        closer = d < dist
        dist = np.where(closer, d, dist)
        side = np.where(closer, np.sign(cross) + (cross == 0), side)
    return dist, side


def _local_px(grid: Grid, pts: np.ndarray, roi: tuple[slice, slice]) -> np.ndarray:
    """World points as fixed-point (x16) pixel coordinates inside a window, for OpenCV drawing."""
    px = grid.to_px(pts) - [roi[1].start, roi[0].start]
    return np.round(px * 16).astype(np.int32)


def _narrow_band(grid: Grid, roi, poly_px: np.ndarray, closed: bool, band_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the window's pixels within about band_mm of a curve (where exact distances matter)."""
    h, w = roi[0].stop - roi[0].start, roi[1].stop - roi[1].start
    near = np.zeros((h, w), np.uint8)
    thick = 2 * int(np.ceil(band_mm / grid.mm_per_px)) + 3
    cv2.polylines(near, [poly_px], closed, 1, thickness=thick, lineType=cv2.LINE_8, shift=4)
    return np.nonzero(near)


def polygon(grid: Grid, pts: np.ndarray, *, band_mm: float = 6.0, roi=None) -> Field | None:
    """Closed polygon (world points in order) as a signed distance, exact within band_mm of the edge.

    Farther away the distance is clamped to +-band_mm: every use (soft edges, cortex, joint
    clearance) looks only that close to an edge.
    """
    pts = np.asarray(pts, np.float64)
    roi = roi or grid.roi_of(pts, band_mm + 2.0)
    if roi is None:
        return None
    poly_px = _local_px(grid, pts, roi)
    h, w = roi[0].stop - roi[0].start, roi[1].stop - roi[1].start
    inside = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inside, [poly_px], 1, lineType=cv2.LINE_8, shift=4)
    sd = np.where(inside > 0, -band_mm, band_mm).astype(np.float32)
    rows, cols = _narrow_band(grid, roi, poly_px, True, band_mm)
    x, y = grid.x[roi][rows, cols], grid.y[roi][rows, cols]
    closed = np.vstack([pts, pts[:1]])
    dist, _ = polyline_distance(x, y, closed)
    ins = np.zeros(x.shape, bool)
    for a, b in zip(closed[:-1], closed[1:]):  # exact even-odd rule where it matters
        crosses = (a[1] > y) != (b[1] > y)
        dy = b[1] - a[1] if b[1] != a[1] else _EPS
        ins ^= crosses & (x < a[0] + (y - a[1]) * (b[0] - a[0]) / dy)
    sd[rows, cols] = np.clip(np.where(ins, -dist, dist), -band_mm, band_mm)
    return Field(roi, sd)


def band(grid: Grid, pts: np.ndarray, half_width: float) -> Field | None:
    """A stroke of constant width along an open polyline (fat planes, ligaments)."""
    pts = np.asarray(pts, np.float64)
    roi = grid.roi_of(pts, pad_mm=half_width + 3.0)
    if roi is None:
        return None
    reach = half_width + 2.0
    rows, cols = _narrow_band(grid, roi, _local_px(grid, pts, roi), False, reach)
    sd = np.full((roi[0].stop - roi[0].start, roi[1].stop - roi[1].start), reach, np.float32)
    dist, _ = polyline_distance(grid.x[roi][rows, cols], grid.y[roi][rows, cols], pts)
    sd[rows, cols] = np.minimum(dist - half_width, reach)
    return Field(roi, sd)


def intersect(f: Field, g_sd: np.ndarray) -> Field:
    """Intersection of a field with another signed distance given on the full grid."""
    return Field(f.roi, np.maximum(f.sd, g_sd[f.roi]))


# --- curves ---------------------------------------------------------------------------------------------------


def spline(ctrl, samples_per_span: int = 8, closed: bool = True) -> np.ndarray:
    """Centripetal-free uniform Catmull-Rom curve through control points."""
    p = np.asarray(ctrl, np.float64)
    if closed:
        p = np.vstack([p[-1:], p, p[:2]])
    else:
        p = np.vstack([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    t = np.linspace(0, 1, samples_per_span, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    if not closed:
        out.append(p[-2:-1])
    return np.vstack(out)


def resample(pts: np.ndarray, step_mm: float) -> np.ndarray:
    """Points along an open polyline at a constant arc-length step."""
    seg = np.hypot(*np.diff(pts, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(np.ceil(s[-1] / step_mm)) + 1)
    q = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(q, s, pts[:, 0]), np.interp(q, s, pts[:, 1])], 1)


def mirror(pts, side: int) -> np.ndarray:
    """Points drawn for the image-right side (+1), mirrored to the image-left side (-1)."""
    p = np.array(pts, np.float64)
    p[:, 0] *= side
    return p


# --- painting --------------------------------------------------------------------------------------------------


class Scene:
    """Two maps painted in layers: water signal and fat amount (fat is weighted by suppression later)."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        n = grid.size
        self.water = np.zeros((n, n), np.float32)
        self.fat = np.zeros((n, n), np.float32)
        self.soft = max(grid.mm_per_px, 0.4)  # partial volume over one pixel

    def paint(self, f: Field | None, value: tuple, *, alpha: np.ndarray | float = 1.0, soft: float | None = None) -> None:
        """Lay a tissue (water, fat) over the shape; value entries may be arrays on the field's window."""
        if f is None:
            return
        a = f.coverage(soft or self.soft) * alpha
        w, fa = value
        for layer, v in ((self.water, w), (self.fat, fa)):
            sub = layer[f.roi]
            sub += a * (v - sub)

    def window(self, f: Field, texture: np.ndarray | None) -> np.ndarray | float:
        """A full-grid texture cut to a field's window (1.0 when there is none)."""
        return 1.0 if texture is None else texture[f.roi]
