import json

import pytest
import torch
from safetensors import safe_open

from conftest import FAST_TRAINING, assert_same_text_where_decisive, greedy_margin
from dialogtune.configio import load_config
from dialogtune.inference import BASE, Summarizer, generate, generation_config
from dialogtune.errors import DialogtuneError
from dialogtune.modeling import fingerprint, load_base
from dialogtune.runs import read_run
from dialogtune.train import fit, prepare


def _config(tiny_model, small_data, tmp_path, method, **extra):
    overrides = {
        **FAST_TRAINING,
        "model": str(tiny_model),
        "data.dataset": str(small_data),
        "method": method,
        "output": str(tmp_path / method),
        "training.learning_rate": 5e-3,
        **extra,
    }
    return load_config(None, overrides)


@pytest.fixture(scope="module")
def lora_trained(tiny_model, small_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    config = _config(tiny_model, small_data, tmp, "lora", **{"lora.r": 4, "lora.lora_dropout": 0.0})
    setup = prepare(config)
    base_before = {n: p.detach().clone() for n, p in setup.base.named_parameters() if "lora_" not in n}
    lora_before = {n: p.detach().clone() for n, p in setup.model.named_parameters() if "lora_" in n}
    run = fit(setup, config, config.output)
    return setup, run, base_before, lora_before


def test_lora_training_leaves_every_base_weight_bit_identical(lora_trained):
    setup, _, base_before, _ = lora_trained
    after = {n: p for n, p in setup.base.named_parameters() if "lora_" not in n}
    assert after.keys() == base_before.keys() and len(after) > 10
    for name, tensor in base_before.items():
        assert torch.equal(after[name], tensor), f"base weight {name} changed during LoRA training"


def test_lora_training_changes_every_adapter_weight(lora_trained):
    setup, _, _, lora_before = lora_trained
    assert lora_before, "no LoRA parameters were created"
    for name, param in setup.model.named_parameters():
        if "lora_" in name:
            assert not torch.equal(param, lora_before[name]), f"adapter weight {name} did not change"
            assert param.requires_grad
        else:
            assert not param.requires_grad, f"base weight {name} is trainable"


def test_lora_run_folder_holds_only_the_adapter(lora_trained):
    _, run, _, _ = lora_trained
    assert (run.folder / "adapter_model.safetensors").is_file()
    assert (run.folder / "adapter_config.json").is_file()
    assert not (run.folder / "model.safetensors").exists()
    with safe_open(run.folder / "adapter_model.safetensors", "pt") as f:
        assert f.keys() and all("lora_" in k for k in f.keys())
    meta = run.metadata
    assert 0 < meta["trainable_params"] < 0.2 * meta["total_params"]
    assert meta["size_bytes"] == sum((run.folder / f).stat().st_size for f in ("adapter_model.safetensors", "adapter_config.json"))
    assert meta["train_tokens_per_second"] > 0 and meta["train_steps"] == 6
    log_lines = (run.folder / "train_log.jsonl").read_text().splitlines()
    assert any("loss" in json.loads(line) for line in log_lines)
    assert json.loads((run.folder / "prompt.json").read_text())["template"].startswith("Summarize the following")


def test_saved_adapter_reloaded_into_fresh_base_gives_same_generations(lora_trained, tiny_model):
    setup, run, _, _ = lora_trained
    prompts = [setup.template.format(setup.tokenizer.decode(setup.dataset[i]["input_ids"][:40])) for i in range(4)]
    settings = generation_config({"max_new_tokens": 10, "num_beams": 1, "do_sample": False}, setup.tokenizer)
    setup.model.eval()
    trained = generate(setup.model, setup.tokenizer, prompts, settings, progress=False)
    unmerged = Summarizer.from_run(run, merge=False)
    assert unmerged.generate(prompts, max_new_tokens=10) == trained  # the same computation, bit for bit
    summarizer = Summarizer.from_run(run, merge=True)  # merged: the same function, rounded differently
    margins = [greedy_margin(setup.model, setup.tokenizer, p, 10) for p in prompts]
    assert_same_text_where_decisive(summarizer.generate(prompts, max_new_tokens=10), trained, margins)
    reloaded = summarizer.model
    # The adapter matters: the untouched base scores the same input differently.
    enc = setup.tokenizer(prompts[:1], return_tensors="pt")
    decoder = torch.zeros((1, 1), dtype=torch.long)
    with torch.no_grad():
        base_logits = load_base(str(tiny_model))(**enc, decoder_input_ids=decoder).logits
        tuned_logits = reloaded(**enc, decoder_input_ids=decoder).logits
    assert not torch.allclose(base_logits, tuned_logits)


def test_one_base_serves_several_adapters_each_as_its_own_run_would(lora_trained, tiny_model):
    _, run, _, _ = lora_trained
    dialogues = ["#Person1#: Where is the bank?\n#Person2#: Next to the post office.", "#Person1#: Hi.\n#Person2#: Hello."]
    alone = Summarizer.from_run(run, merge=False)
    base = Summarizer.from_base(str(tiny_model), run.config)
    served = Summarizer.from_adapters(str(tiny_model), {"a": run.folder, "b": run.folder}, run.config)
    assert served.summarize(dialogues, adapter="a") == alone.summarize(dialogues) == served.summarize(dialogues, adapter="b")
    assert served.summarize(dialogues) == base.summarize(dialogues) == served.summarize(dialogues, adapter=BASE)
    # The texts of this random tiny base say little, so compare what the model computes per adapter.
    enc = served.tokenizer(served.prompts(dialogues), return_tensors="pt", padding=True)
    start = torch.zeros((2, 1), dtype=torch.long)

    def logits(summarizer, **kwargs):
        with torch.no_grad():
            return summarizer.model(**enc, decoder_input_ids=start, **kwargs).logits

    assert torch.allclose(logits(served, adapter_names=["a", "b"]), logits(alone), atol=1e-5)
    assert torch.allclose(logits(served, adapter_names=[BASE, BASE]), logits(base), atol=1e-5)
    assert not torch.allclose(logits(alone), logits(base), atol=1e-3), "the adapter must change the model"
    with pytest.raises(DialogtuneError, match="unknown adapter 'c'"):
        served.summarize(dialogues, adapter="c")
    with pytest.raises(DialogtuneError, match="not allowed"):
        Summarizer.from_adapters(str(tiny_model), {"my_lora_x": run.folder})


def test_full_training_changes_weights_and_saves_a_loadable_model(tiny_model, small_data, tmp_path):
    config = _config(tiny_model, small_data, tmp_path, "full")
    setup = prepare(config)
    before = fingerprint(setup.model)
    run = fit(setup, config, config.output)
    assert (run.folder / "model.safetensors").is_file() and not (run.folder / "adapter_config.json").exists()
    reloaded = Summarizer.from_run(run.folder).model
    assert fingerprint(reloaded) == fingerprint(setup.model) != before
    assert run.metadata["trainable_params"] == run.metadata["total_params"]
    assert fingerprint(load_base(str(tiny_model))) == before, "the base model folder was modified"


def test_dropout_setting_reaches_every_layer_but_not_the_saved_config(tiny_model, small_data, tmp_path):
    def rates(model):
        layers = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
        attention = {m.dropout for m in model.modules() if type(m).__name__ == "T5Attention"}
        return layers | attention

    assert rates(load_base(str(tiny_model))) == {0.1}  # the checkpoint's rate when `dropout` is unset
    off = load_base(str(tiny_model), dropout=0.0)
    assert rates(off) == {0.0} and off.config.dropout_rate == 0.1
    config = _config(tiny_model, small_data, tmp_path, "full", **{"dropout": 0.0, "training.max_steps": 2})
    setup = prepare(config)
    assert rates(setup.model) == {0.0}
    run = fit(setup, config, config.output)
    # Whoever fine-tunes the saved model next gets the checkpoint's dropout, not this run's choice.
    assert json.loads((run.folder / "config.json").read_text())["dropout_rate"] == 0.1
    assert read_run(run.folder).config.dropout == 0.0


def _lora_adapter_after_training(tiny_model, small_data, tmp_path, **extra):
    """LoRA (with dropout: the tiny model's 0.1 and LoRA's 0.05) for 3 steps; its adapter and how often one sublayer ran."""
    settings = {"lora.r": 4, "lora.lora_dropout": 0.05, "training.max_steps": 3, **extra}
    config = _config(tiny_model, small_data, tmp_path, "lora", **settings)
    setup = prepare(config)
    calls = []
    # A hook on the block itself runs outside the checkpoint; one on a sublayer sees the recomputation too.
    setup.base.encoder.block[0].layer[0].register_forward_hook(lambda *args: calls.append(1))
    before = {n: p.detach().clone() for n, p in setup.model.named_parameters() if "lora_" in n}
    fit(setup, config, config.output)
    after = {n: p.detach().clone() for n, p in setup.model.named_parameters() if "lora_" in n}
    return after, {n: after[n] - before[n] for n in after}, len(calls)


def test_lora_recomputes_activations_only_when_asked_on_cpu_and_trains_the_same_adapter(tiny_model, small_data, tmp_path):
    assert load_config(None, {"method": "lora"}).training_args()["activation_checkpointing"] == "auto"
    assert "activation_checkpointing" not in load_config(None, {"method": "full"}).training_args()
    recomputed, _, calls_on = _lora_adapter_after_training(
        tiny_model, small_data, tmp_path / "on", **{"training.activation_checkpointing": True}
    )
    kept, update, calls_auto = _lora_adapter_after_training(tiny_model, small_data, tmp_path / "auto")
    # Checkpointing runs each block's forward again in the backward pass; `auto` on CPU does not.
    assert calls_auto == 3 and calls_on == 6
    # ...with the same dropout masks (the RNG state is replayed), so it trains the same adapter. Not bit
    # for bit across CPUs: the recomputed path may take other kernels (an AVX2-only host differed in
    # lora_A), so the two may differ by rounding, which is many orders of magnitude below what 3 steps
    # moved the weights. Masks that were not replayed would differ by the order of the update itself.
    assert recomputed.keys() == kept.keys() and recomputed
    for name, tensor in kept.items():
        moved = update[name].abs().max().item()
        assert moved > 0, f"{name} did not train, so this comparison would show nothing"
        gap = (recomputed[name] - tensor).abs().max().item()
        assert gap <= 1e-3 * moved, f"{name} differs with activation checkpointing by {gap:.3g} (training moved it {moved:.3g})"


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize(("setting", "expected"), [(None, False), ("auto", False), (True, True), (False, False)])
def test_activation_checkpointing_reaches_the_trainer_resolved(method, setting, expected, tmp_path, caplog):
    from dialogtune.train import training_arguments

    caplog.set_level("INFO", logger="dialogtune.train")
    overrides = {"method": method} if setting is None else {"method": method, "training.activation_checkpointing": setting}
    args = training_arguments(load_config(None, overrides), tmp_path)
    assert args.activation_checkpointing is expected and args.gradient_checkpointing is expected
    resolved = setting == "auto" or (setting is None and method == "lora")
    told = [r.getMessage() for r in caplog.records if "activation checkpointing" in r.getMessage()]
    assert told == (["activation checkpointing: off (auto: training on CPU)"] if resolved else [])


def test_the_deprecated_gradient_checkpointing_alias_still_counts_for_lora(tmp_path):
    from dialogtune.train import training_arguments

    for value in (True, False):  # our `activation_checkpointing` default would otherwise win over it
        config = load_config(None, {"method": "lora", "training.gradient_checkpointing": value})
        assert training_arguments(config, tmp_path).activation_checkpointing is value


def test_batches_are_length_grouped_and_dynamically_padded(tiny_model, small_data, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from dialogtune.train import make_trainer

    config = _config(tiny_model, small_data, tmp_path, "full", **{"training.per_device_train_batch_size": 4})
    setup = prepare(config)
    trainer = make_trainer(setup, config, tmp_path / "full")
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    lengths = setup.dataset["length"]
    padded = real = 0
    for batch in trainer.get_train_dataloader():
        assert "attention_mask" in batch
        padded += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum())
        assert batch["input_ids"].shape[1] <= max(lengths) < config.data.max_source_length
    # Random batches of 4 from these lengths would pad far more; grouped ones pad little.
    assert padded / real < 1.15


def test_tensorboard_logging_writes_event_files_when_chosen(tiny_model, small_data, tmp_path):
    pytest.importorskip("tensorboard")
    config = _config(tiny_model, small_data, tmp_path, "lora", **{"training.report_to": "tensorboard", "training.max_steps": 2, "training.logging_steps": 1})
    run = fit(prepare(config), config, config.output)
    assert list((run.folder / "tensorboard").rglob("events.out.tfevents.*"))


def _gpu(monkeypatch, capability, native):
    from dialogtune import train

    monkeypatch.setattr(train, "_TOLD", set(), raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)

    def is_bf16_supported(including_emulation=True):
        # What torch says on such a GPU: emulated bf16 counts unless asked not to.
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    return train.mixed_precision


def test_bf16_only_where_the_gpu_has_it_natively(monkeypatch, caplog):
    caplog.set_level("INFO", logger="dialogtune.train")
    assert _gpu(monkeypatch, (8, 0), native=True)() == {"bf16": True}
    assert "bf16 not used" not in caplog.text
    mixed_precision = _gpu(monkeypatch, (7, 5), native=False)
    assert mixed_precision() == {} and mixed_precision() == {}
    told = [r.getMessage() for r in caplog.records if "bf16 not used" in r.getMessage()]
    assert len(told) == 1 and "compute capability 7.5" in told[0] and told[0].endswith("training in fp32")


def test_bad_lora_target_fails_before_any_data_is_loaded(tiny_model, small_data, tmp_path, caplog):
    caplog.set_level("INFO")
    config = _config(tiny_model, small_data, tmp_path, "lora", **{"lora.target_modules": ["wi"]})
    with pytest.raises(DialogtuneError, match="'wi' matches no module.*wi_0, wi_1, wo"):
        prepare(config)
    assert "dialogues" not in caplog.text, "data was loaded before a config-only error"


def test_library_deprecation_warnings_do_not_reach_the_terminal(tiny_model, small_data, tmp_path):
    import warnings

    from dialogtune.cli import main

    flags = ["--training.max_steps=2", "--training.save_strategy=no", "--training.per_device_train_batch_size=4",
             "--lora.r=4", "--training.activation_checkpointing=true"]
    # Without -q (which hides them all). Record every warning that would be shown: pytest would hide them from stderr.
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        code = main(["train", "--model", str(tiny_model), "--dataset", str(small_data), "--method", "lora",
                     "--output", str(tmp_path / "lora")] + flags)
        Summarizer.from_run(tmp_path / "lora", merge=False)  # as `evaluate` and `run` load it
    assert code == 0
    deprecations = [str(w.message) for w in shown if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not deprecations
