"""Series: slices grouped by acquisition, ordered through the body, decided together.

A radiologist, a worklist and the scanner-side box ask about a series, not a
slice. Slices are grouped by SeriesInstanceUID (DICOM), by folder (other
images: one folder is one series) or by the caller's groups; ordered by
position along the slice normal (ImagePositionPatient . (row x column)),
else InstanceNumber, else file name and frame; a SOP instance met twice
counts once. The decision comes from the ordered probabilities through the
bundle's :class:`SeriesRule` (fitted on validation patients by the trainer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

#: Series rules: how ordered slice probabilities become one score.
RULES = ("consecutive", "max", "top_k_mean")


@dataclass(frozen=True)
class SliceIdentity:
    """Where a DICOM frame belongs: read once with its header, never re-read.

    These are identifiers of the study and the images (UIDs): they travel in
    results so a user can match them, and never into logs.
    """

    series_uid: str
    study_uid: str = ""
    sop_uid: str = ""
    sop_class_uid: str = ""
    instance_number: int | None = None
    position: tuple[float, float, float] | None = None  # ImagePositionPatient, mm
    orientation: tuple[float, float, float, float, float, float] | None = None  # ImageOrientationPatient
    modality: str = ""
    series_description: str = ""
    frame: int = 0
    # The image's geometry, for results that reference it (a DICOM SR's image library) without a re-read.
    frame_of_reference_uid: str = ""
    rows: int = 0
    columns: int = 0
    pixel_spacing: tuple[float, float] | None = None  # (row, column) mm
    slice_thickness: float | None = None  # mm

    def location(self) -> float | None:
        """Position along the slice normal (mm), or None without a usable position and orientation."""
        if self.position is None or self.orientation is None:
            return None
        r, c = self.orientation[:3], self.orientation[3:]
        normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
        if not any(normal):
            return None
        return sum(p * n for p, n in zip(self.position, normal))


@dataclass(frozen=True)
class SeriesRule:
    """How a series' ordered slice probabilities become its score and decision.

    ``consecutive`` (the shape of the ASAS MRI definition: a lesion on two
    consecutive slices): score = max over i of min(p[i], p[i+1]); a series
    of one slice scores that slice. Positive when score >= ``threshold``,
    or when one slice alone reaches ``single_slice_threshold`` (a clearly
    positive slice). ``max``: the highest slice. ``top_k_mean``: the mean of
    the ``k`` highest.
    """

    kind: str = "consecutive"
    threshold: float = 0.5
    single_slice_threshold: float | None = None
    k: int = 2
    fitted_on: str = ""  # which data chose the thresholds (validation patients), for the record
    compared: dict[str, Any] = field(default_factory=dict)  # the alternatives measured when it was chosen

    def decide(self, probs: list[float]) -> tuple[float, bool, list[int]]:
        """(score, positive, indices of the slices that drove it) for probabilities in slice order.

        Raises:
            ValueError: no probabilities.
        """
        if not probs:
            raise ValueError("a series decision needs at least one slice")
        score, driving = self.score(probs)
        positive = score >= self.threshold
        if not positive and self.single_slice_threshold is not None:
            best = max(range(len(probs)), key=probs.__getitem__)
            if probs[best] >= self.single_slice_threshold:
                return score, True, [best]
        return score, positive, driving

    def score(self, probs: list[float]) -> tuple[float, list[int]]:
        """The series score and the slices it came from."""
        order = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)
        if self.kind == "max" or len(probs) == 1:
            return probs[order[0]], [order[0]]
        if self.kind == "top_k_mean":
            top = sorted(order[: max(1, self.k)])
            return sum(probs[i] for i in top) / len(top), top
        pairs = [min(probs[i], probs[i + 1]) for i in range(len(probs) - 1)]
        i = max(range(len(pairs)), key=pairs.__getitem__)
        return pairs[i], [i, i + 1]

    def validate(self) -> list[str]:
        """Problems with the rule's values (empty when none)."""
        problems = []
        if self.kind not in RULES:
            problems.append(f"series_rule.kind {self.kind!r} is not one of {', '.join(RULES)}")
        for name in ("threshold", "single_slice_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                problems.append(f"series_rule.{name} {value} is outside [0, 1]")
        if self.k < 1:
            problems.append(f"series_rule.k {self.k} must be >= 1")
        return problems


@dataclass(frozen=True)
class SeriesResult:
    """One series' decision, with the slices it rests on.

    Attributes:
        key: SeriesInstanceUID for DICOM; the folder (or the caller's group
            name) for other images.
        grouped_by: ``series-uid``, ``folder`` or ``group``.
        study_uid, description, modality: from the DICOM header when there is one.
        n_slices: slices predicted; n_failed: slices or inputs of the series
            that failed; n_duplicates: repeated SOP instances left out.
        score, label: the rule's score and the manifest label; None when no
            decision was made (``reason`` says why).
        reason, message: ``incomplete-series`` (failed slices and ``strict``)
            or ``no-slices`` (every input failed); None otherwise.
        slices: the series' predictions, ordered through the body.
        driving: (source, frame) of the slices that drove the decision.
    """

    key: str
    grouped_by: str
    n_slices: int
    n_failed: int = 0
    n_duplicates: int = 0
    score: float | None = None
    label: str | None = None
    reason: str | None = None
    message: str | None = None
    study_uid: str = ""
    description: str = ""
    modality: str = ""
    ordered_by: str = ""
    slices: tuple = ()
    driving: tuple[tuple[str, int | None], ...] = ()

    @property
    def ok(self) -> bool:
        return self.reason is None

    def to_dict(self, with_slices: bool = False) -> dict[str, Any]:
        """JSON-ready; the slices themselves only when asked (they are the slice rows)."""
        data = {k: getattr(self, k) for k in ("key", "grouped_by", "study_uid", "description", "modality",
                                              "n_slices", "n_failed", "n_duplicates", "score", "label", "reason",
                                              "message", "ordered_by")}
        data["driving"] = [{"source": s, "frame": f} for s, f in self.driving]
        if with_slices:
            data["slices"] = [p.to_dict() for p in self.slices]
        return data


class SeriesCollector:
    """Collects predictions as they stream and decides each series at the end.

    Example:
        >>> collector = SeriesCollector()  # doctest: +SKIP
        >>> for p in clf.iter_predict(paths):  # doctest: +SKIP
        ...     collector.add(p)
        >>> collector.results(clf.series_rule, clf.manifest.labels)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], list] = {}

    def add(self, prediction, group: str | None = None) -> None:
        """Add one prediction (ok or failed) to its series; ``group`` overrides the grouping."""
        self._groups.setdefault(_key(prediction, group), []).append(prediction)

    def results(self, rule: SeriesRule, labels: tuple[str, str], strict: bool = False) -> list[SeriesResult]:
        """One result per series, in the order each series was first met."""
        return [_decide(key, members, rule, labels, strict) for key, members in self._groups.items()]


def group_series(predictions: Iterable, rule: SeriesRule, labels: tuple[str, str],
                 strict: bool = False) -> list[SeriesResult]:
    """Group, order and decide: :class:`SeriesCollector` over a finished list."""
    collector = SeriesCollector()
    for p in predictions:
        collector.add(p)
    return collector.results(rule, labels, strict)


def _key(prediction, group: str | None) -> tuple[str, str]:
    if group is not None:
        return "group", group
    identity = getattr(prediction, "identity", None)
    if identity is not None and identity.series_uid:
        return "series-uid", identity.series_uid
    source = prediction.source
    if source.startswith("<array"):
        return "group", source
    return "folder", str(Path(source).parent)


def _decide(key: tuple[str, str], members: list, rule: SeriesRule, labels: tuple[str, str],
            strict: bool) -> SeriesResult:
    grouped_by, name = key
    unique, duplicates = _unique(members)
    good = [p for p in unique if p.ok]
    failed = len(unique) - len(good)
    ordered, ordered_by = _ordered(good)
    first = next((p.identity for p in good if getattr(p, "identity", None) is not None), None)
    facts = dict(key=name, grouped_by=grouped_by, n_slices=len(ordered), n_failed=failed,
                 n_duplicates=duplicates, slices=tuple(ordered), ordered_by=ordered_by,
                 study_uid=first.study_uid if first else "", description=first.series_description if first else "",
                 modality=first.modality if first else "")
    if not ordered:
        return SeriesResult(**facts, reason="no-slices", message=f"all {failed} input(s) of this series failed")
    if failed and strict:
        return SeriesResult(**facts, reason="incomplete-series",
                            message=f"{failed} slice(s) failed; --strict withholds the decision")
    score, positive, driving = rule.decide([p.probability for p in ordered])
    message = f"{failed} slice(s) failed: the decision rests on the {len(ordered)} that were read" if failed else None
    return SeriesResult(**facts, score=score, label=labels[int(positive)], message=message,
                        driving=tuple((ordered[i].source, ordered[i].frame) for i in driving))


def _unique(members: list) -> tuple[list, int]:
    """Members with each SOP instance (and frame) once; how many repeats were left out."""
    seen, unique = set(), []
    for p in members:
        identity = getattr(p, "identity", None)
        if identity is not None and identity.sop_uid:
            mark = (identity.sop_uid, identity.frame)
            if mark in seen:
                continue
            seen.add(mark)
        unique.append(p)
    return unique, len(members) - len(unique)


def _ordered(good: list) -> tuple[list, str]:
    """Slices through the body: by position along the normal, else InstanceNumber, else file name and frame."""
    identities = [getattr(p, "identity", None) for p in good]
    locations = [i.location() if i is not None else None for i in identities]
    if good and all(loc is not None and math.isfinite(loc) for loc in locations):
        order = sorted(range(len(good)), key=lambda n: (locations[n], identities[n].frame, good[n].source))
        return [good[n] for n in order], "position"
    numbers = [i.instance_number if i is not None else None for i in identities]
    if good and all(number is not None for number in numbers):
        order = sorted(range(len(good)), key=lambda n: (numbers[n], identities[n].frame, good[n].source))
        return [good[n] for n in order], "instance-number"
    return sorted(good, key=lambda p: (p.source, p.frame or 0)), "file-name"
