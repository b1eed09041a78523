"""Where rows come from: local CSV, JSON and JSONL files (gzip allowed), with the split each file's
name says, or a hub dataset through `datasets.load_dataset`.

Every error names the file and the line or row, and says how to fix it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dialogtune.config import DataConfig
from dialogtune.errors import DialogtuneError

SUFFIXES = (".csv", ".json", ".jsonl", ".csv.gz", ".json.gz", ".jsonl.gz")
# Names a split goes by in file names and hub repos; DialogSum's own files say "dev".
SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "dev", "val", "valid"),
    "test": ("test",),
}


Row = tuple[str, dict[str, Any]]  # (where, row): "file.csv row 12" and the row's fields


class MissingColumn(DialogtuneError):
    """A row lacks a column that was asked for; `dialogtune.tasks` words the fix in a task's terms."""

    def __init__(self, message: str, where: str, column: str, present: list[str]) -> None:
        super().__init__(message)
        self.where, self.column, self.present = where, column, present



def canonical_split(name: str) -> str:
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
        canonical = canonical_split(token)
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


def read_rows(path: Path) -> Iterator[Row]:
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


def local_files(path: Path) -> dict[str, list[Path]]:
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


def hub_rows(name: str, split: str) -> tuple[list[Row], list[str]]:
    import datasets

    try:
        dataset = datasets.load_dataset(name)
    except Exception as err:  # the hub raises many types; all mean "could not load"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DialogtuneError(
            f"could not load dataset `{name}` ({reason}); check the id and your connection, "
            f"or pass a local CSV/JSON/JSONL file or folder"
        ) from None
    available = {canonical_split(s): s for s in dataset}
    if split not in available:
        return [], sorted(available)
    rows = [(f"{name} [{available[split]}] row {i}", dict(row)) for i, row in enumerate(dataset[available[split]])]
    return rows, sorted(available)


def is_local(cfg: DataConfig, source: str) -> bool:
    if cfg.loader == "local" or (cfg.loader == "auto" and Path(source).exists()):
        if not Path(source).exists():
            raise DialogtuneError(f"data path {source} does not exist; check `data.dataset`")
        return True
    if cfg.loader == "auto" and (source.startswith((".", "/", "~")) or source.endswith(SUFFIXES)):
        raise DialogtuneError(f"data path {source} does not exist; check `data.dataset`")
    return False
