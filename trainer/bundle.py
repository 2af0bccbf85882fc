"""Writing model bundles: embed the manifest in ONNX files, hash, write manifest.json."""

from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from pathlib import Path

from asinfer.engine import FORMATS
from asinfer.engine.bundle import METADATA_KEY, Artifact, Manifest, make_artifact, write_manifest


def write_bundle(folder: Path, manifest: Manifest, files: dict[str, str]) -> Manifest:
    """Finish a bundle whose artifact files already sit in ``folder``.

    Each ONNX artifact gets the manifest in its ``metadata_props`` (with the
    artifact list reduced to that file, whose hash it cannot contain), then
    every artifact is hashed and ``manifest.json`` written.

    Args:
        folder: the bundle folder.
        manifest: everything but ``artifacts``.
        files: format name -> file name inside ``folder``.

    Returns:
        The manifest as written.
    """
    folder = Path(folder)
    unknown = set(files) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown format(s) {sorted(unknown)}; valid: {', '.join(FORMATS)}")
    if not manifest.created:
        manifest = replace(manifest, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    for fmt, name in files.items():
        if name.endswith(".onnx"):
            embed_manifest(folder / name, replace(manifest, artifacts=(Artifact(fmt, name, "", 0),)))
    final = replace(manifest, artifacts=tuple(make_artifact(folder, name, fmt) for fmt, name in files.items()))
    write_manifest(folder, final)
    return final


def tool_versions(dists) -> dict[str, str]:
    """Installed versions of the named distributions (absent ones left out), for manifests and reports."""
    from importlib import metadata

    found = {}
    for dist in dists:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni")  # what decides int8 speed on x86


def machine(flags: tuple[str, ...] = CPU_FLAGS) -> dict:
    """CPU model, the named SIMD flags (they decide int8 speed), cores, OS and Python."""
    import os
    import platform

    info = _cpuinfo()
    have = set(info.get("flags", "").split())
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "flags": {f: f in have for f in flags}, "cores": os.cpu_count(),
            "arch": platform.machine(), "os": platform.platform(), "python": platform.python_version()}


def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def describe_machine() -> str:
    """One line for manifests and model cards, e.g. ``AMD EPYC, x86_64, 2 cores (avx2, avx512_vnni)``."""
    m = machine()
    flags = ", ".join(f for f, on in m["flags"].items() if on)
    return f"{m['cpu']}, {m['arch']}, {m['cores']} cores" + (f" ({flags})" if flags else "")


def embed_manifest(path: Path, manifest: Manifest) -> None:
    """Store ``manifest`` as JSON in the ONNX file's ``metadata_props``."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props[METADATA_KEY] = manifest.to_json()
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))
