"""Scanner profiles: the acquisition a phantom series is drawn from.

Each knob is a ``(low, high)`` range; every series draws its own value, so one
profile already spans a spread of scanners. ``mixed`` is the training
distribution: field strength, SNR, blur, bias, contrast, fat suppression,
matrix, stored bit depth, VOI window and photometric interpretation all vary
continuously or at random. The named presets (``default``, ``low-field``,
``high-snr``) are narrow corners of it with the classic storage (12 bits in
16, a window, MONOCHROME2). ``vendor-b`` lies outside it on purpose (weaker
fat suppression and a brighter response than ``mixed`` ever draws): it is the
held-out profile for out-of-distribution tests.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

Range = tuple[float, float]


@dataclass(frozen=True)
class ScannerProfile:
    """Acquisition settings of one virtual scanner (all synthetic).

    Intensities are in units of the ideal STIR image, where fluid is about 1.0.
    """

    name: str
    description: str
    gain: Range  # 12-bit value of ideal intensity 1.0, as a fraction of 4095
    noise: Range  # Gaussian sigma of each complex channel, relative to intensity 1.0
    bias: Range  # strength of the smooth multiplicative coil field (log-scale)
    contrast: Range  # tissue contrast kept around the marrow level (1 = full)
    gamma: Range  # non-linear intensity response (1 = linear)
    fat_residual: Range  # fat signal left by imperfect inversion (0 = perfect STIR)
    psf_mm: Range  # Gaussian blur sigma in mm (resolution, partial volume)
    field_strength_t: Range  # drawn log-uniformly; high field goes with low noise and little blur
    fat_inhomogeneity: Range = (0.0, 0.3)  # spatial variation of the fat residual (relative)
    matrix: Range = (256, 512)  # reconstruction matrix, drawn in steps of 32
    bits: tuple[tuple[int, float], ...] = ((12, 1.0),)  # stored bit depth and its probability
    window_p: float = 1.0  # probability that a VOI window is written
    mono1_p: float = 0.0  # probability of MONOCHROME1 (stored values inverted)
    held_out: bool = False  # never part of the training distribution


PROFILES: dict[str, ScannerProfile] = {
    p.name: p
    for p in (
        ScannerProfile(
            name="mixed",
            description="training distribution: 0.25-3 T, 8/12/16-bit, with or without window, some MONOCHROME1",
            gain=(0.25, 0.95), noise=(0.01, 0.07), bias=(0.1, 0.75), contrast=(0.45, 1.1), gamma=(0.8, 1.3),
            fat_residual=(0.0, 0.12), psf_mm=(0.35, 1.4), field_strength_t=(0.25, 3.0), fat_inhomogeneity=(0.0, 0.6),
            matrix=(192, 640), bits=((8, 0.2), (12, 0.5), (16, 0.3)), window_p=0.75, mono1_p=0.08,
        ),
        ScannerProfile(
            name="default",
            description="1.5 T-like, mixed SNR and contrast, 12-bit (the classic preset)",
            gain=(0.45, 0.85), noise=(0.02, 0.055), bias=(0.15, 0.5),
            contrast=(0.55, 1.0), gamma=(0.85, 1.2), fat_residual=(0.0, 0.08),
            psf_mm=(0.5, 1.0), field_strength_t=(1.5, 1.5),
        ),
        ScannerProfile(
            name="low-field",
            description="0.3-0.5 T-like: noisy, soft, flat contrast",
            gain=(0.25, 0.5), noise=(0.04, 0.065), bias=(0.1, 0.3),
            contrast=(0.45, 0.8), gamma=(0.9, 1.3), fat_residual=(0.04, 0.12),
            psf_mm=(0.9, 1.4), field_strength_t=(0.3, 0.5),
        ),
        ScannerProfile(
            name="high-snr",
            description="3 T-like with a phased-array coil: clean, sharp, strong bias",
            gain=(0.6, 0.95), noise=(0.01, 0.025), bias=(0.35, 0.7),
            contrast=(0.8, 1.1), gamma=(0.8, 1.1), fat_residual=(0.0, 0.04),
            psf_mm=(0.35, 0.6), field_strength_t=(3.0, 3.0),
        ),
        ScannerProfile(
            name="vendor-b",
            description="HELD OUT: another vendor's STIR, weak fat suppression, bright response, 16-bit",
            gain=(0.7, 0.95), noise=(0.025, 0.05), bias=(0.2, 0.45),
            contrast=(0.6, 0.9), gamma=(0.65, 0.78), fat_residual=(0.13, 0.22),
            psf_mm=(0.5, 0.9), field_strength_t=(1.5, 1.5), fat_inhomogeneity=(0.3, 0.7),
            bits=((16, 1.0),), held_out=True,
        ),
    )
}

#: The profile generate_series and write_dataset use unless told otherwise.
TRAINING_PROFILE = "mixed"


def get_profile(name: str | ScannerProfile) -> ScannerProfile:
    """Look a profile up by name (a ScannerProfile passes through).

    Raises:
        ValueError: the name is not in PROFILES; the message lists valid names
            and the closest match.
    """
    if isinstance(name, ScannerProfile):
        return name
    if name in PROFILES:
        return PROFILES[name]
    close = difflib.get_close_matches(str(name), PROFILES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown scanner profile {name!r}. Valid profiles are {sorted(PROFILES)}.{hint}")
