"""Repeated, interleaved measurements: the order jobs run in, and how their rounds become one figure.

A host's speed drifts (other tenants, turbo, thermal): on a shared 2-core VM the matmul peak moved from 256
to 325 GFLOP/s in one day. So every compared configuration runs once per round, the two recipes back to
back (notebook, dialogtune, notebook, dialogtune, ...), and a ratio is taken within a round, where both
sides saw the same host, before the median over rounds. The min-max over rounds says how far to trust it.
"""

from __future__ import annotations

import statistics
from typing import Any

# dialogtune settings measured against its defaults, on the small shape: what each costs or saves.
LEVERS: list[tuple[str, str, dict[str, Any]]] = [
    ("full", "dropout 0", {"dropout": 0.0}),
    ("lora", "dropout 0", {"dropout": 0.0}),
    ("lora", "lora_dropout 0.05 (the notebook's)", {"lora": {"lora_dropout": 0.05}}),
    ("lora", "no activation checkpointing", {"training": {"activation_checkpointing": False}}),
]
# --levers-only adds these (torch.compile alone takes minutes on 2 cores, too slow for --quick --levers).
MORE_LEVERS: list[tuple[str, str, dict[str, Any]]] = [
    # The Trainer's default optimizer is already fused AdamW (`adamw_torch_fused`); this row shows what it buys.
    ("full", "optim adamw_torch (foreach, not fused)", {"training": {"optim": "adamw_torch"}}),
    ("lora", "optim adamw_torch (foreach, not fused)", {"training": {"optim": "adamw_torch"}}),
    ("full", "1 thread", {"threads": 1}),
    # Fewer distinct shapes is what lets torch.compile reuse its graphs; alone, it only adds padding.
    ("full", "pad_to_multiple_of 64", {"pad_to_multiple_of": 64}),
    ("full", "pad_to_multiple_of 64 + torch.compile", {"pad_to_multiple_of": 64, "training": {"torch_compile": True}}),
]
# --lora-vs-full: dialogtune's LoRA both ways against its full fine-tuning, on dialogtune's recipe.
LORA_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("activation checkpointing off", {"training": {"activation_checkpointing": False}}),
    ("activation checkpointing on", {"training": {"activation_checkpointing": True}}),
]


def schedule(plan: Any) -> list[dict[str, Any]]:
    """Every job of a run, in the order it runs: round by round, each compared pair back to back.

    Each entry: kind (train or eval), round, shape, method, recipe, label (a lever's or variant's name, ""
    for the defaults), settings (dialogtune config overrides) and, for the MFU-only shapes, steps.
    """
    jobs: list[dict[str, Any]] = []
    for round_ in range(plan.rounds):
        def train(shape: str, method: str, recipe: str, label: str = "", settings: dict | None = None, **extra: Any) -> None:
            jobs.append({"kind": "train", "round": round_, "shape": shape, "method": method, "recipe": recipe,
                         "label": label, "settings": settings or {}, **extra})

        if plan.lora_vs_full:
            for shape in plan.shapes:
                train(shape, "full", "dialogtune")
                for label, settings in LORA_VARIANTS:
                    train(shape, "lora", "dialogtune", label, settings)
            continue
        for shape in plan.shapes:
            for method in ("full", "lora"):
                train(shape, method, "notebook")
                train(shape, method, "dialogtune")
        for shape in plan.mfu_shapes:
            train(shape, "full", "dialogtune", steps=plan.mfu_steps or plan.steps)
        for shape in plan.lever_shapes:
            if shape not in plan.shapes:  # --levers-only: each lever against the defaults of its own round
                for method in ("full", "lora"):
                    train(shape, method, "dialogtune")
            for method, label, settings in LEVERS + (MORE_LEVERS if plan.more_levers else []):
                train(shape, method, "dialogtune", label, settings)
        for shape in plan.eval_shapes:  # both evaluation paths run inside one job, one after the other
            jobs.append({"kind": "eval", "round": round_, "shape": shape})
    return jobs


def spread(values: list[float]) -> dict[str, Any]:
    """Median and min-max of one figure over the rounds (the median resists one disturbed round)."""
    if not values:
        raise ValueError("spread() needs at least one value")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": list(values)}


def paired_spread(numerators: list[float], denominators: list[float]) -> dict[str, Any] | None:
    """Round k's numerator / round k's denominator, for every round, then their spread.

    Pairing within a round cancels drift that hits both sides of the pair alike, which a ratio of
    medians taken from different rounds would not.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} rounds against {len(denominators)}: pair rounds one to one")
    ratios = [a / b for a, b in zip(numerators, denominators) if b]
    return spread(ratios) if ratios else None


def median_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's rounds as one result: each number its median over rounds (also in nested
    dicts, such as an evaluation's two paths), everything else from the first round."""
    merged = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, dict):
            merged[key] = median_result([r[key] for r in results])
            merged[key].pop("rounds")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in results]
            # Counts that every round shares (examples, steps) stay as they are: an even count of rounds
            # would otherwise turn them into floats.
            merged[key] = value if all(v == value for v in values) else statistics.median(values)
    merged["rounds"] = len(results)
    return merged
