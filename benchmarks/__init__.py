"""asinfer benchmarks: ``asinfer bench``, pytest-benchmark suites (bench_*.py) and the measuring code behind them.

Public modules: :mod:`~asinfer.benchmarks.bench` (``BenchConfig``, ``run``),
:mod:`~asinfer.benchmarks.report` (the typed ``BenchReport`` and its JSON,
schema ``asinfer-bench/2``), :mod:`~asinfer.benchmarks.gates` (speed rules and
the accuracy gates, judged by ``asinfer.engine.FORMATS[f].tolerance``) and
:mod:`~asinfer.benchmarks.cli` (the ``asinfer bench`` command).

Contenders are always timed interleaved in one process (A B C A B C ...) and
reported as median and spread; ratios between them are the figures that
count on a shared, noisy machine.
"""
