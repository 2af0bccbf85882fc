"""One virtual patient's series from the independent source, with its truth."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asinfer.trainer.phantoms import Lesion, Series, as_rng, meets_asas

from ._oedema import plan_mimics, plan_oedema, render_mimic, render_oedema
from ._pelvis import Level, Textures, draw_level, sample_pelvis
from ._scanner import Scan, add_noise, reconstruct, sample_scan, shading, ti_factor, to_12bit
from ._shapes import Grid, Scene, polyline_distance
from ._stir import sample_sequence

PROFILE = "independent"  # Series.profile of every series from this source
_MAX_TRIES = 8  # a positive whose lesions rendered too small for the ASAS rule is drawn again


@dataclass(frozen=True)
class SliceMaps:
    """Where the bones and joints of one slice are, for checking the truth (not needed to use a series).

    ``marrow``: 0 elsewhere, 1 sacral marrow, 2 marrow of the ilium on the image left (patient right),
    3 of the ilium on the image right (patient left). ``joint_mm``: distance of each pixel to the nearer
    joint line, in millimetres of the image.
    """

    marrow: np.ndarray  # (H, W) uint8
    joint_mm: np.ndarray  # (H, W) float32


def _check(slices, size) -> None:
    if not isinstance(slices, (int, np.integer)) or isinstance(slices, bool) or slices < 1:
        raise ValueError(f"slices={slices!r} must be a positive integer (e.g. 12).")
    if size is not None and (not isinstance(size, (int, np.integer)) or not 64 <= size <= 2048):
        raise ValueError(f"size={size!r} must be None (random 192..512) or an integer in 64..2048.")


def generate_series(rng_or_seed, *, slices: int = 12, size: int | None = None, positive: bool,
                    patient_id: str | None = None) -> Series:
    """Render one axial STIR series through the sacroiliac joints with the independent (test-only) drawing.

    SYNTHETIC PHANTOM - independent test source - never use it for training.

    Args:
        rng_or_seed: int seed, SeedSequence or numpy Generator; the same seed gives the same series.
        slices: contiguous axial slices, cranial first.
        size: square matrix; None draws one of 192, 224, 256, 288, 320, 384, 448, 512.
        positive: True draws subchondral oedema that meets the ASAS rule; False draws none
            (mimics occur in both).
        patient_id: identifier to record; None derives one from the generator.

    Returns:
        An ``asinfer.trainer.phantoms.Series`` with profile "independent" and a ``Scan`` as acquisition.

    Raises:
        ValueError: bad slices, size or seed.

    Example:
        >>> s = generate_series(3, slices=4, size=128, positive=True)
        >>> s.images.shape, s.label, s.profile
        ((4, 128, 128), 1, 'independent')
    """
    return generate_with_maps(rng_or_seed, slices=slices, size=size, positive=positive, patient_id=patient_id,
                              maps=False)[0]


def generate_with_maps(rng_or_seed, *, slices: int = 12, size: int | None = None, positive: bool,
                       patient_id: str | None = None, maps: bool = True) -> tuple[Series, list[SliceMaps]]:
    """Like :func:`generate_series` (the same series for the same seed), plus each slice's bone and joint maps."""
    _check(slices, size)
    rng = as_rng(rng_or_seed)
    pid = patient_id if patient_id is not None else f"IND{int(rng.integers(10**6)):06d}"
    for _ in range(_MAX_TRIES):
        series, slice_maps = _render(rng, int(slices), size, bool(positive), pid, maps)
        if bool(series.label) == bool(positive):
            return series, slice_maps
    raise RuntimeError(f"could not render an ASAS-positive series in {_MAX_TRIES} tries (size={size})")


def _levels(scan: Scan, n: int) -> tuple[list[float], list[float]]:
    """z of each slice (mm, cranial first) and its level within the joints (0 upper end, 1 lower end)."""
    step = scan.slice_thickness + scan.slice_gap
    z = [round((n - 1) / 2 * step - i * step, 3) for i in range(n)]
    t = [float(np.clip(0.5 - (zi - scan.centre_mm) / scan.extent_mm, -0.15, 1.15)) for zi in z]
    return z, t


def _render(rng, n: int, size, positive: bool, pid: str, want_maps: bool) -> tuple[Series, list[SliceMaps]]:
    seq = sample_sequence(rng)
    scan = sample_scan(rng, size, (seq.tr, seq.te, seq.ti))
    pel = sample_pelvis(rng)
    plans = plan_oedema(rng, n, positive)
    mimics = plan_mimics(rng, n)
    marrow_amp, red_amp = rng.uniform(0.08, 0.2), rng.uniform(0.0, 0.3)
    z, levels = _levels(scan, n)
    grid = Grid(scan.size, scan.spacing, scan.pose)
    fat_weight, shade = seq.fat_weight(ti_factor(scan)), shading(scan)
    sigma = scan.noise * seq["csf"][0]
    stack = np.empty((n, scan.size, scan.size), np.float32)
    masks = np.zeros((n, scan.size, scan.size), bool)
    lesions: list[list[Lesion]] = []
    findings: list[list[str]] = []
    slice_maps = []
    for i, (t, zi) in enumerate(zip(levels, z)):
        scene = Scene(grid)
        level = draw_level(scene, pel, seq, t, zi, Textures(grid, rng, marrow_amp, red_amp))
        # Mimics first, so a lesion's signal is never painted over.
        drawn = [render_mimic(scene, level, seq, m, rng) for m in mimics if m.first <= i <= m.last]
        found = [render_oedema(scene, level, seq, p, i, rng, masks[i]) for p in plans if p.covers(i)]
        lesions.append([les for les in found if les is not None])
        findings.append(sorted(set(level.findings + [d for d in drawn if d])))
        signal = (scene.water + scene.fat * fat_weight) * shade
        stack[i] = add_noise(reconstruct(signal, scan), scan, sigma, rng)
        if want_maps:
            slice_maps.append(_maps(scene, level))
    images = to_12bit(stack, scan)
    return Series(
        images=images, masks=masks, slice_labels=[int(bool(ls)) for ls in lesions], lesions=lesions,
        findings=findings, label=int(meets_asas(lesions)), patient_id=pid, profile=PROFILE,
        pixel_spacing=(scan.spacing, scan.spacing), slice_thickness=scan.slice_thickness,
        spacing_between_slices=scan.slice_thickness + scan.slice_gap, slice_positions=z, fov_mm=scan.fov_mm,
        window=_window(images), acquisition=scan, anatomy=PROFILE,
    ), slice_maps


def _maps(scene: Scene, level: Level) -> SliceMaps:
    grid = scene.grid
    whole = (slice(0, grid.size), slice(0, grid.size))
    marrow = np.zeros((grid.size, grid.size), np.uint8)
    for code, key in ((1, "sacrum"), (2, ("ilium", -1)), (3, ("ilium", 1))):
        marrow[level.marrow_alpha(key, whole, scene.soft) >= 0.5] = code
    dist = np.minimum(*(polyline_distance(grid.x, grid.y, j)[0] for j in level.joints.values()))
    return SliceMaps(marrow, (dist * grid.pose.scale).astype(np.float32))


def _window(images: np.ndarray) -> tuple[float, float]:
    """Display window (centre, width) from the body's pixels: robust low and high percentiles."""
    sample = images[:, ::3, ::3].astype(np.float32)
    body = sample[sample > 0.08 * sample.max()]
    lo, hi = np.percentile(body if body.size else sample, [1.0, 98.5])
    return float(round((lo + hi) / 2)), float(max(1.0, round(hi - lo)))
