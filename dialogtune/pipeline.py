"""The whole flow that `dialogtune run` performs: original, then full, then LoRA, then the report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dialogtune import ranks
from dialogtune.config import Config
from dialogtune.configio import for_method
from dialogtune.evaluation import evaluate_original, evaluate_run
from dialogtune.report import write_report
from dialogtune.runs import Plan, RunFolder
from dialogtune.train import train

log = logging.getLogger(__name__)


def run_all(config: Config, output: str | Path | None = None, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Each method of `run.methods` into `output/<method>`, then the report into `output`.

    A rerun after a crash keeps what finished, evaluates what trained, and resumes what was training.
    """
    output = Path(output or config.output)
    configs = {method: for_method(config, method) for method in config.run.methods}  # validate all first
    plans = {m: RunFolder.plan(output / m, c, overwrite)[0] for m, c in configs.items()}  # refuse before any work
    folders = []
    for method in config.run.methods:
        method_config, folder = configs[method], output / method
        folders.append(folder)
        if plans[method] is Plan.KEEP:
            log.info("== %s: already finished in %s with these settings; kept ==", method, folder)
            continue
        log.info("== %s ==", method)
        run_one(method_config, folder, plans[method], overwrite=overwrite, progress=progress)
    # Rank 0 writes the report (several processes: torchrun, accelerate launch); every rank returns its data.
    return ranks.on_main(lambda: write_report(folders, output, config.report.num_examples, config.report.examples_seed))


def run_one(config: Config, folder: Path, plan: Plan, overwrite: bool = False, progress: bool = True) -> None:
    """Bring one run folder to finished, given its `RunFolder.plan`: train (or resume) and evaluate it,
    only evaluate it, or (the original model) only score the base. `run` and `sweep` share it."""
    if plan is Plan.KEEP:
        return
    if config.method == "original":
        # Scored on a freshly loaded base that no trainer or peft wrapper has touched.
        evaluate_original(config, folder, overwrite=overwrite, progress=progress)
        return
    if plan is not Plan.EVALUATE:
        train(config, folder, overwrite=overwrite)
    evaluate_run(folder, progress=progress)
