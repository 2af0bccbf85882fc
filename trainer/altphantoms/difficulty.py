"""Is the independent test source too easy? Slice-level AUC of trivial baselines.

The same baselines as ``asinfer.trainer.phantoms.difficulty`` (its
``baseline_aucs``: a threshold on the slice mean, raw and min-max scaled;
logistic regression on 32x32 downsampled slices, raw and scaled, out-of-fold by
patient), on series from this source. All must stay below 0.80.

Run: ``python -m asinfer.trainer.altphantoms.difficulty --slices 2000`` (needs
scikit-learn, from the ``dev`` or ``train`` extra). Synthetic data only.
"""
from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from ._generate import PROFILE, generate_series


def _scaled(img: np.ndarray) -> np.ndarray:
    """Per-slice robust min-max scaling to 0..1."""
    lo, hi = np.percentile(img, [0.5, 99.5])
    return np.clip((img.astype(np.float32) - lo) / max(hi - lo, 1.0), 0.0, 1.0)


def collect(n_slices: int = 2000, *, slices_per_series: int = 12, seed: int = 0,
            size: int | None = None) -> dict[str, np.ndarray]:
    """Render ~n_slices slices of alternating positive/negative series and the baselines' features."""
    feats: dict[str, list] = {k: [] for k in ("mean_raw", "mean_scaled", "x32_raw", "x32_scaled", "y", "group")}
    for p, child in enumerate(np.random.SeedSequence(seed).spawn(-(-n_slices // slices_per_series))):
        s = generate_series(child, slices=slices_per_series, size=size, positive=p % 2 == 0)
        for img, lab in zip(s.images, s.slice_labels):
            sc = _scaled(img)
            feats["mean_raw"].append(float(img.mean()))
            feats["mean_scaled"].append(float(sc.mean()))
            feats["x32_raw"].append(cv2.resize(img.astype(np.float32) / 4095, (32, 32), interpolation=cv2.INTER_AREA))
            feats["x32_scaled"].append(cv2.resize(sc, (32, 32), interpolation=cv2.INTER_AREA))
            feats["y"].append(lab)
            feats["group"].append(p)
    return {k: np.asarray(v)[:n_slices] for k, v in feats.items()}


def main(argv: list[str] | None = None) -> int:
    """CLI: print the baseline AUCs as JSON; exit 1 if any reaches the limit."""
    from asinfer.trainer.phantoms.difficulty import baseline_aucs

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=None, help="matrix; default drawn per series (192..512)")
    ap.add_argument("--limit", type=float, default=0.80)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = collect(args.slices, seed=args.seed, size=args.size)
    aucs = baseline_aucs(data)
    report = {"source": PROFILE, "slices": int(len(data["y"])), "positive_slices": int(data["y"].sum()),
              "patients": int(len(np.unique(data["group"]))), "seed": args.seed, "auc": aucs, "limit": args.limit,
              "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(report, indent=2))
    return int(any(v >= args.limit for v in aucs.values()))


if __name__ == "__main__":
    raise SystemExit(main())
