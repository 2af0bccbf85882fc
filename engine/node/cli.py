"""``asinfer serve``: listed by the engine's CLI table and imported only when run (see ``_commands.COMMANDS``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

EXIT_USAGE = 2

app = typer.Typer(add_completion=False, rich_markup_mode=None)

SERVE_HELP = """Run a DICOM node: receive series (C-STORE), screen each complete series, write SR + SC results.

Every instance is fsynced into --spool before it is acknowledged (a failed write answers 0xA700); a
series is complete after --quiet-period seconds without a new instance; results go to SPOOL/results/
and, with --destination, from a persistent outbox to that AE (retried with back-off while it is down).
SIGTERM or Ctrl-C stops accepting and keeps unfinished work in the spool for the next start. Flags
override --config (TOML, same names: ae-title = "ASINFER"; selection rules in a [select] table).
Needs the node extra: pip install 'asinfer[node]'. Research software: NOT FOR DIAGNOSTIC USE.

\b
Examples:
  asinfer serve --spool /var/lib/asinfer --allow-ae SCANNER1 --allow-ae PACS
  asinfer serve --spool /var/lib/asinfer --destination PACS@10.0.0.5:104 --metrics-port 9090
  asinfer serve --tls-cert node.crt --tls-key node.key --allow-peer 10.0.0.0/24
  asinfer serve --config node.toml --port 11112
  asinfer serve --config node.toml --print-config     the effective configuration, as TOML
  python -m pynetdicom storescu 127.0.0.1 11112 series/ -aec ASINFER -r     send a folder
"""


@app.command(help=SERVE_HELP)
def serve(
    config: Annotated[Optional[Path], typer.Option("--config", exists=True, dir_okay=False, help="TOML file with the settings (flags override it).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on [default: 0.0.0.0].")] = None,
    port: Annotated[Optional[int], typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one [default: 11112].")] = None,
    ae_title: Annotated[Optional[str], typer.Option("--ae-title", help="Our AE title [default: ASINFER].")] = None,
    spool: Annotated[Optional[Path], typer.Option(help="Folder for instances, state and results [default: asinfer-spool].")] = None,
    quiet_period: Annotated[Optional[float], typer.Option(help="Seconds without a new instance before a series is complete [default: 5].")] = None,
    allow_ae: Annotated[Optional[list[str]], typer.Option("--allow-ae", help="Calling AE title allowed to associate (repeat it); none given: any.")] = None,
    allow_peer: Annotated[Optional[list[str]], typer.Option("--allow-peer", help="Peer address or network (CIDR) allowed to connect (repeat it); none given: any.")] = None,
    max_associations: Annotated[Optional[int], typer.Option(help="Simultaneous associations [default: 10].")] = None,
    max_pdu_size: Annotated[Optional[int], typer.Option(help="Largest PDU received, bytes; 0 unlimited [default: 262144].")] = None,
    destination: Annotated[Optional[str], typer.Option(help="AET@HOST:PORT to C-STORE the results to (retried with back-off while down) [default: none: results stay in SPOOL/results/].")] = None,
    expected_instances: Annotated[Optional[int], typer.Option(min=0, help="Complete a series at once when it has this many instances [default: 0: the header's NumberOfSeriesRelatedInstances/ImagesInAcquisition, else the quiet period].")] = None,
    retention_period: Annotated[Optional[float], typer.Option(min=0, help="Seconds an ignored, done or sent series' instance files are kept; 0: for ever [default: 259200].")] = None,
    metrics_port: Annotated[Optional[int], typer.Option(min=0, max=65535, help="Serve /metrics (Prometheus) and /healthz on this local HTTP port [default: off].")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option("--tls-cert", exists=True, dir_okay=False, help="PEM certificate: with --tls-key, associations use TLS.")] = None,
    tls_key: Annotated[Optional[Path], typer.Option("--tls-key", exists=True, dir_okay=False, help="PEM private key of --tls-cert.")] = None,
    tls_ca: Annotated[Optional[Path], typer.Option("--tls-ca", exists=True, dir_okay=False, help="PEM CA bundle: callers must present a certificate it signed.")] = None,
    destination_tls_ca: Annotated[Optional[Path], typer.Option("--destination-tls-ca", exists=True, dir_okay=False, help="PEM CA bundle the destination's certificate must chain to: results are sent over TLS.")] = None,
    destination_tls_cert: Annotated[Optional[Path], typer.Option("--destination-tls-cert", exists=True, dir_okay=False, help="PEM client certificate for a destination that asks for one.")] = None,
    destination_tls_key: Annotated[Optional[Path], typer.Option("--destination-tls-key", exists=True, dir_okay=False, help="PEM private key of --destination-tls-cert.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Bundle folder, manifest.json or .onnx [default: shipped model].")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the effective configuration as TOML and exit.")] = False,
) -> None:
    from ._config import load_config

    try:
        settings = load_config(config, host=host, port=port, ae_title=ae_title, spool=spool,
                               quiet_period=quiet_period, allow_ae=allow_ae or None, allow_peer=allow_peer or None,
                               max_associations=max_associations, max_pdu_size=max_pdu_size, model=model,
                               destination=destination, expected_instances=expected_instances,
                               retention_period=retention_period, metrics_port=metrics_port, tls_cert=tls_cert,
                               tls_key=tls_key, tls_ca=tls_ca, destination_tls_ca=destination_tls_ca,
                               destination_tls_cert=destination_tls_cert, destination_tls_key=destination_tls_key)
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE)
    if print_config:
        typer.echo(settings.to_toml(), nl=False)
        return
    import pynetdicom  # noqa: F401  (a missing extra is named before anything starts)

    from ._node import serve_forever

    _log_to_stderr()
    raise typer.Exit(serve_forever(settings))


def _log_to_stderr() -> None:
    """One structured line per event on stderr (``time level event=... key=value``); no patient data."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in ("asinfer", "pynetdicom"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
    logging.getLogger("asinfer").setLevel(logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
