"""Write an independent-source series as MR Image Storage DICOM, one file per slice.

Its own writer (not the training source's): the training writer reads how a
series is stored from the training acquisition record, which this source does
not have. The files are classic 12-bit MONOCHROME2 with a VOI window, the
scan's own timing and geometry, and name-based UIDs (2.25 root, a namespace
of this source) of the seed, patient and slice; no date or time is written,
so the same seed gives the same bytes.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage

NOTE = "SYNTHETIC PHANTOM - independent test source - not patient data"

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://asinfer/trainer/altphantoms")


def _uid(*parts) -> UID:
    return UID(f"2.25.{uuid.uuid5(_NAMESPACE, '|'.join(map(str, parts))).int}")


def slice_dataset(series, i: int, *, seed: int = 0) -> Dataset:
    """The DICOM dataset (with file meta) of slice ``i`` of an independent-source Series."""
    sop = _uid(seed, series.patient_id, "sop", i)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID = f"PHANTOM^{series.patient_id}", series.patient_id
    ds.PatientBirthDate, ds.PatientSex, ds.PatientIdentityRemoved = "", "O", "YES"
    ds.StudyInstanceUID = _uid(seed, series.patient_id, "study")
    ds.SeriesInstanceUID = _uid(seed, series.patient_id, "series")
    ds.FrameOfReferenceUID = _uid(seed, series.patient_id, "frame")
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.AccessionNumber = "", "", "", ""
    ds.StudyID, ds.SeriesNumber = "INDEPENDENT", 1
    ds.StudyDescription = "SYNTHETIC PHANTOM - independent test source"  # LO: at most 64 characters
    ds.SeriesDescription = "SYNTHETIC - TEST ONLY - STIR axial SIJ"
    ds.Modality, ds.BodyPartExamined = "MR", "SIJ"
    ds.Manufacturer, ds.ManufacturerModelName = "asinfer synthetic phantom", "independent test source"
    _mr(ds, series)
    _image(ds, series, i)
    return ds


def _mr(ds: Dataset, series) -> None:
    scan = series.acquisition
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "IR", "SK", "", "2D"
    ds.RepetitionTime, ds.EchoTime, ds.InversionTime = (round(v, 1) for v in scan.timing)
    ds.MagneticFieldStrength = 1.5
    ds.SliceThickness = round(series.slice_thickness, 3)
    ds.SpacingBetweenSlices = round(series.spacing_between_slices, 3)


def _image(ds: Dataset, series, i: int) -> None:
    rows, cols = series.images.shape[1:]
    sp = [round(float(v), 6) for v in series.pixel_spacing]
    z = float(series.slice_positions[i])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [round(-cols * sp[1] / 2, 3), round(-rows * sp[0] / 2, 3), z]
    ds.SliceLocation, ds.PixelSpacing, ds.InstanceNumber = z, sp, i + 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = series.window
    ds.ImageComments = f"{NOTE}; FOR TESTING ONLY; asinfer trainer.altphantoms; no diagnostic validity"
    ds.PixelData = np.ascontiguousarray(series.images[i], dtype="<u2").tobytes()


def write_dicom_slice(path: Path, series, i: int, *, seed: int = 0) -> None:
    """Write slice ``i`` of a series to ``path`` as a DICOM Part 10 file."""
    slice_dataset(series, i, seed=seed).save_as(path, enforce_file_format=True)
