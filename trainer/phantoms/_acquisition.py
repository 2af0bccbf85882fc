"""The virtual scanner: pose, field of view, matrix, blur, contrast, bias, noise, storage.

Everything a scanner does to the ideal STIR image before it is stored as
integers. Values come from a `ScannerProfile`'s ranges, drawn once per
series; smooth fields are drawn on coarse grids and upsampled for speed.
`acquire` works in 12-bit units (fluid about ``gain * 4095``); `store` then
writes the series as the bit depth, window and photometric interpretation
the series drew (see `Storage`).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ._canvas import smooth_noise
from ._profiles import ScannerProfile

MAX_12BIT = 4095
PHOTOMETRIC = ("MONOCHROME2", "MONOCHROME1")


@dataclass(frozen=True)
class Storage:
    """How a series is stored: bit depth, VOI window, polarity.

    ``bits`` 8 is an 8-bit export: ``export8`` "full" maps a window of the
    12-bit values onto 0..255, "shift" keeps the top 8 of 12 bits (the
    image then uses only part of the range, as an un-windowed export does).
    ``bits`` 16 multiplies the 12-bit scale by ``scale16`` (full 16-bit range).
    """

    bits: int  # 8, 12 or 16 stored bits (8 -> uint8 arrays, else uint16)
    photometric: str  # "MONOCHROME2", or "MONOCHROME1": stored values inverted
    windowed: bool  # a VOI window is written
    export8: str = ""  # "full" or "shift" for 8-bit exports
    scale16: float = 1.0

    @property
    def max_value(self) -> int:
        return (1 << self.bits) - 1

    @property
    def dtype(self) -> type:
        return np.uint8 if self.bits == 8 else np.uint16


@dataclass(frozen=True)
class Rendering:
    """Ways a scanner's image departs from the plain model, drawn per series with ``render_variety``.

    ``kspace``: the point-spread function of a truncated k-space instead of a Gaussian blur (fraction of
    the frequencies kept along the frequency- and the phase-encode axis): ringing beside sharp edges
    (Gibbs), as when a smaller acquired matrix is zero-filled. ``ghosts``: motion ghosts along the
    phase-encode axis (axis, spacing in pixels, relative amplitude of the first ghost), as breathing and
    bowel motion cast them: faint copies of bright fluid that can fall on bone.
    """

    kspace: tuple[float, float] | None = None
    ghosts: tuple[int, float, float] | None = None


PLAIN = Rendering()


def sample_rendering(rng: np.random.Generator, variety: float, size: int) -> Rendering:
    """Each departure with probability ``variety``; 0 draws nothing (the random stream stays as it was)."""
    if variety <= 0.0:
        return PLAIN
    kspace = ghosts = None
    if rng.random() < variety:
        kept = rng.uniform(0.3, 0.75)
        kspace = (kept, kept * rng.uniform(0.55, 1.0))
    if rng.random() < variety:
        ghosts = (int(rng.integers(2)), float(size / rng.uniform(2.5, 8.0)), rng.uniform(0.02, 0.09))
    return Rendering(kspace, ghosts)


def kspace_truncate(img: np.ndarray, kept: tuple[float, float]) -> np.ndarray:
    """``img`` with only the central ``kept`` fraction of k-space along (x, y): sinc ringing at edges."""
    h, w = img.shape
    spectrum = np.fft.rfft2(img)
    fy = np.abs(np.fft.fftfreq(h))[:, None]  # cycles per pixel, 0..0.5
    fx = np.fft.rfftfreq(w)[None, :]
    spectrum *= (fx <= 0.5 * kept[0]) & (fy <= 0.5 * kept[1])
    return np.fft.irfft2(spectrum, s=(h, w)).astype(np.float32)


def add_ghosts(img: np.ndarray, ghosts: tuple[int, float, float]) -> np.ndarray:
    """Faint shifted copies of ``img`` along one axis, halving with each further copy (wrapping round)."""
    axis, spacing, amplitude = ghosts
    out = img.copy()
    for k in (1, 2):
        step = int(round(k * spacing))
        out += (amplitude / k) * (np.roll(img, step, axis=axis) + np.roll(img, -step, axis=axis))
    return out


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
    field_t: float  # field strength written to DICOM
    gain: float
    noise: float
    bias: float
    contrast: float
    gamma: float
    fat_residual: float
    fat_inhomogeneity: float
    psf_mm: float
    storage: Storage
    rendering: Rendering = PLAIN

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
    """Draw one series' acquisition from a profile; size None draws from the profile's matrix range.

    Field strength is drawn log-uniformly; noise and blur follow it loosely
    (high field: less noise, finer resolution), every other knob on its own.
    """
    u = rng.uniform
    q = u()
    lo_t, hi_t = profile.field_strength_t
    follow = [float(np.clip(q + rng.normal(0, 0.25), 0, 1)) for _ in range(2)]
    thickness = float(rng.choice([3.0, 3.5, 4.0, 4.5, 5.0]))
    return Acquisition(
        size=int(rng.choice(np.arange(profile.matrix[0], profile.matrix[1] + 1, 32))) if size is None else int(size),
        fov_mm=u(240, 360), rotation_deg=u(-8, 8), shift_mm=(u(-12, 12), u(-12, 12)), scale=u(0.9, 1.1),
        slice_thickness=thickness, slice_gap=float(rng.choice([0.0, 0.3, 0.5, 1.0])),
        field_t=round(float(lo_t * (hi_t / lo_t) ** q), 2),
        gain=u(*profile.gain), noise=_lerp(profile.noise[::-1], follow[0]), bias=u(*profile.bias),
        contrast=u(*profile.contrast), gamma=u(*profile.gamma), fat_residual=u(*profile.fat_residual),
        fat_inhomogeneity=u(*profile.fat_inhomogeneity), psf_mm=_lerp(profile.psf_mm[::-1], follow[1]),
        storage=_sample_storage(rng, profile),
    )


def _lerp(bounds: tuple[float, float], f: float) -> float:
    return float(bounds[0] + (bounds[1] - bounds[0]) * f)


def _sample_storage(rng: np.random.Generator, profile: ScannerProfile) -> Storage:
    depths, probs = zip(*profile.bits)
    bits = int(rng.choice(depths, p=np.asarray(probs) / sum(probs)))
    return Storage(
        bits=bits, photometric=PHOTOMETRIC[int(rng.random() < profile.mono1_p)],
        windowed=bool(rng.random() < profile.window_p),
        export8=("full" if rng.random() < 0.5 else "shift") if bits == 8 else "",
        scale16=float(rng.uniform(2.0, 15.0)) if bits == 16 else 1.0,
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
    """Turn an ideal STIR slice into a magnitude image in 12-bit units (float32, not yet stored).

    Args:
        ideal: float32 (H, W) ideal intensities, fluid about 1.0.
        acq: the series' acquisition.
        bias: coil field from `bias_field`.
        level: intensity that contrast compression pivots around (marrow).
        rng: noise source.

    Returns:
        float32 (H, W) magnitude, fluid about ``gain * 4095``; `store` makes integers of it.
    """
    sigma = acq.psf_mm / acq.spacing
    if acq.rendering.kspace is not None:
        img = kspace_truncate(ideal, acq.rendering.kspace)
    else:
        img = cv2.GaussianBlur(ideal, (0, 0), sigma) if sigma > 0.3 else ideal.copy()
    if acq.rendering.ghosts is not None:
        img = add_ghosts(img, acq.rendering.ghosts)
    img = np.maximum(level + acq.contrast * (img - level), 0.0)
    img = cv2.pow(img, acq.gamma)
    scale = np.float32(acq.gain * MAX_12BIT * rng.uniform(0.97, 1.03))  # slice-to-slice gain drift
    signal = img * bias * scale
    noise = rng.standard_normal((2, *img.shape), dtype=np.float32) * np.float32(acq.noise * acq.gain * MAX_12BIT)
    return cv2.magnitude(signal + noise[0], noise[1])  # Rician: magnitude of a noisy complex signal


def store(magnitude: np.ndarray, st: Storage) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Stored integers of a series (display polarity) and its VOI window (None: none written).

    Args:
        magnitude: float32 (slices, H, W) from `acquire`, in 12-bit units.
        st: the series' storage.

    Returns:
        uint8 (8 bits) or uint16 (12/16 bits) images, MONOCHROME2 polarity,
        and the window ``(center, width)`` in the same units, or None.
    """
    twelve = np.clip(np.rint(magnitude), 0, MAX_12BIT)
    if st.bits == 12:
        images = twelve.astype(np.uint16)
    elif st.bits == 16:
        images = np.clip(np.rint(magnitude * np.float32(st.scale16)), 0, st.max_value).astype(np.uint16)
    elif st.export8 == "shift":
        images = (twelve.astype(np.uint16) >> 4).astype(np.uint8)
    else:
        lo, hi = np.percentile(twelve[:, ::4, ::4], [0.5, 99.8])
        images = np.clip(np.rint((twelve - lo) * (255.0 / max(hi - lo, 1.0))), 0, 255).astype(np.uint8)
    if not st.windowed:
        return images, None
    if st.bits == 8 and st.export8 == "full":
        return images, (128.0, 256.0)  # the identity window of a full-range 8-bit image
    return images, _window(images)


def _window(images: np.ndarray) -> tuple[float, float]:
    """Display window from robust percentiles of the series."""
    lo, hi = np.percentile(images[:, ::4, ::4], [1.0, 99.5])
    return float(round((lo + hi) / 2)), float(max(1.0, round(hi - lo)))


def as_stored(image: np.ndarray, st: Storage) -> np.ndarray:
    """The values a file holds for a display-polarity image: inverted for MONOCHROME1."""
    if st.photometric == "MONOCHROME1":
        return (st.max_value - image.astype(np.int64)).astype(image.dtype)
    return image


def stored_window(window: tuple[float, float] | None, st: Storage) -> tuple[float, float] | None:
    """The window of the stored values: for MONOCHROME1 the centre mirrors so the display is unchanged."""
    if window is None or st.photometric != "MONOCHROME1":
        return window
    return float(st.max_value + 1 - window[0]), window[1]
