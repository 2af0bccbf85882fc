"""The pytest-benchmark suites in the default test run: one smoke case per suite, the rest on request.

``pytest`` (``--benchmark-disable`` in the project's options) runs only the
case of each ``benchmarks/bench_*.py`` suite marked ``smoke``, once, as a
test: the suites cannot rot and the default run stays fast. The other cases
are deselected, and pytest's summary says how many and how to run them:
``--bench-all`` runs every case as a test, ``--benchmark-enable`` runs every
case and times it. A case named on the command line (``file::test``) always runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_DESELECTED = pytest.StashKey[int]()


def pytest_addoption(parser):
    parser.addoption("--bench-all", action="store_true",
                     help="run every case of benchmarks/bench_*.py, not only each suite's smoke case "
                          "(implied by --benchmark-enable)")


def _full_suites(config) -> bool:
    return bool(config.getoption("--bench-all") or config.getoption("benchmark_enable", False))


def _suite_case(item) -> bool:
    path = Path(str(item.path)).resolve()
    return path.parent == HERE and path.name.startswith("bench_")


def _named(config) -> list[tuple[Path, str]]:
    """(file, test prefix) of each ``file::test`` argument."""
    named = []
    for arg in config.args:
        path, sep, test = str(arg).partition("::")
        if sep:
            named.append((Path(config.invocation_params.dir, path).resolve(), test))
    return named


def _keep(item, named: list[tuple[Path, str]]) -> bool:
    if not _suite_case(item) or item.get_closest_marker("smoke") is not None:
        return True
    path, test = Path(str(item.path)).resolve(), item.nodeid.partition("::")[2]
    return any(path == file and test.startswith(prefix) for file, prefix in named)


def pytest_collection_modifyitems(config, items):
    if _full_suites(config):
        return
    named = _named(config)
    drop = [item for item in items if not _keep(item, named)]
    if drop:
        kept = set(map(id, drop))
        items[:] = [item for item in items if id(item) not in kept]
        config.hook.pytest_deselected(items=drop)
        config.stash[_DESELECTED] = len(drop)


def pytest_report_header(config):
    if not _full_suites(config):
        return "benchmarks: only each suite's smoke case runs; --bench-all or --benchmark-enable runs them all"
    return None


def pytest_terminal_summary(terminalreporter, config):
    count = config.stash.get(_DESELECTED, 0)
    if count:
        terminalreporter.write_line(f"benchmarks: {count} benchmark case(s) deselected, only each suite's smoke "
                                    f"case was selected; run them all with --bench-all (as tests) or --benchmark-enable (timed)")
