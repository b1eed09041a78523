"""Tokenisation for training: no padding here (the collator pads per batch), labels padded with -100."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from dialogtune.prompts import PromptTemplate

log = logging.getLogger(__name__)

LABEL_PAD = -100  # ignored by the cross-entropy loss, so pads are never trained on


@dataclass
class TokenStats:
    examples: int
    source_tokens: int
    target_tokens: int
    truncated_sources: int
    truncated_targets: int

    @property
    def tokens(self) -> int:
        return self.source_tokens + self.target_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "examples": self.examples,
            "source_tokens": self.source_tokens,
            "target_tokens": self.target_tokens,
            "truncated_sources": self.truncated_sources,
            "truncated_targets": self.truncated_targets,
        }


def _truncate(ids: list[int], limit: int) -> tuple[list[int], bool]:
    # Summaries only (prompts go through PromptTemplate.fit). Keep the closing </s>, as the
    # tokenizer's own truncation does for T5.
    if len(ids) <= limit:
        return ids, False
    return ids[: limit - 1] + ids[-1:], True


def tokenize(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    summaries: list[str],
    max_source_length: int,
    max_target_length: int,
    template: PromptTemplate | None = None,
) -> tuple[Any, TokenStats]:
    """Prompts and summaries -> a `datasets.Dataset` of unpadded input_ids, attention_mask, labels, length.

    Over-long examples are truncated and counted, never silently: the counts come back in TokenStats.
    A prompt loses the end of its dialogue, never `template`'s instruction or cue (the default template
    if None); a summary loses its end.
    """
    from datasets import Dataset

    template = template or PromptTemplate()
    targets = tokenizer(text_target=summaries)["input_ids"]
    rows: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "length": []}
    cut_sources = cut_targets = 0
    for prompt, target in zip(prompts, targets, strict=True):
        source, cut = template.fit(prompt, tokenizer, max_source_length)
        cut_sources += cut
        target, cut = _truncate(target, max_target_length)
        cut_targets += cut
        rows["input_ids"].append(source)
        rows["attention_mask"].append([1] * len(source))
        rows["labels"].append(target)
        rows["length"].append(len(source))
    stats = TokenStats(
        examples=len(prompts),
        source_tokens=sum(rows["length"]),
        target_tokens=sum(len(t) for t in rows["labels"]),
        truncated_sources=cut_sources,
        truncated_targets=cut_targets,
    )
    if cut_sources or cut_targets:
        share = cut_sources / max(1, len(prompts))
        log.warning(
            "truncated %d of %d prompts to %d tokens and %d summaries to %d tokens",
            cut_sources, len(prompts), max_source_length, cut_targets, max_target_length,
        )
        if share > 0.05:
            log.warning(
                "%.0f%% of prompts were truncated (more than 5%%); raise data.max_source_length if memory allows",
                100 * share,
            )
    return Dataset.from_dict(rows), stats


def collator(tokenizer: PreTrainedTokenizerBase, model: Any = None) -> DataCollatorForSeq2Seq:
    """Pads each batch to its own longest example; label pads become -100."""
    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=LABEL_PAD, padding="longest")
