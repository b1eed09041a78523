"""The `rows` protocol of `dialogtune score`: each (prediction, reference) row scored on its own and averaged
over rows, as `evaluate`-based scripts score the hub's DialogSum test split (1,500 rows of 500 dialogues).

`mean`, `max` and `field:NAME` (`dialogtune.metrics`) take one prediction per dialogue; `rows` lets every
reference row carry its own prediction, and weighs a dialogue by its number of references. When each
dialogue has one prediction and all dialogues have the same number of references, `rows` *is* `mean`: the
row scores are averaged per dialogue with the very operations `mean` uses, then over dialogues, so the
figures and their CIs are identical, not just close.

Confidence intervals resample dialogues, never rows: a dialogue's rows share its text and usually its
prediction, so they are not independent draws, and resampling them as if they were understates the
uncertainty. The interval is the cluster bootstrap of the row average (sum of the drawn dialogues' row
scores over their row count), which is the dialogue bootstrap of `mean` when every dialogue has as many rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dialogtune.assets import resolve
from dialogtune.config import DataConfig
from dialogtune.data import Record, normalise
from dialogtune.errors import DialogtuneError
from dialogtune.metrics import METRICS, per_example_scores, rouge_summary_from_scores
from dialogtune.sources import local_files, read_rows

ROWS = "rows"
# Resampled sums are drawn in blocks of at most this many indices (as dialogtune.significance does).
_MAX_BLOCK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class ReferenceRows:
    """A references file's rows before grouping, in file order.

    Row i has id `ids[i]` and holds references `start[i] .. start[i] + count[i] - 1` of record `record[i]`
    (one reference in the hub layout, summary1..3 in one row in the original layout). `fields` are the raw
    rows, for a file that holds the predictions too.
    """

    ids: list[str]
    where: list[str]
    record: list[int]
    start: list[int]
    count: list[int]
    fields: list[dict[str, Any]]

    @property
    def grouped(self) -> bool:
        """True when some dialogue spans several rows (the hub layout): per-row predictions then need `rows`."""
        return any(start > 0 for start in self.start)


def reference_files(cfg: DataConfig) -> list[Path]:
    """The files `load_split(cfg, "test", whole_file=True)` reads: the file itself, or a folder's test files."""
    source = Path(resolve(cfg.dataset, "dataset"))
    files = [source] if source.is_file() else local_files(source).get("test", [])
    if not files:
        raise DialogtuneError(
            f"{source} has no test file to read rows from; pass the references file itself to match predictions by row"
        )
    return files


def reference_rows(cfg: DataConfig, records: list[Record]) -> ReferenceRows:
    """The rows that `load_split(cfg, "test", whole_file=True)` grouped into `records`, mapped onto them."""
    files = reference_files(cfg)
    by_dialogue = {record["dialogue"]: i for i, record in enumerate(records)}
    filled = [0] * len(records)
    table = ReferenceRows([], [], [], [], [], [])
    for index, (where, row) in enumerate(row for file in files for row in read_rows(file)):
        # One row through the loader alone: its id, dialogue and references read exactly as when grouped.
        single = normalise([(where, row)], cfg, "test")[0]
        has_id = cfg.id_column in row or "fname" in row  # the loader's id columns; else it numbers rows test_<i>
        d = by_dialogue[single["dialogue"]]
        table.ids.append(single["id"] if has_id else f"test_{index}")
        table.where.append(where)
        table.record.append(d)
        table.start.append(filled[d])
        table.count.append(len(single["references"]))
        table.fields.append(row)
        filled[d] += len(single["references"])
    if filled != [len(r["references"]) for r in records]:  # the loader's grouping changed under us: a bug, not bad input
        raise RuntimeError("reference rows do not add up to the grouped records")
    return table


def spread(records: list[Record], table: ReferenceRows, row_predictions: list[str]) -> list[list[str]]:
    """Per-row predictions -> one prediction per reference of each record (a row's prediction for all its references)."""
    pairs: list[list[str]] = [[""] * len(r["references"]) for r in records]
    for d, start, count, prediction in zip(table.record, table.start, table.count, row_predictions, strict=True):
        pairs[d][start : start + count] = [prediction] * count
    return pairs


def align_rows_by_id(
    ids: list[str], predictions: list[str], table: ReferenceRows, predictions_path: Any, references_path: Any
) -> list[str]:
    """Per-row predictions keyed by row id (`test_K_j`) -> the references file's row order."""
    by_id = dict(zip(ids, predictions, strict=True))
    known = set(table.ids)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise DialogtuneError(
            f"{predictions_path} has {len(unknown)} ids that are neither dialogue nor row ids of {references_path}, "
            f"e.g. {unknown[0]}; score predictions against the split they were made for"
        )
    missing = [i for i in table.ids if i not in by_id]
    if missing:
        raise DialogtuneError(
            f"{predictions_path} has no prediction for {len(missing)} of {len(table.ids)} rows of {references_path}, "
            f"e.g. {missing[0]}; predict every row, or key predictions by dialogue"
        )
    return [by_id[i] for i in table.ids]


def per_row_refused(
    subject: str, table: ReferenceRows, records: list[Record], references_path: Any, protocol: str, row: int | None = None
) -> DialogtuneError:
    """Per-row predictions against references that group rows by dialogue, under a one-prediction-per-dialogue protocol.

    `row` is the offending row named in the message; by default the first that is not its dialogue's first.
    """
    r = next(i for i, start in enumerate(table.start) if start > 0) if row is None else row
    d = table.record[r]
    return DialogtuneError(
        f"{subject}, but {references_path} groups its {len(table.ids)} rows into {len(records)} dialogues (row {table.ids[r]} is "
        f"one of the {table.record.count(d)} rows of dialogue {records[d]['id']}) and protocol {protocol} scores one prediction "
        f"per dialogue; pass --protocol rows to score each row with its own prediction"
    )


def rows_if_readable(cfg: DataConfig, records: list[Record]) -> ReferenceRows | None:
    """The references' rows before grouping, or None for a folder without a test file (split by seed)."""
    try:
        return reference_rows(cfg, records)
    except DialogtuneError:
        return None


def column_predictions(table: ReferenceRows, cfg: DataConfig, column: str | None, path: Any) -> list[str]:
    """One prediction per row from a file that holds the references too (passed as --predictions and --references)."""
    name = column or "prediction"
    if re.fullmatch(re.escape(cfg.summary_column) + r"\d*", name):
        raise DialogtuneError(
            f"{path} is both --predictions and --references, and `{name}` would be both the prediction and the reference; "
            f"name the two columns apart with --prediction-column and --reference-column"
        )
    predictions = []
    for where, row in zip(table.where, table.fields):
        if not isinstance(row.get(name), str):
            problem = f"no `{name}` column (columns: {', '.join(map(str, row))})" if name not in row else f"`{name}` that is not text"
            raise DialogtuneError(
                f"{where} has {problem}; {path} is both --predictions and --references, so name its prediction column with "
                f"--prediction-column (references: `{cfg.summary_column}`, see --reference-column)"
            )
        predictions.append(row[name])
    return predictions


def rows_summary(
    pairs: list[list[str]], references: list[list[str]], ids: list[str], n_resamples: int = 1000, seed: int = 0
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """ROUGE averaged over (prediction, reference) rows, with dialogue-cluster bootstrap CIs.

    `pairs[d][j]` is the prediction scored against `references[d][j]`. Returns (the summary dict `score`
    prints and writes, per-dialogue mean scores for breakdowns).
    """
    flat = per_example_scores([p for preds in pairs for p in preds], [[r] for refs in references for r in refs], "mean")
    points = np.stack([flat[m] for m in METRICS], axis=1)  # (rows, metrics), C order like metrics' own arrays
    counts = np.array([len(refs) for refs in references])
    ends = np.cumsum(counts)
    # The same (k, metrics).mean(axis=0) as metrics' `mean` protocol, so rows == mean when predictions agree.
    per_dialogue = np.array([points[end - k : end].mean(axis=0) for end, k in zip(ends, counts)])
    dialogue_scores = {m: per_dialogue[:, j].copy() for j, m in enumerate(METRICS)}
    if len(set(counts.tolist())) == 1:
        # Equal row counts: the row average is the average of dialogue means, and the cluster bootstrap is the
        # dialogue bootstrap; computed that way, rows and mean agree to the last bit.
        summary = rouge_summary_from_scores(dialogue_scores, "mean", n_resamples, seed)
    else:
        summary = _unequal_rows_summary(points, counts, n_resamples, seed)
    differing = [i for i, preds in zip(ids, pairs) if len(set(preds)) > 1]
    summary.update(
        protocol=ROWS,
        num_rows=int(counts.sum()),
        rows={
            "rows": int(counts.sum()),
            "dialogues": len(pairs),
            "dialogues_with_differing_predictions": len(differing),
            "first_differing": differing[0] if differing else None,
        },
        gen_len=float(np.mean([len(p.split()) for preds in pairs for p in preds])),
        ref_len=float(np.mean([len(r.split()) for refs in references for r in refs])),
    )
    summary["bootstrap"]["unit"] = "dialogue"
    return summary, dialogue_scores


def _unequal_rows_summary(points: np.ndarray, counts: np.ndarray, n_resamples: int, seed: int) -> dict[str, Any]:
    """Row averages when dialogues have different numbers of rows: CIs from resampled dialogues' sums / row counts."""
    if int(n_resamples) < 1:
        raise DialogtuneError(f"the bootstrap needs 1 or more resamples, not {n_resamples}; 1000 is a sensible default")
    sums = np.add.reduceat(points, np.concatenate([[0], np.cumsum(counts)[:-1]]), axis=0)
    rouge = {}
    for j, metric in enumerate(METRICS):
        rng = np.random.default_rng(seed)  # the same draws for every metric, as rouge_summary_from_scores does
        ratios = np.empty(int(n_resamples))
        block = max(1, _MAX_BLOCK_ELEMENTS // len(counts))
        for begin in range(0, int(n_resamples), block):
            stop = min(begin + block, int(n_resamples))
            idx = rng.integers(0, len(counts), size=(stop - begin, len(counts)))
            ratios[begin:stop] = sums[idx, j].sum(axis=1) / counts[idx].sum(axis=1)
        low, high = np.quantile(ratios, [0.025, 0.975])
        rouge[metric] = {"score": float(points[:, j].mean()), "ci_low": float(low), "ci_high": float(high)}
    return {
        "protocol": ROWS,
        "num_examples": len(counts),
        "rouge": rouge,
        "bootstrap": {"n_resamples": int(n_resamples), "seed": seed, "confidence": 0.95},
    }
