"""Which distributed engine this process runs under, and what text generation must do there.

`accelerate launch` and `torchrun` start one process per GPU and tell each where it stands through
environment variables: WORLD_SIZE, RANK and LOCAL_RANK (both launchers), ACCELERATE_USE_FSDP,
ACCELERATE_USE_DEEPSPEED and ACCELERATE_DEEPSPEED_ZERO_STAGE (accelerate, from the configs in
configs/accelerate/). Nothing here starts a process group; it only reads where we are.

Generation is where the engines bite (docs/scale-out.md):
- FSDP: `generate` on a sharded T5 fails, because it calls the encoder outside the wrapped forward,
  whose parameters are then never gathered (transformers #21667). dialogtune never generates on the
  trainer's sharded model: training saves one full model (FULL_STATE_DICT) and evaluation loads it.
  A sharded model handed to generation is refused, with that workaround.
- DeepSpeed ZeRO-3: every rank must run the same number of forward passes, since each gathers weights
  from the others; ranks whose summaries end early would hang the rest unless `synced_gpus=True`
  (transformers #18281). A partitioned model gets `synced_gpus=True`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dialogtune.errors import DialogtuneError

ENGINE_NAMES = ("single", "ddp", "fsdp", "deepspeed")
FSDP_REFUSAL = (
    "generation on an FSDP-sharded T5 model fails (transformers #21667); dialogtune generates from the saved full "
    "model instead: evaluate the run folder after training (`dialogtune evaluate RUN`), in one process or under "
    "accelerate launch with configs/accelerate/ddp.yaml"
)


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise DialogtuneError(f"environment variable {name} is {value!r}; the launcher sets it to a whole number") from None


@dataclass(frozen=True)
class Engine:
    """Where this process stands: the engine, the world size, its rank, and the ZeRO stage under DeepSpeed."""

    name: str  # single | ddp | fsdp | deepspeed
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    zero_stage: int | None = None

    @property
    def shards_parameters(self) -> bool:
        """Whether the trainer's model holds only a slice of each weight on this process (FSDP, ZeRO-3)."""
        return self.name == "fsdp" or (self.name == "deepspeed" and self.zero_stage == 3)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def generation_note(self) -> str:
        """One line for the log: how generation runs under this engine."""
        if self.name == "fsdp":
            return "FSDP: generation loads the saved full model on each rank, never the sharded one (transformers #21667)"
        if self.shards_parameters:
            return "DeepSpeed ZeRO-3: a partitioned model generates with synced_gpus=True (transformers #18281)"
        return f"{self.name}: each rank generates with a full copy of the model"


def detect(environ: Mapping[str, str] | None = None) -> Engine:
    """The engine this process runs under, from the launchers' environment variables (os.environ by default)."""
    environ = os.environ if environ is None else environ
    world = _int(environ, "WORLD_SIZE", 1)
    rank, local = _int(environ, "RANK", 0), _int(environ, "LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise DialogtuneError(f"WORLD_SIZE={world} and RANK={rank} do not fit together; start the processes with accelerate launch or torchrun")
    if _flag(environ, "ACCELERATE_USE_DEEPSPEED"):
        return Engine("deepspeed", world, rank, local, _int(environ, "ACCELERATE_DEEPSPEED_ZERO_STAGE", 2))
    if _flag(environ, "ACCELERATE_USE_FSDP"):
        return Engine("fsdp", world, rank, local)
    return Engine("ddp" if world > 1 else "single", world, rank, local)


def is_fsdp_sharded(model: torch.nn.Module) -> bool:
    """Whether any part of `model` is wrapped by FSDP (FullyShardedDataParallel, or `fully_shard`)."""
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # a torch built without distributed support cannot have sharded anything
        return False
    return any(isinstance(m, (FullyShardedDataParallel, FSDPModule)) for m in model.modules())


def is_zero3_partitioned(model: torch.nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 has partitioned `model` (it tags every parameter it manages with `ds_id`)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def generation_kwargs(model: torch.nn.Module, engine: Engine | None = None) -> dict[str, Any]:
    """Extra `generate` arguments `model` needs under `engine` (detected when omitted); refuses what cannot work.

    A model loaded whole (how dialogtune's evaluation loads a run) needs nothing. A ZeRO-3-partitioned one
    needs `synced_gpus=True` when more than one process generates. An FSDP-sharded one is refused.
    """
    engine = engine or detect()
    if is_fsdp_sharded(model):
        raise DialogtuneError(FSDP_REFUSAL)
    if is_zero3_partitioned(model) and engine.world_size > 1:
        return {"synced_gpus": True}
    return {}
