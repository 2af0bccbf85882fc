"""The sender: stores result files at the destination (C-STORE SCU) from the spool's persistent outbox.

Each result file is an outbox row, written in the transaction that ended its run's processing, so a
crash cannot lose one. A file is marked sent only after the destination answered success (or a
warning); a destination that cannot be reached, or answers out-of-resources (0xA7xx), is tried again
with exponential back-off for as long as it takes. Other failure statuses are retried up to
``max_send_attempts``, then the run is ``failed`` (reason ``send-failed``).

Exactly once, as the destination sees it: a crash after the destination stored a file but before the
outbox recorded it sends that file again at the next start, with the same SOP Instance UID (the report
writer derives UIDs from the series and the model), so a PACS keeps one object, not two.
"""

from __future__ import annotations

import logging
import time

from ._config import Destination
from ._metrics import Metrics
from ._spool import Loop, OutboxItem, Spool

log = logging.getLogger("asinfer.node")

#: What the sender stores at the destination: the report writer's SR and Secondary Capture (the conformance
#: statement lists these; a test checks that the results the node sends are of these classes).
SCU_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7")  # Comprehensive 3D SR, SC Image
#: Transfer syntaxes proposed for each, one presentation context per syntax: the results are written in Explicit
#: VR Little Endian and sent as written when the destination accepts it; Implicit VR Little Endian (the DICOM
#: default) is proposed too, so a destination that accepts only it still receives them (converted, which costs
#: more: one context listing both made a pynetdicom destination pick Implicit and every SR be re-encoded).
SCU_TRANSFER_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


class Sender(Loop):
    """Drains the outbox to ``destination`` until :meth:`stop`."""

    def __init__(self, spool: Spool, destination: Destination, calling_ae: str, *, retry_initial: float = 5.0,
                 retry_max: float = 300.0, max_send_attempts: int = 10, timeout: float = 30.0,
                 metrics: Metrics | None = None, tls=None) -> None:
        super().__init__("asinfer-sender")
        self.spool = spool
        self.destination = destination
        self.calling_ae = calling_ae
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.max_send_attempts = max_send_attempts
        self.timeout = timeout
        self.sent_files = 0
        self.metrics = metrics or Metrics()
        self.tls = tls  # an ssl.SSLContext for TLS to the destination; None: plain TCP

    def run(self) -> None:
        while not self.stopping():
            try:
                items = self.spool.due()
                if items:
                    self.send(items)
                    continue
                next_due = self.spool.next_due()
            except Exception as exc:  # the database or the network stack failed unexpectedly: later
                log.error("event=send-loop-error error=%s", type(exc).__name__)
                next_due = time.time() + self.retry_initial
            wait = 1.0 if next_due is None else min(1.0, max(0.02, next_due - time.time()))
            self.sleep(wait)

    def send(self, items: list[OutboxItem]) -> None:
        """Send ``items`` over one association; record each outcome in the outbox."""
        import pydicom
        from pynetdicom import AE

        readable = []
        for item in items:
            try:
                readable.append((item, pydicom.dcmread(item.path)))
            except Exception as exc:  # the result file is gone or damaged: resending cannot help
                if self.spool.send_failed(item, f"unreadable result file: {type(exc).__name__}", None):
                    self.metrics.inc("series_failed")
        if not readable:
            return
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = min(self.timeout, 10.0)  # a host that drops packets must not hold a stop for long
        for sop_class in sorted({str(ds.SOPClassUID) for _, ds in readable}):
            for syntax in SCU_TRANSFER_SYNTAXES:  # one context each: the destination can accept the file's own
                ae.add_requested_context(sop_class, syntax)
        tls_args = (self.tls, self.destination.host) if self.tls is not None else None
        assoc = ae.associate(self.destination.host, self.destination.port, ae_title=self.destination.ae_title,
                             tls_args=tls_args)
        if not assoc.is_established:
            why = "association rejected" if assoc.is_rejected else "destination unreachable"
            self._retry_all([item for item, _ in readable], why)
            return
        try:
            for n, (item, ds) in enumerate(readable):
                if self.stopping() or not assoc.is_established:
                    break
                if not self._send_one(assoc, item, ds):
                    self._retry_all([i for i, _ in readable[n + 1:]], "association ended")
                    break
        finally:
            if assoc.is_established:
                assoc.release()

    def _send_one(self, assoc, item: OutboxItem, ds) -> bool:
        """Send one file; False when the association can carry no more."""
        try:
            status = send_c_store(assoc, ds)
        except (ValueError, RuntimeError) as exc:  # no accepted context for its SOP class, or association gone
            self._failed(item, f"not sendable: {type(exc).__name__}: {exc}", permanent=assoc.is_established)
            return assoc.is_established
        code = int(status.Status) if "Status" in status else None
        if code is None:  # no response: aborted, or timed out
            self._failed(item, "no response from the destination", permanent=False)
            return False
        if code == 0x0000 or 0xB000 <= code <= 0xBFFF:  # success, or stored with a warning
            self.sent_files += 1
            self.metrics.inc("results_sent")
            run_sent = self.spool.sent(item)
            if run_sent:
                self.metrics.inc("series_sent")
                last_at = self.spool.last_at(item.run_id)
                if last_at is not None:
                    self.metrics.observe("series_latency_seconds", time.time() - last_at, "sent")
            log.info("event=result-sent run=%d attempt=%d status=0x%04X%s", item.run_id, item.attempts + 1, code,
                     " run_state=sent" if run_sent else "")
            return True
        self._failed(item, f"status 0x{code:04X}", permanent=not 0xA700 <= code <= 0xA7FF)
        return True

    def _failed(self, item: OutboxItem, error: str, *, permanent: bool) -> None:
        attempts = item.attempts + 1
        give_up = permanent and attempts >= self.max_send_attempts
        retry_at = None if give_up else time.time() + self._backoff(attempts)
        if self.spool.send_failed(item, error, retry_at):
            self.metrics.inc("series_failed")
        self.metrics.inc("send_failures")
        log.warning("event=send-failed run=%d attempt=%d error=%r%s", item.run_id, attempts, error,
                    " gave_up=1" if give_up else f" retry_in={retry_at - time.time():.1f}")

    def _retry_all(self, items: list[OutboxItem], why: str) -> None:
        for item in items:
            self._failed(item, why, permanent=False)

    def _backoff(self, attempts: int) -> float:
        """Seconds before try ``attempts + 1``: doubling from retry_initial, capped at retry_max."""
        return min(self.retry_max, self.retry_initial * 2 ** min(attempts - 1, 30))


def send_c_store(assoc, dataset, *, timeout: float = 0.25):
    """``assoc.send_c_store(dataset)``, with the association's reactor thread parked first (pynetdicom 2-3).

    ``send_c_store`` pauses the reactor by clearing a checkpoint and waiting for a "paused" flag, but the
    flag can be stale: a reactor that passed the checkpoint just before it was cleared still takes one
    message off the queue. When that is the C-STORE response, the SCU waits for it until the DIMSE
    timeout (pynetdicom logs "Received unexpected C-STORE service message"); under load this stalled a
    result for 30 s about once in 60 sends here. Clearing the flag ourselves and waiting until the reactor
    sets it again means it is blocked at the checkpoint. Without those attributes (another pynetdicom),
    it is the plain call. Returns what ``send_c_store`` returns (the status dataset).
    """
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if checkpoint is None or not hasattr(assoc, "_is_paused"):
        return assoc.send_c_store(dataset)
    checkpoint.clear()
    assoc._is_paused = False
    deadline = time.monotonic() + timeout
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.0002)
    # a reactor that set the flag just before we cleared it is blocked at the checkpoint with the flag down:
    # send_c_store waits for the flag without a timeout, so raise it
    assoc._is_paused = True
    return assoc.send_c_store(dataset)
