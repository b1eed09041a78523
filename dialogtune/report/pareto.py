"""The sweep report: every point's cost and ROUGE-1, the Pareto fronts, and two inline SVG scatter plots.

A point is on a Pareto front when no other point scores at least as well for at most its cost and is
strictly better in one of the two (cost: trainable parameters, or training seconds). The report is
sweep.json (the data), sweep.md (tables, linking the two SVG files) and sweep.html (self-contained).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from dialogtune import runs
from dialogtune.metrics import METRICS
from dialogtune.report.formatting import fmt

COSTS = {"trainable_params": "trainable parameters", "train_seconds": "training time (s)"}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, score) points no other point dominates (lower or equal cost, higher or equal
    score, one of them strictly); equal points are all kept. Sorted by cost."""
    front = []
    for i, (cost, score) in enumerate(points):
        dominated = any(
            c <= cost and s >= score and (c < cost or s > score) for j, (c, s) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def _summary(point: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"name": point.name, "values": point.values, "folder": str(point.folder), "status": "missing"}
    if not runs.is_run(point.folder):
        return row
    run = runs.read_run(point.folder)
    metadata, metrics = run.metadata, run.metrics
    row.update(status=run.status.value, method=run.method, trainable_params=metadata.get("trainable_params", 0 if run.method == "original" else None),
               total_params=metadata.get("total_params"), train_seconds=metadata.get("train_seconds", 0.0 if run.method == "original" else None))
    if metrics:
        row["num_examples"] = metrics.get("num_examples")
        row["rouge"] = {m: metrics["rouge"][m] for m in METRICS if m in metrics.get("rouge", {})}
    return row


def build_sweep(points: list[Any], grid: dict[str, list[Any]], info: dict[str, Any]) -> dict[str, Any]:
    """The sweep.json data: one row per point, and for each cost the names on its Pareto front."""
    rows = [_summary(p) for p in points]
    fronts = {}
    for cost in COSTS:
        scored = [r for r in rows if "rouge" in r and "rouge1" in r["rouge"] and r.get(cost) is not None]
        front = pareto_front([(float(r[cost]), r["rouge"]["rouge1"]["score"]) for r in scored])
        fronts[cost] = [scored[i]["name"] for i in front]
        for r in rows:
            r[f"pareto_{cost}"] = r["name"] in fronts[cost]
    return {**info, "grid": grid, "points": rows, "pareto": fronts}


def scatter(sweep: dict[str, Any], cost: str) -> str:
    """ROUGE-1 (95% CI bars) against `cost` for every scored point; the Pareto front joined and filled.
    Trainable parameters go on a log scale (ranks grow by factors)."""
    rows = [r for r in sweep["points"] if "rouge" in r and r.get(cost) is not None and (cost != "trainable_params" or r[cost] > 0)]
    width, height, pad = 640, 320, 56
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="ROUGE-1 against {COSTS[cost]}">']
    if not rows:
        return parts[0] + '<text x="20" y="30">no evaluated points yet</text></svg>'
    log_x = cost == "trainable_params"
    xs = [math.log10(r[cost]) if log_x else float(r[cost]) for r in rows]
    lows = [r["rouge"]["rouge1"]["ci_low"] for r in rows]
    highs = [r["rouge"]["rouge1"]["ci_high"] for r in rows]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(lows), max(highs)
    x0, x1 = (x0 - 0.5, x1 + 0.5) if x1 - x0 < 1e-9 else (x0 - 0.05 * (x1 - x0), x1 + 0.05 * (x1 - x0))
    y0, y1 = (y0 - 1, y1 + 1) if y1 - y0 < 1e-9 else (y0 - 0.05 * (y1 - y0), y1 + 0.05 * (y1 - y0))

    def px(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def py(y: float) -> float:
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    parts.append(f'<line x1="{pad}" x2="{width - pad}" y1="{height - pad}" y2="{height - pad}" stroke="black"/>')
    parts.append(f'<line x1="{pad}" x2="{pad}" y1="{pad / 2}" y2="{height - pad}" stroke="black"/>')
    # x ticks: powers of ten on the log scale, else 5 evenly spaced; y ticks: 5 evenly spaced
    ticks = [float(k) for k in range(math.ceil(x0), math.floor(x1) + 1)] if log_x else []
    for tx in ticks or [x0 + k * (x1 - x0) / 4 for k in range(5)]:
        label = fmt(int(round(10**tx))) if log_x else f"{tx:.0f}"
        parts.append(f'<text x="{px(tx):.1f}" y="{height - pad + 16}" font-size="10" text-anchor="middle">{label}</text>')
    for ty in (y0 + k * (y1 - y0) / 4 for k in range(5)):
        parts.append(f'<text x="{pad - 6}" y="{py(ty) + 3:.1f}" font-size="10" text-anchor="end">{ty:.1f}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 12}" font-size="12" text-anchor="middle">{COSTS[cost]}{" (log scale)" if log_x else ""}</text>')
    parts.append(f'<text x="14" y="{height / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {height / 2})">ROUGE-1</text>')
    front = [r for r in sorted(zip(xs, rows), key=lambda t: t[0]) if r[1][f"pareto_{cost}"]]
    if len(front) > 1:
        line = " ".join(f"{px(x):.1f},{py(r['rouge']['rouge1']['score']):.1f}" for x, r in front)
        parts.append(f'<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{line}"/>')
    for x, r, low, high in zip(xs, rows, lows, highs, strict=True):
        score = r["rouge"]["rouge1"]["score"]
        on_front = r[f"pareto_{cost}"]
        parts.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{py(high):.1f}" y2="{py(low):.1f}" stroke="#555" stroke-width="1.5"/>')
        label = " ".join(_text(v) for v in r["values"].values())
        parts.append(f'<text x="{px(x) + 7:.1f}" y="{py(score) + 12:.1f}" font-size="9" fill="#555">{html.escape(label)}</text>')
        fill = "#d62728" if on_front else "white"
        parts.append(f'<circle cx="{px(x):.1f}" cy="{py(score):.1f}" r="5" fill="{fill}" stroke="#1f77b4" stroke-width="1.5">'
                     f'<title>{html.escape(r["name"])}: ROUGE-1 {score:.2f} [{low:.2f}, {high:.2f}], {COSTS[cost]} {fmt(r[cost])}'
                     f'{" (Pareto front)" if on_front else ""}</title></circle>')
    parts.append(f'<text x="{width - pad}" y="{pad / 2}" font-size="11" text-anchor="end">filled, joined: Pareto front</text></svg>')
    return "".join(parts)


def _cells(r: dict[str, Any], keys: list[str]) -> list[str]:
    rouge = r.get("rouge", {})
    r1 = rouge.get("rouge1")
    score = f"{r1['score']:.2f} [{r1['ci_low']:.2f}, {r1['ci_high']:.2f}]" if r1 else "-"
    marks = " ".join(label for cost, label in (("trainable_params", "params"), ("train_seconds", "time")) if r.get(f"pareto_{cost}"))
    return [r["name"], *(_value(r["values"][k]) for k in keys), fmt(r.get("trainable_params")), fmt(r.get("train_seconds")),
            score, *(f"{rouge[m]['score']:.2f}" if m in rouge else "-" for m in METRICS[1:]), marks or "-"]


def _text(value: Any) -> str:
    return "+".join(map(str, value)) if isinstance(value, list) else str(value)


def _value(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _header(sweep: dict[str, Any]) -> list[str]:
    return ["point", *sweep["grid"], "trainable params", "train s", "ROUGE-1 [95% CI]", *METRICS[1:], "Pareto"]


def _how(sweep: dict[str, Any]) -> str:
    threads = sweep.get("threads")
    return f"{len(sweep['points'])} points; {sweep.get('jobs')} at a time x {threads} thread{'' if threads == 1 else 's'} each"


def to_markdown(sweep: dict[str, Any]) -> str:
    keys = list(sweep["grid"])
    lines = [f"# Sweep: {sweep.get('config', '')}", "",
             f"{_how(sweep)}; this invocation took {sweep.get('wall_seconds')} s (finished points kept from earlier runs are not timed again).", "",
             "| " + " | ".join(_header(sweep)) + " |", "|" + "---|" * len(_header(sweep))]
    lines += ["| " + " | ".join(_cells(r, keys)) + " |" for r in sweep["points"]]
    lines.append("")
    for cost, label in COSTS.items():
        lines.append(f"Pareto front, ROUGE-1 against {label}: {', '.join(sweep['pareto'][cost]) or '-'}")
    lines += ["", "![ROUGE-1 against trainable parameters](sweep-trainable_params.svg)",
              "![ROUGE-1 against training time](sweep-train_seconds.svg)"]
    return "\n".join(lines)


def to_html(sweep: dict[str, Any]) -> str:
    keys = list(sweep["grid"])
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _header(sweep))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r, keys)) + "</tr>" for r in sweep["points"])
    fronts = "".join(f"<li>ROUGE-1 against {label}: {html.escape(', '.join(sweep['pareto'][cost]) or '-')}</li>" for cost, label in COSTS.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>dialogtune sweep</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        f"</style></head><body><h1>Sweep: {html.escape(str(sweep.get('config', '')))}</h1>"
        f"<p>{html.escape(_how(sweep))}; this invocation took {sweep.get('wall_seconds')} s.</p>"
        f"{scatter(sweep, 'trainable_params')}{scatter(sweep, 'train_seconds')}<h2>Pareto fronts</h2><ul>{fronts}</ul>"
        f"<h2>Every point</h2><table><tr>{head}</tr>{body}</table></body></html>"
    )


def write_sweep_report(root: Path, points: list[Any], grid: dict[str, list[Any]], info: dict[str, Any]) -> dict[str, Any]:
    """Write sweep.json, sweep.md, sweep.html and the two SVG plots into `root`; returns the data."""
    sweep = build_sweep(points, grid, info)
    runs.write_json(root / "sweep.json", sweep)
    runs.write_text(root / "sweep.md", to_markdown(sweep) + "\n")
    runs.write_text(root / "sweep.html", to_html(sweep))
    for cost in COSTS:
        runs.write_text(root / f"sweep-{cost}.svg", scatter(sweep, cost) + "\n")
    return sweep
