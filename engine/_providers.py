"""Execution providers: the one table, and building ONNX Runtime sessions."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ._errors import ModelError
from ._formats import invalid_choice


@dataclass(frozen=True)
class Provider:
    """A place to run a model."""

    name: str  # what users type: cpu, cuda
    ort_name: str  # ONNX Runtime execution provider
    formats: tuple[str, ...]  # artifact preference, best first
    install: str  # how to get it when missing


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("cpu", "CPUExecutionProvider", ("onnx-int8", "onnx-fp32", "onnx-fp16"),
                 "pip install asinfer"),
        Provider("cuda", "CUDAExecutionProvider", ("onnx-fp16", "onnx-fp32", "onnx-int8"),
                 "pip install 'asinfer[gpu]' (onnxruntime-gpu, in place of onnxruntime) and an NVIDIA driver"),
    )
}
CHOICES = ("auto", *PROVIDERS)


@dataclass(frozen=True)
class SessionConfig:
    """ONNX Runtime settings; the defaults were measured on a 2-core CPU.

    Spinning threads burn the cores that preprocessing and the caller need,
    and bought nothing measurable for batched VGG16 inference (README, Tuning).
    """

    threads: int | None = None  # intra-op threads; None = os.cpu_count()
    spinning: bool = False
    optimization: str = "all"  # basic | extended | all


def available_providers() -> list[str]:
    """Names of providers this onnxruntime build offers (cuda may lack a device)."""
    import onnxruntime as ort

    built = set(ort.get_available_providers())
    return [p.name for p in PROVIDERS.values() if p.ort_name in built]


def resolve(requested: str) -> list[Provider]:
    """Candidate providers, best first, for ``auto``, ``cpu`` or ``cuda``.

    Raises:
        ValueError: unknown name.
        ModelError: ``cuda`` asked for but this onnxruntime build has no CUDA.
    """
    if requested not in CHOICES:
        raise ValueError(invalid_choice("provider", requested, CHOICES))
    have = available_providers()
    if requested == "auto":
        return [PROVIDERS[n] for n in ("cuda", "cpu") if n in have]
    if requested not in have:
        raise ModelError(
            f"provider {requested!r} is not available in this onnxruntime build "
            f"(available: {', '.join(have)}); install: {PROVIDERS[requested].install}"
        )
    return [PROVIDERS[requested]]


def create_session(model: str | bytes, provider: Provider, config: SessionConfig = SessionConfig()):
    """An InferenceSession on ``provider``, or None when the provider failed to start.

    ONNX Runtime falls back to CPU silently when CUDA cannot start (no device,
    missing libraries); we check which provider it really registered.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = _OPT_LEVELS[config.optimization](ort)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.spinning else "0")
    opts.log_severity_level = 3  # errors only: no fallback chatter on stderr
    names = [provider.ort_name] + ([] if provider.name == "cpu" else ["CPUExecutionProvider"])
    try:
        session = ort.InferenceSession(model, sess_options=opts, providers=names)
    except Exception as exc:  # onnxruntime raises its own exception types
        if provider.name != "cpu":
            return None
        raise ModelError(f"ONNX Runtime could not load the model: {' '.join(str(exc).split())[:300]}") from None
    if session.get_providers()[0] != provider.ort_name:
        return None
    return session


_OPT_LEVELS = {
    "basic": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
