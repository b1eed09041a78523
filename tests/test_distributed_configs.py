"""The shipped accelerate configs parse and name valid options, checked by accelerate's own code as
installed; and `dialogtune.engines` reads the launchers' environment and guards generation.

Each config goes through what `accelerate launch --config_file X` does before it starts a process:
`load_config_from_file` (ClusterConfig: top-level keys and the DistributedType enum),
`_validate_launch_command` (the config's sections become launch arguments), the environment the
launcher hands its processes, and the plugin the processes build from that environment
(FullyShardedDataParallelPlugin, DeepSpeedPlugin; neither needs DeepSpeed installed).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from conftest import REPO
from dialogtune.engines import Engine, detect, generation_kwargs, is_fsdp_sharded
from dialogtune.errors import DialogtuneError

CONFIGS = REPO / "configs" / "accelerate"
EXPECTED = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed-zero2": "DEEPSPEED", "deepspeed-zero3": "DEEPSPEED"}


def _launch_args(path: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "dialogtune", "train"])
    return _validate_launch_command(args)


def _launched_env(path: Path) -> dict[str, str]:
    """The environment `accelerate launch` would give each process, as launch_command builds it."""
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args, defaults, _ = _launch_args(path)
    args.main_process_port = 0  # any free port: the check must not depend on 29500 being free
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


def test_every_engine_has_a_config():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_opens_with_its_command_and_parses_as_accelerate_reads_it(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    path = CONFIGS / f"{name}.yaml"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(f"# accelerate launch --config_file configs/accelerate/{name}.yaml -m dialogtune train --config ")
    assert (REPO / first.split("--config ")[-1].split()[0]).is_file(), "the command names a recipe that exists"
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig) and config.distributed_type == DistributedType[EXPECTED[name]]
    assert config.mixed_precision == "bf16", "never fp16: T5 overflows (transformers #23918)"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_section_key_is_a_launch_option_with_an_allowed_value(name):
    from accelerate.commands.launch import launch_command_parser

    _, defaults, _ = _launch_args(CONFIGS / f"{name}.yaml")
    actions = {a.dest: a for a in launch_command_parser()._actions}
    for section in (defaults.fsdp_config, defaults.deepspeed_config):
        for key, value in section.items():
            dest = key if key in actions or section is not defaults.fsdp_config else f"fsdp_{key}"
            assert dest in actions, f"{name}: {key} is not an `accelerate launch` option"
            action = actions[dest]
            if action.choices:  # compared as the launcher parses a command-line value
                parsed = action.type(value) if callable(action.type) else value
                assert parsed in action.choices, f"{name}: {key}={value!r} not in {action.choices}"


def _plugin(env: dict[str, str], factory, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(env))
    return factory()


def test_fsdp_config_builds_a_full_shard_t5block_plugin(monkeypatch):
    import accelerate.utils.dataclasses as accelerate_dataclasses
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import BackwardPrefetch, ShardingStrategy, StateDictType
    from transformers.models.t5.modeling_t5 import T5ForConditionalGeneration

    env = _launched_env(CONFIGS / "fsdp.yaml")
    # sync_module_states asks for the current CUDA device: pretend there is one, the only thing faked here.
    monkeypatch.setattr(accelerate_dataclasses, "is_cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    plugin = _plugin(env, FullyShardedDataParallelPlugin, monkeypatch)
    assert plugin.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert plugin.transformer_cls_names_to_wrap == ["T5Block"] == T5ForConditionalGeneration._no_split_modules
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT  # one full model.safetensors for evaluate
    assert plugin.backward_prefetch == BackwardPrefetch.BACKWARD_PRE
    assert plugin.use_orig_params and not plugin.activation_checkpointing


@pytest.mark.parametrize(("name", "stage"), [("deepspeed-zero2", 2), ("deepspeed-zero3", 3)])
def test_deepspeed_configs_build_their_zero_stage(name, stage, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    env = _launched_env(CONFIGS / f"{name}.yaml")
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    plugin = _plugin(env, DeepSpeedPlugin, monkeypatch)
    zero = plugin.deepspeed_config["zero_optimization"]
    assert plugin.zero_stage == stage == zero["stage"]
    # DeepSpeed's documented offload devices (deepspeed is not installed here, so its schema cannot check them).
    assert {zero["offload_optimizer"]["device"], zero["offload_param"]["device"]} <= {"none", "cpu", "nvme"}
    # Left to the trainer, so they always equal training.gradient_accumulation_steps / max_grad_norm.
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] and plugin.zero3_init_flag


# ----------------------------------------------------------------- dialogtune.engines


@pytest.mark.parametrize(("env", "expected"), [
    ({}, Engine("single")),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, Engine("ddp", 2, 1, 1)),
    ({"WORLD_SIZE": "4", "RANK": "0", "ACCELERATE_USE_FSDP": "true"}, Engine("fsdp", 4, 0, 0)),
    ({"WORLD_SIZE": "8", "RANK": "3", "LOCAL_RANK": "3", "ACCELERATE_USE_DEEPSPEED": "true",
      "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, Engine("deepspeed", 8, 3, 3, 3)),
    ({"WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true"}, Engine("deepspeed", 2, 0, 0, 2)),
])
def test_detect_reads_the_launchers_environment(env, expected, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    engine = detect()
    assert engine == expected
    assert engine.shards_parameters == (expected.name == "fsdp" or expected.zero_stage == 3)
    assert detect(env) == expected  # the same from a mapping


def test_detect_refuses_an_inconsistent_environment():
    with pytest.raises(DialogtuneError, match="WORLD_SIZE=2 and RANK=2"):
        detect({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(DialogtuneError, match="WORLD_SIZE is 'two'"):
        detect({"WORLD_SIZE": "two"})


def test_a_whole_model_generates_as_usual_and_zero3_partitions_need_synced_gpus(tiny_model):
    from dialogtune.modeling import load_base

    model = load_base(str(tiny_model))
    assert generation_kwargs(model, Engine("ddp", 2, 1, 1)) == {}
    for p in model.parameters():  # how DeepSpeed ZeRO-3 marks a parameter it partitioned (deepspeed is not installed here)
        p.ds_id = 0
    assert generation_kwargs(model, Engine("deepspeed", 2, 0, 0, 3)) == {"synced_gpus": True}
    assert generation_kwargs(model, Engine("single")) == {}  # one process has nobody to wait for


def test_an_fsdp_sharded_model_is_refused_with_the_workaround(tiny_model):
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from dialogtune.modeling import load_base

    model = load_base(str(tiny_model))
    store = tempfile.NamedTemporaryFile(delete=False)
    dist.init_process_group("gloo", init_method=f"file://{store.name}", rank=0, world_size=1)
    try:
        for block in (*model.encoder.block, *model.decoder.block):
            fully_shard(block)
        fully_shard(model)
        assert is_fsdp_sharded(model)
        with pytest.raises(DialogtuneError, match=r"FSDP-sharded T5 .*#21667.*dialogtune evaluate RUN"):
            generation_kwargs(model, Engine("fsdp", 1))
    finally:
        dist.destroy_process_group()
        Path(store.name).unlink(missing_ok=True)
