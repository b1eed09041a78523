"""QLoRA: the frozen base loaded in 4-bit (NF4) or 8-bit through bitsandbytes, trained through a LoRA adapter.

    dialogtune train --config configs/flan-t5-large-lora.yaml --quantization 4bit

bitsandbytes' kernels need a CUDA GPU. Anywhere else (CPU, Apple MPS) or without the package, a
quantized run is refused in one line before anything is loaded. The adapter is saved as for any LoRA
run; evaluation puts it on the full-precision base (the weights it approximates), which needs no GPU.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch

from dialogtune.errors import DialogtuneError


def check_quantization(quantization: str | None) -> None:
    """Refuse a quantized base where bitsandbytes cannot run: no CUDA GPU, or the package missing."""
    if quantization is None:
        return
    if not torch.cuda.is_available():
        raise DialogtuneError(
            f"`quantization: {quantization}` (QLoRA) needs a CUDA GPU for bitsandbytes and this machine has none; "
            f"leave `quantization` unset to train LoRA on the fp32 base here, or train on a GPU"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise DialogtuneError(
            f"`quantization: {quantization}` (QLoRA) needs bitsandbytes, which is not installed; pip install bitsandbytes"
        )


def compute_dtype() -> torch.dtype:
    """bf16 where the GPU has it natively, else fp32: never fp16, in which T5 overflows (transformers #23918)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float32


def quantization_kwargs(quantization: str | None) -> dict[str, Any]:
    """`from_pretrained` arguments that load the base quantized on this process's GPU (none when unset)."""
    if quantization is None:
        return {}
    check_quantization(quantization)
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",  # the QLoRA paper's data type, for normally distributed weights
            bnb_4bit_use_double_quant=True,  # quantise the quantisation constants too: ~0.4 bit a weight less
            bnb_4bit_compute_dtype=compute_dtype(),
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    # Quantized weights cannot be moved after loading: each process loads onto its own GPU (LOCAL_RANK under DDP).
    return {"quantization_config": config, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def prepare_quantized(model: torch.nn.Module) -> torch.nn.Module:
    """peft's preparation of a k-bit base for training: norms and embeddings to fp32, base frozen.

    Activation checkpointing is left to the trainer (training.activation_checkpointing), which also makes
    the embeddings' output require grad (`enable_input_require_grads`) so gradients reach the adapters.
    """
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
