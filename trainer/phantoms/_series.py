"""One virtual patient's series: anatomy x lesions x acquisition, with its truth."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._acquisition import Acquisition, acquire, bias_field, sample_acquisition
from ._anatomy import Anatomy, render_anatomy, sample_anatomy, sample_tissues
from ._canvas import Canvas
from ._lesions import Finding, Lesion, LesionPlan, meets_asas, plan_findings, plan_lesions, render_finding, render_lesion
from ._profiles import get_profile

_MAX_TRIES = 8  # positives are redrawn if rendering clipped a lesion below the ASAS rule
_CHRONIC = ("erosion", "fat")


@dataclass
class Series:
    """A synthetic STIR series through the sacroiliac joints, with its truth.

    SYNTHETIC PHANTOM - not patient data, no diagnostic validity.
    """

    images: np.ndarray  # (slices, H, W) uint16, 12-bit values
    masks: np.ndarray  # (slices, H, W) bool, union of the lesions on each slice
    slice_labels: list[int]  # 1 where an oedema lesion is on the slice
    lesions: list[list[Lesion]]  # per slice, the lesions seen on it
    findings: list[list[str]]  # per slice, the non-lesion findings drawn (mimics etc.)
    label: int  # 1 if the series meets the ASAS rule for active sacroiliitis
    patient_id: str
    profile: str
    pixel_spacing: tuple[float, float]  # (row, column) mm
    slice_thickness: float  # mm
    spacing_between_slices: float  # mm, centre to centre
    slice_positions: list[float]  # z of each slice (mm, increasing cranially)
    fov_mm: float
    window: tuple[float, float]  # suggested display (center, width)
    acquisition: Acquisition = field(repr=False)

    @property
    def n_slices(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


def _as_rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (int, np.integer, np.random.SeedSequence)):
        return np.random.default_rng(rng_or_seed)
    raise ValueError(f"rng_or_seed={rng_or_seed!r} must be an int seed, a SeedSequence or a numpy Generator.")


def _check_args(slices: int, size: int | None) -> None:
    if not isinstance(slices, (int, np.integer)) or slices < 1:
        raise ValueError(f"slices={slices!r} must be a positive integer (e.g. 12).")
    if size is not None and (not isinstance(size, (int, np.integer)) or not 64 <= size <= 2048):
        raise ValueError(f"size={size!r} must be None (random 256..512) or an integer in 64..2048.")


def generate_series(rng_or_seed, *, slices: int = 12, size: int | None = None, positive: bool,
                    profile: str = "default", patient_id: str | None = None) -> Series:
    """Render one synthetic STIR series through the sacroiliac joints.

    Args:
        rng_or_seed: int seed, SeedSequence or numpy Generator; the same seed
            gives the same series.
        slices: number of contiguous axial slices, cranial to caudal.
        size: matrix (square); None draws one of 256, 288, ..., 512.
        positive: True renders subchondral oedema meeting the ASAS rule;
            False renders normal marrow (mimics occur in both).
        profile: name of a scanner profile in PROFILES.
        patient_id: identifier to record; None derives one from the generator.

    Returns:
        A Series with 12-bit uint16 images, per-slice and per-series truth.

    Raises:
        ValueError: bad slices, size, profile or seed.

    Example:
        >>> s = generate_series(7, slices=4, size=128, positive=True)
        >>> s.images.shape, s.label
        ((4, 128, 128), 1)
    """
    _check_args(slices, size)
    prof = get_profile(profile)
    rng = _as_rng(rng_or_seed)
    pid = patient_id if patient_id is not None else f"PH{int(rng.integers(10**6)):06d}"
    for _ in range(_MAX_TRIES):
        series = _render(rng, int(slices), size, bool(positive), prof, pid)
        if bool(series.label) == bool(positive):
            return series
    raise RuntimeError(f"could not render an ASAS-positive series in {_MAX_TRIES} tries (size={size})")


def _slice_levels(rng, acq: Acquisition, n: int) -> tuple[list[float], list[float]]:
    """z of each slice (cranial first) and its level t within the joints."""
    step = acq.slice_thickness + acq.slice_gap
    z = [round((n - 1) / 2 * step - i * step, 3) for i in range(n)]
    extent, centre = rng.uniform(55, 75), rng.uniform(-5, 5)
    t = [float(np.clip(0.5 - (zi - centre) / extent, 0.02, 0.98)) for zi in z]
    return z, t


def _render(rng, n: int, size, positive: bool, prof, pid: str) -> Series:
    acq = sample_acquisition(rng, prof, size)
    anatomy = sample_anatomy(rng, sample_tissues(rng, acq.fat_residual))
    plans = plan_lesions(rng, n, positive)
    findings = plan_findings(rng, n, positive, plans)
    z, levels = _slice_levels(rng, acq, n)
    canvas = Canvas(acq.size, acq.mm_to_px((0.0, anatomy.sacrum_y - 15.0)), acq.spacing / acq.scale)
    bias = bias_field(rng, acq)
    images = np.empty((n, acq.size, acq.size), np.uint16)
    masks = np.zeros((n, acq.size, acq.size), bool)
    lesions: list[list[Lesion]] = []
    drawn: list[list[str]] = []
    for i, t in enumerate(levels):
        les, kinds = _draw_slice(canvas, anatomy, plans, findings, i, t, masks[i], rng)
        images[i] = acquire(canvas.img, acq, bias, anatomy.tissues.marrow, rng)
        lesions.append(les)
        drawn.append(kinds)
    return Series(
        images=images, masks=masks, slice_labels=[int(bool(ls)) for ls in lesions], lesions=lesions,
        findings=drawn, label=int(meets_asas(lesions)), patient_id=pid, profile=prof.name,
        pixel_spacing=(acq.spacing, acq.spacing), slice_thickness=acq.slice_thickness,
        spacing_between_slices=acq.slice_thickness + acq.slice_gap, slice_positions=z, fov_mm=acq.fov_mm,
        window=_window(images), acquisition=acq,
    )


def _draw_slice(canvas: Canvas, anatomy: Anatomy, plans: list[LesionPlan], findings: list[Finding], i: int,
                t: float, mask_out: np.ndarray, rng) -> tuple[list[Lesion], list[str]]:
    """Draw slice i into the canvas; fill its lesion mask; return its truth."""
    sa = render_anatomy(canvas, anatomy, t, rng)
    here = [fd for fd in findings if i in fd.slices]
    # Mimics first, so a lesion's signal is never painted over; chronic signs
    # of sacroiliitis last, since they reshape the joint margin and marrow.
    kinds = [render_finding(canvas, sa, fd, anatomy.tissues, rng) for fd in here if fd.kind not in _CHRONIC]
    lesions = []
    for plan in plans:
        if plan.covers(i):
            mask, lesion = render_lesion(canvas, sa, plan, i, rng)
            if lesion is not None:
                mask_out |= mask
                lesions.append(lesion)
    kinds += [render_finding(canvas, sa, fd, anatomy.tissues, rng) for fd in here if fd.kind in _CHRONIC]
    return lesions, kinds


def _window(images: np.ndarray) -> tuple[float, float]:
    """Display window from robust percentiles of the series."""
    lo, hi = np.percentile(images[:, ::4, ::4], [1.0, 99.5])
    return float(round((lo + hi) / 2)), float(max(1.0, round(hi - lo)))
