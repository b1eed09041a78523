"""`dialogtune score`: score any system's predictions against references from any supported file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dialogtune.config import DataConfig
from dialogtune.data import load_split, read_utf8
from dialogtune.errors import DialogtuneError
from dialogtune.breakdowns import by_topic, degenerate_outputs
from dialogtune.metrics import METRICS, output_lengths, parse_protocol, per_example_scores, rouge_summary_from_scores


def read_predictions(path: str | Path) -> tuple[list[str], list[str] | None]:
    """(predictions, ids): JSONL with `id` and `prediction`, or plain text with one summary per line."""
    path = Path(path)
    text = read_utf8(path, "predictions file")
    if path.suffix == ".jsonl":
        predictions, ids = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                ids.append(str(row["id"]))
                predictions.append(str(row["prediction"]))
            except (ValueError, KeyError, TypeError):
                raise DialogtuneError(f"{path} line {number} needs JSON with `id` and `prediction`") from None
        return predictions, ids
    return text.splitlines(), None


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


def score_files(
    predictions_path: str | Path | None,
    references_path: str | Path,
    protocol: str = "mean",
    resamples: int = 1000,
    seed: int = 0,
    prediction_field: str | None = None,
) -> dict[str, Any]:
    """Score predictions against references; predictions align by id (JSONL) or by order (text).

    With `prediction_field`, one reference set (e.g. summary1) is scored against the others:
    the agreement between humans, a ceiling for any system.
    """
    try:
        parse_protocol(protocol)
    except ValueError as err:
        raise DialogtuneError(str(err)) from None
    if (predictions_path is None) == (prediction_field is None):
        raise DialogtuneError("pass exactly one of --predictions FILE or --prediction-field NAME")
    records = load_split(DataConfig(dataset=str(references_path), loader="local"), "test")
    if prediction_field is not None:
        predictions, ids = _hold_out(records, prediction_field), [r["id"] for r in records]
    else:
        predictions, ids = read_predictions(predictions_path)
    if ids is None:
        if len(predictions) != len(records):
            raise DialogtuneError(
                f"{predictions_path} has {len(predictions)} lines but {references_path} has {len(records)} dialogues; "
                f"give one summary per line, in the references' order"
            )
    else:
        by_id = dict(zip(ids, predictions, strict=True))
        missing = [r["id"] for r in records if r["id"] not in by_id]
        if missing:
            raise DialogtuneError(
                f"{predictions_path} has no prediction for {len(missing)} ids, e.g. {missing[0]}; predict every dialogue"
            )
        predictions = [by_id[r["id"]] for r in records]
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
    result["degenerate"] = degenerate_outputs(predictions, [r["dialogue"] for r in records], [r["id"] for r in records])
    return result


def score_table(result: dict[str, Any]) -> str:
    """The score result as plain-text lines for the terminal: one metric per line with its CI."""
    lines = [f"protocol {result['protocol']}, {result['num_examples']} examples (points, 95% bootstrap CI)"]
    for m in METRICS:
        r = result["rouge"][m]
        lines.append(f"{m:10s} {r['score']:6.2f}  [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
    return "\n".join(lines)
