"""Inline SVG charts for report.html, drawn by hand so the page needs no plotting library and no network."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from dialogtune.metrics import METRICS

COLORS = ("#8c8c8c", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def _color(index: int) -> str:
    return COLORS[index % len(COLORS)]


def bar_chart(report: dict[str, Any]) -> str:
    """Grouped ROUGE bars, one group per metric and one bar per run, with CI error bars and a legend."""
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
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar * 0.9:.1f}" height="{value * scale:.1f}" fill="{_color(ri)}"><title>{html.escape(r["name"])} {metric} {value:.2f} [{low:.2f}, {high:.2f}]</title></rect>')
            cx = x + bar * 0.45
            parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{height - pad - high * scale:.1f}" y2="{height - pad - low * scale:.1f}" stroke="black"/>')
    parts.append(f'<line x1="{pad}" x2="{width - pad}" y1="{height - pad}" y2="{height - pad}" stroke="black"/>')
    for ri, r in enumerate(runs_):
        parts.append(f'<rect x="{pad + ri * 130}" y="{height + 8}" width="12" height="12" fill="{_color(ri)}"/>')
        parts.append(f'<text x="{pad + ri * 130 + 16}" y="{height + 19}" font-size="12">{html.escape(r["name"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def length_histogram(generated_words: dict[str, list[int]]) -> str:
    """One line per run over 15 shared bins of generated-summary length in words."""
    width, height, pad = 640, 200, 30
    everything = [n for words in generated_words.values() for n in words] or [0]
    edges = np.linspace(0, max(everything) + 1, 16)
    counts = {name: np.histogram(words, bins=edges)[0] for name, words in generated_words.items()}
    peak = max((c.max() for c in counts.values()), default=1) or 1
    step = (width - 2 * pad) / (len(edges) - 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="generated length histogram">']
    for ri, (name, c) in enumerate(counts.items()):
        points = " ".join(f"{pad + (i + 0.5) * step:.1f},{height - pad - v / peak * (height - 2 * pad):.1f}" for i, v in enumerate(c))
        parts.append(f'<polyline fill="none" stroke="{_color(ri)}" stroke-width="2" points="{points}"><title>{html.escape(name)}</title></polyline>')
    for i in range(0, len(edges), 3):
        parts.append(f'<text x="{pad + i * step:.1f}" y="{height - 10}" font-size="10" text-anchor="middle">{edges[i]:.0f}</text>')
    parts.append(f'<text x="{width / 2}" y="{12}" font-size="11" text-anchor="middle">generated summary length (words)</text></svg>')
    return "".join(parts)
