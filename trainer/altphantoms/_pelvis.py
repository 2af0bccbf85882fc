"""Axial STIR anatomy through the sacroiliac joints, written from its description.

One virtual patient is a set of measurements in millimetres (``Pelvis``); a
slice is that patient cut at a level ``t`` (0 at the upper, 1 at the lower end
of the joints). Orientation: image top anterior, image right = patient left.

What a reader of an axial STIR through the sacroiliac joints sees, and what is
drawn: skin and subcutaneous fat (dark, fat suppressed) around the body;
gluteus maximus, medius and minimus behind and beside the iliac wings, the
iliacus on the inner face of each wing, the psoas beside the sacral promontory
and the paraspinal muscles behind the sacrum, separated by thin fat planes;
the sacrum in the middle with its body, alae, sacral canal (bright CSF above
the end of the dural sac, fat and roots below), anterior and posterior
foramina at the S1-S3 levels and the median crest; both ilia with marrow that
is darker than muscle and a dark cortex; the two joint spaces, oblique and
converging posteriorly, with intermediate-bright cartilage and an undulating
auricular surface; the pelvic cavity with visceral fat, bowel loops (fluid
bright, gas dark with a level, content intermediate), the rectum and, low
down, the bladder; the iliac vessels (arteries dark by flow void, veins
bright) and small veins near the joint ends and the foramina.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ._shapes import Field, Grid, Scene, band, capsule, ellipse, mirror, polygon, radial_blob, resample, spline
from ._stir import Sequence

SIDES = (-1, 1)  # image left (patient right), image right (patient left)
SIDE_NAME = {-1: "R", 1: "L"}  # patient side of each image side


@dataclass(frozen=True)
class Loop:
    """A bowel loop: a tube crossing slices (its centre drifts with z)."""

    xy: tuple[float, float]
    axes: tuple[float, float, float]  # aspect (minor/major) and orientation (radians), wall mm
    drift: tuple[float, float]  # mm of in-plane travel per mm of z
    z0: float
    half_len: float  # mm along z
    r: float
    kind: str  # "fluid", "chyme" or "gas"
    level: float  # gas-fluid level as a fraction of the diameter


@dataclass(frozen=True)
class Pelvis:
    """One virtual patient's measurements (mm); image-right side values, mirrored with asymmetry."""

    body_hw: float
    body_front: float
    body_back: float
    body_power: float
    body_harm: np.ndarray  # (k, amplitude, phase) rows
    fat: tuple[float, float, float]  # front, side, back thickness
    buttock_fat: float
    cleft_t: float
    sac_y: float
    sac_depth: float
    sac_hw: float
    crest: float
    canal_hw: float
    canal_depth: float
    dural_end_t: float
    foramen_t: tuple[float, float, float]
    joint_ant: dict  # side -> (x, y)
    joint_post: dict
    joint_wave: dict  # side -> (amplitude, wavelength, phase)
    joint_width: float
    wing: tuple[float, float]  # wing tip (x, y)
    wing_thick: tuple[float, float]  # tip, middle
    psis: tuple[float, float]  # offset of the posterior iliac spine from the posterior joint end
    cortex: tuple[float, float]  # sacrum, ilium
    psoas: tuple[float, float, float, float]  # dx, dy, rx, ry
    iliacus: float
    rectus: tuple[float, float, float]
    loops: tuple[Loop, ...]
    bladder: tuple[float, float]  # level where it appears, radius
    rectum: tuple[float, float]
    vessel_jitter: np.ndarray = field(repr=False)


def sample_pelvis(rng: np.random.Generator) -> Pelvis:
    """Draw one patient's anatomy."""
    k = rng.uniform(0.9, 1.1)  # skeletal size
    hw = rng.uniform(145, 190)
    fat = (rng.uniform(8, 38), rng.uniform(10, 40), rng.uniform(8, 30))
    ant, post, wave = {}, {}, {}
    xa, ya, xp, yp = rng.uniform(52, 64) * k, rng.uniform(14, 26), rng.uniform(28, 37) * k, rng.uniform(52, 62)
    for s in SIDES:
        ant[s] = (xa + rng.normal(0, 1.5), ya + rng.normal(0, 1.5))
        post[s] = (xp + rng.normal(0, 1.2), yp + rng.normal(0, 1.5))
        wave[s] = (rng.uniform(0.3, 1.1), rng.uniform(12, 24), rng.uniform(0, 2 * np.pi))
    inner_hw = hw - fat[1]
    wing_x = min(rng.uniform(112, 140) * k, inner_hw - 20)
    harm = np.array([[kk, rng.normal(0, 0.018), rng.uniform(0, 2 * np.pi)] for kk in (2, 3, 4, 5)])
    return Pelvis(
        body_hw=hw, body_front=rng.uniform(95, 130), body_back=rng.uniform(95, 125), body_power=rng.uniform(2.1, 2.9),
        body_harm=harm, fat=fat, buttock_fat=rng.uniform(0, 20), cleft_t=rng.uniform(0.45, 1.3),
        sac_y=rng.uniform(30, 40), sac_depth=rng.uniform(26, 34) * k, sac_hw=rng.uniform(20, 27) * k,
        crest=rng.uniform(5, 11), canal_hw=rng.uniform(10, 14), canal_depth=rng.uniform(9, 14),
        dural_end_t=rng.uniform(0.3, 0.6), foramen_t=tuple(sorted(rng.uniform([0.05, 0.4, 0.75], [0.2, 0.55, 0.95]))),
        joint_ant=ant, joint_post=post, joint_wave=wave, joint_width=rng.uniform(1.4, 2.6),
        wing=(wing_x, rng.uniform(-28, -6)), wing_thick=(rng.uniform(4, 7), rng.uniform(7, 12)),
        psis=(rng.uniform(8, 16), rng.uniform(10, 18)), cortex=(rng.uniform(0.9, 1.6), rng.uniform(1.1, 2.0)),
        psoas=(rng.uniform(14, 24), rng.uniform(8, 16), rng.uniform(13, 20), rng.uniform(11, 16)),
        iliacus=rng.uniform(9, 17), rectus=(rng.uniform(10, 18), rng.uniform(12, 20), rng.uniform(4, 8)),
        loops=_sample_loops(rng), bladder=(rng.uniform(0.6, 1.3), rng.uniform(18, 34)),
        rectum=(rng.uniform(0.3, 0.7), rng.uniform(9, 15)), vessel_jitter=rng.normal(0, 1.0, (8, 2)),
    )


def _sample_loops(rng) -> tuple[Loop, ...]:
    """Bowel loops packed on a jittered lattice over the pelvis; each is a tube over part of the stack."""
    loops = []
    step = rng.uniform(20, 27)
    for gy in np.arange(-105, 20, step * 0.87):
        for gx in np.arange(-135, 136, step) + (step / 2 if int(gy / step) % 2 else 0):
            if rng.random() < 0.15:
                continue
            kind = str(rng.choice(["fluid", "chyme", "gas", "collapsed"], p=[0.08, 0.5, 0.07, 0.35]))
            loops.append(Loop(xy=(gx + rng.normal(0, step * 0.2), gy + rng.normal(0, step * 0.2)),
                              drift=tuple(rng.normal(0, 0.35, 2)), z0=rng.uniform(-50, 50),
                              half_len=rng.uniform(15, 45), r=step * rng.uniform(0.42, 0.68), kind=kind,
                              level=rng.uniform(0.3, 0.7),
                              axes=(rng.uniform(0.55, 1.0), rng.uniform(0, np.pi), rng.uniform(1.2, 2.6))))
    return tuple(loops)


# --- one level ----------------------------------------------------------------------------------------------


@dataclass
class Level:
    """What a slice's truth and lesions need to know about its anatomy."""

    t: float
    joints: dict  # side -> (m, 2) world points, anterior to posterior
    lateral: dict  # side -> unit normal pointing into the ilium (mean over the joint)
    bones: dict = field(default_factory=dict)  # "sacrum", ("ilium", side) -> bone Field (outer surface)
    marrow: dict = field(default_factory=dict)  # same keys -> marrow Field (inside the cortex)
    holes: list = field(default_factory=list)  # Fields cut out of the sacral marrow (canal, foramina)
    findings: list = field(default_factory=list)
    joint_width: float = 2.0

    def marrow_alpha(self, key, roi: tuple[slice, slice], soft: float) -> np.ndarray:
        """Share of each pixel of a window that is marrow of one bone (cortex, canal and foramina excluded)."""
        shape = (roi[0].stop - roi[0].start, roi[1].stop - roi[1].start)
        f = self.marrow.get(key)
        if f is None:
            return np.zeros(shape, np.float32)
        out = np.zeros(shape, np.float32)
        inter = _overlap(f.roi, roi)
        if inter is None:
            return out
        out[_local(inter, roi)] = f.coverage(soft)[_local(inter, f.roi)]
        for h in self.holes if key == "sacrum" else ():
            hi = _overlap(h.roi, roi)
            if hi is not None:
                out[_local(hi, roi)] *= 1.0 - h.coverage(soft)[_local(hi, h.roi)]
        return out

    def bone_alpha(self, roi: tuple[slice, slice], soft: float) -> np.ndarray:
        """Share of each pixel of a window inside any bone (cortex included)."""
        shape = (roi[0].stop - roi[0].start, roi[1].stop - roi[1].start)
        out = np.zeros(shape, np.float32)
        for f in self.bones.values():
            inter = _overlap(f.roi, roi)
            if inter is not None:
                sub = out[_local(inter, roi)]
                np.maximum(sub, f.coverage(soft)[_local(inter, f.roi)], out=sub)
        return out


def _overlap(a: tuple[slice, slice], b: tuple[slice, slice]) -> tuple[slice, slice] | None:
    r0, r1 = max(a[0].start, b[0].start), min(a[0].stop, b[0].stop)
    c0, c1 = max(a[1].start, b[1].start), min(a[1].stop, b[1].stop)
    return (slice(r0, r1), slice(c0, c1)) if r0 < r1 and c0 < c1 else None


def _local(inner: tuple[slice, slice], outer: tuple[slice, slice]) -> tuple[slice, slice]:
    return (slice(inner[0].start - outer[0].start, inner[0].stop - outer[0].start),
            slice(inner[1].start - outer[1].start, inner[1].stop - outer[1].start))


class Textures:
    """Per-slice tissue textures on the whole grid (multiplicative, about 1)."""

    def __init__(self, grid: Grid, rng: np.random.Generator, marrow_amp: float, red_amp: float) -> None:
        n, mm = grid.size, grid.mm_per_px
        self.marrow = 1.0 + marrow_amp * np.tanh(2.0 * _band_noise(rng, n, 0.5 / mm, 1.8 / mm))
        red = _band_noise(rng, n, 4.0 / mm, 9.0 / mm)
        self.marrow *= 1.0 + red_amp * np.clip(red * 2.0 - 0.6, 0.0, 1.0)  # patchy red marrow, islands
        muscle = cv2_blur(rng.standard_normal((n, n)).astype(np.float32), 3.5 / mm, 0.6 / mm)
        self.muscle = 1.0 + 0.07 * muscle / (muscle.std() + 1e-6)
        self.fat = 1.0 + 0.15 * np.tanh(_band_noise(rng, n, 0.8 / mm, 3.0 / mm))


def cv2_blur(img: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Anisotropic Gaussian blur (sigmas in pixels)."""
    return cv2.GaussianBlur(img, (0, 0), sigmaX=max(sx, 0.3), sigmaY=max(sy, 0.3))


def _band_noise(rng, n: int, s1: float, s2: float) -> np.ndarray:
    """Difference-of-Gaussians noise, unit spread (a band-pass texture with a physical scale)."""
    w = rng.standard_normal((n, n)).astype(np.float32)
    d = cv2_blur(w, s1, s1) - cv2_blur(w, s2, s2)
    return d / (d.std() + 1e-6)


def joint_curve(pel: Pelvis, side: int, t: float) -> np.ndarray:
    """The joint line at level t, anterior end first, with the auricular undulation."""
    ax, ay = pel.joint_ant[side]
    px, py = pel.joint_post[side]
    a = np.array([ax * (1 - 0.2 * t), ay + 6 * t])
    p = np.array([px * (1 - 0.1 * t), py - 4 * t])
    d = p - a
    length = float(np.hypot(*d))
    normal = np.array([d[1], -d[0]]) / length  # points laterally (into the ilium) for the image-right side
    amp, lam, phase = pel.joint_wave[side]
    s = np.linspace(0, 1, max(8, int(length / 1.5)))[:, None]
    wave = amp * np.sin(2 * np.pi * s * length / lam + phase + 2.5 * t) * np.sqrt(np.sin(np.pi * s))
    pts = a + s * d + wave * normal
    return mirror(pts, side)


def _lateral_region(joint: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A polygon covering everything lateral of a joint line (extended at both ends), and its normal."""
    a, p = joint[0], joint[-1]
    d = (p - a) / np.hypot(*(p - a))
    normal = np.array([d[1], -d[0]])
    if normal[0] * side < 0:
        normal = -normal
    front = a - 30 * d
    back = p + np.array([0.0, 35.0])
    far = 400.0 * np.array([side, 0.0])
    pts = np.vstack([front, joint, back, back + far, front + far])
    return pts, normal


def draw_level(scene: Scene, pel: Pelvis, seq: Sequence, t: float, z: float, tex: Textures) -> Level:
    """Paint one axial slice of the patient at level t (z in mm for tubes that cross slices)."""
    joints = {s: joint_curve(pel, s, t) for s in SIDES}
    level = Level(t, joints, {}, joint_width=pel.joint_width)
    inner_back, inner_sd = _body(scene, pel, seq, t, tex)
    geo = {s: _Geometry(pel, t, mirror(joints[s], s)) for s in SIDES}
    _muscle_planes(scene, pel, seq, geo, inner_back, inner_sd)
    cavity = _cavity(scene, pel, seq, geo, tex)
    _pelvic_contents(scene, pel, seq, geo, cavity, t, z)
    _vessels(scene, pel, seq, geo, t)
    _bones(scene, pel, seq, geo, level, tex)
    _sacral_interior(scene, pel, seq, geo, level)
    _joint_spaces(scene, seq, joints, pel)
    return level


class _Geometry:
    """Landmarks of one level derived from the patient's measurements (image-right side, x > 0)."""

    def __init__(self, pel: Pelvis, t: float, joint: np.ndarray) -> None:
        self.t = t
        self.y_ant = pel.sac_y - pel.sac_depth * (1 - 0.3 * t)  # anterior midline of the sacrum
        self.body_hw = pel.sac_hw * (1 - 0.3 * t)
        self.a, self.p = joint[0], joint[-1]
        self.y_post = self.p[1] + 3.0  # posterior surface of the sacrum
        f = 1 - 0.5 * t
        self.wing = np.array([self.a[0] + (pel.wing[0] - self.a[0]) * f, self.a[1] + (pel.wing[1] - self.a[1]) * f])
        self.wing_mid_th = pel.wing_thick[1] * (1 + 0.7 * t)
        self.canal_top = self.y_ant + pel.sac_depth * (0.92 - 0.25 * t)
        self.psoas_c = np.array([self.body_hw + pel.psoas[0] + 10 * t, self.y_ant - pel.psoas[1] - 14 * t])
        self.psoas_r = (pel.psoas[2] * (1 + 0.25 * t), pel.psoas[3])

    def wing_inner(self) -> np.ndarray:
        a, w = self.a, self.wing
        return np.array([a + [5.0, -9.0], [a[0] + 0.45 * (w[0] - a[0]), a[1] + 0.62 * (w[1] - a[1])], w + [-3.0, 3.0]])

    def wing_outer(self, pel: Pelvis) -> np.ndarray:
        a, w, p = self.a, self.wing, self.p
        th_tip, th_mid = pel.wing_thick[0], self.wing_mid_th
        mid = np.array([a[0] + 0.5 * (w[0] - a[0]) + th_mid * 0.8, a[1] + 0.5 * (w[1] - a[1]) + th_mid * 0.7])
        return np.array([w + [th_tip * 0.8, th_tip * 0.6], mid, a + [22.0 + 6 * self.t, 14.0],
                         p + [pel.psis[0] + 7.0, pel.psis[1] - 8.0]])


def _body(scene: Scene, pel: Pelvis, seq: Sequence, t: float, tex: Textures) -> tuple[float, np.ndarray]:
    """Skin, subcutaneous fat and the muscle compartment.

    Returns the posterior midline y of the muscle compartment and its signed distance on the whole grid.
    """
    b = pel.body_harm

    def outer(phi):
        c, s = np.cos(phi), np.sin(phi)
        depth = np.where(s < 0, pel.body_front, pel.body_back)
        r = (np.abs(c / pel.body_hw) ** pel.body_power + np.abs(s / depth) ** pel.body_power) ** (-1 / pel.body_power)
        r = r * (1 + sum(a * np.cos(k * phi + ph) for k, a, ph in b))
        cleft = np.clip((t - pel.cleft_t) * 3, 0, 1) * 18.0
        return r - cleft * np.exp(-(((phi - np.pi / 2) / 0.06) ** 2))

    def thick(phi):
        s = np.sin(phi)
        f, sd, bk = pel.fat
        base = sd + (f - sd) * np.clip(-s, 0, 1) ** 2 + (bk - sd) * np.clip(s, 0, 1) ** 2
        buttock = pel.buttock_fat * (0.5 + t) * np.exp(-(((np.abs(phi - np.pi / 2) - 0.75) / 0.35) ** 2))
        return base + buttock

    reach = max(pel.body_hw, pel.body_front, pel.body_back) * 1.1 + 10
    body = radial_blob(scene.grid, (0.0, 0.0), outer, reach)
    scene.paint(body, seq["skin"])
    skin_in = type(body)(body.roi, body.sd + 1.8)
    f_w, f_f = seq["fat"]
    scene.paint(skin_in, (f_w, f_f * scene.window(skin_in, tex.fat)))
    inner = radial_blob(scene.grid, (0.0, 0.0), lambda phi: outer(phi) - thick(phi), reach)
    m_w, m_f = seq["muscle"]
    scene.paint(inner, (m_w * scene.window(inner, tex.muscle), m_f))
    return float(outer(np.pi / 2) - thick(np.pi / 2)), inner.full(scene.grid.size)


def _muscle_planes(scene: Scene, pel: Pelvis, seq: Sequence, geo: dict, inner_back: float,
                   inner_sd: np.ndarray) -> None:
    """Fat planes between the gluteal, paraspinal and abdominal wall muscles, up to the subcutaneous fat."""
    fat = seq["fat"]

    def plane(pts, half):
        f = band(scene.grid, pts, half)
        if f is not None:
            scene.paint(f, fat, alpha=np.clip(0.5 - inner_sd[f.roi] / scene.soft, 0, 1))

    for s in SIDES:
        g = geo[s]
        p = g.p
        psis = p + np.array(pel.psis)
        planes = [
            # gluteus maximus / medius: from the posterior ilium out to the lateral fat
            spline([psis + [6, -4], psis + [40, -6], [pel.body_hw * 0.8, p[1] - 12], [pel.body_hw * 1.05, p[1] - 40]],
                   6, closed=False),
            # gluteus medius / minimus: parallel to the outer face of the wing
            spline(g.wing_outer(pel)[:3] + [[7, 6], [9, 7], [8, 8]], 6, closed=False),
            # paraspinal / gluteus maximus
            np.array([psis, psis + [6, 30], psis + [10, inner_back - psis[1] + 25]]),
        ]
        for pts in planes:
            plane(mirror(pts, s), 0.9)
    plane(np.array([[0, geo[1].y_post + pel.crest], [0, inner_back + 20]]), 0.7)
    # rectus abdominis with its sheath and the linea alba
    dx, rx, ry = pel.rectus
    front = -(pel.body_front - pel.fat[0])
    for s in SIDES:
        c = (s * (dx + rx * 0.9), front + ry + 2)
        scene.paint(ellipse(scene.grid, c, (rx + 1.6, ry + 1.6)), fat)
        scene.paint(ellipse(scene.grid, c, (rx, ry)), seq["muscle"])


def _cavity(scene: Scene, pel: Pelvis, seq: Sequence, geo: dict, tex: Textures) -> Field | None:
    """Visceral fat filling the pelvis between the wings, the sacrum and the abdominal wall."""
    front = -(pel.body_front - pel.fat[0]) + 2 * pel.rectus[2] + 6

    def half(g: _Geometry) -> list:
        inner = g.wing_inner()
        return [[inner[2][0] * 0.55, front + 4], inner[2] + [-4, 2], inner[1] + [-3, 2], g.a + [-6, -5],
                [g.body_hw + 4, g.y_ant - 1]]

    ctrl = np.vstack([[[0.0, front]], half(geo[1]), [[0.0, geo[1].y_ant - 2]], mirror(half(geo[-1]), -1)[::-1]])
    cav = polygon(scene.grid, spline(ctrl, 6))
    f_w, f_f = seq["fat"]
    scene.paint(cav, (f_w, f_f * (scene.window(cav, tex.fat) if cav else 1.0)))
    muscle = seq["muscle"]
    for s in SIDES:
        g = geo[s]
        # iliacus along the inner face of the wing, psoas beside the promontory (fat halo first)
        il = spline(g.wing_inner(), 6, closed=False) + [[-pel.iliacus * 0.45, -pel.iliacus * 0.1]]
        scene.paint(band(scene.grid, mirror(il, s), pel.iliacus / 2), muscle)
        c = (s * g.psoas_c[0], g.psoas_c[1])
        rx, ry = g.psoas_r
        scene.paint(ellipse(scene.grid, c, (rx + 1.5, ry + 1.5), s * 0.5), seq["fat"])
        scene.paint(ellipse(scene.grid, c, (rx, ry), s * 0.5), (muscle[0] * 1.04, muscle[1]))
    return cav


def _inside(f: Field | None, cav_sd: np.ndarray) -> float | np.ndarray:
    """Alpha that keeps a shape inside the cavity (with a millimetre of fat to spare)."""
    if f is None:
        return 1.0
    return np.clip(0.5 - (cav_sd[f.roi] + 1.0), 0.0, 1.0)


def _pelvic_contents(scene: Scene, pel: Pelvis, seq: Sequence, geo: dict, cav: Field | None, t: float,
                     z: float) -> None:
    """Bowel loops, rectum and bladder."""
    y_ant = geo[1].y_ant
    cav_sd = cav.full(scene.grid.size) if cav is not None else np.full((scene.grid.size,) * 2, 1e3, np.float32)
    for lp in pel.loops:
        dz = z - lp.z0
        if abs(dz) > lp.half_len:
            continue
        r = lp.r * np.sqrt(max(0.4, 1 - (dz / lp.half_len) ** 2))
        c = (lp.xy[0] + lp.drift[0] * dz, min(lp.xy[1] + lp.drift[1] * dz, y_ant - r - 4))
        _loop(scene, seq, c, r, lp.kind, lp.level, cav_sd, lp.axes)
    t_rect, r_rect = pel.rectum
    if t > t_rect:
        _loop(scene, seq, (4.0, y_ant - r_rect - 3), r_rect, "chyme" if t < 0.8 else "gas", 0.4, cav_sd,
              (0.8, 0.0, 2.5))
    t_bl, r_bl = pel.bladder
    if t > t_bl:
        r = r_bl * min(1.0, np.sqrt((t - t_bl) / 0.3 + 0.1))
        front = -(pel.body_front - pel.fat[0]) + 2 * pel.rectus[2] + 8
        c = (0.0, front + r * 0.75)
        scene.paint(ellipse(scene.grid, c, (r * 1.25 + 1.5, r * 0.75 + 1.5)), seq["bowel_wall"])
        scene.paint(ellipse(scene.grid, c, (r * 1.25, r * 0.75)), seq["urine"])


def _loop(scene: Scene, seq: Sequence, c, r: float, kind: str, level: float, cav_sd: np.ndarray, axes) -> None:
    """One bowel loop in cross-section: wall, then content (fluid, chyme, gas over fluid, or collapsed)."""
    aspect, angle, th = axes
    wall = ellipse(scene.grid, c, (r, r * aspect), angle)
    scene.paint(wall, seq["bowel_wall"], alpha=_inside(wall, cav_sd))
    lumen = ellipse(scene.grid, c, (r - th, r * aspect - th), angle)
    if lumen is None or r * aspect < th + 1.5 or kind == "collapsed":
        return
    keep = _inside(lumen, cav_sd)
    if kind == "gas":
        rows = np.arange(lumen.roi[0].start, lumen.roi[0].stop, dtype=np.float32)[:, None]
        centre_row = scene.grid.to_px(np.array([c]))[0, 1]
        gas = rows < centre_row + (level - 0.5) * 2 * r * aspect / scene.grid.spacing  # gas rises anteriorly
        scene.paint(lumen, seq["bowel_fluid"], alpha=keep)
        scene.paint(lumen, seq["gas"], alpha=keep * gas)
    else:
        scene.paint(lumen, seq["bowel_fluid" if kind == "fluid" else "chyme"], alpha=keep)


def _vessels(scene: Scene, pel: Pelvis, seq: Sequence, geo: dict, t: float) -> None:
    """Iliac arteries (flow void) and veins (bright), internal iliac branches near the joint, sacral veins."""
    jit = pel.vessel_jitter
    for i, s in enumerate(SIDES):
        g = geo[s]
        pc, (rx, ry) = g.psoas_c, g.psoas_r
        art = np.array([pc[0] - rx * 0.7 - 6 * (1 - t), pc[1] - ry - 3]) + jit[i]
        vein = art + [-5.0, 6.0] + jit[2 + i] * 0.5
        for c, r, kind in ((vein, (5.5, 4.2), "vein"), (art, (4.0, 4.0), "artery")):
            scene.paint(ellipse(scene.grid, mirror([c], s)[0], (r[0] + 1.2, r[1] + 1.2)), seq["fat"])
            scene.paint(ellipse(scene.grid, mirror([c], s)[0], r), seq[kind])
        # internal iliac artery and veins just anterior and medial to the joint's front
        base = g.a + [-9.0, -8.0] + jit[4 + i]
        scene.paint(ellipse(scene.grid, mirror([base], s)[0], (2.8, 2.8)), seq["artery"])
        for off, r in (([-4.5, 4.0], 3.0), ([3.5, -3.5], 2.4)):
            scene.paint(ellipse(scene.grid, mirror([base + off], s)[0], (r, r * 0.8)), seq["vein"])
        # lateral sacral vein at the anterior surface of the sacrum
        scene.paint(ellipse(scene.grid, (s * (g.body_hw + 3), g.y_ant - 2.5), (1.8, 1.5)), seq["vein"])


def _bones(scene: Scene, pel: Pelvis, seq: Sequence, geo: dict, level: Level, tex: Textures) -> None:
    """Sacrum and both ilia: cortex, then marrow inside it; clipped to leave the joint spaces."""
    half = pel.joint_width / 2
    sac_f = polygon(scene.grid, _sacrum_outline(pel, geo))
    for s in SIDES:
        lat, normal = _lateral_region(level.joints[s], s)
        level.lateral[s] = normal
        il = polygon(scene.grid, mirror(_ilium_outline(pel, geo[s]), s))
        if il is not None:
            il_lat = polygon(scene.grid, lat, roi=il.roi)
            level.bones[("ilium", s)] = Field(il.roi, np.maximum(il.sd, il_lat.sd + half))
        if sac_f is not None:
            sac_lat = polygon(scene.grid, lat, roi=sac_f.roi)
            sac_f = Field(sac_f.roi, np.maximum(sac_f.sd, -sac_lat.sd + half))
    if sac_f is not None:
        level.bones["sacrum"] = sac_f
    for key, bone in level.bones.items():
        th = pel.cortex[0] if key == "sacrum" else pel.cortex[1]
        scene.paint(bone, seq["cortex"])
        marrow = Field(bone.roi, bone.sd + th)
        level.marrow[key] = marrow
        w, f = seq["marrow"]
        tx = scene.window(marrow, tex.marrow)
        scene.paint(marrow, (w * tx, f * (2.0 - tx) ** 0.5))


def _sacrum_half(pel: Pelvis, g: _Geometry) -> list:
    """Control points of the image-right half of the sacrum, anterior midline excluded, to the crest."""
    a, p, t = g.a, g.p, g.t
    d = (p - a) / np.hypot(*(p - a))
    n = np.array([d[1], -d[0]])
    return [[g.body_hw * 0.6, g.y_ant + 0.3], [g.body_hw, g.y_ant + 2.5], [0.5 * (g.body_hw + a[0]), a[1] - 1.5],
            a - 3 * d + 4 * n, a + 0.5 * (p - a) + 4 * n, p + 4 * n, p + [1.0, 6.0], [p[0] * 0.55, g.y_post + 1],
            [7.0, g.y_post + 1.5], [2.5, g.y_post + pel.crest * (1 - 0.4 * t)]]


def _sacrum_outline(pel: Pelvis, geo: dict) -> np.ndarray:
    g = geo[1]
    crest = [[0.0, g.y_post + pel.crest * (1 - 0.4 * g.t) + 1.0]]
    ctrl = np.vstack([[[0.0, g.y_ant]], _sacrum_half(pel, g), crest, mirror(_sacrum_half(pel, geo[-1]), -1)[::-1]])
    return spline(ctrl, 5)


def _ilium_outline(pel: Pelvis, g: _Geometry) -> np.ndarray:
    """Image-right ilium: joint side (medial of the joint line, clipped later), wing, posterior spine."""
    a, p = g.a, g.p
    d = (p - a) / np.hypot(*(p - a))
    n = np.array([d[1], -d[0]])
    psis = p + np.array(pel.psis)
    inner, outer = g.wing_inner(), g.wing_outer(pel)
    ctrl = [a - 4 * n - 2 * d, inner[0], inner[1], inner[2], g.wing + [1.5, -1.0], outer[0], outer[1], outer[2],
            outer[3], psis + [3.0, 1.0], psis + [-5.0, 2.0], p - 4 * n + [0.0, 8.0], a + 0.5 * (p - a) - 4 * n]
    return spline(ctrl, 6)


def _sacral_interior(scene: Scene, pel: Pelvis, seq: Sequence, geo: dict, level: Level) -> None:
    """Sacral canal (CSF above the end of the dural sac, fat and roots below) and the foramina."""
    g = geo[1]
    t = g.t
    hw, depth = pel.canal_hw * (1 - 0.35 * t), pel.canal_depth * (1 - 0.45 * t)
    y0 = g.canal_top
    ctrl = np.array([[-hw, y0], [0.0, y0 - 1.0], [hw, y0], [hw * 0.35, y0 + depth * 0.7], [0.0, y0 + depth],
                     [-hw * 0.35, y0 + depth * 0.7]])
    canal = polygon(scene.grid, spline(ctrl, 5))
    if canal is None:
        return
    level.holes.append(canal)
    if t < pel.dural_end_t:
        scene.paint(canal, seq["csf"])
    else:
        scene.paint(canal, seq["fat"])
        for x in (-0.5, -0.2, 0.2, 0.5):
            scene.paint(ellipse(scene.grid, (x * hw, y0 + depth * 0.3), (1.1, 1.1)), seq["nerve"])
    for k, tf in enumerate(pel.foramen_t):
        strength = 1 - abs(t - tf) / 0.07
        if strength <= 0:
            continue
        r = (4.0, 3.3, 2.6)[k] * (0.55 + 0.45 * strength)
        for s in SIDES:
            # the anterior foramen: a root in fat with a vein, where the canal's lateral recess opens forward
            outer = np.array([s * (geo[s].body_hw + 4.0), g.y_ant + r + 1.5])
            recess = np.array([s * hw * 0.9, y0 + 1.0])
            inner = outer + 0.35 * (recess - outer)
            hole = capsule(scene.grid, outer, inner, r, r * 0.75)
            if hole is not None:
                level.holes.append(hole)
            scene.paint(hole, seq["fat"])
            scene.paint(ellipse(scene.grid, outer + 0.15 * (recess - outer), (r * 0.5, r * 0.5)), seq["nerve"])
            scene.paint(ellipse(scene.grid, outer + [s * r * 0.5, -r * 0.45], (r * 0.3, r * 0.3)), seq["vein"])
            # the root sleeve leaving the canal (CSF), seen for a few millimetres only
            sleeve = capsule(scene.grid, recess, recess + 0.2 * (outer - recess), r * 0.45)
            if sleeve is not None:
                level.holes.append(sleeve)
            scene.paint(sleeve, seq["csf"] if t < pel.dural_end_t + 0.1 else seq["nerve"])
        level.findings.append("foramina")


def _joint_spaces(scene: Scene, seq: Sequence, joints: dict, pel: Pelvis) -> None:
    """Cartilage along each joint line, between the two subchondral plates."""
    for s in SIDES:
        pts = resample(joints[s], 1.0)
        scene.paint(band(scene.grid, pts, pel.joint_width / 2 + 0.15), seq["cartilage"])
