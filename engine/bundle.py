"""The model bundle contract: what the trainer writes, the engine loads and the benchmarks judge.

A bundle is a folder: ``manifest.json`` (a :class:`Manifest`) plus the
artifact files it lists, each with its format, size and sha256. Everything
that crosses the line between ``asinfer.trainer``, ``asinfer.engine`` and
``asinfer.benchmarks`` about a model is one of the types below; no package
reads another's private modules.

Reading and checking:
    :func:`read_manifest`, :func:`locate` (a folder, its manifest.json, or a
    lone ``.onnx`` carrying the manifest in its metadata), :func:`verify`
    (every artifact -> :class:`ArtifactCheck`), :func:`check_artifact`,
    :func:`sha256_file`, :func:`choose_artifact`, :func:`check_graph`.

Writing (the trainer adds the ONNX metadata embedding, which needs ``onnx``):
    :func:`make_artifact`, :func:`write_manifest`.

Parity of a converted format against its reference:
    :func:`measure_parity` -> :class:`ParityRecord` (agreement with its :func:`wilson_interval`); ``FORMATS[f].tolerance``
    is a :class:`Tolerance`, whose :meth:`Tolerance.judge` gives the
    :class:`Verdict` (with one :class:`Check` per limit). The converter, the
    bench and the model card use exactly these.

Manifest JSON is parsed strictly: a field of the wrong type or an unknown
field is a :class:`asinfer.engine.ModelError` naming the field, and the
loaded graph's input and output must match the manifest's names and shape.
"""

from ._bundle import MISMATCH as MISMATCH
from ._bundle import MISSING as MISSING
from ._bundle import OK as OK
from ._bundle import UNHASHED as UNHASHED
from ._bundle import ArtifactCheck as ArtifactCheck
from ._bundle import check_artifact as check_artifact
from ._bundle import check_graph as check_graph
from ._bundle import choose_artifact as choose_artifact
from ._bundle import locate as locate
from ._bundle import make_artifact as make_artifact
from ._bundle import read_onnx_metadata as read_onnx_metadata
from ._bundle import sha256_file as sha256_file
from ._bundle import verify as verify
from ._manifest import MANIFEST_NAME as MANIFEST_NAME
from ._manifest import METADATA_KEY as METADATA_KEY
from ._manifest import SCHEMA_VERSION as SCHEMA_VERSION
from ._manifest import Artifact as Artifact
from ._manifest import InputSpec as InputSpec
from ._manifest import Manifest as Manifest
from ._manifest import OutputSpec as OutputSpec
from ._manifest import PreprocessSpec as PreprocessSpec
from ._manifest import read_manifest as read_manifest
from ._manifest import write_manifest as write_manifest
from ._parity import Check as Check
from ._parity import ParityRecord as ParityRecord
from ._parity import Tolerance as Tolerance
from ._parity import Verdict as Verdict
from ._parity import measure_parity as measure_parity
from ._parity import roc_auc as roc_auc
from ._parity import wilson_interval as wilson_interval
from ._schema import SchemaError as SchemaError
from ._series import SeriesRule as SeriesRule
from ._schema import build_dataclass as build_dataclass
from ._schema import to_json_data as to_json_data
