"""Rendering a :class:`~asinfer.benchmarks.report.BenchReport`: the text table, markdown, and the img/s chart."""

from __future__ import annotations

from pathlib import Path

from .report import OK, BenchReport, Row, Speed, Stage

_MARK = {True: "pass", False: "FAIL", None: "n/a"}


# --- cells ---------------------------------------------------------------------------------------------------


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _speed(entry: Speed | None, spread: bool) -> str:
    if entry is None:
        return "-"
    text = f"{entry.median:.1f}"
    return f"{text} ({entry.min:.1f}–{entry.max:.1f})" if spread else text


def headers(batch_sizes) -> list[str]:
    return (["format", "status", "size MB", "AUC", "agree", "max|Δp|", "p50 ms", "p95 ms"]
            + [f"img/s b{b}" for b in batch_sizes] + ["peak RSS MB", "cold start s"])


def _status(row: Row) -> str:
    return f"{row.status}, speed only" if row.speed_only and row.ok else row.status


def cells(row: Row, batch_sizes, spread: bool = False) -> list[str]:
    """One format row as strings; ``spread`` adds min–max to the img/s cells."""
    p, lat = row.parity, row.latency_ms
    return ([row.format, _status(row), _num(row.size_mb, ".1f"), _num(row.auc, ".4f"),
             _num(p and p.agreement, ".4f"), _num(p and p.max_abs_dp, ".2e"), _num(lat and lat.p50, ".1f"),
             _num(lat and lat.p95, ".1f")]
            + [_speed(row.speed(b), spread) for b in batch_sizes]
            + [_num(row.peak_rss_mb, ".0f"), _num(row.cold_start_s, ".2f")])


def _pipeline_cells(stage: Stage, spread: bool) -> list[str]:
    what = stage.what + (f" ({stage.artifact})" if stage.artifact else "")
    return [stage.name, stage.status, _speed(stage.img_per_s, spread), what]


# --- text ----------------------------------------------------------------------------------------------------


def _grid(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return [line(head), "  ".join("-" * w for w in widths), *map(line, body)]


def text(report: BenchReport) -> str:
    """The report for people: format table, pipeline rows, notes, gates."""
    sizes = report.settings.batch_sizes
    lines = _grid(headers(sizes), [cells(r, sizes) for r in report.rows])
    lines += ["", *_grid(["pipeline", "status", "img/s", "what"],
                         [_pipeline_cells(s, False) for s in report.pipeline])]
    if report.preprocess_share is not None:
        lines.append(f"preprocessing alone is {report.preprocess_share:.1%} of the end-to-end time")
    lines += ["", *notes(report)]
    lines += ["", f"gates (speed ratios at batch {report.settings.gate_batch}):", *_gate_lines(report)]
    return "\n".join(lines) + "\n"


def notes(report: BenchReport) -> list[str]:
    """Why rows were skipped or failed, caveats on ok rows, and how the numbers were taken."""
    s = report.settings
    out = [f"- {r.format}: {r.status}: {r.reason}" for r in report.rows if r.reason]
    out += [f"- {r.format}: {r.note}" for r in report.rows if r.note]
    out += [f"- {st.name}: {st.status}: {st.reason}" for st in report.pipeline if st.reason]
    out.append(f"- img/s: median of {s.rounds} interleaved rounds per batch size (batch 1: {s.rounds_batch1}), "
               f"{s.threads} threads; ratios within this run are gated, absolute times never")
    out.append(f"- data: {report.data.description}")
    out.append(f"- agree, max|Δp|, ΔAUC: {_reference(report)}")
    return out


def _reference(report: BenchReport) -> str:
    ref = report.reference
    if ref is None:
        return "not measured: no reference format (Keras, fp32 or fp16) ran; AUC only"
    if ref == "keras":
        return "against Keras, the prototype's runtime"
    standin = any(r.format == "keras" and r.speed_only for r in report.rows)
    keras = ("its keras row is a speed-only stand-in with random weights" if standin else "Keras is not in it")
    return (f"against {ref}, the most exact format this model has: {keras} (the converter's parity "
            f"against Keras is in its manifest); bench the training run folder to compare with Keras itself")


def _gate_lines(report: BenchReport) -> list[str]:
    return [f"  {_MARK[g.passed]:<4}  {g.name}: {g.detail}" for g in report.gates] or ["  (none)"]


# --- markdown ------------------------------------------------------------------------------------------------


def _md_table(head: list[str], body: list[list[str]]) -> list[str]:
    row = lambda cells: "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"  # noqa: E731
    return [row(head), "|" + "---|" * len(head), *map(row, body)]


def markdown(report: BenchReport, chart: str | None, chart_note: str = "no chart") -> str:
    """``docs/benchmarks.md``: results, pipeline, parity, gates, the command and the machine.

    ``chart`` is the chart's file name beside the markdown, or None (then ``chart_note`` says why).
    """
    sizes, m = report.settings.batch_sizes, report.machine
    flags = ", ".join(f for f, on in m.flags.items() if on) or "none of " + ", ".join(m.flags)
    out = [f"# asinfer bench: {report.model.name} {report.model.version}", "",
           f"Generated by `{report.command}` on {report.date}.", "",
           f"Machine: {m.cpu}, {m.cores} cores, flags {flags}; {m.os}, Python {m.python}.", "",
           "## Formats", "", *_md_table(headers(sizes), [cells(r, sizes, spread=True) for r in report.rows]), ""]
    out += [f"![img/s per format]({chart})" if chart else f"_{chart_note}_", ""]
    out += ["## Pipeline", "", *_md_table(["pipeline", "status", "img/s", "what"],
                                          [_pipeline_cells(s, True) for s in report.pipeline]), ""]
    if report.preprocess_share is not None:
        out += [f"Preprocessing alone is {report.preprocess_share:.1%} of the end-to-end time.", ""]
    ref = {"keras": "Keras", None: "a reference"}.get(report.reference, report.reference)
    out += [f"## Parity against {ref}", "", *_md_table(*_parity_table(report)), ""]
    out += ["## Gates", "", *_md_table(["gate", "kind", "result", "detail"], _gate_rows(report)), ""]
    out += ["## Notes", "", *notes(report), "", "## Versions", "",
            ", ".join(f"{k} {v}" for k, v in report.versions.items()), ""]
    return "\n".join(out)


def _parity_table(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    head = ["format", "n", "max|Δp|", "mean|Δp|", "agreement", "AUC", "ΔAUC", "verdict", "tolerance"]
    body = []
    for r in report.rows:
        p = r.parity
        if not r.ok or p is None:
            continue
        tol = ", ".join(f"{k} {v:g}" for k, v in r.tolerance.limits().items())
        verdict = "-" if p.verdict is None else ("pass" if p.verdict.passed else "FAIL")
        body.append([r.format, str(p.n), _num(p.max_abs_dp, ".2e"), _num(p.mean_abs_dp, ".2e"),
                     _num(p.agreement, ".4f"), _num(p.auc, ".4f"), _num(p.dauc, "+.4f"), verdict, tol])
    return head, body


def _gate_rows(report: BenchReport) -> list[list[str]]:
    mark = {**_MARK, False: "**FAIL**"}
    return [[g.name, g.kind, mark[g.passed], g.detail] for g in report.gates]


def chart(report: BenchReport, path: Path) -> str | None:
    """Bar chart of img/s per format and batch size at ``path``; returns why not when it cannot draw one."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): chart skipped"
    sizes = report.settings.batch_sizes
    rows = [r for r in report.rows if r.status == OK]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * max(1, len(rows)) * len(sizes) ** 0.5))
    height = 0.8 / len(sizes)
    for k, b in enumerate(sizes):
        values = [r.speed(b).median if r.speed(b) else 0 for r in rows]
        ax.barh([i + k * height for i in range(len(rows))], values, height, label=f"batch {b}")
    labels = [f"{r.format} (speed only)" if r.speed_only else r.format for r in rows]
    ax.set_yticks([i + height * (len(sizes) - 1) / 2 for i in range(len(rows))], labels)
    ax.invert_yaxis()
    ax.set_xlabel("images / s (median of interleaved rounds)")
    ax.set_title(f"{report.model.name} on {report.machine.cpu}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
