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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ._errors import ModelError
from ._formats import FORMATS

SCHEMA_VERSION = 1
METADATA_KEY = "asinfer.manifest"
MANIFEST_NAME = "manifest.json"


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
    """What the graph returns: the positive-class probability per slice."""

    name: str = "probability"
    dtype: str = "float32"
    activation: str = "sigmoid"


@dataclass(frozen=True)
class PreprocessSpec:
    """How any image becomes the uint8 batch; read by engine.Preprocessor."""

    clahe_clip_limit: float = 2.0  # OpenCV clipLimit, as the prototype
    clahe_tile_grid: tuple[int, int] = (8, 8)  # (columns, rows) of CLAHE tiles
    resize_down: str = "area"  # interpolation when shrinking (anti-aliased)
    resize_up: str = "linear"  # interpolation when enlarging
    # >8-bit data: DICOM VOI window when the file has one, else a robust
    # percentile stretch to 0..255; 8-bit images pass through unchanged.
    percentile_low: float = 0.5
    percentile_high: float = 99.5
    use_voi_window: bool = True
    # What the graph does with the uint8 batch (documentation of the contract).
    in_graph: str = "x / 255, grey replicated to 3 channels"


@dataclass(frozen=True)
class Artifact:
    """One model file in the bundle."""

    format: str  # a key of engine.FORMATS
    file: str  # path relative to the bundle folder
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """Everything the engine needs to run a bundle, and what produced it.

    ``training``, ``metrics``, ``parity`` and ``tools`` are free-form records
    written by the trainer (data description, held-out metrics, conversion
    parity per format, tool versions); the engine only displays them.
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
    parity: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """Serialise to the JSON written as manifest.json and ONNX metadata."""
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str = "manifest") -> "Manifest":
        """Parse and validate manifest JSON.

        Raises:
            ModelError: not JSON, a newer schema, or a field of the wrong kind.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{origin} is not valid JSON: {exc}") from None
        return cls.from_dict(data, origin)

    @classmethod
    def from_dict(cls, data: Any, origin: str = "manifest") -> "Manifest":
        """Build a manifest from parsed JSON, validating it (see from_json)."""
        if not isinstance(data, dict):
            raise ModelError(f"{origin}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ModelError(
                f"{origin}: schema_version {version!r} is not supported by this engine "
                f"(supports <= {SCHEMA_VERSION}); upgrade asinfer"
            )
        try:
            manifest = _build(cls, data)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{origin}: {exc}") from None
        manifest.validate(origin)
        return manifest

    def validate(self, origin: str = "manifest") -> None:
        """Check values the engine relies on.

        Raises:
            ModelError: naming the field and the valid values.
        """
        if len(self.labels) != 2:
            raise ModelError(f"{origin}: labels must be two names (negative, positive), got {self.labels!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ModelError(f"{origin}: threshold {self.threshold} is outside [0, 1]")
        spec = self.input
        if (spec.dtype, spec.layout, spec.channels) != ("uint8", "NHWC", 1):
            raise ModelError(f"{origin}: input must be uint8 NHWC with 1 channel, got {spec}")
        if spec.height < 8 or spec.width < 8:
            raise ModelError(f"{origin}: input size {spec.height}x{spec.width} is below 8x8")
        for art in self.artifacts:
            if art.format not in FORMATS:
                raise ModelError(f"{origin}: artifact {art.file!r} has unknown format {art.format!r}; valid: {', '.join(FORMATS)}")

    def artifact(self, fmt: str) -> Artifact | None:
        """The artifact of format ``fmt``, or None."""
        return next((a for a in self.artifacts if a.format == fmt), None)


def _build(cls, data: dict):
    """Construct dataclass ``cls`` from a dict, recursing into typed fields."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)} in {cls.__name__}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(cls, name, value)
    return cls(**kwargs)


_NESTED = {"input": InputSpec, "output": OutputSpec, "preprocessing": PreprocessSpec}


def _coerce(cls, name: str, value: Any) -> Any:
    if cls is Manifest and name in _NESTED:
        return _build(_NESTED[name], value)
    if cls is Manifest and name == "artifacts":
        return tuple(_build(Artifact, a) for a in value)
    if isinstance(value, list):  # JSON has no tuples
        return tuple(value)
    return value


def read_manifest(path: Path) -> Manifest:
    """Read and validate ``manifest.json`` at ``path``.

    Raises:
        ModelError: missing, unreadable or invalid.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    return Manifest.from_json(text, origin=str(path))
