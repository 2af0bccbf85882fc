"""Sacroiliitis-like lesions, their mimics, and the ASAS rule.

Lesions (the only thing slice truth counts) are subchondral bone-marrow oedema:
soft, patchy hyperintense regions in the marrow directly beside a joint space,
on the iliac or sacral side, spanning one or more consecutive slices. Mimics are
drawn from the same distribution for positive and negative series, so they
carry no label information; a model must look at where and how big a bright
region is, not merely whether one exists.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from ._anatomy import SIDE_NAME, SIDES, JointLine, SliceAnatomy, Tissues
from ._canvas import Canvas, ellipse, smooth_noise

MIN_LESION_MM2 = 12.0  # smaller visible remnants do not count as a lesion on that slice


@dataclass(frozen=True)
class LesionLook:
    """Another way of drawing a lesion's oedema (``lesion_variety``); where it lies and its truth stay the same.

    ``outline``: radial harmonics (order, relative amplitude, phase) bending the ellipse into a wedge,
    lobes or a flattened band; ``tilt``: its long axis off the joint line (radians), reaching obliquely into
    the bone; ``edge_mm``: how far the margin fades (ill-defined to sharp); ``texture``: how uneven the signal
    inside is; ``core``: how much brighter the centre is than the margin (0: flat).
    """

    outline: tuple[tuple[int, float, float], ...]
    tilt: float
    edge_mm: float
    texture: float
    core: float


def sample_look(rng: np.random.Generator) -> LesionLook:
    """One lesion look, every property drawn independently."""
    orders = rng.choice([2, 3, 4, 5], size=int(rng.integers(1, 3)), replace=False)
    outline = tuple((int(k), float(rng.uniform(0.05, 0.3)), float(rng.uniform(0, 2 * np.pi))) for k in orders)
    return LesionLook(outline=outline, tilt=float(rng.uniform(-0.45, 0.45)), edge_mm=float(rng.uniform(0.4, 4.0)),
                      texture=float(rng.uniform(0.0, 0.6)), core=float(rng.uniform(0.0, 0.8)))


@dataclass(frozen=True)
class LesionPlan:
    """One oedema lesion of a series, before rendering."""

    lesion_id: int
    side: int  # -1 image left (patient right), +1 image right
    bone: str  # "ilium" or "sacrum"
    first_slice: int
    n_slices: int
    u: float  # position along the joint, 0 anterior .. 1 posterior
    length_mm: float  # extent along the joint
    depth_mm: float  # extent into the bone
    amplitude: float  # added STIR intensity at the lesion core
    look: LesionLook | None = None  # None: the plain drawing (a soft ellipse along the joint)

    def covers(self, i: int) -> bool:
        return self.first_slice <= i < self.first_slice + self.n_slices


@dataclass(frozen=True)
class Lesion:
    """One lesion as it appears on one slice (the per-slice truth)."""

    lesion_id: int
    slice_index: int
    side: str  # patient side, "R" or "L"
    bone: str
    center_px: tuple[float, float]  # (x, y) in pixels
    area_px: int
    area_mm2: float


@dataclass(frozen=True)
class Finding:
    """A non-lesion finding: a mimic, a degenerative change or a chronic sign."""

    kind: str
    side: int
    slices: tuple[int, ...]
    u: float
    size_mm: float
    amplitude: float
    bone: str = "ilium"


def meets_asas(lesions_per_slice: list[list[Lesion]]) -> bool:
    """ASAS MRI rule for active sacroiliitis on a series.

    Two or more oedema lesions on one slice, or one lesion (or more) on each of
    two consecutive slices.
    """
    counts = [len(ls) for ls in lesions_per_slice]
    if any(c >= 2 for c in counts):
        return True
    return any(a and b for a, b in zip(counts, counts[1:]))


#: Lesion size (length along the joint, depth into the bone, mm) and added intensity, by name. ``wide`` is the
#: training distribution: small faint foci to large bright ones. ``large`` is the range up to model 0.2.0 (only
#: large, bright lesions): a curriculum's warm-up, where a network from scratch finds the lesion sooner.
LESION_RANGES = {
    "wide": {"length_mm": (5.0, 28.0), "depth_mm": (4.0, 16.0), "amplitude": (0.35, 0.85)},
    "large": {"length_mm": (14.0, 28.0), "depth_mm": (9.0, 16.0), "amplitude": (0.5, 0.85)},
}


def plan_lesions(rng: np.random.Generator, n_slices: int, positive: bool,
                 lesion_range: str = "wide", lesion_variety: float = 0.0) -> list[LesionPlan]:
    """Draw the oedema lesions of a series (sizes from :data:`LESION_RANGES`); a positive plan always meets ASAS.

    ``lesion_variety``: the probability that a lesion is drawn with a :class:`LesionLook` of its own instead
    of the plain soft ellipse (0 draws nothing, so the random stream stays as it was).
    """
    if not positive:
        return []
    bounds = LESION_RANGES[lesion_range]
    count = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.35, 0.2, 0.1]))
    plans: list[LesionPlan] = []
    for _ in range(40 * count):
        if len(plans) == count:
            break
        cand = _draw_lesion(rng, len(plans), n_slices, bounds)
        if not any(_overlaps(cand, p) for p in plans):
            plans.append(cand)
    plans = _ensure_asas(plans, n_slices)
    if lesion_variety > 0.0:
        plans = [replace(p, look=sample_look(rng)) if rng.random() < lesion_variety else p for p in plans]
    return plans


def _draw_lesion(rng: np.random.Generator, lesion_id: int, n_slices: int, bounds: dict) -> LesionPlan:
    span = min(n_slices, int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.25, 0.1])))
    return LesionPlan(
        lesion_id=lesion_id, side=int(rng.choice(SIDES)),
        bone="ilium" if rng.random() < 0.6 else "sacrum",  # iliac side is hit more often
        first_slice=int(rng.integers(0, n_slices - span + 1)), n_slices=span,
        # Sizes and brightness span small faint foci to large bright ones: the 0.2.0 range (14-28 x 9-16 mm,
        # amplitude 0.5-0.85) held only large, bright lesions, and the model missed small, faint oedema that
        # another generator drew (sensitivity 0.31 on its smallest third of lesions).
        u=float(rng.uniform(0.15, 0.85)), length_mm=float(rng.uniform(*bounds["length_mm"])),
        depth_mm=float(rng.uniform(*bounds["depth_mm"])), amplitude=float(rng.uniform(*bounds["amplitude"])),
    )


def _overlaps(a: LesionPlan, b: LesionPlan) -> bool:
    same_place = a.side == b.side and a.bone == b.bone and abs(a.u - b.u) < 0.45
    same_slices = a.first_slice < b.first_slice + b.n_slices and b.first_slice < a.first_slice + a.n_slices
    return same_place and same_slices


def _ensure_asas(plans: list[LesionPlan], n_slices: int) -> list[LesionPlan]:
    multi = any(p.n_slices >= 2 for p in plans)
    shared = any(a.covers(i) and b.covers(i) for a in plans for b in plans if a is not b for i in range(n_slices))
    if multi or shared:
        return plans
    first = plans[0]
    if n_slices >= 2:  # stretch the first lesion over two consecutive slices
        start = min(first.first_slice, n_slices - 2)
        plans[0] = LesionPlan(**{**first.__dict__, "first_slice": start, "n_slices": 2})
    else:  # a one-slice series needs two lesions on that slice: mirror the first
        plans.append(LesionPlan(**{**first.__dict__, "lesion_id": len(plans), "side": -first.side}))
    return plans


# kind, probability per series (a second one at a third of it), most slices, size mm, amplitude
MIMICS = (
    ("focus", 0.5, 1, (2.0, 3.5), (0.25, 0.6)),  # tiny bright dot (< MIN_LESION_MM2), may be subchondral
    ("island", 0.45, 3, (8.0, 18.0), (0.25, 0.6)),  # faint residual red marrow
    ("sclerosis", 0.3, 4, (8.0, 16.0), (0.0, 0.0)),  # dark subchondral band
    ("vacuum", 0.15, 2, (1.5, 2.5), (0.0, 0.0)),  # gas in the joint
    ("cyst", 0.35, 3, (5.0, 14.0), (0.0, 0.0)),  # fluid in the gluteal muscles
    ("vessel", 0.6, 4, (1.5, 4.5), (0.6, 1.1)),  # bright vein just outside the bone at a joint end
    ("fat", 0.15, 3, (6.0, 12.0), (0.0, 0.0)),  # fatty marrow, dark
    ("deep-focus", 0.35, 3, (3.0, 9.0), (0.35, 0.85)),  # haemangioma-like focus deep in the bone
    ("nutrient-canal", 0.3, 2, (8.0, 20.0), (0.3, 0.7)),  # bright vessel canal in the iliac bone
    ("joint-fluid", 0.25, 3, (6.0, 18.0), (0.6, 1.0)),  # fluid in the joint space
    ("soft-oedema", 0.3, 3, (5.0, 14.0), (0.3, 0.7)),  # bright soft tissue against the outer cortex
    ("bowel-contact", 0.25, 4, (8.0, 16.0), (0.7, 1.0)),  # fluid-filled loop against the anterior joint
)


def plan_findings(rng: np.random.Generator, n_slices: int, positive: bool,
                  lesions: list[LesionPlan], mimic_rate: float = 1.0) -> list[Finding]:
    """Draw mimics and chronic/degenerative findings for a series.

    Mimics and degenerative changes use the same probabilities in both
    classes and either side (``mimic_rate`` scales them: 0 draws none, for a
    curriculum's first phase). Chronic signs of sacroiliitis (erosions, fat
    metaplasia) go with positives and sit on lesion-bearing slices, as they
    would in a patient with active disease.
    """
    out: list[Finding] = []
    for kind, prob, max_span, size, amp in MIMICS:
        for p in (prob, prob / 3):
            if rng.random() < p * mimic_rate:
                out.append(_finding(rng, kind, n_slices, max_span, size, amp))
    if positive and lesions:
        for kind, prob in (("erosion", 0.35), ("fat", 0.25)):
            if rng.random() < prob:
                les = lesions[int(rng.integers(len(lesions)))]
                span = tuple(range(les.first_slice, les.first_slice + les.n_slices))
                out.append(Finding(kind, les.side, span, float(rng.uniform(0.2, 0.8)),
                                   float(rng.uniform(2.0, 3.5) if kind == "erosion" else rng.uniform(6, 12)),
                                   0.0, les.bone))
    return out


def _finding(rng, kind: str, n_slices: int, max_span: int, size, amp) -> Finding:
    span = min(n_slices, int(rng.integers(1, max_span + 1)))
    first = int(rng.integers(0, n_slices - span + 1))
    bone = "ilium" if rng.random() < 0.55 or kind == "nutrient-canal" else "sacrum"
    return Finding(kind, int(rng.choice(SIDES)), tuple(range(first, first + span)), float(rng.uniform(0.05, 0.95)),
                   float(rng.uniform(*size)), float(rng.uniform(*amp)), bone)


def _into_bone(joint: JointLine, bone: str) -> np.ndarray:
    return joint.normal if bone == "ilium" else -joint.normal


def render_lesion(cv: Canvas, sa: SliceAnatomy, plan: LesionPlan, i: int, rng) -> tuple[np.ndarray, Lesion | None]:
    """Add one lesion's oedema to slice i; return its mask and its truth record."""
    joint = sa.joints[plan.side]
    z = (i - (plan.first_slice + (plan.n_slices - 1) / 2)) / (plan.n_slices / 2)
    f = float(np.sqrt(1.0 - 0.6 * z * z))  # ellipsoid cross-section, never vanishing
    into = _into_bone(joint, plan.bone)
    u = float(np.clip(plan.u + 0.02 * z, 0.05, 0.95))
    centre = joint.at(u) + into * (joint.gap / 2 + 0.45 * plan.depth_mm * f)
    angle = float(np.arctan2(*joint.direction[::-1]))
    axes = (plan.length_mm * f / 2, plan.depth_mm * f / 2)
    look = plan.look
    outline = ellipse(centre, axes, angle, 28) if look is None else _outline(centre, axes, angle, look)
    marrow = sa.bone_marrow(plan.bone, plan.side)
    mask = (cv.mask([outline]) & marrow).astype(bool)
    if look is None:
        _add_soft(cv, mask, plan.amplitude, rng)
    else:
        _add_look(cv, mask, plan.amplitude, look, rng)
    area = int(mask.sum())
    if area * cv.spacing**2 < MIN_LESION_MM2:
        return mask, None
    ys, xs = np.nonzero(mask)
    return mask, Lesion(plan.lesion_id, i, SIDE_NAME[plan.side], plan.bone, (float(xs.mean()), float(ys.mean())),
                        area, round(area * cv.spacing**2, 2))


def _outline(centre, axes, angle: float, look: LesionLook, n: int = 48) -> np.ndarray:
    """The ellipse's outline tilted off the joint line and bent by the look's radial harmonics (mm)."""
    points = ellipse(centre, axes, angle + look.tilt, n)
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)  # the ellipse's own parameter for each point
    r = 1.0 + sum(a * np.cos(k * th + phase) for k, a, phase in look.outline)
    return centre + (points - centre) * r[:, None]


def _add_look(cv: Canvas, mask: np.ndarray, amplitude: float, look: LesionLook, rng) -> None:
    """Oedema inside ``mask`` as the look draws it: margin fade, core-to-margin profile, uneven signal."""
    if not mask.any():
        return
    m = mask.astype(np.uint8)
    soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), max(0.5, cv.px(look.edge_mm))) * mask
    if look.core > 0:
        depth = cv2.distanceTransform(m, cv2.DIST_L2, 3)
        soft *= (1.0 - look.core) + look.core * depth / max(float(depth.max()), 1e-6)
    uneven = (1.0 - look.texture) + look.texture * smooth_noise(rng, cv.size, max(4, cv.size // 8))
    cv.img += amplitude * soft * np.clip(uneven, 0.0, None)


def _add_soft(cv: Canvas, mask: np.ndarray, amplitude: float, rng, sign: float = 1.0) -> None:
    """Add a patchy, soft-edged intensity change inside a mask."""
    if not mask.any():
        return
    sigma = max(0.8, cv.px(1.5))
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma) * mask
    patchy = 0.75 + 0.25 * smooth_noise(rng, cv.size, max(4, cv.size // 12))
    cv.img += sign * amplitude * soft * patchy


def render_finding(cv: Canvas, sa: SliceAnatomy, fd: Finding, ts: Tissues, rng) -> str:
    """Draw one finding on the current slice; return its kind for the record."""
    joint = sa.joints[fd.side]
    into = _into_bone(joint, fd.bone)
    p = joint.at(fd.u)
    draw = _FINDINGS[fd.kind]
    draw(cv, sa, fd, ts, joint, into, p, rng)
    return fd.kind


def _draw_focus(cv, sa, fd, ts, joint, into, p, rng):
    # A small bright dot in the marrow, sometimes subchondral: too small for oedema.
    depth = fd.size_mm / 2 + joint.gap / 2 + rng.uniform(1.0, 20.0)
    mask = cv.mask([ellipse(p + into * depth, (fd.size_mm / 2, fd.size_mm / 2), 0.0, 16)])
    cv.put(mask & sa.bone_marrow(fd.bone, fd.side), ts.marrow + fd.amplitude + 0.1)


def _draw_island(cv, sa, fd, ts, joint, into, p, rng):
    # Residual red marrow: large, faint, anywhere in the bone.
    depth = fd.size_mm / 2 + rng.uniform(2.0, 25.0)
    mask = cv.mask([ellipse(p + into * depth, (fd.size_mm / 2, fd.size_mm / 3), rng.uniform(0, np.pi), 20)])
    _add_soft(cv, (mask & sa.bone_marrow(fd.bone, fd.side)).astype(bool), 0.25 * fd.amplitude, rng)


def _draw_sclerosis(cv, sa, fd, ts, joint, into, p, rng):
    # Degenerative subchondral sclerosis: a dark band along the joint.
    angle = float(np.arctan2(*joint.direction[::-1]))
    centre = p + into * (joint.gap / 2 + 2.5)
    mask = cv.mask([ellipse(centre, (fd.size_mm / 2, 3.0), angle, 20)]) & sa.bone_marrow(fd.bone, fd.side)
    cv.put(mask, ts.cortex * 1.5)


def _draw_vacuum(cv, sa, fd, ts, joint, into, p, rng):
    cv.fill([ellipse(p, (fd.size_mm, joint.gap / 2), float(np.arctan2(*joint.direction[::-1])), 12)], 0.0)


def _draw_cyst(cv, sa, fd, ts, joint, into, p, rng):
    # Fluid away from subchondral bone: in the gluteal muscles behind the ilium.
    centre = joint.points[-1] + (fd.side * rng.uniform(25, 55), rng.uniform(15, 35))
    cv.put(_outside_bone(cv, sa, [ellipse(centre, (fd.size_mm / 2, fd.size_mm / 3), rng.uniform(0, np.pi), 20)]),
           ts.fluid)


def _outside_bone(cv, sa, polys) -> np.ndarray:
    return (cv.mask(polys) & (1 - sa.bone)).astype(bool)


def _joint_end(joint: JointLine, anterior: bool, rng) -> np.ndarray:
    """A point just beyond one end of the joint, outside the bone."""
    s = joint.side
    if anterior:
        return joint.points[0] + (s * rng.uniform(-12.0, 8.0), -rng.uniform(5.0, 12.0))
    return joint.points[-1] + (s * rng.uniform(-4.0, 14.0), rng.uniform(5.0, 14.0))


def _draw_vessel(cv, sa, fd, ts, joint, into, p, rng):
    # Bright veins against the bone at either end of the joint, never inside it.
    centre = _joint_end(joint, fd.u < 0.5, rng)
    shape = ellipse(centre, (fd.size_mm * rng.uniform(1.0, 2.0), fd.size_mm), rng.uniform(0, np.pi), 14)
    cv.put(_outside_bone(cv, sa, [shape]), ts.vein * fd.amplitude)


def _draw_deep_focus(cv, sa, fd, ts, joint, into, p, rng):
    # A well-defined bright focus (haemangioma-like) far from the subchondral bone.
    depth = joint.gap / 2 + rng.uniform(18.0, 30.0) + fd.size_mm / 2
    mask = cv.mask([ellipse(p + into * depth, (fd.size_mm / 2, fd.size_mm / 2 * rng.uniform(0.7, 1.0)),
                            rng.uniform(0, np.pi), 16)])
    cv.put(mask & sa.bone_marrow(fd.bone, fd.side), ts.marrow + fd.amplitude)


def _draw_nutrient_canal(cv, sa, fd, ts, joint, into, p, rng):
    # A thin bright vessel canal through the iliac wing, starting well away from the joint.
    start = p + into * (joint.gap / 2 + rng.uniform(17.0, 28.0))
    th = np.arctan2(into[1], into[0]) + rng.uniform(-1.2, 1.2)
    end = start + fd.size_mm * np.array([np.cos(th), np.sin(th)])
    line = np.zeros_like(cv.img)
    width = max(1, int(round(cv.px(rng.uniform(1.0, 2.0)))))
    cv2.line(line, tuple(np.round(cv.to_px(start[None])[0]).astype(int)),
             tuple(np.round(cv.to_px(end[None])[0]).astype(int)), 1.0, width)
    cv.put((line > 0) & sa.bone_marrow("ilium", fd.side).astype(bool), ts.marrow + fd.amplitude)


def _draw_joint_fluid(cv, sa, fd, ts, joint, into, p, rng):
    # Fluid in the joint space along part of the joint: bright, but between the bones.
    n = len(joint.points)
    half = fd.size_mm / max(joint.length, 1.0) / 2
    lo, hi = (int(np.clip(round((fd.u + d) * (n - 1)), 0, n - 1)) for d in (-half, half))
    if hi - lo < 1:
        return
    sac, ili = joint.surface("sacrum")[lo:hi + 1], joint.surface("ilium")[lo:hi + 1]
    cv.put(_outside_bone(cv, sa, [np.concatenate([sac, ili[::-1]])]), ts.fluid * fd.amplitude)


def _draw_soft_oedema(cv, sa, fd, ts, joint, into, p, rng):
    # Bright soft tissue (muscle strain, bursa) pressed against the bone outside it.
    centre = _joint_end(joint, fd.u < 0.4, rng)
    mask = _outside_bone(cv, sa, [ellipse(centre, (fd.size_mm / 2, fd.size_mm / 3), rng.uniform(0, np.pi), 20)])
    _add_soft(cv, mask, fd.amplitude, rng)


def _draw_bowel_contact(cv, sa, fd, ts, joint, into, p, rng):
    # A fluid-filled bowel loop against the front of the joint.
    s = joint.side
    a, b = fd.size_mm / 2, fd.size_mm / 2 * rng.uniform(0.5, 0.9)
    centre = joint.points[0] + (s * rng.uniform(-15.0, 8.0), -(b + rng.uniform(2.0, 8.0)))
    cv.put(_outside_bone(cv, sa, [ellipse(centre, (a + 1.5, b + 1.5))]), ts.muscle)
    cv.put(_outside_bone(cv, sa, [ellipse(centre, (a, b))]), ts.fluid * fd.amplitude)


def _draw_fat(cv, sa, fd, ts, joint, into, p, rng):
    # Fat metaplasia / fatty marrow: dark on STIR.
    centre = p + into * (joint.gap / 2 + fd.size_mm / 3)
    mask = cv.mask([ellipse(centre, (fd.size_mm / 2, fd.size_mm / 3), float(np.arctan2(*joint.direction[::-1])), 20)])
    _add_soft(cv, (mask & sa.bone_marrow(fd.bone, fd.side)).astype(bool), 0.6 * (ts.marrow - ts.fat), rng, -1.0)


def _draw_erosion(cv, sa, fd, ts, joint, into, p, rng):
    # Erosions: notches that widen the joint space, with fluid-like signal.
    for du in rng.uniform(-0.15, 0.15, size=int(rng.integers(2, 5))):
        q = joint.at(float(np.clip(fd.u + du, 0.02, 0.98))) + into * (joint.gap / 2)
        cv.fill([ellipse(q, (fd.size_mm / 2, fd.size_mm / 2), 0.0, 12)], ts.cartilage * 1.3)


_FINDINGS = {"focus": _draw_focus, "island": _draw_island, "sclerosis": _draw_sclerosis, "vacuum": _draw_vacuum,
             "cyst": _draw_cyst, "vessel": _draw_vessel, "fat": _draw_fat, "erosion": _draw_erosion,
             "deep-focus": _draw_deep_focus, "nutrient-canal": _draw_nutrient_canal,
             "joint-fluid": _draw_joint_fluid, "soft-oedema": _draw_soft_oedema, "bowel-contact": _draw_bowel_contact}
