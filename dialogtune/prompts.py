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
