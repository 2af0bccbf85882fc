"""MODEL_CARD.md from a bundle's manifest: what it is, how it was made, how well it did, and what it is not."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from asinfer.engine.bundle import Manifest, ParityRecord, read_manifest


def write_card(bundle: Path, total_wall_s: float | None = None) -> Path:
    """Write ``bundle/MODEL_CARD.md`` from ``bundle/manifest.json``; returns its path."""
    bundle = Path(bundle)
    m = read_manifest(bundle / "manifest.json")
    t = m.training
    test = m.metrics.get("test", {})
    cm = test.get("confusion_matrix", {})
    lines = [
        f"# Model card: {m.name} {m.version}",
        "",
        "> **Trained on synthetic phantoms only. Not a diagnostic device; no clinical validity.**"
        if m.synthetic_training_data else f"> {m.notice}",
        "",
        "## What it is",
        f"{m.description} Input: uint8 grey `[N, {m.input.height}, {m.input.width}, 1]` after the engine's "
        "preprocessing (CLAHE clip 2.0, 8x8 tiles, area resize); output: probability of "
        f"'{m.labels[1]}' per slice; decision threshold {m.threshold:.4f} (chosen on validation data).",
        "",
        "## Training data",
        f"- source: `{t.get('data', '?')}` ({'synthetic sacroiliac-joint MRI phantoms, trainer.phantoms' if m.synthetic_training_data else 'user data'})",
        f"- splits (by patient: {t.get('splits', {}).get('by_patient')}): "
        + ", ".join(f"{k} {v['slices']} slices / {v['patients']} patients / {v['positive_slices']} positive"
                    for k, v in t.get("splits", {}).items() if isinstance(v, dict)),
        f"- recipe: {_recipe(t.get('config', {}))}",
        f"- epochs run: {t.get('epochs_run')}; training wall time: {_hours(t.get('wall_time_s'))} on {t.get('machine', '?')}"
        + (f"; whole reproduction (data, training, conversion): {_hours(total_wall_s)}" if total_wall_s else ""),
        "",
        "## Held-out test metrics (patients never seen in training)",
        "| accuracy | AUC | precision | recall | F1 | specificity | TN | FP | FN | TP |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {test.get('accuracy')} | {test.get('auc')} | {test.get('precision')} | {test.get('recall')} | "
        f"{test.get('f1')} | {test.get('specificity')} | {cm.get('tn')} | {cm.get('fp')} | {cm.get('fn')} | {cm.get('tp')} |",
        "",
        *_series_section(m),
        *_evidence_section(m),
        *_conditions_section(m),
        *_stability_section(m),
        *_parity_section(m),
    ]
    lines += [
        "",
        "## Reproduce",
        "```bash",
        f"python -m asinfer.trainer.demo --config {bundle.as_posix()}/train_config.json",
        "```",
        "",
        "## Limits",
        "- The phantoms are cartoons of STIR sacroiliac-joint MRI; performance on them says nothing about patients.",
        "- Series decisions come from slice probabilities by a fitted rule; on phantoms they say nothing about patients.",
        "",
        f"Tools: {json.dumps(m.tools)}",
        "",
    ]
    path = bundle / "MODEL_CARD.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# What each parity data file holds (the record's settings name the file).
_PARITY_DATA = {"parity.npz": "training slices not calibrated on, validation and test; at most 1,000",
                "holdout.npz": "the test split, in runs older than parity.npz"}


def _parity_section(m: Manifest) -> list[str]:
    """The artifacts and each format's parity record: numbers, 95 % intervals and verdict."""
    sources = sorted({str(p.settings.get("parity_data", "holdout.npz")) for p in m.parity.values()})
    lines = [
        "## Artifacts and parity with Keras",
        "Parity is measured against the Keras model on slices not used for int8 calibration ("
        + "; ".join(f"{s}: {_PARITY_DATA.get(s, 'as recorded')}" for s in sources) + "). A limit fails only "
        "when the value is outside it and its 95 % interval (Wilson for agreement, paired bootstrap for dAUC) "
        "lies wholly outside too; otherwise it passes as *within noise*.",
        "",
        "| format | file | MB | n | max abs dp | label agreement (95 %) | AUC | dAUC (95 %) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    files = {a.format: a for a in m.artifacts}
    for fmt, p in m.parity.items():
        lines.append(f"| {fmt} | {_file_cells(files.get(fmt), p)} | {p.n} | {_num(p.max_abs_dp)} | "
                     f"{_with_interval(p.agreement, p.agreement_interval)} | {_num(p.auc)} | "
                     f"{_with_interval(p.dauc, p.dauc_interval)} | {verdict_text(p)} |")
    return lines


def _file_cells(art, record: ParityRecord) -> str:
    """The file and MB cells: the artifact, or why there is none."""
    if art is not None:
        return f"{art.file} | {art.bytes / 1e6:.1f}"
    return "(not written: failed parity) |" if record.passed is False else "(not shipped; reproducible) |"


def verdict_text(record: ParityRecord) -> str:
    """``passed``, ``passed (within noise: agreement)``, ``FAILS: abs_dauc`` or ``not judged``."""
    if record.verdict is None:
        return "not judged"
    if not record.verdict.passed:
        return "FAILS: " + ", ".join(c.name for c in record.verdict.checks if not c.passed)
    noisy = [c.name for c in record.verdict.checks if c.outcome == "within noise"]
    return f"passed (within noise: {', '.join(noisy)})" if noisy else "passed"


def interval_text(interval: tuple[float, float] | None, spec: str = ".4f") -> str:
    """``[low, high]``, or empty when there is none."""
    return "" if interval is None else f"[{format(interval[0], spec)}, {format(interval[1], spec)}]"


def _with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    """A value and its 95 % interval in one cell."""
    return f"{_num(value)} {interval_text(interval)}".strip()


def _series_section(m) -> list[str]:
    """The series rule and the series metrics beside the slice ones (nothing when no rule was fitted)."""
    rule = m.series_rule
    if rule is None:
        return ["## Series decision", "No series rule was fitted: the engine decides series with the consecutive "
                "rule at the slice threshold.", ""]
    single = "none" if rule.single_slice_threshold is None else f"{rule.single_slice_threshold:.4f}"
    lines = ["## Series decision (one patient's series)",
             f"Rule: **{rule.kind}**, threshold {rule.threshold:.4f}, single-slice threshold {single}; "
             f"fitted on {rule.fitted_on}.", "",
             "| split | series | AUC | accuracy | sensitivity | specificity | TN | FP | FN | TP |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for split in ("validation", "test"):
        s = m.metrics.get(f"series_{split}")
        if s:
            cm = s.get("confusion_matrix", {})
            lines.append(f"| {split} | {s.get('n')} | {s.get('auc')} | {s.get('accuracy')} | {s.get('sensitivity')} | "
                         f"{s.get('specificity')} | {cm.get('tn')} | {cm.get('fp')} | {cm.get('fn')} | {cm.get('tp')} |")
    if rule.compared:
        lines += ["", "Rules compared on validation (Youden J in sample, out of bag, AUC): " + "; ".join(
            f"{name} {c.get('youden_j')}, {c.get('out_of_bag_j', '-')}, {c.get('auc')}"
            for name, c in rule.compared.items())]
    return [*lines, ""]


POINTING_TARGET = 0.80  # issue 12: the CAM peak on the lesion on >= 80 % of true-positive lesion slices


def _evidence_section(m) -> list[str]:
    """Where the Grad-CAM points (the pointing game of ``python -m asinfer.benchmarks.evidence``)."""
    game = m.metrics.get("pointing_game")
    if not game:
        return []
    share, interval = game.get("share"), game.get("interval_95")
    verdict = "meets" if share is not None and share >= POINTING_TARGET else "**misses**"
    return ["## Evidence (Grad-CAM)",
            f"Pointing game: the CAM's peak falls on the lesion on {game.get('hits')} of {game.get('slices')} "
            f"true-positive lesion slices, {_with_interval(share, tuple(interval) if interval else None)} "
            f"({game.get('rule')}; {game.get('data')}). This {verdict} the target of {POINTING_TARGET:.2f}: "
            + ("the model looks at the lesion." if verdict == "meets" else
               "where the peak falls is often not the lesion, so read the overlays as where the model looked, "
               "not where the disease is."),
            "Reproduce: `python -m asinfer.benchmarks.evidence --only pointing "
            f"--patients {game.get('patients', 80)} --seed {game.get('seed', 4242)} --record`.", ""]


def _conditions_section(m) -> list[str]:
    """The per-condition table of ``python -m asinfer.trainer.evaluate --record``, and its targets."""
    result = m.metrics.get("conditions")
    if not result:
        return []
    lines = ["## Per condition (fresh phantoms, patients resampled for the 95 % intervals)",
             f"{result.get('patients')} patients x {result.get('slices_per_series')} slices per condition, half "
             f"positive; {result.get('artifact')} at slice threshold {_num(result.get('threshold'))} and series rule "
             f"{result.get('series_rule', {}).get('kind')} at {_num(result.get('series_rule', {}).get('threshold'))}.",
             *_validation_line(result.get("validation")),
             *_mirror_line(result.get("conditions", [])),
             "",
             "| condition | group | slice AUC | sens. | spec. | series AUC | sens. | spec. | flip changes | int8 = Keras |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result.get("conditions", []):
        sl, se = row.get("slice", {}), row.get("series", {})
        ci = lambda d: tuple(d["auc_95"]) if d.get("auc_95") else None
        lines.append(f"| {row.get('name')} | {row.get('group')} | {_with_interval(sl.get('auc'), ci(sl))} | "
                     f"{_num(sl.get('sensitivity'))} | {_num(sl.get('specificity'))} | "
                     f"{_with_interval(se.get('auc'), ci(se))} | {_num(se.get('sensitivity'))} | "
                     f"{_num(se.get('specificity'))} | {_num(row.get('flip_changed'))} | {_num(row.get('agreement'))} |")
    lines += _brightening_table(result.get("conditions", []))
    lines += ["", "| target | limit | worst | where | met |", "|---|---|---|---|---|"]
    for t in result.get("targets", []):
        met = {True: "yes", False: "**no**", None: "not measured"}[t.get("met")]
        lines.append(f"| {t.get('target')} | {t.get('limit')} | {_num(t.get('worst'))} | {t.get('where') or ''} | {met} |")
    lines += _chance_line(result.get("drift_by_chance"))
    return [*lines, "", "Reproduce: `python -m asinfer.trainer.evaluate BUNDLE --keras RUN/model.keras --record`.", ""]


def _brightening_table(rows: list[dict]) -> list[str]:
    """Slice sensitivity by lesion brightening per condition: a source whose lesions are as bright but found
    less often shows a model that learned how one generator draws a lesion."""
    rows = [row for row in rows if row.get("lesion_sensitivity")]
    if not rows:
        return []
    bins = [b["brighter"] for b in rows[0]["lesion_sensitivity"]]
    lines = ["", "Slice sensitivity by how much brighter a lesion is than its surroundings (lesion mean over the "
             "median of a 4-px band around it, minus 1; lesion slices in brackets):", "",
             "| condition | " + " | ".join(bins) + " |", "|---|" + "---|" * len(bins)]
    for row in rows:
        cells = [f"{_num(b['sensitivity'])} ({b['lesion_slices']})" for b in row["lesion_sensitivity"]]
        lines.append(f"| {row.get('name')} | " + " | ".join(cells) + " |")
    return lines


def _chance_line(chance: dict | None) -> list[str]:
    """What the drift targets can show at these sample sizes (``evaluate.drift_by_chance``)."""
    if not chance or "slice" not in chance:
        return []
    sl, se = chance["slice"], chance["series"]
    return ["", f"Drift targets and sampling: a model whose sensitivity and specificity carried over exactly "
                f"would keep both within {chance['limit']} of validation on one condition with probability "
                f"{_num(sl['one_condition_median'])} (slices) and {_num(se['one_condition_median'])} (series), "
                f"and on every condition with probability {sl['every_condition']:.2g} and {se['every_condition']:.2g} "
                "(binomial draws of the validation and condition counts; slices of a patient are correlated, "
                "so the real chances are lower). A drift beyond the limit here is not by itself evidence "
                "that a threshold failed to transfer."]


def _mirror_line(rows: list[dict]) -> list[str]:
    """With test-time mirroring a mirror changes no label by construction; say what the network alone does."""
    alone = [row["flip_changed_network"] for row in rows if row.get("flip_changed_network") is not None]
    if not alone:
        return []
    return [f"Each slice's probability is the mean over the slice and its left-right mirror "
            f"(`output.mirror_average`), so a mirror cannot change a label; the network alone changes "
            f"{_num(min(alone))}-{_num(max(alone))} of the labels under a mirror (median {_num(statistics.median(alone))})."]


def _stability_section(m) -> list[str]:
    """How far the fitted thresholds move when the validation patients are drawn again (series --stability)."""
    st = m.metrics.get("threshold_stability")
    if not st:
        return []
    span = lambda d: "-" if not d or not d.get("interval_95") else f"{_num(d['interval_95'][0])}-{_num(d['interval_95'][1])}"
    sl, se = st.get("slice_threshold", {}), st.get("series_threshold", {})
    lines = [f"## Threshold stability ({st.get('reps')} bootstrap draws of the {st.get('validation_patients')} "
             "validation patients, every fit repeated)", "",
             "| threshold | shipped | median of refits | 95 % range |", "|---|---|---|---|",
             f"| slice | {_num(sl.get('shipped'))} | {_num(sl.get('median'))} | {span(sl)} |",
             f"| series ({se.get('kind')}) | {_num(se.get('shipped'))} | {_num(se.get('median'))} | {span(se)} |", ""]
    chosen = ", ".join(f"{k} {v:.0%}" for k, v in st.get("series_rule_chosen", {}).items())
    lines.append(f"Series rule a refit would choose: {chosen}.")
    for level in ("slice", "series"):
        rates = st.get(f"test_{level}_at_refits")
        if rates:
            lines.append(f"Test {level} sensitivity at the refitted thresholds: {span(rates.get('sensitivity'))}; "
                         f"specificity: {span(rates.get('specificity'))} (95 % ranges).")
    return [*lines, "", "Reproduce: `python -m asinfer.trainer.series BUNDLE --stability`.", ""]


def _validation_line(validation: dict | None) -> list[str]:
    if not validation:
        return []
    sl, se = validation.get("slice", {}), validation.get("series", {})
    return [f"Validation values the thresholds were fitted to (drift targets compare against them): slice "
            f"sensitivity {_num(sl.get('sensitivity'))}, specificity {_num(sl.get('specificity'))}; series "
            f"sensitivity {_num(se.get('sensitivity'))}, specificity {_num(se.get('specificity'))}."]


def _recipe(cfg: dict) -> str:
    keys = ("synth", "image_size", "weights", "batch_norm", "warmup_epochs", "warmup_size", "warmup_freeze_blocks",
            "warmup_synth", "freeze_blocks", "epochs", "batch_size", "learning_rate", "learning_rate_after_warmup",
            "bn_reestimate_batches", "patience", "rotation", "shift", "zoom", "flip", "gamma", "contrast", "noise",
            "blur", "bias", "preprocessing", "mirror_average", "mirror_tied", "seed")
    # Knobs left at their off value (0, None, {}) are v1 defaults; naming them would only add noise.
    return ", ".join(f"{k} {cfg[k]}" for k in keys if k in cfg and cfg[k] not in (None, {}, 0, 0.0)
                     or k in ("warmup_epochs", "freeze_blocks", "seed") and k in cfg)


def _hours(seconds) -> str:
    if not seconds:
        return "?"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _num(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2e}" if isinstance(value, float) and 0 < abs(value) < 1e-3 else str(round(value, 4) if isinstance(value, float) else value)
