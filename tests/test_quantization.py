"""QLoRA (`quantization: 4bit | 8bit`): refused in one line where bitsandbytes cannot run, configured as the
QLoRA paper does where it can; and LoRA keeps training under activation checkpointing."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from conftest import FAST_TRAINING
from dialogtune import quantization
from dialogtune.cli import main
from dialogtune.configio import load_config
from dialogtune.errors import DialogtuneError
from dialogtune.quantization import check_quantization, quantization_kwargs


def _flags(overrides: dict) -> list[str]:
    return [item for key, value in overrides.items() for item in (f"--{key}", str(value))]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dialogtune: error:"), err
    return err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a CUDA GPU: the refusal is for machines without one")
def test_qlora_on_cpu_is_one_line_exit_2_before_anything_is_written(tiny_model, small_data, tmp_path, capsys):
    out = tmp_path / "qlora"
    argv = ["train", "--model", str(tiny_model), "--dataset", str(small_data), "--method", "lora",
            "--quantization", "4bit", "--output", str(out), *_flags(FAST_TRAINING)]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert "`quantization: 4bit` (QLoRA) needs a CUDA GPU" in line and "leave `quantization` unset" in line
    assert not out.exists()


def test_without_bitsandbytes_the_line_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(DialogtuneError, match="needs bitsandbytes, which is not installed; pip install bitsandbytes"):
        check_quantization("8bit")
    check_quantization(None)  # unset: nothing to check, anywhere


def test_quantization_is_checked_in_the_config(capsys):
    with pytest.raises(DialogtuneError, match="`quantization` is '3bit'; choose one of 4bit, 8bit"):
        load_config(None, {"quantization": "3bit"})
    with pytest.raises(DialogtuneError, match="a quantized base is trained through a LoRA adapter only"):
        load_config(None, {"method": "full", "quantization": "4bit"})
    assert load_config(None, {"method": "lora", "quantization": "8bit"}).quantization == "8bit"
    assert load_config(None, {}).quantization is None
    # `dialogtune run --quantization 4bit`: the LoRA run gets the quantized base; original and full the base as it ships.
    from dialogtune.configio import for_method

    run = load_config(None, {"quantization": "4bit"})
    assert [for_method(run, m).quantization for m in ("original", "full", "lora")] == [None, None, "4bit"]


@pytest.mark.parametrize(("bf16", "dtype"), [(True, torch.bfloat16), (False, torch.float32)])
def test_4bit_is_nf4_with_double_quantisation_and_never_computes_in_fp16(bf16, dtype, monkeypatch):
    monkeypatch.setattr(quantization, "check_quantization", lambda q: None)  # as on a GPU with bitsandbytes
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setenv("LOCAL_RANK", "3")
    kwargs = quantization_kwargs("4bit")
    config = kwargs["quantization_config"]
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == dtype
    assert kwargs["device_map"] == {"": 3}  # each process's own GPU under DDP
    assert quantization_kwargs("8bit")["quantization_config"].load_in_8bit
    assert quantization_kwargs(None) == {}


def _checkpointed_lora_step(tiny_model, small_data, tmp_path, reentrant: bool) -> tuple[dict[str, torch.Tensor | None], int]:
    """One real training step (trainer.train) of LoRA with activation checkpointing on: the adapters'
    gradients just before the optimizer step, and how often the first encoder block's attention ran."""
    from transformers import TrainerCallback

    from dialogtune.train import make_trainer, prepare

    overrides = {**FAST_TRAINING, "model": str(tiny_model), "data.dataset": str(small_data), "method": "lora",
                 "output": str(tmp_path / "lora"), "lora.r": 4, "lora.init_lora_weights": False,
                 "training.max_steps": 1, "training.activation_checkpointing": True,
                 "training.activation_checkpointing_kwargs": {"use_reentrant": reentrant}}
    config = load_config(None, overrides)
    setup = prepare(config)
    trainer = make_trainer(setup, config, tmp_path / "lora")
    grads: dict[str, torch.Tensor | None] = {}

    class Grads(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            grads.update({n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters() if "lora_" in n})

    trainer.add_callback(Grads())
    calls = []
    setup.base.encoder.block[0].layer[0].register_forward_hook(lambda *a: calls.append(1))
    trainer.train()
    return grads, len(calls)


@pytest.mark.parametrize("reentrant", [False, True])
def test_lora_with_activation_checkpointing_gets_gradients_in_every_adapter(tiny_model, small_data, tmp_path, reentrant):
    """B starts non-zero (init_lora_weights: false) so that A gets a gradient in the first step too."""
    grads, calls = _checkpointed_lora_step(tiny_model, small_data, tmp_path, reentrant)
    assert calls == 2, "the block's forward was not recomputed in the backward pass"
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values()), [n for n, g in grads.items() if g is None]


def test_without_input_require_grads_reentrant_checkpointing_starves_the_adapters(tiny_model, small_data, tmp_path, monkeypatch):
    """Why the test above can fail: the trainer makes the embeddings' output require grad
    (`enable_input_require_grads`); without it, no input of a reentrant checkpointed block requires grad,
    so nothing inside (every adapter) gets a gradient and the loss has none to give."""
    from transformers import PreTrainedModel

    monkeypatch.setattr(PreTrainedModel, "enable_input_require_grads", lambda self: None)
    with pytest.raises(RuntimeError, match="does not require grad"):
        _checkpointed_lora_step(tiny_model, small_data, tmp_path, reentrant=True)
