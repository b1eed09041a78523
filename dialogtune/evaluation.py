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

from dialogtune import ranks, runs, sharding
from dialogtune.config import Config
from dialogtune.data import load_split
from dialogtune.errors import DialogtuneError
from dialogtune.ct2 import CT2Summarizer, summarizer_for
from dialogtune.inference import Summarizer
from dialogtune.metrics import answer_scores, output_lengths, per_example_scores, rouge_summary, rouge_summary_from_scores
from dialogtune.modeling import fingerprint, parameter_counts
from dialogtune.prompts import PromptTemplate, build_prompts, draw_shots
from dialogtune.significance import bootstrap_ci
from dialogtune.tasks import SUMMARY, Task, get

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


def _weights(summarizer: Summarizer | CT2Summarizer) -> str:
    # A CTranslate2 model's weights are its converted file, hashed once when loaded.
    return summarizer.fingerprint if isinstance(summarizer, CT2Summarizer) else fingerprint(summarizer.model)


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
    summarizer: Summarizer | CT2Summarizer | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    """Generate for a split with the run's own prompt and settings, then score it.

    Predictions and metrics are stored per split, so scoring another split keeps the run's test scores.
    `backend` (torch or ct2) defaults to the folder's own: ct2 for a `dialogtune export` folder.
    """
    run = runs.read_run(folder)
    if run.config.tasks:  # each task with its own data, prompt and metric; the first task's metrics come back
        return next(iter(evaluate_run_tasks(run.folder, None, split, limit, progress, summarizer, backend).values()))
    config = run.config
    split = split or config.evaluation.split
    limit = limit if limit is not None else config.data.max_eval_samples
    records = load_split(config.data, split, limit=limit)
    summarizer = summarizer or summarizer_for(run, backend)
    tokenizer = summarizer.tokenizer
    prompts, shot_info = build_eval_prompts(config, run.prompt, records, tokenizer)
    too_long = sum(len(ids) > config.data.max_source_length for ids in tokenizer(prompts)["input_ids"])
    if too_long:
        log.warning("%d of %d prompts are longer than %d tokens and were truncated", too_long, len(prompts), config.data.max_source_length)
    weights = _weights(summarizer)
    # Changed generation settings make other predictions, so they start afresh.
    job = {"split": split, "ids": [r["id"] for r in records], "weights": weights, "prompts": prompts,
           "generation": summarizer.generation()}
    partial = Partial(run.partial_path(split), job)
    run.update(runs.Status.EVALUATING)
    started = time.perf_counter()
    done = ranks.on_main(partial.load)  # rank 0 reads (and tidies) the file; every rank skips what it holds
    predictions = sharding.generate(summarizer, prompts, progress=progress, done=done, on_batch=partial.append)
    seconds = time.perf_counter() - started
    if _weights(summarizer) != weights:
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
    if ranks.is_main():
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


def evaluate_task(
    summarizer: Summarizer | CT2Summarizer, task: Task, split: str = "test", limit: int | None = None,
    adapter: str | None = None, *, n_resamples: int = 1000, seed: int = 0, protocol: str = "mean", progress: bool = False,
) -> dict[str, Any]:
    """One task scored with one loaded model: `adapter` picks a loaded adapter (None or `inference.BASE`: the bare
    base, i.e. the adapter switched off); the prompts are the task's own, and its generation settings go over
    the summarizer's. Nothing is written: `evaluate_run_tasks` stores results in a run folder.

    Returns `{"metrics", "ids", "per_example", "rows"}`: `metrics` as a run folder stores it (`scores`: each metric
    with a 95% bootstrap CI, `primary`: the one to quote; ROUGE tasks also carry `rouge` as in metrics.json),
    `ids` the examples in order, `per_example` `{metric: [points]}` parallel to `ids` for
    `significance.paired_test`, and `rows` the predictions with their references and scores.
    """
    records = task.records(split, limit=limit)
    references = [r["references"] for r in records]
    own = {"template": task.template} if isinstance(summarizer, Summarizer) else {}  # so truncation keeps the task's cue
    predictions = sharding.generate(summarizer, task.prompts(records), adapter, progress=progress, **own, **task.generation)
    if task.metric == "rouge":
        names = [r["reference_names"] for r in records]
        scores = per_example_scores(predictions, references, protocol, names)
        metrics = rouge_summary_from_scores(scores, protocol, n_resamples, seed) | output_lengths(predictions, references, protocol, names)
        metrics["scores"], primary = metrics["rouge"], "rouge1"
    else:
        scores = {task.metric: answer_scores(predictions, references, task.metric)}
        intervals = {m: bootstrap_ci(v, n_resamples=n_resamples, seed=seed) for m, v in scores.items()}
        metrics = {
            "num_examples": len(records), "scores": {m: {"score": float(v.mean()), "ci_low": intervals[m][0], "ci_high": intervals[m][1]}
                                                     for m, v in scores.items()},
            "bootstrap": {"n_resamples": int(n_resamples), "seed": seed, "confidence": 0.95},
            **output_lengths(predictions, references, "max"),
        }
        primary = task.metric
    metrics.update(task=task.name, metric=task.metric, primary=primary, split=split, dataset=task.data.dataset,
                   adapter=adapter, generation=summarizer.generation(adapter, **task.generation))
    per_example = {m: [float(x) for x in v] for m, v in scores.items()}
    rows = [
        {"id": r["id"], "prediction": p, "references": r["references"], "reference_names": r["reference_names"], "topic": r["topic"],
         "dialogue": r["dialogue"], **({"fields": r["fields"]} if "fields" in r else {}), "scores": {m: per_example[m][i] for m in scores}}
        for i, (r, p) in enumerate(zip(records, predictions, strict=True))
    ]
    return {"metrics": metrics, "ids": [r["id"] for r in records], "per_example": per_example, "rows": rows}


def evaluate_run_tasks(
    folder: str | Path, names: list[str] | None = None, split: str | None = None, limit: int | None = None,
    progress: bool = True, summarizer: Summarizer | CT2Summarizer | None = None, backend: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Score a run on tasks (`names`: the run's own by default; built-ins too) with its model loaded once, and
    store each as `metrics.<task>.json` + `predictions.<task>.jsonl` (the summary task: metrics.json, as ever).

    A run without `tasks:` asked for `summary` is evaluated exactly as `evaluate_run` does it.
    """
    run = runs.read_run(folder)
    config = run.config
    chosen = [get(config, name) for name in names or [t.name for t in config.tasks] or [SUMMARY]]  # unknown: fail now
    split = split or config.evaluation.split
    limit = limit if limit is not None else config.data.max_eval_samples
    own_summary = [task.name == SUMMARY and not config.tasks for task in chosen]  # with its shots and resuming
    if summarizer is None and not all(own_summary):
        summarizer = summarizer_for(run, backend)  # once, for every task
    out: dict[str, dict[str, Any]] = {}
    for task, plain in zip(chosen, own_summary, strict=True):
        if plain:
            out[task.name] = evaluate_run(run.folder, split, limit, progress, summarizer, backend)
            continue
        run = runs.read_run(folder)  # afresh: an evaluation before this one updated its metadata
        weights = _weights(summarizer)
        run.update(runs.Status.EVALUATING)
        started = time.perf_counter()
        # `evaluation.protocol` names the summary data's references (field:summary1); other tasks average theirs.
        protocol = config.evaluation.protocol if task.name == SUMMARY else "mean"
        result = evaluate_task(summarizer, task, split, limit, n_resamples=config.evaluation.bootstrap_resamples,
                               seed=config.seed, protocol=protocol, progress=progress)
        if _weights(summarizer) != weights:
            raise RuntimeError("generation changed the model's weights")  # an invariant, not a user error
        seconds = {**run.metadata.get("task_generation_seconds", {}), task.name: round(time.perf_counter() - started, 3)}
        metrics = {**result["metrics"], "method": run.method, "model": run.base_model, "weights_fingerprint": weights}
        run.write_results(split, result["rows"], metrics, task=task.name, task_generation_seconds=seconds)
        out[task.name] = metrics
    return out
