"""Load dialogue–summary data from the hub, local files or the bundled corpus into one record shape.

Every source becomes a list of records ``{id, dialogue, references, reference_names, topic}``.
Rows that share a dialogue (the hub DialogSum test split stores one row per reference) become one
record with several references, so multi-reference ROUGE sees 500 dialogues, not 1,500 rows.

It is over 300 lines because every layout rule and its one-line error (which file, which row,
which column, how to fix it) belongs beside the code that reads that layout.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypedDict

from dialogtune.config import DataConfig
from dialogtune.assets import resolve
from dialogtune.errors import DialogtuneError

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".json", ".jsonl", ".csv.gz", ".json.gz", ".jsonl.gz")
# Names a split goes by in file names and hub repos; DialogSum's own files say "dev".
SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "dev", "val", "valid"),
    "test": ("test",),
}


class Record(TypedDict):
    id: str
    dialogue: str
    references: list[str]
    reference_names: list[str]
    topic: str


Row = tuple[str, dict[str, Any]]  # (where, row): "file.csv row 12" and the row's fields


def _canonical_split(name: str) -> str:
    for split, aliases in SPLIT_ALIASES.items():
        if name in aliases:
            return split
    return name


def _split_of_file(path: Path) -> str:
    stem = path.name
    for suffix in SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    for token in reversed(re.split(r"[._\-]", stem)):
        canonical = _canonical_split(token)
        if canonical in SPLIT_ALIASES:
            return canonical
    return stem


def read_utf8(path: str | Path, what: str = "file") -> str:
    """A text file's contents (gzip allowed), or one line saying it is missing or not UTF-8 and where."""
    path = Path(path)
    if not path.is_file():
        raise DialogtuneError(f"{what} {path} does not exist; check the path")
    return _decode(path)


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DialogtuneError(f"{path} is not a valid gzip file ({err}); re-compress it or pass the plain file") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DialogtuneError(
            f"{path} is not UTF-8 (byte 0x{raw[err.start]:02x} on line {line}); re-save it as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8"
        ) from None


def _read_file(path: Path) -> Iterator[Row]:
    text = _decode(path)
    name = path.name.removesuffix(".gz")
    if name.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise DialogtuneError(f"{path} is empty; it needs a header row and at least one data row")
        rows = 0
        for number, row in enumerate(reader, start=2):
            rows += 1
            yield f"{path} row {number}", row
        if rows == 0:
            raise DialogtuneError(f"{path} has a header row but no data rows; add rows below the header")
        return
    stripped = text.lstrip()
    if not stripped:
        raise DialogtuneError(f"{path} is empty; it needs at least one row")
    if name.endswith(".json") and stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise DialogtuneError(f"{path} is not valid JSON (line {err.lineno}: {err.msg}); fix it or use JSONL") from None
        if not isinstance(rows, list) or not rows:
            raise DialogtuneError(f"{path} holds no rows (an empty or non-list JSON value); add objects to the list")
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise DialogtuneError(f"{path} item {number} is not an object; each item needs named fields")
            yield f"{path} item {number}", row
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DialogtuneError(f"{path} line {number} is not valid JSON ({err.msg}); fix or remove that line") from None
        if not isinstance(row, dict):
            raise DialogtuneError(f"{path} line {number} is not a JSON object; each line needs named fields")
        yield f"{path} line {number}", row


def _local_files(path: Path) -> dict[str, list[Path]]:
    if path.is_file():
        if not path.name.endswith(SUFFIXES):
            raise DialogtuneError(f"{path} is not a CSV, JSON or JSONL file; use one of: {', '.join(SUFFIXES)}")
        return {_split_of_file(path): [path]}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
    if not files:
        raise DialogtuneError(f"folder {path} has no CSV, JSON or JSONL files; add e.g. train.jsonl and test.jsonl")
    splits: dict[str, list[Path]] = {}
    for file in files:
        splits.setdefault(_split_of_file(file), []).append(file)
    return splits


def _hub_rows(name: str, split: str) -> tuple[list[Row], list[str]]:
    import datasets

    try:
        dataset = datasets.load_dataset(name)
    except Exception as err:  # the hub raises many types; all mean "could not load"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DialogtuneError(
            f"could not load dataset `{name}` ({reason}); check the id and your connection, "
            f"or pass a local CSV/JSON/JSONL file or folder"
        ) from None
    available = {_canonical_split(s): s for s in dataset}
    if split not in available:
        return [], sorted(available)
    rows = [(f"{name} [{available[split]}] row {i}", dict(row)) for i, row in enumerate(dataset[available[split]])]
    return rows, sorted(available)


def _is_local(cfg: DataConfig, source: str) -> bool:
    if cfg.loader == "local" or (cfg.loader == "auto" and Path(source).exists()):
        if not Path(source).exists():
            raise DialogtuneError(f"data path {source} does not exist; check `data.dataset`")
        return True
    if cfg.loader == "auto" and (source.startswith((".", "/", "~")) or source.endswith(SUFFIXES)):
        raise DialogtuneError(f"data path {source} does not exist; check `data.dataset`")
    return False


def _raw_rows(cfg: DataConfig, split: str) -> list[Row]:
    source = resolve(cfg.dataset, "dataset")
    split = _canonical_split(split)
    if _is_local(cfg, source):
        files = _local_files(Path(source))
        if split not in files:
            if len(files) == 1 and Path(source).is_file():
                # A single file serves any split: the user pointed at exactly the data they want.
                (only,) = files.values()
                return [row for file in only for row in _read_file(file)]
            raise DialogtuneError(
                f"{source} has no `{split}` split (found: {', '.join(sorted(files))}); pick one of those, "
                f"name a file e.g. {split}.jsonl, or set the data.*_split options"
            )
        return [row for file in files[split] for row in _read_file(file)]
    rows, available = _hub_rows(source, split)
    if not rows and split not in available:
        raise DialogtuneError(
            f"dataset `{source}` has no `{split}` split (found: {', '.join(available)}); set the data.*_split options"
        )
    return rows


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


def normalise(rows: Iterable[Row], cfg: DataConfig, split: str, require_references: bool = True) -> list[Record]:
    """Rows in any supported layout -> records, merging rows that share a dialogue.

    One split must use one layout (the hub's id/summary or the original fname/summary1..3): mixed, the
    same dialogue would be read once with one reference and once with three, and `field:summary1` would
    mean different things per row. Two different dialogues under one id are refused, since predictions,
    breakdowns and comparisons are keyed by id; the same dialogue under one id is merged on purpose.
    """
    records: dict[str, Record] = {}
    ids: dict[str, list[str]] = {}
    first_where: dict[str, str] = {}
    id_rows: dict[str, tuple[str, str]] = {}  # id -> (where, dialogue) of its first row
    layout: tuple[str, str] | None = None  # (where, description) of the first row
    count = 0
    for index, (where, row) in enumerate(rows):
        count += 1
        dialogue_col = _column(row, cfg.dialogue_column)
        if dialogue_col is None:
            raise DialogtuneError(
                f"{where} has no `{cfg.dialogue_column}` column (columns: {', '.join(map(str, row))}); "
                f"set data.dialogue_column to the dialogue column's name"
            )
        dialogue = _text(row[dialogue_col])
        if not dialogue:
            raise DialogtuneError(f"{where}: `{dialogue_col}` is empty; fill it in or remove the row")
        id_col = _column(row, cfg.id_column, "fname")
        row_id = _text(row[id_col]) if id_col else f"{split}_{index}"
        names = _reference_columns(row, cfg.summary_column)
        if not names and require_references:
            raise DialogtuneError(
                f"{where} has no `{cfg.summary_column}` column (columns: {', '.join(map(str, row))}); "
                f"set data.summary_column to the summary column's name"
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
        if dialogue in records:
            record = records[dialogue]
            record["references"].extend(references)
            ids[dialogue].append(row_id)
        else:
            records[dialogue] = Record(
                id=row_id, dialogue=dialogue, references=references, reference_names=list(names), topic=topic
            )
            ids[dialogue] = [row_id]
            first_where[dialogue] = where
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
    cfg: DataConfig, split: str, limit: int | None = None, require_references: bool = True
) -> list[Record]:
    """Load one split as records, optionally subsampled to `limit` dialogues."""
    if limit is not None and limit <= 0:
        # An empty sample would only fail later, after a model was loaded, with a less clear error.
        raise DialogtuneError(
            f"the sample limit for the `{split}` split is {limit}; set --max-train-samples / --max-eval-samples "
            f"to 1 or more, or leave it unset"
        )
    records = normalise(_raw_rows(cfg, split), cfg, _canonical_split(split), require_references)
    records = subsample(records, limit, cfg.sample_seed)
    log.info("loaded %d %s dialogues from %s", len(records), split, cfg.dataset)
    return records
