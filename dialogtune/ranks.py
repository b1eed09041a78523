"""Which process am I: the one home of rank logic when dialogtune runs under `torchrun` or `accelerate launch`.

The launchers start one process per device and set RANK / WORLD_SIZE / LOCAL_RANK. Rank 0 alone writes
the run folder and the report; the other ranks compute (a shard of the training batches, a shard of the
dialogues to summarise) and log to their own files. A plain `python -m dialogtune` is rank 0 of 1, and
then every helper here is a no-op that never touches `torch.distributed`.

The process group is accelerate's (`PartialState`), the same one `Seq2SeqTrainer` sets up, so a barrier
here and the trainer's own collectives share one group. Collectives here must be called by every rank in
the same order; a rank that fails instead makes the launcher stop the others (torchrun's default).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dialogtune.errors import DialogtuneError

T = TypeVar("T")
LOGS = "logs"  # inside the folder a command works on: logs/rank<N>.log for every rank but 0
_main_only = False  # inside `on_main`'s function on rank 0: nested collectives would pair with the wrong call


def world_size() -> int:
    """How many processes run this command (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True on the process that writes run folders, reports and results (rank 0)."""
    return rank() == 0


def collective() -> bool:
    """True where a collective call really communicates: several processes, and not inside `on_main`'s function
    (which runs on rank 0 alone, so it must do its work directly)."""
    return world_size() > 1 and not _main_only


def _group() -> Any:
    """torch.distributed, with the process group started if no trainer has started it yet."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        # On a machine without CUDA accelerate makes a gloo group only when told it runs on CPU.
        PartialState(cpu=not torch.cuda.is_available())
    return dist


def barrier() -> None:
    """Wait until every rank gets here."""
    if collective():
        _group().barrier()


def finish() -> None:
    """End the process group cleanly once every rank is done (a rank leaving first can abort the others in gloo)."""
    if world_size() == 1:
        return  # without importing torch: most commands never need it
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast(value: T) -> T:
    """Rank 0's `value` on every rank (it must pickle)."""
    if not collective():
        return value
    box = [value if is_main() else None]
    _group().broadcast_object_list(box, src=0)
    return box[0]


def all_gather(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank (each must pickle)."""
    if world_size() == 1:
        return [value]
    out: list[Any] = [None] * world_size()
    _group().all_gather_object(out, value)
    return out


def on_main(fn: Callable[[], T], share: bool = True) -> T | None:
    """Run `fn` on rank 0 only (a decision that reads and tidies the output folder, a write); every rank gets
    its result (None unless `share`), or raises the DialogtuneError it raised, so no rank acts on a guess
    while rank 0 changes the folder. A crash on rank 0 is re-raised there and ends the others with one line."""
    global _main_only
    if not collective():
        return fn()
    outcome: tuple[str, Any] = ("ok", None)
    crash: BaseException | None = None
    if is_main():
        _main_only = True
        try:
            value = fn()
            outcome = ("ok", value if share else None)
        except DialogtuneError as err:
            outcome = ("error", str(err))
        except BaseException as err:  # noqa: BLE001 - told to the others, then re-raised here
            crash, outcome = err, ("error", f"rank 0 stopped with {type(err).__name__}: {err}")
        finally:
            _main_only = False
    kind, value = broadcast(outcome)
    if crash is not None:
        raise crash
    if kind != "ok":
        raise DialogtuneError(value)
    return value


def log_to(folder: str | Path) -> Path | None:
    """On ranks other than 0: send logging and stdout to `folder`/logs/rank<N>.log (rank 0 keeps the console).

    Called by the CLI once it knows the folder a command works on; later calls keep the first file.
    """
    if is_main():
        return None
    root = logging.getLogger()
    if any(getattr(h, "_dialogtune_rank", False) for h in root.handlers):
        return None
    path = Path(folder) / LOGS / f"rank{rank()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank{rank()} %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler._dialogtune_rank = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))  # the console stays at warnings (quiet_console)
    sys.stdout = handler.stream  # prints (result tables, library chatter) are rank 0's to show
    return path


def quiet_console() -> None:
    """On ranks other than 0, the console shows warnings and errors only: rank 0 speaks for the job."""
    if is_main():
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
            handler.setFormatter(logging.Formatter(f"rank{rank()} %(levelname)s %(name)s: %(message)s"))


def trainer_args() -> dict[str, Any]:
    """Trainer arguments that several processes need: without CUDA, accelerate forms the (gloo) process group
    only when told it runs on the CPU; otherwise every rank would train alone on the whole data."""
    import torch

    return {"use_cpu": True} if world_size() > 1 and not torch.cuda.is_available() else {}


def shard(batches: list[list[int]]) -> list[int]:
    """This rank's items of `batches`: whole batches r, r+W, r+2W, ... (W processes), in ascending item order.

    Whole batches, so each item is computed in exactly the batch (and padding) one process would use.
    """
    mine = [i for b, batch in enumerate(batches) if b % world_size() == rank() for i in batch]
    return sorted(mine)
