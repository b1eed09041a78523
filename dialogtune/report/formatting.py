"""How the report's numbers read as text; shared by the Markdown and HTML renderers."""

from __future__ import annotations

from typing import Any

from dialogtune.metrics import METRICS


def human_bytes(n: int | None) -> str:
    """A byte count in B/KB/MB/GB (powers of 1024); "-" when unknown or zero."""
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: floats to `digits` places and ints with thousands separators; "-" when missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def method_label(run: dict[str, Any], report: dict[str, Any]) -> str:
    """The method, with the engine once any run used other than torch: "full (torch)", "full (ct2 int8)"."""
    if all(r.get("backend", "torch") == "torch" for r in report["runs"]):
        return run["method"]
    engine = " ".join(x for x in (run.get("backend", "torch"), run.get("quantization")) if x)
    return f"{run['method']} ({engine})"


def comparison_text(comparison: dict[str, Any]) -> tuple[str, str]:
    """(title, detail) of one paired comparison, e.g. ("lora vs full", "rouge1 +1.20 [...] p=0.030; ...")."""
    parts = []
    for m in METRICS:
        t = comparison["metrics"][m]
        mark = "" if t["significant"] else " (n.s.)"
        parts.append(f"{m} {t['diff']:+.2f} [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}] p={t['p_value']:.3f}{mark}")
    if comparison.get("note"):
        parts.append(comparison["note"])
    return f"{comparison['a']} vs {comparison['b']}", "; ".join(parts)


SCORED_ON = (("split", "split"), ("protocol", "ROUGE protocol"), ("num_examples", "dialogues"))
LEGEND = ("Facts (names, numbers, times, dates, codes) the dialogue does not support are marked {mark}; "
          "the human summary is each dialogue's first reference.")


def scored_on(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(what every run shares, what differs by run) among split, protocol and number of dialogues."""
    runs_ = report["runs"]
    common = {k: runs_[0][k] for k, _ in SCORED_ON if len({str(r[k]) for r in runs_}) == 1}
    differing = {r["name"]: {k: r[k] for k, _ in SCORED_ON if k not in common} for r in runs_}
    return common, differing if any(differing.values()) else {}


def scored_on_text(values: dict[str, Any], code: str = "`") -> str:
    """E.g. "split `test`, ROUGE protocol `max`, 500 dialogues" for the given fields."""
    parts = []
    for key, label in SCORED_ON:
        if key in values:
            parts.append(f"{values[key]} {label}" if key == "num_examples" else f"{label} {code}{values[key]}{code}")
    return ", ".join(parts)


def breakdown_rows(report: dict[str, Any], key: str, label_key: str) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """(label, {run name: row}) for every topic or bucket any run lists, matched by label, not position."""
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for r in report["runs"]:
        for row in r[key]:
            rows.setdefault(str(row[label_key]), {})[r["name"]] = row
    return list(rows.items())


def score_cell(row: dict[str, Any] | None) -> str:
    """A breakdown cell: mean score, with its CI when there is one; "-" when the run has no such row."""
    if row is None or row["score"] is None:
        return "-"
    ci = f" [{row['ci'][0]:.1f}, {row['ci'][1]:.1f}]" if row.get("ci") else ""
    return f"{row['score']:.2f}{ci}"


def faithfulness_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(name, facts checked, unsupported per summary [CI], share with >= 1 [CI]); the human references first."""
    entries = [("human (reference)", report["human_faithfulness"])] + [(r["name"], r["faithfulness"]) for r in report["runs"]]
    return [
        (name, fmt(f["facts_checked"]), f"{f['rate']:.3f} [{f['rate_ci'][0]:.3f}, {f['rate_ci'][1]:.3f}]",
         f"{100 * f['share']:.1f}% [{100 * f['share_ci'][0]:.1f}, {100 * f['share_ci'][1]:.1f}]")
        for name, f in entries
    ]


def faithfulness_comparison_text(comparison: dict[str, Any]) -> tuple[str, str]:
    """(title, detail) of the paired test of unsupported facts per summary (negative: a invents fewer)."""
    t = comparison["faithfulness"]
    mark = "" if t["significant"] else " (n.s.)"
    detail = f"unsupported per summary {t['diff']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}] p={t['p_value']:.3f}{mark}"
    return f"{comparison['a']} vs {comparison['b']}", detail


def not_compared_text(entry: dict[str, str]) -> str:
    """E.g. "lora vs full: not compared: protocol max vs mean"."""
    return f"{entry['a']} vs {entry['b']}: not compared: {entry['reason']}"
