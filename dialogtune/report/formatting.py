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


def comparison_text(comparison: dict[str, Any]) -> tuple[str, str]:
    """(title, detail) of one paired comparison, e.g. ("lora vs full", "rouge1 +1.20 [...] p=0.030; ...")."""
    parts = []
    for m in METRICS:
        t = comparison["metrics"][m]
        mark = "" if t["significant"] else " (n.s.)"
        parts.append(f"{m} {t['diff']:+.2f} [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}] p={t['p_value']:.3f}{mark}")
    return f"{comparison['a']} vs {comparison['b']}", "; ".join(parts)
