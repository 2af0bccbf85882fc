"""What writing a series' DICOM results costs beside deciding the series.

    python -m asinfer.benchmarks.dicom_report [BUNDLE] [--slices 24] [--size 512] [--rounds 7]

One synthetic DICOM series (seed 0, a positive phantom patient) is decided
(:meth:`Classifier.predict_series`: read, preprocess, infer every slice) and
reported (:meth:`Classifier.report`: Grad-CAM of the driving slices, read
again, then the SR and the Secondary Capture images written and fsynced),
interleaved round by round. The report's figure is also split into its
explanation and its DICOM writing. The issue's budget: the report costs at
most 25 % of the series' inference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

BUDGET = 0.25


def measure(bundle: Path | None, slices: int, size: int, rounds: int) -> dict:
    from asinfer import engine
    from asinfer.trainer.phantoms import write_dataset

    clf = engine.load(bundle, provider="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "series", Path(tmp) / "out"
        write_dataset(data, patients=1, slices=slices, fmt="dicom", seed=0, size=size, positive_fraction=1.0)
        (series,) = clf.predict_series(data)
        clf.report(series, out / "warm")  # imports highdicom once
        times: dict[str, list[float]] = {"decide": [], "report": [], "explain": [], "write": []}
        for n in range(rounds):
            start = time.perf_counter()
            (series,) = clf.predict_series(data)
            times["decide"].append(time.perf_counter() - start)
            start = time.perf_counter()
            files = clf.report(series, out / f"r{n}")
            times["report"].append(time.perf_counter() - start)
            assert files.ok, files.message
            wanted = set(series.driving)
            start = time.perf_counter()
            evidence = clf.explain(sorted({s for s, _ in wanted}), frames=wanted)
            times["explain"].append(time.perf_counter() - start)
            start = time.perf_counter()
            engine.write_report(series, evidence, out / f"w{n}", manifest=clf.manifest, artifact=clf.artifact,
                                 rule=clf.series_rule, labels=clf.manifest.labels, software_version=engine.__version__)
            times["write"].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}
    ratios = sorted(r / d for r, d in zip(times["report"], times["decide"]))
    return {
        "series": f"{slices} slices of {size} x {size}, 16-bit DICOM (phantom seed 0)",
        "artifact": clf.artifact.format,
        "seconds_median": {k: round(v, 4) for k, v in median.items()},
        "seconds_min_max": {k: [round(min(v), 4), round(max(v), 4)] for k, v in times.items()},
        "report_over_decide_median": round(statistics.median(ratios), 4),
        "report_over_decide_min_max": [round(ratios[0], 4), round(ratios[-1], 4)],
        "budget": BUDGET,
        "within_budget": statistics.median(ratios) <= BUDGET,
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", nargs="?", type=Path, default=None)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.bundle, args.slices, args.size, args.rounds), indent=2))


if __name__ == "__main__":
    main()
