"""The bundled tiny T5 (offline stand-in for FLAN-T5): loads with Auto classes, untied, small, generates."""

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import dialogtune

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # the build-time corpus generator is not part of the package
from build_corpus import generate_corpus, generate_examples  # noqa: E402

ASSET = Path(dialogtune.__file__).parent / "assets" / "tiny-t5"
SCRIPT = SCRIPTS / "build_tiny_t5.py"
PROMPT = "Summarize the following conversation.\n\n{dialogue}\n\nSummary: "


def normalise(text: str) -> str:
    """What a T5 tokenizer keeps of a text: whitespace runs (newlines included) become one space."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(ASSET)


@pytest.fixture(scope="module")
def model():
    return AutoModelForSeq2SeqLM.from_pretrained(ASSET)


def test_tokenizer_has_the_t5_layout(tok):
    assert tok.is_fast and type(tok).__name__ == "T5Tokenizer"
    assert (tok.pad_token, tok.eos_token, tok.unk_token) == ("<pad>", "</s>", "<unk>")
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    # Sentinels sit at the end in reverse, as in T5, and each is one token.
    assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1
    ids = tok("a <extra_id_0> b <extra_id_1>", add_special_tokens=False).input_ids
    assert tok.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_1>"])[0] in ids
    assert 1000 <= len(tok) <= 4096
    assert tok("hello").input_ids[-1] == tok.eos_token_id


def test_tokenizer_round_trips_the_whole_corpus(tok):
    texts = [row[key] for rows in generate_corpus().values() for row in rows for key in ("dialogue", "summary", "topic")]
    decoded = tok.batch_decode(tok(texts).input_ids, skip_special_tokens=True)
    assert [d for d, t in zip(decoded, texts) if d != normalise(t)] == []


def test_tokenizer_keeps_turn_tags_and_words_whole(tok):
    # "#Person1#" is one token whether it opens a turn or sits in a summary, and words don't carry
    # punctuation, so "Friday" is the same token in "Friday?" and "Friday.".
    assert tok.tokenize("#Person1#: Friday? #Person1# Friday.") == ["▁#Person1#", ":", "▁Friday", "?", "▁#Person1#", "▁Friday", "."]


def test_model_is_a_small_untied_gated_gelu_t5(model):
    cfg = model.config
    assert cfg.model_type == "t5" and cfg.feed_forward_proj == "gated-gelu"
    assert (cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id) == (0, 0, 1)
    # Untied like FLAN-T5: separate storage and different values, and no output rescaling.
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    assert not torch.equal(model.lm_head.weight, model.shared.weight)
    assert cfg.scale_decoder_outputs is False
    n = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= n <= 5_000_000
    assert (ASSET / "model.safetensors").stat().st_size <= 20 * 1024 * 1024


def test_vocab_sizes_agree(model, tok):
    assert model.config.vocab_size == len(tok) == model.lm_head.weight.shape[0]


def test_generation_config_allows_full_summaries(model):
    gen = model.generation_config
    assert gen.decoder_start_token_id == 0 and gen.eos_token_id == 1
    # The 20-token default cuts summaries short; they run to ~60 tokens here.
    assert gen.max_new_tokens >= 96


def test_generates_non_empty_text_for_a_prompt(model, tok):
    dialogue = generate_corpus(n_train=1, n_validation=1, n_test=1)["test"][0]["dialogue"]
    enc = tok([PROMPT.format(dialogue=dialogue)], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=30, do_sample=False)
    assert tok.decode(out[0], skip_special_tokens=True).strip()


def test_model_card_states_the_command_that_rebuilds_it():
    card = (ASSET / "README.md").read_text()
    command = re.search(r"^\s+(python scripts/build_tiny_t5\.py.*)$", SCRIPT.read_text(), re.M).group(1)
    assert command in card
    assert "never" in card.lower() and "summar" in card.lower()


def _load_script():
    spec = importlib.util.spec_from_file_location("build_tiny_t5", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretraining_tasks_never_read_a_summary(tok):
    import random

    build = _load_script()
    sentinels = [tok.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(build.N_SENTINELS)]
    rng = random.Random(0)
    canary = "CANARY SUMMARY TEXT"
    for ex in generate_examples(n_train=200, n_validation=1, n_test=1)["train"]:
        ex = dataclasses.replace(ex, summary=canary)
        for _ in range(5):
            src, tgt = build.make_example(ex, tok, sentinels, rng)
            text = tok.decode(src) + tok.decode(tgt)
            assert "CANARY" not in text and "Summar" not in text
