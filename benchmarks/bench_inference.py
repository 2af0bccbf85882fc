"""pytest-benchmark suite for the engine: ``Classifier.run`` per engine format at batch 1 and 8, and end to end.

    pytest benchmarks/bench_inference.py --benchmark-enable                 # measure
    ASINFER_BENCH_MODEL=models/asinfer-vgg16-phantom pytest benchmarks/bench_inference.py --benchmark-enable
    pytest benchmarks/bench_inference.py --benchmark-enable --benchmark-save=baseline      # store a baseline
    pytest benchmarks/bench_inference.py --benchmark-enable --benchmark-compare=baseline \
        --benchmark-compare-fail=median:25%                                 # fail on a 25% regression

The model is ``$ASINFER_BENCH_MODEL``, else ``asinfer.engine.default_model()``; formats
come from ``asinfer.engine.FORMATS`` (those the engine runs) and absent ones skip.
With the default ``--benchmark-disable`` only the smoke case (end to end) runs,
once, as a test; ``--bench-all`` runs every case as a test (see benchmarks/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from asinfer import engine
from asinfer.engine import FORMATS

ENGINE_FORMATS = [name for name, fmt in FORMATS.items() if fmt.engine]
SAMPLES = Path(__file__).resolve().parent.parent / "docs" / "samples"  # six shipped synthetic DICOM slices


def _model() -> Path:
    return Path(os.environ.get("ASINFER_BENCH_MODEL") or engine.default_model())


@pytest.fixture(scope="module", params=ENGINE_FORMATS)
def classifier(request):
    from asinfer.engine import locate

    manifest, _ = locate(_model())
    if manifest.artifact(request.param) is None:
        pytest.skip(f"{request.param} not in {_model()}")
    return engine.load(_model(), provider="cpu", artifact=request.param)


@pytest.mark.parametrize("batch", [1, 8], ids=["batch1", "batch8"])
def test_run_latency_ms(benchmark, classifier, batch):
    spec = classifier.manifest.input
    images = np.random.default_rng(0).integers(0, 256, (batch, spec.height, spec.width, 1), dtype=np.uint8)
    benchmark.group = f"run-batch{batch}"
    probs = benchmark.pedantic(classifier.run, args=(images,), rounds=10, warmup_rounds=2)
    assert probs.shape == (batch,) and probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))
    if benchmark.stats is not None:  # None with --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info["latency_ms"] = round(1000 * median, 3)
        benchmark.extra_info["img_per_s"] = round(batch / median, 2)


@pytest.mark.smoke
def test_end_to_end_img_per_s(benchmark):
    """Read DICOM -> CLAHE -> inference -> result on the shipped sample slices, the engine's CPU choice."""
    files = sorted(SAMPLES.rglob("*.dcm"))
    if not files:
        pytest.skip(f"no sample DICOM files under {SAMPLES}")
    clf = engine.load(_model(), provider="cpu")
    benchmark.group = "end-to-end"
    results = benchmark.pedantic(clf.predict, args=(files,), kwargs={"batch_size": 8}, rounds=5, warmup_rounds=1)
    assert len(results) == len(files) and all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert all(0 <= r.probability <= 1 and r.label in clf.manifest.labels for r in results)
    if benchmark.stats is not None:
        benchmark.extra_info["img_per_s"] = round(len(files) / benchmark.stats.stats.median, 2)
