"""The virtual scanner: pose, field of view, matrix, blur, contrast, bias, noise.

Everything a scanner does to the ideal STIR image before it is stored as
12-bit integers. Values come from a `ScannerProfile`'s ranges, drawn once per
series; smooth fields are drawn on coarse grids and upsampled for speed.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ._canvas import smooth_noise
from ._profiles import ScannerProfile

MATRICES = tuple(range(256, 513, 32))  # common reconstruction matrices
MAX_12BIT = 4095


@dataclass(frozen=True)
class Acquisition:
    """Acquisition parameters of one series."""

    size: int  # matrix (square)
    fov_mm: float
    rotation_deg: float
    shift_mm: tuple[float, float]
    scale: float  # patient size relative to the drawn anatomy
    slice_thickness: float
    slice_gap: float
    gain: float
    noise: float
    bias: float
    contrast: float
    gamma: float
    fat_residual: float
    psf_mm: float

    @property
    def spacing(self) -> float:
        """Pixel spacing in mm (square pixels)."""
        return self.fov_mm / self.size

    def mm_to_px(self, centre_mm: tuple[float, float]) -> np.ndarray:
        """2x3 affine from patient mm to pixels, centred on ``centre_mm``."""
        th = np.radians(self.rotation_deg)
        k = self.scale / self.spacing
        rot = k * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        origin = np.asarray(centre_mm) + self.shift_mm
        offset = self.size / 2 - rot @ origin
        return np.hstack([rot, offset[:, None]])


def sample_acquisition(rng: np.random.Generator, profile: ScannerProfile, size: int | None) -> Acquisition:
    """Draw one series' acquisition from a profile; size None draws 256..512."""
    u = rng.uniform
    thickness = float(rng.choice([3.0, 3.5, 4.0, 4.5, 5.0]))
    return Acquisition(
        size=int(rng.choice(MATRICES)) if size is None else int(size),
        fov_mm=u(240, 360), rotation_deg=u(-8, 8), shift_mm=(u(-12, 12), u(-12, 12)), scale=u(0.9, 1.1),
        slice_thickness=thickness, slice_gap=float(rng.choice([0.0, 0.3, 0.5, 1.0])),
        gain=u(*profile.gain), noise=u(*profile.noise), bias=u(*profile.bias), contrast=u(*profile.contrast),
        gamma=u(*profile.gamma), fat_residual=u(*profile.fat_residual), psf_mm=u(*profile.psf_mm),
    )


def bias_field(rng: np.random.Generator, acq: Acquisition) -> np.ndarray:
    """Smooth multiplicative coil sensitivity (size, size), mean about 1.

    A posterior surface coil makes the back of the pelvis brighter than the
    front; a coarse random field adds the rest of the inhomogeneity.
    """
    n = acq.size
    ramp = np.linspace(-1.0, 1.0, n, dtype=np.float32)[:, None] * rng.uniform(0.3, 1.0)
    tilt = np.linspace(-1.0, 1.0, n, dtype=np.float32)[None, :] * rng.uniform(-0.4, 0.4)
    log_field = acq.bias * (ramp + tilt + 0.6 * smooth_noise(rng, n, 4))
    return np.exp(log_field - log_field.mean()).astype(np.float32)


def acquire(ideal: np.ndarray, acq: Acquisition, bias: np.ndarray, level: float,
            rng: np.random.Generator) -> np.ndarray:
    """Turn an ideal STIR slice into stored 12-bit values (uint16).

    Args:
        ideal: float32 (H, W) ideal intensities, fluid about 1.0.
        acq: the series' acquisition.
        bias: coil field from `bias_field`.
        level: intensity that contrast compression pivots around (marrow).
        rng: noise source.

    Returns:
        uint16 (H, W) array with values in 0..4095.
    """
    sigma = acq.psf_mm / acq.spacing
    img = cv2.GaussianBlur(ideal, (0, 0), sigma) if sigma > 0.3 else ideal.copy()
    img = np.maximum(level + acq.contrast * (img - level), 0.0)
    img = cv2.pow(img, acq.gamma)
    scale = np.float32(acq.gain * MAX_12BIT * rng.uniform(0.97, 1.03))  # slice-to-slice gain drift
    signal = img * bias * scale
    noise = rng.standard_normal((2, *img.shape), dtype=np.float32) * np.float32(acq.noise * acq.gain * MAX_12BIT)
    mag = cv2.magnitude(signal + noise[0], noise[1])  # Rician: magnitude of a noisy complex signal
    return np.clip(np.rint(mag), 0, MAX_12BIT).astype(np.uint16)
