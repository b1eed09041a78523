import sys

import pytest
import torch
from transformers import T5Config

from dialogtune.configio import load_config
from dialogtune.memory import PROCESS_BYTES, Shape, auto_activation_checkpointing, estimate_training_memory, saved_bytes
from dialogtune.modeling import apply_lora, load_base, skeleton

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))  # bench/ is a folder of sibling scripts, as tests/test_bench.py says
import bench_plan  # noqa: E402


def _t5_small_shape(tmp_path):
    """flan-t5-small's shape as a config-only model folder (no weights: the estimate never reads any)."""
    T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6,
             feed_forward_proj="gated-gelu", tie_word_embeddings=False).save_pretrained(tmp_path)
    return str(tmp_path)


def test_estimate_grows_with_the_batch_and_lengths_and_checkpointing_cuts_it(tiny_model):
    model = skeleton(str(tiny_model), load_config(None, {}).lora_args())

    def estimate(batch=8, source=256, target=64, checkpointing=False):
        return estimate_training_memory(model, batch, source, target, checkpointing)

    by_batch = [estimate(batch=b) for b in (1, 2, 8, 32)]
    assert by_batch == sorted(by_batch) and len(set(by_batch)) == 4
    assert estimate(source=128) < estimate(source=512) and estimate(target=16) < estimate(target=128)
    for batch in (1, 8, 32):
        assert estimate(batch=batch, checkpointing=True) < estimate(batch=batch)


# Peak resident memory on CPU, batch 8, dialogtune's recipe (BENCHMARKS.md): (run, shape, method,
# checkpointing) -> MiB. The lengths are those of each run's longest length-grouped batch, found by
# replaying the trainer's sampler on the same dev dialogues (bench/bench_plan.py prints them).
MEASURED_MIB = bench_plan.RECORDED  # one copy of the table, beside the script that replays those runs
PEAK_BATCH = {"lora-vs-full": (459, 68), "default": (512, 67)}
BASE_SHAPE = {"vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 2048, "num_layers": 12, "num_heads": 12}


def _shape_folder(folder, **sizes):
    T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False, **sizes).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize(("run", "size", "method", "checkpointing"), list(MEASURED_MIB), ids=lambda v: str(v))
def test_estimate_is_within_25_percent_of_the_measured_cpu_peaks(run, size, method, checkpointing, tmp_path):
    """With the process itself (~730 MiB) added, as resident memory counts it."""
    name = _t5_small_shape(tmp_path) if size == "small" else _shape_folder(tmp_path, **BASE_SHAPE)
    model = skeleton(name, load_config(None, {}).lora_args() if method == "lora" else None)
    source, target = PEAK_BATCH[run]
    predicted = (estimate_training_memory(model, 8, source, target, checkpointing) + PROCESS_BYTES) / 2**20
    assert predicted == pytest.approx(MEASURED_MIB[(run, size, method, checkpointing)], rel=0.25)


def test_a_flan_t5_config_counts_its_own_lm_head(tmp_path):
    """transformers 5 ties T5's lm_head when built from a config; the checkpoint behind `tie_word_embeddings:
    false` has its own, so flan-t5-small is 76,961,152 parameters, not 60.5 M."""
    assert Shape.of(skeleton(_t5_small_shape(tmp_path))).total == 76_961_152


@pytest.mark.parametrize("lora", [False, True])
def test_saved_activations_match_what_autograd_saves(tiny_model, lora):
    """The per-block coefficients are exact counts: compare them with the tensors autograd really saves."""
    torch.manual_seed(0)
    base = load_base(str(tiny_model))
    model = apply_lora(base, load_config(None, {}).lora_args()) if lora else base
    model.train()
    batch, source, target = 2, 24, 8
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in params:
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    ids = torch.randint(2, 100, (batch, source))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.randint(2, 100, (batch, target)))
    shape = Shape.of(model)
    parts = saved_bytes(shape, batch, source, target)
    layers = shape.encoder_layers * parts["encoder_block"] + shape.decoder_layers * parts["decoder_block"]
    expected = layers + parts["adapters"] + parts["outside"]
    assert sum(saved.values()) == pytest.approx(expected, rel=0.02)


def _cuda(monkeypatch, free_bytes):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free_bytes, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_auto_recomputes_on_a_gpu_only_when_the_estimate_exceeds_free_memory(monkeypatch, tmp_path):
    config = load_config(None, {"model": _t5_small_shape(tmp_path), "method": "lora"})
    assert auto_activation_checkpointing(config) == (False, "training on CPU")
    lora_args = config.lora_args()
    need = estimate_training_memory(skeleton(config.model, lora_args), 8, 512, 128, checkpointing=False)
    _cuda(monkeypatch, free_bytes=need - 1)
    on, reason = auto_activation_checkpointing(config)
    assert on and reason.startswith("estimated ") and reason.endswith(" GiB free on cuda:0") and " > " in reason
    _cuda(monkeypatch, free_bytes=need + 1)
    on, reason = auto_activation_checkpointing(config)
    assert not on and " fits in " in reason
