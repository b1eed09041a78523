"""Batched generation, longest prompts first, so each batch pads little and the order is restored after."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

log = logging.getLogger(__name__)


def generation_config(settings: dict[str, Any], tokenizer: Any) -> GenerationConfig:
    """Our settings on top of the tokenizer's special tokens; the library's 20-token default is never used."""
    from dialogtune.errors import DialogtuneError

    try:
        config = GenerationConfig(
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
            **settings,
        )
        config.validate(strict=True)
    except (TypeError, ValueError) as err:
        raise DialogtuneError(f"invalid generation options: {str(err).strip().splitlines()[0]}") from None
    return config


def batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches, longest first; the same lengths always give the same batches."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    config: GenerationConfig,
    batch_size: int = 16,
    max_source_length: int = 512,
    progress: bool = True,
    done: dict[int, str] | None = None,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
) -> list[str]:
    """Summaries for `prompts`, in the same order.

    `done` holds outputs of an interrupted earlier call (by prompt index); batches it fully covers are
    skipped, so the remaining batches are exactly those an uninterrupted call would run. `on_batch`
    is told each finished batch, e.g. to save progress.
    """
    model.eval()
    done = done or {}
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=True, max_length=max_source_length)["input_ids"]]
    outputs: list[str] = [""] * len(prompts)
    for i, text in done.items():
        outputs[i] = text
    device = next(model.parameters()).device
    bar = tqdm(total=len(prompts), desc="generating", unit="summary", disable=not progress)
    for batch in batches(lengths, batch_size):
        if all(i in done for i in batch):
            bar.update(len(batch))
            continue
        encoded = tokenizer(
            [prompts[i] for i in batch],
            padding=True,
            truncation=True,
            max_length=max_source_length,
            return_tensors="pt",
        ).to(device)
        # Keyword arguments only: PeftModel.generate rejects positional ones.
        generated = model.generate(
            input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], generation_config=config
        )
        texts = [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
        for i, text in zip(batch, texts, strict=True):
            outputs[i] = text
        if on_batch is not None:
            on_batch(batch, texts)
        bar.update(len(batch))
    bar.close()
    return outputs
