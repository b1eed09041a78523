"""Batched generation, longest prompts first, so each batch pads little and the order is restored after."""

from __future__ import annotations

import logging
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


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    config: GenerationConfig,
    batch_size: int = 16,
    max_source_length: int = 512,
    progress: bool = True,
) -> list[str]:
    """Summaries for `prompts`, in the same order."""
    model.eval()
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=True, max_length=max_source_length)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    outputs: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    bar = tqdm(total=len(prompts), desc="generating", unit="summary", disable=not progress)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
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
        for i, text in zip(batch, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
            outputs[i] = text.strip()
        bar.update(len(batch))
    bar.close()
    return outputs
