"""The Storage SCP (pynetdicom): C-ECHO, and C-STORE into the spool, durable before acknowledged.

The C-STORE handler is small on purpose: it reads the few header values series selection needs,
hands the instance's bytes (as the sender encoded them) to :meth:`Spool.store` and answers. It never
decodes pixels and never runs inference; that is the worker's, from the spool.

pynetdicom is imported inside the functions, so importing :mod:`asinfer.engine.node` costs nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from typing import TYPE_CHECKING, Any

from .._dicom import DECODED
from ._config import NodeConfig
from ._metrics import Metrics

if TYPE_CHECKING:
    from ._spool import Spool

log = logging.getLogger("asinfer.node")

#: C-STORE response statuses (PS3.4 Table B.2-1; PS3.7 C.4.2.1.4 for 0xA900/0xC000 meanings).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # the instance could not be made durable (disk full, I/O error): the sender retries
DATASET_MISMATCH = 0xA900  # no SeriesInstanceUID or SOP Instance UID: it cannot be filed into a series
CANNOT_UNDERSTAND = 0xC000  # the dataset could not be parsed

#: Header values kept per run (never logged): what the selection rules read, and the instance counts a sender
#: may state (:meth:`Spool.complete_ready` completes a series at once when it has that many).
HEADER_KEYWORDS = {"modality": "Modality", "description": "SeriesDescription", "body_part": "BodyPartExamined",
                   "image_type": "ImageType", "series_related_instances": "NumberOfSeriesRelatedInstances",
                   "images_in_acquisition": "ImagesInAcquisition"}
HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS client has to finish its handshake


class StoreHandler:
    """``evt.EVT_C_STORE``: store durably, then answer. Bound per server; counts into :attr:`metrics`."""

    def __init__(self, spool: Spool, on_stored=None, metrics: Metrics | None = None) -> None:
        self.spool = spool
        self.metrics = metrics or Metrics()
        self._on_stored = on_stored or (lambda: None)

    def __call__(self, event) -> int:
        try:
            sop_uid = str(event.request.AffectedSOPInstanceUID or "").strip()
            ds = event.dataset
            series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
            header = {key: _text(ds.get(keyword)) for key, keyword in HEADER_KEYWORDS.items()}
            data = event.encoded_dataset()
            truncated = _truncation(ds, native=not _compressed(event), image=_is_image(event))
        except Exception as exc:  # a truncated or malformed dataset: pydicom raises many types
            self.metrics.inc("instances_refused")
            log.warning("event=store-refused status=0x%04X why=unparsable error=%s", CANNOT_UNDERSTAND,
                        type(exc).__name__)
            return CANNOT_UNDERSTAND
        if truncated:  # acknowledged, it would be the copy kept, and the sender's good resend a "duplicate"
            self.metrics.inc("instances_refused")
            log.warning("event=store-refused status=0x%04X why=truncated detail=%r", CANNOT_UNDERSTAND, truncated)
            return CANNOT_UNDERSTAND
        if not sop_uid or not series_uid:
            self.metrics.inc("instances_refused")
            log.warning("event=store-refused status=0x%04X why=no-%s-uid", DATASET_MISMATCH,
                        "sop" if not sop_uid else "series")
            return DATASET_MISMATCH
        try:
            outcome = self.spool.store(sop_uid, series_uid, header, data)
        except Exception as exc:  # OSError from the spool; anything else must not become a success either
            self.metrics.inc("instances_failed_writes")
            log.error("event=store-failed status=0x%04X error=%s detail=%s", OUT_OF_RESOURCES, type(exc).__name__,
                      getattr(exc, "strerror", None) or "-")
            return OUT_OF_RESOURCES
        if outcome == "duplicate":
            self.metrics.inc("instances_duplicate")
            log.info("event=duplicate-instance kept=first")
        else:
            self.metrics.inc("instances_received")
            self._on_stored()
        return SUCCESS


_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float Pixel Data, Double Float Pixel Data


def _truncation(ds, native: bool, image: bool) -> str | None:
    """Why a received data set looks cut short (None when it does not).

    pydicom reads a truncated stream without raising: a defined-length value comes back shorter than
    its length, and encapsulated pixel data without its delimiter is dropped (with a warning). A sender
    that re-encodes a cut file sends consistent lengths, but native pixel data shorter than Rows x
    Columns x samples x bytes x frames. All three are caught here without decoding a pixel. A cut
    exactly between two header elements cannot be seen. ``image``: the SOP class is an image storage
    class, whose Pixel Data is required (MR Spectroscopy, for one, has Rows and Columns and no pixels).
    """
    for tag in ds.keys():
        raw = ds.get_item(tag)
        length, value = getattr(raw, "length", None), getattr(raw, "value", None)
        if isinstance(value, bytes) and length is not None and length != _UNDEFINED_LENGTH and len(value) < length:
            return f"({tag.group:04X},{tag.element:04X}) holds {len(value)} of its {length} bytes"
    if image and "Rows" in ds and "Columns" in ds and not any(tag in ds for tag in _PIXEL_TAGS):
        return "an image (Rows, Columns) without pixel data"
    if native and 0x7FE00010 in ds:
        have, need = len(ds.get_item(0x7FE00010).value or b""), _native_bytes(ds)
        if need and have < need:
            return f"native pixel data holds {have} of the {need} bytes its header describes"
    return None


def _native_bytes(ds) -> int:
    """Bytes of native pixel data the header describes (0 when it does not say)."""
    try:
        rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        pixels = rows * columns * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return 0
    return (pixels + 7) // 8 if bits == 1 else pixels * ((bits + 7) // 8)


def _is_image(event) -> bool:
    """Whether the data set's SOP class is an image storage class (its name says "Image Storage")."""
    from pydicom.uid import UID

    return "Image Storage" in UID(str(event.request.AffectedSOPClassUID or "")).name


def _compressed(event) -> bool:
    """Whether the association carries this data set in an encapsulated (compressed) transfer syntax."""
    try:
        return bool(event.context.transfer_syntax.is_compressed)
    except AttributeError:
        return False


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


def tls_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The server-side TLS context for ``config`` (TLS 1.2 or later); None when no certificate is configured.

    With ``tls_ca`` a caller must present a certificate that CA signed (mutual TLS).

    Raises:
        OSError, ssl.SSLError: a file cannot be read, or the key does not match the certificate.
    """
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    if config.tls_ca is not None:
        context.load_verify_locations(cafile=str(config.tls_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def destination_tls_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The client-side TLS context for the destination (TLS 1.2 or later, its certificate verified against
    ``destination_tls_ca``, host name checked); None when ``destination_tls_ca`` is not set.

    Raises:
        OSError, ssl.SSLError: a file cannot be read, or the key does not match the certificate.
    """
    if config.destination_tls_ca is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(config.destination_tls_ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.destination_tls_cert is not None and config.destination_tls_key is not None:
        context.load_cert_chain(str(config.destination_tls_cert), str(config.destination_tls_key))
    return context


def peer_allowed(address: str, networks) -> bool:
    """Whether ``address`` lies in one of ``networks`` (``ipaddress`` networks); every address when none."""
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:10.0.0.7 on a dual-stack socket is 10.0.0.7
    return any(ip in net or (mapped is not None and mapped in net) for net in networks)


def start_server(config: NodeConfig, handler: StoreHandler):
    """Start accepting associations in background threads; returns (ae, server).

    Raises:
        OSError: the address cannot be bound, or the TLS files cannot be used.
    """
    import threading

    from pynetdicom import evt

    ae = build_ae(config)
    metrics = handler.metrics

    def rejected(event) -> None:
        metrics.inc("associations_rejected")
        requestor = event.assoc.requestor
        log.warning("event=association-rejected peer=%s calling_ae=%r", requestor.address, requestor.ae_title)

    def accepted(event) -> None:
        metrics.inc("associations_accepted")

    def echoed(event) -> int:
        log.info("event=echo")
        return SUCCESS

    handlers = [(evt.EVT_C_STORE, handler), (evt.EVT_C_ECHO, echoed), (evt.EVT_REJECTED, rejected),
                (evt.EVT_ACCEPTED, accepted)]
    server = ae.make_server((config.host, config.port), ssl_context=tls_context(config), evt_handlers=handlers,
                            server_class=_server_class())
    server.networks = tuple(ipaddress.ip_network(c, strict=False) for c in config.allow_peer)
    server.metrics = metrics
    threading.Thread(target=server.serve_forever, name="asinfer-scp", daemon=True).start()
    return ae, server


_SERVER_CLASS = None


def _server_class():
    """pynetdicom's threaded server, with a peer allow-list and the TLS handshake in the connection's thread."""
    global _SERVER_CLASS
    if _SERVER_CLASS is not None:
        return _SERVER_CLASS
    import socketserver

    from pynetdicom.transport import ThreadedAssociationServer

    class NodeServer(ThreadedAssociationServer):
        networks: tuple = ()
        metrics: Metrics = Metrics()

        def get_request(self):
            # pynetdicom wraps (and so handshakes) in the accepting thread: one silent TLS client would stop
            # every other caller. Here the handshake waits for the connection's own thread.
            client, address = self.socket.accept()
            if self.ssl_context:
                client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
            return client, address

        def verify_request(self, request, client_address) -> bool:
            if peer_allowed(str(client_address[0]), self.networks):
                return True
            self.metrics.inc("connections_refused")
            log.warning("event=connection-refused peer=%s why=address-not-allowed", client_address[0])
            return False

        def process_request_thread(self, request, client_address) -> None:
            if isinstance(request, ssl.SSLSocket):
                previous = request.gettimeout()
                try:
                    request.settimeout(HANDSHAKE_TIMEOUT)
                    request.do_handshake()
                    request.settimeout(previous)
                except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
                    self.metrics.inc("tls_handshake_failures")
                    log.warning("event=tls-handshake-failed peer=%s error=%s", client_address[0], type(exc).__name__)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)

        def shutdown(self) -> None:
            # Not started by ae.start_server, so not in the AE's list that pynetdicom's shutdown edits.
            socketserver.BaseServer.shutdown(self)
            self.server_close()

    _SERVER_CLASS = NodeServer
    return NodeServer
