"""The acquisition: pose, field of view, matrix, k-space resolution, coils, noise and 12-bit output.

Blur is not a point-spread kernel but a truncated, apodised k-space (so edges
ring a little, as reconstructed MRI does); shading is the root-sum-of-squares
of a few surface-coil elements mixed with the body coil; noise is complex
Gaussian with a spatially varying g-factor, so the magnitude is Rician and
noisier in the middle of the body than near the coils.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._shapes import Pose

MATRICES = (192, 224, 256, 288, 320, 384, 448, 512)


@dataclass(frozen=True)
class Scan:
    """One series' acquisition (the Series.acquisition of the independent source)."""

    size: int  # reconstructed matrix (square)
    fov_mm: float
    pose: Pose
    slice_thickness: float  # mm
    slice_gap: float  # mm
    k_fraction: tuple[float, float]  # sampled share of k-space (rows = phase, columns = readout)
    apodisation: float  # Tukey taper share of the sampled k-space
    phase_axis: int  # 0: phase encoding anterior-posterior (image rows), 1: left-right
    noise: float  # noise sigma relative to the brightest tissue
    g_factor: float  # extra noise in the centre of the field (parallel imaging)
    coils: tuple[tuple[float, float], ...]  # surface coil centres (mm, image coordinates)
    coil_width: float  # mm
    body_coil: float  # share of the homogeneous body coil in the shading
    normalise: float  # exponent left on the surface-coil profile after the scanner's intensity correction
    b1: tuple[float, float, float]  # fat-suppression variation: amplitude, x and y gradient directions
    ghost: float  # relative amplitude of the motion ghost along the phase axis
    level: float  # 12-bit value of the brightest tissue (99.8th percentile of the series)
    offset: float  # reconstruction offset added to every pixel
    extent_mm: float  # craniocaudal span of the joints the stack is placed on
    centre_mm: float  # where the middle slice sits along that span
    timing: tuple[float, float, float]  # STIR repetition, echo and inversion time (ms)

    @property
    def spacing(self) -> float:
        return self.fov_mm / self.size


def sample_scan(rng: np.random.Generator, size: int | None, timing: tuple[float, float, float]) -> Scan:
    """Draw an acquisition; ``size`` fixes the matrix, None draws one of MATRICES; timing is the sequence's."""
    n = int(size) if size is not None else int(rng.choice(MATRICES))
    fov = float(rng.uniform(230, 380))
    pose = Pose(theta=float(np.deg2rad(rng.uniform(-10, 10))), shift=(float(rng.uniform(-15, 15)),
                float(rng.uniform(-20, 12))), scale=float(rng.uniform(0.88, 1.12)))
    phase_axis = int(rng.random() < 0.7)  # 1: phase encoded left-right, as most axial pelvis protocols do
    n_coils = int(rng.integers(4, 9))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n_coils))
    ring = rng.uniform(0.45, 0.6) * fov
    coils = tuple((float(ring * np.cos(a)), float(ring * 0.7 * np.sin(a))) for a in ang)
    return Scan(
        size=n, fov_mm=fov, pose=pose, slice_thickness=float(rng.uniform(3.0, 6.0)),
        slice_gap=float(rng.choice([0.0, 0.3, 0.5, 1.0, 1.5])),
        k_fraction=(float(rng.uniform(0.5, 0.9)), float(rng.uniform(0.65, 1.0))),
        apodisation=float(rng.uniform(0.1, 0.6)), phase_axis=phase_axis, noise=float(rng.uniform(0.012, 0.05)),
        g_factor=float(rng.uniform(0.0, 0.8)), coils=coils, coil_width=float(rng.uniform(80, 170)),
        body_coil=float(rng.uniform(0.25, 0.7)), normalise=float(rng.uniform(0.3, 0.8)),
        b1=(float(rng.uniform(0.0, 0.12)), *rng.normal(0, 1, 2).tolist()),
        ghost=float(rng.uniform(0.0, 0.05)) if rng.random() < 0.6 else 0.0, level=float(rng.uniform(2200, 3900)),
        offset=float(rng.uniform(0, 40)), extent_mm=float(rng.uniform(48, 85)), centre_mm=float(rng.uniform(-8, 8)),
        timing=timing,
    )


def _image_coords(scan: Scan) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(scan.size, dtype=np.float32) + 0.5 - scan.size / 2) * scan.spacing
    return np.meshgrid(c, c)


def ti_factor(scan: Scan) -> np.ndarray:
    """Effective inversion time over nominal, per pixel: B1 varies smoothly across the field."""
    u, v = _image_coords(scan)
    amp, gx, gy = scan.b1
    ramp = (gx * u + gy * v) / (scan.fov_mm / 2) / max(np.hypot(gx, gy), 1e-6)
    bowl = (u ** 2 + v ** 2) / (scan.fov_mm / 2) ** 2
    return (1.0 + amp * (0.6 * ramp + 0.8 * bowl - 0.3)).astype(np.float32)


def shading(scan: Scan) -> np.ndarray:
    """Receive sensitivity: root-sum-of-squares of the surface coils mixed with the body coil."""
    u, v = _image_coords(scan)
    rss = np.zeros_like(u)
    for cx, cy in scan.coils:
        rss += np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / scan.coil_width ** 2)
    rss = np.sqrt(rss) ** scan.normalise  # the scanner's intensity correction leaves part of the profile
    rss /= np.percentile(rss, 60)
    return (scan.body_coil + (1 - scan.body_coil) * rss).astype(np.float32)


def _k_window(n: int, fraction: float, taper: float) -> np.ndarray:
    """Sampled and apodised share of one k-space axis, in FFT order."""
    f = np.abs(np.fft.fftfreq(n))  # cycles per pixel, 0..0.5
    edge = 0.5 * fraction
    x = np.clip(f / edge, 0.0, None)
    w = np.where(x <= 1 - taper, 1.0, 0.5 * (1 + np.cos(np.pi * (x - (1 - taper)) / max(taper, 1e-6))))
    return np.where(x <= 1, w, 0.0).astype(np.float32)


def reconstruct(signal: np.ndarray, scan: Scan) -> np.ndarray:
    """Band-limit a slice's true signal as the sampled, apodised k-space does; add the motion ghost."""
    wr = _k_window(scan.size, scan.k_fraction[0] if scan.phase_axis == 0 else scan.k_fraction[1], scan.apodisation)
    wc = _k_window(scan.size, scan.k_fraction[1] if scan.phase_axis == 0 else scan.k_fraction[0], scan.apodisation)
    k = np.fft.fft2(signal) * (wr[:, None] * wc[None, :])
    img = np.fft.ifft2(k).real.astype(np.float32)
    if scan.ghost > 0:
        shift = scan.size // 4
        img = img + scan.ghost * (np.roll(img, shift, scan.phase_axis) + np.roll(img, -shift, scan.phase_axis)) / 2
    return img


def add_noise(img: np.ndarray, scan: Scan, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Complex Gaussian noise with a g-factor map; the magnitude is Rician."""
    u, v = _image_coords(scan)
    g = 1.0 + scan.g_factor * np.exp(-(u ** 2 + v ** 2) / (2 * (0.25 * scan.fov_mm) ** 2))
    s = (sigma * g).astype(np.float32)
    re = img + s * rng.standard_normal(img.shape, dtype=np.float32)
    im = s * rng.standard_normal(img.shape, dtype=np.float32)
    return np.hypot(re, im)


def to_12bit(stack: np.ndarray, scan: Scan) -> np.ndarray:
    """Scale a series (float magnitudes) so its brightest tissue sits at scan.level, and store 12 bits."""
    ref = float(np.percentile(stack[:, ::3, ::3], 99.8))
    out = stack * (scan.level / max(ref, 1e-6)) + scan.offset
    return np.clip(np.rint(out), 0, 4095).astype(np.uint16)
