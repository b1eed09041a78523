"""The one home of the instruction template, and zero-, one- and few-shot prompt builders.

Imports nothing else from dialogtune but its errors: the config schema checks `prompt.template` here.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dialogtune.errors import DialogtuneError

INPUT = "dialogue"  # the input placeholder's name, unless a task declares another
PLACEHOLDER = "{" + INPUT + "}"
DEFAULT_TEMPLATE = f"Summarize the following conversation.\n\n{PLACEHOLDER}\n\nSummary: "
# The built-in tasks' instructions: the very prompts the bundled tiny-t5 was pre-trained with
# (scripts/build_tiny_t5.py; tests/test_tasks.py checks they stay the same).
TOPIC_TEMPLATE = f"What is the topic of the following conversation?\n\n{PLACEHOLDER}\n\nTopic: "
QUESTION_TEMPLATE = f"Answer the question about the following conversation.\n\n{PLACEHOLDER}\n\nQuestion: {{question}}\n\nAnswer: "
DETAILS_TEMPLATE = f"List the details in the following conversation.\n\n{PLACEHOLDER}\n\nDetails: "
# Between in-context examples, so the model sees where one example ends and the next begins.
EXAMPLE_SEPARATOR = "\n\n\n"


class Tokenizer(Protocol):
    def __call__(self, text: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class PromptTemplate:
    """An instruction with a slot for the input: `{dialogue}`, or `{placeholder}` where a task names another.

    Only that slot and the named `fields` (e.g. `{question}`, each filled from the record's column of that
    name) are filled, so other braces are literal.
    """

    template: str = DEFAULT_TEMPLATE
    placeholder: str = INPUT
    fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))  # a list from JSON or YAML; hashable as a tuple
        if self.slot not in self.template:
            raise DialogtuneError(
                f"`prompt.template` {self.template!r} has no `{self.slot}` placeholder; add one where the dialogue goes"
            )
        for name in self.fields:
            if "{" + name + "}" not in self.template:
                raise DialogtuneError(f"`prompt.template` {self.template!r} has no `{{{name}}}` placeholder for the field `{name}`")

    @property
    def slot(self) -> str:
        """The input's placeholder as written in the template, e.g. `{dialogue}`."""
        return "{" + self.placeholder + "}"

    def format(self, dialogue: str, **fields: str) -> str:
        """The prompt for one input; a template with `fields` needs a value for each."""
        if not self.fields:
            return self.template.replace(self.slot, dialogue)
        missing = [name for name in self.fields if name not in fields]
        if missing:
            raise DialogtuneError(f"this prompt template also needs `{missing[0]}` (its fields: {', '.join(self.fields)})")
        values = {"{" + name + "}": str(fields[name]) for name in self.fields} | {self.slot: dialogue}
        # One pass, so a value that happens to contain `{question}` is never filled in again.
        return re.sub("|".join(map(re.escape, values)), lambda m: values[m.group()], self.template)

    def _chunks(self, part: str) -> list[str]:
        """The literal pieces of a part of the template between its field placeholders."""
        if not self.fields:
            return [part]
        return re.split("|".join(re.escape("{" + name + "}") for name in self.fields), part)

    def fit(self, prompt: str, tokenizer: Tokenizer, max_tokens: int) -> tuple[list[int], bool]:
        """Token ids of `prompt` (built by this template, maybe after in-context examples) within
        `max_tokens`, and whether it was cut.

        Only the dialogue is cut, from its end: the instruction before it and the cue after it
        ("Summary: ") stay whole, so the model is still asked for a summary. A prompt that fits comes
        back exactly as the tokenizer encodes it. The ids are built from pieces, not from decoded text,
        which need not encode back to the same ids.
        """
        ids = tokenizer(prompt)["input_ids"]
        if len(ids) <= max_tokens:
            return ids, False
        # Literal text around the input; with fields (`{question}`) the cue after the input holds their values.
        prefix, suffix = (self._chunks(part) for part in self.template.split(self.slot, 1))
        if len(suffix) == 1:
            end = len(prompt) - len(suffix[0])
        else:  # the cue begins at its first literal text; a cue that begins with a field has no such mark
            end = prompt.rfind(suffix[0]) if suffix[0] else -1
        # The query is the last part of a few-shot prompt, so its instruction is the last one.
        start = prompt.rfind(prefix[-1], 0, end) + len(prefix[-1]) if prefix[-1] else 0
        if end < 0 or not prompt.endswith(suffix[-1]) or start < len(prefix[-1]):
            # Not this template's prompt: keep its start and the closing special tokens.
            return ids[: max_tokens - 1] + ids[-1:], True
        pieces = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in (prompt[:start], prompt[start:end], prompt[end:])]
        plain = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        lead = next((i for i in range(len(ids) - len(plain) + 1) if ids[i : i + len(plain)] == plain), 0)
        specials = (ids[:lead], ids[lead + len(plain) :])  # e.g. T5: nothing before, </s> after
        room = max_tokens - len(pieces[0]) - len(pieces[2]) - len(specials[0]) - len(specials[1])
        if room < 0:
            raise DialogtuneError(
                f"the prompt without its dialogue is {max_tokens - room} tokens, more than `data.max_source_length` "
                f"({max_tokens}); raise it or shorten `prompt.template`"
            )
        return specials[0] + pieces[0] + pieces[1][:room] + pieces[2] + specials[1], True

    def example(self, dialogue: str, summary: str) -> str:
        """A solved example for in-context prompting: the prompt followed by its summary."""
        return self.format(dialogue) + summary

    def save(self, path: str | Path) -> None:
        # The placeholder and fields only where they differ, so a summary prompt file stays as it always was.
        data = {"template": self.template, **({"placeholder": self.placeholder} if self.placeholder != INPUT else {})}
        data.update({"fields": list(self.fields)} if self.fields else {})
        Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "PromptTemplate":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["template"], data.get("placeholder", INPUT), tuple(data.get("fields", ())))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DialogtuneError(f"{path} is not a prompt file ({err}); re-run training or fix the file") from None


@dataclass
class ShotReport:
    requested: int
    used: int
    dropped: int


def draw_shots(pool: list[dict], k: int, seed: int, exclude: set[str] = frozenset()) -> list[dict]:
    """Draw k in-context examples reproducibly from the train records."""
    candidates = [r for r in pool if r["id"] not in exclude and r["references"]]
    if k > len(candidates):
        raise DialogtuneError(f"`prompt.shots` is {k}, but the train split has only {len(candidates)} examples")
    return random.Random(seed).sample(candidates, k)


def build_prompts(
    template: PromptTemplate,
    dialogues: list[str],
    shots: list[dict] | None = None,
    tokenizer: Tokenizer | None = None,
    max_tokens: int | None = None,
) -> tuple[list[str], ShotReport]:
    """Prompts for each dialogue, with in-context examples in front when `shots` are given.

    Examples that would push a prompt past `max_tokens` are dropped (last first), never the dialogue
    being summarised; the report says how many example slots were dropped in total.
    """
    shots = shots or []
    if not shots:
        return [template.format(d) for d in dialogues], ShotReport(0, 0, 0)
    solved = [template.example(s["dialogue"], s["references"][0]) for s in shots]
    solved_lengths = [_count(tokenizer, s + EXAMPLE_SEPARATOR) for s in solved] if tokenizer else None
    prompts, used_total, dropped_total = [], 0, 0
    for dialogue in dialogues:
        query = template.format(dialogue)
        keep = len(solved)
        if tokenizer is not None and max_tokens is not None and solved_lengths is not None:
            budget = max_tokens - _count(tokenizer, query)
            while keep and sum(solved_lengths[:keep]) > budget:
                keep -= 1
        prompts.append(EXAMPLE_SEPARATOR.join(solved[:keep] + [query]))
        used_total += keep
        dropped_total += len(solved) - keep
    return prompts, ShotReport(len(shots), used_total, dropped_total)


def _count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])
