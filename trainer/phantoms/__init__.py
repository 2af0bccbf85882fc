"""Synthetic sacroiliac-joint MRI phantoms (SYNTHETIC - not patient data).

STIR-like axial series through the sacroiliac joints, with and without
sacroiliitis-like subchondral oedema, as arrays, PNG or DICOM. Imports only
numpy, OpenCV and pydicom. Nothing made with it has diagnostic validity.

The default draws from the training distribution (profile ``mixed``, the
training anatomy variants); ``HELD_OUT`` names the settings kept out of it
for out-of-distribution tests.

Example:
    >>> from asinfer.trainer.phantoms import HELD_OUT, generate_series, write_dataset
    >>> s = generate_series(0, slices=4, size=128, positive=True)
    >>> s.label, s.images.dtype.kind
    (1, 'u')
    >>> generate_series(0, slices=2, size=128, positive=False, **HELD_OUT).anatomy
    'elderly'
"""
from ._dataset import DatasetSummary as DatasetSummary
from ._dataset import check_dataset_args as check_dataset_args
from ._dataset import series_labels as series_labels
from ._dataset import write_dataset as write_dataset
from ._dicom import write_dicom_slice as write_dicom_slice
from ._lesions import LESION_RANGES as LESION_RANGES
from ._lesions import Lesion as Lesion
from ._lesions import meets_asas as meets_asas
from ._profiles import PROFILES as PROFILES
from ._profiles import TRAINING_PROFILE as TRAINING_PROFILE
from ._profiles import ScannerProfile as ScannerProfile
from ._series import Series as Series
from ._series import as_rng as as_rng
from ._series import generate_series as generate_series
from ._variants import ANATOMIES as ANATOMIES
from ._variants import TRAINING_ANATOMIES as TRAINING_ANATOMIES
from ._variants import AnatomyVariant as AnatomyVariant

#: Settings never drawn by the training distribution: pass as ``**HELD_OUT`` to
#: generate_series or write_dataset for an out-of-distribution test set.
HELD_OUT: dict[str, str] = {
    "profile": next(n for n, p in PROFILES.items() if p.held_out),
    "anatomy": next(n for n, v in ANATOMIES.items() if v.held_out),
}

__all__ = ["ANATOMIES", "HELD_OUT", "PROFILES", "TRAINING_ANATOMIES", "TRAINING_PROFILE", "AnatomyVariant",
           "DatasetSummary", "Lesion", "ScannerProfile", "Series", "as_rng", "check_dataset_args", "generate_series",
           "meets_asas", "series_labels", "write_dataset", "write_dicom_slice"]
