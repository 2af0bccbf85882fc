"""Pelvic anatomy at the level of the sacroiliac joints, in patient millimetres.

One `Anatomy` is drawn per virtual patient; `render_anatomy` draws one axial
slice of it at craniocaudal position ``t`` (0 = cranial end of the joints,
1 = caudal end) with STIR-like intensities: fat dark, fluid bright, marrow
intermediate. Coordinates: x to the image right, y posterior (down the image).
Side -1 is the image left (patient right, radiological convention).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ._canvas import Canvas, bezier, ellipse, smooth_noise, superellipse

SIDES = (-1, 1)
SIDE_NAME = {-1: "R", 1: "L"}  # patient side shown on the image left / right


@dataclass(frozen=True)
class Tissues:
    """Ideal STIR intensities of one series (fluid is about 1.0)."""

    fat: float
    muscle: float
    marrow: float
    cortex: float
    cartilage: float
    fluid: float
    vein: float
    skin: float


@dataclass(frozen=True)
class Anatomy:
    """Randomised, plausible pelvic geometry of one virtual patient (mm)."""

    body_a: float  # half width of the body outline
    body_b: float  # half antero-posterior depth
    body_power: float  # superellipse exponent: how boxy the pelvis is
    fat_mm: float  # subcutaneous fat thickness (thinner posteriorly)
    sacrum_y: float  # sacrum centre, posterior of the body centre
    sacrum_w: float  # sacral width between the anterior joint ends
    sacrum_d: float  # sacral antero-posterior depth
    crest_mm: float  # height of the median sacral crest
    joint_angle: float  # joint obliquity to the AP axis (radians)
    joint_gap: float  # joint space width
    joint_wave: float  # amplitude of the auricular surface undulation
    wave_phase: float
    asym: float  # left-right asymmetry of the joint angle
    wing_span: float  # lateral reach of the iliac wing
    wing_drop: float  # anterior reach of the iliac wing tip
    foramen_phase: float  # where along the stack the sacral foramina appear
    bowel: tuple[tuple[float, float, float, float, float], ...]  # x, y, a, b, kind
    tissues: Tissues


@dataclass(frozen=True)
class JointLine:
    """One sacroiliac joint on one slice: centre line and its two bone surfaces."""

    side: int
    points: np.ndarray  # (n, 2) joint centre line, anterior -> posterior
    normal: np.ndarray  # (2,) unit vector pointing laterally (into the ilium)
    gap: float

    @property
    def direction(self) -> np.ndarray:
        v = self.points[-1] - self.points[0]
        return v / np.linalg.norm(v)

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.points[-1] - self.points[0]))

    def surface(self, bone: str) -> np.ndarray:
        """The subchondral surface of ``bone`` ("ilium" or "sacrum")."""
        sign = 1.0 if bone == "ilium" else -1.0
        return self.points + sign * self.normal * self.gap / 2

    def at(self, u: float) -> np.ndarray:
        """Point on the centre line at fraction u (0 anterior, 1 posterior)."""
        idx = u * (len(self.points) - 1)
        i = min(int(idx), len(self.points) - 2)
        f = idx - i
        return (1 - f) * self.points[i] + f * self.points[i + 1]


@dataclass
class SliceAnatomy:
    """What later stages need to know about a drawn slice."""

    joints: dict[int, JointLine]
    marrow: dict[str, np.ndarray]  # "sacrum", "ilium-1", "ilium1" -> uint8 masks
    cortex: np.ndarray  # uint8 mask of cortical bone

    def bone_marrow(self, bone: str, side: int) -> np.ndarray:
        """Marrow mask of the sacrum or of the ilium on one side."""
        return self.marrow["sacrum"] if bone == "sacrum" else self.marrow[f"ilium{side}"]


def sample_tissues(rng: np.random.Generator, fat_residual: float) -> Tissues:
    """Draw STIR intensities; fat_residual models imperfect fat suppression."""
    u = rng.uniform
    return Tissues(
        fat=u(0.05, 0.1) + fat_residual, muscle=u(0.32, 0.42), marrow=u(0.18, 0.26),
        cortex=u(0.02, 0.05), cartilage=u(0.42, 0.58), fluid=u(0.85, 1.0),
        vein=u(0.6, 0.9), skin=u(0.3, 0.45),
    )


def sample_anatomy(rng: np.random.Generator, tissues: Tissues) -> Anatomy:
    """Draw one virtual patient's pelvic geometry."""
    u = rng.uniform
    body_b = u(100, 135)
    sacrum_d, crest = u(36, 48), u(8, 14)
    sacrum_y = body_b - (0.5 * sacrum_d + crest + u(22, 38) + u(6, 20))
    bowel = tuple(
        (u(-75, 75), u(-body_b + 30, sacrum_y - 50), u(8, 20), u(6, 14), float(rng.choice(5, p=[0.3, 0.25, 0.1, 0.2, 0.15])))
        for _ in range(int(rng.integers(6, 12)))
    )
    return Anatomy(
        body_a=u(150, 195), body_b=body_b, body_power=u(2.2, 3.0), fat_mm=u(10, 38),
        sacrum_y=sacrum_y, sacrum_w=u(92, 118), sacrum_d=sacrum_d, crest_mm=crest,
        joint_angle=np.radians(u(18, 34)), joint_gap=u(2.0, 3.6), joint_wave=u(0.8, 2.8),
        wave_phase=u(0, 2), asym=np.radians(u(-5, 5)), wing_span=u(55, 85),
        wing_drop=u(40, 70), foramen_phase=u(0, 1), bowel=bowel, tissues=tissues,
    )


def _sacrum_dims(an: Anatomy, t: float) -> tuple[float, float]:
    # The sacrum narrows and thins caudally.
    return an.sacrum_w * (1.08 - 0.3 * t), an.sacrum_d * (1.0 - 0.2 * t)


def joint_line(an: Anatomy, t: float, side: int, n: int = 24) -> JointLine:
    """The joint on one side at level t: anterolateral -> posteromedial."""
    w, d = _sacrum_dims(an, t)
    angle = an.joint_angle + 0.12 * (t - 0.5) + side * an.asym
    a = np.array([side * w / 2, an.sacrum_y - 0.42 * d])
    b = np.array([side * (w / 2 - 0.95 * d * np.tan(angle)), an.sacrum_y + 0.48 * d])
    v = (b - a) / np.linalg.norm(b - a)
    normal = np.array([-v[1], v[0]])
    normal = normal if normal[0] * side > 0 else -normal
    u = np.linspace(0, 1, n)[:, None]
    wave = an.joint_wave * np.sin(np.pi * (1.6 * u + an.wave_phase + 0.8 * t))
    # The joint space is a little wider at its ends than in its middle.
    gap = an.joint_gap * (1.0 + 0.15 * np.cos(np.pi * t))
    return JointLine(side, a + u * (b - a) + normal * wave, normal, float(gap))


def _sacrum_outline(an: Anatomy, t: float, joints: dict[int, JointLine]) -> np.ndarray:
    _, d = _sacrum_dims(an, t)
    right, left = joints[1].surface("sacrum"), joints[-1].surface("sacrum")
    front = bezier(left[0], (0.0, an.sacrum_y - 0.5 * d - 4 * (1 - t)), right[0], 12)
    br, bl = right[-1], left[-1]
    crest = an.crest_mm * (1.0 - 0.4 * t)
    back = np.array([
        br, (0.55 * br[0], br[1] + 4), (0.15 * br[0], br[1] + 0.8 * crest), (0.0, br[1] + crest),
        (0.15 * bl[0], bl[1] + 0.8 * crest), (0.55 * bl[0], bl[1] + 4), bl,
    ])
    return np.concatenate([front, right[1:], back[1:-1], left[::-1]])


def _wing_tip(an: Anatomy, joint: JointLine) -> np.ndarray:
    # The wing sweeps anterolaterally, so the iliac fossa faces forward.
    return joint.points[0] + (joint.side * an.wing_span, -an.wing_drop)


def _ilium_outline(an: Anatomy, joint: JointLine) -> np.ndarray:
    s = joint.side
    surf = joint.surface("ilium")
    a, b = surf[0], surf[-1]
    p1 = b + (-s * 3.0, 12.0)  # posterior superior iliac spine, behind the sacrum
    p2 = b + (s * 20.0, 16.0)
    j0, h0 = (a + p2) / 2, np.linalg.norm(p2 - a) / 2
    perp = np.array([-(p2 - a)[1], (p2 - a)[0]]) / (2 * h0)
    perp = perp if perp[0] * s > 0 else -perp
    k = j0 + perp * an.wing_span * 0.5
    tip = _wing_tip(an, joint)
    centre = bezier(j0, k, tip, 14)
    tangent = np.gradient(centre, axis=0)
    nrm = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    nrm *= np.sign(nrm[0] @ (p2 - j0))  # outer side faces posteriorly at the joint
    half = (3.5 + (h0 - 3.5) * np.linspace(1.0, 0.0, len(centre)) ** 1.6)[:, None]
    return np.concatenate([surf, [p1], centre + nrm * half, (centre - nrm * half)[::-1]])


def _draw_soft_tissue(cv: Canvas, an: Anatomy, joints: dict[int, JointLine]) -> None:
    ts = an.tissues
    body = superellipse(an.body_a, an.body_b, an.body_power)
    cv.fill([body], ts.fat)
    cv.line(np.vstack([body, body[:1]]), ts.skin, 1.0)
    inner = body * [(an.body_a - an.fat_mm) / an.body_a, 1.0]
    inner[:, 1] = np.where(inner[:, 1] > 0, inner[:, 1] - an.fat_mm * 0.5, inner[:, 1] + an.fat_mm)
    inner[:, 1] = np.clip(inner[:, 1], -an.body_b + an.fat_mm, an.body_b - 0.4 * an.fat_mm)
    cv.fill([inner], ts.muscle)
    _draw_pelvic_cavity(cv, an, joints)
    _draw_muscle_planes(cv, an, joints)


def _draw_pelvic_cavity(cv: Canvas, an: Anatomy, joints: dict[int, JointLine]) -> None:
    ts = an.tissues
    wall = -an.body_b + an.fat_mm + 14
    al, ar = joints[-1].points[0], joints[1].points[0]
    tl, tr = _wing_tip(an, joints[-1]), _wing_tip(an, joints[1])
    cavity = np.concatenate([[al], bezier(tl, (0.0, 2 * wall - 0.5 * (tl[1] + tr[1])), tr, 16), [ar]])
    cv.fill([cavity], ts.fat * 1.3)
    for x, y, a, b, kind in an.bowel:
        content = (ts.muscle * 1.1, ts.fluid * 0.85, 0.0, ts.muscle * 0.8, ts.fluid * 0.6)[int(kind)]
        cv.fill([ellipse((x, y), (a + 1.5, b + 1.5))], ts.muscle)  # bowel wall
        cv.fill([ellipse((x, y), (a, b))], content)
        if kind == 2:  # gas with a fluid level at the dependent (posterior) side
            cv.fill([np.array([(x - a, y + 0.5 * b), (x + a, y + 0.5 * b), (x + a, y + b), (x - a, y + b)])],
                    ts.muscle)
    for s in SIDES:
        a = joints[s].points[0]
        psoas = a + (s * 8.0, -24.0)
        cv.fill([ellipse(psoas, (17, 12), s * 0.35)], ts.muscle * 1.05)
        cv.fill([ellipse(psoas + (-s * 17.0, -4.0), (4.5, 4.5))], ts.cortex)  # artery: flow void
        cv.fill([ellipse(psoas + (-s * 15.0, 6.0), (6.0, 4.5))], ts.vein)  # vein: slow flow, bright
        cv.fill([ellipse(a + (-s * 12.0, -7.0), (2.2, 2.2))], ts.vein)  # internal iliac branch


def _draw_muscle_planes(cv: Canvas, an: Anatomy, joints: dict[int, JointLine]) -> None:
    ts = an.tissues
    for s in SIDES:
        b = joints[s].points[-1]
        cv.line(bezier(b + (s * 22.0, 18.0), (s * an.body_a * 0.55, b[1] + 30), (s * an.body_a * 0.9, b[1] - 5)),
                ts.fat, 1.2)
        cv.fill([ellipse(b + (s * 28.0, 22.0), (2.0, 2.0))], ts.vein)  # superior gluteal vessel
    cv.line(np.array([(0.0, an.sacrum_y), (0.0, an.body_b)]), ts.fat, 1.5)


def _bone_masks(cv: Canvas, an: Anatomy, t: float, joints: dict[int, JointLine]) -> dict[str, np.ndarray]:
    masks = {"sacrum": cv.mask([_sacrum_outline(an, t, joints)])}
    for s in SIDES:
        masks[f"ilium{s}"] = cv.mask([_ilium_outline(an, joints[s])])
    return masks


def _draw_bones(cv: Canvas, an: Anatomy, t: float, joints, rng) -> SliceAnatomy:
    ts = an.tissues
    bones = _bone_masks(cv, an, t, joints)
    k = max(1, int(round(cv.px(1.3))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    marrow = {name: cv2.erode(m, kernel) for name, m in bones.items()}
    any_bone = np.maximum.reduce(list(bones.values()))
    any_marrow = np.maximum.reduce(list(marrow.values()))
    texture = ts.marrow * (1.0 + 0.12 * smooth_noise(rng, cv.size, 14) + 0.06 * smooth_noise(rng, cv.size, 40))
    cv.put(any_bone, ts.cortex)
    cv.put(any_marrow, texture)
    for s in SIDES:
        j = joints[s]
        cv.fill([np.concatenate([j.surface("sacrum"), j.surface("ilium")[::-1]])], ts.cartilage)
    _draw_sacral_canal(cv, an, t)
    cortex = (any_bone > any_marrow).astype(np.uint8)
    return SliceAnatomy(joints=joints, marrow=marrow, cortex=cortex)


def _draw_sacral_canal(cv: Canvas, an: Anatomy, t: float) -> None:
    ts = an.tissues
    w, d = _sacrum_dims(an, t)
    y = an.sacrum_y + 0.2 * d
    r = 9.0 * (1.0 - 0.35 * t)
    cv.fill([np.array([(-r, y), (r, y), (0.0, y + r * 1.1)])], ts.fluid * 0.9)
    # Anterior sacral foramina show only at some levels between the segments.
    if np.sin(2 * np.pi * (3 * t + an.foramen_phase)) > -0.2:
        for s in SIDES:
            c = (s * 0.2 * w, an.sacrum_y - 0.12 * d)
            cv.fill([ellipse(c, (5.0, 4.0))], ts.fat * 1.5)
            cv.fill([ellipse(c, (2.0, 2.0))], ts.cartilage)  # nerve root


def render_anatomy(cv: Canvas, an: Anatomy, t: float, rng: np.random.Generator) -> SliceAnatomy:
    """Draw the ideal STIR slice at level t into cv.img; return its landmarks.

    Args:
        cv: canvas of the series (its image is overwritten).
        an: the patient's anatomy.
        t: craniocaudal level within the joints, 0..1.
        rng: source of the marrow and muscle texture.

    Returns:
        Joint lines and bone masks, which lesions and mimics are placed by.
    """
    joints = {s: joint_line(an, t, s) for s in SIDES}
    cv.img.fill(0.0)
    _draw_soft_tissue(cv, an, joints)
    muscle = cv.img == np.float32(an.tissues.muscle)
    cv.img[muscle] *= 1.0 + 0.06 * smooth_noise(rng, cv.size, 24)[muscle]
    return _draw_bones(cv, an, t, joints, rng)
