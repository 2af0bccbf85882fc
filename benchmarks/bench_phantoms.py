"""Phantom generation speed: slices/s at 256x256 and 512x512 (single process).

Run the timing with ``python -m pytest benchmarks/bench_phantoms.py --benchmark-enable``;
the default (benchmarks disabled) run executes the smoke case (256x256) once as a test.
"""
from __future__ import annotations

import numpy as np
import pytest

from asinfer.trainer.phantoms import generate_series

SLICES = 12


@pytest.mark.parametrize("size", [pytest.param(256, marks=pytest.mark.smoke), 512])
def test_generate_series_slices_per_s(benchmark, size):
    series = benchmark.pedantic(
        generate_series, args=(42,), kwargs={"slices": SLICES, "size": size, "positive": True},
        rounds=5, iterations=1, warmup_rounds=1,
    )
    assert series.images.shape == (SLICES, size, size) and series.images.dtype in (np.uint8, np.uint16)
    assert series.label == 1 and series.masks.any() and series.images.max() <= (1 << series.bits_stored) - 1
    if benchmark.stats is not None:  # None when run with --benchmark-disable
        mean_s = benchmark.stats.stats.mean
        benchmark.extra_info["slices_per_s"] = round(SLICES / mean_s, 1)
        benchmark.extra_info["ms_per_slice"] = round(1000 * mean_s / SLICES, 2)
