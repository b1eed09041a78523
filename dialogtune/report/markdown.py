"""Report data -> Markdown (report.md), and the ROUGE table the CLI prints after `run` and `demo`."""

from __future__ import annotations

from typing import Any

from dialogtune.faithfulness import Fact, mark_markdown
from dialogtune.metrics import METRICS
from dialogtune.report.analysis import HEADLINE
from dialogtune.report.formatting import (
    LEGEND,
    breakdown_rows,
    comparison_text,
    faithfulness_comparison_text,
    faithfulness_rows,
    fmt,
    human_bytes,
    method_label,
    not_compared_text,
    score_cell,
    scored_on,
    scored_on_text,
)


def rouge_table(report: dict[str, Any]) -> str:
    """The markdown ROUGE table, also printed at the end of `run` and `demo`."""
    lines = [
        "| run | method | " + " | ".join(METRICS) + " | examples |",
        "|---|---|" + "---|" * len(METRICS) + "---|",
    ]
    for r in report["runs"]:
        cells = [f"{r['rouge'][m]:.2f} [{r['rouge_ci'][m][0]:.1f}, {r['rouge_ci'][m][1]:.1f}]" for m in METRICS]
        lines.append(f"| {r['name']} | {method_label(r, report)} | " + " | ".join(cells) + f" | {r['num_examples']} |")
    return "\n".join(lines)


def _breakdown_table(report: dict[str, Any], key: str, label_key: str, heading: str, label: str, empty: str) -> list[str]:
    """One row per topic or length bucket (matched by name across runs), one column per run."""
    names = [r["name"] for r in report["runs"]]
    out = ["", heading, "", f"| {label} | " + " | ".join(names) + " | dialogues |", "|---|" + "---|" * (len(names) + 1)]
    rows = breakdown_rows(report, key, label_key)
    for name, by_run in rows:
        cells = " | ".join(score_cell(by_run.get(n)) for n in names)
        counts = " / ".join(dict.fromkeys(str(row["count"]) for row in by_run.values()))
        out.append(f"| {name} | {cells} | {counts} |")
    return out if rows else out[:3] + [empty]


# Where the protocol is shown: what it means, and how it relates to published (row-averaged) tables.
PROTOCOLS_NOTE = (
    "ROUGE protocols: `mean` averages each dialogue's references, `max` takes the best one, `field:NAME` scores one named "
    "reference. Published DialogSum tables average over the hub's 1,500 (prediction, reference) rows: with one prediction "
    "per dialogue and three references each that equals `mean`; `dialogtune score --protocol rows` scores such per-row "
    "files (docs/scoring.md)."
)


def _header(report: dict[str, Any]) -> list[str]:
    common, differing = scored_on(report)
    line = scored_on_text(common) or "no scoring setting is shared"
    line = line[0].upper() + line[1:]
    out = [f"{line} (F-measure in points, 95% bootstrap CI in brackets).", PROTOCOLS_NOTE]
    if differing:
        out += ["", "The runs differ in what they were scored on:", ""]
        out += [f"- **{name}**: {scored_on_text(values)}" for name, values in differing.items()]
    return out


def _faithfulness(report: dict[str, Any]) -> list[str]:
    out = [
        "", "## Faithfulness (unsupported facts; see docs/faithfulness.md)", "",
        "Facts the dialogue does not support, per summary; the human row is each dialogue's first reference, the floor.", "",
        "| run | facts checked | unsupported per summary [CI] | share with ≥1 [CI] |", "|---|---|---|---|",
    ]
    out += [f"| {' | '.join(row)} |" for row in faithfulness_rows(report)]
    lines = [f"- **{title}**: {detail}" for title, detail in map(faithfulness_comparison_text, report["comparisons"])]
    return out + ([""] + lines if lines else [])


def _ci(entry: dict[str, Any] | None, digits: int = 2) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    return f"{entry['mean']:.{digits}f} [{entry['ci'][0]:.{digits}f}, {entry['ci'][1]:.{digits}f}]"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def human_rows(section: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per system of a human evaluation, strongest first (shared by the Markdown and HTML renderers)."""
    rows = []
    for s in section["systems"]:
        low, high = s["bradley_terry_ci"]
        rows.append((
            f"{s['name']} (hidden human reference)" if s.get("hidden") else s["name"],
            f"{s['bradley_terry']:+.2f} [{low:+.2f}, {high:+.2f}]", f"{s['wins']} / {s['ties']} / {s['losses']}",
            _ci(s["consistency"]), _ci(s["relevance"]), _share(s["marked_unsupported"]),
            fmt(s.get("rouge1"), 2), fmt(s.get("faithfulness_rate"), 3),
        ))
    return rows


HUMAN_HEADER = ("system", "Bradley–Terry [95% CI]", "wins / ties / losses", "consistency 1–5 [CI]", "relevance 1–5 [CI]",
                "marked unsupported", "ROUGE-1", "unsupported facts per summary")


def _alpha(name: str, a: dict[str, Any]) -> str:
    if a["alpha"] is None:
        return f"{name}: alpha undefined ({a['units']} units rated twice or more)"
    return f"{name}: alpha {a['alpha']:.2f} over {a['units']} units (observed agreement {_share(a['observed_agreement'])})"


def human_notes(section: dict[str, Any]) -> list[str]:
    """Pair counts, agreement and correlation as sentences (shared by the Markdown and HTML renderers)."""
    out = [f"{p['a']} vs {p['b']}: {p['a']} preferred {p['a_wins']}, tie {p['ties']}, {p['b']} preferred {p['b_wins']}"
           for p in section["pairs"] if p["n"]]
    ag = section["agreement"]
    out.append("Agreement, Krippendorff's alpha (ordinal): " + "; ".join(_alpha(k, ag[k]) for k in ("preference", "consistency", "relevance")))
    kappa = ag.get("cohen_kappa_preference")
    if kappa and kappa["kappa"] is not None:
        out.append(f"Cohen's kappa on the preference ({' and '.join(kappa['raters'])}, {kappa['units']} shared units): {kappa['kappa']:.2f}")
    system = section["correlation"]["system_level"]
    for key, label in (("rouge1", "ROUGE-1"), ("unsupported_rate", "unsupported facts per summary")):
        c = system[key]
        rho = "n/a" if c["spearman"] is None else f"{c['spearman']:+.2f}"
        r = "n/a" if c["pearson"] is None else f"{c['pearson']:+.2f}"
        out.append(f"Bradley–Terry strength vs {label}, across {c['n']} systems: Spearman {rho}, Pearson {r}")
    item = section["correlation"]["judgement_level"]
    for key, label in (("rouge1", "the higher ROUGE-1"), ("unsupported", "fewer unsupported facts")):
        c = item[key]
        if c["judgements"]:
            out.append(f"The preferred summary had {label} in {c['agree']} of {c['judgements']} decisive judgements "
                       f"where the two differed ({_share(c['share'])})")
    out += [f"In the study but not in this report: {', '.join(section['not_in_report'])}"] if section.get("not_in_report") else []
    out += [f"In this report but not in the study: {', '.join(section['not_in_study'])}"] if section.get("not_in_study") else []
    return out


def human_table(section: dict[str, Any]) -> str:
    """The human-evaluation table and notes as Markdown (also what `review-results` prints)."""
    raters = section["raters"] if isinstance(section["raters"], int) else len(section["raters"])
    lines = [f"{section['judgements']} judgements by {raters} raters on {section['items']} dialogues; "
             f"Bradley–Terry: {section['method']['bradley_terry']}.", "",
             "| " + " | ".join(HUMAN_HEADER) + " |", "|" + "---|" * len(HUMAN_HEADER)]
    lines += [f"| {' | '.join(row)} |" for row in human_rows(section)]
    return "\n".join(lines + [""] + [f"- {note}" for note in human_notes(section)])


def _marked(text: str, facts: list[dict[str, Any]]) -> str:
    return mark_markdown(text, [Fact(**f) for f in facts])


CURVE_HEADER = ("step", "train s", "train loss", "val loss", "val ROUGE-1", "val ROUGE-2", "val ROUGE-L", "unsupported per summary")


def curve_rows(curves: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per validation during training, the best marked (shared by the Markdown and HTML renderers)."""
    best = (curves.get("best") or {}).get("step")
    return [(f"{p['step']}{' (best)' if p['step'] == best else ''}", fmt(p["train_seconds"]), fmt(p["train_loss"], 3),
             fmt(p["loss"], 3), fmt(p["rouge1"], 2), fmt(p["rouge2"], 2), fmt(p["rougeL"], 2), fmt(p["unsupported_rate"], 3))
            for p in curves["validation"]]


def curve_note(curves: dict[str, Any]) -> str:
    """What validation cost and which step's weights the run kept, in one sentence."""
    train, spent = curves.get("train_seconds"), curves.get("validation_seconds")
    share = f" ({100 * spent / (train + spent):.0f}% of the two)" if train and spent else ""
    weights = curves.get("weights") or {}
    stopped = "; stopped early" if curves.get("early_stopped") else ""
    return (f"{len(curves['validation'])} validations on {fmt(curves.get('val_samples'))} validation dialogues took {fmt(spent)} s "
            f"besides {fmt(train)} s of training{share}; weights from step {fmt(weights.get('step'))}: {weights.get('why', '-')}{stopped}")


def _curves(report: dict[str, Any]) -> list[str]:
    curved = [r for r in report["runs"] if r.get("curves")]
    if not curved:
        return []
    out = ["", "## Learning curves (validation during training; never the test split)"]
    for r in curved:
        out += ["", f"**{r['name']}**: {curve_note(r['curves'])}.", "", "| " + " | ".join(CURVE_HEADER) + " |",
                "|" + "---|" * len(CURVE_HEADER)]
        out += [f"| {' | '.join(row)} |" for row in curve_rows(r["curves"])]
    return out


def to_markdown(report: dict[str, Any]) -> str:
    """The whole report as Markdown: ROUGE, differences, cost, output checks, faithfulness, breakdowns, examples."""
    comparisons = [f"- **{title}**: {detail}" for title, detail in map(comparison_text, report["comparisons"])]
    comparisons += [f"- {not_compared_text(n)}" for n in report.get("not_compared", [])]
    out = [
        "# dialogtune comparison",
        "",
        *_header(report),
        "",
        "## ROUGE",
        "",
        rouge_table(report),
        "",
        "## Differences (paired test on the same dialogues; n.s. = not significant at 0.05)",
        "",
        *(comparisons or ["- (no runs share the same dialogues)"]),
        "",
        "## Cost",
        "",
        "| run | trainable params | % | size on disk | train time (s) | examples/s | tokens/s | peak memory | summaries/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        out.append(
            f"| {r['name']} | {fmt(r['trainable_params'])} | {fmt(r['trainable_percent'], 2)} | "
            f"{human_bytes(r['size_bytes'])} | {fmt(r['train_seconds'])} | {fmt(r['train_examples_per_second'])} | "
            f"{fmt(r['train_tokens_per_second'])} | {human_bytes(r['peak_memory_bytes'])} | {fmt(r['summaries_per_second'], 2)} |"
        )
    out += ["", "## Outputs", "", "| run | mean words | reference words | empty | repetitive | copied turn |", "|---|---|---|---|---|---|"]
    for r in report["runs"]:
        d = r["degenerate"]
        out.append(
            f"| {r['name']} | {fmt(r['lengths'].get('pred_mean'))} | {fmt(r['lengths'].get('ref_mean'))} | "
            f"{d['empty']['count']} | {d['repetitive']['count']} | {d['copied_turn']['count']} |"
        )
    out += _curves(report)
    out += _faithfulness(report)
    if "human_evaluation" in report:
        out += ["", "## Human evaluation (blind pairwise; see docs/human-evaluation.md)", "", human_table(report["human_evaluation"])]
    out += _breakdown_table(report, "by_topic", "topic", f"## {HEADLINE} by topic (most frequent first, 95% CI)", "topic",
                            "(no topic has enough dialogues; see report.min_topic_count)")
    out += _breakdown_table(report, "by_length", "bucket", f"## {HEADLINE} by dialogue length (words, quartiles)", "length", "")
    out += ["", "## Examples", "", LEGEND.format(mark="**[like this?]**"), ""]
    for ex in report["examples"]:
        flags = ex.get("unsupported", {})
        out += [f"### {ex['id']}", "", "```", ex["dialogue"], "```", "", f"- **human**: {_marked(ex['human'], flags.get('human', []))}"]
        out += [f"- **{name}**: {_marked(text, flags.get(name, []))}" for name, text in ex["predictions"].items()]
        out.append("")
    return "\n".join(out)
