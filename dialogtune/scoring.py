"""`dialogtune score`: score any system's predictions against references from any supported file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dialogtune.config import DataConfig
from dialogtune.data import load_split
from dialogtune.sources import read_utf8
from dialogtune.errors import DialogtuneError
from dialogtune.faithfulness import faithfulness_summary
from dialogtune.breakdowns import by_topic, degenerate_outputs
from dialogtune.metrics import METRICS, output_lengths, parse_protocol, per_example_scores, rouge_summary_from_scores

log = logging.getLogger(__name__)


def _lines(text: str) -> list[str]:
    """Lines split at newlines only (CRLF allowed): str.splitlines also splits at U+2028, form feeds and
    other separators that can sit inside a summary, which shifts every later prediction by one."""
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty prediction
    return lines


def _json_object(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def _looks_like_jsonl(path: Path, lines: list[str]) -> bool:
    """Decided by the content, not the name: JSONL saved as .json, .txt or .JSONL must not be read as text."""
    if path.name.lower().removesuffix(".gz").endswith(".jsonl"):
        return True  # so a damaged JSONL file fails on its bad line instead of being scored as text
    first = next((line for line in lines if line.strip()), None)
    if first is None or _json_object(first) is None:
        return False
    if not path.name.lower().removesuffix(".gz").endswith(".json"):
        log.warning("%s holds JSON lines, so it is read as JSONL (predictions aligned by id), not as plain text", path)
    return True


def _read_jsonl(path: Path, lines: list[str], prediction_key: str | None) -> tuple[list[str], list[str]]:
    predictions, ids, first_line = [], [], {}
    key = prediction_key
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = _json_object(line)
        if key is None and row is not None:
            # `summarize` writes {id, summary}; accept it as it is, but one field for the whole file.
            key = "summary" if "prediction" not in row and "summary" in row else "prediction"
        if row is None or not isinstance(row.get("id"), (str, int)) or not isinstance(row.get(key), str):
            hint = "check --prediction-key" if prediction_key else "`summary` (summarize's output) works too, or name the field with --prediction-key"
            raise DialogtuneError(f"{path} line {number} needs JSON with `id` and `{key or 'prediction'}` (text); {hint}")
        example_id = str(row["id"])
        if example_id in first_line:
            raise DialogtuneError(
                f"{path} line {number} repeats id {example_id} (first on line {first_line[example_id]}); give each dialogue one prediction"
            )
        first_line[example_id] = number
        ids.append(example_id)
        predictions.append(row[key])
    return predictions, ids


def read_predictions(path: str | Path, prediction_key: str | None = None) -> tuple[list[str], list[str] | None]:
    """(predictions, ids): JSONL with `id` and `prediction` (or `summary`, or `prediction_key`), gzip allowed;
    otherwise plain text with one summary per line, and ids None."""
    path = Path(path)
    lines = _lines(read_utf8(path, "predictions file"))
    if _looks_like_jsonl(path, lines):
        return _read_jsonl(path, lines, prediction_key)
    if prediction_key is not None:
        raise DialogtuneError(
            f"--prediction-key {prediction_key} needs JSONL predictions, but {path} is plain text (its first line is not a JSON object); drop the flag"
        )
    return lines, None


def _hold_out(records: list[dict], field: str) -> list[str]:
    """Take reference `field` out of every record as the prediction; the others stay as references."""
    predictions = []
    for record in records:
        names = record["reference_names"]
        if field not in names:
            raise DialogtuneError(f"dialogue {record['id']} has no reference `{field}` (it has {', '.join(names)}); pick one of those")
        if len(names) < 2:
            raise DialogtuneError(f"dialogue {record['id']} has only `{field}`; nothing is left to score it against")
        k = names.index(field)
        predictions.append(record["references"][k])
        record["references"] = record["references"][:k] + record["references"][k + 1 :]
        record["reference_names"] = names[:k] + names[k + 1 :]
    return predictions


def _align_by_id(predictions: list[str], ids: list[str], records: list[dict], predictions_path: Any, references_path: Any) -> list[str]:
    """Predictions in the references' order; every id predicted once (duplicates are refused on reading)."""
    by_id = dict(zip(ids, predictions, strict=True))
    known = {r["id"] for r in records}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise DialogtuneError(
            f"{predictions_path} has {len(unknown)} ids that {references_path} does not, e.g. {unknown[0]}; "
            f"score predictions against the split they were made for"
        )
    missing = [r["id"] for r in records if r["id"] not in by_id]
    if missing:
        raise DialogtuneError(f"{predictions_path} has no prediction for {len(missing)} ids, e.g. {missing[0]}; predict every dialogue")
    return [by_id[r["id"]] for r in records]


def score_files(
    predictions_path: str | Path | None,
    references_path: str | Path,
    protocol: str = "mean",
    resamples: int = 1000,
    seed: int = 0,
    prediction_field: str | None = None,
    prediction_key: str | None = None,
) -> dict[str, Any]:
    """Score predictions against references; predictions align by id (JSONL) or by order (text).

    `prediction_key` names the JSONL field holding the prediction (default `prediction`, then `summary`).

    With `prediction_field`, one reference set (e.g. summary1) is scored against the others:
    the agreement between humans, a ceiling for any system.
    """
    try:
        parse_protocol(protocol)
    except ValueError as err:
        raise DialogtuneError(str(err)) from None
    if (predictions_path is None) == (prediction_field is None):
        raise DialogtuneError("pass exactly one of --predictions FILE or --prediction-field NAME")
    if prediction_key is not None and predictions_path is None:
        raise DialogtuneError("--prediction-key names a field of the --predictions file; pass --predictions FILE with it")
    records = load_split(DataConfig(dataset=str(references_path), loader="local"), "test", whole_file=True)
    if prediction_field is not None:
        predictions, ids = _hold_out(records, prediction_field), [r["id"] for r in records]
    else:
        predictions, ids = read_predictions(predictions_path, prediction_key)
    if ids is None:
        if len(predictions) != len(records):
            raise DialogtuneError(
                f"{predictions_path} has {len(predictions)} lines but {references_path} has {len(records)} dialogues; "
                f"give one summary per line in the references' order, or JSONL lines with `id` and `prediction` to align by id"
            )
    else:
        predictions = _align_by_id(predictions, ids, records, predictions_path, references_path)
    references = [r["references"] for r in records]
    reference_names = [r["reference_names"] for r in records]
    try:
        # Per-example scores once, for both the summary and the topic breakdown; the result is the same
        # dict metrics.rouge_summary returns.
        scores = per_example_scores(predictions, references, protocol, reference_names)
        result = rouge_summary_from_scores(scores, protocol, resamples, seed)
        result.update(output_lengths(predictions, references, protocol, reference_names))
    except ValueError as err:
        raise DialogtuneError(str(err).splitlines()[0]) from None
    result["predictions_from"] = f"field:{prediction_field}" if prediction_field else str(predictions_path)
    result["references"] = str(references_path)
    result["by_topic"] = by_topic(scores["rouge1"], [r["topic"] or "(none)" for r in records])
    dialogues = [r["dialogue"] for r in records]
    result["degenerate"] = degenerate_outputs(predictions, dialogues, [r["id"] for r in records])
    # Facts the dialogue does not support; the per-summary lists stay out, as in report.json.
    faithful = faithfulness_summary(predictions, dialogues, resamples, seed)
    result["faithfulness"] = {k: v for k, v in faithful.items() if k != "per_example"}
    return result


def score_table(result: dict[str, Any]) -> str:
    """The score result as plain-text lines for the terminal: one metric per line with its CI."""
    lines = [f"protocol {result['protocol']}, {result['num_examples']} examples (points, 95% bootstrap CI)"]
    for m in METRICS:
        r = result["rouge"][m]
        lines.append(f"{m:10s} {r['score']:6.2f}  [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
    f = result.get("faithfulness")
    if f:
        lines.append(
            f"unsupported facts per summary {f['rate']:.3f} [{f['rate_ci'][0]:.3f}, {f['rate_ci'][1]:.3f}]; "
            f"summaries with >=1: {100 * f['share']:.1f}% [{100 * f['share_ci'][0]:.1f}, {100 * f['share_ci'][1]:.1f}] "
            f"({f['facts_checked']} facts checked)"
        )
    return "\n".join(lines)
