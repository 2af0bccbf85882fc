"""pytest-benchmark suite for preprocessing (batch of 64 at 512x512, 8- and 16-bit).

    pytest benchmarks/bench_preprocess.py --benchmark-enable          # measure
    python -m asinfer.benchmarks.preprocess                                    # interleaved ratios

With the default ``--benchmark-disable`` the smoke case (8-bit, batched on every
core: it must equal the plain loop) runs once as a test, so the suite cannot rot;
``--bench-all`` runs every case as a test.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

from asinfer.benchmarks.preprocess import contenders, make_inputs, plain_loop

THREADS = os.cpu_count() or 1
NAMES = ["loop", "batched-1", f"batched-{THREADS}"]
SMOKE = ("uint8", f"batched-{THREADS}")
CASES = [pytest.param(kind, name, id=f"{kind}-{name}", marks=[pytest.mark.smoke] if (kind, name) == SMOKE else [])
         for kind in ("uint8", "uint16") for name in NAMES]


@functools.lru_cache(maxsize=1)
def _inputs(kind: str):
    return make_inputs(kind, batch=64, size=512)


@pytest.mark.parametrize("kind, name", CASES)
def test_preprocess_batch_64(benchmark, kind, name):
    images = _inputs(kind)
    benchmark.group = f"preprocess-{kind}-64x512"
    batch = benchmark.pedantic(contenders(images, THREADS)[name], rounds=3, warmup_rounds=1)
    assert batch.shape == (64, 224, 224, 1) and batch.dtype == np.uint8
    if kind == "uint8":  # same CLAHE and resize: the batched path must equal the plain loop
        np.testing.assert_array_equal(batch, plain_loop(images))
    else:  # 16-bit: window vs min-max mapping differ slightly, structure must not
        ref = plain_loop(images).astype(np.float32).ravel()
        assert np.corrcoef(batch.astype(np.float32).ravel(), ref)[0, 1] > 0.9
