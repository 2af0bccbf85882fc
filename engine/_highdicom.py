"""highdicom without its 22 MB attribute map in memory.

When highdicom copies the patient and study attributes of a source image into a new object (the SR's
and every Secondary Capture's constructor do), it loads ``_standard/module_attribute_map.json``: every
attribute of every module of the standard, nested ones included. Parsed, that is ~61 MB of Python
objects for the life of the process and ~110 MB at the peak of the parse (measured on highdicom 0.28;
the first report of ``asinfer serve``'s worker went from 194 to 308 MB peak RSS). The copy only reads
the root-level attributes of each module: 4,033 of the file's 99,740 entries.

:func:`use_root_attribute_map` gives highdicom those entries from ``highdicom_root_attributes.json``,
an extract of the same file shipped with the engine (~100 KB), but only when the installed file is
the one the extract was made from (its SHA-256); any other highdicom is left as it is. Regenerate the
extract after a highdicom upgrade with ``python -m asinfer.engine._highdicom`` (a test says when).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("asinfer")

EXTRACT = Path(__file__).with_name("highdicom_root_attributes.json")
_SOURCE = ("highdicom", "_standard/module_attribute_map.json")
_state: dict[str, bool] = {}


def extract_root_attributes(raw: bytes) -> dict:
    """The root-level attributes of every module in highdicom's map (``raw``: the JSON file's bytes)."""
    root = {key: [item for item in items if not item["path"]] for key, items in json.loads(raw).items()}
    return {"source_sha256": hashlib.sha256(raw).hexdigest(),
            "modules": {key: [item["keyword"] for item in items] for key, items in root.items()},
            "types": {key: [item["type"] for item in items] for key, items in root.items()}}


def use_root_attribute_map() -> bool:
    """Make highdicom use the shipped root-level extract; True when it does (done once per process)."""
    if "lean" not in _state:
        _state["lean"] = _patch()
    return _state["lean"]


def _source_path() -> Path | None:
    spec = importlib.util.find_spec(_SOURCE[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / _SOURCE[1]


def _patch() -> bool:
    try:
        source = _source_path()
        digest = hashlib.sha256()
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        extract = json.loads(EXTRACT.read_text())
        if extract["source_sha256"] != digest.hexdigest():
            log.debug("highdicom's attribute map differs from the extract: highdicom loads its own")
            return False
        utils = importlib.import_module("highdicom._standard_utils")  # the one function we replace
        original = utils.get_module_attribute_map
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError):
        log.debug("highdicom's attribute map is not replaced", exc_info=True)
        return False
    lean = {key: [{"keyword": k, "type": t, "path": []} for k, t in zip(names, extract["types"][key])]
            for key, names in extract["modules"].items()}

    def get_module_attribute_map() -> dict[str, list[dict]]:
        return lean

    importlib.import_module("highdicom")  # imports the modules that took a reference to the function
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "highdicom" and getattr(module, "get_module_attribute_map", None) is original:
            module.get_module_attribute_map = get_module_attribute_map
    return True


if __name__ == "__main__":
    EXTRACT.write_text(json.dumps(extract_root_attributes(_source_path().read_bytes()), separators=(",", ":")) + "\n")
    print(f"wrote {EXTRACT}")
