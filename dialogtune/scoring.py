"""`dialogtune score`: score any system's predictions against references from any supported file."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from dialogtune.config import DataConfig
from dialogtune.data import Record, load_split
from dialogtune.rows import (
    ROWS, ReferenceRows, align_rows_by_id, column_predictions, per_row_refused, reference_files, reference_rows,
    rows_if_readable, rows_summary, spread,
)
from dialogtune.sources import MissingColumn, read_rows, read_utf8
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


def _read_jsonl(path: Path, lines: list[str], prediction_key: str | None, id_key: str = "id") -> tuple[list[str], list[str]]:
    predictions, ids, first_line = [], [], {}
    key = prediction_key
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = _json_object(line)
        if key is None and row is not None:
            # `summarize` writes {id, summary}; accept it as it is, but one field for the whole file. A row with
            # both is a references row with a prediction added (the hub's layout), so `prediction` wins.
            key = "summary" if "prediction" not in row and "summary" in row else "prediction"
        if row is None or not isinstance(row.get(id_key), (str, int)) or not isinstance(row.get(key), str):
            fields = f" (its fields: {', '.join(map(str, row))})" if row else ""
            hint = "check --prediction-column / --id-column" if prediction_key or id_key != "id" else (
                "`summary` (summarize's output) works too, or name the field with --prediction-column")
            need = f"`{id_key}` and `{key or 'prediction'}`"
            raise DialogtuneError(f"{path} line {number} needs JSON with {need} (text){fields}; {hint}")
        example_id = str(row[id_key])
        if example_id in first_line:
            raise DialogtuneError(
                f"{path} line {number} repeats id {example_id} (first on line {first_line[example_id]}); "
                f"give each dialogue (or row) one prediction"
            )
        first_line[example_id] = number
        ids.append(example_id)
        predictions.append(row[key])
    return predictions, ids


def read_predictions(
    path: str | Path, prediction_key: str | None = None, id_key: str = "id"
) -> tuple[list[str], list[str] | None]:
    """(predictions, ids): JSONL with `id_key` and `prediction` (or `summary`, or `prediction_key`), gzip allowed;
    otherwise plain text with one summary per line, and ids None."""
    path = Path(path)
    lines = _lines(read_utf8(path, "predictions file"))
    if _looks_like_jsonl(path, lines):
        return _read_jsonl(path, lines, prediction_key, id_key)
    if prediction_key is not None:
        raise DialogtuneError(
            f"--prediction-column {prediction_key} needs JSONL predictions, but {path} is plain text "
            f"(its first line is not a JSON object); drop the flag"
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
        base = re.sub(r"_\d+$", "", unknown[0])
        hint = "score predictions against the split they were made for"
        if base in known:  # test_0_1 against the original layout's test_0: the hub's per-reference rows
            hint = (f"{unknown[0]} looks like a row id of the hub layout (one row per reference) for dialogue {base}: "
                    f"score against references in that layout with --protocol rows, or key predictions by dialogue id")
        raise DialogtuneError(
            f"{predictions_path} has {len(unknown)} ids that {references_path} does not, e.g. {unknown[0]}; {hint}"
        )
    missing = [r["id"] for r in records if r["id"] not in by_id]
    if missing:
        raise DialogtuneError(f"{predictions_path} has no prediction for {len(missing)} ids, e.g. {missing[0]}; predict every dialogue")
    return [by_id[r["id"]] for r in records]


def _predictions(
    predictions_path: Any, references_path: Any, records: list[Record], cfg: DataConfig, protocol: str,
    prediction_column: str | None, id_column: str | None,
) -> tuple[list[str] | None, list[str] | None, ReferenceRows | None]:
    """(one prediction per dialogue, or None; one per reference row, or None; the rows, when read)."""
    if Path(predictions_path).resolve() == Path(references_path).resolve():
        table = reference_rows(cfg, records)
        rows = column_predictions(table, cfg, prediction_column, predictions_path)
        if not table.grouped:  # one row per dialogue, in the records' order
            return rows, None, table
        if protocol != ROWS:
            raise per_row_refused(f"{predictions_path} holds one prediction per row", table, records, references_path, protocol)
        return None, rows, table
    predictions, ids = read_predictions(predictions_path, prediction_column, id_column or "id")
    if ids is None:
        if len(predictions) == len(records):
            return predictions, None, None
        table = rows_if_readable(cfg, records)
        if table is not None and len(predictions) == len(table.ids):
            if protocol != ROWS:
                subject = f"{predictions_path} has {len(predictions)} lines, one per row"
                raise per_row_refused(subject, table, records, references_path, protocol)
            return None, predictions, table
        grouped = table is not None and len(table.ids) != len(records)
        unit = "row" if grouped and protocol == ROWS else "dialogue"
        targets = table.ids if unit == "row" else [r["id"] for r in records]
        first = (f"the first {unit} without a line is {targets[len(predictions)]}" if len(predictions) < len(targets)
                 else f"line {len(targets) + 1} has no {unit}")
        raise DialogtuneError(
            f"{predictions_path} has {len(predictions)} lines but {references_path} has {len(records)} dialogues"
            f"{f' in {len(table.ids)} rows' if grouped else ''} ({first}); "
            f"give one summary per line in the references' order (per dialogue, or per row with --protocol rows), "
            f"or JSONL lines with `id` and `prediction` to align by id"
        )
    known = {r["id"] for r in records}
    if not all(i in known for i in ids):
        table = rows_if_readable(cfg, records)
        row_ids = set(table.ids) if table is not None else set()
        if all(i in row_ids for i in ids):
            if protocol != ROWS and table.grouped:
                first = next(i for i in ids if i not in known)
                raise per_row_refused(f"{predictions_path} keys its {len(ids)} predictions by row id (e.g. {first})", table,
                                       records, references_path, protocol, table.ids.index(first))
            return None, align_rows_by_id(ids, predictions, table, predictions_path, references_path), table
    return _align_by_id(predictions, ids, records, predictions_path, references_path), None, None


def _references(cfg: DataConfig, id_column: str | None) -> list[Record]:
    """The references file as records, its missing columns named in `score`'s flags."""
    if id_column is not None:  # the loader falls back to `fname` or row numbers; a named column must exist
        where, row = next(read_rows(reference_files(cfg)[0]))
        if id_column not in row:
            columns = ", ".join(map(str, row))
            raise DialogtuneError(f"{where} has no `{id_column}` column (columns: {columns}); check --id-column")
    try:
        records = load_split(cfg, "test", whole_file=True)
    except MissingColumn as err:
        flag = "--dialogue-column" if err.column == cfg.dialogue_column else "--reference-column"
        columns = ", ".join(err.present)
        raise DialogtuneError(f"{err.where} has no `{err.column}` column (columns: {columns}); name it with {flag}") from None
    return records


def score_files(
    predictions_path: str | Path | None,
    references_path: str | Path,
    protocol: str = "mean",
    resamples: int = 1000,
    seed: int = 0,
    prediction_field: str | None = None,
    prediction_key: str | None = None,
    *,
    reference_column: str | None = None,
    id_column: str | None = None,
    dialogue_column: str | None = None,
) -> dict[str, Any]:
    """Score predictions against references; predictions align by id (JSONL) or by order (text).

    `prediction_key` names the predictions' column (`--prediction-column`; default `prediction`, then `summary`);
    `reference_column`, `id_column` and `dialogue_column` name the references' (data.summary_column etc.).
    A file passed as both predictions and references gives each of its rows' prediction column.

    With `prediction_field`, one reference set (e.g. summary1) is scored against the others:
    the agreement between humans, a ceiling for any system.

    Protocol `rows` (see `dialogtune.rows`) averages over (prediction, reference) rows and also takes one
    prediction per row: by row id, one text line per row, or the references file's own prediction column.
    """
    if protocol != ROWS:
        try:
            parse_protocol(protocol)
        except ValueError as err:
            raise DialogtuneError(f"{str(err).rstrip('.')}; `score` also takes 'rows' (each reference row on its own)") from None
    if (predictions_path is None) == (prediction_field is None):
        raise DialogtuneError("pass exactly one of --predictions FILE or --prediction-field NAME")
    if prediction_key is not None and predictions_path is None:
        raise DialogtuneError("--prediction-column names a column of the --predictions file; pass --predictions FILE with it")
    names = {"summary_column": reference_column, "id_column": id_column, "dialogue_column": dialogue_column}
    cfg = DataConfig(dataset=str(references_path), loader="local", **{k: v for k, v in names.items() if v})
    records = _references(cfg, id_column)
    per_row, table = None, None
    if prediction_field is not None:
        predictions = _hold_out(records, prediction_field)
    else:
        predictions, per_row, table = _predictions(
            predictions_path, references_path, records, cfg, protocol, prediction_key, id_column
        )
    references = [r["references"] for r in records]
    reference_names = [r["reference_names"] for r in records]
    try:
        if protocol == ROWS:
            if per_row is not None:
                pairs = spread(records, table, per_row)
            else:
                pairs = [[p] * len(refs) for p, refs in zip(predictions, references)]
            result, scores = rows_summary(pairs, references, [r["id"] for r in records], resamples, seed)
        else:
            # Per-example scores once, for both the summary and the topic breakdown; the result is the same
            # dict metrics.rouge_summary returns.
            pairs = [[p] for p in predictions]
            scores = per_example_scores(predictions, references, protocol, reference_names)
            result = rouge_summary_from_scores(scores, protocol, resamples, seed)
            result.update(output_lengths(predictions, references, protocol, reference_names))
    except ValueError as err:
        raise DialogtuneError(str(err).splitlines()[0]) from None
    result["predictions_from"] = f"field:{prediction_field}" if prediction_field else str(predictions_path)
    result["predictions_per"] = "row" if per_row is not None else "dialogue"
    result["references"] = str(references_path)
    result["by_topic"] = by_topic(scores["rouge1"], [r["topic"] or "(none)" for r in records])
    # Output checks look at each distinct prediction of a dialogue once: per dialogue, as `mean` does, unless
    # a dialogue's rows carry different predictions.
    checked = [(d, p) for d, preds in enumerate(pairs) for p in dict.fromkeys(preds)]
    outputs, dialogues = [p for _, p in checked], [records[d]["dialogue"] for d, _ in checked]
    result["degenerate"] = degenerate_outputs(outputs, dialogues, [records[d]["id"] for d, _ in checked])
    # Facts the dialogue does not support; the per-summary lists stay out, as in report.json.
    faithful = faithfulness_summary(outputs, dialogues, resamples, seed)
    result["faithfulness"] = {k: v for k, v in faithful.items() if k != "per_example"}
    return result


def score_table(result: dict[str, Any]) -> str:
    """The score result as plain-text lines for the terminal: one metric per line with its CI."""
    rows = result.get("rows")
    if rows is None:
        lines = [f"protocol {result['protocol']}, {result['num_examples']} examples (points, 95% bootstrap CI)"]
    else:
        lines = [f"protocol rows, averaged over {rows['rows']} (prediction, reference) rows of {rows['dialogues']} dialogues "
                 f"(points, 95% bootstrap CI resampling dialogues)"]
        if rows["dialogues_with_differing_predictions"]:
            lines.append(f"{rows['dialogues_with_differing_predictions']} of {rows['dialogues']} dialogues have different "
                         f"predictions across their rows (e.g. {rows['first_differing']}); each row was scored with its own")
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
