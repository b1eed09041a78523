"""Splits that must not share dialogues: seeded part sizes, and the train-versus-evaluation overlap check.

A dialogue is compared as `comparable` text (case, punctuation and spacing ignored), so a copy that
differs only in formatting still counts as the same dialogue.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from dialogtune.errors import DialogtuneError

log = logging.getLogger(__name__)


def comparable(text: str) -> str:
    """A dialogue as the overlap check sees it: lowercase, punctuation gone, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.lower()).split())


def part_sizes(count: int, fractions: list[float]) -> list[int]:
    """`count` split by `fractions`, rounded by largest remainder so the sizes add up to `count` exactly."""
    exact = [fraction * count for fraction in fractions]
    sizes = [int(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: exact[i] - sizes[i], reverse=True)
    for i in by_remainder[: count - sum(sizes)]:
        sizes[i] += 1
    return sizes


def check_overlap(train: list[dict[str, Any]], evaluation: list[dict[str, Any]], allow: bool, name: str = "evaluation") -> dict[str, Any]:
    """Refuse evaluation dialogues that are also train dialogues (same id, or same text up to case, spacing and
    punctuation); with `allow`, warn instead. Returns `{"overlap": n, "example": id or None}` for the metadata.
    """
    train_ids = {record["id"] for record in train}
    train_texts = {comparable(record["dialogue"]): record["id"] for record in train}
    shared: list[tuple[str, str]] = []  # (evaluation id, how it matches a train dialogue)
    for record in evaluation:
        twin = train_texts.get(comparable(record["dialogue"]))
        if twin is not None:
            shared.append((record["id"], "same id and text" if twin == record["id"] else f"same text as train id {twin}"))
        elif record["id"] in train_ids:
            shared.append((record["id"], "same id, different text"))
    if not shared:
        return {"overlap": 0, "example": None}
    example, how = shared[0]
    message = f"{len(shared)} of {len(evaluation)} {name} dialogues also appear in the train split (e.g. id {example}, {how})"
    if not allow:
        raise DialogtuneError(
            f"{message}; remove them from one split, or pass --allow-overlap to train anyway (the overlap is recorded)"
        )
    log.warning("%s; training anyway because data.allow_overlap is set", message)
    return {"overlap": len(shared), "example": example}
