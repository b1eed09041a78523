"""The analysis behind a comparison report: runs, paired differences and sample outputs, as data.

Each run folder's predictions are read once and scored once (per-example ROUGE and unsupported facts);
everything else here, the breakdowns, the paired tests and the examples, is derived from those. The
headline ROUGE numbers and their CIs come from the run's metrics.json, so the report shows the same
numbers evaluation wrote. Runs are paired only when they were scored alike (:mod:`.comparability`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dialogtune import runs
from dialogtune.breakdowns import by_length, by_topic, degenerate_outputs, length_stats, quantile_edges
from dialogtune.errors import DialogtuneError
from dialogtune.faithfulness import faithfulness_summary, paired_faithfulness
from dialogtune.metrics import METRICS, per_example_scores
from dialogtune.report.comparability import why_not_comparable
from dialogtune.significance import paired_test

HEADLINE = "rouge1"  # the metric the breakdowns use
LENGTH_PARTS = 4  # dialogue length buckets: quartiles of the evaluated dialogues' word counts


@dataclass(frozen=True)
class Analysis:
    """What the renderers draw from.

    ``report`` is the report.json contract: ``{"runs", "comparisons", "not_compared", "human_faithfulness",
    "examples"}``, plus ``"human_evaluation"`` when a review study is attached (:func:`human_section`). ``generated_words``
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
    faithfulness: dict[str, Any]  # faithfulness_summary of its predictions, per-example counts included

    @property
    def resamples(self) -> int:
        return int(self.run.config.evaluation.bootstrap_resamples)


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    """A faithfulness summary for report.json: the totals and CIs, not the per-example lists."""
    def rounded(v: Any) -> Any:
        return round(v, 4) if isinstance(v, float) else [rounded(x) for x in v] if isinstance(v, list) else v

    return {k: rounded(v) for k, v in summary.items() if k != "per_example"}


def _load(folder: Path, seed: int) -> _LoadedRun:
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
    resamples = int(run.config.evaluation.bootstrap_resamples)
    faithful = faithfulness_summary(
        [p["prediction"] for p in predictions], [p.get("dialogue", "") for p in predictions], resamples, seed
    )
    return _LoadedRun(run, metrics, predictions, scores, faithful)


def _run_entry(item: _LoadedRun, edges: list[int], min_topic_count: int, seed: int) -> dict[str, Any]:
    run, metrics, meta, predictions = item.run, item.metrics, item.run.metadata, item.predictions
    total = meta.get("total_params")
    trainable = meta.get("trainable_params", 0)
    return {
        "name": run.name,
        "method": run.method,
        # The engine that generated its summaries: torch, or ct2 for a `dialogtune export` (with its weight type).
        "backend": meta.get("backend", "torch"),
        "quantization": meta.get("quantization"),
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
        "by_topic": by_topic(
            item.scores[HEADLINE], [p.get("topic") or "(none)" for p in predictions],
            min_count=min_topic_count, n_resamples=item.resamples, seed=seed,
        ),
        "by_length": by_length(item.scores[HEADLINE], [len(p.get("dialogue", "").split()) for p in predictions], edges),
        "faithfulness": _figures(item.faithfulness),
        "degenerate": degenerate_outputs(
            [p["prediction"] for p in predictions],
            [p.get("dialogue", "") for p in predictions],
            [p["id"] for p in predictions],
        ),
        "curves": curves(run),
    }


CURVE_FIGURES = ("rouge1", "rouge2", "rougeL", "rougeLsum", "unsupported_rate")  # logged as eval_<name> (dialogtune.validation)


def curves(run: Any) -> dict[str, Any] | None:
    """Training loss and validation figures against steps, from the run's train_log.jsonl; None if nothing was
    validated during training. Each validation point carries the training seconds before it and the last training loss."""
    path = run.folder / runs.TRAIN_LOG
    lines = runs.read_jsonl(path) if path.is_file() else []
    if not any("eval_loss" in e for e in lines):
        return None
    train_loss, points, last = [], [], None
    for e in lines:
        if "loss" in e:
            train_loss.append([e["step"], round(e["loss"], 4)])
            last = e["loss"]
        if "eval_loss" in e:
            points.append({"step": e["step"], "train_seconds": e.get("eval_train_seconds"), "train_loss": _rounded(last),
                           "loss": round(e["eval_loss"], 4), **{m: _rounded(e.get(f"eval_{m}")) for m in CURVE_FIGURES}})
    meta = run.metadata
    return {"train_loss": train_loss, "validation": points, "best": meta.get("best"), "weights": meta.get("weights"),
            "val_samples": (meta.get("validation") or {}).get("samples"), "train_seconds": meta.get("train_seconds"),
            "validation_seconds": meta.get("validation_seconds"), "early_stopped": meta.get("early_stopped")}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _comparison(a: _LoadedRun, b: _LoadedRun, seed: int) -> dict[str, Any]:
    """a minus b on the same dialogues, per metric and in unsupported facts, with paired tests.

    The resamples are the runs' `evaluation.bootstrap_resamples`; when the two differ the smaller is used
    and ``note`` says so.
    """
    n = min(a.resamples, b.resamples)
    result = {
        "a": a.run.name,
        "b": b.run.name,
        "n_resamples": n,
        "metrics": {m: paired_test(a.scores[m], b.scores[m], n_resamples=n, seed=seed) for m in METRICS},
        "faithfulness": paired_faithfulness(
            [e["unsupported"] for e in a.faithfulness["per_example"]],
            [e["unsupported"] for e in b.faithfulness["per_example"]],
            n_resamples=n, seed=seed,
        ),
    }
    if a.resamples != b.resamples:
        result["note"] = f"evaluation.bootstrap_resamples differ ({a.resamples} vs {b.resamples}); used {n}"
    return result


def _pairs(items: list[_LoadedRun]) -> list[tuple[_LoadedRun, _LoadedRun]]:
    """Every run against the original model, and LoRA against full fine-tuning, where both exist;
    failing both (e.g. two LoRA runs), every later run against the first."""
    by_method: dict[str, _LoadedRun] = {}
    for item in items:
        by_method.setdefault(item.run.method, item)
    pairs = []
    baseline = by_method.get("original")
    if baseline is not None:
        pairs += [(item, baseline) for item in items if item is not baseline]
    if "lora" in by_method and "full" in by_method:
        pairs.append((by_method["lora"], by_method["full"]))
    return pairs or [(item, items[0]) for item in items[1:]]


def _comparisons(items: list[_LoadedRun], seed: int) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(paired comparisons, pairs left out with the reason): only runs scored alike are paired."""
    compared, left_out = [], []
    for a, b in _pairs(items):
        reason = why_not_comparable(a.metrics, a.predictions, b.metrics, b.predictions)
        if reason is None:
            compared.append(_comparison(a, b, seed))
        else:
            left_out.append({"a": a.run.name, "b": b.run.name, "reason": reason})
    return compared, left_out


def _human(items: list[_LoadedRun], seed: int) -> dict[str, Any]:
    """Faithfulness of each dialogue's first reference (the floor), over the first run's dialogues."""
    predictions = items[0].predictions
    resamples = min(i.resamples for i in items)
    return faithfulness_summary(
        [p["references"][0] for p in predictions], [p.get("dialogue", "") for p in predictions], resamples, seed
    )


def _flagged(predictions: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {p["id"]: e["flagged"] for p, e in zip(predictions, summary["per_example"])}


def _examples(items: list[_LoadedRun], human: dict[str, Any], num_examples: int, seed: int) -> list[dict[str, Any]]:
    """Up to `num_examples` dialogues every run predicted, chosen reproducibly by `seed`, side by side,
    with the unsupported facts of each summary (``unsupported``: "human" and each run's name -> facts)."""
    common = set.intersection(*({p["id"] for p in i.predictions} for i in items))
    chosen = sorted(random.Random(seed).sample(sorted(common), min(num_examples, len(common))))
    lookup = [{p["id"]: p for p in i.predictions} for i in items]
    flags = {"human": _flagged(items[0].predictions, human)}
    flags.update({i.run.name: _flagged(i.predictions, i.faithfulness) for i in items})
    return [
        {
            "id": ex_id,
            "dialogue": lookup[0][ex_id].get("dialogue", ""),
            "human": lookup[0][ex_id]["references"][0],
            "predictions": {item.run.name: table[ex_id]["prediction"] for item, table in zip(items, lookup)},
            "unsupported": {name: by_id[ex_id] for name, by_id in flags.items()},
        }
        for ex_id in chosen
    ]


HUMAN_KEYS = ("judgements", "items", "method", "systems", "pairs", "agreement", "correlation")


def human_section(results: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The results of `dialogtune review-results` as the report shows them (rater names reduced to a count),
    with the study's systems that are not among the report's runs and the runs the study did not include."""
    missing = [k for k in HUMAN_KEYS if k not in results]
    if missing:
        raise DialogtuneError(f"the human-evaluation results lack {', '.join(missing)}; regenerate them with `dialogtune review-results`")
    studied = [s["name"] for s in results["systems"]]
    return {
        **{k: results[k] for k in HUMAN_KEYS},
        "raters": len(results.get("raters", {})),
        "not_in_report": [s["name"] for s in results["systems"] if s["name"] not in names and not s.get("hidden")],
        "not_in_study": [n for n in names if n not in studied],
    }


def analyse(
    folders: list[str | Path], num_examples: int = 5, seed: int = 0, min_topic_count: int | None = None,
    study: dict[str, Any] | None = None,
) -> Analysis:
    """Read and score each run folder once; return the report data and what the charts need besides.

    `min_topic_count` defaults to the first run's `report.min_topic_count`. `study`: the results of a
    review study (``dialogtune review-results``), added as ``human_evaluation``.
    """
    if not folders:
        raise DialogtuneError("compare needs at least one run folder")
    items = [_load(Path(f), seed) for f in folders]
    names = [i.run.name for i in items]
    if len(set(names)) != len(names):
        raise DialogtuneError(f"runs to compare share a name ({', '.join(names)}); give each run its own folder name")
    if min_topic_count is None:
        min_topic_count = items[0].run.config.report.min_topic_count
    # One set of length buckets for every run, from all the dialogues evaluated, so the rows line up.
    lengths = {p["id"]: len(p.get("dialogue", "").split()) for i in items for p in i.predictions}
    edges = quantile_edges(list(lengths.values()), LENGTH_PARTS)
    compared, left_out = _comparisons(items, seed)
    human = _human(items, seed)
    report = {
        "runs": [_run_entry(i, edges, min_topic_count, seed) for i in items],
        "comparisons": compared,
        "not_compared": left_out,
        "human_faithfulness": {"of": names[0], "reference": "first reference of each dialogue", **_figures(human)},
        "examples": _examples(items, human, num_examples, seed),
    }
    if study is not None:
        report["human_evaluation"] = human_section(study, names)
    words = {i.run.name: [len(p["prediction"].split()) for p in i.predictions] for i in items}
    return Analysis(report, words)


def build_report(folders: list[str | Path], num_examples: int = 5, seed: int = 0, min_topic_count: int | None = None) -> dict[str, Any]:
    """The report as data: runs, pairwise comparisons, and reproducibly chosen examples."""
    return analyse(folders, num_examples, seed, min_topic_count).report
