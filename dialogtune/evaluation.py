"""Evaluate a run folder (or the original base model) on a split: predictions.jsonl + metrics.json.

The prompt and generation settings come from the run folder itself, so a model is always scored
with the prompt it was trained on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from dialogtune import runs
from dialogtune.config import Config
from dialogtune.data import load_split
from dialogtune.errors import DialogtuneError
from dialogtune.generate import generate, generation_config
from dialogtune.metrics import rouge_summary
from dialogtune.modeling import fingerprint, load_adapter, load_base, load_tokenizer, parameter_counts
from dialogtune.prompts import PromptTemplate, build_prompts, draw_shots

log = logging.getLogger(__name__)


def load_for_generation(run: runs.Run, merge: bool = True) -> tuple[torch.nn.Module, Any]:
    """The model a run produced, loaded fresh from disk: the evaluated model is the one that was saved."""
    base_name = run.metadata.get("model", run.config.model)
    if run.method == "full":
        return load_base(str(run.folder)), load_tokenizer(str(run.folder))
    tokenizer = load_tokenizer(base_name)
    base = load_base(base_name)
    if run.method == "lora":
        return load_adapter(base, run.folder, merge=merge), tokenizer
    return base, tokenizer


def build_eval_prompts(config: Config, template: PromptTemplate, records: list[dict], tokenizer: Any) -> tuple[list[str], dict]:
    """Prompts for evaluation; in-context examples only for the original model."""
    dialogues = [r["dialogue"] for r in records]
    if config.method != "original" or config.prompt.shots == 0:
        prompts, report = build_prompts(template, dialogues)
    else:
        pool = load_split(config.data, config.data.train_split)
        shots = draw_shots(pool, config.prompt.shots, config.prompt.shots_seed, exclude={r["id"] for r in records})
        prompts, report = build_prompts(template, dialogues, shots, tokenizer, config.data.max_source_length)
        if report.dropped:
            log.warning(
                "dropped %d of %d in-context examples that did not fit in %d tokens",
                report.dropped, report.requested * len(records), config.data.max_source_length,
            )
    return prompts, {"shots": report.requested, "shots_used": report.used, "shots_dropped": report.dropped}


def evaluate_run(
    folder: str | Path,
    split: str | None = None,
    limit: int | None = None,
    progress: bool = True,
    model: torch.nn.Module | None = None,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Generate for a split with the run's own prompt and settings, then score it."""
    run = runs.read_run(folder)
    config = run.config
    split = split or config.evaluation.split
    limit = limit if limit is not None else config.data.max_eval_samples
    records = load_split(config.data, split, limit=limit)
    if model is None:
        model, tokenizer = load_for_generation(run, merge=config.evaluation.merge_lora)
    prompts, shot_info = build_eval_prompts(config, run.prompt, records, tokenizer)
    gen_config = generation_config(config.generation_args(), tokenizer)
    weights = fingerprint(model)
    started = time.perf_counter()
    predictions = generate(
        model, tokenizer, prompts, gen_config, config.evaluation.batch_size, config.data.max_source_length, progress
    )
    seconds = time.perf_counter() - started
    if fingerprint(model) != weights:
        raise RuntimeError("generation changed the model's weights")  # an invariant, not a user error
    rows = [
        {
            "id": r["id"],
            "prediction": p,
            "references": r["references"],
            "reference_names": r["reference_names"],
            "topic": r["topic"],
            "dialogue": r["dialogue"],
        }
        for r, p in zip(records, predictions, strict=True)
    ]
    runs.write_jsonl(run.folder / runs.PREDICTIONS, rows)
    metrics = rouge_summary(
        predictions,
        [r["references"] for r in records],
        protocol=config.evaluation.protocol,
        reference_names=[r["reference_names"] for r in records],
        n_resamples=config.evaluation.bootstrap_resamples,
        seed=config.seed,
    )
    metrics.update(
        {
            "split": split,
            "dataset": config.data.dataset,
            "method": run.method,
            "model": run.metadata.get("model", config.model),
            **shot_info,
            "generation": config.generation_args(),
            "generation_seconds": round(seconds, 3),
            "summaries_per_second": round(len(prompts) / max(seconds, 1e-9), 3),
            "weights_fingerprint": weights,
        }
    )
    runs.write_json(run.folder / runs.METRICS, metrics)
    runs.update_metadata(run.folder, status="evaluated", evaluated=runs.now())
    return metrics


def evaluate_original(config: Config, folder: str | Path, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Score the untouched base model: loaded fresh here, never one a trainer or peft has wrapped."""
    if config.method != "original":
        raise DialogtuneError("evaluate_original needs `method: original`")
    folder = runs.start_run(folder, config, PromptTemplate(config.prompt.template), overwrite=overwrite)
    model = load_base(config.model)
    tokenizer = load_tokenizer(config.model)
    trainable, total = parameter_counts(model)
    runs.update_metadata(folder, trainable_params=0, total_params=total, size_bytes=0, train_seconds=0.0)
    return evaluate_run(folder, progress=progress, model=model, tokenizer=tokenizer)
