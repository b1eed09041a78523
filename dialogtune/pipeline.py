"""The whole flow that `dialogtune run` performs: original, then full, then LoRA, then the report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dialogtune import runs
from dialogtune.config import Config, for_method
from dialogtune.errors import DialogtuneError
from dialogtune.evaluation import evaluate_original, evaluate_run
from dialogtune.report import write_report
from dialogtune.train import train

log = logging.getLogger(__name__)


def _finished(folder: Path, config: Config, overwrite: bool) -> bool:
    """True if `folder` holds a finished run of exactly `config` (a rerun after a crash skips it)."""
    if overwrite or not (folder / runs.METRICS).exists():
        return False
    if runs.same_config(folder, config):
        return True
    raise DialogtuneError(
        f"{folder} already holds a finished run with other settings; choose another output or pass --overwrite"
    )


def run_all(config: Config, output: str | Path | None = None, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Each method of `run.methods` into `output/<method>`, then the report into `output`."""
    output = Path(output or config.output)
    configs = {method: for_method(config, method) for method in config.run.methods}  # validate all first
    finished = {m: _finished(output / m, c, overwrite) for m, c in configs.items()}
    folders = []
    for method in config.run.methods:
        method_config = configs[method]
        folder = output / method
        folders.append(folder)
        if finished[method]:
            log.info("== %s: already finished in %s with these settings; kept ==", method, folder)
            continue
        log.info("== %s ==", method)
        if method == "original":
            # Evaluated first, on a freshly loaded base that no trainer or peft wrapper has touched.
            evaluate_original(method_config, folder, overwrite=overwrite, progress=progress)
        else:
            if not (runs.status(folder) == "trained" and runs.same_config(folder, method_config)):
                train(method_config, folder, overwrite=overwrite)
            evaluate_run(folder, progress=progress)
    return write_report(folders, output, config.report.num_examples, config.report.examples_seed)
