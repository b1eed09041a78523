"""Training and evaluation speed: dialogtune's own paths vs the FLAN-T5 + DialogSum notebook recipe, side by side.

    .venv/bin/python bench/bench_speed.py --quick --output a.json       # ~90 s on 2 idle cores: every ratio, 3 rounds
    .venv/bin/python bench/compare_runs.py a.json b.json                # two quick runs: each ratio within +-15 %?
    .venv/bin/python bench/bench_speed.py --lora-vs-full                # dialogtune LoRA vs full, batch 8, small and base
    .venv/bin/python bench/bench_speed.py --output bench-cpu.json       # the full measurement: small compared, base MFU
    .venv/bin/python bench/bench_speed.py --compare-base                # also the notebook at the base shape (> 24 GiB)
    .venv/bin/python bench/bench_speed.py --eval-only                   # evaluation only: notebook, PyTorch, CTranslate2 f32/int8
    bash bench/gpu.sh                                                   # the same on a CUDA GPU in bf16, under 8 minutes

Two recipes train and evaluate the same randomly initialised FLAN-T5-shaped models (speed does not depend
on the weights' values) on the same real DialogSum dev dialogues, with the same tokenizer, batch size and
number of optimizer steps:

(a) notebook: inputs and labels padded to 512 (padding="max_length"), label pads left as pad id 0, no
    attention mask, plain `transformers.Trainer` with its default collator, and evaluation that calls
    `generate` once per example on the padded 512-token input;
(b) dialogtune: `dialogtune.preprocess.tokenize` + `collator` (per-batch padding, -100 label pads, attention
    masks), `Seq2SeqTrainer` built by `dialogtune.train.make_trainer` with our defaults
    (train_sampling_strategy=group_by_length; LoRA's activation checkpointing as configured by default), and
    `dialogtune.inference.generate` (batched, length-sorted).

Levers: dialogtune with one setting changed (dropout 0, LoRA without activation checkpointing), timed
the same way, so each setting's cost is measured rather than assumed.

Rounds: every configuration runs `--rounds` times, interleaved (notebook, dialogtune, notebook, dialogtune,
... within each round), so host drift hits both recipes alike; ratios are paired round by round and
reported as the median with the min-max. The matmul peak is measured before and after the jobs.
Quick mode (5 timed steps x 3 rounds, batch 1) trains `flan-t5-small-1l`, flan-t5-small's widths and
vocabulary with 1 + 1 layers: the notebook's 512 + 512 padding makes the real depth ~2 min per round
on 2 cores, and 2 + 2 layers took 2 min 16 s in all at a 320 GFLOP/s peak (6 min at 116).
`--quick --shape small` runs the same plan at the real depth (~5 min).

Every job runs in its own process, forked from this one after the libraries are imported, so its peak
resident memory is its own. Each trains 1 warm-up step (not timed) plus `--steps` timed steps. Throughput
counts only real tokens (non-pad source tokens + real label tokens), which is the same work for both
recipes, so the notebook's padding shows up as lower throughput. FLOP accounting: `flops()`, BENCHMARKS.md.
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
from host import describe, fingerprint  # noqa: E402
from jobs import preload, quiet, spawn  # noqa: E402
from measure import SHAPES  # noqa: E402
from recipes import DEFAULT_DATA, DEFAULT_TOKENIZER  # noqa: E402
from repeats import schedule  # noqa: E402
from speed_report import assemble, print_report  # noqa: E402


@dataclass
class Plan:
    """What one benchmark run measures (repeats.schedule turns it into the ordered jobs)."""

    shapes: list[str]  # shapes trained with both recipes and both methods (--lora-vs-full: dialogtune only)
    mfu_shapes: list[str]  # extra shapes trained with dialogtune `full` only (the MFU figure)
    eval_shapes: list[str]
    steps: int
    warmup_steps: int
    batch_size: int
    eval_examples: int
    eval_batch_size: int
    new_tokens: int
    lever_shapes: list[str]  # shapes on which each of repeats.LEVERS is trained (dialogtune only)
    mfu_steps: int | None = None  # timed steps for the MFU-only shapes (default: `steps`)
    rounds: int = 1  # interleaved repeats of every configuration
    lora_vs_full: bool = False  # dialogtune full vs LoRA with and without activation checkpointing, per shape
    more_levers: bool = False  # --levers-only: also repeats.MORE_LEVERS
    ct2: bool = True  # evaluation also times dialogtune's CTranslate2 backend, float32 and int8 (CPU only)


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        # Sized for ~90 s on 2 idle cores at ~300 GFLOP/s (4 min on a host at 116): 3 rounds x 4 training
        # jobs of 1 warm-up + 5 timed steps. The notebook's 512-padded steps dominate: at the 2-layer
        # stand-in they took 3.0 s (full) + 2.3 s (LoRA) per step and the run 2 min 16 s, so 1 + 1 layers;
        # the real depth would need ~5 min here; batch 1 for the same reason (a batch of 1 pads nothing
        # in dialogtune's recipe, so the FLOP ratio is higher than at batch 8; the table prints it).
        # 16 dialogues: with 8, the evaluation ratio ranged 2.09-3.38x over three rounds.
        plan = Plan(["small-1l"], [], ["small-1l"], steps=5, warmup_steps=1, batch_size=1,
                    eval_examples=16, eval_batch_size=16, new_tokens=16, lever_shapes=["small-1l"], rounds=3)
    elif args.levers_only:
        # Issue 12's levers at batch 8, each against the defaults in its own round: 1 + 1 layers so that
        # 3 rounds of 10 jobs fit ~10 minutes on 2 cores.
        plan = Plan([], [], [], steps=5, warmup_steps=1, batch_size=8, eval_examples=0, eval_batch_size=16,
                    new_tokens=0, lever_shapes=["small-1l"], rounds=3, more_levers=True)
    elif args.eval_only:
        # Issue 13's evaluation table: the default mode's evaluation (64 dialogues x 64 tokens, batches of 16) at
        # the small and base shapes, every engine in each job; 3 rounds for a spread.
        plan = Plan([], [], ["small", "base"], steps=0, warmup_steps=0, batch_size=1, eval_examples=64,
                    eval_batch_size=16, new_tokens=64, lever_shapes=[], rounds=3)
    elif args.lora_vs_full:
        # Issue 12's target: LoRA tokens/s >= 1.25x full's at batch 8, at the small and base shapes.
        plan = Plan(["small", "base"], [], [], steps=5, warmup_steps=1, batch_size=8, eval_examples=0,
                    eval_batch_size=16, new_tokens=0, lever_shapes=[], rounds=3, lora_vs_full=True)
    elif args.compare_base:
        plan = Plan(["small", "base"], [], ["small", "base"], steps=10, warmup_steps=1, batch_size=8,
                    eval_examples=64, eval_batch_size=16, new_tokens=64, lever_shapes=["small"])
    else:
        # The notebook recipe at the base shape and batch 8 needs more memory than a 24 GiB machine has
        # (8 x 512 x 32,128 logits and 512 x 512 attention maps in 36 attention blocks), and an hour of
        # 2 cores: on CPU the base shape is trained by dialogtune only, for MFU. --compare-base adds it.
        # One round (38 min on 2 cores); --rounds 3 for a spread.
        plan = Plan(["small"], ["base"], ["small", "base"], steps=10, warmup_steps=1, batch_size=8,
                    eval_examples=64, eval_batch_size=16, new_tokens=64, lever_shapes=["small"])
    if args.shape:  # one shape for everything (the tests use the tiny stand-in)
        plan.shapes = [] if args.levers_only or args.eval_only else [args.shape]
        plan.eval_shapes = [] if args.lora_vs_full or args.levers_only else [args.shape]
        plan.lever_shapes = [args.shape] if plan.lever_shapes else []
        plan.mfu_shapes = []
    if args.quick and not args.levers:
        plan.lever_shapes = []  # they would take quick mode past its budget; --levers adds them
    plan.ct2 = not args.no_ct2
    for key in ("steps", "batch_size", "eval_examples", "new_tokens", "rounds"):
        if getattr(args, key) is not None:
            setattr(plan, key, getattr(args, key))
    return plan


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
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
    print(f"plan: {asdict(plan)}", flush=True)

    def peak(when: str) -> dict[str, Any]:
        # In its own process too: this one must not start a thread pool before it forks the jobs.
        found = spawn({"kind": "peak", "device": device, "size": 256 if args.shape == "tiny" else None}, args.in_process)
        print(f"matmul peak {when} the jobs ({found['dtype']}, {found['size']}^2, {found['threads']} threads): "
              f"{found['gflops']:.1f} GFLOP/s", flush=True)
        return found

    peaks = {"before": peak("before")}
    print(f"host: {describe(fingerprint(device, peaks))}", flush=True)
    runs: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    eval_runs: dict[str, list[dict[str, Any]]] = {}
    for entry in schedule(plan):
        clock = time.perf_counter()
        head = f"  round {entry['round'] + 1}/{plan.rounds} {entry['kind']:5s} {entry['shape']:8s}"
        if entry["kind"] == "eval":
            job = {**base_job, "kind": "eval", "shape": entry["shape"], "eval_examples": plan.eval_examples,
                   "eval_batch_size": plan.eval_batch_size, "new_tokens": plan.new_tokens, "ct2": plan.ct2}
            result = spawn(job, args.in_process)
            eval_runs.setdefault(entry["shape"], []).append(result)
            notebook = result["notebook"]["summaries_per_s"]
            engines = "".join(f", {name} {result[name]['summaries_per_s'] / notebook:.2f}x" for name in ("ct2_float32", "ct2_int8")
                              if name in result)
            print(f"{head} {result['dialogtune']['summaries_per_s'] / notebook:6.2f}x summaries/s{engines}  "
                  f"({time.perf_counter() - clock:.0f} s wall)", flush=True)
            continue
        job = {**base_job, "kind": "train", **{k: entry[k] for k in ("shape", "method", "recipe")}, **entry["settings"]}
        job["steps"] = entry.get("steps", plan.steps)
        result = {**spawn(job, args.in_process), "settings": entry["settings"]}
        runs.setdefault((entry["shape"], entry["method"], entry["recipe"], entry["label"]), []).append(result)
        print(f"{head} {entry['method']:4s} {entry['recipe']:10s} {result['tokens_per_s']:9.1f} tok/s  "
              f"{result['step_s']:7.2f} s/step  peak {result['peak_rss_bytes'] / 2**20:7.0f} MiB  "
              f"({time.perf_counter() - clock:.0f} s wall){'  ' + entry['label'] if entry['label'] else ''}", flush=True)
    peaks["after"] = peak("after")

    report = assemble(peaks, plan, runs, eval_runs, device, fingerprint(device, peaks), time.perf_counter() - started)
    print_report(report)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="every ratio at the 2-layer stand-in, batch 1, 5 timed steps x 3 rounds (~100 s on 2 idle cores)")
    parser.add_argument("--lora-vs-full", action="store_true", dest="lora_vs_full",
                        help="dialogtune full vs LoRA (activation checkpointing off and on) at batch 8, small and base "
                             "shapes, 5 timed steps x 3 rounds: tokens/s ratio and peak memory")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--compare-base", action="store_true", dest="compare_base",
                        help="also train the notebook recipe at the flan-t5-base shape (needs > 24 GiB on CPU; gpu.sh sets it)")
    parser.add_argument("--eval-only", action="store_true", dest="eval_only",
                        help="evaluation only, small and base shapes, 3 rounds: the notebook's loop, dialogtune PyTorch, "
                             "CTranslate2 float32 and int8 (~30 min on 2 idle cores)")
    parser.add_argument("--no-ct2", action="store_true", dest="no_ct2",
                        help="leave dialogtune's CTranslate2 backend out of the evaluation jobs")
    parser.add_argument("--levers-only", action="store_true",
                        help="only the levers (fused AdamW, threads, pad_to_multiple_of, torch.compile, dropout) against the defaults, batch 8")
    parser.add_argument("--levers", action="store_true", help="with --quick: also time the lever runs (dropout 0, no activation checkpointing)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda trains in bf16 (see bench/gpu.sh)")
    parser.add_argument("--steps", type=int, help="timed optimizer steps per training configuration (after 1 warm-up step)")
    parser.add_argument("--rounds", type=int, help="interleaved repeats of every configuration (quick, --lora-vs-full: 3; default: 1)")
    parser.add_argument("--batch-size", type=int, dest="batch_size", help="training batch size (both recipes)")
    parser.add_argument("--eval-examples", type=int, dest="eval_examples", help="dialogues summarised per evaluation path")
    parser.add_argument("--new-tokens", type=int, dest="new_tokens", help="tokens generated per summary (min = max)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DialogSum-format JSONL (fname, dialogue, summary)")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="T5 tokenizer folder")
    parser.add_argument("--shape", choices=list(SHAPES),
                        help="one shape for every job (e.g. --quick --shape small: quick's plan at flan-t5-small's depth)")
    # For the tests: run every job in this process, so the whole benchmark with --shape tiny takes seconds.
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
