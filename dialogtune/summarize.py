"""Summarise new dialogues (text, a file, or stdin) with a base model or a trained run."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from dialogtune.config import DataConfig
from dialogtune.ct2 import summarizer_for
from dialogtune.data import load_split
from dialogtune.sources import SUFFIXES, read_utf8
from dialogtune.errors import DialogtuneError
from dialogtune.inference import Summarizer
from dialogtune.runs import read_run


def read_dialogues(text: str | None, file: str | None) -> tuple[list[str], list[str] | None]:
    """(dialogues, ids): ids only when the input is a data file with several dialogues."""
    if text is not None and file is not None:
        raise DialogtuneError("give the dialogue as text or with --file, not both")
    if file is not None:
        path = Path(file)
        if path.name.endswith(SUFFIXES):
            records = load_split(DataConfig(dataset=str(path), loader="local"), "test", require_references=False, whole_file=True)
            return [r["dialogue"] for r in records], [r["id"] for r in records]
        text = read_utf8(path, "input file")
    elif text is None:
        if sys.stdin.isatty():
            raise DialogtuneError("no dialogue given; pass it as text, with --file, or on stdin")
        text = sys.stdin.read()
    if not text.strip():
        raise DialogtuneError("the dialogue is empty; pass some text to summarise")
    return [text.strip()], None


def summarize_inputs(
    text: str | None, file: str | None, model_name: str | None, run_folder: str | None, batch_size: int | None = None,
    backend: str | None = None,
) -> Iterator[str]:
    """Yield one summary per dialogue; JSON lines with ids when the input was a data file.

    `backend` (torch or ct2) defaults to the run folder's own: ct2 for a `dialogtune export` folder.
    """
    if (model_name is None) == (run_folder is None):
        raise DialogtuneError("pass exactly one of --model (a base model) or --run (a trained run folder)")
    if model_name is not None and backend == "ct2":
        raise DialogtuneError("--backend ct2 needs --run with a CTranslate2 export; make one with: dialogtune export RUN --format ct2 --output DIR")
    dialogues, ids = read_dialogues(text, file)
    summarizer = summarizer_for(read_run(run_folder), backend) if run_folder is not None else Summarizer.from_base(model_name)
    if batch_size is not None:
        if batch_size <= 0:
            raise DialogtuneError(f"--batch-size is {batch_size}; it must be positive")
        summarizer.settings = dataclasses.replace(summarizer.settings, batch_size=batch_size)
    summaries = summarizer.summarize(dialogues)
    if ids is None:
        yield from summaries
    else:
        for example_id, summary in zip(ids, summaries, strict=True):
            yield json.dumps({"id": example_id, "summary": summary}, ensure_ascii=False)
