"""The tables of the DICOM Conformance Statement (``docs/conformance.md``), generated from the code.

The statement's prose is written by hand; its tables of SOP classes, transfer syntaxes, association
parameters and settings sit between ``<!-- BEGIN generated:NAME -->`` and ``<!-- END generated:NAME -->``
markers and are made here from what the node actually negotiates (:func:`build_ae`, the sender's
:data:`SCU_SOP_CLASSES` and :data:`SCU_TRANSFER_SYNTAXES`) and from :class:`NodeConfig`'s defaults.
:func:`update_conformance` rewrites them; a test fails when the document and the code disagree.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from ._config import NodeConfig, Selection
from ._scp import HANDSHAKE_TIMEOUT, build_ae
from ._sender import SCU_SOP_CLASSES, SCU_TRANSFER_SYNTAXES

VERIFICATION = "1.2.840.10008.1.1"
_BLOCK = re.compile(r"(<!-- BEGIN generated:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- END generated:(?P=name) -->)",
                    re.S)


def scp_contexts(config: NodeConfig | None = None) -> dict[str, tuple[str, ...]]:
    """Abstract syntax -> transfer syntaxes the Storage SCP accepts, as :func:`build_ae` sets them up."""
    ae = build_ae(config or NodeConfig())
    return {str(cx.abstract_syntax): tuple(str(ts) for ts in cx.transfer_syntax) for cx in ae.supported_contexts}


def conformance_tables(config: NodeConfig | None = None) -> dict[str, str]:
    """Every generated block of the statement, by name, as Markdown.

    Raises:
        ValueError: the storage SOP classes do not all accept the same transfer syntaxes (the statement's
            layout assumes one list for all of them).
    """
    contexts = scp_contexts(config)
    verification = contexts.pop(VERIFICATION)
    syntaxes = set(contexts.values())
    if len(syntaxes) != 1:
        raise ValueError(f"the storage SOP classes accept {len(syntaxes)} different transfer syntax lists; "
                         "the conformance statement lists one: give it a table per class")
    (storage_syntaxes,) = syntaxes
    return {
        "scp-sop-classes": _uid_table(["SOP Class", "UID"], sorted(contexts, key=_uid_key)),
        "scp-transfer-syntaxes": _uid_table(["Transfer Syntax", "UID"], storage_syntaxes),
        "scp-verification": _uid_table(["Transfer Syntax (Verification)", "UID"], verification),
        "scu-sop-classes": _uid_table(["SOP Class", "UID"], SCU_SOP_CLASSES),
        "scu-transfer-syntaxes": _uid_table(["Transfer Syntax", "UID"], SCU_TRANSFER_SYNTAXES),
        "association-parameters": _parameters(config or NodeConfig()),
        "configuration": _configuration(),
    }


def update_conformance(path: Path) -> bool:
    """Rewrite the generated blocks of the statement at ``path`` from the code; True when anything changed.

    Raises:
        ValueError: the document lacks a block the code generates, or has one it does not.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    tables = conformance_tables()
    found = [m.group("name") for m in _BLOCK.finditer(text)]
    if sorted(found) != sorted(tables):
        raise ValueError(f"{path} has generated blocks {sorted(found)}; the code makes {sorted(tables)}")
    new = _BLOCK.sub(lambda m: m.group(1) + tables[m.group("name")] + m.group(4), text)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def generated_blocks(text: str) -> dict[str, str]:
    """The generated blocks of a statement's text, by name."""
    return {m.group("name"): m.group("body") for m in _BLOCK.finditer(text)}


def _uid_key(uid: str) -> tuple[int, ...]:
    return tuple(int(part) for part in uid.split("."))


def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name != uid else "(unnamed)"


def _uid_table(header: list[str], uids) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {_uid_name(uid)} | `{uid}` |" for uid in uids]
    return "\n".join(lines) + "\n"


def _parameters(config: NodeConfig) -> str:
    from pynetdicom import AE

    ae = build_ae(config)
    rows = [
        ("Application Context Name", "`1.2.840.10008.3.1.1.1`"),
        ("Implementation Class UID", f"`{ae.implementation_class_uid}`"),
        ("Implementation Version Name", f"`{ae.implementation_version_name}`"),
        ("AE title (default, `ae-title`)", f"`{config.ae_title}`"),
        ("Maximum simultaneous associations as SCP (default, `max-associations`)", str(ae.maximum_associations)),
        ("Maximum PDU size received as SCP (default, `max-pdu-size`; 0: unlimited)", str(ae.maximum_pdu_size)),
        ("Maximum PDU size received as SCU (sending results)", str(AE().maximum_pdu_size)),
        ("Maximum operations invoked / performed (asynchronous operations)", "1 / 1 (not negotiated)"),
        ("Association, DIMSE and network timeouts as SCP (seconds)",
         f"{ae.acse_timeout:g} / {ae.dimse_timeout:g} / {ae.network_timeout:g}"),
        ("TLS handshake timeout as SCP (seconds)", f"{HANDSHAKE_TIMEOUT:g}"),
        ("Called AE title checked as SCP", "yes" if ae.require_called_aet else "no: any called AE title is accepted"),
        ("SCP/SCU Role Selection, extended negotiation", "not supported (default roles)"),
    ]
    lines = ["| Parameter | Value |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def _configuration() -> str:
    lines = ["| Setting | Default |", "|---|---|"]
    for f in fields(NodeConfig):
        if f.name != "select":
            lines.append(f"| `{f.name.replace('_', '-')}` | {_default(getattr(NodeConfig(), f.name))} |")
    for f in fields(Selection):
        lines.append(f"| `select.{f.name.replace('_', '-')}` | {_default(getattr(Selection(), f.name))} |")
    return "\n".join(lines) + "\n"


def _default(value) -> str:
    if value is None or value == ():
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`"
