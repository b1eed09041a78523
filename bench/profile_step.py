"""Where one training step's time goes: matmuls vs dropout, element-wise work, attention and the optimizer.

    .venv/bin/python bench/profile_step.py --shape base --batch-size 4     # the MFU configuration
    .venv/bin/python bench/profile_step.py --shape small --dropout 0       # a lever's effect, op by op

It runs dialogtune's own batch (dynamic padding, -100 label pads) through the FLAN-T5-shaped stand-in of
recipes.py, with the Trainer's default optimizer (fused AdamW) and gradient clipping, warms up one
step, then profiles the next with torch.profiler and sums self time per category. MFU is bounded by the
share of the step spent in matmuls: if everything else took no time and the matmuls ran at the
measured peak, MFU would be at most that share (times the matmuls' own efficiency).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure  # noqa: E402
import recipes  # noqa: E402
from jobs import quiet  # noqa: E402

# aten op name -> category; anything not listed is "other element-wise / bookkeeping".
CATEGORIES = {
    "matmul (linear layers, lm_head)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul"),
    "attention kernels": ("aten::_scaled_dot_product", "aten::_softmax", "aten::_softmax_backward_data"),
    "dropout masks (bernoulli)": ("aten::bernoulli_",),
    "loss (log-softmax over the vocabulary)": ("aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss"),
    "optimizer (fused AdamW) and clipping": ("aten::_fused_adamw_", "aten::_foreach", "aten::linalg_vector_norm"),
    "zero-filled buffers (embedding gradient, loss gradient)": ("aten::fill_", "aten::zero_", "aten::embedding_dense_backward"),
    "element-wise (mul, add, pow, tanh, where, copies)": (
        "aten::mul", "aten::add", "aten::pow", "aten::tanh", "aten::where", "aten::copy_", "aten::div", "aten::mean",
        "aten::rsqrt", "aten::sum", "aten::tanh_backward", "aten::cat", "aten::index", "aten::sub",
    ),
}


def category(name: str) -> str:
    """The first category whose prefixes match (so addmm counts as a matmul before add is tried)."""
    for label, prefixes in CATEGORIES.items():
        if name.startswith(prefixes):
            return label
    return "other"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(measure.SHAPES), default="base")
    parser.add_argument("--method", choices=["full", "lora"], default="full")
    parser.add_argument("--batch-size", type=int, default=4, dest="batch_size")
    parser.add_argument("--dropout", type=float, default=None, help="model dropout (default: FLAN-T5's 0.1)")
    args = parser.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from dialogtune.config import Config
    from dialogtune.modeling import apply_lora
    from dialogtune.preprocess import collator, tokenize

    quiet()
    shape = measure.SHAPES[args.shape]
    peak = measure.matmul_peak("cpu", size=256 if args.shape == "tiny" else None)["gflops"] * 1e9
    tokenizer = recipes.load_tokenizer()
    prompts, summaries = recipes.load_examples(2 * args.batch_size)
    dataset, _ = tokenize(tokenizer, prompts, summaries, 512, 128)
    base = recipes.build_model(shape, dropout=args.dropout)
    model = apply_lora(base, Config(method="lora").lora_args()) if args.method == "lora" else base
    model.train()
    collate = collator(tokenizer, base)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    features = [{k: dataset[i][k] for k in ("input_ids", "attention_mask", "labels")} for i in range(len(dataset))]

    def step(batch: dict) -> None:
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(collate(features[: args.batch_size]))  # warm-up: optimizer state, kernel choice
    batch = collate(features[args.batch_size :])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step(batch)
        seconds = time.perf_counter() - start
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        totals[category(event.key)] += event.self_cpu_time_total / 1e6
    profiled = sum(totals.values())
    src = (batch["input_ids"] != 0).sum(1).tolist()
    tgt = (batch["labels"] != -100).sum(1).tolist()
    useful = measure.batch_flops(shape, src, tgt, args.method)
    executed = measure.batch_flops(shape, src, tgt, args.method, padded=(batch["input_ids"].shape[1], batch["labels"].shape[1]))
    matmul_s = totals["matmul (linear layers, lm_head)"] + totals["attention kernels"]
    print(f"{shape.name} {args.method}, batch {args.batch_size} padded to {tuple(batch['input_ids'].shape)} / "
          f"{tuple(batch['labels'].shape)}, dropout {0.1 if args.dropout is None else args.dropout}, "
          f"{torch.get_num_threads()} threads")
    print(f"step {seconds:.2f} s (profiled), matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"MFU of this step: {useful / seconds / peak:.1%} (model FLOPs on real tokens / step time / peak)")
    print(f"matmul and attention kernels ran at {executed / max(matmul_s, 1e-9) / peak:.0%} of the peak "
          "(the FLOPs executed, padding included / the time spent in them)")
    print(f"\n{'where the time went':58s} {'seconds':>8s} {'share':>6s}")
    for label, value in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{label:58s} {value:8.2f} {value / profiled:6.1%}")
    return {label: value / profiled for label, value in totals.items()}


if __name__ == "__main__":
    main()
