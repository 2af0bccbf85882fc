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
from ._io import MAX_BYTES, MAX_PIXELS
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
         threshold: float | None = None, threads: int | None = None, *, sha256: str | None = None,
         max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> Classifier:
    """Load a model bundle (or a lone ``.onnx`` carrying its manifest).

    Args:
        path: bundle folder, its ``manifest.json``, or an ``.onnx`` file;
            default :func:`default_model`.
        provider: ``auto`` (CUDA when it works, else CPU), ``cpu`` or ``cuda``.
        artifact: a format name (e.g. ``onnx-fp32``) to force; default: the
            provider's preference (int8 on CPU, fp16 on CUDA).
        threshold: decision threshold; default the manifest's.
        threads: CPU threads for inference and preprocessing; default all cores.
        sha256: pin the artifact file: it must have this hex digest. A lone
            ``.onnx`` carries no recorded hash, so this is how it is verified.
        max_pixels: refuse input files holding more pixels than this.
        max_bytes: refuse input files decoding to more bytes than this.

    Returns:
        A ready :class:`Classifier` (warmed up).

    Raises:
        ModelError: missing or invalid bundle, a sha256 mismatch, a
            manifest.json whose result-deciding fields differ from the copy
            embedded in the verified artifact, a graph that does not match
            the manifest, no runnable artifact, or an explicit provider that
            cannot start.
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
    if sha256 is not None and path.suffix == ".onnx" and path.is_file():
        _pinned(path, Artifact("onnx-fp32", path.name, "", 0), sha256)  # before its metadata is trusted
    manifest, folder = locate(path)
    config = SessionConfig(threads=threads)
    for prov in resolve(provider):
        art = choose_artifact(manifest, prov.formats, artifact)
        if art is None:
            continue
        if folder is None:  # a lone file: verified only when pinned
            file, art = path, _pinned(path, art, sha256)
            stamp = _stamp(file)
        else:
            file = folder / art.file
            stamp = _verified(folder, art)
            _pinned(file, art, sha256)
        session = create_session(str(file), prov, config)
        if _stamp(file) != stamp:
            raise ModelError(f"{file} changed while it was being loaded; load it again")
        if session is None:
            log.warning("provider %s could not start; trying the next one", prov.name)
            if provider != "auto":
                raise ModelError(f"provider {prov.name!r} could not start (no device, or its libraries are missing): {prov.install}")
            continue
        check_graph(session, manifest, str(file))
        if folder is not None:
            check_embedded(session, manifest, str(file))
        log.info("using provider %s, artifact %s", prov.name, art.format)
        return Classifier(manifest, session, art, prov.name, threshold, threads, max_pixels, max_bytes)
    have = ", ".join(a.format for a in manifest.artifacts) or "none"
    raise ModelError(f"no runnable artifact in {path} for provider {provider!r} "
                     f"(artifact={artifact!r}); the bundle has: {have}")


def _pinned(file: Path, art: Artifact, sha256: str | None) -> Artifact:
    """``art`` with its digest, when ``sha256`` pins the file; a mismatch is refused."""
    if sha256 is None:
        return art
    try:
        digest = sha256_file(file)
    except OSError as exc:
        raise ModelError(f"artifact {file} cannot be read: {exc.strerror or exc}") from None
    if digest != sha256.strip().lower():
        raise ModelError(f"sha256 mismatch for {file}: pinned {sha256[:16]}..., file is {digest[:16]}...; "
                         f"refusing to load a modified artifact")
    return replace(art, sha256=digest, bytes=file.stat().st_size)


#: Manifest fields that change what a prediction says: manifest.json must agree with the artifact's copy.
RESULT_FIELDS = ("labels", "threshold", "input", "output", "preprocessing", "series_rule")


def check_embedded(session, manifest: Manifest, origin: str) -> None:
    """manifest.json against the manifest embedded in the (hash-verified) artifact, for :data:`RESULT_FIELDS`.

    The artifact's bytes are covered by its sha256; manifest.json is not. So
    the result-deciding fields are compared with the artifact's own copy: an
    edited threshold or swapped labels are refused, not obeyed. Artifacts
    without an embedded manifest (not written by asinfer) are not compared.

    Raises:
        ModelError: naming the field that differs.
    """
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        log.debug("%s carries no embedded manifest; manifest.json is taken as it is", origin)
        return
    embedded = Manifest.from_json(text, origin=f"{origin} metadata")
    for name in RESULT_FIELDS:
        ours, theirs = getattr(manifest, name), getattr(embedded, name)
        if ours != theirs:
            raise ModelError(f"manifest.json field {name!r} differs from the copy embedded in {origin} "
                             f"({_short(ours)} vs {_short(theirs)}): the manifest was edited after the "
                             f"bundle was written; restore it or rebuild the bundle")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
    # A hash computed now would only describe whatever the file is now: a lone file's digest stays unknown
    # ("unverified") unless the caller pins one (load(..., sha256=...)).
    fmt = manifest.artifacts[0].format if len(manifest.artifacts) == 1 else "onnx-fp32"
    return replace(manifest, artifacts=(Artifact(fmt, path.name, "", path.stat().st_size),))


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
        return dict(sess.get_modelmeta().custom_metadata_map)
    except Exception as exc:  # onnxruntime's own errors, and UnicodeDecodeError from damaged metadata
        raise ModelError(f"{path} is not a loadable ONNX model: {' '.join(str(exc).split())[:300]}") from None


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
OK, MISSING, MISMATCH, UNHASHED = "ok", "missing", "sha256 mismatch", "unverified"


@dataclass(frozen=True)
class ArtifactCheck:
    """Whether an artifact's file is there and is the one the manifest describes."""

    format: str
    file: str
    status: str  # ok | missing | sha256 mismatch | unverified (a lone .onnx: no recorded hash to check)
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


def verify(path: str | os.PathLike, sha256: str | None = None) -> dict[str, ArtifactCheck]:
    """Check every artifact of a bundle; format -> :class:`ArtifactCheck`.

    Args:
        path: bundle folder, manifest.json or a lone ``.onnx``.
        sha256: for a lone ``.onnx``, the digest it must have; without one it
            is reported ``unverified`` (it carries no recorded hash).

    Raises:
        ModelError: the bundle itself cannot be read (see :func:`locate`).
    """
    manifest, folder = locate(path)
    if folder is not None:
        return {art.format: check_artifact(folder, art) for art in manifest.artifacts}
    art = manifest.artifacts[0]
    if sha256 is None:
        return {art.format: ArtifactCheck(art.format, art.file, UNHASHED, "a lone file carries no recorded hash; pin "
                                                                          "it with its sha256 to verify it")}
    pinned = replace(art, sha256=sha256.strip().lower())
    return {art.format: check_artifact(Path(path).parent, pinned)}


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
