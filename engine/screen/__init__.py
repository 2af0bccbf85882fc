"""``asinfer screen``: archive-scale screening on Dask, resumable, every input accounted for exactly once.

The whole public API::

    from pathlib import Path
    from asinfer.engine.screen import ScreenSettings, screen
    summary = screen(ScreenSettings(("archive.txt", "more/"), Path("results"), scheduler="local"))
    print(summary.series, summary.positive, summary.failed_series, summary.slices_per_s)

Inputs (folders, list files) are indexed into series by a header-only scan
(the engine's grouping: SeriesInstanceUID, else the folder); one task per
series, or per group of small series, runs on Dask (or in this process with
``scheduler="synchronous"``), where each worker loads the classifier once
and the engine decides the series exactly as ``asinfer predict`` does. The
results folder holds two Parquet datasets (``slices/``, ``series/``; columns
in :data:`SLICE_COLUMNS`, :data:`SERIES_COLUMNS`) written a part per task,
atomically, and ``run.json``. See ``docs/screen.md``.

The building blocks, for pipelines of your own: :func:`iter_inputs` (the
listing, streamed), :func:`series_of` and :func:`scan_chunk` (the header
scan), :class:`SeriesIndex` (series merged across scanned chunks, paths kept
as :func:`encode_paths` blocks), and :func:`relax_malloc_trim` for a Dask worker
that runs the engine (the screen workers call it when they start).

Needs the ``screen`` extra (dask[distributed], pyarrow). Importing this
package imports neither: they load when a run starts. Research software,
not a diagnostic device.
"""

from ._executors import relax_malloc_trim as relax_malloc_trim
from ._index import SeriesIndex as SeriesIndex
from ._index import decode_paths as decode_paths
from ._index import encode_paths as encode_paths
from ._index import scan_chunk as scan_chunk
from ._index import series_of as series_of
from ._listing import iter_inputs as iter_inputs
from ._run import ScreenInterrupted as ScreenInterrupted
from ._run import ScreenSettings as ScreenSettings
from ._run import ScreenSummary as ScreenSummary
from ._run import screen as screen
from ._store import SERIES_COLUMNS as SERIES_COLUMNS
from ._store import SLICE_COLUMNS as SLICE_COLUMNS
from ._store import TASK_FAILED as TASK_FAILED
from ._store import series_schema as series_schema
from ._store import slice_schema as slice_schema
