"""`dialogtune plan`: per-GPU training memory by engine, and a batch size, accumulation and engine that fit.

    dialogtune plan --model google/flan-t5-xl --method full --gpus 8 --gpu-memory 80GB
    dialogtune plan --model google/flan-t5-large --method qlora --gpu-memory 16GB --output plan.json

Only the model's config.json is read (downloaded for a hub id); the model is built on the meta device,
so nothing is allocated. The estimate itself is `dialogtune.memory`'s; this module tabulates it per
engine, with and without activation checkpointing, and picks a setting that fits (docs/scale-out.md).
"""

from __future__ import annotations

import math
import re
from typing import Any

from dialogtune.errors import DialogtuneError
from dialogtune.memory import Shape, training_bytes
from dialogtune.modeling import skeleton

PLAN_METHODS = ("full", "lora", "qlora")
CUDA_CONTEXT = 2**29  # ~0.5 GiB of device memory the CUDA context and kernels take before any tensor
HEADROOM = 0.9  # the caching allocator fragments; plan to fill at most 90% of a GPU
ENGINE_LABELS = {"single": "1 GPU", "ddp": "DDP", "zero2": "ZeRO-2", "fsdp": "FSDP", "zero3": "ZeRO-3"}
ENGINE_CONFIGS = {"ddp": "configs/accelerate/ddp.yaml", "fsdp": "configs/accelerate/fsdp.yaml",
                  "zero2": "configs/accelerate/deepspeed-zero2.yaml", "zero3": "configs/accelerate/deepspeed-zero3.yaml"}
_UNITS = {"": 2**30, "b": 1, "kb": 2**10, "kib": 2**10, "mb": 2**20, "mib": 2**20, "gb": 2**30, "gib": 2**30, "tb": 2**40, "tib": 2**40}


def parse_memory(text: str) -> int:
    """Bytes in "24GB", "80 GiB", "16384MiB" (GB and GiB both mean 2^30, as GPU memory is quoted; a bare number is GB)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise DialogtuneError(f"--gpu-memory is {text!r}; give the memory of one GPU such as 24GB, 80GB or 16GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def engines_for(method: str, gpus: int) -> tuple[str, ...]:
    """The engines worth tabulating, simplest first: one GPU alone; DDP and the sharding engines for more.
    A 4-bit or 8-bit base is replicated (DDP): bitsandbytes weights are not sharded by these configs."""
    if gpus == 1:
        return ("single",)
    return ("ddp",) if method == "qlora" else ("ddp", "zero2", "fsdp", "zero3")


def _batches(batch_size: int) -> list[int]:
    """Per-device batches tried, largest first: the requested one, then halving down to 1."""
    out, b = [], batch_size
    while b >= 1:
        out.append(b)
        b //= 2
    return out if out[-1] == 1 else [*out, 1]


def suggest(shape: Shape, method: str, gpus: int, budget: int, batch_size: int, source_len: int, target_len: int,
            precision: str) -> dict[str, Any]:
    """The simplest engine and largest per-device batch that fit, keeping batch_size x gpus as the global batch.

    Without activation checkpointing is preferred at any batch (recomputing costs about a third more
    compute; accumulating smaller micro-batches costs little once a micro-batch fills the GPU); among
    engines the simplest that fits wins (DDP, then ZeRO-2, FSDP, ZeRO-3: each shards more and talks more).
    """
    quantization = "4bit" if method == "qlora" else None
    for checkpointing in (False, True):
        for engine in engines_for(method, gpus):
            for b in _batches(batch_size):
                accumulation = math.ceil(batch_size / b)
                parts = training_bytes(shape, b, source_len, target_len, checkpointing, engine, gpus, precision,
                                       quantization, accumulation)
                if parts["total"] + CUDA_CONTEXT <= budget:
                    return {"fits": True, "engine": engine, "accelerate_config": ENGINE_CONFIGS.get(engine),
                            "per_device_batch": b, "gradient_accumulation_steps": accumulation,
                            "global_batch": b * accumulation * gpus, "activation_checkpointing": checkpointing,
                            "per_device_bytes": parts["total"] + CUDA_CONTEXT}
    nxt = {"full": "--method lora", "lora": "--method qlora"}.get(method, "more GPUs or a smaller model")
    if method != "qlora" and gpus == 1:
        nxt += " or more GPUs (--gpus) with a sharding engine"
    return {"fits": False, "reason": f"no engine fits {method} at batch 1 with activation checkpointing", "try": nxt}


def make_plan(
    model: str, method: str, gpus: int = 1, gpu_memory: str = "24GB", batch_size: int = 8, source_len: int = 512,
    target_len: int = 128, precision: str = "bf16", overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The plan: parameters, a per-engine table of per-GPU bytes (with and without checkpointing), a suggestion."""
    problems = []
    if method not in PLAN_METHODS:
        problems.append(f"--method is {method!r}; use full, lora or qlora")
    for flag, value in (("--gpus", gpus), ("--batch-size", batch_size), ("--source-len", source_len), ("--target-len", target_len)):
        if not isinstance(value, int) or value < 1:
            problems.append(f"{flag} is {value}; use 1 or more")
    if precision not in ("bf16", "fp32"):
        problems.append(f"--precision is {precision!r}; use bf16 or fp32")
    unknown = [k for k in (overrides or {}) if not k.startswith("lora.")]
    if unknown:
        problems.append(f"plan takes LoRA settings only (--lora.r, --lora.target_modules), not --{unknown[0]}")
    if problems:
        raise DialogtuneError("; ".join(problems))
    budget_total = parse_memory(gpu_memory)
    lora_args = None
    if method != "full":
        from dialogtune.configio import load_config

        lora_args = load_config(None, dict(overrides or {})).lora_args()
    shape = Shape.of(skeleton(model, lora_args))
    quantization = "4bit" if method == "qlora" else None
    rows = []
    for engine in engines_for(method, gpus):
        for checkpointing in (False, True):
            parts = training_bytes(shape, batch_size, source_len, target_len, checkpointing, engine, gpus, precision, quantization)
            total = parts["total"] + CUDA_CONTEXT
            rows.append({"engine": engine, "activation_checkpointing": checkpointing, **parts, "cuda_context": CUDA_CONTEXT,
                         "total": total, "fits": total <= budget_total * HEADROOM})
    return {
        "model": model, "method": method, "gpus": gpus, "gpu_memory_bytes": budget_total, "batch_size": batch_size,
        "source_len": source_len, "target_len": target_len, "precision": precision,
        "parameters": {"total": shape.total, "trainable": shape.trainable},
        "rows": rows,
        "suggestion": suggest(shape, method, gpus, int(budget_total * HEADROOM), batch_size, source_len, target_len, precision),
        "notes": [
            "per GPU; the fit check leaves 10% of the GPU for allocator fragmentation",
            "activations: exact counts for T5 / FLAN-T5 in fp32 (dialogtune.memory); bf16 halves the matmul outputs",
            "QLoRA: NF4 weights with double quantisation (~0.52 byte a parameter in the blocks' linear layers)",
        ],
    }


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as a table, then the suggestion, one line."""
    params = plan["parameters"]
    lines = [
        f"{plan['model']}: {params['total']:,} parameters, {params['trainable']:,} trained ({plan['method']}); "
        f"{plan['gpus']} GPU(s) x {_size(plan['gpu_memory_bytes'])}, per-GPU batch {plan['batch_size']}, "
        f"{plan['source_len']} + {plan['target_len']} tokens, {plan['precision']}",
        "",
        f"{'engine':<8} {'ckpt':<4} {'weights':>9} {'grads':>9} {'optim':>9} {'gathered':>9} {'activ.':>9} {'total':>9}  fits",
    ]
    for r in plan["rows"]:
        cells = " ".join(f"{_size(r[k]):>9}" for k in ("weights", "gradients", "optimizer", "gathered", "activations", "total"))
        lines.append(f"{ENGINE_LABELS[r['engine']]:<8} {'on' if r['activation_checkpointing'] else 'off':<4} {cells}  {'yes' if r['fits'] else 'no'}")
    s = plan["suggestion"]
    lines.append("")
    if s["fits"]:
        how = f" (accelerate launch --config_file {s['accelerate_config']})" if s.get("accelerate_config") else ""
        lines.append(
            f"suggested: {ENGINE_LABELS[s['engine']]}{how}, per-GPU batch {s['per_device_batch']} x gradient accumulation "
            f"{s['gradient_accumulation_steps']} = global batch {s['global_batch']}, activation checkpointing "
            f"{'on' if s['activation_checkpointing'] else 'off'}, ~{_size(s['per_device_bytes'])} per GPU"
        )
    else:
        lines.append(f"does not fit: {s['reason']}; try {s['try']}")
    return "\n".join(lines)
