"""STIR contrast from relaxation times: each tissue's water signal and fat amount.

Signal of a spin pool after inversion recovery with magnitude reconstruction:
``PD * |1 - 2 exp(-TI/T1) + exp(-TR/T1)| * exp(-TE/T2)``. Tissues are a water
pool plus a fat fraction; the fat pool is weighted later, per pixel, by how
well the inversion time nulls fat there (B1 varies across the field), so fat
suppression is imperfect in the way a real STIR is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAT_T1, FAT_T2 = 270.0, 75.0  # ms, 1.5 T

# name: (water T1 ms, water T2 ms, proton density, fat fraction). 1.5 T literature-like values.
TISSUES: dict[str, tuple[float, float, float, float]] = {
    "fat": (FAT_T1, FAT_T2, 1.0, 0.97),
    "skin": (1000.0, 45.0, 0.8, 0.25),
    "muscle": (1050.0, 38.0, 0.8, 0.04),
    "marrow": (900.0, 45.0, 0.95, 0.62),  # adult pelvic marrow: mostly fatty, darker than muscle on STIR
    "cortex": (1000.0, 4.0, 0.08, 0.1),
    "cartilage": (1150.0, 60.0, 0.8, 0.0),
    "ligament": (900.0, 20.0, 0.5, 0.2),
    "csf": (4000.0, 1800.0, 1.0, 0.0),
    "nerve": (1100.0, 85.0, 0.8, 0.1),
    "urine": (3000.0, 1200.0, 1.0, 0.0),
    "vein": (1450.0, 220.0, 0.9, 0.0),  # slow flow keeps signal
    "artery": (1450.0, 220.0, 0.03, 0.0),  # flow void
    "bowel_wall": (1150.0, 65.0, 0.85, 0.05),
    "chyme": (1400.0, 70.0, 0.85, 0.08),
    "bowel_fluid": (2600.0, 400.0, 1.0, 0.0),
    "gas": (1000.0, 10.0, 0.0, 0.0),
    "oedema": (1350.0, 105.0, 1.0, 0.0),  # the water that replaces marrow fat in osteitis
    "focus": (2500.0, 400.0, 1.0, 0.0),  # small fluid focus (cyst, vessel, fluid in a muscle)
}


def recovery(t1: float, ti: float, tr: float) -> float:
    """|Mz| at the readout of an inversion recovery (0 when the tissue is nulled)."""
    return abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1))


@dataclass(frozen=True)
class Sequence:
    """One series' STIR timing and its per-patient tissue values (water signal, fat amount)."""

    tr: float
    te: float
    ti: float
    values: dict[str, tuple[float, float]]

    def __getitem__(self, name: str) -> tuple[float, float]:
        return self.values[name]

    def fat_weight(self, ti_factor: np.ndarray) -> np.ndarray:
        """Residual fat signal where the effective inversion time is ti * ti_factor (B1 variation)."""
        ti = self.ti * ti_factor
        return np.abs(1.0 - 2.0 * np.exp(-ti / FAT_T1) + np.exp(-self.tr / FAT_T1)).astype(np.float32)


def sample_sequence(rng: np.random.Generator) -> Sequence:
    """Draw timing and per-patient relaxation times (+-10 %) and turn them into tissue values."""
    tr, te = float(rng.uniform(3200, 6500)), float(rng.uniform(28, 72))
    null = FAT_T1 * np.log(2.0 / (1.0 + np.exp(-tr / FAT_T1)))
    ti = float(null * rng.uniform(0.93, 1.09))
    values = {}
    for name, (t1, t2, pd, ff) in TISSUES.items():
        t1, t2 = t1 * rng.uniform(0.9, 1.1), t2 * rng.uniform(0.9, 1.1)
        pd = pd * rng.uniform(0.92, 1.08)
        if name == "marrow":
            ff = float(np.clip(ff + rng.normal(0, 0.07), 0.4, 0.8))  # age and red/yellow marrow balance
        water = pd * (1 - ff) * recovery(t1, ti, tr) * np.exp(-te / t2)
        fat = pd * ff * np.exp(-te / FAT_T2)
        values[name] = (float(water), float(fat))
    return Sequence(tr, te, ti, values)
