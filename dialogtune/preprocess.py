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


def tokenize_tasks(tokenizer: PreTrainedTokenizerBase, config: Any) -> tuple[Any, TokenStats, dict[str, Any]]:
    """The config's tasks as one training set: each task's pairs tokenised with its own template, then mixed by
    weight and `mixing.temperature` (`dialogtune.tasks.mix`). One task with weight is used as it is.

    Returns the set, its token counts, and for the run's metadata each task's data checks and the mixing
    figures (probabilities and realised shares), which are logged too.
    """
    from dialogtune import tasks

    trained = [task for task in tasks.resolve(config) if task.weight > 0]
    parts, cut_sources, cut_targets, checks = {}, 0, 0, {}
    for task in trained:
        records, checks[task.name] = tasks.training_records(task, config)
        prompts, targets = task.pairs(records)
        parts[task.name], stats = tokenize(
            tokenizer, prompts, targets, config.data.max_source_length, config.data.max_target_length, task.template
        )
        cut_sources, cut_targets = cut_sources + stats.truncated_sources, cut_targets + stats.truncated_targets
    probs = tasks.probabilities({task.name: task.weight for task in trained}, config.mixing.temperature)
    if len(parts) == 1:
        (name, dataset), = parts.items()
        mixing = {"examples": len(dataset), "probabilities": {name: 1.0}, "task_examples": {name: len(dataset)}, "realised": {name: 1.0}}
    else:
        dataset, mixing = tasks.mix(parts, probs, config.seed, config.mixing.examples)
    mixing["temperature"] = config.mixing.temperature
    log.info(
        "training on %d examples from %d task(s), temperature %g: %s", mixing["examples"], len(parts), config.mixing.temperature,
        ", ".join(f"{name} {mixing['realised'][name]:.3f} (p {p:.3f})" for name, p in probs.items()),
    )
    stats = TokenStats(
        examples=len(dataset),
        source_tokens=sum(dataset["length"]),
        target_tokens=sum(len(labels) for labels in dataset["labels"]),
        truncated_sources=cut_sources,
        truncated_targets=cut_targets,
    )
    return dataset, stats, {"tasks": checks, "mixing": mixing}
