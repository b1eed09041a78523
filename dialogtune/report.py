"""Compare evaluated runs: ROUGE with CIs, significance, cost, and a side-by-side of examples.

Writes report.json (a contract other tools read), report.md and a self-contained report.html.
"""

from __future__ import annotations

import html
import random
from pathlib import Path
from typing import Any

import numpy as np

from dialogtune import runs
from dialogtune.breakdowns import by_length, by_topic, degenerate_outputs, length_stats
from dialogtune.errors import DialogtuneError
from dialogtune.metrics import METRICS, per_example_scores
from dialogtune.significance import paired_test

HEADLINE = "rouge1"  # the metric the breakdowns use
LENGTH_EDGES = (100, 150, 200, 300)  # dialogue length buckets, in words
COLORS = ("#8c8c8c", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def _load(folder: Path) -> dict[str, Any]:
    run = runs.read_run(folder)
    metrics = run.metrics
    if metrics is None:
        raise DialogtuneError(f"run {folder} has not been evaluated; run `dialogtune evaluate {folder}` first")
    predictions = run.predictions()
    protocol = metrics.get("protocol", "mean")
    scores = per_example_scores(
        [p["prediction"] for p in predictions],
        [p["references"] for p in predictions],
        protocol=protocol,
        reference_names=[p.get("reference_names") or [] for p in predictions],
    )
    return {"run": run, "metrics": metrics, "predictions": predictions, "scores": scores}


def _run_entry(item: dict[str, Any]) -> dict[str, Any]:
    run, metrics, meta = item["run"], item["metrics"], item["run"].metadata
    predictions = item["predictions"]
    total = meta.get("total_params")
    trainable = meta.get("trainable_params", 0)
    return {
        "name": run.name,
        "method": run.method,
        "folder": str(run.folder),
        "model": meta.get("model"),
        "protocol": metrics.get("protocol"),
        "split": metrics.get("split"),
        "rouge": {m: round(metrics["rouge"][m]["score"], 4) for m in METRICS},
        "rouge_ci": {m: [round(metrics["rouge"][m]["ci_low"], 4), round(metrics["rouge"][m]["ci_high"], 4)] for m in METRICS},
        "num_examples": metrics["num_examples"],
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 4) if total else None,
        "size_bytes": meta.get("size_bytes", 0),
        "train_seconds": meta.get("train_seconds", 0.0),
        "train_examples_per_second": meta.get("train_examples_per_second"),
        "train_tokens_per_second": meta.get("train_tokens_per_second"),
        "peak_memory_bytes": meta.get("peak_memory_bytes"),
        "gen_len": metrics.get("gen_len"),
        "summaries_per_second": meta.get("summaries_per_second"),
        "lengths": length_stats([p["prediction"] for p in predictions], [p["references"] for p in predictions]),
        "by_topic": by_topic(item["scores"][HEADLINE], [p.get("topic") or "(none)" for p in predictions]),
        "by_length": by_length(item["scores"][HEADLINE], [len(p.get("dialogue", "").split()) for p in predictions], LENGTH_EDGES),
        "degenerate": degenerate_outputs(
            [p["prediction"] for p in predictions],
            [p.get("dialogue", "") for p in predictions],
            [p["id"] for p in predictions],
        ),
    }


def _comparison(a: dict[str, Any], b: dict[str, Any], seed: int) -> dict[str, Any] | None:
    """a minus b on the same dialogues, per metric, with a paired test; None if they differ in examples."""
    ids_a = [p["id"] for p in a["predictions"]]
    ids_b = [p["id"] for p in b["predictions"]]
    if ids_a != ids_b:
        return None
    return {
        "a": a["run"].name,
        "b": b["run"].name,
        "metrics": {m: paired_test(a["scores"][m], b["scores"][m], seed=seed) for m in METRICS},
    }


def build_report(folders: list[str | Path], num_examples: int = 5, seed: int = 0) -> dict[str, Any]:
    """The report as data: runs, pairwise comparisons, and reproducibly chosen examples."""
    if not folders:
        raise DialogtuneError("compare needs at least one run folder")
    items = [_load(Path(f)) for f in folders]
    names = [i["run"].name for i in items]
    if len(set(names)) != len(names):
        raise DialogtuneError(f"runs to compare share a name ({', '.join(names)}); give each run its own folder name")
    by_method = {}
    for item in items:
        by_method.setdefault(item["run"].method, item)
    comparisons = []
    baseline = by_method.get("original")
    for item in items:
        if baseline is not None and item is not baseline:
            comparisons.append(_comparison(item, baseline, seed))
    if "lora" in by_method and "full" in by_method:
        comparisons.append(_comparison(by_method["lora"], by_method["full"], seed))
    comparisons = [c for c in comparisons if c is not None]
    common = set.intersection(*({p["id"] for p in i["predictions"]} for i in items))
    chosen = sorted(random.Random(seed).sample(sorted(common), min(num_examples, len(common))))
    lookup = [{p["id"]: p for p in i["predictions"]} for i in items]
    examples = [
        {
            "id": ex_id,
            "dialogue": lookup[0][ex_id].get("dialogue", ""),
            "human": lookup[0][ex_id]["references"][0],
            "predictions": {name: table[ex_id]["prediction"] for name, table in zip(names, lookup)},
        }
        for ex_id in chosen
    ]
    return {"runs": [_run_entry(i) for i in items], "comparisons": comparisons, "examples": examples}


def _human_bytes(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


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


def _comparison_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for c in report["comparisons"]:
        parts = []
        for m in METRICS:
            t = c["metrics"][m]
            mark = "" if t["significant"] else " (n.s.)"
            parts.append(f"{m} {t['diff']:+.2f} [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}] p={t['p_value']:.3f}{mark}")
        lines.append(f"- **{c['a']} vs {c['b']}**: " + "; ".join(parts))
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    out = ["# dialogtune comparison", ""]
    first = report["runs"][0]
    out += [
        f"Split `{first['split']}`, {first['num_examples']} dialogues, ROUGE protocol `{first['protocol']}` "
        f"(F-measure in points, 95% bootstrap CI in brackets).",
        "",
        "## ROUGE",
        "",
        rouge_table(report),
        "",
        "## Differences (paired test on the same dialogues; n.s. = not significant at 0.05)",
        "",
        *(_comparison_lines(report) or ["- (no runs share the same dialogues)"]),
        "",
        "## Cost",
        "",
        "| run | trainable params | % | size on disk | train time (s) | examples/s | tokens/s | peak memory | summaries/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        out.append(
            f"| {r['name']} | {_fmt(r['trainable_params'])} | {_fmt(r['trainable_percent'], 2)} | "
            f"{_human_bytes(r['size_bytes'])} | {_fmt(r['train_seconds'])} | {_fmt(r['train_examples_per_second'])} | "
            f"{_fmt(r['train_tokens_per_second'])} | {_human_bytes(r['peak_memory_bytes'])} | {_fmt(r['summaries_per_second'], 2)} |"
        )
    out += ["", "## Outputs", "", "| run | mean words | reference words | empty | repetitive | copied turn |", "|---|---|---|---|---|---|"]
    for r in report["runs"]:
        d = r["degenerate"]
        out.append(
            f"| {r['name']} | {_fmt(r['lengths'].get('pred_mean'))} | {_fmt(r['lengths'].get('ref_mean'))} | "
            f"{d['empty']['count']} | {d['repetitive']['count']} | {d['copied_turn']['count']} |"
        )
    out += ["", f"## {HEADLINE} by topic (most frequent first)", "", "| topic | " + " | ".join(r["name"] for r in report["runs"]) + " | dialogues |", "|---|" + "---|" * (len(report["runs"]) + 1)]
    for i, row in enumerate(first["by_topic"]):
        cells = " | ".join(_fmt(r["by_topic"][i]["score"], 2) for r in report["runs"])
        out.append(f"| {row['topic']} | {cells} | {row['count']} |")
    out += ["", f"## {HEADLINE} by dialogue length (words)", "", "| length | " + " | ".join(r["name"] for r in report["runs"]) + " | dialogues |", "|---|" + "---|" * (len(report["runs"]) + 1)]
    for i, row in enumerate(first["by_length"]):
        cells = " | ".join(_fmt(r["by_length"][i]["score"], 2) for r in report["runs"])
        out.append(f"| {row['bucket']} | {cells} | {row['count']} |")
    out += ["", "## Examples", ""]
    for ex in report["examples"]:
        out += [f"### {ex['id']}", "", "```", ex["dialogue"], "```", "", f"- **human**: {ex['human']}"]
        out += [f"- **{name}**: {text}" for name, text in ex["predictions"].items()]
        out.append("")
    return "\n".join(out)


def _bar_chart(report: dict[str, Any]) -> str:
    """Grouped ROUGE bars with CI error bars, as inline SVG (no plotting library, no network)."""
    runs_ = report["runs"]
    width, height, pad = 640, 280, 40
    group = (width - 2 * pad) / len(METRICS)
    bar = group / (len(runs_) + 1)
    top = max(max(r["rouge_ci"][m][1] for m in METRICS) for r in runs_) or 1.0
    scale = (height - 2 * pad) / (top * 1.1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" role="img" aria-label="ROUGE scores">']
    for gi, metric in enumerate(METRICS):
        x0 = pad + gi * group
        parts.append(f'<text x="{x0 + group / 2:.1f}" y="{height - pad + 16}" text-anchor="middle" font-size="12">{metric}</text>')
        for ri, r in enumerate(runs_):
            value = r["rouge"][metric]
            low, high = r["rouge_ci"][metric]
            x = x0 + bar / 2 + ri * bar
            y = height - pad - value * scale
            color = COLORS[ri % len(COLORS)]
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar * 0.9:.1f}" height="{value * scale:.1f}" fill="{color}"><title>{html.escape(r["name"])} {metric} {value:.2f} [{low:.2f}, {high:.2f}]</title></rect>')
            cx = x + bar * 0.45
            parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{height - pad - high * scale:.1f}" y2="{height - pad - low * scale:.1f}" stroke="black"/>')
    parts.append(f'<line x1="{pad}" x2="{width - pad}" y1="{height - pad}" y2="{height - pad}" stroke="black"/>')
    for ri, r in enumerate(runs_):
        parts.append(f'<rect x="{pad + ri * 130}" y="{height + 8}" width="12" height="12" fill="{COLORS[ri % len(COLORS)]}"/>')
        parts.append(f'<text x="{pad + ri * 130 + 16}" y="{height + 19}" font-size="12">{html.escape(r["name"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _length_histogram(report: dict[str, Any], predictions_words: dict[str, list[int]]) -> str:
    width, height, pad = 640, 200, 30
    everything = [n for words in predictions_words.values() for n in words] or [0]
    edges = np.linspace(0, max(everything) + 1, 16)
    counts = {name: np.histogram(words, bins=edges)[0] for name, words in predictions_words.items()}
    peak = max((c.max() for c in counts.values()), default=1) or 1
    step = (width - 2 * pad) / (len(edges) - 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="generated length histogram">']
    for ri, (name, c) in enumerate(counts.items()):
        points = " ".join(f"{pad + (i + 0.5) * step:.1f},{height - pad - v / peak * (height - 2 * pad):.1f}" for i, v in enumerate(c))
        parts.append(f'<polyline fill="none" stroke="{COLORS[ri % len(COLORS)]}" stroke-width="2" points="{points}"><title>{html.escape(name)}</title></polyline>')
    for i in range(0, len(edges), 3):
        parts.append(f'<text x="{pad + i * step:.1f}" y="{height - 10}" font-size="10" text-anchor="middle">{edges[i]:.0f}</text>')
    parts.append(f'<text x="{width / 2}" y="{12}" font-size="11" text-anchor="middle">generated summary length (words)</text></svg>')
    return "".join(parts)


def to_html(report: dict[str, Any], predictions_words: dict[str, list[int]]) -> str:
    md_rows = []
    for r in report["runs"]:
        cells = "".join(f"<td>{r['rouge'][m]:.2f}<br><small>[{r['rouge_ci'][m][0]:.1f}, {r['rouge_ci'][m][1]:.1f}]</small></td>" for m in METRICS)
        md_rows.append(
            f"<tr><td>{html.escape(r['name'])}</td><td>{r['method']}</td>{cells}<td>{_fmt(r['trainable_params'])} "
            f"({_fmt(r['trainable_percent'], 2)}%)</td><td>{_human_bytes(r['size_bytes'])}</td><td>{_fmt(r['train_seconds'])}</td>"
            f"<td>{_fmt(r['train_tokens_per_second'])}</td></tr>"
        )
    comps = "".join(f"<li>{html.escape(line[2:]).replace('**', '')}</li>" for line in _comparison_lines(report))
    examples = []
    for ex in report["examples"]:
        preds = "".join(f"<tr><th>{html.escape(n)}</th><td>{html.escape(t)}</td></tr>" for n, t in ex["predictions"].items())
        examples.append(
            f"<h3>{html.escape(ex['id'])}</h3><pre>{html.escape(ex['dialogue'])}</pre><table>"
            f"<tr><th>human</th><td>{html.escape(ex['human'])}</td></tr>{preds}</table>"
        )
    first = report["runs"][0]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>dialogtune report</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}}pre{{white-space:pre-wrap;background:#f6f6f6;padding:8px}}</style>
</head><body><h1>dialogtune comparison</h1>
<p>Split <code>{html.escape(str(first['split']))}</code>, {first['num_examples']} dialogues, ROUGE protocol <code>{html.escape(str(first['protocol']))}</code>; F-measure in points with 95% bootstrap CIs.</p>
{_bar_chart(report)}
<table><tr><th>run</th><th>method</th>{''.join(f'<th>{m}</th>' for m in METRICS)}<th>trainable</th><th>size</th><th>train s</th><th>tokens/s</th></tr>{''.join(md_rows)}</table>
<h2>Differences</h2><p>Paired test on the same dialogues; n.s. = not significant at 0.05.</p><ul>{comps}</ul>
<h2>Generated lengths</h2>{_length_histogram(report, predictions_words)}
<h2>Examples</h2>{''.join(examples)}
</body></html>
"""


def write_report(folders: list[str | Path], output: str | Path, num_examples: int = 5, seed: int = 0) -> dict[str, Any]:
    """Write report.json, report.md and report.html into `output`; returns the report data."""
    output = Path(output)
    report = build_report(folders, num_examples, seed)
    words = {r["name"]: [len(p["prediction"].split()) for p in runs.read_jsonl(Path(r["folder"]) / runs.PREDICTIONS)] for r in report["runs"]}
    runs.write_json(output / "report.json", report)
    runs.write_text(output / "report.md", to_markdown(report) + "\n")
    runs.write_text(output / "report.html", to_html(report, words))
    return report
