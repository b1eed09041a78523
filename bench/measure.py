"""How the speed benchmark turns a run into figures: FLOP counts, step clocks, peak memory, the matmul peak.

Model FLOPs divided by wall time divided by the measured matmul peak is the MFU that BENCHMARKS.md
reports; everything here is independent of which recipe produced the run (see recipes.py for those).
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Any

LORA_R = 32  # dialogtune's default LoRA rank on q and v; the target configuration


@dataclass(frozen=True)
class Shape:
    """The architecture of a T5 v1.1 / FLAN-T5 checkpoint: all that speed depends on."""

    name: str
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int  # encoder and decoder each
    num_heads: int
    params: int | None  # the real checkpoint's parameter count, asserted when the model is built

    @property
    def inner(self) -> int:
        """Width of the attention projections (heads x d_kv); not d_model for flan-t5-small (6 x 64 = 384)."""
        return self.num_heads * self.d_kv


SHAPES = {
    "small": Shape("flan-t5-small", 32128, 512, 64, 1024, 8, 6, 76_961_152),
    "base": Shape("flan-t5-base", 32128, 768, 64, 2048, 12, 12, 247_577_856),
    # Not a checkpoint: flan-t5-small's widths, vocabulary and lm_head with 2 + 2 layers, for --quick. The
    # notebook recipe's 512 + 512 padding makes a flan-t5-small step ~7 s per example on 2 cores, so 5 timed
    # steps x 3 rounds of both recipes and methods cannot fit quick mode's budget at the real depth.
    "small-1l": Shape("flan-t5-small-1l", 32128, 512, 64, 1024, 1, 6, None),
    # Not a real checkpoint: a stand-in that lets the tests run the whole benchmark in seconds.
    "tiny": Shape("tiny", 32128, 32, 8, 64, 2, 4, None),
}


# ---------------------------------------------------------------------------------------------- FLOPs


def flops(shape: Shape, src: int, tgt: int, method: str = "full", train: bool = True, lora_r: int = LORA_R) -> float:
    """Model FLOPs for one example with `src` encoder tokens and `tgt` decoder tokens (2 FLOPs per multiply-add).

    Forward, per layer (inner = heads x d_kv):
      encoder, per encoder token: q,k,v,o 8*d*inner + gated FFN 6*d*d_ff + attention scores/context 4*src*inner
      decoder, per decoder token: self q,k,v,o 8*d*inner + cross q,o 4*d*inner + FFN 6*d*d_ff
                                  + self attention 4*tgt*inner + cross attention 4*src*inner
      decoder cross k,v, per encoder token: 4*d*inner
    plus the lm_head, 2*d*vocab per decoder token. Embedding lookups, norms, softmax and the relative
    position bias are left out (they are not matmuls and are small).
    Attention is counted over the full `src` x `src` / `tgt` x `tgt` matrices, as the kernels compute them.

    Training = forward + backward:
      full: backward = 2 x forward (input gradients + weight gradients), so 3 x forward (the 6*N*tokens rule).
      lora: base weights are frozen, so their weight gradients are skipped, but the input gradients must
            still flow through every layer to reach the adapters: weight matmuls cost 2 x forward. Attention
            score/context matmuls have no weights; both operands need gradients: 3 x forward. The rank-r
            adapters on q and v (d -> r -> inner) count 3 x their forward.
    """
    d, inner = shape.d_model, shape.inner
    layers = shape.num_layers
    enc_weights = layers * src * (8 * d * inner + 6 * d * shape.d_ff)
    enc_attention = layers * src * 4 * src * inner
    dec_weights = layers * tgt * (12 * d * inner + 6 * d * shape.d_ff) + layers * src * 4 * d * inner
    dec_attention = layers * tgt * 4 * (tgt + src) * inner
    head = tgt * 2 * d * shape.vocab_size
    weights = enc_weights + dec_weights + head
    attention = enc_attention + dec_attention
    # LoRA on q and v: two adapters per attention block (encoder self, decoder self, decoder cross).
    adapter_per_token = 2 * 2 * lora_r * (d + inner)
    adapters = adapter_per_token * layers * (src + 2 * tgt) if method == "lora" else 0
    if not train:
        return float(weights + attention + adapters)
    if method == "full":
        return float(3 * (weights + attention))
    if method == "lora":
        return float(2 * weights + 3 * attention + 3 * adapters)
    raise ValueError(f"method is {method!r}; use full or lora")


def batch_flops(shape: Shape, src_lengths: list[int], tgt_lengths: list[int], method: str, padded: tuple[int, int] | None = None) -> float:
    """FLOPs of one batch: on each example's real lengths, or (with `padded`) on the padded lengths executed."""
    if padded is not None:
        return len(src_lengths) * flops(shape, padded[0], padded[1], method)
    return sum(flops(shape, s, t, method) for s, t in zip(src_lengths, tgt_lengths, strict=True))


# -------------------------------------------------------------------------------------- time and memory


def sync(device: str) -> None:
    """Wait for the device: CUDA kernels run asynchronously, so without this work "ends" before it is done."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class StepClock:
    """Trainer callback: wall time at the end of every optimizer step (after a device sync)."""

    def __init__(self, cuda: bool) -> None:
        from transformers import TrainerCallback

        self.cuda = cuda
        self.ends: list[float] = []
        clock = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - trainer signature
                clock.begin = clock.now()

            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                clock.ends.append(clock.now())

        self.callback = _Callback()

    def now(self) -> float:
        sync("cuda" if self.cuda else "cpu")
        return time.perf_counter()


class BatchLog:
    """Forward pre-hook that keeps each training batch's real and padded lengths.

    Real tokens are ids > 0: id 0 is T5's pad, and the labels pad with 0 (notebook) or -100 (ours). The
    counts stay on the device until the end, so the hook adds no synchronisation to the timed steps.
    """

    def __init__(self) -> None:
        self.batches: list[tuple[Any, Any, tuple[int, int]]] = []

    def __call__(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids, labels = kwargs["input_ids"], kwargs.get("labels")
        if labels is None:
            # dialogtune's trainer computes the loss itself (checkpoints.token_mean_loss), so the model sees only
            # decoder_input_ids: the labels shifted right behind the start token (0), which drops the final eos.
            decoder = kwargs["decoder_input_ids"]
            self.batches.append(((ids > 0).sum(1), (decoder > 0).sum(1) + 1, (ids.shape[1], decoder.shape[1])))
            return
        self.batches.append(((ids > 0).sum(1), (labels > 0).sum(1), (ids.shape[1], labels.shape[1])))

    def lengths(self) -> list[tuple[list[int], list[int], tuple[int, int]]]:
        return [(s.tolist(), t.tolist(), shape) for s, t, shape in self.batches]


def timed(fn: Any, inputs: list, device: str) -> tuple[Any, float]:
    """`fn(inputs)` and its wall time in seconds, after one untimed call on the first input."""
    fn(inputs[:1])  # warm-up: first-call allocations and lazy initialisation are not timed
    sync(device)
    start = time.perf_counter()
    out = fn(inputs)
    sync(device)
    return out, time.perf_counter() - start


def peak_memory(device: str) -> int:
    """This process's peak so far, in bytes: allocated GPU memory on CUDA, resident memory on the CPU."""
    if device == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def matmul_peak(device: str, size: int | None = None, repeats: int = 8) -> dict[str, Any]:
    """The best rate of large square matmuls: fp32 on the CPU (all threads), bf16 on CUDA."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    size = size or (8192 if device == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    calls = 20 if device == "cuda" else 1
    best = 0.0
    for _ in range(repeats + 1):  # the first round warms up (thread pool, kernel choice)
        sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            torch.matmul(a, b)
        sync(device)
        best = max(best, calls * 2 * size**3 / (time.perf_counter() - start))
    return {"gflops": best / 1e9, "dtype": str(dtype).replace("torch.", ""), "size": size, "threads": torch.get_num_threads()}
