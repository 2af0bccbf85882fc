"""The Dask worker plugin that loads the classifier when a worker joins (imported only with distributed)."""

from __future__ import annotations

import logging

from distributed import WorkerPlugin

from ._executors import relax_malloc_trim
from ._task import ModelSpec, classifier_for

log = logging.getLogger("asinfer")


class ClassifierPlugin(WorkerPlugin):
    """Loads the model into the worker's cache at start, so the first task does not wait for it.

    A model that fails to load here is logged and not raised: the tasks load it again and fail with
    the reason, which the run then records against their series.
    """

    name = "asinfer-classifier"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def setup(self, worker) -> None:
        relax_malloc_trim()
        try:
            classifier_for(self.spec)
        except Exception:
            log.debug("the worker could not load the model; its tasks will say why", exc_info=True)
