"""Crash-safe trainer checkpoints: a checkpoint counts only once a completion marker is on disk.

transformers writes `checkpoint-N/` file by file and then deletes older checkpoints, so a kill in
the middle leaves a half-written folder that `get_last_checkpoint` would happily pick. We defer the
deletion until the new checkpoint is complete and marked, and resume only from marked ones.

Under several processes every rank's RNG state goes into the checkpoint (rank 0 writes them all), and the
marker records the world size: a resume with another number of processes would split the data differently
(and find no RNG state for some ranks), so it is refused. (FSDP and DeepSpeed write per-rank shards of their
own into a checkpoint; that is their format.)

The trainer here also computes the loss itself (`token_mean_loss`), because T5 ignores the token count that
transformers hands it: left to the model, the loss and gradients come out multiplied by the number of
processes and by the gradient accumulation steps.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import Seq2SeqTrainer

from dialogtune import ranks
from dialogtune.errors import DialogtuneError

log = logging.getLogger(__name__)

MARKER = "dialogtune-complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def mark_complete(folder: Path, world_size: int = 1) -> None:
    """Flush the checkpoint to disk, then create the marker (with the world size) by an atomic rename."""
    _fsync_tree(folder)
    tmp = folder / f".{MARKER}.tmp"
    tmp.write_text(json.dumps({"world_size": world_size}) + "\n")
    os.replace(tmp, folder / MARKER)


def world_size_of(checkpoint: Path) -> int | None:
    """How many processes wrote `checkpoint`: from its marker, else from its RNG files; None if unknown."""
    try:
        return int(json.loads((checkpoint / MARKER).read_text())["world_size"])
    except (OSError, ValueError, KeyError, TypeError):  # a marker from before world sizes were recorded: "ok"
        pass
    per_rank = len(list(checkpoint.glob("rng_state_*.pth")))
    return per_rank or (1 if (checkpoint / "rng_state.pth").is_file() else None)


def check_world_size(checkpoint: Path, world_size: int) -> None:
    """Refuse to resume `checkpoint` with another number of processes than wrote it."""
    wrote = world_size_of(checkpoint)
    if wrote is not None and wrote != world_size:
        raise DialogtuneError(
            f"{checkpoint} was written by {wrote} process(es) but this run has {world_size}: resume it with "
            f"{wrote} (torchrun --nproc_per_node {wrote}), or pass --overwrite to start again"
        )


def token_mean_loss(outputs, labels, num_items_in_batch=None, smoothing: float = 0.0) -> torch.Tensor:  # noqa: ANN001
    """Cross-entropy summed over the label tokens, divided by the tokens of the whole step (every micro-batch
    and every process, as the trainer counts them): the mean over the global batch, however it is split."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    total = torch.nn.functional.cross_entropy(
        logits.float().flatten(0, -2), labels.to(logits.device).flatten(), ignore_index=-100, reduction="sum",
        label_smoothing=smoothing,
    )
    count = num_items_in_batch if num_items_in_batch is not None else labels.ne(-100).sum()
    return total / count


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


def prune(folder: Path, keep: int | None, best: str | None = None) -> None:
    """Delete unmarked (half-written) checkpoints, and the oldest complete ones beyond `keep`, never the newest
    nor `best` (the trainer's best_model_checkpoint, kept as transformers' own rotation keeps it)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.is_dir() and _step(path) is not None and not (path / MARKER).is_file():
            log.warning("removing incomplete checkpoint %s (the process stopped while writing it)", path)
            shutil.rmtree(path, ignore_errors=True)
    if keep:
        complete = complete_checkpoints(folder)
        protected = {complete[-1].name, Path(best).name} if complete and best else {p.name for p in complete[-1:]}
        surplus = len(complete) - max(keep, len(protected))
        for path in [p for p in complete if p.name not in protected][:max(surplus, 0)]:
            shutil.rmtree(path, ignore_errors=True)


class CheckpointingTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer whose checkpoints are marked complete before older ones are deleted, and which
    stops at the first non-finite loss instead of training on NaN."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - transformers' signature
        # Label smoothing is applied here: with a compute_loss_func the trainer skips its own label smoother.
        smoothing = getattr(kwargs.get("args"), "label_smoothing_factor", 0.0)
        kwargs.setdefault("compute_loss_func", functools.partial(token_mean_loss, smoothing=smoothing))
        super().__init__(*args, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:  # noqa: ANN001 - transformers' signature
        keep = self.args.save_total_limit
        self.args.save_total_limit = None  # rotation waits until the new checkpoint is complete
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = keep
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        ranks.barrier()  # every rank is done with it (FSDP / DeepSpeed write shards per rank): now it is complete
        if ranks.is_main():
            mark_complete(folder, self.args.world_size)
            prune(folder.parent, keep, self.state.best_model_checkpoint)

    def _save_rng_state(self, output_dir: str) -> None:
        """Every rank's RNG state, all written by rank 0 (transformers has each rank write its own file)."""
        if not ranks.collective():
            return super()._save_rng_state(output_dir)
        with tempfile.TemporaryDirectory() as tmp:  # this rank's file, made outside the run folder
            super()._save_rng_state(tmp)
            files = {path.name: path.read_bytes() for path in Path(tmp).iterdir()}
        for part in ranks.all_gather(files):
            for name, data in part.items() if ranks.is_main() else ():
                (Path(output_dir) / name).write_bytes(data)

    def training_step(self, model, inputs, num_items_in_batch=None):  # noqa: ANN001 - transformers' signature
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not bool(loss.isfinite()):
            raise DialogtuneError(
                f"training loss is {loss.item()} at step {self.state.global_step + 1}; the run is stopped "
                f"rather than trained on NaN: lower training.learning_rate or check the data for empty or broken rows"
            )
        return loss
