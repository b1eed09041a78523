"""`dialogtune demo`: the whole flow offline on the bundled tiny model and corpus, in minutes on a CPU.

The same flow with `--model google/flan-t5-base --dataset knkarthick/dialogsum` is the real run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dialogtune.assets import DEMO_RECIPE
from dialogtune.config import Config
from dialogtune.configio import apply_overrides, build_config, read_yaml

# A few dozen steps and a handful of test dialogues: proves the flow end to end in the test suite.
QUICK = {
    "data.max_train_samples": 64,
    "data.max_eval_samples": 16,
    "training.max_steps": 12,
    "report.num_examples": 2,
    "evaluation.bootstrap_resamples": 200,
    "evaluation.eval_steps": 6,  # two validations per method, on a handful of dialogues: the curves, cheaply
    "evaluation.val_samples": 8,
}


# Sized for the bundled corpus (short dialogues, short summaries); another dataset gets the defaults.
CORPUS_SIZED = {"data": ("max_train_samples", "max_eval_samples", "max_source_length", "max_target_length"),
                "generation": ("max_new_tokens",)}


def demo_config(out: str | Path | None = None, quick: bool = False, overrides: dict[str, Any] | None = None) -> Config:
    """The bundled demo recipe, with `--quick` and the user's overrides on top."""
    tree = read_yaml(DEMO_RECIPE)
    overrides = dict(overrides or {})
    replaced = []  # settings sized for what the user swapped out go back to the defaults
    if overrides.get("data.dataset", tree["data"]["dataset"]) != tree["data"]["dataset"]:
        replaced.append(CORPUS_SIZED)
    for sized in replaced:
        for section, keys in sized.items():
            for key in keys:
                tree[section].pop(key, None)
    if quick:
        apply_overrides(tree, QUICK)
        for method_overrides in tree.get("run", {}).get("overrides", {}).values():
            method_overrides.pop("training.max_steps", None)  # --quick caps every method
            method_overrides.pop("evaluation.eval_steps", None)
    apply_overrides(tree, overrides)
    if out is not None:
        tree["output"] = str(out)
    return build_config(tree, source="demo")
