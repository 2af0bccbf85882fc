"""Synthetic sacroiliac-joint MRI phantoms (SYNTHETIC - not patient data).

STIR-like axial series through the sacroiliac joints, with and without
sacroiliitis-like subchondral oedema, as arrays, PNG or DICOM. Imports only
numpy, OpenCV and pydicom. Nothing made with it has diagnostic validity.

Example:
    >>> from asinfer.trainer.phantoms import generate_series, write_dataset
    >>> s = generate_series(0, slices=4, size=128, positive=True)
    >>> s.label, s.images.dtype
    (1, dtype('uint16'))
"""
from ._dataset import DatasetSummary as DatasetSummary
from ._dataset import series_labels as series_labels
from ._dataset import write_dataset as write_dataset
from ._lesions import Lesion as Lesion
from ._lesions import meets_asas as meets_asas
from ._profiles import PROFILES as PROFILES
from ._profiles import ScannerProfile as ScannerProfile
from ._series import Series as Series
from ._series import generate_series as generate_series

__all__ = ["PROFILES", "DatasetSummary", "Lesion", "ScannerProfile", "Series", "generate_series", "meets_asas",
           "series_labels", "write_dataset"]
