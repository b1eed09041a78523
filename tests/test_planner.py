"""`dialogtune plan`: the per-engine table, the suggestion logic, and bad inputs (one line, exit 2)."""

from __future__ import annotations

import json

import pytest
from transformers import T5Config

from dialogtune.cli import main
from dialogtune.errors import DialogtuneError
from dialogtune.memory import Shape, training_bytes
from dialogtune.modeling import skeleton
from dialogtune.planner import make_plan, parse_memory, suggest

XL = {"vocab_size": 32128, "d_model": 2048, "d_kv": 64, "d_ff": 5120, "num_layers": 24, "num_heads": 32}  # flan-t5-xl


@pytest.fixture(scope="module")
def xl(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flan-t5-xl-config")
    T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False, **XL).save_pretrained(folder)
    return str(folder)


def test_the_table_for_the_tiny_model_has_every_part_and_fits(capsys, tmp_path):
    out = tmp_path / "plan.json"
    assert main(["plan", "--model", "builtin:tiny-t5", "--method", "lora", "--gpu-memory", "8GB", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "weights" in printed and "activ." in printed and "suggested: 1 GPU" in printed
    plan = json.loads(out.read_text())
    rows = {r["activation_checkpointing"]: r for r in plan["rows"]}
    assert set(rows) == {False, True} and all(r["engine"] == "single" for r in plan["rows"])
    assert 0 < plan["parameters"]["trainable"] < plan["parameters"]["total"]
    for r in rows.values():
        assert r["fits"] and r["total"] == r["weights"] + r["optimizer"] + r["gathered"] + max(r["activations"], r["gradients"]) + r["cuda_context"]
    assert rows[True]["activations"] < rows[False]["activations"]
    assert plan["suggestion"] == {**plan["suggestion"], "fits": True, "per_device_batch": 8, "gradient_accumulation_steps": 1,
                                  "activation_checkpointing": False}


def test_sharding_engines_divide_by_the_gpus_and_ddp_does_not(xl):
    shape = Shape.of(skeleton(xl))
    one = {e: training_bytes(shape, 1, 512, 128, True, e, 1, "bf16") for e in ("ddp", "fsdp", "zero2", "zero3")}
    eight = {e: training_bytes(shape, 1, 512, 128, True, e, 8, "bf16") for e in ("ddp", "fsdp", "zero2", "zero3")}
    assert eight["ddp"]["weights"] == one["ddp"]["weights"] and eight["ddp"]["optimizer"] == one["ddp"]["optimizer"]
    assert eight["ddp"]["gradients"] == 2 * one["ddp"]["gradients"]  # DDP's communication buckets
    for engine in ("fsdp", "zero3"):
        assert eight[engine]["weights"] == pytest.approx(one[engine]["weights"] / 8, rel=1e-6)
        assert eight[engine]["optimizer"] == pytest.approx(one[engine]["optimizer"] / 8, rel=1e-6)
        assert eight[engine]["gathered"] > 0
    assert eight["zero2"]["weights"] == one["zero2"]["weights"]  # ZeRO-2 keeps every weight
    assert eight["zero2"]["optimizer"] == pytest.approx(one["zero2"]["optimizer"] / 8, rel=1e-6)
    assert eight["zero3"]["total"] < eight["zero2"]["total"] < eight["ddp"]["total"]


def test_qlora_stores_the_blocks_at_about_half_a_byte_a_parameter(xl):
    shape = Shape.of(skeleton(xl, {"r": 16, "target_modules": ["q", "v"]}))
    four = training_bytes(shape, 1, 512, 128, True, quantization="4bit")["weights"]
    full = training_bytes(shape, 1, 512, 128, True)["weights"]
    rest = (shape.total - shape.quantizable) * 4  # embeddings, lm_head, norms and the adapter stay fp32
    assert four == pytest.approx(shape.quantizable * 0.516 + rest, rel=0.01)
    assert four < full / 4


def test_the_suggestion_shrinks_the_batch_keeps_the_global_batch_and_then_shards(xl):
    plan = make_plan(xl, "full", gpus=1, gpu_memory="40GB", batch_size=8)  # 2.85 B x 16 bytes = 42 GiB: too big
    assert not plan["suggestion"]["fits"] and "--method lora" in plan["suggestion"]["try"]
    plan = make_plan(xl, "lora", gpus=1, gpu_memory="24GB", batch_size=8)
    s = plan["suggestion"]
    assert s["fits"] and s["per_device_batch"] * s["gradient_accumulation_steps"] >= 8 and s["per_device_batch"] < 8
    plan = make_plan(xl, "full", gpus=8, gpu_memory="40GB", batch_size=8)
    s = plan["suggestion"]
    assert s["fits"] and s["engine"] in ("zero2", "fsdp", "zero3") and s["global_batch"] >= 64
    assert s["accelerate_config"].startswith("configs/accelerate/")
    ddp = [r for r in plan["rows"] if r["engine"] == "ddp"]
    assert not any(r["fits"] for r in ddp)  # 16 bytes a parameter (+ DDP's buckets) replicated does not fit 40 GB


def test_suggestion_prefers_the_simplest_engine_without_recomputation():
    shape = Shape(total=10**6, trainable=10**6, d_model=64, inner=64, d_ff=128, heads=4, encoder_layers=2, decoder_layers=2,
                  vocab=1000, block_params=10**5, root_params=10**5, quantizable=8 * 10**5, ffn_adapters=False)
    s = suggest(shape, "full", 4, 2**30, 8, 128, 32, "bf16")
    assert (s["engine"], s["activation_checkpointing"], s["per_device_batch"]) == ("ddp", False, 8)


@pytest.mark.parametrize(("text", "expected"), [("24GB", 24 * 2**30), ("16GiB", 16 * 2**30), ("80 gb", 80 * 2**30),
                                                ("40960MiB", 40 * 2**30), ("12", 12 * 2**30)])
def test_gpu_memory_strings(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--method", "prefix"], "--method is 'prefix'; use full, lora or qlora"),
    (["--method", "lora", "--gpu-memory", "24XB"], "--gpu-memory is '24XB'; give the memory of one GPU such as 24GB"),
    (["--method", "lora", "--gpu-memory", "0GB"], "--gpu-memory is '0GB'"),
    (["--method", "lora", "--gpus", "0"], "--gpus is 0; use 1 or more"),
    (["--method", "full", "--batch-size", "-2"], "--batch-size is -2; use 1 or more"),
    (["--method", "lora", "--training.learning_rate", "1e-3"], "plan takes LoRA settings only"),
    (["--method", "lora", "--lora.target_modules", "wi"], "LoRA target 'wi' matches no module"),
])
def test_bad_inputs_are_one_line_and_exit_2(argv, fragment, capsys):
    assert main(["plan", "--model", "builtin:tiny-t5", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dialogtune: error:") and fragment in err[0], err


def test_an_unknown_hub_id_offline_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["plan", "--model", "no-such-org/no-such-model", "--method", "full"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not load model `no-such-org/no-such-model`" in err[0]


def test_make_plan_refuses_before_reading_the_model():
    with pytest.raises(DialogtuneError, match="--gpus is 0"):
        make_plan("does/not-matter", "full", gpus=0)
