"""Finding, verifying and loading model bundles."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ._classifier import Classifier
from ._errors import ModelError
from ._formats import FORMATS, get_format
from ._manifest import MANIFEST_NAME, METADATA_KEY, Artifact, Manifest, read_manifest
from ._providers import SessionConfig, create_session, resolve

log = logging.getLogger("asinfer")

#: The bundle used when no model is named: $ASINFER_MODEL, else this folder under models/.
DEFAULT_MODEL = "asinfer-vgg16-phantom"
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def default_model() -> Path:
    """The model used when none is named: ``$ASINFER_MODEL`` or the shipped one."""
    return Path(os.environ.get("ASINFER_MODEL") or MODELS_DIR / DEFAULT_MODEL)


def load(path: str | os.PathLike | None = None, provider: str = "auto", artifact: str | None = None,
         threshold: float | None = None, threads: int | None = None) -> Classifier:
    """Load a model bundle (or a lone ``.onnx`` carrying its manifest).

    Args:
        path: bundle folder, its ``manifest.json``, or an ``.onnx`` file;
            default :func:`default_model`.
        provider: ``auto`` (CUDA when it works, else CPU), ``cpu`` or ``cuda``.
        artifact: a format name (e.g. ``onnx-fp32``) to force; default: the
            provider's preference (int8 on CPU, fp16 on CUDA).
        threshold: decision threshold; default the manifest's.
        threads: CPU threads for inference and preprocessing; default all cores.

    Returns:
        A ready :class:`Classifier` (warmed up).

    Raises:
        ModelError: missing or invalid bundle, a sha256 mismatch, no runnable
            artifact, or an explicit provider that cannot start.
        ValueError: unknown provider or artifact name.

    Example:
        >>> clf = load("models/asinfer-tiny", provider="cpu")  # doctest: +SKIP
        >>> clf.provider, clf.artifact.format  # doctest: +SKIP
        ('cpu', 'onnx-int8')
    """
    path = Path(path) if path is not None else default_model()
    if artifact is not None and not get_format(artifact).engine:
        runnable = [f.name for f in FORMATS.values() if f.engine]
        raise ValueError(f"artifact {artifact!r} is not run by the engine; choose one of {', '.join(runnable)}")
    manifest, folder = locate(path)
    config = SessionConfig(threads=threads)
    for prov in resolve(provider):
        art = choose_artifact(manifest, prov.formats, artifact)
        if art is None:
            continue
        file = folder / art.file if folder is not None else path
        stamp = _verified(folder, art) if folder is not None else None
        session = create_session(str(file), prov, config)
        if stamp is not None and _stamp(file) != stamp:
            raise ModelError(f"{file} changed while it was being loaded; load it again")
        if session is None:
            log.warning("provider %s could not start; trying the next one", prov.name)
            if provider != "auto":
                raise ModelError(f"provider {prov.name!r} could not start (no device, or its libraries are missing): {prov.install}")
            continue
        check_graph(session, manifest, str(file))
        log.info("using provider %s, artifact %s", prov.name, art.format)
        return Classifier(manifest, session, art, prov.name, threshold, threads)
    have = ", ".join(a.format for a in manifest.artifacts) or "none"
    raise ModelError(f"no runnable artifact in {path} for provider {provider!r} "
                     f"(artifact={artifact!r}); the bundle has: {have}")


def locate(path: str | os.PathLike) -> tuple[Manifest, Path | None]:
    """Read a model's manifest without loading it.

    Args:
        path: bundle folder, its ``manifest.json``, or an ``.onnx`` file.

    Returns:
        ``(manifest, folder)``: ``folder`` holds the artifacts, None for a lone ``.onnx``.

    Raises:
        ModelError: missing, not a bundle, or an invalid manifest.
    """
    path = Path(path)
    if path.is_dir():
        return read_manifest(path / MANIFEST_NAME), path
    if path.name == MANIFEST_NAME or path.suffix == ".json":
        return read_manifest(path), path.parent
    if path.suffix == ".onnx":
        return _lone_onnx(path), None
    if not path.exists():
        raise ModelError(f"model {path} does not exist; pass a bundle folder, manifest.json or .onnx file")
    raise ModelError(f"{path} is not a model bundle: pass a bundle folder, manifest.json or .onnx file")


def _lone_onnx(path: Path) -> Manifest:
    """The manifest embedded in an ONNX file, with that file as its only artifact."""
    meta = read_onnx_metadata(path)
    if METADATA_KEY not in meta:
        raise ModelError(f"{path} carries no asinfer manifest in its metadata "
                         f"(key {METADATA_KEY!r}); load its bundle folder instead")
    manifest = Manifest.from_json(meta[METADATA_KEY], origin=f"{path} metadata")
    # write_bundle embeds exactly one artifact entry: the file itself (its format).
    fmt = manifest.artifacts[0].format if len(manifest.artifacts) == 1 else "onnx-fp32"
    data = path.read_bytes()
    art = Artifact(fmt, path.name, hashlib.sha256(data).hexdigest(), len(data))
    return replace(manifest, artifacts=(art,))


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file, read with onnxruntime (no onnx package needed)."""
    import onnxruntime as ort

    if not path.exists():
        raise ModelError(f"model {path} does not exist")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{path} is not a loadable ONNX model: {' '.join(str(exc).split())[:300]}") from None
    return dict(sess.get_modelmeta().custom_metadata_map)


def choose_artifact(manifest: Manifest, preference: tuple[str, ...], forced: str | None = None) -> Artifact | None:
    """The artifact to run: ``forced`` if given, else the first of ``preference`` the bundle has."""
    for fmt in (forced,) if forced else preference:
        art = manifest.artifact(fmt)
        if art is not None:
            return art
    return None


def check_graph(session, manifest: Manifest, origin: str) -> None:
    """The loaded graph's input and output against the manifest's input contract.

    Raises:
        ModelError: names, element type or input size differ from the manifest.
    """
    inputs, outputs = session.get_inputs(), session.get_outputs()
    spec = manifest.input
    found = next((i for i in inputs if i.name == spec.name), None)
    problems = []
    if len(inputs) != 1 or found is None:
        problems.append(f"graph inputs {[i.name for i in inputs]}, manifest input {spec.name!r}")
    else:
        if found.type != "tensor(uint8)":
            problems.append(f"input {spec.name!r} is {found.type}, the contract is tensor(uint8)")
        dims = list(found.shape)
        fixed = [d if isinstance(d, int) else None for d in dims[1:]]
        if len(dims) != 4 or fixed != [spec.height, spec.width, 1]:
            problems.append(f"input {spec.name!r} has shape {dims}, manifest says [N, {spec.height}, {spec.width}, 1]")
    if manifest.output.name not in [o.name for o in outputs]:
        problems.append(f"graph outputs {[o.name for o in outputs]}, manifest output {manifest.output.name!r}")
    if problems:
        raise ModelError(f"{origin} does not match its manifest: " + "; ".join(problems))


#: Artifact check outcomes.
OK, MISSING, MISMATCH, UNHASHED = "ok", "missing", "sha256 mismatch", "unhashed"


@dataclass(frozen=True)
class ArtifactCheck:
    """Whether an artifact's file is there and is the one the manifest describes."""

    format: str
    file: str
    status: str  # ok | missing | sha256 mismatch | unhashed (a lone .onnx: no recorded hash to check)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def check_artifact(folder: Path, art: Artifact) -> ArtifactCheck:
    """Size and sha256 of ``folder/art.file`` against the manifest (the one place that compares them)."""
    file = Path(folder) / art.file
    try:
        digest = sha256_file(file)
    except OSError as exc:
        return ArtifactCheck(art.format, art.file, MISSING, f"artifact {art.format} ({file}) cannot be read: "
                                                            f"{exc.strerror or exc}")
    if digest != art.sha256:
        return ArtifactCheck(art.format, art.file, MISMATCH,
                             f"sha256 mismatch for {file}: manifest says {art.sha256[:16]}..., file is "
                             f"{digest[:16]}...; refusing to load a modified artifact")
    return ArtifactCheck(art.format, art.file, OK)


def _verified(folder: Path, art: Artifact) -> tuple:
    """:func:`check_artifact`, raising on failure; returns the file's stat stamp for :func:`_stamp`.

    The file is hashed in blocks and ONNX Runtime then reads it by path: holding
    its bytes in Python as well cost 14 MB of peak memory on VGG16 int8. The
    stamp taken before hashing (inode, size, mtime) is compared again after
    the load, so a file replaced or rewritten in between is refused.
    """
    file = folder / art.file
    try:
        stamp = _stamp(file)
    except OSError as exc:
        raise ModelError(f"artifact {art.format} ({file}) cannot be read: {exc.strerror or exc}") from None
    check = check_artifact(folder, art)
    if not check.ok:
        raise ModelError(check.message)
    return stamp


def _stamp(file: Path) -> tuple:
    st = os.stat(file)
    return st.st_ino, st.st_size, st.st_mtime_ns


def verify(path: str | os.PathLike) -> dict[str, ArtifactCheck]:
    """Check every artifact of a bundle; format -> :class:`ArtifactCheck`.

    Raises:
        ModelError: the bundle itself cannot be read (see :func:`locate`).
    """
    manifest, folder = locate(path)
    if folder is None:
        return {a.format: ArtifactCheck(a.format, a.file, UNHASHED, "a lone file carries no recorded hash")
                for a in manifest.artifacts}
    return {art.format: check_artifact(folder, art) for art in manifest.artifacts}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_artifact(folder: Path, file: str, fmt: str) -> Artifact:
    """An :class:`Artifact` record for ``folder/file`` (what the trainer writes)."""
    get_format(fmt)
    path = Path(folder) / file
    return Artifact(fmt, file, sha256_file(path), path.stat().st_size)
