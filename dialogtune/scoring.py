"""`dialogtune score`: score any system's predictions against references from any supported file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dialogtune.config import DataConfig
from dialogtune.data import load_split
from dialogtune.errors import DialogtuneError
from dialogtune.metrics import METRICS, parse_protocol, rouge_summary


def read_predictions(path: str | Path) -> tuple[list[str], list[str] | None]:
    """(predictions, ids): JSONL with `id` and `prediction`, or plain text with one summary per line."""
    path = Path(path)
    if not path.is_file():
        raise DialogtuneError(f"predictions file {path} does not exist; check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DialogtuneError(f"{path} is not UTF-8 (byte at offset {err.start}); re-save it as UTF-8") from None
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


def score_files(
    predictions_path: str | Path, references_path: str | Path, protocol: str = "mean", resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Score predictions against references; predictions align by id (JSONL) or by order (text)."""
    try:
        parse_protocol(protocol)
    except ValueError as err:
        raise DialogtuneError(str(err)) from None
    records = load_split(DataConfig(dataset=str(references_path), loader="local"), "test")
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
    try:
        result = rouge_summary(
            predictions, [r["references"] for r in records], protocol, [r["reference_names"] for r in records], resamples, seed
        )
    except ValueError as err:
        raise DialogtuneError(str(err).splitlines()[0]) from None
    return result


def score_table(result: dict[str, Any]) -> str:
    lines = [f"protocol {result['protocol']}, {result['num_examples']} examples (points, 95% bootstrap CI)"]
    for m in METRICS:
        r = result["rouge"][m]
        lines.append(f"{m:10s} {r['score']:6.2f}  [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
    return "\n".join(lines)
