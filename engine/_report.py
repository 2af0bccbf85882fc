"""A series decision as DICOM objects a PACS shows: a Comprehensive 3D SR and a Secondary Capture series.

Per decided DICOM series, :func:`write_report` writes

* ``sr.dcm``: a Comprehensive 3D SR holding a TID 1500 Measurement Report.
  One measurement group (TID 1501) at the finding site *sacroiliac joint*
  (SCT 39723000): the qualitative evaluation *inflammation* (SCT 409774005)
  present / absent, the series score and its threshold as measurements,
  the model's name, version, artifact sha256 and series rule as algorithm
  identification, the driving slices as the group's source images, and a
  comment saying it is not for diagnostic use. The document is complete and
  unverified; its observer is the device (this engine), and its image
  library lists every slice of the series.
* ``sc-NNN.dcm``: a Secondary Capture image per driving slice, with the
  Grad-CAM overlay, the probability and the notice burned in (Burned In
  Annotation YES), referencing its source slice.

Both join the source's patient and study (Patient and General Study modules
and the Specific Character Set copied from one source header), in new series
described "... NOT FOR DIAGNOSTIC USE", with Contributing Equipment naming
the scanner that acquired the source, this engine (Processing Equipment) and
highdicom, after the IHE AI Results profile.

UIDs are derived from the source series UID, the artifact's sha256, the
rule and its thresholds: the same input with the same model and settings
gives the same objects' UIDs, so a repeated run replaces rather than
duplicates in a PACS. Files are written whole (a temporary name, fsync,
rename). Needs the ``dicom`` extra (highdicom); nothing here logs a
patient's name or identifiers.

Cost: the image library and evidence are built from the identity every
frame carried since it was read (:class:`SliceIdentity`); one header per
series is read again, for the patient and study modules the engine never
keeps.
"""

from __future__ import annotations

import os
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._classifier import Explanation
from ._highdicom import use_root_attribute_map
from ._series import SeriesResult, SliceIdentity

NOTICE = "NOT FOR DIAGNOSTIC USE"
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902  # high, so results sort after the acquisition in a viewer
PRIVATE_SCHEME = "99ASINFER"  # a private coding scheme (PS3.16 8.2): the score and threshold have no standard code

#: Patient and study attributes of Type 2 that highdicom reads from the source; absent ones become empty.
_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
          "StudyTime", "ReferringPhysicianName")


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote for one series, or why it wrote nothing.

    Attributes:
        key: the series (SeriesInstanceUID).
        sr: the SR file; None when nothing was written.
        sc: the Secondary Capture files, one per driving slice.
        reason, message: ``not-dicom``, ``no-decision`` or ``report-failed`` and one line; None on success.
    """

    key: str
    sr: Path | None = None
    sc: tuple[Path, ...] = ()
    reason: str | None = None
    message: str | None = None
    uids: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reason is None


def reportable(series: SeriesResult) -> tuple[str, str] | None:
    """Why a series cannot be reported as DICOM (reason, message), or None when it can."""
    if series.label is None:
        return "no-decision", f"the series has no decision ({series.reason}: {series.message})"
    if series.grouped_by != "series-uid" or not any(_identity(p) for p in series.slices):
        return "not-dicom", "a DICOM report joins the source's patient and study: the series must be DICOM"
    return None


def write_report(series: SeriesResult, explanations: list[Explanation], out: Path, *, manifest, artifact,
                 rule, labels: tuple[str, str], software_version: str, run: int = 1) -> ReportFiles:
    """Write the SR and the SC images of one decided DICOM series into ``out`` (made if missing).

    Args:
        series: a decided DICOM series (:meth:`Classifier.predict_series`).
        explanations: the Grad-CAM evidence of its driving slices (:meth:`Classifier.explain`);
            one SC image is written per explanation.
        out: the series' own folder.
        manifest, artifact, rule: the model's manifest, the artifact that ran, its series rule.
        labels: (negative, positive) labels of the model.
        software_version: this engine's version.
        run: which pass over the series this is (``asinfer serve`` decides a series again when
            instances arrive after it was complete); a run after the first gets UIDs of its own, so
            it adds a result next to the first rather than replacing it under the same UIDs.

    Returns:
        The files written; a series that cannot be reported gives its reason instead (nothing raised).
    """
    problem = reportable(series)
    if problem:
        return ReportFiles(series.key, reason=problem[0], message=problem[1])
    try:
        with warnings.catch_warnings():  # pydicom and highdicom quote element values in theirs: patient data
            warnings.simplefilter("ignore")
            return _write(series, explanations, Path(out), manifest, artifact, rule, labels, software_version, run)
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        return ReportFiles(series.key, reason="report-failed", message=_one_line(exc))


def _write(series, explanations, out, manifest, artifact, rule, labels, version, run) -> ReportFiles:
    from highdicom import ContributingEquipment
    from pydicom.sr.codedict import codes

    use_root_attribute_map()  # ~110 MB less at the first report

    slices = [(p, p.identity) for p in series.slices if _identity(p)]
    header = _header(slices[0][0].source)
    positive = series.label == labels[1]
    seed = [series.key, artifact.sha256, rule.kind, f"{rule.threshold:.6f}", str(rule.single_slice_threshold)]
    seed += [f"run-{run}"] if run > 1 else []  # run 1 keeps the UIDs asinfer report has always given
    uids = {name: _uid(*seed, name) for name in ("sr-series", "sr", "sc-series", "tracking", "device")}
    ours = ContributingEquipment(
        manufacturer="asinfer", purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=f"{manifest.name} {manifest.version}"[:64],
        software_versions=[f"asinfer {version}", f"{artifact.format} sha256:{artifact.sha256[:16]}"],
        contribution_description=f"AI screening for AS-typical inflammation; {NOTICE}")
    out.mkdir(parents=True, exist_ok=True)
    sc_files = []
    for number, ex in enumerate(explanations, 1):
        uids[f"sc-{number}"] = _uid(*seed, f"sc-{number}", ex.prediction.source, str(ex.prediction.frame))
        sc = _secondary_capture(ex, header, series, uids, number, ours, positive, labels)
        sc_files.append(_save(sc, out / f"sc-{number:03d}.dcm"))
    sr = _structured_report(series, slices, header, uids, ours, manifest, artifact, rule, positive)
    return ReportFiles(series.key, _save(sr, out / "sr.dcm"), tuple(sc_files), uids=uids)


def _structured_report(series, slices, header, uids, ours, manifest, artifact, rule, positive):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uids["device"], name="asinfer", manufacturer_name="asinfer",
            model_name=f"{manifest.name} {manifest.version}"[:64]))
    algorithm = hd.sr.AlgorithmIdentification(
        name=manifest.name, version=manifest.version,
        parameters=[f"artifact {artifact.format} sha256 {artifact.sha256}", f"series rule {rule.kind}",
                    f"threshold {rule.threshold:.6f}"]
        + ([f"single-slice threshold {rule.single_slice_threshold:.6f}"]
           if rule.single_slice_threshold is not None else []))
    unit = hd.sr.CodedConcept("1", "UCUM", "no units")
    measurements = [
        hd.sr.Measurement(name=hd.sr.CodedConcept("series-score", PRIVATE_SCHEME, "AS inflammation series score"),
                          value=float(series.score), unit=unit, algorithm_id=algorithm),
        hd.sr.Measurement(name=hd.sr.CodedConcept("threshold", PRIVATE_SCHEME, "Decision threshold"),
                          value=float(rule.threshold), unit=unit, algorithm_id=algorithm),
    ]
    driving = {(source, frame) for source, frame in series.driving}
    multi = len({identity.sop_uid for _, identity in slices}) < len(slices)  # frames of multi-frame objects
    sources = [_source_image(identity, multi) for p, identity in slices if (p.source, p.frame) in driving]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uids["tracking"], identifier="AS inflammation, series"),
        finding_type=codes.SCT.Inflammation, algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(codes.SCT.SacroiliacJoint)],
        measurements=measurements,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            codes.SCT.Inflammation, codes.SCT.Present if positive else codes.SCT.Absent)],
        source_images=sources or None)
    group[0].ContentSequence.append(hd.sr.TextContentItem(
        name=codes.DCM.Comment, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        value=f"{NOTICE}. Research software; the model was trained on "
              + ("synthetic phantoms. " if manifest.synthetic_training_data else "the data its card describes. ")
              + f"{series.n_slices} slices, {series.n_failed} failed; decided by the {rule.kind} rule."))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.ImagingProcedure, imaging_measurements=[group])
    evidence = [header, *(_reference(identity) for _, identity in slices[1:])]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=uids["sr-series"], series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids["sr"], instance_number=1, manufacturer="asinfer", is_complete=True,
        is_final=False, is_verified=False, contributing_equipment=[ours],
        series_description=f"asinfer AS screen - {NOTICE}")
    library = None if multi else _library([identity for _, identity in slices], header)
    if library is not None:  # added after: the document's constructor deep-copies its content (x3 the cost)
        at = next(i for i, item in enumerate(sr.ContentSequence)
                  if item.ConceptNameCodeSequence[0].CodeValue == codes.DCM.ImagingMeasurements.value)
        sr.ContentSequence.insert(at, library)
    return sr


def _secondary_capture(ex: Explanation, header, series, uids, number, ours, positive, labels):
    import cv2
    import highdicom as hd
    from pydicom.dataset import Dataset

    from ._evidence import overlay

    p = ex.prediction
    caption = f"p={p.probability:.3f}  series: {series.label} ({series.score:.3f})"
    rgb = cv2.cvtColor(overlay(ex.display, ex.cam, caption), cv2.COLOR_BGR2RGB)
    identity = p.identity
    orientation = _orientation_letters(identity.orientation) if identity else None
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header, pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=uids["sc-series"], series_number=SC_SERIES_NUMBER,
        sop_instance_uid=uids[f"sc-{number}"], instance_number=number, manufacturer="asinfer",
        pixel_spacing=identity.pixel_spacing if identity else None,
        patient_orientation=orientation or ("L", "P"), contributing_equipment=[ours])
    if orientation is None:  # Type 2: unknown stays empty rather than guessed
        sc.PatientOrientation = ""
    sc.SeriesDescription = f"asinfer Grad-CAM evidence - {NOTICE}"
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = "Grad-CAM of the model's positive logit over the source slice (heat map)"
    sc.ImageComments = f"{NOTICE}. Where the model looked, not where disease is; decision {series.label}."
    if identity and identity.sop_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = identity.sop_class_uid, identity.sop_uid
        if sum(1 for q in series.slices if q.identity and q.identity.sop_uid == identity.sop_uid) > 1:
            ref.ReferencedFrameNumber = identity.frame + 1
        sc.SourceImageSequence = [ref]
    return sc


def _header(path: str):
    """The patient and study of the series: one header read again (without pixels), Type 2 gaps filled empty."""
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    for keyword in _TYPE2:
        if keyword not in header:
            setattr(header, keyword, "")
    for keyword in ("StudyDate", "StudyTime", "PatientBirthDate"):
        header[keyword].value = _conformant(header.data_element(keyword))
    return header


def _conformant(element) -> str:
    """A DA or TM value as the standard writes it: old ACR-NEMA separators dropped; unreadable -> empty (Type 2)."""
    from pydicom.valuerep import DA, TM

    text = str(element.value or "").strip()
    if element.VR not in ("DA", "TM") or not text:
        return text
    for candidate in (text, text.replace(":", "") if element.VR == "TM" else text.replace(".", "").replace("-", "")):
        try:
            (DA if element.VR == "DA" else TM)(candidate)
            return candidate
        except ValueError:
            continue
    return ""


def _reference(identity: SliceIdentity):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = identity.study_uid, identity.series_uid
    ds.SOPClassUID, ds.SOPInstanceUID = identity.sop_class_uid, identity.sop_uid
    return ds


def _library(identities: list[SliceIdentity], header):
    """TID 1600 Image Library: one group per shared geometry, its descriptors once; each entry keeps its position.

    highdicom's ImageLibrary repeats all 16 descriptors for every image: 24 slices made a 1,900-dataset
    tree that took longer to build and write than the inference it reports. TID 1600 puts the descriptors
    common to a group on the group (row 3); only Image Position (Patient) differs between slices.
    None when a slice lacks the geometry.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    entries = [_library_entry(identity, header) for identity in identities]
    if not entries or not all(entries):
        return None
    position = {codes.DCM.ImagePositionPatientX.value, codes.DCM.ImagePositionPatientY.value,
                codes.DCM.ImagePositionPatientZ.value}
    groups: dict[tuple, list] = {}
    for ds in entries:
        key = (ds.Modality, ds.get("FrameOfReferenceUID", ""), ds.Rows, ds.Columns, tuple(ds.PixelSpacing),
               tuple(ds.ImageOrientationPatient), ds.SliceThickness)
        groups.setdefault(key, []).append(ds)
    library = hd.sr.ContainerContentItem(name=codes.DCM.ImageLibrary,
                                         relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    library.ContentSequence = hd.sr.ContentSequence()
    source = hd.sr.CodedConcept("260753009", "SCT", "Source")
    mm = codes.UCUM.Millimeter
    for members in groups.values():
        group = hd.sr.ContainerContentItem(name=codes.DCM.ImageLibraryGroup,
                                           relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        group.ContentSequence = hd.sr.ContentSequence(
            [item for item in hd.sr.ImageLibraryEntryDescriptors(members[0])
             if item.ConceptNameCodeSequence[0].CodeValue not in position])
        for ds in members:
            image = hd.sr.ImageContentItem(name=source, referenced_sop_class_uid=ds.SOPClassUID,
                                           referenced_sop_instance_uid=ds.SOPInstanceUID,
                                           relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
            image.ContentSequence = hd.sr.ContentSequence([
                hd.sr.NumContentItem(name=name, value=value, unit=mm,
                                     relationship_type=hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT)
                for name, value in zip((codes.DCM.ImagePositionPatientX, codes.DCM.ImagePositionPatientY,
                                        codes.DCM.ImagePositionPatientZ), ds.ImagePositionPatient)])
            group.ContentSequence.append(image)
        library.ContentSequence.append(group)
    return library


def _library_entry(identity: SliceIdentity, header):
    """The TID 1601 entry's facts, from what was read with the frame; None when its geometry is incomplete."""
    if not (identity.rows and identity.columns and identity.pixel_spacing and identity.orientation
            and identity.position and identity.slice_thickness is not None):
        return None
    ds = _reference(identity)
    ds.Modality = identity.modality or header.get("Modality", "")
    ds.Rows, ds.Columns = identity.rows, identity.columns
    if identity.frame_of_reference_uid:
        ds.FrameOfReferenceUID = identity.frame_of_reference_uid
    ds.PixelSpacing = list(identity.pixel_spacing)
    ds.ImageOrientationPatient = list(identity.orientation)
    ds.ImagePositionPatient = list(identity.position)
    ds.SliceThickness = identity.slice_thickness
    return ds


def _source_image(identity: SliceIdentity, multi_frame: bool):
    import highdicom as hd

    return hd.sr.SourceImageForMeasurementGroup(
        referenced_sop_class_uid=identity.sop_class_uid, referenced_sop_instance_uid=identity.sop_uid,
        referenced_frame_numbers=[identity.frame + 1] if multi_frame else None)


def _identity(p) -> bool:
    i = p.identity
    return i is not None and bool(i.sop_uid and i.sop_class_uid and i.study_uid and p.probability is not None)


def _orientation_letters(iop) -> tuple[str, str] | None:
    """PatientOrientation of a slice from ImageOrientationPatient: the main direction of its rows and columns."""
    if iop is None:
        return None
    letters = []
    for vector in (iop[:3], iop[3:]):
        axis = int(np.argmax(np.abs(vector)))
        if abs(vector[axis]) < 1e-3:
            return None
        letters.append(("RL", "AP", "FH")[axis][int(vector[axis] > 0)])
    return letters[0], letters[1]


def _uid(*parts: str) -> str:
    """A UID under 2.25 (PS3.5 B.2) from a name-based UUID (version 5) of ``parts``: the same parts, the same UID."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(31).join(parts)).int}"


_UID_NAMESPACE = uuid.UUID("6f1b3c1e-52a4-4c8e-9d0a-5a5f1e0b7c3d")  # asinfer report objects


def _save(ds, path: Path) -> Path:
    """Write whole or not at all: a temporary name, flushed to disk, then renamed."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        ds.save_as(f, enforce_file_format=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
