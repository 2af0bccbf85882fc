"""The Storage SCP (pynetdicom): C-ECHO, and C-STORE into the spool, durable before acknowledged.

The C-STORE handler is small on purpose: it reads the few header values series selection needs,
hands the instance's bytes (as the sender encoded them) to :meth:`Spool.store` and answers. It never
decodes pixels and never runs inference; that is the worker's, from the spool.

pynetdicom is imported inside the functions, so importing :mod:`asinfer.engine.node` costs nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._dicom import DECODED
from ._config import NodeConfig

if TYPE_CHECKING:
    from ._spool import Spool

log = logging.getLogger("asinfer.node")

#: C-STORE response statuses (PS3.4 Table B.2-1; PS3.7 C.4.2.1.4 for 0xA900/0xC000 meanings).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the instance could not be made durable (disk full, I/O error): the sender retries
DATASET_MISMATCH = 0xA900  # no SeriesInstanceUID or SOP Instance UID: it cannot be filed into a series
CANNOT_UNDERSTAND = 0xC000  # the dataset could not be parsed

#: Header values the selection rules read, kept per run (never logged).
SELECTION_KEYWORDS = {"modality": "Modality", "description": "SeriesDescription", "body_part": "BodyPartExamined",
                      "image_type": "ImageType"}


@dataclass
class ScpCounts:
    """What the SCP saw since start (for the log and, later, /metrics)."""

    stored: int = 0
    duplicates: int = 0
    failed_writes: int = 0
    refused: int = 0  # not parsable or not fileable
    rejected: int = 0  # associations rejected (unknown calling AE, too many associations ...)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str) -> None:
        """Count one event (association threads call this concurrently)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


class StoreHandler:
    """``evt.EVT_C_STORE``: store durably, then answer. Bound per server; counts in :attr:`counts`."""

    def __init__(self, spool: Spool, on_stored=None) -> None:
        self.spool = spool
        self.counts = ScpCounts()
        self._on_stored = on_stored or (lambda: None)

    def __call__(self, event) -> int:
        try:
            sop_uid = str(event.request.AffectedSOPInstanceUID or "").strip()
            ds = event.dataset
            series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
            header = {key: _text(ds.get(keyword)) for key, keyword in SELECTION_KEYWORDS.items()}
            data = event.encoded_dataset()
        except Exception as exc:  # a truncated or malformed dataset: pydicom raises many types
            self.counts.add("refused")
            log.warning("event=store-refused status=0x%04X why=unparsable error=%s", CANNOT_UNDERSTAND,
                        type(exc).__name__)
            return CANNOT_UNDERSTAND
        if not sop_uid or not series_uid:
            self.counts.add("refused")
            log.warning("event=store-refused status=0x%04X why=no-%s-uid", DATASET_MISMATCH,
                        "sop" if not sop_uid else "series")
            return DATASET_MISMATCH
        try:
            outcome = self.spool.store(sop_uid, series_uid, header, data)
        except Exception as exc:  # OSError from the spool; anything else must not become a success either
            self.counts.add("failed_writes")
            log.error("event=store-failed status=0x%04X error=%s detail=%s", OUT_OF_RESOURCES, type(exc).__name__,
                      getattr(exc, "strerror", None) or "-")
            return OUT_OF_RESOURCES
        if outcome == "duplicate":
            self.counts.add("duplicates")
            log.info("event=duplicate-instance kept=first")
        else:
            self.counts.add("stored")
            self._on_stored()
        return SUCCESS


def _text(value: Any) -> str:
    """A header value as text; multi-valued ones (ImageType) joined with backslashes as DICOM writes them."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def build_ae(config: NodeConfig):
    """A pynetdicom AE for ``config``: every storage SOP class in every decoded syntax, and Verification."""
    from pynetdicom import AE, AllStoragePresentationContexts
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=config.ae_title)
    ae.maximum_associations = config.max_associations
    ae.maximum_pdu_size = config.max_pdu_size
    ae.require_calling_aet = list(config.allow_ae)  # empty: any caller
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, list(DECODED))
    ae.add_supported_context(Verification)
    return ae


def start_server(config: NodeConfig, handler: StoreHandler):
    """Start accepting associations in background threads; returns (ae, server)."""
    from pynetdicom import evt

    ae = build_ae(config)

    def rejected(event) -> None:
        handler.counts.add("rejected")
        requestor = event.assoc.requestor
        log.warning("event=association-rejected peer=%s calling_ae=%r", requestor.address, requestor.ae_title)

    def echoed(event) -> int:
        log.info("event=echo")
        return SUCCESS

    handlers = [(evt.EVT_C_STORE, handler), (evt.EVT_C_ECHO, echoed), (evt.EVT_REJECTED, rejected)]
    server = ae.start_server((config.host, config.port), block=False, evt_handlers=handlers)
    return ae, server
