"""Compare evaluated runs: ROUGE with CIs, significance, cost, and a side-by-side of examples.

Writes report.json (a contract other tools read), report.md and a self-contained report.html.
The analysis (:mod:`.analysis`) reads and scores the run folders once; the renderers
(:mod:`.markdown`, :mod:`.htmlpage`) only turn its result into text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dialogtune import runs
from dialogtune.errors import DialogtuneError
from dialogtune.report.analysis import Analysis, analyse, build_report
from dialogtune.report.htmlpage import to_html
from dialogtune.report.markdown import rouge_table, to_markdown

__all__ = ["Analysis", "analyse", "build_report", "rouge_table", "to_html", "to_markdown", "write_report"]


def write_report(
    folders: list[str | Path], output: str | Path, num_examples: int = 5, seed: int = 0, *,
    min_topic_count: int | None = None, allow_mixed: bool = False, human: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write report.json, report.md and report.html into `output`; returns the report data.

    Two or more runs of which no pair was scored alike (split, references, protocol, dialogues) are an
    error unless `allow_mixed`: the report would then hold no paired test, only the reasons. `human`: the
    results of a review study (`dialogtune review-results`), shown as the human-evaluation section.
    """
    output = Path(output)
    analysis = analyse(folders, num_examples, seed, min_topic_count, human)
    report = analysis.report
    if len(report["runs"]) > 1 and not report["comparisons"] and not allow_mixed:
        reasons = "; ".join(f"{n['a']} vs {n['b']}: {n['reason']}" for n in report["not_compared"])
        raise DialogtuneError(
            f"no two runs were scored alike, so none can be compared ({reasons}); evaluate them on the same split, "
            "references and protocol, or pass --allow-mixed to write the report without paired tests"
        )
    runs.write_json(output / "report.json", report)
    runs.write_text(output / "report.md", to_markdown(report) + "\n")
    runs.write_text(output / "report.html", to_html(report, analysis.generated_words))
    return report
