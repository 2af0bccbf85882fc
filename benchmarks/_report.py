"""Rendering a benchmark report: the text table, markdown with a bar chart, JSON, and the machine it ran on."""

from __future__ import annotations

from pathlib import Path

VERSIONS = ("asinfer", "numpy", "onnxruntime", "opencv-python-headless", "pydicom", "tensorflow", "keras",
            "ai-edge-litert", "scikit-learn")


def machine() -> dict:
    """CPU model, the SIMD flags that decide int8 speed, cores, OS and Python."""
    from asinfer.trainer.bundle import machine as _machine

    return _machine()


def versions() -> dict[str, str]:
    """Installed versions of the packages that decide the numbers."""
    from asinfer.trainer.bundle import tool_versions

    return tool_versions(VERSIONS)


# --- cells ---------------------------------------------------------------------------------------------------


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _speed(entry: dict | None, spread: bool) -> str:
    if not entry:
        return "-"
    text = f"{entry['median']:.1f}"
    return f"{text} ({entry['min']:.1f}–{entry['max']:.1f})" if spread else text


def headers(batch_sizes) -> list[str]:
    return (["format", "status", "size MB", "AUC", "agree", "max|Δp|", "p50 ms", "p95 ms"]
            + [f"img/s b{b}" for b in batch_sizes] + ["peak RSS MB", "cold start s"])


def cells(row: dict, batch_sizes, spread: bool = False) -> list[str]:
    """One format row as strings; ``spread`` adds min–max to the img/s cells."""
    p, lat = row["parity"], row["latency_ms"] or {}
    return ([row["format"], row["status"], _num(row["size_mb"], ".1f"), _num(p.get("auc"), ".4f"),
             _num(p.get("agreement"), ".4f"), _num(p.get("max_abs_dp"), ".2e"), _num(lat.get("p50"), ".1f"),
             _num(lat.get("p95"), ".1f")]
            + [_speed(row["img_per_s"].get(str(b)), spread) for b in batch_sizes]
            + [_num(row["peak_rss_mb"], ".0f"), _num(row["cold_start_s"], ".2f")])


def _pipeline_cells(stage: dict, spread: bool) -> list[str]:
    what = stage["what"] + (f" ({stage['artifact']})" if stage.get("artifact") else "")
    return [stage["name"], stage["status"], _speed(stage["img_per_s"], spread), what]


# --- text ----------------------------------------------------------------------------------------------------


def _grid(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [line(head), "  ".join("-" * w for w in widths), *map(line, body)]


def text(report: dict) -> str:
    """The report for people: format table, pipeline rows, notes, gates."""
    sizes = report["settings"]["batch_sizes"]
    lines = _grid(headers(sizes), [cells(r, sizes) for r in report["rows"]])
    lines += ["", *_grid(["pipeline", "status", "img/s", "what"],
                         [_pipeline_cells(s, False) for s in report["pipeline"]])]
    if report.get("preprocess_share") is not None:
        lines.append(f"preprocessing alone is {report['preprocess_share']:.1%} of the end-to-end time")
    lines += ["", *notes(report)]
    lines += ["", f"gates (speed ratios at batch {report['settings']['gate_batch']}):", *_gate_lines(report)]
    return "\n".join(lines) + "\n"


def notes(report: dict) -> list[str]:
    """Why rows were skipped or failed, and how the numbers were taken."""
    s = report["settings"]
    out = [f"- {r['format']}: {r['status']}: {r['reason']}" for r in report["rows"] if r["reason"]]
    out += [f"- {st['name']}: {st['status']}: {st['reason']}" for st in report["pipeline"] if st["reason"]]
    out.append(f"- img/s: median of {s['rounds']} interleaved rounds per batch size (batch 1: {s['rounds_batch1']}), "
               f"{s['threads']} threads; ratios within this run are gated, absolute times never")
    out.append(f"- data: {report['data']['description']}")
    out.append(f"- agree, max|Δp|, ΔAUC: {_reference(report)}")
    return out


def _reference(report: dict) -> str:
    ref = report.get("reference")
    if ref is None:
        return "not measured: no reference format (Keras, fp32 or fp16) ran; AUC only"
    if ref == "keras":
        return "against Keras, the prototype's runtime"
    return (f"against {ref}, the most exact format this model has: Keras is not in it (the converter's parity "
            f"against Keras is in its manifest); bench the training run folder to compare with Keras itself")


def _gate_lines(report: dict) -> list[str]:
    mark = {True: "pass", False: "FAIL", None: "n/a "}
    return [f"  {mark[g['passed']]}  {g['name']}: {g['detail']}" for g in report["gates"]] or ["  (none)"]


# --- markdown ------------------------------------------------------------------------------------------------


def _md_table(head: list[str], body: list[list[str]]) -> list[str]:
    row = lambda cells: "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return [row(head), "|" + "---|" * len(head), *map(row, body)]


def markdown(report: dict, chart: str | None) -> str:
    """``docs/benchmarks.md``: results, pipeline, parity, gates, the command and the machine."""
    sizes, m = report["settings"]["batch_sizes"], report["machine"]
    flags = ", ".join(f for f, on in m["flags"].items() if on) or "none of " + ", ".join(m["flags"])
    out = [f"# asinfer bench: {report['model']['name']} {report['model']['version']}", "",
           f"Generated by `{report['command']}` on {report['date']}.", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, flags {flags}; {m['os']}, Python {m['python']}.", "",
           "## Formats", "", *_md_table(headers(sizes), [cells(r, sizes, spread=True) for r in report["rows"]]), ""]
    out += [f"![img/s per format]({chart})" if chart else f"_{report.get('chart_note', 'no chart')}_", ""]
    out += ["## Pipeline", "", *_md_table(["pipeline", "status", "img/s", "what"],
                                          [_pipeline_cells(s, True) for s in report["pipeline"]]), ""]
    if report.get("preprocess_share") is not None:
        out += [f"Preprocessing alone is {report['preprocess_share']:.1%} of the end-to-end time.", ""]
    ref = {"keras": "Keras", None: "a reference"}.get(report.get("reference"), report.get("reference"))
    out += [f"## Parity against {ref}", "", *_md_table(*_parity_table(report)), ""]
    out += ["## Gates", "", *_md_table(["gate", "kind", "result", "detail"], _gate_rows(report)), ""]
    out += ["## Notes", "", *notes(report), "", "## Versions", "",
            ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    return "\n".join(out)


def _parity_table(report: dict) -> tuple[list[str], list[list[str]]]:
    head = ["format", "n", "max|Δp|", "mean|Δp|", "agreement", "AUC", "ΔAUC", "tolerance"]
    body = []
    for r in report["rows"]:
        p = r["parity"]
        if r["status"] != "ok" or r["format"] == report.get("reference") or "agreement" not in p:
            continue
        tol = ", ".join(f"{k} {v:g}" for k, v in r["tolerance"].items() if v is not None)
        body.append([r["format"], str(p["n"]), _num(p["max_abs_dp"], ".2e"), _num(p["mean_abs_dp"], ".2e"),
                     _num(p["agreement"], ".4f"), _num(p["auc"], ".4f"), _num(p["dauc"], "+.4f"), tol])
    return head, body


def _gate_rows(report: dict) -> list[list[str]]:
    mark = {True: "pass", False: "**FAIL**", None: "n/a"}
    return [[g["name"], g["kind"], mark[g["passed"]], g["detail"]] for g in report["gates"]]


def chart(report: dict, path: Path) -> str | None:
    """Bar chart of img/s per format and batch size at ``path``; returns why not when it cannot draw one."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): chart skipped"
    sizes = report["settings"]["batch_sizes"]
    rows = [r for r in report["rows"] if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * max(1, len(rows)) * len(sizes) ** 0.5))
    height = 0.8 / len(sizes)
    for k, b in enumerate(sizes):
        values = [(r["img_per_s"].get(str(b)) or {}).get("median", 0) for r in rows]
        ax.barh([i + k * height for i in range(len(rows))], values, height, label=f"batch {b}")
    ax.set_yticks([i + height * (len(sizes) - 1) / 2 for i in range(len(rows))], [r["format"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("images / s (median of interleaved rounds)")
    ax.set_title(f"{report['model']['name']} on {report['machine']['cpu']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
