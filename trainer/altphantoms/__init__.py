"""Independent synthetic sacroiliac-joint STIR phantoms - FOR TESTING ONLY, never for training.

A second phantom source drawn by separate code (signed-distance anatomy, a
relaxation-time STIR contrast, k-space blur, coil shading, g-factor Rician
noise), so a model that learned the training generator
(``asinfer.trainer.phantoms``) rather than the lesion shows it here. It
returns the same ``Series`` record and writes the same dataset layout.
SYNTHETIC PHANTOM - not patient data; nothing measured on it has diagnostic
validity.

Example:
    >>> from asinfer.trainer.altphantoms import generate_series
    >>> s = generate_series(0, slices=4, size=128, positive=True)
    >>> s.label, s.profile, s.images.dtype
    (1, 'independent', dtype('uint16'))
"""
from ._dataset import write_dataset as write_dataset
from ._generate import PROFILE as PROFILE
from ._generate import SliceMaps as SliceMaps
from ._generate import generate_series as generate_series
from ._generate import generate_with_maps as generate_with_maps
from ._scanner import Scan as Scan

__all__ = ["PROFILE", "Scan", "SliceMaps", "generate_series", "generate_with_maps", "write_dataset"]
