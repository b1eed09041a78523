"""Report data -> Markdown (report.md), and the ROUGE table the CLI prints after `run` and `demo`."""

from __future__ import annotations

from typing import Any

from dialogtune.metrics import METRICS
from dialogtune.report.analysis import HEADLINE
from dialogtune.report.formatting import comparison_text, fmt, human_bytes


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


def _breakdown_table(report: dict[str, Any], key: str, label_key: str, heading: str, label: str) -> list[str]:
    """One row per topic or length bucket (as listed for the first run), one column per run."""
    names = [r["name"] for r in report["runs"]]
    out = ["", heading, "", f"| {label} | " + " | ".join(names) + " | dialogues |", "|---|" + "---|" * (len(names) + 1)]
    for i, row in enumerate(report["runs"][0][key]):
        cells = " | ".join(fmt(r[key][i]["score"], 2) for r in report["runs"])
        out.append(f"| {row[label_key]} | {cells} | {row['count']} |")
    return out


def to_markdown(report: dict[str, Any]) -> str:
    """The whole report as Markdown: ROUGE, differences, cost, output checks, breakdowns and examples."""
    first = report["runs"][0]
    comparisons = [f"- **{title}**: {detail}" for title, detail in map(comparison_text, report["comparisons"])]
    out = [
        "# dialogtune comparison",
        "",
        f"Split `{first['split']}`, {first['num_examples']} dialogues, ROUGE protocol `{first['protocol']}` "
        f"(F-measure in points, 95% bootstrap CI in brackets).",
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
    out += _breakdown_table(report, "by_topic", "topic", f"## {HEADLINE} by topic (most frequent first)", "topic")
    out += _breakdown_table(report, "by_length", "bucket", f"## {HEADLINE} by dialogue length (words)", "length")
    out += ["", "## Examples", ""]
    for ex in report["examples"]:
        out += [f"### {ex['id']}", "", "```", ex["dialogue"], "```", "", f"- **human**: {ex['human']}"]
        out += [f"- **{name}**: {text}" for name, text in ex["predictions"].items()]
        out.append("")
    return "\n".join(out)
