"""Report data -> one self-contained HTML page (inline CSS and SVG; nothing fetched when it is opened)."""

from __future__ import annotations

import html
from typing import Any

from dialogtune.metrics import METRICS
from dialogtune.report.charts import bar_chart, length_histogram
from dialogtune.report.formatting import comparison_text, fmt, human_bytes


def _run_row(r: dict[str, Any]) -> str:
    cells = "".join(f"<td>{r['rouge'][m]:.2f}<br><small>[{r['rouge_ci'][m][0]:.1f}, {r['rouge_ci'][m][1]:.1f}]</small></td>" for m in METRICS)
    return (
        f"<tr><td>{html.escape(r['name'])}</td><td>{r['method']}</td>{cells}<td>{fmt(r['trainable_params'])} "
        f"({fmt(r['trainable_percent'], 2)}%)</td><td>{human_bytes(r['size_bytes'])}</td><td>{fmt(r['train_seconds'])}</td>"
        f"<td>{fmt(r['train_tokens_per_second'])}</td></tr>"
    )


def _example(ex: dict[str, Any]) -> str:
    preds = "".join(f"<tr><th>{html.escape(n)}</th><td>{html.escape(t)}</td></tr>" for n, t in ex["predictions"].items())
    return (
        f"<h3>{html.escape(ex['id'])}</h3><pre>{html.escape(ex['dialogue'])}</pre><table>"
        f"<tr><th>human</th><td>{html.escape(ex['human'])}</td></tr>{preds}</table>"
    )


def to_html(report: dict[str, Any], generated_words: dict[str, list[int]]) -> str:
    """The report page: ROUGE chart and table with cost, differences, length histogram and examples.

    `generated_words` (run name -> words per generated summary) feeds the histogram; see
    :class:`dialogtune.report.analysis.Analysis`.
    """
    rows = "".join(_run_row(r) for r in report["runs"])
    comps = "".join(f"<li>{html.escape(f'{title}: {detail}')}</li>" for title, detail in map(comparison_text, report["comparisons"]))
    examples = "".join(_example(ex) for ex in report["examples"])
    first = report["runs"][0]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>dialogtune report</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}}pre{{white-space:pre-wrap;background:#f6f6f6;padding:8px}}</style>
</head><body><h1>dialogtune comparison</h1>
<p>Split <code>{html.escape(str(first['split']))}</code>, {first['num_examples']} dialogues, ROUGE protocol <code>{html.escape(str(first['protocol']))}</code>; F-measure in points with 95% bootstrap CIs.</p>
{bar_chart(report)}
<table><tr><th>run</th><th>method</th>{''.join(f'<th>{m}</th>' for m in METRICS)}<th>trainable</th><th>size</th><th>train s</th><th>tokens/s</th></tr>{rows}</table>
<h2>Differences</h2><p>Paired test on the same dialogues; n.s. = not significant at 0.05.</p><ul>{comps}</ul>
<h2>Generated lengths</h2>{length_histogram(generated_words)}
<h2>Examples</h2>{examples}
</body></html>
"""
