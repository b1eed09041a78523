"""How much memory training needs: the estimate behind `activation_checkpointing: auto`.

Simple and on the safe side rather than exact. In bytes, everything fp32:

    weights      all parameters x 4
    gradients    trainable parameters x 4
    AdamW        trainable parameters x 8 (two moments)
    activations  ACTIVATION_FACTOR x batch x d_model x 4 x (encoder layers x source tokens + decoder layers x target tokens)
                 With checkpointing each block keeps only its input (CHECKPOINTED_FACTOR in place of
                 ACTIVATION_FACTOR), and one block at a time holds its full activations while recomputed.
    logits       3 x batch x target tokens x vocabulary x 4 (the logits, their log-softmax, their gradient)

ACTIVATION_FACTOR is calibrated on BENCHMARKS.md (default mode: flan-t5-small shape on CPU, batch 8,
whose longest length-grouped batch has about 459 prompt and 64 summary tokens): LoRA peaked at
4,705 MiB without checkpointing and 1,741 MiB with it. Their difference, 2,964 MiB, is what
checkpointing drops, which gives ACTIVATION_FACTOR = 53; what is left, about 730 MiB, is the Python
process itself (libraries, data), which the estimate leaves out. With that baseline added it predicts
full fine-tuning at 5,560 MiB against the 5,371 MiB measured (+4%). The factor holds attention maps
too, which grow with the sequence, so it is only right near DialogSum's lengths. Under bf16 autocast
activations take less than the fp32 assumed here, so the estimate errs toward checkpointing.
"""

from __future__ import annotations

from typing import Any

import torch

from dialogtune.config import Config
from dialogtune.modeling import parameter_counts, skeleton

FP32 = 4  # bytes
ACTIVATION_FACTOR = 53  # bytes kept per token, layer and d_model unit, / FP32; calibrated as above
CHECKPOINTED_FACTOR = 2  # a checkpointed block keeps its input hidden states (and their gradient)
LOGIT_COPIES = 3  # logits, log-softmax, gradient


def estimate_training_memory(
    model: torch.nn.Module,
    batch_size: int,
    source_len: int,
    target_len: int,
    checkpointing: bool,
) -> int:
    """Peak bytes one training step of `model` needs on its device (not counting the process itself).

    `model` is what is trained: the base for full fine-tuning, the LoRA-wrapped base for LoRA (its
    trainable parameters are the adapter). A meta-device skeleton (`modeling.skeleton`) will do.
    """
    trainable, total = parameter_counts(model)
    config = model.config
    d_model = _dimension(config, "d_model", "hidden_size")
    vocab = _dimension(config, "vocab_size")
    encoder_layers = _dimension(config, "num_layers", "encoder_layers")
    decoder_layers = getattr(config, "num_decoder_layers", None) or getattr(config, "decoder_layers", None) or encoder_layers
    state = total * FP32 + trainable * (FP32 + 2 * FP32)
    per_layer_token = batch_size * d_model * FP32  # one d_model-wide fp32 tensor for every token of the batch
    layer_tokens = encoder_layers * source_len + decoder_layers * target_len
    if checkpointing:
        activations = per_layer_token * (CHECKPOINTED_FACTOR * layer_tokens + ACTIVATION_FACTOR * max(source_len, target_len))
    else:
        activations = per_layer_token * ACTIVATION_FACTOR * layer_tokens
    logits = LOGIT_COPIES * batch_size * target_len * vocab * FP32
    return int(state + activations + logits)


def auto_activation_checkpointing(config: Config) -> tuple[bool, str]:
    """What `activation_checkpointing: auto` means for this config on this machine, and why.

    Recomputing activations saves memory for time, so it is on only where the training-memory
    estimate (dialogtune.memory, at the longest allowed lengths) exceeds the GPU's free memory.
    """
    if not torch.cuda.is_available():
        mps = getattr(torch.backends, "mps", None)
        return False, "training on MPS" if mps is not None and mps.is_available() else "training on CPU"
    args = config.training_args()
    lora = config.lora_args() if config.method == "lora" else None
    need = estimate_training_memory(
        skeleton(config.model, lora), int(args.get("per_device_train_batch_size", 8)),
        config.data.max_source_length, config.data.max_target_length, checkpointing=False,
    )
    free, _ = torch.cuda.mem_get_info()
    where = f"cuda:{torch.cuda.current_device()}"
    if need > free:
        return True, f"estimated {gib(need)} > {gib(free)} free on {where}"
    return False, f"estimated {gib(need)} fits in {gib(free)} free on {where}"


def _dimension(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if value:
            return int(value)
    raise ValueError(f"model config has none of {', '.join(names)}; cannot estimate its training memory")


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"
