"""Summarise new dialogues (text, a file, or stdin) with a base model or a trained run."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from dialogtune.config import DataConfig, GENERATION_DEFAULTS
from dialogtune.data import SUFFIXES, load_split, read_utf8
from dialogtune.errors import DialogtuneError
from dialogtune.generate import generate, generation_config
from dialogtune.prompts import PromptTemplate


def read_dialogues(text: str | None, file: str | None) -> tuple[list[str], list[str] | None]:
    """(dialogues, ids): ids only when the input is a data file with several dialogues."""
    if text is not None and file is not None:
        raise DialogtuneError("give the dialogue as text or with --file, not both")
    if file is not None:
        path = Path(file)
        if path.name.endswith(SUFFIXES):
            records = load_split(DataConfig(dataset=str(path), loader="local"), "test", require_references=False)
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
    text: str | None, file: str | None, model_name: str | None, run_folder: str | None, batch_size: int = 16
) -> Iterator[str]:
    """Yield one summary per dialogue; JSON lines with ids when the input was a data file."""
    from dialogtune import runs
    from dialogtune.evaluation import load_for_generation
    from dialogtune.modeling import load_base, load_tokenizer

    if (model_name is None) == (run_folder is None):
        raise DialogtuneError("pass exactly one of --model (a base model) or --run (a trained run folder)")
    dialogues, ids = read_dialogues(text, file)
    if run_folder is not None:
        run = runs.read_run(run_folder)
        model, tokenizer = load_for_generation(run)
        template, settings, max_len = run.prompt, run.config.generation_args(), run.config.data.max_source_length
    else:
        model, tokenizer = load_base(model_name), load_tokenizer(model_name)
        template, settings, max_len = PromptTemplate(), dict(GENERATION_DEFAULTS), 512
    prompts = [template.format(d) for d in dialogues]
    summaries = generate(model, tokenizer, prompts, generation_config(settings, tokenizer), batch_size, max_len, progress=False)
    if ids is None:
        yield from summaries
    else:
        for example_id, summary in zip(ids, summaries, strict=True):
            yield json.dumps({"id": example_id, "summary": summary}, ensure_ascii=False)
