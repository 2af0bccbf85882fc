"""The model bundle manifest: the contract between trainer and engine.

A bundle is a folder holding ``manifest.json`` and the artifacts it lists.
The same JSON is stored in every exported ONNX graph's ``metadata_props``
under :data:`METADATA_KEY`, so a lone ``.onnx`` file still describes itself.

Model input contract (every engine-run graph follows it):
    input  ``image``: uint8, ``[N, H, W, 1]`` (NHWC, grey), the output of
           :class:`asinfer.engine.Preprocessor`; N is dynamic. Scaling to [0, 1] and
           replication to 3 channels happen inside the graph.
    output ``probability``: float32, ``[N, 1]``, the sigmoid probability of
           ``labels[1]`` (the positive class).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from ._errors import ModelError
from ._formats import FORMATS
from ._parity import ParityRecord, record_from_dict
from ._schema import SchemaError, build_dataclass, to_json_data
from ._series import SeriesRule

# 4: output.mirror_average; 3: series_rule; 2: typed parity records (reference, intervals, verdict); 1-3 still read
SCHEMA_VERSION = 4
METADATA_KEY = "asinfer.manifest"
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is kilobytes; refuse to parse a runaway file

RESIZE_MODES = ("area", "linear", "cubic", "nearest", "lanczos")


@dataclass(frozen=True)
class InputSpec:
    """What the graph takes: a uint8 grey batch, see the module docstring."""

    name: str = "image"
    height: int = 224
    width: int = 224
    channels: int = 1
    dtype: str = "uint8"
    layout: str = "NHWC"


@dataclass(frozen=True)
class OutputSpec:
    """What the graph returns: the positive-class probability per slice.

    ``mirror_average``: a slice's probability is the mean of the graph's outputs for the image and
    for its left-right mirror (test-time mirroring, as nnU-Net does by default): the decision cannot
    depend on which side is on the left, at twice the inference work. Schema 4; older bundles: off.
    """

    name: str = "probability"
    dtype: str = "float32"
    activation: str = "sigmoid"
    mirror_average: bool = False


@dataclass(frozen=True)
class PreprocessSpec:
    """How any image becomes the uint8 batch; read by engine.Preprocessor."""

    clahe_clip_limit: float = 2.0  # OpenCV clipLimit, as the prototype
    clahe_tile_grid: tuple[int, int] = (8, 8)  # (columns, rows) of CLAHE tiles
    resize_down: str = "area"  # interpolation when shrinking (anti-aliased)
    resize_up: str = "linear"  # interpolation when enlarging
    # >8-bit data: DICOM VOI window when the file has one, else a robust
    # percentile stretch to 0..255; 8-bit images pass through unchanged
    # unless ``stretch_8bit`` (then they are mapped the same way).
    percentile_low: float = 0.5
    percentile_high: float = 99.5
    use_voi_window: bool = True
    # 8-bit images mapped like deeper ones: an export that uses part of the range (12-bit values
    # shifted right by 4 fill 0..~100) reaches the model as a full-range image. Off in bundles
    # made before it existed, which keep their own behaviour.
    stretch_8bit: bool = False
    # What the graph does with the uint8 batch (documentation of the contract).
    in_graph: str = "x / 255, grey replicated to 3 channels"


@dataclass(frozen=True)
class Artifact:
    """One model file in the bundle."""

    format: str  # a key of engine.FORMATS
    file: str  # path relative to the bundle folder, inside it
    sha256: str  # hex digest of the file's bytes
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """Everything the engine needs to run a bundle, and what produced it.

    ``training``, ``metrics`` and ``tools`` are free-form records written by
    the trainer (data description, held-out metrics, tool versions); the
    engine only displays them. ``parity`` holds one typed
    :class:`ParityRecord` per converted format.
    """

    name: str
    version: str
    labels: tuple[str, str] = ("no AS", "AS")  # (negative, positive)
    threshold: float = 0.5  # probability at or above which a slice is positive
    input: InputSpec = field(default_factory=InputSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    preprocessing: PreprocessSpec = field(default_factory=PreprocessSpec)
    artifacts: tuple[Artifact, ...] = ()
    description: str = ""
    synthetic_training_data: bool = True  # trained on phantoms: say so everywhere
    notice: str = "Research software. Not a diagnostic device."
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, ParityRecord] = field(default_factory=dict)
    series_rule: SeriesRule | None = None  # how slice probabilities become a series decision (fitted on validation)
    tools: dict[str, str] = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """Serialise to the JSON written as manifest.json and ONNX metadata."""
        return json.dumps(to_json_data(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, origin: str = "manifest") -> "Manifest":
        """Parse and validate manifest JSON.

        Raises:
            ModelError: not JSON, a newer schema, or a field of the wrong
                kind or value; the message names the field.
        """
        if len(text) > MAX_MANIFEST_BYTES:
            raise ModelError(f"{origin} is {len(text):,} bytes; a manifest is at most {MAX_MANIFEST_BYTES:,}")
        try:
            data = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers past Python's digit limit
            raise ModelError(f"{origin} is not valid JSON: {str(exc)[:200]}") from None
        except RecursionError:
            raise ModelError(f"{origin} is nested too deeply to be a manifest") from None
        return cls.from_dict(data, origin)

    @classmethod
    def from_dict(cls, data: Any, origin: str = "manifest") -> "Manifest":
        """Build a manifest from parsed JSON, validating it (see from_json)."""
        if not isinstance(data, dict):
            raise ModelError(f"{origin}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
            raise ModelError(
                f"{origin}: schema_version {version!r} is not supported by this engine "
                f"(supports 1 to {SCHEMA_VERSION}); upgrade asinfer"
            )
        body = {k: v for k, v in data.items() if k != "parity"}
        try:
            manifest = build_dataclass(cls, body)
            parity = data.get("parity", {})
            if not isinstance(parity, dict):
                raise SchemaError(f"parity: expected an object, got {type(parity).__name__}")
            records = {str(fmt): record_from_dict(rec, f"parity.{fmt}") for fmt, rec in parity.items()}
        except SchemaError as exc:
            raise ModelError(f"{origin}: {exc}") from None
        except RecursionError:
            raise ModelError(f"{origin} is nested too deeply to be a manifest") from None
        manifest = replace(manifest, parity=records, schema_version=SCHEMA_VERSION)
        manifest.validate(origin)
        return manifest

    def validate(self, origin: str = "manifest") -> None:
        """Check the values the engine relies on.

        Raises:
            ModelError: naming the field and the valid values.
        """
        problems = [*_label_problems(self.labels), *_threshold_problems(self.threshold),
                    *(self.series_rule.validate() if self.series_rule is not None else []),
                    *_input_problems(self.input), *(["output.name is empty"] if not self.output.name else []),
                    *_preprocess_problems(self.preprocessing),
                    *(p for art in self.artifacts for p in _artifact_problems(art))]
        if len({a.format for a in self.artifacts}) != len(self.artifacts):
            problems.append("artifacts: a format is listed twice")
        if problems:
            raise ModelError(f"{origin}: " + "; ".join(problems))

    def artifact(self, fmt: str) -> Artifact | None:
        """The artifact of format ``fmt``, or None."""
        return next((a for a in self.artifacts if a.format == fmt), None)


def _label_problems(labels: tuple[str, str]) -> list[str]:
    if any(not name.strip() for name in labels) or labels[0] == labels[1]:
        return [f"labels must be two different, non-empty names (negative, positive), got {list(labels)!r}"]
    return []


def _threshold_problems(threshold: float) -> list[str]:
    return [] if 0.0 <= threshold <= 1.0 else [f"threshold {threshold} is outside [0, 1]"]


def _input_problems(spec: InputSpec) -> list[str]:
    problems = []
    if (spec.dtype, spec.layout, spec.channels) != ("uint8", "NHWC", 1):
        problems.append(f"input must be uint8 NHWC with 1 channel, got {spec.dtype} {spec.layout} "
                        f"with {spec.channels} channel(s)")
    if not (8 <= spec.height <= 4096 and 8 <= spec.width <= 4096):
        problems.append(f"input size {spec.height}x{spec.width} is outside 8x8 to 4096x4096")
    if not spec.name:
        problems.append("input.name is empty")
    return problems


def _preprocess_problems(spec: PreprocessSpec) -> list[str]:
    problems = []
    if not 0.0 < spec.clahe_clip_limit <= 1000.0:
        problems.append(f"preprocessing.clahe_clip_limit {spec.clahe_clip_limit} must be in (0, 1000]")
    if not all(1 <= n <= 64 for n in spec.clahe_tile_grid):
        problems.append(f"preprocessing.clahe_tile_grid {list(spec.clahe_tile_grid)} must be two integers "
                        f"from 1 to 64")
    for name in ("resize_down", "resize_up"):
        if getattr(spec, name) not in RESIZE_MODES:
            problems.append(f"preprocessing.{name} {getattr(spec, name)!r} is not one of {', '.join(RESIZE_MODES)}")
    if not 0.0 <= spec.percentile_low < spec.percentile_high <= 100.0:
        problems.append(f"preprocessing percentiles {spec.percentile_low}, {spec.percentile_high} must satisfy "
                        f"0 <= low < high <= 100")
    return problems


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _artifact_problems(art: Artifact) -> list[str]:
    problems = []
    if art.format not in FORMATS:
        problems.append(f"artifact {art.file!r} has unknown format {art.format!r}; valid: {', '.join(FORMATS)}")
    path = PurePosixPath(art.file)
    if (not art.file or path.is_absolute() or ".." in path.parts or "\\" in art.file
            or art.file != art.file.strip() or os.path.isabs(art.file)):
        problems.append(f"artifact file {art.file!r} must be a plain path inside the bundle folder")
    if art.sha256 and not _SHA256.match(art.sha256):
        problems.append(f"artifact {art.file!r}: sha256 {art.sha256[:70]!r} is not 64 lowercase hex digits")
    if art.bytes < 0:
        problems.append(f"artifact {art.file!r}: bytes {art.bytes} is negative")
    return problems


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate ``manifest.json`` at ``path``.

    Raises:
        ModelError: missing, unreadable or invalid.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ModelError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    return Manifest.from_json(text, origin=str(path))


def write_manifest(folder: str | os.PathLike, manifest: Manifest) -> Path:
    """Write ``folder/manifest.json`` atomically (temporary file, then rename); returns its path."""
    manifest.validate()
    path = Path(folder) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return path
