"""The speed benchmark's results: the JSON contract (every ratio is dialogtune / notebook) and the printed tables.

Each configuration ran `rounds` times (repeats.py): a figure of one configuration is its median over rounds;
a ratio is taken round by round (round k against round k) and reported as the median with its min-max.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host import describe
from measure import SHAPES
from repeats import median_result, paired_spread

if TYPE_CHECKING:
    from bench_speed import Plan

Runs = dict[tuple[str, str, str, str], list[dict[str, Any]]]  # (shape, method, recipe, label) -> one result per round


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _put(row: dict[str, Any], name: str, runs_a: list[dict], runs_b: list[dict], key: str) -> None:
    """row[name] = median over rounds of runs_a[k][key] / runs_b[k][key], with `_min`, `_max`, `_rounds`."""
    found = paired_spread([r[key] for r in runs_a], [r[key] for r in runs_b])
    row[name] = found["median"] if found else None
    row[f"{name}_min"], row[f"{name}_max"] = (found["min"], found["max"]) if found else (None, None)
    row[f"{name}_rounds"] = found["values"] if found else []


def _train_rows(runs: Runs, peak_flops: float) -> list[dict[str, Any]]:
    rows = []
    for (shape, method, recipe, label), ours_runs in runs.items():
        if recipe != "dialogtune" or label:
            continue
        ours = median_result(ours_runs)
        base_runs = runs.get((shape, method, "notebook", ""))
        row: dict[str, Any] = {
            "shape": SHAPES[shape].name, "method": method, "batch_size": ours["batch_size"], "steps": ours["steps"],
            "rounds": len(ours_runs),
            "tokens_per_s": ours["tokens_per_s"], "tokens_per_s_rounds": [r["tokens_per_s"] for r in ours_runs],
            "examples_per_s": ours["examples_per_s"], "step_s": ours["step_s"], "peak_rss_bytes": ours["peak_rss_bytes"],
            "model_gflops_per_s": ours["useful_flops_per_s"] / 1e9, "mfu": ours["useful_flops_per_s"] / peak_flops,
            "trainable_params": ours["trainable_params"], "total_params": ours["total_params"],
        }
        if base_runs:
            base = median_result(base_runs)
            row.update({
                "baseline_tokens_per_s": base["tokens_per_s"], "baseline_examples_per_s": base["examples_per_s"],
                "baseline_step_s": base["step_s"], "baseline_peak_rss_bytes": base["peak_rss_bytes"],
                "baseline_mfu": base["useful_flops_per_s"] / peak_flops,
                "peak_rss_ratio": _ratio(ours["peak_rss_bytes"], base["peak_rss_bytes"]),
                # FLOPs the padded recipe executes / FLOPs ours executes, over the same examples (the same in
                # every round): the speed-up that removing padding alone can give.
                "flop_ratio": _ratio(base["executed_flops_all"], ours["executed_flops_all"]),
            })
            _put(row, "ratio", ours_runs, base_runs, "tokens_per_s")
            _put(row, "examples_ratio", ours_runs, base_runs, "examples_per_s")
            _put(row, "step_time_ratio", base_runs, ours_runs, "step_s")  # > 1: our steps are faster
            row["ratio_of_flop_ratio"] = _ratio(row["ratio"], row["flop_ratio"]) if row["flop_ratio"] else None
        else:
            row.update({k: None for k in ("baseline_tokens_per_s", "ratio", "ratio_min", "ratio_max", "flop_ratio")})
        full_runs = runs.get((shape, "full", "dialogtune", ""))
        if method == "lora" and full_runs:  # dialogtune's own recipe, LoRA against full, round by round
            _put(row, "tokens_vs_full", ours_runs, full_runs, "tokens_per_s")
            row["peak_rss_vs_full"] = _ratio(ours["peak_rss_bytes"], median_result(full_runs)["peak_rss_bytes"])
        rows.append(row)
    return rows


def _labelled_rows(runs: Runs, peak_flops: float, plan: Plan) -> tuple[list[dict], list[dict]]:
    """Levers (against dialogtune's defaults and the notebook) and --lora-vs-full's variants (against full)."""
    levers, variants = [], []
    for (shape, method, recipe, label), lever_runs in runs.items():
        if not label:
            continue
        lever = median_result(lever_runs)
        row: dict[str, Any] = {"shape": SHAPES[shape].name, "method": method, "batch_size": lever["batch_size"],
                               "steps": lever["steps"], "rounds": len(lever_runs), "tokens_per_s": lever["tokens_per_s"],
                               "step_s": lever["step_s"], "peak_rss_bytes": lever["peak_rss_bytes"],
                               "mfu": lever["useful_flops_per_s"] / peak_flops}
        if plan.lora_vs_full:
            full_runs = runs[(shape, "full", "dialogtune", "")]
            row["variant"] = label
            row["full_tokens_per_s"] = median_result(full_runs)["tokens_per_s"]
            row["full_peak_rss_bytes"] = median_result(full_runs)["peak_rss_bytes"]
            _put(row, "tokens_vs_full", lever_runs, full_runs, "tokens_per_s")
            row["peak_rss_vs_full"] = _ratio(row["peak_rss_bytes"], row["full_peak_rss_bytes"])
            variants.append(row)
            continue
        default, notebook = runs.get((shape, method, "dialogtune", "")), runs.get((shape, method, "notebook", ""))
        row.update({"lever": label, "settings": lever["settings"]})
        for name, other in (("vs_default", default), ("ratio", notebook)):  # > 1: faster than the other
            if other:
                _put(row, name, lever_runs, other, "tokens_per_s")
            else:
                row[name] = None
        row["peak_rss_vs_default"] = _ratio(row["peak_rss_bytes"], median_result(default)["peak_rss_bytes"]) if default else None
        levers.append(row)
    return levers, variants


ENGINES = {"ct2_float32": "ct2 float32", "ct2_int8": "ct2 int8"}  # evaluation paths beside the two recipes' (jobs.run_eval)


def _eval_rows(eval_runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for shape, results in eval_runs.items():
        result = median_result(results)
        nb, ours = result["notebook"], result["dialogtune"]
        row = {"shape": SHAPES[shape].name, "examples": result["examples"], "new_tokens": result["new_tokens"],
               "rounds": len(results), "baseline_summaries_per_s": nb["summaries_per_s"],
               "summaries_per_s": ours["summaries_per_s"], "flop_ratio": result.get("flop_ratio"),
               "baseline_generated_tokens_per_s": nb["generated_tokens_per_s"],
               "generated_tokens_per_s": ours["generated_tokens_per_s"], "identical_outputs": results[0]["identical_outputs"]}
        _put(row, "ratio", [r["dialogtune"] for r in results], [r["notebook"] for r in results], "summaries_per_s")
        for name in (k for k in ENGINES if k in result):  # dialogtune's CTranslate2 backend, where it ran
            row[f"{name}_summaries_per_s"] = result[name]["summaries_per_s"]
            row[f"{name}_conversion_s"] = result[name]["conversion_s"]
            row[f"{name}_same_text"] = results[0][f"{name}_same_text"]  # against dialogtune's PyTorch path
            _put(row, f"{name}_ratio", [r[name] for r in results], [r["notebook"] for r in results], "summaries_per_s")
            _put(row, f"{name}_vs_dialogtune", [r[name] for r in results], [r["dialogtune"] for r in results], "summaries_per_s")
        rows.append(row)
    return rows


def assemble(peaks: dict[str, dict[str, Any]], plan: Plan, runs: Runs, eval_runs: dict[str, list[dict]], device: str,
             host: dict[str, Any], wall_s: float | None = None) -> dict[str, Any]:
    """The JSON contract. MFU is against the higher of the matmul peaks measured before and after the jobs."""
    peak = max(peaks.values(), key=lambda p: p["gflops"])
    levers, variants = _labelled_rows(runs, peak["gflops"] * 1e9, plan)
    return {
        "matmul_peak_gflops": peak["gflops"],
        "matmul_peak": peak,
        "matmul_peak_before_gflops": peaks["before"]["gflops"],
        "matmul_peak_after_gflops": peaks["after"]["gflops"] if "after" in peaks else None,
        "device": device,
        "host": host,
        "machine": describe(host),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "plan": asdict(plan),
        "wall_s": wall_s,
        "train": _train_rows(runs, peak["gflops"] * 1e9),
        "eval": _eval_rows(eval_runs),
        "levers": levers,
        "lora_vs_full": variants,
    }


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _range(row: dict[str, Any], name: str, spec: str = ".2f") -> str:
    """`median (min-max)` of a paired ratio, as printed in every table."""
    if row.get(name) is None:
        return "n/a"
    return f"{row[name]:{spec}}x ({row[f'{name}_min']:{spec}}-{row[f'{name}_max']:{spec}})"


def _mib(value: float | None) -> str:
    return _fmt(value / 2**20 if value else None, ".0f")


def print_report(report: dict[str, Any]) -> None:
    plan = report["plan"]
    print(f"\nhost: {report['machine']}")
    print(f"matmul peak: {_fmt(report['matmul_peak_before_gflops'], '.1f')} GFLOP/s before the jobs, "
          f"{_fmt(report['matmul_peak_after_gflops'], '.1f')} after ({report['matmul_peak']['dtype']}; MFU uses the higher)")
    steps = f" x {plan['steps']} timed steps" if report["train"] or report["levers"] or report["lora_vs_full"] else ""
    print(f"each figure: median of {plan['rounds']} interleaved rounds{steps}; ratios paired round by round, median (min-max)")
    if report["train"]:
        print("\ntraining (ratio = dialogtune / notebook; tokens = non-pad source + real label tokens)")
        print(f"{'shape':17s} {'method':6s} {'nb tok/s':>9s} {'our tok/s':>9s} {'ratio (min-max)':>20s} {'FLOP ratio':>10s} "
              f"{'ratio/FLOP':>10s} {'step s (nb/ours)':>17s} {'MFU':>6s} {'peak MiB (nb/ours)':>19s} "
              f"{'lora/full tok/s (min-max)':>26s} {'lora/full mem':>13s}")
        for r in report["train"]:
            print(f"{r['shape']:17s} {r['method']:6s} {_fmt(r['baseline_tokens_per_s'], '9.1f')} {r['tokens_per_s']:9.1f} "
                  f"{_range(r, 'ratio'):>20s} {_fmt(r['flop_ratio'], '9.2f', 'x')} {_fmt(r.get('ratio_of_flop_ratio'), '9.0%')} "
                  f"{_fmt(r.get('baseline_step_s'), '8.2f')}/{r['step_s']:<8.2f} {r['mfu']:6.1%} "
                  f"{_mib(r.get('baseline_peak_rss_bytes')):>9s}/{_mib(r['peak_rss_bytes']):<9s} "
                  f"{_range(r, 'tokens_vs_full'):>26s} {_fmt(r.get('peak_rss_vs_full'), '.0%'):>13s}")
    if report["lora_vs_full"]:
        print(f"\nLoRA vs full fine-tuning, dialogtune's recipe, batch {plan['batch_size']} (target: LoRA tok/s >= 1.25x full's)")
        print(f"{'shape':17s} {'LoRA variant':30s} {'full tok/s':>10s} {'lora tok/s':>10s} {'lora/full (min-max)':>22s} "
              f"{'full MiB':>9s} {'lora MiB':>9s} {'lora mem % of full':>18s}")
        for r in report["lora_vs_full"]:
            print(f"{r['shape']:17s} {r['variant']:30s} {r['full_tokens_per_s']:10.1f} {r['tokens_per_s']:10.1f} "
                  f"{_range(r, 'tokens_vs_full'):>22s} {_mib(r['full_peak_rss_bytes']):>9s} {_mib(r['peak_rss_bytes']):>9s} "
                  f"{_fmt(r['peak_rss_vs_full'], '17.0%')}")
    if report["levers"]:
        print("\nlevers (dialogtune with one setting changed; vs default = tokens/s against dialogtune's defaults)")
        print(f"{'shape':17s} {'method':6s} {'lever':36s} {'tok/s':>8s} {'vs default (min-max)':>21s} "
              f"{'vs notebook (min-max)':>21s} {'MFU':>6s} {'peak MiB':>9s} {'mem vs default':>14s}")
        for r in report["levers"]:
            print(f"{r['shape']:17s} {r['method']:6s} {r['lever']:36s} {r['tokens_per_s']:8.1f} {_range(r, 'vs_default'):>21s} "
                  f"{_range(r, 'ratio'):>21s} {r['mfu']:6.1%} {_mib(r['peak_rss_bytes']):>9s} "
                  f"{_fmt(r['peak_rss_vs_default'], '13.0%')}")
    if report["eval"]:
        print("\nevaluation (greedy, every summary exactly new_tokens long)")
        print(f"{'shape':17s} {'n':>4s} {'tokens':>6s} {'nb sum/s':>9s} {'our sum/s':>9s} {'ratio (min-max)':>20s} "
              f"{'FLOP ratio':>10s} {'nb gen tok/s':>12s} {'our gen tok/s':>13s} {'same text':>9s}")
        for r in report["eval"]:
            print(f"{r['shape']:17s} {r['examples']:4d} {r['new_tokens']:6d} {r['baseline_summaries_per_s']:9.2f} "
                  f"{r['summaries_per_s']:9.2f} {_range(r, 'ratio'):>20s} {_fmt(r.get('flop_ratio'), '9.2f', 'x')} "
                  f"{r['baseline_generated_tokens_per_s']:12.1f} {r['generated_tokens_per_s']:13.1f} "
                  f"{r['identical_outputs']:>4d}/{r['examples']}")
    engines = [r for r in report["eval"] if any(f"{k}_ratio" in r for k in ENGINES)]
    if engines:
        print("\nevaluation engines (summaries/s; x notebook and x dialogtune torch: paired round by round, median (min-max); "
              "same text: against dialogtune torch; conversion not in summaries/s)")
        print(f"{'shape':17s} {'engine':18s} {'sum/s':>8s} {'x notebook (min-max)':>22s} {'x dialogtune torch':>22s} "
              f"{'same text':>9s} {'convert s':>9s}")
        for r in engines:
            print(f"{r['shape']:17s} {'notebook loop':18s} {r['baseline_summaries_per_s']:8.2f} {'1.00x':>22s} {'':>22s}")
            print(f"{r['shape']:17s} {'dialogtune torch':18s} {r['summaries_per_s']:8.2f} {_range(r, 'ratio'):>22s} {'1.00x':>22s}")
            for key, label in ENGINES.items():
                if f"{key}_ratio" in r:
                    print(f"{r['shape']:17s} {label:18s} {r[f'{key}_summaries_per_s']:8.2f} {_range(r, f'{key}_ratio'):>22s} "
                          f"{_range(r, f'{key}_vs_dialogtune'):>22s} {r[f'{key}_same_text']:>4d}/{r['examples']:<4d} "
                          f"{r[f'{key}_conversion_s']:9.1f}")
    if report.get("wall_s") is not None:
        minutes, seconds = divmod(round(report["wall_s"]), 60)  # rounded first: 419.6 s is 7 min 0 s, not 6 min 60 s
        print(f"\nwall time: {minutes} min {seconds} s")
