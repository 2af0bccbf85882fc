"""Named anatomy variants: shape regimes a virtual patient is drawn from.

Every variant is a set of ranges for the pelvic geometry and for the normal
structures that are bright on STIR (sacral foramina, veins, bowel fluid); a
series draws its own values inside them, so variants overlap at their edges
but differ in their typical look. ``generate_series(anatomy=None)`` draws one
of the training variants at random. ``elderly`` is held out of training on
purpose (narrow joints, fatty patchy marrow, anterior osteophytes, large
tortuous veins: a regime the training variants never draw) for
out-of-distribution tests.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

Range = tuple[float, float]


@dataclass(frozen=True)
class AnatomyVariant:
    """Ranges of one anatomy regime (mm unless noted; intensities in ideal STIR units)."""

    name: str
    description: str
    body_a: Range = (150, 195)  # half width of the body outline
    body_b: Range = (100, 135)  # half antero-posterior depth
    body_power: Range = (2.2, 3.0)  # superellipse exponent (boxiness)
    fat_mm: Range = (10, 38)  # subcutaneous fat
    sacrum_w: Range = (92, 118)
    sacrum_d: Range = (36, 48)
    joint_angle_deg: Range = (18, 34)
    joint_gap: Range = (1.5, 4.0)
    wing_span: Range = (55, 85)
    foramen_radius: Range = (1.2, 3.5)  # radius of the bright nerve-root sheath
    foramen_brightness: Range = (0.3, 0.9)  # relative to fluid
    foramen_edge: Range = (7, 20)  # mm from the joint centre line to the foramen's fat halo
    foramen_show: Range = (-0.6, 0.3)  # threshold: lower shows the foramina on more levels
    veins: tuple[int, int] = (0, 4)  # periarticular veins per side (inclusive)
    vein_radius: Range = (1.2, 3.5)
    bowel_loops: tuple[int, int] = (4, 12)
    bowel_fluid: Range = (0.1, 0.5)  # probability that a loop holds fluid
    marrow: Range = (0.16, 0.28)
    marrow_texture: Range = (0.05, 0.18)  # relative amplitude of the coarse marrow pattern
    osteophyte_p: float = 0.0  # probability of an anterior osteophyte per joint
    held_out: bool = False


_BASE = AnatomyVariant("average", "average adult proportions")

ANATOMIES: dict[str, AnatomyVariant] = {
    v.name: v
    for v in (
        _BASE,
        replace(_BASE, name="narrow", description="narrow (android) pelvis, narrow sacrum, steep joints",
                body_a=(130, 160), sacrum_w=(82, 100), joint_angle_deg=(26, 38), wing_span=(42, 66)),
        replace(_BASE, name="wide", description="wide (gynecoid) pelvis, broad sacrum, flat joints",
                body_a=(185, 220), body_power=(2.0, 2.6), sacrum_w=(108, 128), joint_angle_deg=(12, 24),
                wing_span=(75, 100)),
        replace(_BASE, name="thin", description="slim patient: little subcutaneous and pelvic fat, few bowel loops",
                body_a=(135, 165), body_b=(88, 112), fat_mm=(3, 12), bowel_loops=(2, 7)),
        replace(_BASE, name="obese", description="obese patient: thick fat, large body cut by the field of view",
                body_a=(190, 235), body_b=(125, 165), fat_mm=(35, 70), bowel_loops=(8, 16)),
        replace(_BASE, name="prominent-foramina",
                description="large, bright sacral foramina on most levels, many periarticular veins",
                foramen_radius=(3.0, 5.5), foramen_brightness=(0.75, 1.0), foramen_edge=(5, 12),
                foramen_show=(-0.95, -0.5), veins=(2, 5), vein_radius=(2.0, 4.5)),
        replace(_BASE, name="elderly",
                description="HELD OUT: narrow joints, fatty patchy marrow, anterior osteophytes, large veins",
                joint_gap=(0.8, 1.5), marrow=(0.1, 0.17), marrow_texture=(0.22, 0.35), veins=(3, 6),
                vein_radius=(3.0, 5.5), bowel_fluid=(0.4, 0.8), osteophyte_p=0.8, held_out=True),
    )
}

TRAINING_ANATOMIES: tuple[str, ...] = tuple(n for n, v in ANATOMIES.items() if not v.held_out)


def get_anatomy(name: str | AnatomyVariant) -> AnatomyVariant:
    """Look an anatomy variant up by name (an AnatomyVariant passes through).

    Raises:
        ValueError: unknown name; the message lists the valid names and the closest one.
    """
    if isinstance(name, AnatomyVariant):
        return name
    if name in ANATOMIES:
        return ANATOMIES[name]
    close = difflib.get_close_matches(str(name), ANATOMIES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown anatomy {name!r}. Valid anatomies are {sorted(ANATOMIES)}.{hint}")
