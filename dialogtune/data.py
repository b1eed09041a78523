"""Load dialogue–summary data from the hub, local files or the bundled corpus into one record shape.

Every source becomes a list of records ``{id, dialogue, references, reference_names, topic}``.
Rows that share a dialogue (the hub DialogSum test split stores one row per reference) become one
record with several references, so multi-reference ROUGE sees 500 dialogues, not 1,500 rows.
Data whose file names carry no split (one file, or a folder of unnamed files) is split into
train/validation/test by seed, over dialogues; `check_overlap` refuses evaluation dialogues that are
also train dialogues, unless allowed, so no run trains on what it is scored on without saying so.

Reading files and hub datasets is `sources`' job; the part sizes and the overlap rule are `splits`'.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict

from dialogtune.assets import resolve
from dialogtune.config import DataConfig
from dialogtune.errors import DialogtuneError
from dialogtune.sources import (
    SPLIT_ALIASES, MissingColumn, Row, canonical_split, hub_rows, is_local, local_files, read_rows,
)
from dialogtune.splits import check_overlap, comparable, part_sizes

log = logging.getLogger(__name__)

class Record(TypedDict):
    id: str
    dialogue: str
    references: list[str]
    reference_names: list[str]
    topic: str


class MissingSplit(DialogtuneError):
    """The data has no split of that name (a caller may treat that as "nothing to check")."""


def _records(
    cfg: DataConfig, split: str, require_references: bool = True, whole_file: bool = False, columns: tuple[str, ...] = ()
) -> list[Record]:
    """One split's records; a part of a seeded split may be empty, and the caller decides whether that is an error."""
    source = resolve(cfg.dataset, "dataset")
    if is_local(cfg, source):
        path = Path(source)
        if whole_file and path.is_file():
            return normalise(list(read_rows(path)), cfg, split, require_references, columns)
        files = local_files(path)
        if split in files:
            return normalise([row for file in files[split] for row in read_rows(file)], cfg, split, require_references, columns)
        if split in SPLIT_ALIASES and not SPLIT_ALIASES.keys() & files.keys():
            # No file says which split it is: train and test are drawn from the same pool, never the same rows.
            return _seeded_split(cfg, path, files, require_references, columns)[0][split]
        raise MissingSplit(
            f"{source} has no `{split}` split (found: {', '.join(sorted(files))}); pick one of those, "
            f"name a file e.g. {split}.jsonl, or set the data.*_split options"
        )
    rows, available = hub_rows(source, split)
    if not rows and split not in available:
        raise MissingSplit(
            f"dataset `{source}` has no `{split}` split (found: {', '.join(available)}); set the data.*_split options"
        )
    return normalise(rows, cfg, split, require_references, columns)


def _seeded_split(
    cfg: DataConfig, source: Path, files: dict[str, list[Path]], require_references: bool = True, columns: tuple[str, ...] = ()
) -> tuple[dict[str, list[Record]], dict[str, Any]]:
    """Train/validation/test drawn from a source whose file names carry no split, and what was done (for metadata).

    The unit is a dialogue after normalisation, and dialogues that differ only in case, spacing or
    punctuation stay together, so `check_overlap` can never find the split's own parts overlapping.
    """
    name = source.name.split(".")[0] or "row"  # the id prefix of rows without an id column
    rows = [row for file in sorted(f for group in files.values() for f in group) for row in read_rows(file)]
    records = normalise(rows, cfg, name, require_references, columns)
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(comparable(record["dialogue"]), []).append(index)
    order = list(groups.values())
    random.Random(cfg.split_seed).shuffle(order)
    parts: dict[str, list[Record]] = {}
    start = 0
    for split, size in zip(SPLIT_ALIASES, part_sizes(len(order), cfg.split_sizes)):
        parts[split] = [records[i] for i in sorted(i for group in order[start : start + size] for i in group)]
        start += size
    sizes = {split: len(part) for split, part in parts.items()}
    log.info(
        "split %s (%d dialogues) into train/validation/test = %s with seed %d",
        source, len(records), "/".join(map(str, sizes.values())), cfg.split_seed,
    )
    info = {"source": str(source), "sizes": sizes, "seed": cfg.split_seed, "fractions": list(cfg.split_sizes)}
    return parts, info


def split_info(cfg: DataConfig) -> dict[str, Any] | None:
    """How a source without named splits was split (for the run's metadata); None when the data has real splits."""
    source = resolve(cfg.dataset, "dataset")
    if not is_local(cfg, source):
        return None
    files = local_files(Path(source))
    if SPLIT_ALIASES.keys() & files.keys():
        return None
    return _seeded_split(cfg, Path(source), files)[1]


def _column(row: dict[str, Any], wanted: str, fallback: str | None = None) -> str | None:
    if wanted in row:
        return wanted
    if fallback and fallback in row:
        return fallback
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).strip()


def _layout(id_col: str | None, names: list[str], cfg: DataConfig, with_references: bool) -> str:
    """A row's layout in words: which id column it uses and whether it has one or numbered summaries."""
    ident = f"`{id_col}`" if id_col else "no id column"
    if not with_references:
        return ident
    if names == [cfg.summary_column]:
        return f"{ident} + `{cfg.summary_column}`"
    return f"{ident} + `{cfg.summary_column}1`, `{cfg.summary_column}2`, ..."


def normalise(
    rows: Iterable[Row], cfg: DataConfig, split: str, require_references: bool = True, columns: tuple[str, ...] = ()
) -> list[Record]:
    """Rows in any supported layout -> records, merging rows that share a dialogue; `columns` are kept as the
    record's `fields` (e.g. a task's `question`), and rows that differ in them stay apart.

    One split must use one layout (the hub's id/summary or the original fname/summary1..3): mixed, the
    same dialogue would be read once with one reference and once with three, and `field:summary1` would
    mean different things per row. Two different dialogues under one id are refused, since predictions,
    breakdowns and comparisons are keyed by id; the same dialogue under one id is merged on purpose.
    """
    records: dict[Any, Record] = {}  # by dialogue, or by dialogue and `columns` values
    ids: dict[Any, list[str]] = {}
    first_where: dict[Any, str] = {}
    id_rows: dict[str, tuple[str, str]] = {}  # id -> (where, dialogue) of its first row
    layout: tuple[str, str] | None = None  # (where, description) of the first row
    count = 0
    for index, (where, row) in enumerate(rows):
        count += 1
        dialogue_col = _column(row, cfg.dialogue_column)
        if dialogue_col is None:
            raise MissingColumn(
                f"{where} has no `{cfg.dialogue_column}` column (columns: {', '.join(map(str, row))}); "
                f"set data.dialogue_column to the dialogue column's name", where, cfg.dialogue_column, list(map(str, row)),
            )
        absent = [c for c in columns if c not in row]
        if absent:
            raise MissingColumn(f"{where} has no `{absent[0]}` column", where, absent[0], list(map(str, row)))
        dialogue = _text(row[dialogue_col])
        if not dialogue:
            raise DialogtuneError(f"{where}: `{dialogue_col}` is empty; fill it in or remove the row")
        id_col = _column(row, cfg.id_column, "fname")
        row_id = _text(row[id_col]) if id_col else f"{split}_{index}"
        names = _reference_columns(row, cfg.summary_column)
        if not names and require_references:
            raise MissingColumn(
                f"{where} has no `{cfg.summary_column}` column (columns: {', '.join(map(str, row))}); "
                f"set data.summary_column to the summary column's name", where, cfg.summary_column, list(map(str, row)),
            )
        described = _layout(id_col, names, cfg, require_references)
        if layout is None:
            layout = (where, described)
        elif described != layout[1]:
            raise DialogtuneError(
                f"{where} uses the {described} layout but {layout[0]} uses {layout[1]}; one split must use one "
                f"layout: convert the rows to one of them (e.g. one row per reference with `{cfg.id_column}` and "
                f"`{cfg.summary_column}`)"
            )
        if id_col:
            seen = id_rows.setdefault(row_id, (where, dialogue))
            if seen[1] != dialogue:
                raise DialogtuneError(
                    f"{seen[0]} and {where} share the id `{row_id}` but hold different dialogues; give each "
                    f"dialogue its own id (rows with the same dialogue are merged as several references)"
                )
        references = []
        for name in names:
            summary = _text(row[name])
            if not summary:
                raise DialogtuneError(f"{where}: `{name}` is empty; fill it in or remove the row")
            references.append(summary)
        topic_col = _column(row, cfg.topic_column, f"{cfg.topic_column}1")
        topic = _text(row[topic_col]) if topic_col else ""
        key = dialogue if not columns else (dialogue, *(_text(row[c]) for c in columns))  # two questions: two records
        if key in records:
            record = records[key]
            record["references"].extend(references)
            ids[key].append(row_id)
        else:
            records[key] = Record(id=row_id, dialogue=dialogue, references=references, reference_names=list(names), topic=topic)
            if columns:
                records[key]["fields"] = {c: _text(row[c]) for c in columns}  # type: ignore[typeddict-unknown-key]
            ids[key] = [row_id]
            first_where[key] = where
    if count == 0:
        raise DialogtuneError(f"the `{split}` split of {cfg.dataset} has no rows; add data to it")
    out = []
    final: dict[str, str] = {}  # record id -> where its first row is
    for dialogue, record in records.items():
        group = ids[dialogue]
        if len(group) > 1:
            record["id"] = _group_id(group)
            record["reference_names"] = [f"{cfg.summary_column}{k}" for k in range(1, len(record["references"]) + 1)]
        other = final.setdefault(record["id"], first_where[dialogue])
        if other != first_where[dialogue]:
            # e.g. rows test_7_1/test_7_2 become `test_7`, which another dialogue already uses.
            raise DialogtuneError(
                f"{other} and {first_where[dialogue]} are different dialogues that both end up with the id "
                f"`{record['id']}`; rename one of them"
            )
        out.append(record)
    return out


def _reference_columns(row: dict[str, Any], column: str) -> list[str]:
    if column in row:
        return [column]
    numbered = []
    k = 1
    while f"{column}{k}" in row:
        numbered.append(f"{column}{k}")
        k += 1
    return numbered


def _group_id(ids: list[str]) -> str:
    """`test_7_1, test_7_2, test_7_3` -> `test_7`; anything else keeps the first id."""
    bases = {re.sub(r"_\d+$", "", i) for i in ids}
    return bases.pop() if len(bases) == 1 and bases != set(ids) else ids[0]


def subsample(records: list[Record], limit: int | None, seed: int) -> list[Record]:
    """A reproducible subsample that keeps the original order."""
    if limit is None or limit >= len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in keep]


def load_split(
    cfg: DataConfig, split: str, limit: int | None = None, require_references: bool = True, whole_file: bool = False,
    columns: tuple[str, ...] = (),
) -> list[Record]:
    """Load one split as records, optionally subsampled to `limit` dialogues.

    A source whose file names carry no split (one file, or a folder of unnamed files) is split by seed
    (`data.split_sizes`, `data.split_seed`). `whole_file=True` reads every row of a single file instead:
    for inputs that are not train/test data (`summarize --file`, `score --references`).
    """
    if limit is not None and limit <= 0:
        # An empty sample would only fail later, after a model was loaded, with a less clear error.
        raise DialogtuneError(
            f"the sample limit for the `{split}` split is {limit}; set --max-train-samples / --max-eval-samples "
            f"to 1 or more, or leave it unset"
        )
    records = _records(cfg, canonical_split(split), require_references, whole_file, tuple(columns))
    if not records:  # only a part of a seeded split can be empty; a file or split without rows failed earlier
        raise DialogtuneError(
            f"splitting {cfg.dataset} by data.split_sizes {cfg.split_sizes} leaves the `{split}` split empty; "
            f"add dialogues, raise its fraction, or give one file per split (train.jsonl, test.jsonl)"
        )
    records = subsample(records, limit, cfg.sample_seed)
    log.info("loaded %d %s dialogues from %s", len(records), split, cfg.dataset)
    return records


def check_splits_disjoint(cfg: DataConfig, train: list[Record], eval_splits: list[str], allow: bool) -> dict[str, Any]:
    """`check_overlap` of `train` against each evaluation split the data has (missing ones are skipped).

    Returns `{"overlap": total, "example": first id or None, "splits": {split: n}}` for the run's metadata.
    """
    found: dict[str, Any] = {"overlap": 0, "example": None, "splits": {}}
    for split in dict.fromkeys(map(canonical_split, eval_splits)):
        try:
            records = _records(cfg, split)
        except MissingSplit:
            continue
        result = check_overlap(train, records, allow, split)
        found["splits"][split] = result["overlap"]
        found["overlap"] += result["overlap"]
        found["example"] = found["example"] or result["example"]
    return found
