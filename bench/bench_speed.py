"""Training and evaluation speed: dialogtune's own paths vs the FLAN-T5 + DialogSum notebook recipe, side by side.

    .venv/bin/python bench/bench_speed.py --quick                       # ~3 min on 2 cores: flan-t5-small shape, every ratio
    .venv/bin/python bench/bench_speed.py --output bench-cpu.json       # the full measurement: small compared, base MFU
    .venv/bin/python bench/bench_speed.py --compare-base                # also the notebook at the base shape (> 24 GiB)
    bash bench/gpu.sh                                                   # the same on a CUDA GPU in bf16, under 8 minutes

Two recipes train and evaluate the same randomly initialised FLAN-T5-shaped models (speed does not depend
on the weights' values) on the same real DialogSum dev dialogues, with the same tokenizer, batch size and
number of optimizer steps:

(a) notebook: inputs and labels padded to 512 (padding="max_length"), label pads left as pad id 0, no
    attention mask, plain `transformers.Trainer` with its default collator, and evaluation that calls
    `generate` once per example on the padded 512-token input;
(b) dialogtune: `dialogtune.preprocess.tokenize` + `collator` (per-batch padding, -100 label pads, attention
    masks), `Seq2SeqTrainer` built by `dialogtune.train.make_trainer` with our defaults
    (train_sampling_strategy=group_by_length; activation checkpointing for LoRA), and
    `dialogtune.inference.generate` (batched, length-sorted).

Levers: dialogtune with one setting changed (dropout 0, LoRA without activation checkpointing), timed
the same way, so each setting's cost is measured rather than assumed.

Every job runs in its own process, forked from this one after the libraries are imported, so its peak
resident memory is its own. Each
trains 1 warm-up step (not timed) plus `--steps` timed steps. Throughput counts only real tokens (non-pad
source tokens + real label tokens), which is the same work for both recipes, so the notebook's padding
shows up as lower throughput. FLOP accounting is documented in `flops()` and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, also when loaded by path
# recipes: the two recipes; measure: FLOPs, clocks, memory, matmul peak; jobs: one timed job per
# process; speed_report: the JSON contract and the tables. This file: the plan and the command line.
from jobs import preload, quiet, spawn  # noqa: E402
from measure import SHAPES  # noqa: E402
from recipes import DEFAULT_DATA, DEFAULT_TOKENIZER  # noqa: E402
from speed_report import assemble, machine, print_report  # noqa: E402


# dialogtune settings measured against its defaults, on the small shape: what each costs or saves.
LEVERS: list[tuple[str, str, dict[str, Any]]] = [
    ("full", "dropout 0", {"dropout": 0.0}),
    ("lora", "dropout 0", {"dropout": 0.0}),
    ("lora", "lora_dropout 0.05 (the notebook's)", {"lora": {"lora_dropout": 0.05}}),
    ("lora", "no activation checkpointing", {"training": {"activation_checkpointing": False}}),
]


@dataclass
class Plan:
    """What one benchmark run measures."""

    shapes: list[str]  # shapes trained with both recipes and both methods
    mfu_shapes: list[str]  # extra shapes trained with dialogtune `full` only (the MFU figure)
    eval_shapes: list[str]
    steps: int
    warmup_steps: int
    batch_size: int
    eval_examples: int
    eval_batch_size: int
    new_tokens: int
    lever_shapes: list[str]  # shapes on which each of LEVERS is trained (dialogtune only)
    mfu_steps: int | None = None  # timed steps for the MFU-only shapes (default: `steps`)


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        # Sized for <= 3 minutes on 2 idle cores. A notebook step executes every example at 512 + 512
        # tokens (~0.2 TFLOP each at the small shape), so those steps dominate: quick trains batches of
        # 2 and times 2 steps; the base shape (MFU only) times 1. Smaller batches pad less inside a
        # batch, so the FLOP ratio is higher than at batch 8; the table prints it next to each ratio.
        plan = Plan(["small"], ["base"], ["small"], steps=2, warmup_steps=1, batch_size=2,
                    eval_examples=8, eval_batch_size=16, new_tokens=32, lever_shapes=["small"], mfu_steps=1)
    elif args.compare_base:
        plan = Plan(["small", "base"], [], ["small", "base"], steps=10, warmup_steps=1, batch_size=8,
                    eval_examples=64, eval_batch_size=16, new_tokens=64, lever_shapes=["small"])
    else:
        # The notebook recipe at the base shape and batch 8 needs more memory than a 24 GiB machine has
        # (8 x 512 x 32,128 logits and 512 x 512 attention maps in 36 attention blocks), and an hour of
        # 2 cores: on CPU the base shape is trained by dialogtune only, for MFU. --compare-base adds it.
        plan = Plan(["small"], ["base"], ["small", "base"], steps=10, warmup_steps=1, batch_size=8,
                    eval_examples=64, eval_batch_size=16, new_tokens=64, lever_shapes=["small"])
    if args.shape:  # one shape for everything (the tests use the tiny stand-in)
        plan.shapes, plan.eval_shapes, plan.lever_shapes = [args.shape], [args.shape], [args.shape]
        plan.mfu_shapes = []
    if args.quick and not args.levers:
        plan.lever_shapes = []  # they would take quick mode past 3 minutes; --levers adds them
    for key in ("steps", "batch_size", "eval_examples", "new_tokens"):
        if getattr(args, key) is not None:
            setattr(plan, key, getattr(args, key))
    return plan


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    quiet()
    if not args.in_process:
        preload()
    plan = make_plan(args)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible; run on a GPU machine or use --device cpu")
    base_job = {"device": device, "seed": 0, "data": str(args.data), "tokenizer": str(args.tokenizer),
                "batch_size": plan.batch_size, "steps": plan.steps, "warmup_steps": plan.warmup_steps}
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    print(f"machine: {machine(device)}", flush=True)
    print(f"plan: {asdict(plan)}", flush=True)
    # In its own process too: this one must not start a thread pool before it forks the jobs.
    peak = spawn({"kind": "peak", "device": device, "size": 256 if args.shape == "tiny" else None}, args.in_process)
    print(f"matmul peak ({peak['dtype']}, {peak['size']}^2, {peak['threads']} threads): {peak['gflops']:.1f} GFLOP/s", flush=True)

    def train_job(shape: str, method: str, recipe: str, label: str = "", **extra: Any) -> dict[str, Any]:
        started = time.perf_counter()
        job = {**base_job, "kind": "train", "shape": shape, "method": method, "recipe": recipe, **extra}
        result = spawn(job, args.in_process)
        print(f"  train {shape:5s} {method:4s} {recipe:10s} {result['tokens_per_s']:9.1f} tok/s  "
              f"{result['step_s']:7.2f} s/step  peak {result['peak_rss_bytes'] / 2**20:7.0f} MiB  "
              f"({time.perf_counter() - started:.0f} s wall){'  ' + label if label else ''}", flush=True)
        return result

    train: dict[tuple[str, str, str], dict[str, Any]] = {}
    for shape, method, recipe in [(s, m, r) for s in plan.shapes for m in ("full", "lora") for r in ("notebook", "dialogtune")]:
        train[(shape, method, recipe)] = train_job(shape, method, recipe)
    for shape in plan.mfu_shapes:
        train[(shape, "full", "dialogtune")] = train_job(shape, "full", "dialogtune", steps=plan.mfu_steps or plan.steps)
    levers = []
    for shape in plan.lever_shapes:
        for method, label, settings in LEVERS:
            levers.append({"shape": shape, "method": method, "lever": label, "settings": settings,
                           **train_job(shape, method, "dialogtune", label, **settings)})

    evals = []
    for shape in plan.eval_shapes:
        started = time.perf_counter()
        job = {**base_job, "kind": "eval", "shape": shape, "eval_examples": plan.eval_examples,
               "eval_batch_size": plan.eval_batch_size, "new_tokens": plan.new_tokens}
        evals.append(spawn(job, args.in_process))
        print(f"  eval  {shape:5s} done ({time.perf_counter() - started:.0f} s wall)", flush=True)

    report = assemble(peak, plan, train, evals, device, levers)
    print_report(report)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shape + base-shape MFU, batch 2, 2 timed steps (<= 3 min on 2 idle cores)")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--compare-base", action="store_true", dest="compare_base",
                        help="also train the notebook recipe at the flan-t5-base shape (needs > 24 GiB on CPU; gpu.sh sets it)")
    parser.add_argument("--levers", action="store_true", help="with --quick: also time the lever runs (dropout 0, no activation checkpointing)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda trains in bf16 (see bench/gpu.sh)")
    parser.add_argument("--steps", type=int, help="timed optimizer steps per training configuration (after 1 warm-up step)")
    parser.add_argument("--batch-size", type=int, dest="batch_size", help="training batch size (both recipes)")
    parser.add_argument("--eval-examples", type=int, dest="eval_examples", help="dialogues summarised per evaluation path")
    parser.add_argument("--new-tokens", type=int, dest="new_tokens", help="tokens generated per summary (min = max)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DialogSum-format JSONL (fname, dialogue, summary)")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="T5 tokenizer folder")
    # For the tests: one tiny stand-in shape, run in this process so the whole benchmark takes seconds.
    parser.add_argument("--shape", choices=list(SHAPES), help=argparse.SUPPRESS)
    parser.add_argument("--in-process", action="store_true", dest="in_process", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = run_benchmark(args)
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.output}")
    return report


if __name__ == "__main__":
    main()
