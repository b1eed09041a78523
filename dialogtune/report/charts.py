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


def _panel(series: list[tuple[int, str, list[tuple[float, float]]]], x0: float, width: float, height: float,
           x_label: str, y_label: str, best: dict[str, tuple[float, float]] | None = None) -> list[str]:
    """One line per (colour index, name, points) in a box at `x0`, axes labelled with their ranges; `best` marks a
    point per name with a ring."""
    pad = 34
    xs = [x for _, _, pts in series for x, _ in pts] or [0.0]
    ys = [y for _, _, pts in series for _, y in pts] or [0.0]
    x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
    x_span, y_span = (x_hi - x_lo) or 1.0, (y_hi - y_lo) or 1.0

    def at(x: float, y: float) -> str:
        return f"{x0 + pad + (x - x_lo) / x_span * (width - 2 * pad):.1f},{height - pad - (y - y_lo) / y_span * (height - 2 * pad):.1f}"

    parts = [f'<rect x="{x0 + pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#ccc"/>',
             f'<text x="{x0 + width / 2}" y="{height - 6}" font-size="11" text-anchor="middle">{html.escape(x_label)}</text>',
             f'<text x="{x0 + width / 2}" y="{pad - 10}" font-size="11" text-anchor="middle">{html.escape(y_label)}</text>',
             f'<text x="{x0 + pad}" y="{height - pad + 12}" font-size="10" text-anchor="middle">{x_lo:.4g}</text>',
             f'<text x="{x0 + width - pad}" y="{height - pad + 12}" font-size="10" text-anchor="middle">{x_hi:.4g}</text>',
             f'<text x="{x0 + pad - 3}" y="{height - pad}" font-size="10" text-anchor="end">{y_lo:.3g}</text>',
             f'<text x="{x0 + pad - 3}" y="{pad + 8}" font-size="10" text-anchor="end">{y_hi:.3g}</text>']
    for index, name, pts in series:
        points = " ".join(at(x, y) for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{_color(index)}" stroke-width="2" points="{points}"><title>{html.escape(name)}</title></polyline>')
        if best and name in best:
            cx, cy = at(*best[name]).split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="5" fill="none" stroke="{_color(index)}" stroke-width="2"><title>{html.escape(name)} best</title></circle>')
    return parts


def _legend(runs_: list[tuple[int, str]], y: float) -> list[str]:
    parts = []
    for slot, (index, name) in enumerate(runs_):
        parts.append(f'<rect x="{40 + slot * 130}" y="{y}" width="12" height="12" fill="{_color(index)}"/>')
        parts.append(f'<text x="{56 + slot * 130}" y="{y + 11}" font-size="12">{html.escape(name)}</text>')
    return parts


def _best_points(curved: list[tuple[int, dict[str, Any]]], x_key: str) -> dict[str, tuple[float, float]]:
    """Where each run's validation ROUGE-1 peaked: its selected weights when they came from the best checkpoint."""
    found = {}
    for _, r in curved:
        step = (r["curves"].get("best") or {}).get("step")
        point = next((p for p in r["curves"]["validation"] if p["step"] == step and p["rouge1"] is not None), None)
        if point is not None and point.get(x_key) is not None:
            found[r["name"]] = (point[x_key], point["rouge1"])
    return found


def learning_curves(report: dict[str, Any]) -> str:
    """Training loss and validation ROUGE-1 against steps, every run that was validated during training on the same
    two panels (the colours of the ROUGE chart); a ring marks each run's best validation."""
    curved = [(i, r) for i, r in enumerate(report["runs"]) if r.get("curves")]
    width, height = 320, 220
    loss = [(i, r["name"], [(s, v) for s, v in r["curves"]["train_loss"]]) for i, r in curved]
    rouge = [(i, r["name"], [(p["step"], p["rouge1"]) for p in r["curves"]["validation"] if p["rouge1"] is not None]) for i, r in curved]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{height + 30}" role="img" aria-label="learning curves">']
    parts += _panel(loss, 0, width, height, "step", "training loss")
    parts += _panel(rouge, width, width, height, "step", "validation ROUGE-1", _best_points(curved, "step"))
    parts += _legend([(i, r["name"]) for i, r in curved], height + 10)
    return "".join(parts + ["</svg>"])


def time_vs_rouge(report: dict[str, Any]) -> str:
    """Validation ROUGE-1 against training seconds (validation time excluded), one line per validated run."""
    curved = [(i, r) for i, r in enumerate(report["runs"]) if r.get("curves")]
    width, height = 640, 220
    lines = [(i, r["name"], [(p["train_seconds"], p["rouge1"]) for p in r["curves"]["validation"]
                              if p["train_seconds"] is not None and p["rouge1"] is not None]) for i, r in curved]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" role="img" aria-label="training time against ROUGE-1">']
    parts += _panel(lines, 0, width, height, "training seconds (validation excluded)", "validation ROUGE-1", _best_points(curved, "train_seconds"))
    parts += _legend([(i, r["name"]) for i, r in curved], height + 10)
    return "".join(parts + ["</svg>"])
