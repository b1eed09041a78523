"""The schema of a task, the built-in tasks, and how several tasks are mixed: checked before anything runs.

A task is a data source, an input and a target column, a prompt template (`dialogtune.prompts`), a
metric, generation settings and a mixing weight. A config's `tasks:` list names built-ins or defines
tasks in a few lines of YAML:

    tasks:
      - summary                        # a built-in, as it is
      - {name: topic, weight: 0.2}     # a built-in with a setting changed
      - name: headline                 # your own task
        target: headline
        template: "Write a headline for the following conversation.\\n\\n{dialogue}\\n\\nHeadline: "
        metric: token_f1

Loading a task's records and mixing tasks for training is `dialogtune.tasks`' job. This module comes
before `dialogtune.config`, whose `Config` holds the resolved `TaskConfig`s.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from dialogtune.errors import DialogtuneError
from dialogtune.prompts import DETAILS_TEMPLATE, INPUT, QUESTION_TEMPLATE, TOPIC_TEMPLATE, PromptTemplate

SUMMARY = "summary"  # the task of a config without `tasks:`; its results keep the plain names (metrics.json)
METRIC_NAMES = ("rouge", "exact_match", "token_f1")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# A task's results are stored as metrics.<task>.<split>.json, so a task may not be called like a split.
RESERVED_NAMES = ("train", "validation", "test", "dev", "val", "valid", "partial")


def _option(default: Any, help: str) -> Any:  # noqa: A002 - as in config.py
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TaskConfig:
    """One task. Unset `data` and `template` mean the config's own `data.dataset` and `prompt.template`."""

    name: str = _option("", "The task's name: a built-in (summary, topic, slot_qa, details) or your own.")
    data: str | None = _option(None, "Hub id, local CSV/JSON/JSONL file or folder, or builtin:NAME; unset: data.dataset.")
    input: str = _option(INPUT, "Column that fills the input placeholder of the template.")
    target: str = _option("summary", "Column holding the expected output (or target1, target2, ... for several).")
    template: str | None = _option(None, "Instruction around the input; must contain the input placeholder. Unset: prompt.template.")
    placeholder: str = _option(INPUT, "Name of the input placeholder in the template: {dialogue} unless set.")
    fields: list[str] = _option([], "Other placeholders of the template, each filled from the column of that name (e.g. question).")
    metric: str = _option("rouge", "rouge, exact_match or token_f1 (answers normalised as in SQuAD).")
    generation: dict[str, Any] = _option({}, "transformers.GenerationConfig fields for this task, over the config's `generation`.")
    weight: float = _option(1.0, "Share in the training mix before the temperature; 0: evaluated, never trained on.")

    def prompt(self, default_template: str) -> PromptTemplate:
        """The task's template, or `default_template` (the config's `prompt.template`) when it sets none."""
        return PromptTemplate(self.template or default_template, self.placeholder, tuple(self.fields))


# The built-in tasks. `summary` and `topic` read the config's own data (DialogSum has a `topic` column, and so
# does the bundled corpus); `slot_qa` and `details` are the bundled tiny-t5's pre-training tasks on the
# bundled corpus (scripts/build_task_data.py), whose test items come from the corpus's test split only.
BUILTIN_TASKS: dict[str, dict[str, Any]] = {
    "summary": {},
    "topic": {"target": "topic", "template": TOPIC_TEMPLATE, "metric": "exact_match", "generation": {"max_new_tokens": 16}},
    "slot_qa": {
        "data": "builtin:slot_qa", "target": "answer", "template": QUESTION_TEMPLATE, "fields": ["question"],
        "metric": "exact_match", "generation": {"max_new_tokens": 16},
    },
    "details": {"data": "builtin:details", "target": "details", "template": DETAILS_TEMPLATE, "metric": "token_f1"},
}


@dataclass
class MixingConfig:
    temperature: float = _option(
        1.0,
        "Temperature T over the weights of the YAML `tasks:` list (built-in names, or mappings with name, data, input, "
        "target, template, metric, generation, weight): task i is drawn with probability proportional to "
        "weight_i^(1/T); 1: as the weights, large: near uniform.",
    )
    examples: int | None = _option(None, "Examples in the mixed training set; unset: as many as the tasks' train splits hold together.")

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not (
            0 < self.temperature < math.inf
        ):
            problems.append(f"`mixing.temperature` is {self.temperature!r}; use a positive number (1: as the weights)")
        if self.examples is not None and self.examples <= 0:
            problems.append(f"`mixing.examples` is {self.examples}; use a positive number or leave it unset")
        if problems:
            raise DialogtuneError("; ".join(problems))


def builtin(name: str) -> TaskConfig:
    """A built-in task by name."""
    if name not in BUILTIN_TASKS:
        raise DialogtuneError(f"unknown task `{name}`; the built-in tasks are: {', '.join(BUILTIN_TASKS)}")
    return _task({"name": name}, 1)


def resolve_tasks(entries: Any, problems: list[str] | None = None) -> list[TaskConfig]:
    """A config's `tasks:` list -> TaskConfigs, every problem in it reported at once: raised, or added to
    `problems` when given (as `Config` collects the problems of all its sections).

    An entry is a built-in's name, or a mapping: `name` plus any TaskConfig field; a built-in's name with
    fields changes those fields only. Already resolved TaskConfigs (a config read back) pass through.
    """
    found: list[str] = []
    tasks = _resolve(entries, found)
    if problems is not None:
        problems.extend(found)
    elif found:
        raise DialogtuneError("; ".join(found))
    return tasks


def _resolve(entries: Any, problems: list[str]) -> list[TaskConfig]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        problems.append(f"`tasks` is {entries!r}; write a list of task names or mappings (see configs/custom-task-headline.yaml)")
        return []
    tasks: list[TaskConfig] = []
    for number, entry in enumerate(entries, start=1):
        try:
            tasks.append(_task(entry, number))
        except DialogtuneError as err:
            problems.append(str(err))
    names = [t.name for t in tasks]
    for name in dict.fromkeys(n for n in names if names.count(n) > 1):
        problems.append(f"task `{name}` is listed {names.count(name)} times; give each task its own name")
    weights = [t.weight for t in tasks]
    if tasks and len(tasks) == len(entries) and not any(w > 0 for w in weights) and all(w >= 0 for w in weights):
        problems.append("every task has weight 0, so there is nothing to train on; give at least one task a positive weight")
    return tasks


def _task(entry: Any, number: int) -> TaskConfig:
    if isinstance(entry, TaskConfig):
        entry = dataclasses.asdict(entry)
    if isinstance(entry, str):
        if entry not in BUILTIN_TASKS:
            raise DialogtuneError(
                f"unknown task `{entry}`; the built-in tasks are {', '.join(BUILTIN_TASKS)}, or define it as a mapping "
                f"with `name`, `target` and `template` (see configs/custom-task-headline.yaml)"
            )
        entry = {"name": entry}
    if not isinstance(entry, dict):
        raise DialogtuneError(f"`tasks` entry {number} is {entry!r}; use a task name or a mapping with `name`")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in RESERVED_NAMES:
        raise DialogtuneError(
            f"`tasks` entry {number} has name {name!r}; give it a `name` of letters, digits, `-` or `_` "
            f"(not {', '.join(RESERVED_NAMES)})"
        )
    known = {f.name for f in dataclasses.fields(TaskConfig)}
    problems = [f"unknown key `{key}`{_suggest(key, known)}" for key in entry if key not in known]
    values = {**BUILTIN_TASKS.get(name, {}), **{k: v for k, v in entry.items() if k in known}}
    if name in BUILTIN_TASKS:  # a read-back entry spells out every field; unset ones keep the built-in's
        values.update({k: v for k, v in BUILTIN_TASKS[name].items() if entry.get(k) is None})
    hints = typing.get_type_hints(TaskConfig)
    for key, value in values.items():
        if key in hints and not _fits(value, hints[key]):
            problems.append(f"`{key}` is {value!r}; it must be {_kind(hints[key])}")
    if problems:
        raise DialogtuneError(f"task `{name}`: " + "; ".join(problems))
    task = TaskConfig(**{k: v for k, v in values.items() if k in hints})
    task.weight = float(task.weight)
    return _check(task)


def _check(task: TaskConfig) -> TaskConfig:
    problems = []
    if task.metric not in METRIC_NAMES:
        problems.append(f"`metric` is {task.metric!r}; use one of {', '.join(METRIC_NAMES)}")
    if not math.isfinite(task.weight) or task.weight < 0:
        problems.append(f"`weight` is {task.weight!r}; use 0 or more (0: evaluated, never trained on)")
    for name in [task.placeholder, *task.fields]:
        if not re.fullmatch(r"\w+", name):
            problems.append(f"placeholder name {name!r} is not a plain name; use letters, digits or _")
    slot = "{" + task.placeholder + "}"
    if task.template is not None and slot not in task.template:
        problems.append(f"`template` {task.template!r} has no `{slot}` placeholder; add one where the `{task.input}` column goes")
    elif task.template is None and task.placeholder != INPUT:
        problems.append(f"`placeholder` is {task.placeholder!r} but the task has no `template` of its own; add one with `{slot}`")
    for name in task.fields:
        if task.template is not None and "{" + name + "}" not in task.template:
            problems.append(f"`fields` has {name!r} but the template has no `{{{name}}}`; add it or drop the field")
    if task.template is None and task.fields:
        problems.append("`fields` needs a `template` of the task's own that holds them")
    if problems:
        raise DialogtuneError(f"task `{task.name}`: " + "; ".join(problems))
    return task


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


def _kind(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (list, dict):
        return "a list of names" if origin is list else "a mapping"
    return {str: "text", float: "a number"}.get(hint, "text or unset")


def _suggest(key: str, valid: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1)
    return f"; did you mean `{close[0]}`?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def omit_default_tasks(tree: dict[str, Any]) -> dict[str, Any]:
    """A config mapping without `tasks` and `mixing` when neither is used, so the config.yaml of a plain
    summary run reads as it did before tasks existed and earlier run folders still count as the same run."""
    if not tree.get("tasks") and tree.get("mixing") == dataclasses.asdict(MixingConfig()):
        tree.pop("tasks", None)
        tree.pop("mixing", None)
    return tree
