"""Subchondral bone-marrow oedema (the lesion) and the normal findings that look like it (mimics).

Oedema is drawn as water replacing marrow fat: its share rises towards the
joint and fades over a noisy, ill-defined front, so on STIR the marrow beside
the joint turns bright without a sharp edge. The truth mask is where the
rendered water gain is at least ``MASK_GAIN`` inside the marrow, and a lesion
counts on a slice only when that mask covers ``MIN_AREA_MM2``.

Mimics are planned with the same probabilities for every series, whatever
its label, so none of them tells the classes apart.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from asinfer.trainer.phantoms import Lesion

from ._pelvis import SIDE_NAME, SIDES, Level
from ._shapes import Field, Scene, band, ellipse, polyline_distance, resample
from ._stir import Sequence

MASK_GAIN = 0.25  # water-fraction gain that makes a pixel part of the lesion
MIN_AREA_MM2 = 12.0  # smaller remnants on a slice do not count as a lesion there


@dataclass(frozen=True)
class OedemaPlan:
    """One oedema lesion of a series (it may span several slices)."""

    lesion_id: int
    side: int  # image side: -1 left (patient right), +1 right (patient left)
    bone: str  # "ilium" or "sacrum"
    u: float  # centre along the joint, 0 anterior .. 1 posterior
    length: float  # mm along the joint
    depth: float  # mm into the bone
    gain: float  # water fraction gained at the core
    first: int
    last: int

    def covers(self, i: int) -> bool:
        return self.first <= i <= self.last

    def gain_at(self, i: int) -> float:
        """Weaker towards the ends of its slice span (partial volume)."""
        mid, half = (self.first + self.last) / 2, (self.last - self.first) / 2 + 0.75
        return self.gain * (1 - 0.35 * ((i - mid) / half) ** 2)


def plan_oedema(rng: np.random.Generator, n: int, positive: bool) -> list[OedemaPlan]:
    """Lesions of a series; a positive plan always meets the ASAS rule before rendering."""
    if not positive:
        return []
    count = int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]))
    plans: list[OedemaPlan] = []
    for _ in range(50):
        if len(plans) == count:
            break
        span = min(n, int(rng.choice([1, 2, 3, 4], p=[0.25, 0.4, 0.25, 0.1])))
        first = int(rng.integers(0, n - span + 1))
        cand = OedemaPlan(len(plans), int(rng.choice(SIDES)), "ilium" if rng.random() < 0.6 else "sacrum",
                          float(rng.uniform(0.18, 0.82)), float(rng.uniform(10, 24)), float(rng.uniform(6, 13)),
                          float(rng.uniform(0.45, 0.85)), first, first + span - 1)
        if not any(_clash(cand, p) for p in plans):
            plans.append(cand)
    return _ensure_rule(plans, n)


def _clash(a: OedemaPlan, b: OedemaPlan) -> bool:
    """Two lesions that would merge into one on a shared slice."""
    shared = a.first <= b.last and b.first <= a.last
    return shared and a.side == b.side and a.bone == b.bone and abs(a.u - b.u) < 0.55


def _ensure_rule(plans: list[OedemaPlan], n: int) -> list[OedemaPlan]:
    """Two lesions on one slice, or one on two consecutive slices; stretch the first lesion if neither."""
    per_slice = [sum(p.covers(i) for p in plans) for i in range(n)]
    if any(c >= 2 for c in per_slice) or any(p.last > p.first for p in plans) or n < 2:
        return plans
    p = plans[0]
    first = min(p.first, n - 2)
    plans[0] = OedemaPlan(p.lesion_id, p.side, p.bone, p.u, p.length, p.depth, p.gain, first, first + 1)
    return plans


def _frame(level: Level, side: int, u: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point at fraction u along a joint, its tangent, and its normal into the ilium."""
    pts = resample(level.joints[side], 1.0)
    k = int(round(u * (len(pts) - 1)))
    k = min(max(k, 1), len(pts) - 2)
    tangent = pts[k + 1] - pts[k - 1]
    tangent /= np.hypot(*tangent)
    return pts[k], tangent, level.lateral[side]


def _smooth_noise(rng, shape, sigma_px: float) -> np.ndarray:
    n = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), max(sigma_px, 0.5))
    return n / (n.std() + 1e-6)


def render_oedema(scene: Scene, level: Level, seq: Sequence, plan: OedemaPlan, i: int, rng: np.random.Generator,
                  mask_out: np.ndarray) -> Lesion | None:
    """Paint one lesion on slice i; OR its mask into mask_out; return its per-slice truth (None if too small)."""
    grid = scene.grid
    q, tangent, _ = _frame(level, plan.side, plan.u)
    reach = plan.length / 2 + plan.depth * 1.6 + 6
    roi = grid.roi((q[0] - reach, q[1] - reach), (q[0] + reach, q[1] + reach))
    key = "sacrum" if plan.bone == "sacrum" else ("ilium", plan.side)
    if roi is None or key not in level.marrow:
        return None
    x, y = grid.x[roi], grid.y[roi]
    dist, _ = polyline_distance(x, y, level.joints[plan.side])
    along = (x - q[0]) * tangent[0] + (y - q[1]) * tangent[1]
    mm = grid.mm_per_px
    front = plan.depth * np.clip(0.85 + 0.25 * _smooth_noise(rng, x.shape, 2.5 / mm), 0.5, 1.3)  # ragged front
    depth_profile = 1.0 / (1.0 + np.exp((dist - level.joint_width / 2 - front) / (0.2 * plan.depth)))
    along_profile = np.exp(-0.5 * (along / (0.42 * plan.length)) ** 4)
    patch = np.clip(0.8 + 0.2 * _smooth_noise(rng, x.shape, 1.5 / mm), 0.45, 1.0)
    marrow = level.marrow_alpha(key, roi, scene.soft)
    gain = plan.gain_at(i) * depth_profile * along_profile * patch * marrow
    _add_water(scene, roi, gain, seq)
    mask = (gain >= MASK_GAIN) & (marrow >= 0.5)
    area_px = int(mask.sum())
    area_mm2 = area_px * grid.spacing ** 2
    if area_mm2 < MIN_AREA_MM2:
        return None
    mask_out[roi] |= mask
    rows, cols = np.nonzero(mask)
    centre = (float(cols.mean() + roi[1].start), float(rows.mean() + roi[0].start))
    return Lesion(lesion_id=plan.lesion_id, slice_index=i, side=SIDE_NAME[plan.side], bone=plan.bone,
                  center_px=centre, area_px=area_px, area_mm2=round(area_mm2, 2))


def _add_water(scene: Scene, roi, gain: np.ndarray, seq: Sequence) -> None:
    """Marrow fat replaced by oedematous water in proportion to gain."""
    w_oed, _ = seq["oedema"]
    water, fat = scene.water[roi], scene.fat[roi]
    water += gain * (w_oed - water)
    fat *= 1.0 - gain


# --- mimics -----------------------------------------------------------------------------------------------------

# name: (probability per series, slices it spans (min, max))
MIMICS: dict[str, tuple[float, tuple[int, int]]] = {
    "joint-end vein": (0.6, (2, 6)),
    "bright focus": (0.45, (1, 2)),
    "red marrow": (0.35, (1, 3)),
    "joint fluid": (0.3, (1, 3)),
    "sclerosis": (0.2, (2, 4)),
    "fatty marrow": (0.25, (1, 3)),
    "bowel at joint": (0.3, (2, 5)),
    "gluteal fluid": (0.2, (1, 3)),
    "vacuum": (0.1, (1, 2)),
}


@dataclass(frozen=True)
class Mimic:
    """A normal finding near the joints, placed for a run of slices."""

    kind: str
    side: int
    first: int
    last: int
    u: float  # where along the joint (0 anterior .. 1 posterior)
    size: float  # mm
    strength: float


def plan_mimics(rng: np.random.Generator, n: int) -> list[Mimic]:
    """Mimics of a series: drawn the same way for positive and negative series."""
    out = []
    for kind, (p, (lo, hi)) in MIMICS.items():
        if rng.random() >= p:
            continue
        span = min(n, int(rng.integers(lo, hi + 1)))
        first = int(rng.integers(0, n - span + 1))
        out.append(Mimic(kind, int(rng.choice(SIDES)), first, first + span - 1, float(rng.uniform(0.1, 0.9)),
                         float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0))))
    return out


def render_mimic(scene: Scene, level: Level, seq: Sequence, m: Mimic, rng: np.random.Generator) -> str | None:
    """Paint one mimic on the current slice; return its name if something was drawn."""
    draw = _DRAW[m.kind]
    return m.kind if draw(scene, level, seq, m, rng) else None


def _soft_tissue(scene: Scene, level: Level, f: Field | None, value, strength: float = 1.0) -> bool:
    """Paint outside every bone only (a mimic in soft tissue must never touch marrow)."""
    if f is None:
        return False
    scene.paint(f, value, alpha=strength * (1.0 - level.bone_alpha(f.roi, scene.soft)))
    return True


def _in_marrow(scene: Scene, level: Level, f: Field | None, key, water_gain: float, fat_keep: float) -> bool:
    """Change marrow composition inside a shape (nowhere else)."""
    if f is None or key not in level.marrow:
        return False
    a = f.coverage(scene.soft) * level.marrow_alpha(key, f.roi, scene.soft)
    if a.max() < 0.5:
        return False
    scene.water[f.roi] += a * water_gain
    scene.fat[f.roi] *= 1.0 - a * (1.0 - fat_keep)
    return True


def _joint_end(level: Level, side: int, posterior: bool, out_mm: float) -> np.ndarray:
    """A point beyond one end of a joint, out_mm past the end along the joint."""
    pts = level.joints[side]
    end, prev = (pts[-1], pts[-4]) if posterior else (pts[0], pts[3])
    d = end - prev
    return end + d / np.hypot(*d) * out_mm


def _vein(scene, level, seq, m, rng) -> bool:
    r = 2.2 + 2.0 * m.size
    c = _joint_end(level, m.side, m.u > 0.7, r + 1.5)
    return _soft_tissue(scene, level, ellipse(scene.grid, c, (r, r * 0.8)), seq["vein"])


def _focus(scene, level, seq, m, rng) -> bool:
    """A 2-4 mm fluid focus: periarticular soft tissue, or deep marrow far from the joint."""
    r = 1.0 + 0.9 * m.size
    if m.strength < 0.5:
        c = _joint_end(level, m.side, m.u > 0.5, 4 + 6 * m.strength)
        return _soft_tissue(scene, level, ellipse(scene.grid, c, (r, r)), seq["focus"])
    q, _, normal = _frame(level, m.side, 0.3)
    c = q + normal * (22 + 10 * m.u)  # inside the iliac wing, well away from subchondral bone
    f = ellipse(scene.grid, c, (r, r))
    w_focus, _ = seq["focus"]
    return _in_marrow(scene, level, f, ("ilium", m.side), 0.8 * w_focus, 0.2)


def _red_marrow(scene, level, seq, m, rng) -> bool:
    q, _, normal = _frame(level, m.side, 0.2 + 0.3 * m.u)
    c = q + normal * (18 + 8 * m.size)
    f = ellipse(scene.grid, c, (4 + 5 * m.size, 3 + 3 * m.size), rng.uniform(0, np.pi))
    w_m, _ = seq["marrow"]
    return _in_marrow(scene, level, f, ("ilium", m.side), (0.5 + 0.6 * m.strength) * w_m, 0.75)


def _joint_fluid(scene, level, seq, m, rng) -> bool:
    pts = resample(level.joints[m.side], 1.0)
    lo = int(m.u * 0.5 * len(pts))
    seg = pts[lo:lo + max(6, int(len(pts) * (0.3 + 0.3 * m.size)))]
    f = band(scene.grid, seg, level.joint_width / 2 + 0.1)
    return _soft_tissue(scene, level, f, seq["focus"], 0.35 + 0.35 * m.strength)


def _sclerosis(scene, level, seq, m, rng) -> bool:
    """Dense subchondral bone at the front of the iliac side: dark on every sequence."""
    pts = resample(level.joints[m.side], 1.0)
    seg = pts[: max(6, int(len(pts) * 0.4))] + level.lateral[m.side] * (level.joint_width / 2 + 2.5)
    f = band(scene.grid, seg, 1.2 + 1.5 * m.size)
    key = ("ilium", m.side)
    if f is None or key not in level.marrow:
        return False
    a = f.coverage(scene.soft) * level.marrow_alpha(key, f.roi, scene.soft) * 0.75
    scene.water[f.roi] *= 1.0 - a
    scene.fat[f.roi] *= 1.0 - a
    return bool(a.max() > 0.3)


def _fatty_marrow(scene, level, seq, m, rng) -> bool:
    """Fat-rich subchondral marrow: darker on STIR (occurs in healthy joints too)."""
    q, _, normal = _frame(level, m.side, m.u)
    bone = 1 if m.strength < 0.6 else -1
    c = q + normal * bone * (level.joint_width / 2 + 4 + 3 * m.size)
    f = ellipse(scene.grid, c, (3 + 4 * m.size, 2.5 + 2 * m.size), rng.uniform(0, np.pi))
    key = ("ilium", m.side) if bone > 0 else "sacrum"
    w_m, _ = seq["marrow"]
    return _in_marrow(scene, level, f, key, -0.6 * w_m, 1.3)


def _bowel(scene, level, seq, m, rng) -> bool:
    r = 6 + 5 * m.size
    c = _joint_end(level, m.side, False, r + 2) - level.lateral[m.side] * 4
    wall = ellipse(scene.grid, c, (r, r * 0.85))
    _soft_tissue(scene, level, wall, seq["bowel_wall"])
    return _soft_tissue(scene, level, ellipse(scene.grid, c, (r - 1.8, r * 0.85 - 1.8)), seq["bowel_fluid"])


def _gluteal_fluid(scene, level, seq, m, rng) -> bool:
    q, tangent, normal = _frame(level, m.side, 0.75)
    c = q + normal * (35 + 10 * m.u) + tangent * 6
    r = 2 + 3 * m.size
    return _soft_tissue(scene, level, ellipse(scene.grid, c, (r * 1.4, r), rng.uniform(0, np.pi)), seq["focus"])


def _vacuum(scene, level, seq, m, rng) -> bool:
    pts = resample(level.joints[m.side], 1.0)
    lo = int(m.u * 0.6 * len(pts))
    f = band(scene.grid, pts[lo:lo + max(5, len(pts) // 4)], level.joint_width / 2 + 0.2)
    return _soft_tissue(scene, level, f, seq["gas"], 0.9)


_DRAW = {"joint-end vein": _vein, "bright focus": _focus, "red marrow": _red_marrow, "joint fluid": _joint_fluid,
         "sclerosis": _sclerosis, "fatty marrow": _fatty_marrow, "bowel at joint": _bowel,
         "gluteal fluid": _gluteal_fluid, "vacuum": _vacuum}
