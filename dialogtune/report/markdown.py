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
        lines.append(f"| {r['name']} | {r['method']} | " + " | ".join(cells) + f" | {r['num_examples']} |")
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


def _header(report: dict[str, Any]) -> list[str]:
    common, differing = scored_on(report)
    line = scored_on_text(common) or "no scoring setting is shared"
    line = line[0].upper() + line[1:]
    out = [f"{line} (F-measure in points, 95% bootstrap CI in brackets)."]
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


def _marked(text: str, facts: list[dict[str, Any]]) -> str:
    return mark_markdown(text, [Fact(**f) for f in facts])


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
    out += _faithfulness(report)
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
