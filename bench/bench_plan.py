"""The memory planner against measured peaks: predicted vs measured resident memory on CPU, and the ratio.

    .venv/bin/python bench/bench_plan.py                       # against the peaks recorded in BENCHMARKS.md (seconds)
    .venv/bin/python bench/bench_plan.py --measure small       # also measure afresh: 3 jobs, ~2 min on 2 idle cores
    .venv/bin/python bench/bench_plan.py --measure small,base  # base needs ~12 GiB free and ~5 min
    .venv/bin/python bench/bench_plan.py --derive              # re-count the bytes autograd saves per layer

Recorded: the peaks of `bench_speed.py --lora-vs-full` (48 dialogues) and of the default mode (88
dialogues), batch 8, dialogtune's recipe, as BENCHMARKS.md gives them. The estimate needs the lengths
of each run's longest batch: this script replays the trainer's length-grouped sampler on the same
DialogSum dev dialogues (../shared) to find them (459 + 68 and 512 + 67 tokens). Predicted =
`dialogtune.memory.estimate_training_memory` (single process, fp32) + PROCESS_BYTES (the Python
process itself, ~730 MiB). Fresh measurements (--measure) train 1 warm-up + 1 step per job in a forked
process, as bench_speed.py does; on a shared host they are noisy (other processes' memory is not counted,
but allocator timing is), so the recorded figures are the reference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import preload, quiet, spawn  # noqa: E402
from measure import SHAPES  # noqa: E402
from recipes import DEFAULT_DATA, DEFAULT_TOKENIZER, build_model, load_examples, load_tokenizer, recipe_trainer  # noqa: E402

MIB = 2**20
# BENCHMARKS.md: (run, shape, method, activation checkpointing) -> peak resident MiB; run -> dialogues trained.
RECORDED = {
    ("lora-vs-full", "small", "full", False): 4279, ("lora-vs-full", "small", "lora", False): 4089,
    ("lora-vs-full", "small", "lora", True): 1668, ("lora-vs-full", "base", "full", False): 11867,
    ("lora-vs-full", "base", "lora", False): 11753, ("lora-vs-full", "base", "lora", True): 3835,
    ("default", "small", "full", False): 5371, ("default", "small", "lora", False): 4705,
    ("default", "small", "lora", True): 1741, ("default", "base", "full", False): 14911,
}
DIALOGUES = {"lora-vs-full": 48, "default": 88, "fresh": 16}
FALLBACK_LENGTHS = {"lora-vs-full": (459, 68), "default": (512, 67)}  # what the replay found with ../shared present


def peak_batch(n: int) -> tuple[int, int]:
    """(source, target) padded lengths of the largest batch the trainer builds from the first `n` dev dialogues."""
    tokenizer = load_tokenizer(DEFAULT_TOKENIZER)
    prompts, summaries = load_examples(n, DEFAULT_DATA)
    model = build_model(SHAPES["tiny"])
    job = {"recipe": "dialogtune", "method": "full", "batch_size": 8, "warmup_steps": 1, "steps": n // 8 - 1, "seed": 0, "device": "cpu"}
    with tempfile.TemporaryDirectory() as folder:
        trainer = recipe_trainer(job, model, model, tokenizer, prompts, summaries, Path(folder))
        sizes = [(b["input_ids"].shape[1], b["labels"].shape[1]) for b in trainer.get_train_dataloader()]
    return max(sizes, key=lambda st: st[0] * 8 + st[1])  # the encoder side dominates at these lengths


def predicted_mib(shape: str, method: str, checkpointing: bool, lengths: tuple[int, int]) -> float:
    from dialogtune.config import Config
    from dialogtune.memory import PROCESS_BYTES, estimate_training_memory

    model = build_model(SHAPES[shape], device="meta")
    if method == "lora":
        from dialogtune.modeling import apply_lora

        model = apply_lora(model, Config(method="lora").lora_args())
    return (estimate_training_memory(model, 8, *lengths, checkpointing) + PROCESS_BYTES) / MIB


def measure(shape: str, method: str, checkpointing: bool) -> float:
    job = {"kind": "train", "recipe": "dialogtune", "shape": shape, "method": method, "device": "cpu", "seed": 0,
           "data": str(DEFAULT_DATA), "tokenizer": str(DEFAULT_TOKENIZER), "batch_size": 8, "steps": 1, "warmup_steps": 1,
           "training": {"activation_checkpointing": checkpointing}}
    return spawn(job, in_process=False)["peak_rss_bytes"] / MIB


def derive() -> None:
    """Count the bytes autograd saves for one encoder and one decoder layer as each width doubles."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    def saved(d: int, d_ff: int, heads: int, encoder: int, decoder: int, s: int = 64, t: int = 16) -> int:
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(T5Config(vocab_size=256, d_model=d, d_kv=64, d_ff=d_ff, num_layers=encoder,
                                                    num_decoder_layers=decoder, num_heads=heads, feed_forward_proj="gated-gelu",
                                                    decoder_start_token_id=0)).train()
        params, seen = {p.untyped_storage().data_ptr() for p in model.parameters()}, {}

        def pack(x: torch.Tensor) -> torch.Tensor:
            if x.untyped_storage().data_ptr() not in params:
                seen[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
            return x

        ids = torch.randint(2, 256, (2, s))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.randint(2, 256, (2, t)))
        return sum(seen.values())

    def layer(kind: str, **kw: int) -> int:
        args = {"d": 512, "d_ff": 1024, "heads": 6, **kw}
        more = saved(encoder=2, decoder=1, **args) if kind == "encoder" else saved(encoder=1, decoder=2, **args)
        return more - saved(encoder=1, decoder=1, **args)

    tokens = {"encoder": 2 * 64, "decoder": 2 * 16}
    for kind in ("encoder", "decoder"):
        ref = layer(kind)
        print(f"{kind} layer (full fine-tuning), bytes per token: d_model x {(layer(kind, d=1024) - ref) / tokens[kind] / 512:.0f}, "
              f"d_ff x {(layer(kind, d_ff=2048) - ref) / tokens[kind] / 1024:.0f} (memory.FULL: {__import__('dialogtune.memory').memory.FULL[kind]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", default="", help="shapes to measure afresh, e.g. small or small,base")
    parser.add_argument("--derive", action="store_true", help="re-count the saved bytes per layer (d_model and d_ff terms)")
    args = parser.parse_args()
    quiet()
    if args.derive:
        derive()
        return
    fresh = {}
    if args.measure:  # first: a process must not fork after its OpenMP thread pool has started (jobs.preload)
        preload()
        for shape in args.measure.split(","):
            for method, ckpt in (("full", False), ("lora", False), ("lora", True)):
                fresh[(shape, method, ckpt)] = measure(shape, method, ckpt)
    lengths = {}
    for run, n in DIALOGUES.items():
        try:
            lengths[run] = peak_batch(n)
        except SystemExit:  # ../shared is absent: the lengths the replay found when it was present
            lengths[run] = FALLBACK_LENGTHS.get(run, (459, 68))
    rows: list[tuple[Any, ...]] = []
    for (run, shape, method, ckpt), mib in RECORDED.items():
        rows.append((f"recorded ({run})", shape, method, ckpt, lengths[run], predicted_mib(shape, method, ckpt, lengths[run]), mib))
    for (shape, method, ckpt), mib in fresh.items():
        rows.append(("fresh", shape, method, ckpt, lengths["fresh"], predicted_mib(shape, method, ckpt, lengths["fresh"]), mib))
    print(f"{'measured':<24} {'shape':<6} {'method':<6} {'ckpt':<4} {'peak batch':>10} {'predicted':>10} {'measured':>9} {'ratio':>6}")
    for source, shape, method, ckpt, (s, t), predicted, measured in rows:
        ratio = predicted / measured
        flag = "" if 0.75 <= ratio <= 1.25 else "  outside 25%"
        print(f"{source:<24} {shape:<6} {method:<6} {'on' if ckpt else 'off':<4} {f'{s}+{t}':>10} {predicted:>8.0f} M "
              f"{measured:>7.0f} M {ratio:>6.2f}{flag}")


if __name__ == "__main__":
    main()
