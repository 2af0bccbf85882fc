"""Interleaved timing: the one way benchmarks here compare contenders."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one contender over the rounds."""

    name: str
    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> tuple[float, float]:
        """(min, max) seconds: the honest spread on a machine others share."""
        return min(self.seconds), max(self.seconds)

    def per_second(self, items: int) -> float:
        """Items per second at the median."""
        return items / self.median


def interleave(contenders: dict[str, Callable[[], object]], rounds: int = 7, warmup: int = 1) -> dict[str, Timing]:
    """Time each callable ``rounds`` times, round-robin, after ``warmup`` untimed calls each."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: Timing(name, tuple(ts)) for name, ts in times.items()}
