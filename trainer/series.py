"""The series rule: fitted on validation patients, measured on held-out test patients.

A patient's slices form one series, ordered by slice index. Each rule the
engine knows (:data:`asinfer.engine.SeriesRule` kinds) is fitted on the
validation series (Youden's J, or the highest threshold reaching a target
sensitivity). Which rule is kept is decided on the validation series too, but
not by their in-sample J: that favours the rule with more fitted thresholds
(the consecutive rule's single-slice threshold is a second one). Each rule is
refitted on bootstrap draws of the validation series and scored by J on the
series each draw left out (out-of-bag); rules within one standard error of the
best out-of-bag J are tied (the one-standard-error rule of cross-validation),
and among those the rule whose score ranks the validation series best (AUC)
is kept, then the first in :data:`CANDIDATES`. Every candidate is recorded in
the rule's ``compared``. Test series are never used to choose.

    python -m asinfer.trainer.series models/asinfer-vgg16-phantom

refits a phantom-trained bundle without retraining: its validation and test
phantoms are regenerated from its ``train_config.json`` and run through its
engine artifact (see :func:`refit_bundle`).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from asinfer.engine import SeriesRule
from asinfer.engine.bundle import roc_auc

log = logging.getLogger("asinfer.trainer")

#: Candidate rules: (name in ``compared``, the rule without thresholds).
CANDIDATES = (("consecutive", SeriesRule("consecutive")), ("max", SeriesRule("max")),
              ("top_2_mean", SeriesRule("top_k_mean", k=2)), ("top_3_mean", SeriesRule("top_k_mean", k=3)))
MAX_SINGLE_CANDIDATES = 40  # single-slice thresholds tried for the consecutive rule
OUT_OF_BAG_DRAWS = 200  # bootstrap refits per rule for its out-of-bag J


@dataclass(frozen=True)
class SeriesTruth:
    """One series for fitting: its truth and its slice probabilities in slice order."""

    key: str
    label: int
    probs: tuple[float, ...]


def series_from_slices(records: Sequence, index: np.ndarray, probs: np.ndarray) -> list[SeriesTruth]:
    """Group predicted slices into series by patient, ordered by slice index (else file name).

    The truth is the CSV's ``series_label`` when present, else whether any slice is positive.
    """
    groups: dict[str, list[tuple]] = {}
    for k, i in enumerate(index):
        r = records[int(i)]
        order = (r.slice_index if r.slice_index is not None else -1, str(r.path))
        groups.setdefault(r.patient_id, []).append((order, float(probs[k]), r))
    out = []
    for key, members in groups.items():
        members.sort(key=lambda m: m[0])
        truths = [m[2].series_label for m in members if m[2].series_label is not None]
        label = int(truths[0]) if truths else int(max(m[2].label for m in members))
        out.append(SeriesTruth(key, label, tuple(m[1] for m in members)))
    return out


def fit_series_rule(series: Sequence[SeriesTruth], target_sensitivity: float | None = None,
                    fitted_on: str = "validation patients", draws: int = OUT_OF_BAG_DRAWS) -> SeriesRule:
    """The rule chosen on ``series`` (validation, see the module docstring), with what was compared.

    ``draws``: bootstrap refits per rule for the out-of-bag J (0: choose by in-sample J alone).

    Raises:
        ValueError: the series hold one class only (no threshold can be chosen).
    """
    labels = np.array([s.label for s in series])
    if len(set(labels.tolist())) < 2:
        raise ValueError("fitting a series rule needs positive and negative validation series")
    scored = [_scores(base, series) for _, base in CANDIDATES]
    fits = [_fit_scores(base, scores, peaks, labels, target_sensitivity)
            for (_, base), (scores, peaks) in zip(CANDIDATES, scored)]
    aucs = [_round(roc_auc(labels, scores)) for scores, _ in scored]
    oob = _out_of_bag_j(scored, labels, target_sensitivity, draws)
    compared = {}
    for k, (name, _) in enumerate(CANDIDATES):
        rule, j = fits[k]
        compared[name] = {"youden_j": round(j, 4), "auc": aucs[k], "threshold": round(rule.threshold, 6),
                          "single_slice_threshold":
                          None if rule.single_slice_threshold is None else round(rule.single_slice_threshold, 6)}
        if oob is not None:
            compared[name]["out_of_bag_j"] = round(float(oob[0][k]), 4)
    if oob is None:  # too few draws hold both classes: in-sample J, ties to the first candidate
        chosen = max(range(len(CANDIDATES)), key=lambda k: (fits[k][1], -k))
        how = "in-sample J"
    else:
        chosen = max(np.flatnonzero(oob[1]).tolist(), key=lambda k: (aucs[k] or 0.0, -k))
        how = f"out-of-bag J over {draws} draws, ties within one SE by AUC"
    rule, name = fits[chosen][0], CANDIDATES[chosen][0]
    fit = "Youden J" if target_sensitivity is None else f"sensitivity >= {target_sensitivity:g}"
    return replace(rule, fitted_on=f"{fitted_on} ({len(series)} series, {int(labels.sum())} positive; {fit}); "
                                   f"chosen: {name} ({how})", compared=compared)


def _scores(base: SeriesRule, series: Sequence[SeriesTruth]) -> tuple[np.ndarray, np.ndarray]:
    """Each series' score under ``base`` and its highest slice probability."""
    return (np.array([base.score(list(s.probs))[0] for s in series]),
            np.array([max(s.probs) for s in series]))


def _fit(base: SeriesRule, series, labels: np.ndarray, target: float | None) -> tuple[SeriesRule, float]:
    """Thresholds for ``base`` by validation J (the consecutive rule also tries single-slice thresholds)."""
    return _fit_scores(base, *_scores(base, series), labels, target)


def _fit_scores(base: SeriesRule, scores: np.ndarray, peaks: np.ndarray, labels: np.ndarray,
                target: float | None) -> tuple[SeriesRule, float]:
    """:func:`_fit` on precomputed scores, every threshold at once; of equal J the lowest threshold wins.

    With a target sensitivity, J among the settings that reach it (-inf when none does).
    """
    thresholds = np.unique(scores)
    by_score = scores[None, :] >= thresholds[:, None]  # (thresholds, series)
    positives, negatives = labels == 1, labels == 0
    singles = [None]
    if base.kind == "consecutive":
        singles += sorted(set(np.quantile(peaks, np.linspace(0.5, 1.0, MAX_SINGLE_CANDIDATES)).tolist()))
    best = (base, -np.inf)
    for single in singles:
        decided = by_score | (peaks >= single)[None, :] if single is not None else by_score
        sensitivity = decided[:, positives].mean(axis=1)
        j = sensitivity + (~decided[:, negatives]).mean(axis=1) - 1.0
        if target is not None:
            j = np.where(sensitivity >= target, j, -np.inf)
        i = int(np.argmax(j))
        if j[i] > best[1] + 1e-12:
            best = (replace(base, threshold=float(thresholds[i]), single_slice_threshold=single), float(j[i]))
    return best


def _out_of_bag_j(scored: list, labels: np.ndarray, target: float | None, draws: int, seed: int = 0):
    """Each candidate refitted on bootstrap draws and scored by J on the series a draw left out.

    Returns ``(mean out-of-bag J per candidate, which are tied with the best)``, or None when fewer
    than half the draws hold both classes in and out of the bag. Tied: the mean paired difference to
    the best is at most one standard error, the spread of the per-draw differences scaled to the
    whole validation set (an out-of-bag set holds about 37 % of it).
    """
    if draws < 2:
        return None
    rng = np.random.default_rng(seed)
    n, rows, fractions = len(labels), [], []
    for _ in range(draws):
        bag = rng.integers(0, n, n)
        out = np.setdiff1d(np.arange(n), bag)
        if len(set(labels[bag].tolist())) < 2 or len(set(labels[out].tolist())) < 2:
            continue
        row = []
        for (scores, peaks), (_, base) in zip(scored, CANDIDATES):
            rule, _ = _fit_scores(base, scores[bag], peaks[bag], labels[bag], target)
            decided = scores[out] >= rule.threshold
            if rule.single_slice_threshold is not None:
                decided |= peaks[out] >= rule.single_slice_threshold
            row.append(decided[labels[out] == 1].mean() + (~decided[labels[out] == 0]).mean() - 1.0)
        rows.append(row)
        fractions.append(len(out) / n)
    if len(rows) < max(2, draws // 2):
        return None
    js = np.array(rows)
    mean = js.mean(axis=0)
    differences = js[:, [int(np.argmax(mean))]] - js
    se = differences.std(axis=0, ddof=1) * np.sqrt(np.mean(fractions))
    return mean, mean.max() - mean <= se + 1e-12


def series_metrics(series: Sequence[SeriesTruth], rule: SeriesRule) -> dict:
    """AUC of the series score, and the decision's confusion matrix and rates."""
    labels = np.array([s.label for s in series])
    decided = [rule.decide(list(s.probs)) for s in series]
    scores = np.array([d[0] for d in decided])
    positive = np.array([d[1] for d in decided])
    tp, tn = int((positive & (labels == 1)).sum()), int((~positive & (labels == 0)).sum())
    fp, fn = int((positive & (labels == 0)).sum()), int((~positive & (labels == 1)).sum())
    return {"n": len(series), "auc": _round(roc_auc(labels, scores)), "accuracy": round((tp + tn) / max(1, len(series)), 4),
            "sensitivity": round(tp / (tp + fn), 4) if tp + fn else None,
            "specificity": round(tn / (tn + fp), 4) if tn + fp else None,
            "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp}}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


# --- refitting a shipped phantom bundle ------------------------------------------------------------------------


def refit_bundle(bundle: Path, workdir: Path, progress: Callable[[str], None] = log.info):
    """Fit the series rule of a phantom-trained bundle and record series metrics, without retraining.

    The bundle's ``train_config.json`` regenerates its phantom dataset (deterministic from the seed),
    the same patient split gives the validation and test patients, and the bundle's engine artifact
    (int8 on CPU) predicts their slices. The rule goes into the manifest and, re-embedded, into every
    ONNX artifact (their probabilities are unchanged: only metadata changes; hashes are re-recorded).

    Returns:
        The manifest written.
    """
    from asinfer.engine.bundle import read_manifest

    from .bundle import write_bundle

    held_out = held_out_predictions(bundle, workdir, progress)
    config = held_out["config"]
    truths = {name: held_out[name]["series"] for name in ("validation", "test")}
    rule = fit_series_rule(truths["validation"], config.target_sensitivity)
    manifest = read_manifest(bundle / "manifest.json")
    metrics = {**manifest.metrics, "series_validation": series_metrics(truths["validation"], rule),
               "series_test": series_metrics(truths["test"], rule)}
    files = {a.format: a.file for a in manifest.artifacts}
    updated = replace(manifest, series_rule=rule, metrics=metrics, artifacts=())
    return write_bundle(bundle, updated, files)


def held_out_predictions(bundle: Path, workdir: Path, progress: Callable[[str], None] = log.info,
                         data: Path | None = None) -> dict:
    """The validation and test patients of a phantom bundle, regenerated and predicted by its engine artifact.

    ``data``: the run's own phantom dataset when it is still there (else it is regenerated in ``workdir``).

    Returns ``{"config": TrainConfig, "validation": split, "test": split}``, each split a dict of
    ``labels``, ``probs`` and ``patient`` (per slice, arrays) and ``series`` (SeriesTruth list).
    """
    from asinfer import engine

    from .data import read_index, split_by_patient
    from .phantoms import write_dataset
    from .train import TrainConfig

    config = TrainConfig.load(bundle / "train_config.json")
    if not config.synth:
        raise ValueError(f"{bundle}/train_config.json names no phantom settings (synth): refit from its data instead")
    data = data or workdir / "phantoms"
    if not (data / "labels.csv").exists():
        progress(f"regenerating the phantom dataset of {bundle.name} in {data}")
        write_dataset(data, **config.synth)
    records = read_index(data)
    split = split_by_patient(records, config.val_fraction, config.test_fraction, config.seed)
    clf = engine.load(bundle, provider="cpu")
    out: dict = {"config": config}
    for name, members in (("validation", split.val), ("test", split.test)):
        chosen = [records[i] for i in members]
        probs = np.array([p.probability for p in clf.predict([r.path for r in chosen])])
        patients = sorted({r.patient_id for r in chosen})
        out[name] = {"labels": np.array([r.label for r in chosen]), "probs": probs,
                     "patient": np.array([patients.index(r.patient_id) for r in chosen]),
                     "series": series_from_slices(chosen, np.arange(len(chosen)), probs)}
        progress(f"{name}: {len(chosen)} slices, {len(out[name]['series'])} series")
    return out


def threshold_stability(validation: dict, test: dict | None, threshold: float, rule: SeriesRule,
                        target_sensitivity: float | None = None, reps: int = 200, seed: int = 0) -> dict:
    """How much the fitted thresholds move when the validation patients are drawn again (bootstrap).

    Each repetition resamples the validation patients with replacement, fits the slice threshold and
    the series rule again exactly as training does, and (with ``test``) measures test sensitivity and
    specificity at the refitted values. Returns percentiles (2.5, 50, 97.5) of each, the shipped
    values beside them, and how often each series rule kind would have been chosen.
    """
    from .metrics import choose_threshold

    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(validation["patient"] == g) for g in np.unique(validation["patient"])]
    series = validation["series"]
    shipped = _candidate(rule)
    slice_t, rule_t, kinds, slice_rates, series_rates = [], [], {}, [], []
    for _ in range(reps):
        take = rng.integers(0, len(members), len(members))
        rows = np.concatenate([members[i] for i in take])
        if len(set(validation["labels"][rows].tolist())) < 2:
            continue
        t = choose_threshold(validation["labels"][rows], validation["probs"][rows], target_sensitivity)
        try:
            refit = fit_series_rule([series[i] for i in take], target_sensitivity)
        except ValueError:
            continue
        slice_t.append(t)
        name = _candidate(refit)
        kinds[name] = kinds.get(name, 0) + 1
        if shipped in refit.compared:  # the refit already fitted the shipped kind among its candidates
            rule_t.append(refit.compared[shipped]["threshold"])
        else:
            same_kind, _ = _fit(replace(rule, threshold=0.5, single_slice_threshold=None), [series[i] for i in take],
                                np.array([series[i].label for i in take]), target_sensitivity)
            rule_t.append(same_kind.threshold)
        if test is not None:
            slice_rates.append(_rates(test["labels"], test["probs"] >= t))
            series_rates.append(_rates(np.array([s.label for s in test["series"]]),
                                       np.array([refit.decide(list(s.probs))[1] for s in test["series"]])))
    out = {"reps": len(slice_t), "validation_patients": len(members),
           "slice_threshold": {"shipped": _round(threshold), **_percentiles(slice_t)},
           "series_threshold": {"kind": rule.kind, "shipped": _round(rule.threshold), **_percentiles(rule_t)},
           "series_rule_chosen": {k: round(v / max(1, len(slice_t)), 3) for k, v in sorted(kinds.items())}}
    if test is not None:
        for level, rates in (("slice", slice_rates), ("series", series_rates)):
            out[f"test_{level}_at_refits"] = {key: _percentiles([r[key] for r in rates if r[key] is not None])
                                              for key in ("sensitivity", "specificity")}
    return out


def _candidate(rule: SeriesRule) -> str | None:
    """The name of ``rule``'s kind in :data:`CANDIDATES` (None when it is none of them)."""
    return next((name for name, base in CANDIDATES if (base.kind, base.k) == (rule.kind, rule.k)), None)


def _rates(labels: np.ndarray, positive: np.ndarray) -> dict:
    pos, neg = labels == 1, labels == 0
    return {"sensitivity": float(positive[pos].mean()) if pos.any() else None,
            "specificity": float((~positive[neg]).mean()) if neg.any() else None}


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"median": None, "interval_95": None}
    lo, mid, hi = np.percentile(values, [2.5, 50, 97.5])
    return {"median": _round(mid), "interval_95": [_round(lo), _round(hi)]}


def record_stability(bundle: Path, workdir: Path, reps: int = 200, data: Path | None = None) -> dict:
    """threshold_stability of a phantom bundle's shipped thresholds, stored in its manifest."""
    from asinfer.engine.bundle import read_manifest, write_manifest

    manifest = read_manifest(bundle / "manifest.json")
    if manifest.series_rule is None:
        raise ValueError(f"{bundle} has no series rule to bootstrap")
    held_out = held_out_predictions(bundle, workdir, data=data)
    result = threshold_stability(held_out["validation"], held_out["test"], manifest.threshold, manifest.series_rule,
                                 held_out["config"].target_sensitivity, reps)
    write_manifest(bundle, replace(manifest, metrics={**manifest.metrics, "threshold_stability": result}))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fit a phantom bundle's series rule on its validation patients.")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path("runs/series-refit"))
    parser.add_argument("--stability", action="store_true",
                        help="instead of refitting: bootstrap the validation patients and record how much the "
                             "shipped thresholds would move (metrics['threshold_stability'])")
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.stability:
        print(json.dumps(record_stability(args.bundle, args.workdir, args.reps), indent=2))
        return
    manifest = refit_bundle(args.bundle, args.workdir)
    m = manifest.metrics
    print(f"series rule: {manifest.series_rule.kind} at {manifest.series_rule.threshold:.4f}"
          f" (single slice {manifest.series_rule.single_slice_threshold}); {manifest.series_rule.fitted_on}")
    print(f"test slices: AUC {m['test'].get('auc')}; test series: {m['series_test']}")


if __name__ == "__main__":
    main()
