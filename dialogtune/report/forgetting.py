"""Forgetting report data -> plain sentences, Markdown, and one self-contained HTML page with an SVG chart.

The data comes from `dialogtune.forgetting.analyse`: per model and task a score with its 95% CI, and per
trained model the change from the original (`change`) and the difference from full fine-tuning on
summaries (`vs_full_summary`), each a paired test on the same items. The sentences are generated from the
numbers alone, whichever way they go.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from dialogtune import runs
from dialogtune.report.charts import COLORS
from dialogtune.report.formatting import fmt

TRAINED = ("full_summary", "lora_summary", "full_multitask", "lora_multitask")
AGAINST_FULL = ("lora_summary", "full_multitask", "lora_multitask")


def change_text(test: dict[str, Any]) -> str:
    """E.g. "-40.0 [-48.0, -32.0], p=0.001" (points, paired 95% CI, two-sided p)."""
    return f"{test['diff']:+.1f} [{test['ci_low']:+.1f}, {test['ci_high']:+.1f}], p={test['p_value']:.3f}"


def _join(items: list[str]) -> str:
    return "; ".join(items) if items else "none"


def findings(report: dict[str, Any]) -> list[str]:
    """What the numbers show, one sentence per point, in the same words whatever they say."""
    labels = {m["key"]: m["label"] for m in report["models"]}
    retained = [s["task"] for s in report["suite"] if s["retained"]]
    res = report["results"]
    check = report["adapter_off_check"]
    out = [f"Same LoRA, adapter off: the original model's predictions exactly, on all {check['total']} items of "
           f"{len(check['items'])} tasks ({', '.join(f'{t} {n}' for t, n in check['items'].items())})."]
    full = res["full_summary"]
    lost = [t for t in retained if full[t]["change"]["significant"] and full[t]["change"]["diff"] < 0]
    if lost:
        out.append("Full fine-tuning on summaries alone lost significant ability on "
                   + _join([f"{t} ({change_text(full[t]['change'])})" for t in lost]) + ".")
    else:
        out.append(f"Full fine-tuning on summaries alone lost no significant ability on any retained task ({', '.join(retained)}) "
                   "at p < 0.05 on these items.")
    for key in TRAINED:
        cells = res[key]
        kept = []
        for t in retained:
            base = res["original"][t]["score"]
            share = f"{100 * cells[t]['score'] / base:.0f}%" if base else "n/a"
            mark = "significant" if cells[t]["change"]["significant"] else "not significant"
            kept.append(f"{t} {share} of the original's score ({change_text(cells[t]['change'])}, {mark})")
        out.append(f"{labels[key]}: summary {change_text(cells['summary']['change'])} against the original; keeps " + _join(kept) + ".")
    for key in AGAINST_FULL:
        cells = res[key]
        tests = {t: cells[t]["vs_full_summary"] for t in retained}
        more = [f"{t} ({change_text(v)})" for t, v in tests.items() if v["significant"] and v["diff"] > 0]
        less = [f"{t} ({change_text(v)})" for t, v in tests.items() if v["significant"] and v["diff"] < 0]
        same = [t for t, v in tests.items() if not v["significant"]]
        as_much = [t for t in same if t in lost]
        sentence = f"{labels[key]} against full fine-tuning on summaries alone: retained tasks significantly higher: {_join(more)}"
        sentence += f"; significantly lower: {_join(less)}; no significant difference: {', '.join(same) or 'none'}"
        if as_much:
            sentence += f" (so it lost as much as full fine-tuning on summaries alone did on {', '.join(as_much)})"
        out.append(sentence + f"; summary {change_text(cells['summary']['vs_full_summary'])}.")
    return out


def _header(report: dict[str, Any]) -> str:
    b = report["bootstrap"]
    tasks = ", ".join(f"{s['task']} ({s['metric']}, weight {s['weight']:g} in multi-task)" for s in report["suite"])
    n = {s["task"]: report["results"]["original"][s["task"]]["n"] for s in report["suite"]}
    return (f"Model `{report['model']}`, split `{report['split']}`, items per task: {', '.join(f'{t} {k}' for t, k in n.items())}. "
            f"Tasks: {tasks}. Scores in points with 95% bootstrap CIs; changes are paired on the same items "
            f"({b['test']} test and bootstrap CI, {b['n_resamples']} resamples, seed {b['seed']}); * = p < 0.05.")


def score_rows(report: dict[str, Any]) -> list[list[str]]:
    """[model, trained on, one "score [CI]" per task]."""
    tasks = [s["task"] for s in report["suite"]]
    return [[m["label"], m["trained_on"]] + [_score(report["results"][m["key"]][t]) for t in tasks] for m in report["models"]]


def change_rows(report: dict[str, Any], field: str = "change") -> list[list[str]]:
    """[model, one "change [CI], p" per task] for every model that has `field`."""
    tasks = [s["task"] for s in report["suite"]]
    rows = []
    for m in report["models"]:
        cells = report["results"][m["key"]]
        if field in cells[tasks[0]]:
            rows.append([m["label"]] + [change_text(cells[t][field]) + ("*" if cells[t][field]["significant"] else "") for t in tasks])
    return rows


def change_table(report: dict[str, Any]) -> str:
    """The Markdown table of changes from the original, which the CLI prints."""
    heads = [f"{s['task']} ({s['metric']})" for s in report["suite"]]
    return "\n".join(_md_table(["change from the original", *heads], change_rows(report)))


def cost_rows(report: dict[str, Any]) -> list[list[str]]:
    return [[m["label"], m["folder"] or "(lora-summary, adapter off)", fmt(m.get("trainable_params")), fmt(m.get("train_steps")),
             fmt(m.get("train_seconds")), "kept from before" if m.get("kept") else "now"] for m in report["models"]]


COST_HEADER = ["model", "folder", "trainable", "steps", "train s", "trained and scored"]


def _score(cell: dict[str, Any]) -> str:
    return f"{cell['score']:.1f} [{cell['ci_low']:.1f}, {cell['ci_high']:.1f}]"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _timing(report: dict[str, Any]) -> str:
    t = report["timing"]
    loads = "/".join(f"{x:g}" for x in t["host_start"]["load_average"]), "/".join(f"{x:g}" for x in t["host_end"]["load_average"])
    return (f"Wall time of this invocation: {t['wall_seconds']:.0f} s ({t['cpu_seconds']:.0f} CPU seconds in this process) on "
            f"{t['host_start']['cpus']} CPUs; load average (1/5/15 min) {loads[0]} at the start, {loads[1]} at the end; the "
            f"LoRA models and adapter off scored on one base in {t['shared_base_seconds']:.0f} s. Runs kept from before were not redone.")


def to_markdown(report: dict[str, Any]) -> str:
    """forgetting.md: what it shows, the score table, the change tables, and each model's cost."""
    heads = [f"{s['task']} ({s['metric']})" for s in report["suite"]]
    lines = ["# Catastrophic forgetting, measured", "", _header(report), "", "## What it shows", ""]
    lines += [f"- {f}" for f in report["findings"]]
    lines += ["", "## Scores", "", *_md_table(["model", "trained on", *heads], score_rows(report))]
    lines += ["", "## Change from the original", "", *_md_table(["model", *heads], change_rows(report))]
    lines += ["", "## Against full fine-tuning on summaries alone", "",
              *_md_table(["model", *heads], change_rows(report, "vs_full_summary"))]
    lines += ["", "## Runs", "", *_md_table(COST_HEADER, cost_rows(report)), "", _timing(report)]
    return "\n".join(lines)


def change_chart(report: dict[str, Any]) -> str:
    """One group per task, one bar per trained model: the change from the original, with its paired 95% CI."""
    tasks = [s["task"] for s in report["suite"]]
    models = [m for m in report["models"] if "change" in report["results"][m["key"]][tasks[0]]]
    tests = {(m["key"], t): report["results"][m["key"]][t]["change"] for m in models for t in tasks}
    low = min([0.0] + [min(v["ci_low"], v["diff"]) for v in tests.values()])
    high = max([0.0] + [max(v["ci_high"], v["diff"]) for v in tests.values()])
    span = max(high - low, 1.0)
    low, high = low - 0.05 * span, high + 0.05 * span
    width, height, pad, left = 720, 320, 30, 50
    group = (width - left - pad) / len(tasks)
    bar = group / (len(models) + 1)
    scale = (height - 2 * pad) / (high - low)
    zero = pad + high * scale

    def y(value: float) -> float:
        return zero - value * scale

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 60}" role="img" '
             f'aria-label="change from the original per task and model">']
    magnitude = 10 ** math.floor(math.log10(span / 4))  # about 4 to 10 grid lines
    step = next(m * magnitude for m in (1, 2, 5, 10) if span / (m * magnitude) <= 10)
    for k in range(math.ceil(low / step), math.floor(high / step) + 1):
        parts.append(f'<line x1="{left}" x2="{width - pad}" y1="{y(k * step):.1f}" y2="{y(k * step):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{y(k * step) + 4:.1f}" font-size="10" text-anchor="end">{k * step:+g}</text>')
    for gi, task in enumerate(tasks):
        x0 = left + gi * group
        parts.append(f'<text x="{x0 + group / 2:.1f}" y="{height - 6}" text-anchor="middle" font-size="12">{html.escape(task)}</text>')
        for mi, m in enumerate(models):
            v = tests[(m["key"], task)]
            x = x0 + bar / 2 + mi * bar
            top_y, size = min(y(v["diff"]), zero), abs(v["diff"]) * scale
            tip = f"{m['label']} on {task}: {change_text(v)}"
            color = COLORS[(mi + 1) % len(COLORS)]  # the first color (grey) is the original's in report.html
            parts.append(f'<rect x="{x:.1f}" y="{top_y:.1f}" width="{bar * 0.85:.1f}" height="{size:.1f}" fill="{color}">'
                         f'<title>{html.escape(tip)}</title></rect>')
            cx = x + bar * 0.425
            # A tick at the change itself, so a change of 0 (adapter off) still shows where it is.
            parts.append(f'<line x1="{x:.1f}" x2="{x + bar * 0.85:.1f}" y1="{y(v["diff"]):.1f}" y2="{y(v["diff"]):.1f}" '
                         f'stroke="{color}" stroke-width="3"/>')
            parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(v["ci_high"]):.1f}" y2="{y(v["ci_low"]):.1f}" stroke="black"/>')
    parts.append(f'<line x1="{left}" x2="{width - pad}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="black"/>')
    parts.append(f'<text x="12" y="{zero:.1f}" font-size="11" transform="rotate(-90 12 {zero:.1f})" text-anchor="middle">'
                 'change from the original (points)</text>')
    for mi, m in enumerate(models):
        lx, ly = left + (mi % 3) * 220, height + 14 + (mi // 3) * 18
        parts.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{COLORS[(mi + 1) % len(COLORS)]}"/>'
                     f'<text x="{lx + 16}" y="{ly + 11}" font-size="12">{html.escape(m["label"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def to_html(report: dict[str, Any]) -> str:
    """forgetting.html: the Markdown's sections plus the change chart; nothing fetched when it is opened."""
    heads = [f"{s['task']} ({s['metric']})" for s in report["suite"]]
    items = "".join(f"<li>{html.escape(f)}</li>" for f in report["findings"])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>dialogtune forgetting</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>
<h1>Catastrophic forgetting, measured</h1><p>{html.escape(_header(report))}</p>
<h2>What it shows</h2><ul>{items}</ul>
<h2>Change from the original</h2>{change_chart(report)}
{_html_table(["model", *heads], change_rows(report))}
<h2>Scores</h2>{_html_table(["model", "trained on", *heads], score_rows(report))}
<h2>Against full fine-tuning on summaries alone</h2>{_html_table(["model", *heads], change_rows(report, "vs_full_summary"))}
<h2>Runs</h2>{_html_table(COST_HEADER, cost_rows(report))}
<p>{html.escape(_timing(report))}</p>
</body></html>
"""


def write_forgetting(report: dict[str, Any], output: str | Path) -> None:
    """forgetting.json (the data), forgetting.md and forgetting.html into `output`."""
    output = Path(output)
    runs.write_json(output / "forgetting.json", report)
    runs.write_text(output / "forgetting.md", to_markdown(report) + "\n")
    runs.write_text(output / "forgetting.html", to_html(report))
