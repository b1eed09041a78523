"""The whole flow that `dialogtune run` performs: original, then full, then LoRA, then the report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dialogtune import runs
from dialogtune.config import Config, for_method
from dialogtune.evaluation import evaluate_original, evaluate_run
from dialogtune.report import write_report
from dialogtune.train import train

log = logging.getLogger(__name__)


def run_all(config: Config, output: str | Path | None = None, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Each method of `run.methods` into `output/<method>`, then the report into `output`."""
    output = Path(output or config.output)
    configs = {method: for_method(config, method) for method in config.run.methods}  # validate all first
    if not overwrite:
        for method in configs:
            runs.check_output(output / method)
    folders = []
    for method in config.run.methods:
        method_config = configs[method]
        folder = output / method
        log.info("== %s ==", method)
        if method == "original":
            # Evaluated first, on a freshly loaded base that no trainer or peft wrapper has touched.
            evaluate_original(method_config, folder, overwrite=overwrite, progress=progress)
        else:
            train(method_config, folder, overwrite=overwrite)
            evaluate_run(folder, progress=progress)
        folders.append(folder)
    return write_report(folders, output, config.report.num_examples, config.report.examples_seed)
