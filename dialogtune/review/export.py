"""`dialogtune review-results`: a study database -> human-eval.json, judgements.csv, systems.csv, pairs.csv.

human-eval.json is what `dialogtune compare ... --human FILE` attaches to the comparison report
(FILE may also be the database itself).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from dialogtune import runs
from dialogtune.errors import DialogtuneError
from dialogtune.review.aggregate import aggregate, winner
from dialogtune.review.store import Store

RESULTS = "human-eval.json"
JUDGEMENT_COLUMNS = ("rater", "example_id", "item_id", "system_a", "system_b", "preference", "preferred", "consistency_a",
                     "relevance_a", "consistency_b", "relevance_b", "unsupported_a", "unsupported_b", "rouge1_a", "rouge1_b",
                     "facts_a", "facts_b", "shown", "answered")


def results(db: str | Path, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Aggregate the study in `db` (see :func:`dialogtune.review.aggregate.aggregate`), with the study's settings."""
    store = Store.open(db)
    out = aggregate(store.judgements(), store.systems(), resamples, seed)
    return {**out, "study": {**store.study(), "database": str(Path(db).resolve())}}


def load_human(path: str | Path) -> dict[str, Any]:
    """Human-evaluation results from a human-eval.json or a study database (aggregated with the defaults)."""
    path = Path(path)
    if not path.is_file():
        raise DialogtuneError(f"--human {path} does not exist; pass a human-eval.json from `dialogtune review-results`, or the study database")
    with open(path, "rb") as handle:
        if handle.read(16) == b"SQLite format 3\x00":
            return results(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("kind") != "dialogtune human evaluation":
        raise DialogtuneError(f"--human {path} is not human-evaluation results; pass the human-eval.json that `dialogtune review-results` wrote")
    return data


def _cell(value: Any) -> Any:
    """A CSV cell; text starting like a formula is quoted so a spreadsheet shows it instead of running it."""
    if isinstance(value, list):
        value = json.dumps(value)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv(header: tuple[str, ...] | list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    return out.getvalue()


def write_results(db: str | Path, output: str | Path | None = None, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Write the four exports into `output` (default: the database's folder); returns the results."""
    output = Path(output) if output else Path(db).resolve().parent
    data = results(db, resamples, seed)
    judgements = Store(db).judgements()
    runs.write_json(output / RESULTS, data)
    rows = [[j.get(c) if c != "preferred" else winner(j) or "tie" for c in JUDGEMENT_COLUMNS] for j in judgements]
    runs.write_text(output / "judgements.csv", _csv(JUDGEMENT_COLUMNS, rows))
    header = ["name", "hidden", "judgements", "wins", "ties", "losses", "win_rate", "bradley_terry", "bt_ci_low", "bt_ci_high",
              "consistency", "consistency_ci_low", "consistency_ci_high", "relevance", "relevance_ci_low", "relevance_ci_high",
              "marked_unsupported", "rouge1", "unsupported_rate"]
    rows = []
    for s in data["systems"]:
        scales = [x for c in ("consistency", "relevance") for x in (s[c]["mean"], *(s[c]["ci"] or [None, None]))]
        rows.append([s["name"], s["hidden"], s["judgements"], s["wins"], s["ties"], s["losses"], s["win_rate"], s["bradley_terry"],
                     *s["bradley_terry_ci"], *scales, s["marked_unsupported"], s["rouge1"], s["faithfulness_rate"]])
    runs.write_text(output / "systems.csv", _csv(header, rows))
    runs.write_text(output / "pairs.csv", _csv(["a", "b", "a_wins", "ties", "b_wins", "n"],
                                               [[p[k] for k in ("a", "b", "a_wins", "ties", "b_wins", "n")] for p in data["pairs"]]))
    return data
