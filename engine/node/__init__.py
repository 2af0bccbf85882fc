"""``asinfer serve``: a DICOM node beside the scanner that never loses a series.

A Storage SCP (optionally TLS, with allow-lists of calling AE titles and peer networks) receives
series; every instance is on disk (fsynced) before it is acknowledged; a series is complete after a
quiet period, or at once when its expected instance count is reached, and, when it passes the
selection rules, one worker decides it with
the engine's classifier and writes the DICOM SR and Secondary Capture into ``SPOOL/results/`` (and, with a
destination, stores them there from a persistent outbox, retried with back-off). The
state of every series is in ``SPOOL/state.sqlite``, so a restart after ``kill -9`` picks up where the
node was. Instance files of finished series are deleted after a retention period; ``/metrics``
(Prometheus text) and ``/healthz`` are served on a local HTTP port. The conformance statement's tables
come from :func:`conformance_tables`. Needs the ``node`` extra (pynetdicom, highdicom); importing this
package imports neither.

Example:
    >>> from asinfer.engine.node import Node, load_config  # doctest: +SKIP
    >>> with Node(load_config(None, port=11112, spool="spool", quiet_period=5.0)) as node:  # doctest: +SKIP
    ...     ...  # send series with storescu; results appear in spool/results/
"""

from ._conformance import conformance_tables as conformance_tables
from ._conformance import scp_contexts as scp_contexts
from ._conformance import update_conformance as update_conformance
from ._config import Destination as Destination
from ._config import load_config as load_config
from ._config import NodeConfig as NodeConfig
from ._config import Selection as Selection
from ._metrics import Metric as Metric
from ._metrics import METRICS as METRICS
from ._metrics import Metrics as Metrics
from ._node import Node as Node
from ._process import WorkerProcess as WorkerProcess
from ._process import WorkerStartError as WorkerStartError
from ._node import serve_forever as serve_forever
from ._scp import build_ae as build_ae
from ._scp import OUT_OF_RESOURCES as OUT_OF_RESOURCES
from ._scp import peer_allowed as peer_allowed
from ._scp import tls_context as tls_context
from ._sender import SCU_SOP_CLASSES as SCU_SOP_CLASSES
from ._sender import SCU_TRANSFER_SYNTAXES as SCU_TRANSFER_SYNTAXES
from ._sender import send_c_store as send_c_store
from ._spool import Run as Run
from ._spool import Spool as Spool
from ._spool import STATES as STATES
