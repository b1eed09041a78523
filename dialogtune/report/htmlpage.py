"""Report data -> one self-contained HTML page (inline CSS and SVG; nothing fetched when it is opened)."""

from __future__ import annotations

import html
from typing import Any

from dialogtune.faithfulness import Fact, mark_html
from dialogtune.metrics import METRICS
from dialogtune.report.charts import bar_chart, learning_curves, length_histogram, time_vs_rouge
from dialogtune.report.formatting import LEGEND, comparison_text, faithfulness_comparison_text, faithfulness_rows, fmt
from dialogtune.report.formatting import human_bytes, method_label, not_compared_text, scored_on, scored_on_text
from dialogtune.report.markdown import CURVE_HEADER, HUMAN_HEADER, curve_note, curve_rows, human_notes, human_rows


def _run_row(r: dict[str, Any], report: dict[str, Any]) -> str:
    cells = "".join(f"<td>{r['rouge'][m]:.2f}<br><small>[{r['rouge_ci'][m][0]:.1f}, {r['rouge_ci'][m][1]:.1f}]</small></td>" for m in METRICS)
    return (
        f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(method_label(r, report))}</td>{cells}<td>{fmt(r['trainable_params'])} "
        f"({fmt(r['trainable_percent'], 2)}%)</td><td>{human_bytes(r['size_bytes'])}</td><td>{fmt(r['train_seconds'])}</td>"
        f"<td>{fmt(r['train_tokens_per_second'])}</td></tr>"
    )


def _marked(text: str, facts: list[dict[str, Any]]) -> str:
    return mark_html(text, [Fact(**f) for f in facts])


def _example(ex: dict[str, Any]) -> str:
    flags = ex.get("unsupported", {})
    preds = "".join(f"<tr><th>{html.escape(n)}</th><td>{_marked(t, flags.get(n, []))}</td></tr>" for n, t in ex["predictions"].items())
    return (
        f"<h3>{html.escape(ex['id'])}</h3><pre>{html.escape(ex['dialogue'])}</pre><table>"
        f"<tr><th>human</th><td>{_marked(ex['human'], flags.get('human', []))}</td></tr>{preds}</table>"
    )


def _header(report: dict[str, Any]) -> str:
    common, differing = scored_on(report)
    line = html.escape(scored_on_text(common, code="")) or "no scoring setting is shared"
    per_run = "".join(f"<li>{html.escape(n)}: {html.escape(scored_on_text(v, code=''))}</li>" for n, v in differing.items())
    extra = f"<p>The runs differ in what they were scored on:</p><ul>{per_run}</ul>" if differing else ""
    return f"<p>{line[0].upper()}{line[1:]}; F-measure in points with 95% bootstrap CIs.</p>{extra}"


def _faithfulness(report: dict[str, Any]) -> str:
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in faithfulness_rows(report))
    lines = "".join(f"<li>{html.escape(f'{t}: {d}')}</li>" for t, d in map(faithfulness_comparison_text, report["comparisons"]))
    return (
        "<h2>Faithfulness</h2><p>Facts (names, numbers, times, dates, codes) the dialogue does not support, per summary; "
        "the human row is each dialogue's first reference, the floor.</p>"
        f"<table><tr><th>run</th><th>facts checked</th><th>unsupported per summary [CI]</th><th>share with ≥1 [CI]</th></tr>{rows}</table>"
        f"<ul>{lines}</ul>"
    )


def _human(report: dict[str, Any]) -> str:
    """The human-evaluation section, if a review study is attached; the rows and notes are the Markdown's."""
    section = report.get("human_evaluation")
    if section is None:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HUMAN_HEADER)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in human_rows(section))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in human_notes(section))
    return (f"<h2>Human evaluation</h2><p>{section['judgements']} blind pairwise judgements by {section['raters']} raters on "
            f"{section['items']} dialogues. Bradley–Terry: {html.escape(section['method']['bradley_terry'])}.</p>"
            f"<table><tr>{head}</tr>{rows}</table><ul>{notes}</ul>")


def _curves(report: dict[str, Any]) -> str:
    """Training loss and validation ROUGE-1 against steps, training time against ROUGE-1, and each run's table."""
    curved = [r for r in report["runs"] if r.get("curves")]
    if not curved:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in CURVE_HEADER)
    tables = "".join(
        f"<h3>{html.escape(r['name'])}</h3><p>{html.escape(curve_note(r['curves']))}.</p><table><tr>{head}</tr>"
        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in curve_rows(r["curves"]))
        + "</table>" for r in curved
    )
    return (f"<h2>Learning curves</h2><p>Validated during training on a seeded subset of the validation split, never the "
            f"test split; a ring marks each run's best validation.</p>{learning_curves(report)}"
            f"<p>Validation ROUGE-1 against training time (validation excluded):</p>{time_vs_rouge(report)}{tables}")


def to_html(report: dict[str, Any], generated_words: dict[str, list[int]]) -> str:
    """The report page: ROUGE chart and table with cost, differences, faithfulness, length histogram and examples.

    `generated_words` (run name -> words per generated summary) feeds the histogram; see
    :class:`dialogtune.report.analysis.Analysis`.
    """
    rows = "".join(_run_row(r, report) for r in report["runs"])
    comps = "".join(f"<li>{html.escape(f'{title}: {detail}')}</li>" for title, detail in map(comparison_text, report["comparisons"]))
    comps += "".join(f"<li>{html.escape(not_compared_text(n))}</li>" for n in report.get("not_compared", []))
    examples = "".join(_example(ex) for ex in report["examples"])
    legend = LEGEND.format(mark='<mark class="unsupported">like this</mark>')
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>dialogtune report</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}}pre{{white-space:pre-wrap;background:#f6f6f6;padding:8px}}mark.unsupported{{background:#ffd6d6}}</style>
</head><body><h1>dialogtune comparison</h1>
{_header(report)}
{bar_chart(report)}
<table><tr><th>run</th><th>method</th>{''.join(f'<th>{m}</th>' for m in METRICS)}<th>trainable</th><th>size</th><th>train s</th><th>tokens/s</th></tr>{rows}</table>
<h2>Differences</h2><p>Paired test on the same dialogues; n.s. = not significant at 0.05.</p><ul>{comps}</ul>
{_curves(report)}
{_faithfulness(report)}
{_human(report)}
<h2>Generated lengths</h2>{length_histogram(generated_words)}
<h2>Examples</h2><p>{legend}</p>{examples}
</body></html>
"""
