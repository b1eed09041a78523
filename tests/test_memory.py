import pytest
import torch
from transformers import T5Config

from dialogtune.configio import load_config
from dialogtune.memory import auto_activation_checkpointing, estimate_training_memory
from dialogtune.modeling import skeleton


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


def test_estimate_matches_the_benchmarked_peaks_it_was_calibrated_on(tmp_path):
    """BENCHMARKS.md, flan-t5-small shape at batch 8 (peak batch ~459 + 64 tokens), CPU, minus the ~730 MiB
    the process itself holds: LoRA 4,705 MiB kept, 1,741 recomputed; full 5,371 MiB."""
    name = _t5_small_shape(tmp_path)
    lora = skeleton(name, load_config(None, {}).lora_args())
    full = skeleton(name)
    mib = lambda model, ckpt: estimate_training_memory(model, 8, 459, 64, ckpt) / 2**20 + 730  # noqa: E731
    assert mib(lora, False) == pytest.approx(4705, rel=0.1)
    assert mib(lora, True) == pytest.approx(1741, rel=0.1)
    assert mib(full, False) == pytest.approx(5371, rel=0.1)


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
