"""The node's configuration: one typed structure, read from TOML, overridden by flags, printed back as TOML.

TOML keys are the command-line flags without their dashes in front (``ae-title``, ``quiet-period``);
``ae_title`` is accepted too. Selection rules live in a ``[select]`` table::

    host = "0.0.0.0"
    port = 11112
    ae-title = "ASINFER"
    spool = "/var/lib/asinfer/spool"
    quiet-period = 5.0
    allow-ae = ["SCANNER1", "PACS"]
    allow-peer = ["10.0.0.0/24"]
    destination = "PACS@10.0.0.5:104"
    metrics-port = 9090
    tls-cert = "/etc/asinfer/node.crt"
    tls-key = "/etc/asinfer/node.key"

    [select]
    modality = ["MR"]
    series-description = "(?i)stir|tirm"
    body-part = ["SIJOINT", "PELVIS", "SPINE"]
    image-type = ["ORIGINAL", "PRIMARY"]
    min-slices = 5
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_PORT = 11112  # the registered unprivileged DICOM port


@dataclass(frozen=True)
class Selection:
    """Which complete series the node processes (after MONAI Deploy's series selector).

    Every rule given must hold; an empty rule holds for every series. A series that fails one is
    recorded as ``ignored`` with the rule it failed, and never processed.
    """

    modality: tuple[str, ...] = ()  # Modality is one of these (case-insensitive)
    series_description: str | None = None  # re.search on SeriesDescription; "(?i)" for case-insensitive
    body_part: tuple[str, ...] = ()  # BodyPartExamined is one of these (case-insensitive)
    image_type: tuple[str, ...] = ()  # every one of these values is in ImageType (case-insensitive)
    min_slices: int = 1  # instances received for the series

    def check(self, header: dict[str, Any], n_slices: int) -> str | None:
        """Why a series with this first-instance header and slice count is not selected; None when it is."""
        if self.modality and header.get("modality", "").upper() not in {m.upper() for m in self.modality}:
            return f"Modality {header.get('modality', '')!r} is not one of {', '.join(self.modality)}"
        if self.series_description is not None and not re.search(self.series_description,
                                                                  header.get("description", "")):
            return f"SeriesDescription does not match {self.series_description!r}"
        if self.body_part and header.get("body_part", "").upper() not in {b.upper() for b in self.body_part}:
            return f"BodyPartExamined {header.get('body_part', '')!r} is not one of {', '.join(self.body_part)}"
        have = {v.upper() for v in header.get("image_type", "").split("\\") if v}
        missing = [v for v in self.image_type if v.upper() not in have]
        if missing:
            return f"ImageType lacks {', '.join(missing)}"
        if n_slices < self.min_slices:
            return f"{n_slices} slice(s), fewer than min-slices {self.min_slices}"
        return None


@dataclass(frozen=True)
class Destination:
    """Where results are stored (C-STORE SCU): ``AET@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``PACS@10.0.0.5:104`` (an IPv6 host in brackets: ``PACS@[fd00::5]:104``).

        Raises:
            ValueError: not of that form.
        """
        title, at, address = text.rpartition("@")
        host, colon, port = address.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not (at and colon and host and port.isdigit() and 0 < int(port) <= 65535 and _valid_ae(title)):
            raise ValueError(f"destination {text!r} is not AET@HOST:PORT (e.g. PACS@10.0.0.5:104; an AE title is "
                             "1 to 16 ASCII characters, the port 1..65535)")
        return cls(title, host, int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``asinfer serve`` runs with. Build with :func:`load_config`; validate with :meth:`problems`."""

    host: str = "0.0.0.0"  # listening address; 127.0.0.1 keeps the node local
    port: int = DEFAULT_PORT  # 0 picks a free port (tests)
    ae_title: str = "ASINFER"  # our AE title (Called AE Title the senders use)
    spool: Path = Path("asinfer-spool")  # instances, state database and results
    quiet_period: float = 5.0  # seconds without a new instance after which a series is complete
    allow_ae: tuple[str, ...] = ()  # calling AE titles allowed to associate; empty: any
    allow_peer: tuple[str, ...] = ()  # peer networks (CIDR, or one address) allowed to connect; empty: any
    max_associations: int = 10  # simultaneous associations from peers
    max_pdu_size: int = 262144  # bytes of one received PDU (0: unlimited); large PDUs mean fewer messages
    model: Path | None = None  # bundle folder, manifest.json or .onnx; None: the shipped model
    provider: str = "auto"  # auto (CUDA when it works, else CPU), cpu or cuda
    threads: int | None = None  # CPU threads for inference; None: all cores
    batch_size: int = 8  # slices per inference call
    predict_early: bool = True  # an idle worker predicts the slices of series still arriving
    worker_process: bool = True  # the worker runs in a child process (false: a thread of the node's process)
    max_attempts: int = 3  # tries per series (a crash mid-processing counts) before it is marked failed
    destination: str | None = None  # AET@HOST:PORT to C-STORE results to; None: they stay in SPOOL/results/
    retry_initial: float = 5.0  # seconds before the first retry of a send; doubled per failure ...
    retry_max: float = 300.0  # ... up to this. A destination that is down is retried for ever
    max_send_attempts: int = 10  # tries of a file the destination answers with an error status (not 0xA7xx)
    expected_instances: int = 0  # complete a series at once when it has this many instances; 0: not set
    expected_from_header: bool = True  # ... or as many as its NumberOfSeriesRelatedInstances/ImagesInAcquisition say
    retention_period: float = 259200.0  # seconds an ignored, done or sent series' instances are kept; 0: for ever
    metrics_host: str = "127.0.0.1"  # where /metrics and /healthz listen (no authentication: keep it local)
    metrics_port: int | None = None  # None: no HTTP endpoint; 0 picks a free port (tests)
    tls_cert: Path | None = None  # PEM certificate (chain) of the node: with tls_key, associations use TLS
    tls_key: Path | None = None  # its PEM private key
    tls_ca: Path | None = None  # PEM CA bundle: when set, callers must present a certificate it signed
    destination_tls_ca: Path | None = None  # PEM CA bundle the destination's certificate must chain to: TLS to it
    destination_tls_cert: Path | None = None  # our PEM client certificate, for a destination that asks for one
    destination_tls_key: Path | None = None  # its PEM private key
    select: Selection = field(default_factory=Selection)

    def problems(self) -> list[str]:
        """What is wrong with the values (empty when nothing is)."""
        found = []
        if not 0 <= self.port <= 65535:
            found.append(f"port {self.port} is outside 0..65535")
        for what, title in [("ae-title", self.ae_title), *(("allow-ae", t) for t in self.allow_ae)]:
            if not _valid_ae(title):
                found.append(f"{what} {title!r} is not an AE title: 1 to 16 ASCII characters, no backslash, "
                             "not only spaces")
        if not 0.0 < self.quiet_period <= 3600.0:
            found.append(f"quiet-period {self.quiet_period} must be > 0 and <= 3600 seconds")
        if self.max_associations < 1:
            found.append(f"max-associations {self.max_associations} must be >= 1")
        if self.max_pdu_size != 0 and not 4096 <= self.max_pdu_size <= (1 << 26):
            found.append(f"max-pdu-size {self.max_pdu_size} must be 0 (unlimited) or 4096..67108864")
        if self.provider not in ("auto", "cpu", "cuda"):
            found.append(f"provider {self.provider!r} is not one of auto, cpu, cuda")
        if self.threads is not None and not 1 <= self.threads <= 256:
            found.append(f"threads {self.threads} is outside 1..256")
        if not 1 <= self.batch_size <= 1024:
            found.append(f"batch-size {self.batch_size} is outside 1..1024")
        if self.max_attempts < 1:
            found.append(f"max-attempts {self.max_attempts} must be >= 1")
        if self.destination is not None:
            try:
                Destination.parse(self.destination)
            except ValueError as exc:
                found.append(str(exc))
        if not 0.0 < self.retry_initial <= self.retry_max <= 86400.0:
            found.append(f"retry-initial {self.retry_initial} and retry-max {self.retry_max} must satisfy "
                         "0 < retry-initial <= retry-max <= 86400")
        if self.max_send_attempts < 1:
            found.append(f"max-send-attempts {self.max_send_attempts} must be >= 1")
        found += self._more_problems()
        if self.select.min_slices < 1:
            found.append(f"select.min-slices {self.select.min_slices} must be >= 1")
        if self.select.series_description is not None:
            try:
                re.compile(self.select.series_description)
            except re.error as exc:
                found.append(f"select.series-description {self.select.series_description!r} is not a regular "
                             f"expression: {exc}")
        return found

    def _more_problems(self) -> list[str]:
        """Problems of the settings added with /metrics, completion by count, retention and TLS."""
        found = []
        for cidr in self.allow_peer:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                found.append(f"allow-peer {cidr!r} is not an address or a network (e.g. 10.0.0.0/24, 10.0.0.7, fd00::/8)")
        if self.expected_instances < 0:
            found.append(f"expected-instances {self.expected_instances} must be >= 0 (0: not set)")
        if not 0.0 <= self.retention_period <= 10 * 365 * 86400.0:
            found.append(f"retention-period {self.retention_period} must be 0 (keep for ever) or seconds up to 10 years")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            found.append(f"metrics-port {self.metrics_port} is outside 0..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            found.append("tls-cert and tls-key go together: give both (PEM files) or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            found.append("tls-ca checks the callers' certificates and needs TLS: give tls-cert and tls-key too")
        if (self.destination_tls_cert is None) != (self.destination_tls_key is None):
            found.append("destination-tls-cert and destination-tls-key go together: give both (PEM files) or neither")
        if self.destination_tls_cert is not None and self.destination_tls_ca is None:
            found.append("destination-tls-cert needs destination-tls-ca (TLS to the destination verifies its certificate)")
        for what, path in (("tls-cert", self.tls_cert), ("tls-key", self.tls_key), ("tls-ca", self.tls_ca),
                           ("destination-tls-ca", self.destination_tls_ca),
                           ("destination-tls-cert", self.destination_tls_cert),
                           ("destination-tls-key", self.destination_tls_key)):
            if path is not None and not Path(path).is_file():
                found.append(f"{what} {str(path)!r} is not a file")
        return found

    def to_toml(self) -> str:
        """The configuration as a TOML document :func:`load_config` reads back to the same values."""
        lines = [f"{_key(f.name)} = {_toml(getattr(self, f.name))}" for f in fields(self)
                 if f.name != "select" and getattr(self, f.name) is not None]
        lines += ["", "[select]"]
        lines += [f"{_key(f.name)} = {_toml(getattr(self.select, f.name))}" for f in fields(Selection)
                  if getattr(self.select, f.name) is not None]
        return "\n".join(lines) + "\n"


def load_config(path: Path | None = None, **overrides: Any) -> NodeConfig:
    """The effective configuration: defaults, then the TOML file, then ``overrides`` that are not None.

    Args:
        path: a TOML file (see the module docstring); None: defaults only.
        overrides: field names of :class:`NodeConfig` (``ae_title``, ``allow_ae`` ...) from flags.

    Returns:
        A validated :class:`NodeConfig`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not TOML, names an unknown key, or a value is invalid.

    Example:
        >>> load_config(None, port=104, allow_ae=["SCANNER"]).port
        104
    """
    values: dict[str, Any] = {}
    if path is not None:
        values = _read(Path(path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = _build(values, str(path) if path else "flags")
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    return config


def _read(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the node extra installs tomli
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    return {k.replace("-", "_"): v for k, v in data.items()}


def _build(values: dict[str, Any], where: str) -> NodeConfig:
    names = {f.name: f for f in fields(NodeConfig)}
    _unknown(values, names, where, "")
    select = values.pop("select", {})
    if isinstance(select, Selection):
        chosen = select
    elif isinstance(select, dict):
        select = {k.replace("-", "_"): v for k, v in select.items()}
        _unknown(select, {f.name for f in fields(Selection)}, where, "select.")
        chosen = Selection(**{k: _typed(Selection, k, v) for k, v in select.items()})
    else:
        raise ValueError(f"{where}: select must be a table ([select]), got {type(select).__name__}")
    return replace(NodeConfig(), select=chosen, **{k: _typed(NodeConfig, k, v) for k, v in values.items()})


_TYPES = {"host": str, "port": int, "ae_title": str, "spool": Path, "quiet_period": float, "allow_ae": tuple,
          "max_associations": int, "max_pdu_size": int, "model": Path, "provider": str, "threads": int,
          "batch_size": int, "predict_early": bool, "worker_process": bool, "max_attempts": int, "destination": str, "retry_initial": float,
          "retry_max": float, "max_send_attempts": int, "allow_peer": tuple, "expected_instances": int, "expected_from_header": bool,
          "retention_period": float, "metrics_host": str, "metrics_port": int, "tls_cert": Path, "tls_key": Path,
          "tls_ca": Path, "destination_tls_ca": Path, "destination_tls_cert": Path, "destination_tls_key": Path,
          "modality": tuple, "series_description": str,
          "body_part": tuple, "image_type": tuple, "min_slices": int}


def _typed(cls, name: str, value: Any) -> Any:
    """``value`` as the field's type; a clear ValueError when it cannot be."""
    kind = _TYPES[name]
    if kind is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise ValueError(f"{_key(name)} must be a string or a list of strings, got {value!r}")
        return tuple(v.strip() for v in items)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is Path and isinstance(value, (str, Path)):
        return Path(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{_key(name)} must be true or false, got {value!r}")
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise ValueError(f"{_key(name)} must be {kind.__name__ if kind is not Path else 'a path'}, got {value!r}")


def _unknown(values: dict[str, Any], known, where: str, prefix: str) -> None:
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {prefix}{_key(close[0])}?" if close else ""
            raise ValueError(f"{where}: unknown setting {prefix}{_key(key)!r}. Valid settings: "
                             f"{', '.join(prefix + _key(k) for k in known)}{hint}")


def _valid_ae(title: str) -> bool:
    return 0 < len(title) <= 16 and title.isascii() and "\\" not in title and bool(title.strip()) \
        and all(c.isprintable() for c in title)


def _key(name: str) -> str:
    return name.replace("_", "-")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return _string(str(value))


def _string(text: str) -> str:
    """A TOML basic string: backslashes, quotes and control characters escaped."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'
