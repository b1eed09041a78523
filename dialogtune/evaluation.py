"""Evaluate a run folder (or the original base model) on a split: predictions.jsonl + metrics.json.

The prompt and generation settings come from the run folder itself, so a model is always scored
with the prompt it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from dialogtune import runs
from dialogtune.config import Config
from dialogtune.data import load_split
from dialogtune.errors import DialogtuneError
from dialogtune.inference import Summarizer
from dialogtune.metrics import rouge_summary
from dialogtune.modeling import fingerprint, parameter_counts
from dialogtune.prompts import PromptTemplate, build_prompts, draw_shots

log = logging.getLogger(__name__)



class Partial:
    """Predictions saved batch by batch, so an interrupted evaluation continues where it stopped.

    The first line describes the job (split, ids, weights, prompts, generation settings); a file from
    another job is ignored.
    """

    def __init__(self, path: Path, job: dict[str, Any]) -> None:
        self.path = path
        self.key = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()
        self.resumed = 0

    def load(self) -> dict[int, str]:
        if not self.path.exists():
            self._start()
            return {}
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except ValueError:
            header = {}
        if header.get("key") != self.key:
            self._start()
            return {}
        done: dict[int, str] = {}
        for line in lines[1:]:
            try:
                row = json.loads(line)
                batch = {int(i): t for i, t in zip(row["indices"], row["texts"], strict=True)}
            except (ValueError, KeyError, TypeError):
                break  # a torn last line: the process was killed while writing it
            done.update(batch)
        self.resumed = len(done)
        if done:
            log.info("resuming evaluation: %d predictions already written", len(done))
        self._rewrite(done)
        return done

    def _start(self) -> None:
        runs.write_text(self.path, json.dumps({"key": self.key}) + "\n")

    def _rewrite(self, done: dict[int, str]) -> None:
        # Rewrite without a torn tail, so appends start on a clean line.
        body = json.dumps({"indices": list(done), "texts": list(done.values())}) + "\n" if done else ""
        runs.write_text(self.path, json.dumps({"key": self.key}) + "\n" + body)

    def append(self, indices: list[int], texts: list[str]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"indices": indices, "texts": texts}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


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
    summarizer: Summarizer | None = None,
) -> dict[str, Any]:
    """Generate for a split with the run's own prompt and settings, then score it.

    Predictions and metrics are stored per split, so scoring another split keeps the run's test scores.
    """
    run = runs.read_run(folder)
    config = run.config
    split = split or config.evaluation.split
    limit = limit if limit is not None else config.data.max_eval_samples
    records = load_split(config.data, split, limit=limit)
    summarizer = summarizer or Summarizer.from_run(run)
    tokenizer = summarizer.tokenizer
    prompts, shot_info = build_eval_prompts(config, run.prompt, records, tokenizer)
    too_long = sum(len(ids) > config.data.max_source_length for ids in tokenizer(prompts)["input_ids"])
    if too_long:
        log.warning("%d of %d prompts are longer than %d tokens and were truncated", too_long, len(prompts), config.data.max_source_length)
    weights = fingerprint(summarizer.model)
    # Changed generation settings make other predictions, so they start afresh.
    job = {"split": split, "ids": [r["id"] for r in records], "weights": weights, "prompts": prompts,
           "generation": summarizer.generation()}
    partial = Partial(run.partial_path(split), job)
    run.update(runs.Status.EVALUATING)
    started = time.perf_counter()
    predictions = summarizer.generate(prompts, progress=progress, done=partial.load(), on_batch=partial.append)
    seconds = time.perf_counter() - started
    if fingerprint(summarizer.model) != weights:
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
            "model": run.base_model,
            **shot_info,
            "generation": config.generation_args(),
            "truncated_sources": too_long,
            "weights_fingerprint": weights,
        }
    )
    # Scores are written only once every prediction exists; timings go to metadata so that
    # metrics.json is identical between identical runs.
    run.write_results(
        split, rows, metrics,
        generation_seconds=round(seconds, 3),
        summaries_per_second=round(len(prompts) / max(seconds, 1e-9), 3),
        resumed_predictions=partial.resumed,
    )
    partial.remove()
    return metrics


def evaluate_original(config: Config, folder: str | Path, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Score the untouched base model: loaded fresh here, never one a trainer or peft has wrapped."""
    if config.method != "original":
        raise DialogtuneError("evaluate_original needs `method: original`")
    runs.check_output(folder, overwrite)
    # Load (and fail) before the run folder is created, which clears an earlier result from it.
    summarizer = Summarizer.from_base(config.model, config)
    run = runs.RunFolder.create(folder, config, overwrite=overwrite)
    _, total = parameter_counts(summarizer.model)
    run.update(trainable_params=0, total_params=total, size_bytes=0, train_seconds=0.0)
    return evaluate_run(run.folder, progress=progress, summarizer=summarizer)
