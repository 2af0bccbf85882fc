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

import numpy as np

from ._generate import PROFILE, generate_series


def collect(n_slices: int = 2000, *, slices_per_series: int = 12, seed: int = 0,
            size: int | None = None) -> dict[str, np.ndarray]:
    """Render ~n_slices slices of alternating positive/negative series and the baselines' features."""
    from asinfer.trainer.phantoms.difficulty import collect_features

    return collect_features(lambda child, positive: generate_series(
        child, slices=slices_per_series, size=size, positive=positive), n_slices,
        slices_per_series=slices_per_series, seed=seed)


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
