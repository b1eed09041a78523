import torch
from transformers import AutoTokenizer

from dialogtune.preprocess import LABEL_PAD, collator, tokenize
from dialogtune.prompts import PromptTemplate


def test_labels_are_minus_100_exactly_on_pads(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    template = PromptTemplate()
    summaries = ["Short.", "A much longer summary with many more words in it than the first one has.", "Mid length one here."]
    prompts = [template.format(f"#Person1#: hello {i}\n#Person2#: hi") for i in range(3)]
    dataset, stats = tokenize(tokenizer, prompts, summaries, 128, 64)
    batch = collator(tokenizer)([dataset[i] for i in range(3)])
    label_lengths = [len(tokenizer(text_target=s)["input_ids"]) for s in summaries]
    for row, length in zip(batch["labels"], label_lengths):
        assert (row[:length] != LABEL_PAD).all(), "a real label token was masked"
        assert (row[length:] == LABEL_PAD).all(), "a pad was left in the labels"
        assert row[length - 1] == tokenizer.eos_token_id
    # Inputs are padded with the pad id, and the attention mask marks exactly the real tokens.
    for ids, mask, length in zip(batch["input_ids"], batch["attention_mask"], dataset["length"]):
        assert mask.sum() == length
        assert (ids[length:] == tokenizer.pad_token_id).all()
    assert batch["labels"].shape[1] == max(label_lengths), "labels are padded per batch, not to a fixed length"
    assert stats.truncated_sources == 0 and stats.target_tokens == sum(label_lengths)


def test_collator_builds_decoder_inputs_from_labels_without_minus_100(tiny_model):
    from transformers import AutoModelForSeq2SeqLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model)
    dataset, _ = tokenize(tokenizer, ["a b", "c"], ["x", "y z w v"], 32, 32)
    batch = collator(tokenizer, model)([dataset[0], dataset[1]])
    assert (batch["decoder_input_ids"] >= 0).all()
    assert batch["decoder_input_ids"][0, 0] == model.config.decoder_start_token_id


def test_overlong_inputs_are_truncated_counted_and_keep_eos(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    dataset, stats = tokenize(tokenizer, ["word " * 100, "short"], ["s " * 50, "t"], 16, 8)
    assert stats.truncated_sources == 1 and stats.truncated_targets == 1
    assert len(dataset[0]["input_ids"]) == 16 and dataset[0]["input_ids"][-1] == tokenizer.eos_token_id
    assert len(dataset[0]["labels"]) == 8 and dataset[0]["labels"][-1] == tokenizer.eos_token_id
    assert torch.tensor(dataset[1]["input_ids"]).numel() == dataset[1]["length"]


def test_overlong_prompts_lose_dialogue_not_instruction_or_cue(tiny_model):
    from test_inference import _long_dialogue, assert_kept_instruction_and_cue

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    template = PromptTemplate()
    short = template.format("#Person1#: Hi.\n#Person2#: Hello.")
    dataset, stats = tokenize(tokenizer, [template.format(_long_dialogue(tokenizer)), short], ["s", "t"], 64, 8)
    assert stats.truncated_sources == 1
    assert_kept_instruction_and_cue(dataset[0]["input_ids"], tokenizer, 64)
    assert dataset[1]["input_ids"] == tokenizer(short)["input_ids"], "a prompt that fits must not change"


def test_a_template_longer_than_the_limit_is_one_clear_error(tiny_model):
    import pytest

    from dialogtune.errors import DialogtuneError

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    template = PromptTemplate("Summarize this conversation between two people, briefly.\n\n{dialogue}\n\nSummary: ")
    with pytest.raises(DialogtuneError, match="max_source_length"):
        tokenize(tokenizer, [template.format("#Person1#: Hi there.")], ["s"], 8, 8, template)
