"""asinfer benchmarks: pytest-benchmark suites (bench_*.py) and the measuring code behind them.

Contenders are always timed interleaved in one process (A B C A B C ...) and
reported as median and spread; ratios between them are the figures that
count on a shared, noisy machine.
"""
