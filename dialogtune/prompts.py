"""The one home of the instruction template, and zero-, one- and few-shot prompt builders.

Imports nothing else from dialogtune but its errors: the config schema checks `prompt.template` here.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from dialogtune.errors import DialogtuneError

PLACEHOLDER = "{dialogue}"
DEFAULT_TEMPLATE = f"Summarize the following conversation.\n\n{PLACEHOLDER}\n\nSummary: "
# Between in-context examples, so the model sees where one example ends and the next begins.
EXAMPLE_SEPARATOR = "\n\n\n"


class Tokenizer(Protocol):
    def __call__(self, text: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class PromptTemplate:
    """An instruction with a `{dialogue}` slot. Only `{dialogue}` is filled, so other braces are literal."""

    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        if PLACEHOLDER not in self.template:
            raise DialogtuneError(
                f"`prompt.template` {self.template!r} has no `{PLACEHOLDER}` placeholder; add one where the dialogue goes"
            )

    def format(self, dialogue: str) -> str:
        return self.template.replace(PLACEHOLDER, dialogue)

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
        prefix, suffix = self.template.split(PLACEHOLDER, 1)
        end = len(prompt) - len(suffix)
        # The query is the last part of a few-shot prompt, so its instruction is the last one.
        start = prompt.rfind(prefix, 0, end) + len(prefix) if prefix else 0
        if not prompt.endswith(suffix) or start < len(prefix):
            # Not this template's prompt: keep its start and the closing special tokens.
            return ids[: max_tokens - 1] + ids[-1:], True
        pieces = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in (prompt[:start], prompt[start:end], suffix)]
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
        Path(path).write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "PromptTemplate":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(template=data["template"])
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
