"""``asinfer serve``: a DICOM node beside the scanner that never loses a series.

A Storage SCP receives series; every instance is on disk (fsynced) before it is acknowledged; a series
is complete after a quiet period and, when it passes the selection rules, one worker decides it with
the engine's classifier and writes the DICOM SR and Secondary Capture into ``SPOOL/results/`` (and, with a
destination, stores them there from a persistent outbox, retried with back-off). The
state of every series is in ``SPOOL/state.sqlite``, so a restart after ``kill -9`` picks up where the
node was. Needs the ``node`` extra (pynetdicom, highdicom); importing this package imports neither.

Example:
    >>> from asinfer.engine.node import Node, load_config  # doctest: +SKIP
    >>> with Node(load_config(None, port=11112, spool="spool", quiet_period=5.0)) as node:  # doctest: +SKIP
    ...     ...  # send series with storescu; results appear in spool/results/
"""

from ._config import Destination as Destination
from ._config import NodeConfig as NodeConfig
from ._config import Selection as Selection
from ._config import load_config as load_config
from ._node import Node as Node
from ._node import serve_forever as serve_forever
from ._scp import OUT_OF_RESOURCES as OUT_OF_RESOURCES
from ._scp import build_ae as build_ae
from ._spool import STATES as STATES
from ._spool import Run as Run
from ._spool import Spool as Spool
