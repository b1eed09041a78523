"""The speed benchmark's results: the JSON contract (every ratio is dialogtune / notebook) and the printed tables."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from measure import SHAPES

if TYPE_CHECKING:
    from bench_speed import Plan


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def assemble(peak: dict[str, Any], plan: Plan, train: dict, evals: list[dict], device: str, levers: list[dict] | None = None) -> dict[str, Any]:
    """The JSON contract: ratios are dialogtune / notebook for every figure."""
    peak_flops = peak["gflops"] * 1e9
    rows = []
    for (shape, method, recipe), ours in train.items():
        if recipe != "dialogtune":
            continue
        base = train.get((shape, method, "notebook"))
        row: dict[str, Any] = {
            "shape": SHAPES[shape].name,
            "method": method,
            "batch_size": ours["batch_size"],
            "steps": ours["steps"],
            "tokens_per_s": ours["tokens_per_s"],
            "examples_per_s": ours["examples_per_s"],
            "step_s": ours["step_s"],
            "peak_rss_bytes": ours["peak_rss_bytes"],
            "model_gflops_per_s": ours["useful_flops_per_s"] / 1e9,
            "mfu": ours["useful_flops_per_s"] / peak_flops,
            "trainable_params": ours["trainable_params"],
            "total_params": ours["total_params"],
        }
        if base:
            row.update({
                "baseline_tokens_per_s": base["tokens_per_s"],
                "baseline_examples_per_s": base["examples_per_s"],
                "baseline_step_s": base["step_s"],
                "baseline_peak_rss_bytes": base["peak_rss_bytes"],
                "baseline_mfu": base["useful_flops_per_s"] / peak_flops,
                "ratio": _ratio(ours["tokens_per_s"], base["tokens_per_s"]),
                "examples_ratio": _ratio(ours["examples_per_s"], base["examples_per_s"]),
                "step_time_ratio": _ratio(base["step_s"], ours["step_s"]),  # > 1: our steps are faster
                "peak_rss_ratio": _ratio(ours["peak_rss_bytes"], base["peak_rss_bytes"]),
                # FLOPs the padded recipe executes / FLOPs ours executes, over the same examples: the
                # speed-up that removing padding alone can give.
                "flop_ratio": _ratio(base["executed_flops_all"], ours["executed_flops_all"]),
            })
            row["ratio_of_flop_ratio"] = _ratio(row["ratio"], row["flop_ratio"]) if row["flop_ratio"] else None
        else:
            row.update({k: None for k in ("baseline_tokens_per_s", "ratio", "flop_ratio")})
        rows.append(row)
    for row in rows:
        if row["method"] == "lora":
            full = next((r for r in rows if r["shape"] == row["shape"] and r["method"] == "full"), None)
            row["peak_rss_vs_full"] = _ratio(row["peak_rss_bytes"], full["peak_rss_bytes"]) if full else None
    eval_rows = []
    for result in evals:
        nb, ours = result["notebook"], result["dialogtune"]
        eval_rows.append({
            "shape": SHAPES[result["shape"]].name,
            "examples": result["examples"],
            "new_tokens": result["new_tokens"],
            "baseline_summaries_per_s": nb["summaries_per_s"],
            "summaries_per_s": ours["summaries_per_s"],
            "ratio": _ratio(ours["summaries_per_s"], nb["summaries_per_s"]),
            "flop_ratio": result.get("flop_ratio"),
            "baseline_generated_tokens_per_s": nb["generated_tokens_per_s"],
            "generated_tokens_per_s": ours["generated_tokens_per_s"],
            "identical_outputs": result["identical_outputs"],
        })
    lever_rows = []
    for lever in levers or []:
        default = train.get((lever["shape"], lever["method"], "dialogtune"))
        notebook = train.get((lever["shape"], lever["method"], "notebook"))
        lever_rows.append({
            "shape": SHAPES[lever["shape"]].name,
            "method": lever["method"],
            "lever": lever["lever"],
            "settings": lever["settings"],
            "tokens_per_s": lever["tokens_per_s"],
            "step_s": lever["step_s"],
            "peak_rss_bytes": lever["peak_rss_bytes"],
            "mfu": lever["useful_flops_per_s"] / peak_flops,
            # > 1: faster than dialogtune's default settings / than the notebook recipe.
            "vs_default": _ratio(lever["tokens_per_s"], default["tokens_per_s"]) if default else None,
            "peak_rss_vs_default": _ratio(lever["peak_rss_bytes"], default["peak_rss_bytes"]) if default else None,
            "ratio": _ratio(lever["tokens_per_s"], notebook["tokens_per_s"]) if notebook else None,
        })
    return {
        "matmul_peak_gflops": peak["gflops"],
        "matmul_peak": peak,
        "device": device,
        "machine": machine(device),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "plan": asdict(plan),
        "train": rows,
        "eval": eval_rows,
        "levers": lever_rows,
    }


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def print_report(report: dict[str, Any]) -> None:
    print(f"\nmatmul peak: {report['matmul_peak_gflops']:.1f} GFLOP/s ({report['matmul_peak']['dtype']})")
    print("\ntraining (ratio = dialogtune / notebook; tokens = non-pad source + real label tokens)")
    head = (f"{'shape':14s} {'method':6s} {'nb tok/s':>9s} {'our tok/s':>9s} {'ratio':>6s} {'FLOP ratio':>10s} "
            f"{'ratio/FLOP':>10s} {'ex/s ratio':>10s} {'step s (nb/ours)':>17s} {'MFU':>6s} {'peak MiB (nb/ours)':>19s} {'lora/full mem':>13s}")
    print(head)
    for r in report["train"]:
        nb_rss = r.get("baseline_peak_rss_bytes")
        print(f"{r['shape']:14s} {r['method']:6s} {_fmt(r['baseline_tokens_per_s'], '9.1f')} {r['tokens_per_s']:9.1f} "
              f"{_fmt(r['ratio'], '5.2f', 'x')} {_fmt(r['flop_ratio'], '9.2f', 'x')} {_fmt(r.get('ratio_of_flop_ratio'), '9.0%')} "
              f"{_fmt(r.get('examples_ratio'), '9.2f', 'x')} "
              f"{_fmt(r.get('baseline_step_s'), '8.2f')}/{r['step_s']:<8.2f} {r['mfu']:6.1%} "
              f"{_fmt(nb_rss / 2**20 if nb_rss else None, '9.0f')}/{r['peak_rss_bytes'] / 2**20:<9.0f} "
              f"{_fmt(r.get('peak_rss_vs_full'), '12.0%')}")
    if report.get("levers"):
        print("\nlevers (dialogtune with one setting changed; vs default = tokens/s against dialogtune's defaults)")
        print(f"{'shape':14s} {'method':6s} {'lever':36s} {'tok/s':>8s} {'vs default':>10s} {'vs notebook':>11s} "
              f"{'MFU':>6s} {'peak MiB':>9s} {'mem vs default':>14s}")
        for r in report["levers"]:
            print(f"{r['shape']:14s} {r['method']:6s} {r['lever']:36s} {r['tokens_per_s']:8.1f} "
                  f"{_fmt(r['vs_default'], '9.2f', 'x')} {_fmt(r['ratio'], '10.2f', 'x')} {r['mfu']:6.1%} "
                  f"{r['peak_rss_bytes'] / 2**20:9.0f} {_fmt(r['peak_rss_vs_default'], '13.0%')}")
    print("\nevaluation (greedy, every summary exactly new_tokens long)")
    print(f"{'shape':14s} {'n':>4s} {'tokens':>6s} {'nb sum/s':>9s} {'our sum/s':>9s} {'ratio':>6s} {'FLOP ratio':>10s} {'nb gen tok/s':>12s} {'our gen tok/s':>13s} {'same text':>9s}")
    for r in report["eval"]:
        print(f"{r['shape']:14s} {r['examples']:4d} {r['new_tokens']:6d} {r['baseline_summaries_per_s']:9.2f} "
              f"{r['summaries_per_s']:9.2f} {_fmt(r['ratio'], '5.2f', 'x')} {_fmt(r.get('flop_ratio'), '9.2f', 'x')} "
              f"{r['baseline_generated_tokens_per_s']:12.1f} "
              f"{r['generated_tokens_per_s']:13.1f} {r['identical_outputs']:>4d}/{r['examples']}")


def machine(device: str) -> str:
    """One line describing where the numbers came from."""
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, transformers {transformers.__version__}, " \
           f"{torch.get_num_threads()} threads"
    if device == "cuda":
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text
