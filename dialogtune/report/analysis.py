"""The analysis behind a comparison report: runs, paired differences and sample outputs, as data.

Each run folder's predictions are read once and scored once (per-example ROUGE); everything else here,
the breakdowns, the paired tests and the examples, is derived from those two. The headline ROUGE numbers
and their CIs come from the run's metrics.json, so the report shows the same numbers evaluation wrote.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dialogtune import runs
from dialogtune.breakdowns import by_length, by_topic, degenerate_outputs, length_stats
from dialogtune.errors import DialogtuneError
from dialogtune.metrics import METRICS, per_example_scores
from dialogtune.significance import paired_test

HEADLINE = "rouge1"  # the metric the breakdowns use
LENGTH_EDGES = (100, 150, 200, 300)  # dialogue length buckets, in words


@dataclass(frozen=True)
class Analysis:
    """What the renderers draw from.

    ``report`` is the report.json contract: ``{"runs", "comparisons", "examples"}``. ``generated_words``
    maps each run's name to the word count of every summary it generated, for the length histogram; it is
    kept out of ``report`` because report.json is read by other tools and one number per dialogue per run
    would swamp it.
    """

    report: dict[str, Any]
    generated_words: dict[str, list[int]]


@dataclass(frozen=True)
class _LoadedRun:
    run: Any  # what runs.read_run returns
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]
    scores: dict[str, np.ndarray]  # per-example ROUGE, by metric


def _load(folder: Path) -> _LoadedRun:
    run = runs.read_run(folder)
    metrics = run.metrics
    if metrics is None:
        raise DialogtuneError(f"run {folder} has not been evaluated; run `dialogtune evaluate {folder}` first")
    predictions = run.predictions()
    # Score with the protocol the run was evaluated with, so the paired tests agree with metrics.json.
    scores = per_example_scores(
        [p["prediction"] for p in predictions],
        [p["references"] for p in predictions],
        protocol=metrics.get("protocol", "mean"),
        reference_names=[p.get("reference_names") or [] for p in predictions],
    )
    return _LoadedRun(run, metrics, predictions, scores)


def _run_entry(item: _LoadedRun) -> dict[str, Any]:
    run, metrics, meta, predictions = item.run, item.metrics, item.run.metadata, item.predictions
    total = meta.get("total_params")
    trainable = meta.get("trainable_params", 0)
    return {
        "name": run.name,
        "method": run.method,
        "folder": str(run.folder),
        "model": meta.get("model"),
        "protocol": metrics.get("protocol"),
        "split": metrics.get("split"),
        "rouge": {m: round(metrics["rouge"][m]["score"], 4) for m in METRICS},
        "rouge_ci": {m: [round(metrics["rouge"][m]["ci_low"], 4), round(metrics["rouge"][m]["ci_high"], 4)] for m in METRICS},
        "num_examples": metrics["num_examples"],
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 4) if total else None,
        "size_bytes": meta.get("size_bytes", 0),
        "train_seconds": meta.get("train_seconds", 0.0),
        "train_examples_per_second": meta.get("train_examples_per_second"),
        "train_tokens_per_second": meta.get("train_tokens_per_second"),
        "peak_memory_bytes": meta.get("peak_memory_bytes"),
        "gen_len": metrics.get("gen_len"),
        "summaries_per_second": meta.get("summaries_per_second"),
        "lengths": length_stats([p["prediction"] for p in predictions], [p["references"] for p in predictions]),
        "by_topic": by_topic(item.scores[HEADLINE], [p.get("topic") or "(none)" for p in predictions]),
        "by_length": by_length(item.scores[HEADLINE], [len(p.get("dialogue", "").split()) for p in predictions], LENGTH_EDGES),
        "degenerate": degenerate_outputs(
            [p["prediction"] for p in predictions],
            [p.get("dialogue", "") for p in predictions],
            [p["id"] for p in predictions],
        ),
    }


def _comparison(a: _LoadedRun, b: _LoadedRun, seed: int) -> dict[str, Any] | None:
    """a minus b on the same dialogues, per metric, with a paired test; None if they differ in examples."""
    if [p["id"] for p in a.predictions] != [p["id"] for p in b.predictions]:
        return None
    return {
        "a": a.run.name,
        "b": b.run.name,
        "metrics": {m: paired_test(a.scores[m], b.scores[m], seed=seed) for m in METRICS},
    }


def _comparisons(items: list[_LoadedRun], seed: int) -> list[dict[str, Any]]:
    """Every run against the original model, and LoRA against full fine-tuning, where both exist."""
    by_method: dict[str, _LoadedRun] = {}
    for item in items:
        by_method.setdefault(item.run.method, item)
    pairs = []
    baseline = by_method.get("original")
    if baseline is not None:
        pairs += [(item, baseline) for item in items if item is not baseline]
    if "lora" in by_method and "full" in by_method:
        pairs.append((by_method["lora"], by_method["full"]))
    comparisons = [_comparison(a, b, seed) for a, b in pairs]
    return [c for c in comparisons if c is not None]


def _examples(items: list[_LoadedRun], num_examples: int, seed: int) -> list[dict[str, Any]]:
    """Up to `num_examples` dialogues every run predicted, chosen reproducibly by `seed`, side by side."""
    common = set.intersection(*({p["id"] for p in i.predictions} for i in items))
    chosen = sorted(random.Random(seed).sample(sorted(common), min(num_examples, len(common))))
    lookup = [{p["id"]: p for p in i.predictions} for i in items]
    return [
        {
            "id": ex_id,
            "dialogue": lookup[0][ex_id].get("dialogue", ""),
            "human": lookup[0][ex_id]["references"][0],
            "predictions": {item.run.name: table[ex_id]["prediction"] for item, table in zip(items, lookup)},
        }
        for ex_id in chosen
    ]


def analyse(folders: list[str | Path], num_examples: int = 5, seed: int = 0) -> Analysis:
    """Read and score each run folder once; return the report data and what the charts need besides."""
    if not folders:
        raise DialogtuneError("compare needs at least one run folder")
    items = [_load(Path(f)) for f in folders]
    names = [i.run.name for i in items]
    if len(set(names)) != len(names):
        raise DialogtuneError(f"runs to compare share a name ({', '.join(names)}); give each run its own folder name")
    report = {
        "runs": [_run_entry(i) for i in items],
        "comparisons": _comparisons(items, seed),
        "examples": _examples(items, num_examples, seed),
    }
    words = {i.run.name: [len(p["prediction"].split()) for p in i.predictions] for i in items}
    return Analysis(report, words)


def build_report(folders: list[str | Path], num_examples: int = 5, seed: int = 0) -> dict[str, Any]:
    """The report as data: runs, pairwise comparisons, and reproducibly chosen examples."""
    return analyse(folders, num_examples, seed).report
