"""pytest-benchmark suite for preprocessing (batch of 64 at 512x512, 8- and 16-bit).

    pytest benchmarks/bench_preprocess.py --benchmark-enable          # measure
    python -m asinfer.benchmarks.preprocess                                    # interleaved ratios

With the default ``--benchmark-disable`` each case runs once as a test, so
the suite cannot rot.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from asinfer.benchmarks.preprocess import contenders, make_inputs, plain_loop

THREADS = os.cpu_count() or 1


@pytest.fixture(scope="module", params=["uint8", "uint16"])
def slices(request):
    return request.param, make_inputs(request.param, batch=64, size=512)


@pytest.mark.parametrize("name", ["loop", "batched-1", f"batched-{THREADS}"])
def test_preprocess_batch_64(benchmark, slices, name):
    kind, images = slices
    benchmark.group = f"preprocess-{kind}-64x512"
    batch = benchmark.pedantic(contenders(images, THREADS)[name], rounds=3, warmup_rounds=1)
    assert batch.shape == (64, 224, 224, 1) and batch.dtype == np.uint8
    if kind == "uint8":  # same CLAHE and resize: the batched path must equal the plain loop
        np.testing.assert_array_equal(batch, plain_loop(images))
    else:  # 16-bit: window vs min-max mapping differ slightly, structure must not
        ref = plain_loop(images).astype(np.float32).ravel()
        assert np.corrcoef(batch.astype(np.float32).ravel(), ref)[0, 1] > 0.9
