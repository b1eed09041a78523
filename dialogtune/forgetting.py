"""`dialogtune forgetting CONFIG`: catastrophic forgetting, measured. What fine-tuning on summaries costs the
other tasks a model could do, for full fine-tuning and LoRA, trained on summaries alone or multi-task.

    dialogtune forgetting configs/forgetting-demo.yaml     # the bundled model, offline, minutes on a CPU

The config's `tasks:` list is the suite: `summary` plus the retained tasks, each at the small weight the
multi-task models train it with (a config without `tasks:` on builtin:tiny-t5 gets summary + topic +
slot_qa + details at 0.15). Every task is scored on the test split for six models:

- the original model (a freshly loaded base);
- full fine-tuning and LoRA on `summary` only (the retained tasks at weight 0: scored, never trained);
- the same LoRA with its adapter switched off, which must give the original's predictions exactly;
- full fine-tuning and LoRA multi-task (every task at its weight; `run.overrides` sets each method's steps).

The trained models are normal run folders under the output (`full-summary`, `lora-summary`,
`full-multitask`, `lora-multitask`, and `original`); a rerun keeps the finished ones (`RunFolder.plan`).
Both LoRA adapters are scored on ONE loaded base (`Summarizer.from_adapters`), where adapter off is the
bare base; that check is redone on every run, since it is what the report's LoRA claim rests on.
The numbers become forgetting.json/.md/.html (`dialogtune.report.forgetting`): each score with its 95% CI,
and each change from the original with a paired bootstrap CI and a sign-flip test on the same items.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dialogtune import runs
from dialogtune.config import Config
from dialogtune.configio import build_config, for_method
from dialogtune.errors import DialogtuneError
from dialogtune.evaluation import evaluate_task
from dialogtune.inference import BASE, Summarizer
from dialogtune.pipeline import run_one
from dialogtune.runs import Plan, RunFolder
from dialogtune.significance import paired_test
from dialogtune.taskconfig import SUMMARY
from dialogtune.tasks import Task, resolve
from dialogtune.train import train

log = logging.getLogger(__name__)

BUNDLED_MODEL = "builtin:tiny-t5"
# The bundled model's pre-training tasks, kept beside the summary at a small weight in the multi-task models.
DEFAULT_SUITE: list[Any] = [SUMMARY, {"name": "topic", "weight": 0.15}, {"name": "slot_qa", "weight": 0.15},
                            {"name": "details", "weight": 0.15}]


@dataclass(frozen=True)
class Model:
    """One of the six models the report scores."""

    key: str  # its key in forgetting.json
    label: str  # how the tables name it
    method: str  # original, full or lora
    trained_on: str  # "-", "summary" or "summary + retained"
    folder: str | None  # its run folder under the output; None: the adapter-off model, which is no run of its own
    adapter: str | None = None  # its name on the shared base (BASE: adapter off)


MULTI = "summary + retained"
MODELS = (
    Model("original", "original", "original", "-", "original"),
    Model("full_summary", "full, summary only", "full", SUMMARY, "full-summary"),
    Model("lora_summary", "LoRA, summary only", "lora", SUMMARY, "lora-summary", "summary_only"),
    Model("lora_summary_off", "same LoRA, adapter off", "lora", SUMMARY, None, BASE),
    Model("full_multitask", "full, multi-task", "full", MULTI, "full-multitask"),
    Model("lora_multitask", "LoRA, multi-task", "lora", MULTI, "lora-multitask", "multitask"),
)
BY_KEY = {m.key: m for m in MODELS}
ORIGINAL, FULL_SUMMARY, LORA_OFF = "original", "full_summary", "lora_summary_off"


def suite_config(config: Config) -> Config:
    """`config` with its suite checked (or the default suite on the bundled model): summary and at least one
    retained task, summary trained on, and at least one retained task at a weight for the multi-task models."""
    if not config.tasks:
        if config.model != BUNDLED_MODEL:
            raise DialogtuneError(
                f"the config lists no `tasks:`; list the suite for {config.model}: `summary` plus the tasks whose "
                f"forgetting to measure, each with a small weight, e.g. `tasks: [summary, {{name: topic, weight: 0.2}}]`"
            )
        config = build_config({**config.to_dict(), "tasks": DEFAULT_SUITE}, source="the default forgetting suite")
    names = [t.name for t in config.tasks]
    if SUMMARY not in names:
        raise DialogtuneError(
            f"the forgetting suite ({', '.join(names)}) has no `summary` task; add `summary` to `tasks:`: "
            "it is what the fine-tuned models are trained on"
        )
    retained = [t for t in config.tasks if t.name != SUMMARY]
    if not retained:
        raise DialogtuneError("the forgetting suite holds only `summary`; add the tasks to keep to `tasks:`, e.g. topic, slot_qa, details")
    if next(t for t in config.tasks if t.name == SUMMARY).weight <= 0:
        raise DialogtuneError(
            "`summary` has weight 0 in the forgetting suite; give it a positive weight (e.g. 1): every model trains on it"
        )
    if not any(t.weight > 0 for t in retained):
        raise DialogtuneError(
            f"every retained task ({', '.join(t.name for t in retained)}) has weight 0, so the multi-task models would "
            "train on summaries alone; give them a small weight, e.g. 0.15"
        )
    return config


def model_configs(config: Config) -> dict[str, Config]:
    """The config of each run folder: the suite as it is (multi-task), or with the retained tasks at weight 0."""
    tree = config.to_dict()
    only = {**tree, "tasks": [{**t, "weight": t["weight"] if t["name"] == SUMMARY else 0.0} for t in tree["tasks"]]}
    trees = {SUMMARY: only, MULTI: tree}
    return {m.key: for_method(build_config(trees.get(m.trained_on, tree), source=f"forgetting: {m.label}"), m.method)
            for m in MODELS if m.folder}


def _store(folder: Path, task: Task, split: str, result: dict[str, Any]) -> None:
    """A LoRA run's scores on one task, written into its run folder as `dialogtune evaluate` would."""
    run = runs.read_run(folder)
    metrics = {**result["metrics"], "method": run.method, "model": run.base_model, "evaluated_with": "one base, adapters unmerged"}
    run.write_results(split, result["rows"], metrics, task=task.name)


def _evaluate_lora(config: Config, output: Path, pending: list[Model], progress: bool) -> dict[str, dict[str, Any]]:
    """Score the LoRA runs in `pending` and the bare base (adapter off) on one base carrying both adapters.

    Returns the adapter-off results by task; the adapters' results go into their run folders.
    """
    adapters = {m.adapter: output / m.folder for m in MODELS if m.method == "lora" and m.folder}
    summarizer = Summarizer.from_adapters(config.model, adapters, config)
    kw = {"split": config.evaluation.split, "limit": config.data.max_eval_samples, "n_resamples": config.evaluation.bootstrap_resamples,
          "seed": config.seed, "progress": progress}
    off: dict[str, dict[str, Any]] = {}
    for task in resolve(config):
        protocol = config.evaluation.protocol if task.name == SUMMARY else "mean"  # as evaluate_run_tasks scores it
        off[task.name] = evaluate_task(summarizer, task, adapter=BASE, protocol=protocol, **kw)
        for model in pending:
            log.info("== %s: %s ==", model.label, task.name)
            result = evaluate_task(summarizer, task, adapter=model.adapter, protocol=protocol, **kw)
            _store(output / model.folder, task, kw["split"], result)
    return off


def check_adapter_off(original: dict[str, dict[str, Any]], off: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Adapter off must give the original model's predictions, item by item; else one error naming the first
    difference. `original`/`off`: task -> {"ids", "predictions"}. Returns the check as the report records it."""
    checked = {}
    for task, ours in off.items():
        theirs = original[task]
        if ours["ids"] != theirs["ids"]:
            raise DialogtuneError(f"task `{task}`: adapter off and the original were scored on different items; rerun with --overwrite")
        differ = [i for i, (a, b) in enumerate(zip(ours["predictions"], theirs["predictions"], strict=True)) if a != b]
        if differ:
            i = differ[0]
            raise DialogtuneError(
                f"with the LoRA adapter off, {len(differ)} of {len(ours['ids'])} `{task}` predictions differ from the original "
                f"model's (first: id {ours['ids'][i]}: {ours['predictions'][i][:60]!r} vs {theirs['predictions'][i][:60]!r}); "
                "the base under the adapters is not the original: check that nothing trained or merged into it"
            )
        checked[task] = len(ours["ids"])
    return {"equal": True, "items": checked, "total": sum(checked.values())}


def _from_folder(folder: Path, task: str) -> dict[str, Any]:
    run = runs.read_run(folder)
    metrics = run.read_metrics(task=task)
    if metrics is None:
        raise DialogtuneError(f"{folder} has no scores for task `{task}`; rerun the forgetting command to evaluate it")
    rows = run.predictions(task=task)
    primary = metrics["primary"]
    return {"metrics": metrics, "ids": [r["id"] for r in rows], "predictions": [r["prediction"] for r in rows],
            "scores": [r["scores"][primary] for r in rows], "metadata": run.metadata}


def _from_result(result: dict[str, Any]) -> dict[str, Any]:
    metrics = result["metrics"]
    return {"metrics": metrics, "ids": result["ids"], "predictions": [r["prediction"] for r in result["rows"]],
            "scores": result["per_example"][metrics["primary"]], "metadata": {}}


def analyse(results: dict[str, dict[str, dict[str, Any]]], suite: list[Task], n_resamples: int, seed: int) -> dict[str, Any]:
    """The report's numbers from each model's results (model key -> task -> {"metrics", "ids", "scores"}): each
    score with its CI, each change from the original as a paired test on the same items, and the trained models
    that keep or lose more than full fine-tuning on summaries (paired against it)."""
    table: dict[str, dict[str, Any]] = {}
    for key, by_task in results.items():
        table[key] = {}
        for task in suite:
            mine, base = by_task[task.name], results[ORIGINAL][task.name]
            if mine["ids"] != base["ids"]:
                raise DialogtuneError(
                    f"`{task.name}`: {BY_KEY[key].label} was scored on other items than the original; rerun with --overwrite"
                )
            primary = mine["metrics"]["primary"]
            score = mine["metrics"]["scores"][primary]
            cell: dict[str, Any] = {"score": score["score"], "ci_low": score["ci_low"], "ci_high": score["ci_high"], "n": len(mine["ids"])}
            if key != ORIGINAL:
                cell["change"] = paired_test(np.array(mine["scores"]), np.array(base["scores"]), n_resamples, seed)
            if key not in (ORIGINAL, FULL_SUMMARY, LORA_OFF):
                cell["vs_full_summary"] = paired_test(np.array(mine["scores"]), np.array(results[FULL_SUMMARY][task.name]["scores"]),
                                                      n_resamples, seed)
            table[key][task.name] = cell
    return {
        "suite": [{"task": t.name, "metric": results[ORIGINAL][t.name]["metrics"]["primary"], "weight": t.weight,
                   "retained": t.name != SUMMARY, "dataset": t.data.dataset} for t in suite],
        "results": table,
        "bootstrap": {"n_resamples": int(n_resamples), "seed": seed, "confidence": 0.95, "test": "paired sign-flip, two-sided"},
    }


def _host() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def run_forgetting(config: Config, output: str | Path | None = None, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train and score the six models into `output` (default: `config.output`) and write forgetting.json/.md/.html.

    Returns the report data. A finished run folder with the same settings is kept, a killed one resumes.
    """
    from dialogtune.report.forgetting import findings, write_forgetting

    started, host = time.perf_counter(), _host()
    config = suite_config(config)
    output = Path(output or config.output)
    configs = model_configs(config)
    plans = {key: RunFolder.plan(output / BY_KEY[key].folder, c, overwrite)[0] for key, c in configs.items()}  # refuse before any work
    for key, plan in plans.items():
        model = BY_KEY[key]
        log.info("== %s: %s ==", model.label, "kept (already finished with these settings)" if plan is Plan.KEEP else plan.value)
        if model.method != "lora":
            run_one(configs[key], output / model.folder, plan, overwrite=overwrite, progress=progress)
        elif plan not in (Plan.KEEP, Plan.EVALUATE):
            train(configs[key], output / model.folder, overwrite=overwrite)
    pending = [BY_KEY[k] for k, plan in plans.items() if BY_KEY[k].method == "lora" and plan is not Plan.KEEP]
    shared = time.perf_counter()
    off = _evaluate_lora(configs[ORIGINAL], output, pending, progress)
    shared = time.perf_counter() - shared
    suite = resolve(configs[ORIGINAL])
    results = {m.key: {t.name: _from_result(off[t.name]) if m.key == LORA_OFF else _from_folder(output / m.folder, t.name) for t in suite}
               for m in MODELS}
    check = check_adapter_off(results[ORIGINAL], {t.name: results[LORA_OFF][t.name] for t in suite})
    report = analyse(results, suite, config.evaluation.bootstrap_resamples, config.seed)
    report["models"] = [{**dataclasses.asdict(m), **_cost(results[m.key][SUMMARY]["metadata"]),
                         "kept": plans.get(m.key) is Plan.KEEP} for m in MODELS]
    report.update(
        split=config.evaluation.split, model=config.model, adapter_off_check=check,
        timing={"wall_seconds": round(time.perf_counter() - started, 1), "cpu_seconds": round(sum(os.times()[:2]), 1),
                "shared_base_seconds": round(shared, 1), "host_start": host, "host_end": _host()},
    )
    report["findings"] = findings(report)
    write_forgetting(report, output)
    return report


def _cost(metadata: dict[str, Any]) -> dict[str, Any]:
    keys = ("trainable_params", "total_params", "train_steps", "train_seconds", "mixing")
    return {k: metadata.get(k) for k in keys}
