"""One virtual patient's series: anatomy x lesions x acquisition, with its truth."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ._acquisition import (Acquisition, acquire, as_stored, bias_field, sample_acquisition, sample_rendering, store,
                           stored_window)
from ._anatomy import Anatomy, render_anatomy, sample_anatomy, sample_patches, sample_tissues
from ._canvas import Canvas, smooth_noise
from ._lesions import (LESION_RANGES, Finding, Lesion, LesionPlan, meets_asas, plan_findings, plan_lesions,
                       render_finding, render_lesion)
from ._profiles import TRAINING_PROFILE, ScannerProfile, get_profile
from ._variants import TRAINING_ANATOMIES, AnatomyVariant, get_anatomy

_MAX_TRIES = 8  # positives are redrawn if rendering clipped a lesion below the ASAS rule
_CHRONIC = ("erosion", "fat")


@dataclass
class Series:
    """A synthetic STIR series through the sacroiliac joints, with its truth.

    ``images`` are in display polarity (bright fluid) whatever the series'
    ``photometric``; `stored` gives what a file holds (inverted for
    MONOCHROME1). SYNTHETIC PHANTOM - not patient data, no diagnostic validity.
    """

    images: np.ndarray  # (slices, H, W) uint8 (8 bits stored) or uint16 (12 or 16 bits), display polarity
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
    window: tuple[float, float] | None  # VOI window (center, width) of `images`; None: none is written
    acquisition: Acquisition = field(repr=False)
    anatomy: str = "average"  # name of the anatomy variant (ANATOMIES)
    bits_stored: int = 12  # 8, 12 or 16
    photometric: str = "MONOCHROME2"  # or "MONOCHROME1": files hold inverted values
    field_strength_t: float = 1.5
    geometry: Anatomy | None = field(default=None, repr=False)  # the drawn patient (sizes in mm, structures)

    @property
    def n_slices(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def stored(self, i: int) -> np.ndarray:
        """Slice ``i`` as a file stores it (inverted for MONOCHROME1)."""
        if self.photometric != "MONOCHROME1":
            return self.images[i]
        return as_stored(self.images[i], self.acquisition.storage)

    @property
    def stored_window(self) -> tuple[float, float] | None:
        """The window as a file records it (for the stored values)."""
        if self.photometric != "MONOCHROME1":
            return self.window
        return stored_window(self.window, self.acquisition.storage)


def as_rng(rng_or_seed) -> np.random.Generator:
    """A numpy Generator from an int seed, a SeedSequence or a Generator (ValueError otherwise)."""
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (int, np.integer, np.random.SeedSequence)):
        return np.random.default_rng(rng_or_seed)
    raise ValueError(f"rng_or_seed={rng_or_seed!r} must be an int seed, a SeedSequence or a numpy Generator.")


def _check_args(slices: int, size: int | None) -> None:
    if not isinstance(slices, (int, np.integer)) or slices < 1:
        raise ValueError(f"slices={slices!r} must be a positive integer (e.g. 12).")
    if size is not None and (not isinstance(size, (int, np.integer)) or not 64 <= size <= 2048):
        raise ValueError(f"size={size!r} must be None (drawn from the profile) or an integer in 64..2048.")


def _pick_anatomy(rng: np.random.Generator, anatomy: str | AnatomyVariant | None) -> AnatomyVariant:
    if anatomy is None:
        return get_anatomy(TRAINING_ANATOMIES[int(rng.integers(len(TRAINING_ANATOMIES)))])
    return get_anatomy(anatomy)


def generate_series(rng_or_seed, *, slices: int = 12, size: int | None = None, positive: bool,
                    profile: str | ScannerProfile = TRAINING_PROFILE, patient_id: str | None = None,
                    anatomy: str | AnatomyVariant | None = None, mimic_rate: float = 1.0,
                    lesion_range: str = "wide", render_variety: float = 0.0,
                    lesion_variety: float = 0.0) -> Series:
    """Render one synthetic STIR series through the sacroiliac joints.

    Args:
        rng_or_seed: int seed, SeedSequence or numpy Generator; the same seed
            gives the same series.
        slices: number of contiguous axial slices, cranial to caudal.
        size: matrix (square); None draws one from the profile (``mixed``:
            192, 224, ..., 640; the presets: 256..512).
        positive: True renders subchondral oedema meeting the ASAS rule;
            False renders normal marrow (mimics occur in both).
        profile: name of a scanner profile in PROFILES (or a ScannerProfile);
            ``mixed`` (the default) is the training distribution, ``vendor-b`` is held out.
        patient_id: identifier to record; None derives one from the generator.
        anatomy: name of an anatomy variant in ANATOMIES; None draws one of
            the training variants (never the held-out ``elderly``).
        mimic_rate: scales the probability of every mimic (0: none, the
            first phase of a training curriculum; 1: the training distribution).
        lesion_range: a name in LESION_RANGES: ``wide`` (the training distribution) or ``large`` (only
            large, bright lesions: a curriculum's warm-up).
        render_variety: the probability, per series, of each other way of rendering normal tissue:
            patchy marrow (red-marrow islands, fatty foci), a truncated k-space instead of a Gaussian
            blur (ringing), motion ghosts along the phase-encode axis. 0 (the default) renders exactly
            as before; a recipe that wants a model to depend less on one way of drawing a pelvis raises it.
        lesion_variety: the probability, per lesion, of another way of drawing its oedema (outline bent
            into a wedge or lobes, tilted off the joint line, margin from ill-defined to sharp, uneven
            signal, brighter core); where it lies, its size and the truth are drawn as before. 0 (the
            default) renders exactly as before.

    Returns:
        A Series with uint8/uint16 images, per-slice and per-series truth.

    Raises:
        ValueError: bad slices, size, profile, anatomy, mimic_rate or seed.

    Example:
        >>> s = generate_series(7, slices=4, size=128, positive=True)
        >>> s.images.shape, s.label
        ((4, 128, 128), 1)
    """
    _check_args(slices, size)
    if not 0.0 <= mimic_rate <= 1.0:
        raise ValueError(f"mimic_rate={mimic_rate!r} must be between 0 (no mimics) and 1 (the training distribution).")
    if lesion_range not in LESION_RANGES:
        raise ValueError(f"lesion_range={lesion_range!r} is not one of {', '.join(LESION_RANGES)}.")
    if not 0.0 <= render_variety <= 1.0:
        raise ValueError(f"render_variety={render_variety!r} must be between 0 (the plain rendering) and 1.")
    if not 0.0 <= lesion_variety <= 1.0:
        raise ValueError(f"lesion_variety={lesion_variety!r} must be between 0 (the plain lesion) and 1.")
    prof = get_profile(profile)
    if anatomy is not None:
        get_anatomy(anatomy)  # a bad name fails before any drawing
    rng = as_rng(rng_or_seed)
    pid = patient_id if patient_id is not None else f"PH{int(rng.integers(10**6)):06d}"
    for _ in range(_MAX_TRIES):
        series = _render(rng, int(slices), size, bool(positive), prof, pid, _pick_anatomy(rng, anatomy),
                         mimic_rate, lesion_range, render_variety, lesion_variety)
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


def _render(rng, n: int, size, positive: bool, prof, pid: str, variant: AnatomyVariant,
            mimic_rate: float = 1.0, lesion_range: str = "wide", render_variety: float = 0.0,
            lesion_variety: float = 0.0) -> Series:
    acq = sample_acquisition(rng, prof, size)
    anatomy = sample_anatomy(rng, variant, sample_tissues(rng, acq.fat_residual, variant))
    plans = plan_lesions(rng, n, positive, lesion_range, lesion_variety)
    findings = plan_findings(rng, n, positive, plans, mimic_rate)
    z, levels = _slice_levels(rng, acq, n)
    canvas = Canvas(acq.size, acq.mm_to_px((0.0, anatomy.sacrum_y - 15.0)), acq.spacing / acq.scale)
    bias = bias_field(rng, acq)
    fat_field = np.maximum(1.0 + acq.fat_inhomogeneity * smooth_noise(rng, acq.size, 3), 0.0)
    if render_variety > 0.0:  # drawn only then: at 0 every series is the one it always was
        acq = replace(acq, rendering=sample_rendering(rng, render_variety, acq.size))
        anatomy = replace(anatomy, marrow_patches=sample_patches(rng, render_variety))
    magnitude = np.empty((n, acq.size, acq.size), np.float32)
    masks = np.zeros((n, acq.size, acq.size), bool)
    lesions: list[list[Lesion]] = []
    drawn: list[list[str]] = []
    for i, t in enumerate(levels):
        les, kinds = _draw_slice(canvas, anatomy, plans, findings, i, t, masks[i], rng, fat_field)
        magnitude[i] = acquire(canvas.img, acq, bias, anatomy.tissues.marrow, rng)
        lesions.append(les)
        drawn.append(kinds)
    images, window = store(magnitude, acq.storage)
    return Series(
        images=images, masks=masks, slice_labels=[int(bool(ls)) for ls in lesions], lesions=lesions,
        findings=drawn, label=int(meets_asas(lesions)), patient_id=pid, profile=prof.name,
        pixel_spacing=(acq.spacing, acq.spacing), slice_thickness=acq.slice_thickness,
        spacing_between_slices=acq.slice_thickness + acq.slice_gap, slice_positions=z, fov_mm=acq.fov_mm,
        window=window, acquisition=acq, anatomy=variant.name, bits_stored=acq.storage.bits,
        photometric=acq.storage.photometric, field_strength_t=acq.field_t, geometry=anatomy,
    )


def _draw_slice(canvas: Canvas, anatomy: Anatomy, plans: list[LesionPlan], findings: list[Finding], i: int,
                t: float, mask_out: np.ndarray, rng, fat_field: np.ndarray) -> tuple[list[Lesion], list[str]]:
    """Draw slice i into the canvas; fill its lesion mask; return its truth."""
    sa = render_anatomy(canvas, anatomy, t, rng, fat_field)
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
