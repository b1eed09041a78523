"""Compare evaluated runs: ROUGE with CIs, significance, cost, and a side-by-side of examples.

Writes report.json (a contract other tools read), report.md and a self-contained report.html.
The analysis (:mod:`.analysis`) reads and scores the run folders once; the renderers
(:mod:`.markdown`, :mod:`.htmlpage`) only turn its result into text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dialogtune import runs
from dialogtune.report.analysis import Analysis, analyse, build_report
from dialogtune.report.htmlpage import to_html
from dialogtune.report.markdown import rouge_table, to_markdown

__all__ = ["Analysis", "analyse", "build_report", "rouge_table", "to_html", "to_markdown", "write_report"]


def write_report(folders: list[str | Path], output: str | Path, num_examples: int = 5, seed: int = 0) -> dict[str, Any]:
    """Write report.json, report.md and report.html into `output`; returns the report data."""
    output = Path(output)
    analysis = analyse(folders, num_examples, seed)
    runs.write_json(output / "report.json", analysis.report)
    runs.write_text(output / "report.md", to_markdown(analysis.report) + "\n")
    runs.write_text(output / "report.html", to_html(analysis.report, analysis.generated_words))
    return analysis.report
