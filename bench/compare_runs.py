"""Compare two speed-benchmark runs (bench_speed.py --output JSON): is every ratio reproducible?

    .venv/bin/python bench/compare_runs.py a.json b.json          # exit 0: all within +-15 %, 1: not, 2: unreadable file

Prints each ratio (the paired medians: training dialogtune / notebook, LoRA / full tokens/s, levers,
evaluation) from both runs, the relative difference (B - A) / A, and a verdict. Ratios, not tokens/s,
are compared: they are what a gate can hold across hosts, since host speed cancels within a round.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TOLERANCE = 0.15


def ratios(report: dict[str, Any]) -> dict[str, float]:
    """Every ratio in one run's JSON, keyed by what it compares."""
    found: dict[str, float] = {}

    def take(name: str, value: float | None) -> None:
        if value is not None:
            found[name] = value

    for row in report.get("train", []):
        take(f"train {row['shape']} {row['method']}: dialogtune / notebook tok/s", row.get("ratio"))
        take(f"train {row['shape']} {row['method']}: lora / full tok/s", row.get("tokens_vs_full"))
    for row in report.get("lora_vs_full", []):
        take(f"train {row['shape']} lora ({row['variant']}) / full tok/s", row.get("tokens_vs_full"))
    for row in report.get("levers", []):
        take(f"lever {row['shape']} {row['method']} {row['lever']}: vs default tok/s", row.get("vs_default"))
    for row in report.get("eval", []):
        take(f"eval {row['shape']}: dialogtune / notebook summaries/s", row.get("ratio"))
    return found


def compare(a: dict[str, Any], b: dict[str, Any], tolerance: float = TOLERANCE) -> tuple[list[dict[str, Any]], bool]:
    """One row per ratio present in both runs (name, a, b, relative difference) and whether all are within."""
    ra, rb = ratios(a), ratios(b)
    rows = [{"name": name, "a": ra[name], "b": rb[name], "diff": (rb[name] - ra[name]) / ra[name]}
            for name in ra if name in rb]
    missing = sorted(set(ra) ^ set(rb))
    return rows, bool(rows) and not missing and all(abs(r["diff"]) <= tolerance for r in rows)


def load(path: Path) -> dict[str, Any]:
    """One run's JSON, or exit with one line saying which file is unusable and why."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        print(f"{path}: cannot read it as a bench_speed.py --output JSON ({error}); pass two such files", file=sys.stderr)
        raise SystemExit(2) from None  # 2: a usage error, not a verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="the first run's JSON (bench_speed.py --output)")
    parser.add_argument("b", type=Path, help="the second run's JSON")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest relative difference allowed (0.15 = +-15 %%)")
    args = parser.parse_args(argv)
    a, b = (load(path) for path in (args.a, args.b))
    rows, ok = compare(a, b, args.tolerance)
    for name, report in (("A", a), ("B", b)):
        print(f"{name}: {report.get('machine', '?')}")
    print(f"\n{'ratio':70s} {'A':>7s} {'B':>7s} {'(B-A)/A':>8s}")
    for r in rows:
        flag = "" if abs(r["diff"]) <= args.tolerance else "  <- outside"
        print(f"{r['name']:70s} {r['a']:6.2f}x {r['b']:6.2f}x {r['diff']:+8.1%}{flag}")
    for name in sorted(set(ratios(a)) ^ set(ratios(b))):
        print(f"{name:70s} in one run only")
    verdict = "all within" if ok else "NOT all within"
    print(f"\n{verdict} +-{args.tolerance:.0%} ({len(rows)} ratios)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
