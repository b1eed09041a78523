"""Crash-safe trainer checkpoints: a checkpoint counts only once a completion marker is on disk.

transformers writes `checkpoint-N/` file by file and then deletes older checkpoints, so a kill in
the middle leaves a half-written folder that `get_last_checkpoint` would happily pick. We defer the
deletion until the new checkpoint is complete and marked, and resume only from marked ones.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from transformers import Seq2SeqTrainer

log = logging.getLogger(__name__)

MARKER = "dialogtune-complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def mark_complete(folder: Path) -> None:
    """Flush the checkpoint to disk, then create the marker with an atomic rename."""
    _fsync_tree(folder)
    tmp = folder / f".{MARKER}.tmp"
    tmp.write_text("ok\n")
    os.replace(tmp, folder / MARKER)


def _step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else None


def complete_checkpoints(folder: Path) -> list[Path]:
    """Marked checkpoints under `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _step(p) is not None and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: _step(p) or 0)


def last_complete(folder: Path) -> Path | None:
    found = complete_checkpoints(folder)
    return found[-1] if found else None


def prune(folder: Path, keep: int | None) -> None:
    """Delete unmarked (half-written) checkpoints, and the oldest complete ones beyond `keep`."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.is_dir() and _step(path) is not None and not (path / MARKER).is_file():
            log.warning("removing incomplete checkpoint %s (the process stopped while writing it)", path)
            shutil.rmtree(path, ignore_errors=True)
    if keep:
        for path in complete_checkpoints(folder)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)


class CheckpointingTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose checkpoints are marked complete before older ones are deleted, and which
    stops at the first non-finite loss instead of training on NaN."""

    def _save_checkpoint(self, model, trial) -> None:  # noqa: ANN001 - transformers' signature
        keep = self.args.save_total_limit
        self.args.save_total_limit = None  # rotation waits until the new checkpoint is complete
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = keep
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        mark_complete(folder)
        prune(folder.parent, keep)

    def training_step(self, model, inputs, num_items_in_batch=None):  # noqa: ANN001 - transformers' signature
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not bool(loss.isfinite()):
            from dialogtune.errors import DialogtuneError

            raise DialogtuneError(
                f"training loss is {loss.item()} at step {self.state.global_step + 1}; the run is stopped "
                f"rather than trained on NaN: lower training.learning_rate or check the data for empty or broken rows"
            )
        return loss
