"""Pelvic anatomy at the level of the sacroiliac joints, in patient millimetres.

One `Anatomy` is drawn per virtual patient from an `AnatomyVariant`;
`render_anatomy` draws one axial slice of it at craniocaudal position ``t``
(0 = cranial end of the joints, 1 = caudal end) with STIR-like intensities:
fat dark, fluid bright, marrow intermediate. Coordinates: x to the image
right, y posterior (down the image). Side -1 is the image left (patient
right, radiological convention). Everything that is drawn per side is drawn
independently per side, so every asymmetry is random in sign.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ._canvas import Canvas, bezier, ellipse, smooth_noise, superellipse
from ._variants import AnatomyVariant

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
class Foramen:
    """A sacral foramen on one side: fat halo around a nerve-root sheath that shows on some levels."""

    side: int
    edge_mm: float  # distance from the joint centre line to the outer edge of the fat halo
    ap: float  # antero-posterior position, fraction of the sacral depth from its centre
    radius: float  # mm, the bright root sheath
    brightness: float  # relative to fluid
    cycles: float  # segment levels over the stack
    phase: float
    show: float  # visible where sin(...) exceeds this

    def visible(self, t: float) -> bool:
        return bool(np.sin(2 * np.pi * (self.cycles * t + self.phase)) > self.show)


@dataclass(frozen=True)
class Vessel:
    """A vessel near one joint end: bright (slow venous flow) or dark (arterial flow void)."""

    side: int
    anchor: int  # 0: anterior joint end, -1: posterior joint end
    offset: tuple[float, float]  # mm from the anchor; x is mirrored by side
    drift: tuple[float, float]  # mm moved from the cranial to the caudal end of the stack
    axes: tuple[float, float]  # mm, an oblique vessel is cut as an ellipse
    angle: float
    value: float  # ideal intensity
    levels: tuple[float, float]  # range of t where the vessel is in the slice


@dataclass(frozen=True)
class Anatomy:
    """Randomised, plausible pelvic geometry of one virtual patient (mm)."""

    variant: str
    body_a: float  # half width of the body outline
    body_b: float  # half antero-posterior depth
    body_power: float  # superellipse exponent: how boxy the pelvis is
    body_dx: float  # lateral offset of the body (patient not centred)
    fat_mm: float  # subcutaneous fat thickness (thinner posteriorly)
    sacrum_y: float  # sacrum centre, posterior of the body centre
    sacrum_w: float  # sacral width between the anterior joint ends
    sacrum_d: float  # sacral antero-posterior depth
    crest_mm: float  # height of the median sacral crest
    joint_angle: float  # joint obliquity to the AP axis (radians)
    joint_gap: dict[int, float]  # joint space width per side
    joint_wave: float  # amplitude of the auricular surface undulation
    wave_phase: float
    asym: float  # left-right asymmetry of the joint angle
    wing_span: dict[int, float]  # lateral reach of the iliac wing per side
    wing_drop: dict[int, float]  # anterior reach of the iliac wing tip per side
    foramina: tuple[Foramen, ...]
    vessels: tuple[Vessel, ...]
    bowel: tuple[tuple[float, float, float, float, int], ...]  # x, y, a, b, kind
    free_fluid: tuple[float, float, float, float] | None  # x, y, a, b of a pelvic fluid collection
    osteophytes: tuple[int, ...]  # sides with an anterior bridging osteophyte
    iliac: dict[int, tuple[float, ...]]  # per side: psoas dx, dy, a, b; artery dx, dy, r; vein dx, dy, a, b
    marrow_texture: tuple[float, int, float, int]  # coarse amplitude, cells, fine amplitude, cells
    muscle_texture: float
    tissues: Tissues
    # Patchy marrow (render_variety): islands of red marrow, brighter on STIR, and fatty foci, darker:
    # (share of marrow in islands, their brightening, share in fatty foci, their darkening, cells).
    marrow_patches: tuple[float, float, float, float, int] | None = None


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
    bone: np.ndarray  # uint8 mask of all bone (cortex and marrow)

    def bone_marrow(self, bone: str, side: int) -> np.ndarray:
        """Marrow mask of the sacrum or of the ilium on one side."""
        return self.marrow["sacrum"] if bone == "sacrum" else self.marrow[f"ilium{side}"]


def sample_tissues(rng: np.random.Generator, fat_residual: float, variant: AnatomyVariant) -> Tissues:
    """Draw STIR intensities; fat_residual models imperfect fat suppression (marrow is fatty too)."""
    u = rng.uniform
    return Tissues(
        fat=u(0.04, 0.1) + fat_residual, muscle=u(0.28, 0.45), marrow=u(*variant.marrow) + 0.6 * fat_residual,
        cortex=u(0.01, 0.06), cartilage=u(0.28, 0.75), fluid=u(0.8, 1.0), vein=u(0.45, 1.0), skin=u(0.25, 0.45),
    )


def sample_anatomy(rng: np.random.Generator, variant: AnatomyVariant, tissues: Tissues) -> Anatomy:
    """Draw one virtual patient's pelvic geometry and normal structures from a variant."""
    u, v = rng.uniform, variant
    body_b = u(*v.body_b)
    fat = u(*v.fat_mm)
    sacrum_w, sacrum_d, crest = u(*v.sacrum_w), u(*v.sacrum_d), u(8, 14)
    sacrum_y = body_b - (0.5 * sacrum_d + crest + u(22, 38) + 0.5 * fat)
    gap = u(*v.joint_gap)
    return Anatomy(
        variant=v.name, body_a=u(*v.body_a), body_b=body_b, body_power=u(*v.body_power), body_dx=u(-10, 10),
        fat_mm=fat, sacrum_y=sacrum_y, sacrum_w=sacrum_w, sacrum_d=sacrum_d, crest_mm=crest,
        joint_angle=np.radians(u(*v.joint_angle_deg)), joint_gap={s: gap * u(0.85, 1.15) for s in SIDES},
        joint_wave=u(0.6, 3.0), wave_phase=u(0, 2), asym=np.radians(u(-6, 6)),
        wing_span={s: u(*v.wing_span) for s in SIDES}, wing_drop={s: u(40, 70) for s in SIDES},
        foramina=_sample_foramina(rng, v), vessels=_sample_vessels(rng, v, tissues),
        bowel=_sample_bowel(rng, v, -body_b + fat + 25, sacrum_y - 0.5 * sacrum_d - 6),
        free_fluid=(u(-30, 30), sacrum_y - 0.5 * sacrum_d - u(10, 35), u(6, 18), u(3, 8)) if u() < 0.25 else None,
        osteophytes=tuple(s for s in SIDES if u() < v.osteophyte_p),
        iliac={s: (u(4, 12), -u(20, 30), u(13, 20), u(9, 14), -u(14, 20), -u(0, 8), u(3.0, 5.5),
                   -u(12, 18), u(3, 9), u(4, 7), u(3.5, 5.5)) for s in SIDES},
        marrow_texture=(u(*v.marrow_texture), int(rng.integers(8, 21)), u(0.02, 0.08), int(rng.integers(28, 61))),
        muscle_texture=u(0.03, 0.1), tissues=tissues,
    )


def _sample_foramina(rng: np.random.Generator, v: AnatomyVariant) -> tuple[Foramen, ...]:
    """Anterior foramina on both sides, dorsal ones on some; each side drawn on its own."""
    u = rng.uniform
    out = []
    for s in SIDES:
        out.append(Foramen(s, u(*v.foramen_edge), u(-0.2, -0.05), u(*v.foramen_radius),
                           u(*v.foramen_brightness), u(2.0, 3.5), u(0, 1), u(*v.foramen_show)))
        if u() < 0.5:  # dorsal foramen: smaller, behind and medial
            out.append(Foramen(s, u(*v.foramen_edge) + u(4, 10), u(0.22, 0.32), 0.6 * u(*v.foramen_radius),
                               u(*v.foramen_brightness), u(2.0, 3.5), u(0, 1), u(*v.foramen_show)))
    return tuple(out)


def _sample_vessels(rng: np.random.Generator, v: AnatomyVariant, ts: Tissues) -> tuple[Vessel, ...]:
    """Veins (bright) and arteries (flow voids) at both ends of each joint."""
    u = rng.uniform
    out = []
    for s in SIDES:
        for _ in range(int(rng.integers(v.veins[0], v.veins[1] + 1))):
            anterior = u() < 0.55
            offset = (u(-16, 10), u(-16, -4)) if anterior else (u(-8, 18), u(4, 18))
            r = u(*v.vein_radius)
            dark = u() < 0.25  # an artery: flow void
            lo = u(-0.2, 0.6)
            out.append(Vessel(s, 0 if anterior else -1, offset, (u(-6, 6), u(-6, 6)), (r * u(1.0, 2.2), r),
                              u(0, np.pi), ts.cortex if dark else ts.vein * u(0.7, 1.1), (lo, lo + u(0.3, 1.2))))
    return tuple(out)


def _sample_bowel(rng: np.random.Generator, v: AnatomyVariant, front: float, back: float):
    """Bowel loops between the abdominal wall (front) and the sacrum (back): fluid-filled (bright), soft, gas."""
    u = rng.uniform
    p_fluid = u(*v.bowel_fluid)
    loops = []
    for _ in range(int(rng.integers(v.bowel_loops[0], v.bowel_loops[1] + 1))):
        kind = 1 if u() < p_fluid else int(rng.choice([0, 2, 3, 4], p=[0.4, 0.15, 0.3, 0.15]))
        y = u(min(front, back), back)
        loops.append((u(-85, 85), y, u(7, 22), u(5, 15), kind))
    return tuple(loops)


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
    # The joint space narrows down the stack: 15 % wider than its mean at the cranial slice, 15 % narrower caudally.
    gap = an.joint_gap[side] * (1.0 + 0.15 * np.cos(np.pi * t))
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
    return joint.points[0] + (joint.side * an.wing_span[joint.side], -an.wing_drop[joint.side])


def _ilium_outline(an: Anatomy, joint: JointLine) -> np.ndarray:
    s = joint.side
    surf = joint.surface("ilium")
    a, b = surf[0], surf[-1]
    p1 = b + (-s * 3.0, 12.0)  # posterior superior iliac spine, behind the sacrum
    p2 = b + (s * 20.0, 16.0)
    j0, h0 = (a + p2) / 2, np.linalg.norm(p2 - a) / 2
    perp = np.array([-(p2 - a)[1], (p2 - a)[0]]) / (2 * h0)
    perp = perp if perp[0] * s > 0 else -perp
    k = j0 + perp * an.wing_span[s] * 0.5
    tip = _wing_tip(an, joint)
    centre = bezier(j0, k, tip, 14)
    tangent = np.gradient(centre, axis=0)
    nrm = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    nrm *= np.sign(nrm[0] @ (p2 - j0))  # outer side faces posteriorly at the joint
    half = (3.5 + (h0 - 3.5) * np.linspace(1.0, 0.0, len(centre)) ** 1.6)[:, None]
    return np.concatenate([surf, [p1], centre + nrm * half, (centre - nrm * half)[::-1]])


def _body_outline(an: Anatomy) -> np.ndarray:
    return superellipse(an.body_a, an.body_b, an.body_power) + (an.body_dx, 0.0)


def _draw_soft_tissue(cv: Canvas, an: Anatomy, t: float, joints: dict[int, JointLine]) -> None:
    ts = an.tissues
    body = _body_outline(an)
    cv.fill([body], ts.fat)
    cv.line(np.vstack([body, body[:1]]), ts.skin, 1.0)
    # Muscle inside the subcutaneous fat, which is thinner at the back than at the front.
    inner = superellipse(an.body_a - an.fat_mm, an.body_b - 0.75 * an.fat_mm, an.body_power)
    cv.fill([inner + (an.body_dx, 0.25 * an.fat_mm)], ts.muscle)
    _draw_pelvic_cavity(cv, an, joints)
    _draw_muscle_planes(cv, an, joints)
    _draw_vessels(cv, an, t, joints)


def _draw_pelvic_cavity(cv: Canvas, an: Anatomy, joints: dict[int, JointLine]) -> None:
    ts = an.tissues
    wall = -an.body_b + an.fat_mm + 14
    al, ar = joints[-1].points[0], joints[1].points[0]
    tl, tr = _wing_tip(an, joints[-1]), _wing_tip(an, joints[1])
    cavity = np.concatenate([[al], bezier(tl, (0.0, 2 * wall - 0.5 * (tl[1] + tr[1])), tr, 16), [ar]])
    cv.fill([cavity], ts.fat * 1.3)
    for x, y, a, b, kind in an.bowel:
        content = (ts.muscle * 1.1, ts.fluid * 0.9, 0.0, ts.muscle * 0.8, ts.fluid * 0.6)[int(kind)]
        cv.fill([ellipse((x, y), (a + 1.5, b + 1.5))], ts.muscle)  # bowel wall
        cv.fill([ellipse((x, y), (a, b))], content)
        if kind == 2:  # gas with a fluid level at the dependent (posterior) side
            cv.fill([np.array([(x - a, y + 0.5 * b), (x + a, y + 0.5 * b), (x + a, y + b), (x - a, y + b)])],
                    ts.muscle)
    if an.free_fluid is not None:
        x, y, a, b = an.free_fluid
        cv.fill([ellipse((x, y), (a, b))], ts.fluid)
    for s in SIDES:
        pdx, pdy, pa, pb, adx, ady, ar, vdx, vdy, va, vb = an.iliac[s]
        psoas = joints[s].points[0] + (s * pdx, pdy)
        cv.fill([ellipse(psoas, (pa, pb), s * 0.35)], ts.muscle * 1.05)
        cv.fill([ellipse(psoas + (s * adx, ady), (ar, ar))], ts.cortex)  # external iliac artery: flow void
        cv.fill([ellipse(psoas + (s * vdx, vdy), (va, vb))], ts.vein)  # vein: slow flow, bright


def _draw_vessels(cv: Canvas, an: Anatomy, t: float, joints: dict[int, JointLine]) -> None:
    for ves in an.vessels:
        if not ves.levels[0] <= t <= ves.levels[1]:
            continue
        s = ves.side
        anchor = joints[s].points[ves.anchor]
        dx, dy = ves.offset[0] + t * ves.drift[0], ves.offset[1] + t * ves.drift[1]
        cv.fill([ellipse(anchor + (s * dx, dy), ves.axes, s * ves.angle, 16)], ves.value)


def _draw_muscle_planes(cv: Canvas, an: Anatomy, joints: dict[int, JointLine]) -> None:
    ts = an.tissues
    for s in SIDES:
        b = joints[s].points[-1]
        cv.line(bezier(b + (s * 22.0, 18.0), (s * an.body_a * 0.55, b[1] + 30), (s * an.body_a * 0.9, b[1] - 5)),
                ts.fat, 1.2)
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
    a1, c1, a2, c2 = an.marrow_texture
    pattern = 1.0 + a1 * smooth_noise(rng, cv.size, c1) + a2 * smooth_noise(rng, cv.size, c2)
    texture = ts.marrow * np.maximum(pattern, 0.2)
    if an.marrow_patches is not None:
        texture = texture * _patches(rng, cv.size, an.marrow_patches)
    cv.put(any_bone, ts.cortex)
    cv.put(any_marrow, texture)
    for s in SIDES:
        j = joints[s]
        cv.fill([np.concatenate([j.surface("sacrum"), j.surface("ilium")[::-1]])], ts.cartilage)
        if s in an.osteophytes:
            _draw_osteophyte(cv, an, j)
    _draw_sacral_canal(cv, an, t, joints)
    cortex = (any_bone > any_marrow).astype(np.uint8)
    return SliceAnatomy(joints=joints, marrow=marrow, cortex=cortex, bone=any_bone)


def _patches(rng: np.random.Generator, size: int, patches: tuple[float, float, float, float, int]) -> np.ndarray:
    """Multiplicative field of marrow islands (>1) and fatty foci (<1) from one smooth noise pattern."""
    islands, brighter, foci, darker, cells = patches
    field = smooth_noise(rng, size, cells)
    high, low = np.quantile(field, [1.0 - islands, foci])
    return np.where(field > high, 1.0 + brighter, np.where(field < low, 1.0 - darker, 1.0)).astype(np.float32)


def sample_patches(rng: np.random.Generator, variety: float) -> tuple[float, float, float, float, int] | None:
    """Patchy marrow with probability ``variety`` (0 draws nothing)."""
    if variety <= 0.0 or rng.random() >= variety:
        return None
    return (rng.uniform(0.03, 0.15), rng.uniform(0.15, 0.6), rng.uniform(0.03, 0.2), rng.uniform(0.2, 0.5),
            int(rng.integers(10, 40)))


def _draw_osteophyte(cv: Canvas, an: Anatomy, j: JointLine) -> None:
    # A degenerative beak bridging the anterior joint margin: cortex rim, marrow inside.
    centre = j.points[0] - j.direction * 2.0
    angle = float(np.arctan2(j.normal[1], j.normal[0]))
    cv.fill([ellipse(centre, (j.gap / 2 + 5.0, 4.0), angle, 20)], an.tissues.cortex)
    cv.fill([ellipse(centre, (j.gap / 2 + 3.5, 2.2), angle, 20)], an.tissues.marrow)


def _draw_sacral_canal(cv: Canvas, an: Anatomy, t: float, joints: dict[int, JointLine]) -> None:
    ts = an.tissues
    _, d = _sacrum_dims(an, t)
    y = an.sacrum_y + 0.2 * d
    r = 9.0 * (1.0 - 0.35 * t)
    cv.fill([np.array([(-r, y), (r, y), (0.0, y + r * 1.1)])], ts.fluid * 0.9)
    # Sacral foramina show only at some levels between the segments, a set distance medial to the joint.
    for fo in an.foramina:
        if not fo.visible(t):
            continue
        j = joints[fo.side]
        halo = fo.radius + 2.5
        fy = an.sacrum_y + fo.ap * d
        joint_x = abs(float(np.interp(fy, j.points[:, 1], j.points[:, 0])))
        x = joint_x - (fo.edge_mm + halo) / max(abs(j.normal[0]), 0.5)
        if x < r + halo + 1.0:  # no room beside the canal at this level
            continue
        cv.fill([ellipse((fo.side * x, fy), (halo, fo.radius + 1.5))], ts.fat * 1.5)
        cv.fill([ellipse((fo.side * x, fy), (fo.radius, fo.radius * 0.9))], ts.fluid * fo.brightness)


def render_anatomy(cv: Canvas, an: Anatomy, t: float, rng: np.random.Generator,
                   fat_field: np.ndarray | None = None) -> SliceAnatomy:
    """Draw the ideal STIR slice at level t into cv.img; return its landmarks.

    Args:
        cv: canvas of the series (its image is overwritten).
        an: the patient's anatomy.
        t: craniocaudal level within the joints, 0..1.
        rng: source of the marrow and muscle texture.
        fat_field: (size, size) multiplicative field on fat (imperfect suppression), one per series.

    Returns:
        Joint lines and bone masks, which lesions and mimics are placed by.
    """
    joints = {s: joint_line(an, t, s) for s in SIDES}
    cv.img.fill(0.0)
    _draw_soft_tissue(cv, an, t, joints)
    muscle = cv.img == np.float32(an.tissues.muscle)
    cv.img[muscle] *= 1.0 + an.muscle_texture * smooth_noise(rng, cv.size, 24)[muscle]
    if fat_field is not None:
        fat = cv.img == np.float32(an.tissues.fat)
        cv.img[fat] *= fat_field[fat]
    return _draw_bones(cv, an, t, joints, rng)
