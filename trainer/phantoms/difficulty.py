"""Is the phantom task too easy? Slice-level AUC of trivial baselines.

Renders a balanced set of phantom series and scores two cues that must *not*
solve the task (both should stay below AUC 0.80):

* a threshold on a slice's mean intensity (raw 12-bit, and after per-slice
  min-max scaling), reported in the better of its two directions;
* logistic regression on 32x32 downsampled slices (raw, and per-slice scaled),
  with out-of-fold scores from a 5-fold split by patient.

Run: ``python -m asinfer.trainer.phantoms.difficulty --slices 2000`` (needs scikit-learn,
from the ``dev`` or ``train`` extra). Synthetic data only.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import cv2
import numpy as np

from ._profiles import TRAINING_PROFILE
from ._series import generate_series


def _scaled(img: np.ndarray) -> np.ndarray:
    """Per-slice robust min-max scaling to 0..1, as a viewer or loader would."""
    lo, hi = np.percentile(img, [0.5, 99.5])
    return np.clip((img.astype(np.float32) - lo) / max(hi - lo, 1.0), 0.0, 1.0)


def collect(n_slices: int = 2000, *, slices_per_series: int = 12, seed: int = 0, profile: str = TRAINING_PROFILE,
            size: int | None = None, anatomy: str | None = None) -> dict[str, np.ndarray]:
    """Render ~n_slices slices (alternating positive/negative series) and their features."""
    return collect_features(lambda child, positive: generate_series(
        child, slices=slices_per_series, size=size, positive=positive, profile=profile, anatomy=anatomy),
        n_slices, slices_per_series=slices_per_series, seed=seed)


def collect_features(generate: Callable, n_slices: int, *, slices_per_series: int, seed: int) -> dict[str, np.ndarray]:
    """The baselines' features of ~n_slices slices from ``generate(seed_sequence, positive) -> Series``.

    Series alternate positive/negative; any phantom source's generator fits, so both sources are
    judged by the same features.
    """
    feats: dict[str, list] = {k: [] for k in ("mean_raw", "mean_scaled", "x32_raw", "x32_scaled", "y", "group")}
    for p, child in enumerate(np.random.SeedSequence(seed).spawn(-(-n_slices // slices_per_series))):
        s = generate(child, p % 2 == 0)
        for img, lab in zip(s.images, s.slice_labels):
            sc = _scaled(img)
            feats["mean_raw"].append(float(img.mean()))
            feats["mean_scaled"].append(float(sc.mean()))
            feats["x32_raw"].append(cv2.resize(img.astype(np.float32) / 4095, (32, 32), interpolation=cv2.INTER_AREA))
            feats["x32_scaled"].append(cv2.resize(sc, (32, 32), interpolation=cv2.INTER_AREA))
            feats["y"].append(lab)
            feats["group"].append(p)
    return {k: np.asarray(v)[:n_slices] for k, v in feats.items()}


def _lr_auc(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = x.reshape(len(x), -1)
    oof = np.zeros(len(y))
    for train, test in GroupKFold(n_splits=5).split(x, y, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
        model.fit(x[train], y[train])
        oof[test] = model.predict_proba(x[test])[:, 1]
    return float(roc_auc_score(y, oof))


def baseline_aucs(data: dict[str, np.ndarray]) -> dict[str, float]:
    """Slice-level AUCs of the trivial baselines on collected data."""
    from sklearn.metrics import roc_auc_score

    y, g = data["y"], data["group"]
    out = {}
    for key in ("mean_raw", "mean_scaled"):
        auc = roc_auc_score(y, data[key])
        out[f"{key}_threshold"] = round(float(max(auc, 1 - auc)), 3)  # a threshold may point either way
    for key in ("x32_raw", "x32_scaled"):
        out[f"logreg_{key}"] = round(_lr_auc(data[key], y, g), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: print the baseline AUCs as JSON; exit 1 if any reaches the limit."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default=TRAINING_PROFILE, help="held out: vendor-b")
    ap.add_argument("--anatomy", default=None, help="default: the training variants; held out: elderly")
    ap.add_argument("--size", type=int, default=None, help="matrix; default drawn per series from the profile")
    ap.add_argument("--limit", type=float, default=0.80)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = collect(args.slices, seed=args.seed, profile=args.profile, size=args.size, anatomy=args.anatomy)
    aucs = baseline_aucs(data)
    report = {"slices": int(len(data["y"])), "positive_slices": int(data["y"].sum()),
              "patients": int(len(np.unique(data["group"]))), "profile": args.profile, "anatomy": args.anatomy,
              "seed": args.seed, "auc": aucs, "limit": args.limit, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(report, indent=2))
    return int(any(v >= args.limit for v in aucs.values()))


if __name__ == "__main__":
    raise SystemExit(main())
