"""Grad-CAM evidence: does it point at the lesion, and what does it cost?

    python -m asinfer.benchmarks.evidence [BUNDLE] [--only pointing|cost] [--patients 80] [--seed 4242]
                                          [--rounds 7] [--record]

Pointing game: on a fresh phantom set (a seed no recipe trains on), for every
slice that holds a lesion and that the model calls positive, the CAM's peak
(in the slice's own geometry) must fall inside the lesion mask dilated by
half a CAM cell (the CAM is 7 x 7 over the model input; its peak cannot be
placed finer). Reports the share of hits with a 95 % Wilson interval.

Cost: ``Classifier.run`` (explanation off) against ``run_explained`` (on),
interleaved at batch 8 on the same slices; and the graph with its
explanation outputs against the same graph without them (off: no cost).

``--record`` writes the pointing-game figure into the bundle's manifest
metrics (``pointing_game``; the model card shows it). Phantoms only: the
figure says where the model looks on cartoons, nothing about patients.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from ._timing import interleave


def pointing_game(clf, patients: int, seed: int, size: int | None = None) -> dict:
    """Hits of the CAM peak inside the dilated lesion mask, over true-positive lesion slices."""
    import cv2

    from asinfer.engine import Frame
    from asinfer.engine.bundle import wilson_interval
    from asinfer.trainer.phantoms import generate_series

    hits = total = 0
    for k in range(patients):
        series = generate_series(seed * 1000 + k, slices=12, size=size, positive=bool(k % 2), patient_id=f"G{k}")
        frames = [Frame(image, f"G{k}_s{i}", i, window=series.window) for i, image in enumerate(series.images)]
        for ex in clf.explain(frames):
            mask = series.masks[ex.prediction.frame]
            if not mask.any() or ex.prediction.label != clf.manifest.labels[1]:
                continue
            reach = max(1, round(mask.shape[0] / (2 * ex.cam.shape[0])))  # half a CAM cell, in pixels
            grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)) > 0
            total += 1
            hits += bool(grown[ex.peak()])
    low, high = wilson_interval(hits, total) or (None, None)
    return {"hits": hits, "slices": total, "share": round(hits / total, 4) if total else None,
            "interval_95": [round(low, 4), round(high, 4)] if total else None,
            "data": f"phantoms seed {seed}, {patients} patients x 12 slices (half positive)",
            "patients": patients, "seed": seed,
            "rule": "CAM peak inside the lesion mask dilated by half a CAM cell"}


def cost(clf, bundle: Path, rounds: int, seed: int) -> dict:
    """img/s of predict vs explain, and of the graph with vs without its explanation outputs, interleaved."""
    from asinfer.engine import PROVIDERS, SessionConfig, create_session

    rng = np.random.default_rng(seed)
    height, width = clf.manifest.input.height, clf.manifest.input.width
    batch = rng.integers(0, 256, (8, height, width, 1), dtype=np.uint8)
    feed = {clf.manifest.input.name: batch}
    output = [clf.manifest.output.name]
    with tempfile.TemporaryDirectory() as tmp:
        source = bundle / clf.artifact.file
        with_outputs = create_session(str(source), PROVIDERS["cpu"], SessionConfig())
        without = create_session(str(_without_outputs(source, Path(tmp) / "bare.onnx")), PROVIDERS["cpu"], SessionConfig())
        # Each call runs BATCHES batches back to back, so what one leaves behind (threads still
        # spinning after a numpy product) slows itself, not the next contender.
        runs = {"predict": _repeat(lambda: clf.run(batch)),
                "predict + Grad-CAM": _repeat(lambda: clf.run_explained(batch)),
                "graph with outputs": _repeat(lambda: with_outputs.run(output, feed)),
                "graph without outputs": _repeat(lambda: without.run(output, feed))}
        timings = interleave(runs, rounds=rounds, warmup=1)
    images = 8 * BATCHES
    ips = {name: round(images / t.median, 2) for name, t in timings.items()}
    spread = {name: [round(images / max(t.seconds), 2), round(images / min(t.seconds), 2)]
              for name, t in timings.items()}
    return {"img_per_s_batch8": ips, "min_max": spread,
            "explain_on_cost": round(ips["predict"] / ips["predict + Grad-CAM"] - 1, 4),
            "explain_off_cost": round(ips["graph without outputs"] / ips["graph with outputs"] - 1, 4),
            "rounds": rounds, "artifact": clf.artifact.format}


BATCHES = 3


def _repeat(call):
    def run() -> None:
        for _ in range(BATCHES):
            call()
    return run


def _without_outputs(source: Path, target: Path) -> Path:
    """The same graph with only the probability output (the explanation nodes pruned)."""
    import onnx

    model = onnx.load(str(source))
    graph = model.graph
    keep = [o for o in graph.output if o.name == "probability"]
    del graph.output[:]
    graph.output.extend(keep)
    explain_nodes = [n for n in graph.node if n.name.startswith("explain_") or n.name.endswith("_explain")]
    for node in explain_nodes:
        graph.node.remove(node)
    onnx.save(model, str(target))
    return target


def main(argv: list[str] | None = None) -> None:
    from asinfer import engine

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", nargs="?", type=Path, default=None)
    parser.add_argument("--patients", type=int, default=80)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", choices=("pointing", "cost"), default=None, help="run one half only")
    parser.add_argument("--record", action="store_true", help="write the pointing game into the bundle's manifest")
    args = parser.parse_args(argv)
    bundle = args.bundle or engine.default_model()
    clf = engine.load(bundle, provider="cpu")
    result = {}
    if args.only != "cost":
        result["pointing_game"] = pointing_game(clf, args.patients, args.seed)
    if args.only != "pointing":
        result["cost"] = cost(clf, bundle, args.rounds, 0)
    print(json.dumps(result, indent=2))
    if args.record and "pointing_game" in result:
        from dataclasses import replace

        from asinfer.engine.bundle import read_manifest, write_manifest

        manifest = read_manifest(bundle / "manifest.json")
        write_manifest(bundle, replace(manifest, metrics={**manifest.metrics, "pointing_game": result["pointing_game"]}))


if __name__ == "__main__":
    main()
