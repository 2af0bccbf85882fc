"""docs/conformance.md cannot drift from the code: its UID tables are parsed and compared with the presentation
contexts the node negotiates, and its generated blocks must equal what the code generates now."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom", reason="needs the node extra (the dev extra installs it)")

from asinfer.engine.node import SCU_SOP_CLASSES, SCU_TRANSFER_SYNTAXES, conformance_tables, scp_contexts  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "conformance.md"
REGENERATE = ("regenerate it: python -c \"from asinfer.engine.node import update_conformance; "
              "update_conformance('docs/conformance.md')\"")
BLOCK = re.compile(r"<!-- BEGIN generated:(?P<name>[a-z-]+) -->\n(?P<body>.*?)<!-- END generated:(?P=name) -->", re.S)


def blocks() -> dict[str, str]:
    return {m.group("name"): m.group("body") for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))}


def uids(table: str) -> list[str]:
    """The UIDs of a Markdown table's rows (second column, in backticks)."""
    found = []
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([0-9]+(?:\.[0-9]+)+)`", cells[1])
        assert match, f"not a UID cell: {row!r}"
        found.append(match.group(1))
    return found


def test_the_uid_tables_list_exactly_what_the_node_negotiates():
    doc = blocks()
    contexts = scp_contexts()
    verification = contexts.pop("1.2.840.10008.1.1")
    assert set(uids(doc["scp-sop-classes"])) == set(contexts), REGENERATE
    assert len(uids(doc["scp-sop-classes"])) == len(contexts)  # no row twice
    for syntaxes in contexts.values():  # one list for every storage class, in the code's order of preference
        assert uids(doc["scp-transfer-syntaxes"]) == list(syntaxes), REGENERATE
    assert uids(doc["scp-verification"]) == list(verification), REGENERATE
    assert uids(doc["scu-sop-classes"]) == list(SCU_SOP_CLASSES), REGENERATE
    assert uids(doc["scu-transfer-syntaxes"]) == list(SCU_TRANSFER_SYNTAXES), REGENERATE
    assert "1.2.840.10008.1.2.4.51" not in uids(doc["scp-transfer-syntaxes"])  # refused: the engine cannot decode it


def test_every_generated_block_equals_what_the_code_generates():
    doc = blocks()
    tables = conformance_tables()
    assert sorted(doc) == sorted(tables)
    for name, table in tables.items():
        assert doc[name] == table, f"docs/conformance.md block {name!r} differs from the code; {REGENERATE}"


def test_the_statement_follows_the_ps3_2_outline():
    text = DOC.read_text(encoding="utf-8")
    headings = ["## 1. Overview", "## 3. Introduction", "## 4. Networking", "### 4.1 Implementation model",
                "### 4.2 AE specifications", "##### 4.2.1.2 Association policies",
                "##### 4.2.1.3 Association initiation policy", "##### 4.2.1.4 Association acceptance policy",
                "### 4.3 Network interfaces", "### 4.4 Configuration", "## 5. Media interchange",
                "## 6. Support of character sets", "## 7. Security"]
    at = [text.find(h) for h in headings]
    assert -1 not in at and at == sorted(at), dict(zip(headings, at))


def test_the_node_guide_lists_every_metric():
    from asinfer.engine.node import METRICS

    guide = (DOC.parent / "node.md").read_text(encoding="utf-8")
    missing = [m.exposed for m in METRICS if f"`{m.exposed}`" not in guide and f"`{m.exposed}{{{m.label}}}`" not in guide]
    assert not missing, f"docs/node.md does not list {missing}"
