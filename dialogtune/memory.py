"""How much memory training needs per device: the one estimate behind `activation_checkpointing: auto`
and `dialogtune plan`.

Everything is counted from the model's shape (a meta-device skeleton will do), in bytes:

    weights      parameters x 4 (fp32; torch autocast keeps fp32 weights), or as the engine stores them
    gradients    trainable parameters x 4
    optimizer    AdamW: trainable parameters x 8 (two fp32 moments)
    activations  what autograd saves for the backward pass, per layer and token, plus attention maps:
                   encoder layer, per source token: 32 d_model + 16 inner + 32 d_ff bytes (full fine-tuning)
                   decoder layer, per target token: 48 d_model + 24 inner + 32 d_ff, and 8 inner per source
                                                    token (the cross-attention keys and values)
                   every attention map element (batch x heads x queries x keys): 12 bytes (softmax, dropout
                                                    mask, dropped-out copy)
                   outside the layers: 20 d_model per token (embeddings, final norms; 8 for LoRA), and the logits
                 LoRA on attention saves less (frozen layers need no input for a weight gradient): 20 d_model
                 + 12 inner + 28 d_ff (encoder), 32 + 16 + 28 (decoder), plus 4 r for every adapter and token.
                 These are exact counts of the tensors autograd saves in transformers 5's T5 (FLAN-T5 layout,
                 dropout on, fp32), made with `torch.autograd.graph.saved_tensors_hooks`
                 (`bench/bench_plan.py --derive` repeats them; tests/test_memory.py checks them).
    transient    the backward pass adds the logits' log-softmax and gradient (2 more logit copies), and
                 the gradients of the block being back-propagated (one block's activations). With
                 activation checkpointing each block keeps only its input (and that input's gradient) and
                 the position bias; the recomputed block holds its activations and their gradients.

Gradients appear as activations are freed and the trainer drops them between steps, so a step holds
the larger of the two, unless gradient accumulation keeps gradients across micro-batches.

Checked against peak resident memory measured on CPU (BENCHMARKS.md; `bench/bench_plan.py` prints the
table): within 25% for full fine-tuning and LoRA with and without checkpointing at the flan-t5-small and
flan-t5-base shapes, once the process itself (PROCESS_BYTES, ~730 MiB of libraries and data) is added.
Under bf16 autocast the matmul outputs and attention maps take 2 bytes; the residual stream and the
norms stay fp32 (BF16_FACTOR below, not measured here: no GPU). Engines: see `training_bytes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from dialogtune.config import Config
from dialogtune.modeling import parameter_counts, skeleton

FP32, BF16 = 4, 2  # bytes
PROCESS_BYTES = 730 * 2**20  # the Python process itself on CPU (libraries, tokenizer, data): BENCHMARKS.md peaks minus the estimate
# Bytes autograd saves per token and layer, per unit of width (d_model, inner = heads x d_kv, d_ff); see above.
FULL = {"encoder": (32, 16, 32), "decoder": (48, 24, 32)}
LORA = {"encoder": (20, 12, 28), "decoder": (32, 16, 28)}
ATTENTION_BYTES = 12  # per attention-map element: softmax output, dropout mask, dropped-out copy
CROSS_KV_BYTES = 8  # per source token, inner unit and decoder layer: cross-attention keys and values
OUTSIDE_BYTES = {"full": 20, "lora": 8}  # per token and d_model unit outside the layers: embeddings, dropout, final norms
LOGIT_COPIES = 3  # logits (saved), their log-softmax and its gradient (in the backward pass)
CHECKPOINTED_BYTES = 2 * FP32  # per token and d_model unit of every layer: the block's input and its gradient
BF16_FACTOR = 0.5  # matmul outputs and attention maps under bf16 autocast; d_model-wide tensors stay fp32
# QLoRA: NF4 weights (4 bits) + one 8-bit absmax per 64 weights + one fp32 constant per 256 absmaxes (double quantisation)
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
INT8_BYTES = 1.0  # LLM.int8: one byte a weight, plus a per-row scale (negligible)
ENGINES = ("single", "ddp", "fsdp", "zero2", "zero3")
FFN_LEAVES = ("wi", "wi_0", "wi_1", "wo")


@dataclass(frozen=True)
class Shape:
    """What the estimate reads from a model: parameter counts and the widths of a T5-style encoder-decoder."""

    total: int
    trainable: int
    d_model: int
    inner: int  # heads x d_kv: the width of the attention projections
    d_ff: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    vocab: int
    block_params: int  # the largest transformer block (the unit FSDP / ZeRO-3 gather at a time)
    root_params: int  # parameters outside every block (embeddings, lm_head, final norms): FSDP's root unit
    quantizable: int  # parameters of the blocks' linear layers (what bitsandbytes quantises)
    ffn_adapters: bool  # LoRA adapters sit on feed-forward layers too (they then save as much as full fine-tuning)
    source_rank: int = 0  # summed LoRA rank of the adapters that run over source tokens (encoder, cross-attention k, v)
    target_rank: int = 0  # ... and over target tokens (the rest of the decoder)

    @classmethod
    def of(cls, model: torch.nn.Module) -> "Shape":
        trainable, total = parameter_counts(model)
        config = model.config
        head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
        if head is not None and head.weight is embedding.weight and getattr(config, "scale_decoder_outputs", True) is False:
            # transformers 5 ties T5's lm_head to the embedding when built from a config, but a config that said
            # tie_word_embeddings: false (every FLAN-T5) belongs to a checkpoint with its own lm_head: count it.
            total += head.weight.numel()
            trainable += head.weight.numel() if head.weight.requires_grad else 0
        d_model = _dimension(config, "d_model", "hidden_size")
        heads = _dimension(config, "num_heads", "encoder_attention_heads", "num_attention_heads")
        d_kv = getattr(config, "d_kv", None) or d_model // heads
        layers = _dimension(config, "num_layers", "encoder_layers")
        decoder = getattr(config, "num_decoder_layers", None) or getattr(config, "decoder_layers", None) or layers
        blocks = [m for m in model.modules() if type(m).__name__ in _block_names(model)]
        sizes = [sum(p.numel() for p in b.parameters()) for b in blocks]
        quantizable = sum(m.weight.numel() for b in blocks for n, m in b.named_modules()
                          if isinstance(m, torch.nn.Linear) and "lora_" not in n)  # the adapters stay fp32
        ffn, source_rank, target_rank = False, 0, 0
        for name, module in model.named_modules():
            if name.endswith(".lora_A"):  # each adapter saves its r-wide intermediate for every token it sees
                rank = sum(m.out_features for m in module.values())
                ffn = ffn or name.rsplit(".", 2)[-2] in FFN_LEAVES
                if ".encoder." in name or any(f"EncDecAttention.{x}.lora_A" in name for x in ("k", "v")):
                    source_rank += rank
                else:
                    target_rank += rank
        return cls(total, trainable, d_model, heads * d_kv, _dimension(config, "d_ff", "encoder_ffn_dim", "intermediate_size"),
                   heads, layers, decoder, _dimension(config, "vocab_size"), max(sizes, default=total), total - sum(sizes),
                   quantizable, ffn, source_rank, target_rank)

    @property
    def lora(self) -> bool:
        return self.trainable < self.total


def _block_names(model: torch.nn.Module) -> set[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(getattr(base, "_no_split_modules", None) or ["T5Block"])  # what transformers never splits: T5Block


def _dimension(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if value:
            return int(value)
    raise ValueError(f"model config has none of {', '.join(names)}; cannot estimate its training memory")


def saved_bytes(shape: Shape, batch: int, source_len: int, target_len: int, precision: str = "fp32") -> dict[str, float]:
    """What autograd saves for one micro-batch without checkpointing, by part: one encoder block, one
    decoder block, and everything outside the blocks (embeddings, norms, the logits once)."""
    narrow = BF16_FACTOR if precision == "bf16" else 1.0  # inner, d_ff and attention-map tensors
    coefficients = LORA if shape.lora and not shape.ffn_adapters else FULL
    d, inner, d_ff, heads = shape.d_model, shape.inner, shape.d_ff, shape.heads
    s, t = source_len, target_len

    def block(kind: str, tokens: int, attention: int, cross: int) -> float:
        cd, ci, cf = coefficients[kind]
        return batch * (tokens * (cd * d + narrow * (ci * inner + cf * d_ff)) + narrow * (ATTENTION_BYTES * heads * attention + cross))

    return {
        "encoder_block": block("encoder", s, s * s, 0),
        "decoder_block": block("decoder", t, t * t + t * s, CROSS_KV_BYTES * s * inner),
        "adapters": narrow * FP32 * batch * (shape.source_rank * s + shape.target_rank * t),  # all layers together
        "outside": OUTSIDE_BYTES["lora" if shape.lora else "full"] * d * batch * (s + t) + FP32 * batch * t * shape.vocab,
    }


def activation_bytes(shape: Shape, batch: int, source_len: int, target_len: int, checkpointing: bool, precision: str = "fp32") -> int:
    """Peak bytes of activations (saved tensors plus the backward pass's transients) for one micro-batch."""
    saved = saved_bytes(shape, batch, source_len, target_len, precision)
    largest = max(saved["encoder_block"], saved["decoder_block"])
    # the log-softmax of the logits and its gradient, beside the saved logits
    outside = saved["outside"] + saved["adapters"] + (LOGIT_COPIES - 1) * FP32 * batch * target_len * shape.vocab
    s, t = source_len, target_len
    if checkpointing:
        kept = CHECKPOINTED_BYTES * shape.d_model * batch * (shape.encoder_layers * s + shape.decoder_layers * t)
        position_bias = FP32 * batch * shape.heads * (s * s + t * t + t * s)  # one per stack, passed to every block
        return int(kept + position_bias + 2 * largest + outside)  # the recomputed block and its gradients
    layers = shape.encoder_layers * saved["encoder_block"] + shape.decoder_layers * saved["decoder_block"]
    return int(layers + largest + outside)  # + the gradients of the block being back-propagated


def training_bytes(
    shape: Shape, batch: int, source_len: int, target_len: int, checkpointing: bool, engine: str = "single",
    gpus: int = 1, precision: str = "fp32", quantization: str | None = None, accumulation: int = 1,
) -> dict[str, int]:
    """Per-device bytes of one training step, by part: weights, gradients, optimizer, gathered, activations, total.

    single / ddp: everything replicated; DDP adds communication buckets as large as the gradients.
    fsdp (full shard): weights, gradients and AdamW split over `gpus`; gathered: the root unit (embeddings,
        lm_head) and two blocks (one computing, one prefetched) plus one block's unsharded gradient.
    zero2: weights replicated (bf16 under DeepSpeed bf16), gradients and the fp32 master copy + AdamW split.
    zero3: all of it split; gathered as for FSDP (DeepSpeed gathers module by module, with prefetch).
    quantization 4bit / 8bit (QLoRA, single or ddp): the blocks' linear weights at NF4_BYTES / INT8_BYTES,
        the rest (embeddings, lm_head, norms) fp32 as peft's prepare_model_for_kbit_training leaves them.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}; use one of {', '.join(ENGINES)}")
    n = gpus if engine in ("fsdp", "zero2", "zero3") else 1
    compute = BF16 if precision == "bf16" else FP32
    total, trainable, frozen = shape.total, shape.trainable, shape.total - shape.trainable
    deepspeed_bf16 = engine.startswith("zero") and precision == "bf16"
    weight = BF16 if deepspeed_bf16 else FP32  # DeepSpeed bf16 casts the module; torch autocast does not
    if quantization:
        per = NF4_BYTES if quantization == "4bit" else INT8_BYTES
        weights = shape.quantizable * per + (frozen - shape.quantizable) * FP32 + trainable * FP32
    elif engine in ("fsdp", "zero3"):
        weights = total * weight / n
    else:
        weights = total * weight
    master = trainable * FP32 / n if deepspeed_bf16 else 0  # DeepSpeed keeps fp32 master weights beside bf16 ones
    gradients = trainable * (weight if engine.startswith("zero") else FP32) / (n if engine in ("fsdp", "zero2", "zero3") else 1)
    if engine == "ddp" and gpus > 1:
        gradients *= 2  # DDP's flat communication buckets hold a second copy
    optimizer = 2 * FP32 * trainable / n + master
    gathered = 0
    if engine in ("fsdp", "zero3") and gpus > 1:
        gathered = (shape.root_params + 3 * shape.block_params) * compute
    activations = activation_bytes(shape, batch, source_len, target_len, checkpointing, precision)
    # The trainer frees gradients between steps and autograd frees activations as gradients appear.
    peak_of_both = activations + gradients if accumulation > 1 else max(activations, gradients)
    parts = {"weights": weights, "gradients": gradients, "optimizer": optimizer, "gathered": gathered, "activations": activations}
    parts = {k: int(math.ceil(v)) for k, v in parts.items()}
    parts["total"] = int(weights + optimizer + gathered + peak_of_both)
    return parts


def estimate_training_memory(
    model: torch.nn.Module, batch_size: int, source_len: int, target_len: int, checkpointing: bool,
) -> int:
    """Peak bytes one single-device fp32 training step of `model` needs (not counting the process itself).

    `model` is what is trained: the base for full fine-tuning, the LoRA-wrapped base for LoRA (its
    trainable parameters are the adapter). A meta-device skeleton (`modeling.skeleton`) will do.
    """
    return training_bytes(Shape.of(model), batch_size, source_len, target_len, checkpointing)["total"]


def auto_activation_checkpointing(config: Config) -> tuple[bool, str]:
    """What `activation_checkpointing: auto` means for this config on this machine, and why.

    Recomputing activations saves memory for time, so it is on only where the training-memory
    estimate (at the longest allowed lengths, fp32: on the safe side under bf16) exceeds the GPU's free memory.
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


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"
