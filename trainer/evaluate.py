"""A bundle measured per condition: fresh phantoms, each scanner profile, matrix, bit depth, the held-out
settings and the independent test source, with patient-bootstrap intervals.

    python -m asinfer.trainer.evaluate models/asinfer-vgg16-phantom [--patients 40] [--only NAME,...]
                                       [--keras runs/demo/model.keras] [--record] [--json out.json]
    python -m asinfer.trainer.evaluate runs/mine/bundle --against models/asinfer-vgg16-phantom

Each condition renders ``--patients`` fresh phantom series of 12 slices (half positive; seeds no
recipe trains on), runs them through the engine exactly as ``asinfer predict`` would (the bundle's
preprocessing, its default CPU artifact) and reports:

* slice AUC with a 95 % interval (patients resampled, 1,000 times), and sensitivity / specificity at
  the bundle's slice threshold;
* series AUC with its interval, and sensitivity / specificity of the bundle's series rule;
* ``flip_changed``: the share of slice labels that change when every slice is mirrored left-right;
* ``agreement``: the share of slice labels the artifact shares with the Keras model (``--keras``);
* ``lesion_sensitivity``: slice sensitivity by how much brighter the slice's lesions are than their
  surroundings (:func:`lesion_brightening`), so a source whose lesions are found less often although
  they are as bright shows as such (a model that learned one generator's way of drawing a lesion).

``--against BASE`` compares instead (:func:`compare`): both bundles run on the same phantoms, so the
difference of their slice and series AUC gets a paired interval (each resample takes the same patients
for both), far narrower than two separate intervals when the models err on the same slices.

``--record`` stores the table in the manifest (``metrics["conditions"]``); the model card shows it,
with the issue's targets beside it (:data:`TARGETS`). Synthetic phantoms only: these numbers say how
the model behaves on cartoons, nothing about patients.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from asinfer import engine
from asinfer.engine.bundle import roc_auc

log = logging.getLogger("asinfer.trainer")

SLICES = 12
BOOTSTRAP = 1000
DRIFT_LIMIT = 0.05  # the threshold-transfer target: rates within 0.05 of their validation values
BRIGHTENING_BINS = (0.3, 0.6, 1.0)  # edges of lesion_sensitivity's bins (lesion mean / surroundings - 1)
RING_PX = 4  # width of the surroundings a lesion is compared with


@dataclass(frozen=True)
class Condition:
    """One test condition: where its phantoms come from and how they are stored.

    ``generator`` holds keyword arguments of the source's ``generate_series`` (profile, size, ...);
    ``export`` re-stores the rendered values: ``8bit-unwindowed`` (12-bit values shifted right by 4,
    no VOI window: an export that uses part of the 8-bit range), ``8bit-windowed`` (the VOI window
    burned into full-range 8-bit values), ``16bit`` (values x 16, the window scaled with them).
    """

    name: str
    group: str  # in-distribution | profile | matrix | bit depth | held out | independent
    source: str = "training"  # training | independent
    generator: dict[str, Any] = field(default_factory=dict)
    export: str | None = None
    seed: int = 4242


#: The conditions of the issue's targets; seeds differ from every recipe's training seed.
CONDITIONS: tuple[Condition, ...] = (
    Condition("fresh seed 4242", "in-distribution", seed=4242),
    Condition("fresh seed 5151", "in-distribution", seed=5151),
    Condition("profile default", "profile", generator={"profile": "default"}, seed=6060),
    Condition("profile low-field", "profile", generator={"profile": "low-field"}, seed=6161),
    Condition("profile high-snr", "profile", generator={"profile": "high-snr"}, seed=6262),
    Condition("matrix 192", "matrix", generator={"size": 192}, seed=7070),
    Condition("matrix 256", "matrix", generator={"size": 256}, seed=7171),
    Condition("matrix 512", "matrix", generator={"size": 512}, seed=7272),
    Condition("matrix 640", "matrix", generator={"size": 640}, seed=7373),
    # Bit-depth exports start from the classic 12-bit preset, so the condition is the export alone.
    Condition("8-bit unwindowed", "bit depth", generator={"profile": "default"}, export="8bit-unwindowed", seed=8181),
    Condition("8-bit windowed", "bit depth", generator={"profile": "default"}, export="8bit-windowed", seed=8282),
    Condition("16-bit", "bit depth", generator={"profile": "default"}, export="16bit", seed=8383),
    Condition("held-out profile vendor-b", "held out", generator={"profile": "vendor-b"}, seed=6363),
    Condition("held-out anatomy elderly", "held out", generator={"anatomy": "elderly"}, seed=6464),
    Condition("held-out profile + anatomy", "held out", generator={"profile": "vendor-b", "anatomy": "elderly"},
              seed=6565),
    Condition("independent source", "independent", source="independent", seed=9191),
)

#: The issue's targets: (what, condition groups, metric path, limit, direction).
TARGETS = (
    ("slice AUC in distribution", ("in-distribution",), ("slice", "auc"), 0.96, ">="),
    ("slice AUC on every profile, matrix and bit depth", ("profile", "matrix", "bit depth", "held out"),
     ("slice", "auc"), 0.93, ">="),
    ("slice AUC on the independent source", ("independent",), ("slice", "auc"), 0.90, ">="),
    ("slice specificity on the independent source", ("independent",), ("slice", "specificity"), 0.80, ">="),
    ("series AUC in distribution", ("in-distribution",), ("series", "auc"), 0.97, ">="),
    ("slice sensitivity drift from validation", None, ("slice", "sensitivity_drift"), DRIFT_LIMIT, "<="),
    ("slice specificity drift from validation", None, ("slice", "specificity_drift"), DRIFT_LIMIT, "<="),
    ("series sensitivity drift from validation", None, ("series", "sensitivity_drift"), DRIFT_LIMIT, "<="),
    ("series specificity drift from validation", None, ("series", "specificity_drift"), DRIFT_LIMIT, "<="),
    ("labels changed by a left-right flip", None, ("flip_changed",), 0.03, "<="),
    ("int8 agreement with Keras", None, ("agreement",), 0.99, ">="),
)


def evaluate(bundle: Path | None = None, patients: int = 40, conditions: tuple[Condition, ...] = CONDITIONS,
             keras_model: Path | None = None, progress: Callable[[str], None] = log.info) -> dict:
    """Measure ``bundle`` on every condition; returns ``{"conditions": [...], "targets": [...], ...}``."""
    clf = engine.load(bundle, provider="cpu")
    reference = _keras(keras_model, clf.manifest.output.mirror_average) if keras_model else None
    rows = []
    for condition in conditions:
        started = time.time()
        row = _measure(clf, condition, patients, reference)
        progress(f"{condition.name}: slice AUC {row['slice']['auc']} {row['slice']['auc_95']}, series AUC "
                 f"{row['series']['auc']}, flip {row['flip_changed']} ({time.time() - started:.0f} s)")
        rows.append(row)
    return {"conditions": rows, "targets": judge(rows), "drift_by_chance": drift_by_chance(clf.manifest.metrics, rows),
            "patients": patients, "slices_per_series": SLICES,
            "artifact": clf.artifact.format, "threshold": clf.threshold,
            "series_rule": {"kind": clf.series_rule.kind, "threshold": clf.series_rule.threshold},
            "validation": _validation(clf.manifest), "bootstrap": BOOTSTRAP, "keras_reference": str(keras_model) if keras_model else None}


def compare(bundle: Path, base: Path, patients: int = 40, conditions: tuple[Condition, ...] = CONDITIONS,
            progress: Callable[[str], None] = log.info) -> dict:
    """``bundle`` against ``base`` on the same phantoms, per condition: each one's slice and series AUC and
    ``difference`` (bundle - base) with a paired 95 % interval, from resampling whole patients, the same
    ones for both bundles. Each bundle runs as ``asinfer predict`` would run it (its own preprocessing,
    default CPU artifact, series rule), so bundles of different input sizes or recipes compare as shipped.
    """
    clfs = (engine.load(bundle, provider="cpu"), engine.load(base, provider="cpu"))
    rows = []
    for condition in conditions:
        labels, group, truth = [], [], []
        probs, series_scores = ([], []), ([], [])
        for k, series, frames in _draw(condition, patients):
            for clf, p, q in zip(clfs, probs, series_scores):
                scores = clf.run(clf.preprocessor(frames))
                p += scores.tolist()
                q.append(clf.series_rule.decide(scores.tolist())[0])
            labels += [int(v) for v in series.slice_labels]
            group += [k] * len(frames)
            truth.append(int(series.label))
        row = {"name": condition.name, "group": condition.group, "seed": condition.seed, "patients": patients,
               "slice": _paired(np.array(labels), *map(np.array, probs), np.array(group)),
               "series": _paired(np.array(truth), *map(np.array, series_scores), np.arange(patients))}
        d = row["slice"]
        progress(f"{condition.name}: slice AUC {d['auc']} against {d['base_auc']}, difference {d['difference']} "
                 f"{d['difference_95']}; series {row['series']['difference']} {row['series']['difference_95']}")
        rows.append(row)
    return {"bundle": str(bundle), "against": str(base), "artifacts": [c.artifact.format for c in clfs],
            "patients": patients, "slices_per_series": SLICES, "bootstrap": BOOTSTRAP, "conditions": rows}


def _paired(labels: np.ndarray, scores: np.ndarray, base: np.ndarray, group: np.ndarray,
            reps: int = BOOTSTRAP) -> dict:
    """AUC of ``scores`` and of ``base`` on the same ``labels``, their difference and its 95 % interval."""
    auc, base_auc = roc_auc(labels, scores), roc_auc(labels, base)
    differences = []
    for take in _resamples(group, reps):
        a, b = roc_auc(labels[take], scores[take]), roc_auc(labels[take], base[take])
        if a is not None and b is not None:
            differences.append(a - b)
    return {"auc": _r(auc), "base_auc": _r(base_auc),
            "difference": _r(auc - base_auc) if auc is not None and base_auc is not None else None,
            "difference_95": _percentile_95(differences, reps)}


def _validation(manifest) -> dict:
    """Sensitivity and specificity the bundle measured on its validation split, slice and series level."""
    slice_, series = manifest.metrics.get("validation") or {}, manifest.metrics.get("series_validation") or {}
    return {"slice": {"sensitivity": slice_.get("recall"), "specificity": slice_.get("specificity")},
            "series": {"sensitivity": series.get("sensitivity"), "specificity": series.get("specificity")}}


def _with_drift(rates: dict, validation: dict) -> dict:
    """``rates`` plus ``*_drift``: the distance of each rate from its validation value (threshold transfer)."""
    out = dict(rates)
    for key in ("sensitivity", "specificity"):
        if rates.get(key) is not None and validation.get(key) is not None:
            out[f"{key}_drift"] = _r(abs(rates[key] - validation[key]))
    return out


def _draw(condition: Condition, patients: int):
    """Yield ``(k, series, frames)`` per patient of ``condition``: the same phantoms on every call."""
    generate = _source(condition.source)
    for k, child in enumerate(np.random.SeedSequence(condition.seed).spawn(patients)):
        series = generate(child, slices=SLICES, positive=bool(k % 2), patient_id=f"E{k:03d}", **condition.generator)
        yield k, series, [_frame(series, i, condition.export, f"E{k:03d}_s{i}") for i in range(len(series.images))]


def _measure(clf, condition: Condition, patients: int, reference) -> dict:
    labels, probs, flipped, agree, series_of, truth, graph, graph_flipped = [], [], [], [], [], [], [], []
    brightening = []  # per slice: its lesions' brightening over their surroundings (nan: no lesion)
    for k, series, frames in _draw(condition, patients):
        batch = clf.preprocessor(frames)
        p = clf.run(batch)
        probs += p.tolist()
        mirrored = clf.preprocessor([_mirrored(f) for f in frames])
        flipped += clf.run(mirrored).tolist()
        if clf.manifest.output.mirror_average:  # what the network alone does under a mirror
            graph += clf.run_graph(batch).tolist()
            graph_flipped += clf.run_graph(mirrored).tolist()
        labels += [int(v) for v in series.slice_labels]
        brightening += [lesion_brightening(image, mask) if lab else math.nan
                        for image, mask, lab in zip(series.images, series.masks, series.slice_labels)]
        series_of += [k] * len(frames)
        truth.append(int(series.label))
        if reference is not None:
            agree += ((reference(batch) >= clf.threshold) == (p >= clf.threshold)).tolist()
    labels_a, probs_a, group = np.array(labels), np.array(probs), np.array(series_of)
    validation = _validation(clf.manifest)
    positive, positive_flipped = probs_a >= clf.threshold, np.array(flipped) >= clf.threshold
    by_series = [probs_a[group == k].tolist() for k in range(patients)]
    decided = [clf.series_rule.decide(p) for p in by_series]
    return {
        "name": condition.name, "group": condition.group, "source": condition.source,
        "generator": condition.generator, "export": condition.export, "seed": condition.seed,
        "patients": patients, "slices": int(len(labels_a)), "positive_slices": int(labels_a.sum()),
        "slice": {"auc": _r(roc_auc(labels_a, probs_a)), "auc_95": _interval(labels_a, probs_a, group),
                  **_with_drift(_rates(labels_a, positive), validation["slice"])},
        "series": {"auc": _r(roc_auc(np.array(truth), np.array([d[0] for d in decided]))),
                   "auc_95": _interval(np.array(truth), np.array([d[0] for d in decided]), np.arange(patients)),
                   **_with_drift(_rates(np.array(truth), np.array([d[1] for d in decided])), validation["series"])},
        "flip_changed": _r(float((positive != positive_flipped).mean())),
        "flip_changed_network": (_r(float(((np.array(graph) >= clf.threshold)
                                           != (np.array(graph_flipped) >= clf.threshold)).mean()))
                                 if graph else None),
        "agreement": _r(float(np.mean(agree))) if agree else None,
        "lesion_sensitivity": sensitivity_by_brightening(np.array(brightening), positive),
    }


def lesion_brightening(image: np.ndarray, mask: np.ndarray, ring: int = RING_PX) -> float:
    """How much brighter the lesion pixels (``mask``) are than their surroundings: the lesion's mean over
    the median of a ``ring``-pixel band around it, minus 1 (0: as bright; 1: twice). nan without a lesion
    or a band (a mask filling the image). Display polarity, stored values: a ratio, so the bit depth and a
    linear export do not change it."""
    if not mask.any():
        return math.nan
    kernel = np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)
    band = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
    if not band.any():
        return math.nan
    around = float(np.median(image[band]))
    return float(image[mask].mean()) / max(around, 1e-6) - 1.0


def sensitivity_by_brightening(brightening: np.ndarray, positive: np.ndarray,
                               edges: tuple[float, ...] = BRIGHTENING_BINS) -> list[dict]:
    """Slice sensitivity per bin of lesion brightening (nan entries are slices without a lesion: skipped)."""
    lesion = ~np.isnan(brightening)
    bounds = (-math.inf, *edges, math.inf)
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = lesion & (brightening >= lo) & (brightening < hi)
        name = f"< {hi:g}" if lo == -math.inf else f">= {lo:g}" if hi == math.inf else f"{lo:g}-{hi:g}"
        out.append({"brighter": name, "lesion_slices": int(sel.sum()),
                    "sensitivity": _r(float(positive[sel].mean())) if sel.any() else None})
    return out


def judge(rows: list[dict]) -> list[dict]:
    """Each target against the conditions it covers: the worst value, and whether it holds."""
    out = []
    for what, groups, path, limit, direction in TARGETS:
        values = []
        for row in rows:
            if groups is not None and row["group"] not in groups:
                continue
            value = row
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                values.append((value, row["name"]))
        if not values:
            out.append({"target": what, "limit": f"{direction} {limit}", "worst": None, "where": None, "met": None})
            continue
        worst = min(values) if direction == ">=" else max(values)
        met = worst[0] >= limit if direction == ">=" else worst[0] <= limit
        out.append({"target": what, "limit": f"{direction} {limit}", "worst": worst[0], "where": worst[1], "met": met})
    return out


def drift_by_chance(metrics: dict, rows: list[dict], limit: float = DRIFT_LIMIT) -> dict | None:
    """How often a model whose sensitivity and specificity carry over exactly would pass the drift targets.

    Each rate is then a binomial draw of its validation value twice, once on the validation patients and
    once on a condition's; the drift is the difference of the two draws. Per level (slice, series) this
    gives, exactly, the chance that one condition keeps both rates within ``limit`` (median over the
    conditions) and that every condition does (they share the validation draw). Slices of one patient
    are treated as independent; they are correlated, so the real chance of passing is lower still.
    None when the bundle's metrics lack the validation counts.
    """
    out = {"limit": limit}
    for level, key in (("slice", "validation"), ("series", "series_validation")):
        cm = (metrics.get(key) or {}).get("confusion_matrix")
        if not cm or not rows:
            return None
        counts = {"sensitivity": (cm["tp"] + cm["fn"], cm["tp"]), "specificity": (cm["tn"] + cm["fp"], cm["tn"])}
        one, every = np.ones(len(rows)), 1.0
        for rate, (n_val, hits) in counts.items():
            if n_val == 0:
                return None
            p = hits / n_val
            val_pmf, val_rate = _binomial(n_val, p), np.arange(n_val + 1) / n_val
            passing = []  # per condition: P(pass | the validation count), for every validation count
            for row in rows:
                positives = row["positive_slices"] if level == "slice" else row["patients"] // 2
                n = positives if rate == "sensitivity" else (row["slices"] if level == "slice" else row["patients"]) - positives
                if n == 0:
                    passing.append(np.ones(n_val + 1))
                    continue
                close = np.abs(val_rate[:, None] - np.arange(n + 1)[None, :] / n) <= limit + 1e-9
                passing.append(close @ _binomial(n, p))
            one *= np.array([val_pmf @ c for c in passing])
            every *= float(val_pmf @ np.prod(passing, axis=0))
        out[level] = {"one_condition_median": _r(np.median(one)), "every_condition": float(f"{every:.3g}")}
    return out


def _binomial(n: int, p: float) -> np.ndarray:
    """The binomial pmf of ``n`` draws at rate ``p``, for 0..n successes."""
    k = np.arange(n + 1)
    if p <= 0.0 or p >= 1.0:
        return (k == round(p * n)).astype(float)
    log_choose = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k])
    return np.exp(log_choose + k * math.log(p) + (n - k) * math.log1p(-p))


def _source(name: str):
    if name == "independent":
        from .altphantoms import generate_series
    else:
        from .phantoms import generate_series
    return generate_series


def _frame(series, index: int, export: str | None, source: str) -> engine.Frame:
    """Slice ``index`` as a file would hold it: stored values (inverted for MONOCHROME1), its window;
    ``export`` re-stores the rendered values of a MONOCHROME2 series first."""
    window = getattr(series, "stored_window", series.window)
    invert = getattr(series, "photometric", "MONOCHROME2") == "MONOCHROME1"
    image = series.stored(index) if invert else series.images[index]
    if export is not None and invert:
        raise ValueError("exports re-store MONOCHROME2 series only")
    if export == "8bit-unwindowed":
        image, window = (image.astype(np.uint16) >> 4).astype(np.uint8), None
    elif export == "8bit-windowed":
        image = engine.to_uint8(engine.Frame(image, source, window=window, invert=False))
        window = None
    elif export == "16bit":
        image = (image.astype(np.uint32) * 16).clip(0, 65535).astype(np.uint16)
        window = None if window is None else (window[0] * 16, window[1] * 16)
    elif export is not None:
        raise ValueError(f"unknown export {export!r}")
    return engine.Frame(image, source, index, window=window, invert=invert)


def _mirrored(frame: engine.Frame) -> engine.Frame:
    return engine.Frame(np.ascontiguousarray(frame.pixels[:, ::-1]), frame.source, frame.index, window=frame.window,
                        invert=frame.invert)


def _rates(labels: np.ndarray, positive: np.ndarray) -> dict:
    tp, tn = int((positive & (labels == 1)).sum()), int((~positive & (labels == 0)).sum())
    fp, fn = int((positive & (labels == 0)).sum()), int((~positive & (labels == 1)).sum())
    return {"sensitivity": _r(tp / (tp + fn)) if tp + fn else None,
            "specificity": _r(tn / (tn + fp)) if tn + fp else None}


def _interval(labels: np.ndarray, scores: np.ndarray, group: np.ndarray, reps: int = BOOTSTRAP) -> list | None:
    """95 % percentile interval of the AUC, resampling whole patients (their slices travel together)."""
    values = []
    for take in _resamples(group, reps):
        auc = roc_auc(labels[take], scores[take])
        if auc is not None:
            values.append(auc)
    return _percentile_95(values, reps)


def _percentile_95(values: list[float], reps: int) -> list | None:
    """The 2.5th and 97.5th percentiles of bootstrap ``values``; None when under half the ``reps`` had one."""
    return [_r(v) for v in np.percentile(values, [2.5, 97.5])] if len(values) >= reps // 2 else None


def _resamples(group: np.ndarray, reps: int):
    """``reps`` bootstrap resamples of the indices, whole groups (patients) at a time; seeded, so the
    same ``group`` gets the same resamples on every call (and two bundles on one condition share them)."""
    members = [np.flatnonzero(group == g) for g in np.unique(group)]
    rng = np.random.default_rng(0)
    for _ in range(reps):
        yield np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])


def _keras(path: Path, mirror_average: bool = False):
    from .model import load
    from .train import _predict

    model = load(path)
    return lambda batch: _predict(model, batch, mirror_average)


def _r(value) -> float | None:
    return None if value is None else round(float(value), 4)


def record(bundle: Path, result: dict) -> None:
    """Store ``result`` in the bundle's manifest (``metrics["conditions"]``) and write the card again."""
    from dataclasses import replace

    from asinfer.engine.bundle import read_manifest, write_manifest

    manifest = read_manifest(Path(bundle) / "manifest.json")
    write_manifest(Path(bundle), replace(manifest, metrics={**manifest.metrics, "conditions": result}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", nargs="?", type=Path, default=None)
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--only", help="comma-separated condition names (default: all)")
    parser.add_argument("--keras", type=Path, help="the run's model.keras, for the int8 agreement")
    parser.add_argument("--record", action="store_true", help="store the table in the bundle's manifest")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--against", type=Path, metavar="BASE",
                        help="compare with this bundle on the same phantoms (paired intervals) instead")
    args = parser.parse_args(argv)
    if args.against and (args.record or args.keras):
        parser.error("--against compares two bundles; --record and --keras belong to one bundle's own table")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    chosen = CONDITIONS
    if args.only:
        names = [n.strip() for n in args.only.split(",")]
        unknown = sorted(set(names) - {c.name for c in CONDITIONS})
        if unknown:
            parser.error(f"unknown condition(s) {unknown}; known: {[c.name for c in CONDITIONS]}")
        chosen = tuple(c for c in CONDITIONS if c.name in names)
    bundle = args.bundle or engine.default_model()
    result = (compare(bundle, args.against, args.patients, chosen) if args.against
              else evaluate(bundle, args.patients, chosen, args.keras))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    if args.record:
        record(bundle, result)


if __name__ == "__main__":
    main()
