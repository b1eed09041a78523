"""Tasks at work: a task's records, prompts and targets from its data, and several tasks mixed by weight.

A task (its schema and the built-ins: `dialogtune.taskconfig`) is a data source, an input and a target
column, a `PromptTemplate`, a metric, generation settings and a weight. Here each becomes a `Task` bound
to a config: its data read through `dialogtune.data` (so a source without split names is split by
`data.split_sizes`/`data.split_seed`, and the overlap check holds per task), and its prompts built by
its own template. `mix` draws one training set from several tasks' sets, with temperature sampling
over the tasks. Tokenising is `dialogtune.preprocess`' job; scoring a task is `dialogtune.evaluation`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dialogtune.config import Config
from dialogtune.configio import build_config
from dialogtune.data import Record, check_splits_disjoint, load_split, split_info
from dialogtune.errors import DialogtuneError
from dialogtune.prompts import PromptTemplate
from dialogtune.sources import MissingColumn
from dialogtune.taskconfig import BUILTIN_TASKS, SUMMARY, TaskConfig, builtin

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """A task bound to a config: where its rows come from (a `DataConfig`), its prompt, metric and weight.

    `generation` holds only the task's own settings; they go over whatever the model decodes with.
    """

    name: str
    data: Any  # dialogtune.config.DataConfig with the task's source and columns
    template: PromptTemplate
    metric: str
    generation: dict[str, Any]
    weight: float
    spec: TaskConfig

    def records(self, split: str, limit: int | None = None) -> list[Record]:
        """The split's records, with the template's `fields` (e.g. `question`) under `record["fields"]`."""
        try:
            return load_split(self.data, split, limit=limit, columns=self.template.fields)
        except MissingColumn as err:
            option = "input" if err.column == self.spec.input else "target" if err.column == self.spec.target else "fields"
            raise DialogtuneError(
                f"task `{self.name}`: {err.where} has no `{err.column}` column (columns: {', '.join(err.present)}); "
                f"set the task's `{option}` to one of them, or point its `data` at rows that have it"
            ) from None

    def prompts(self, records: list[Record]) -> list[str]:
        """One prompt per record, by the task's own template."""
        return [self.template.format(r["dialogue"], **r.get("fields", {})) for r in records]  # type: ignore[misc]

    def pairs(self, records: list[Record]) -> tuple[list[str], list[str]]:
        """Training pairs: (prompts, targets), one per reference, as summaries are trained."""
        prompts = self.prompts(records)
        pairs = [(prompt, ref) for prompt, r in zip(prompts, records, strict=True) for ref in r["references"]]
        return [p for p, _ in pairs], [t for _, t in pairs]


def bind(config: Config, spec: TaskConfig) -> Task:
    """A task's settings made concrete for `config`: unset data and template become the config's own."""
    data = dataclasses.replace(
        config.data,
        dataset=spec.data or config.data.dataset,
        dialogue_column=spec.input,
        summary_column=spec.target,
        loader="auto" if spec.data else config.data.loader,  # a task's own source says what it is
    )
    return Task(spec.name, data, spec.prompt(config.prompt.template), spec.metric, dict(spec.generation), spec.weight, spec)


def resolve(config: Config) -> list[Task]:
    """The config's tasks; without a `tasks:` list, the one summary task on `data.dataset`."""
    return [bind(config, spec) for spec in config.tasks] or [bind(config, builtin(SUMMARY))]


def known(config: Config) -> list[str]:
    """Task names `get` accepts: the config's own, then the built-ins."""
    return list(dict.fromkeys([t.name for t in config.tasks] + list(BUILTIN_TASKS)))


def get(config: Config, name: str) -> Task:
    """One task by name: as the config defines it, else the built-in of that name."""
    for spec in config.tasks:
        if spec.name == name:
            return bind(config, spec)
    if name not in BUILTIN_TASKS:
        raise DialogtuneError(f"unknown task `{name}`; known tasks: {', '.join(known(config))}")
    return bind(config, builtin(name))


def select(config: Config, names: list[str]) -> Config:
    """`config` with only the tasks `names` (the config's own definitions where it has them, else built-ins):
    what `train --task topic` trains. Unknown names are one error listing the known ones."""
    unknown = [n for n in names if n not in known(config)]
    if unknown:
        raise DialogtuneError(f"unknown task `{unknown[0]}` in --task; known tasks: {', '.join(known(config))}")
    own = {spec.name: dataclasses.asdict(spec) for spec in config.tasks}
    tree = config.to_dict()
    tree["tasks"] = [own.get(name, name) for name in dict.fromkeys(names)]
    return build_config(tree, source="--task")


def training_records(task: Task, config: Config) -> tuple[list[Record], dict[str, Any]]:
    """A task's train records, checked against its own evaluation splits (never train on what is scored),
    and how its data was split and checked (for the run's metadata)."""
    records = task.records(config.data.train_split, limit=config.data.max_train_samples)
    evaluated = [config.data.validation_split, config.data.test_split, config.evaluation.split]
    checks = {
        "data_split": split_info(task.data),
        "data_overlap": check_splits_disjoint(task.data, records, evaluated, config.data.allow_overlap),
    }
    return records, checks


def probabilities(weights: Mapping[str, float], temperature: float = 1.0) -> dict[str, float]:
    """Temperature sampling over tasks: p_i proportional to w_i^(1/T), over the tasks of positive weight.

    T=1 follows the weights, T->inf tends to uniform, T<1 sharpens towards the heaviest task. Computed
    in logs, so a small T cannot overflow.
    """
    logs = {name: math.log(w) / temperature for name, w in weights.items() if w > 0}
    if not logs:
        raise DialogtuneError("every task has weight 0, so there is nothing to train on; give at least one task a positive weight")
    top = max(logs.values())
    scaled = {name: math.exp(value - top) for name, value in logs.items()}
    total = sum(scaled.values())
    return {name: value / total for name, value in scaled.items()}


def mix(parts: Mapping[str, Any], probs: Mapping[str, float], seed: int, total: int | None = None) -> tuple[Any, dict[str, Any]]:
    """One training set drawn from the tasks' sets (`datasets.Dataset`s with the same columns).

    Each of `total` examples (default: all the sets' examples together) draws its task with `probs`,
    seeded; a task's examples are taken in a seeded order and repeated only once all have been used.
    Unlike `datasets.interleave_datasets`, whose stopping strategies tie the mixed size to the first or
    the last task to run out (a small task ends training early, or a low weight inflates it 1/p times),
    the size is fixed and a task's share is binomial around its probability. Returns the mixed set and
    the figures recorded in the run's metadata: probabilities, examples per task, realised shares.
    """
    import numpy as np
    from datasets import concatenate_datasets

    names = list(probs)
    total = total or sum(len(parts[name]) for name in names)
    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(names), size=total, p=np.array([probs[name] for name in names]))
    counts = np.bincount(drawn, minlength=len(names))
    indices = np.empty(total, dtype=np.int64)
    offset = 0
    for k, name in enumerate(names):
        size = len(parts[name])
        rounds = -(-int(counts[k]) // size) if size else 0
        order = np.concatenate([rng.permutation(size) for _ in range(rounds)] or [np.empty(0, dtype=np.int64)])
        indices[drawn == k] = offset + order[: counts[k]]
        offset += size
    mixed = concatenate_datasets([parts[name] for name in names]).select(indices.tolist())
    info = {
        "seed": seed,
        "examples": total,
        "probabilities": {name: round(probs[name], 6) for name in names},
        "task_examples": {name: int(counts[k]) for k, name in enumerate(names)},
        "realised": {name: round(int(counts[k]) / total, 6) for k, name in enumerate(names)},
        "unique_examples": {name: len(parts[name]) for name in names},
    }
    return mixed, info
