"""What `Summarizer` feeds `model.generate`: the decoder's start token and over-long prompts."""

import torch
from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

from dialogtune.config import Config
from dialogtune.inference import Settings, Summarizer, generation_config
from dialogtune.modeling import load_base
from dialogtune.prompts import PromptTemplate, build_prompts

GREEDY = {"max_new_tokens": 4, "num_beams": 1, "do_sample": False}


def _summarizer(model, tokenizer, max_source_length=64):
    settings = Settings(PromptTemplate(), dict(GREEDY), max_source_length, batch_size=4)
    return Summarizer(model, tokenizer, settings)


def _capture(model):
    """Wrap `model.generate` to record what it is given and what it returns."""
    seen = {"input_ids": [], "sequences": []}
    original = model.generate

    def generate(**kwargs):
        out = original(**kwargs)
        seen["input_ids"] += kwargs["input_ids"].tolist()
        seen["sequences"] += out.tolist()
        return out

    model.generate = generate
    return seen


def test_decoder_starts_from_the_models_start_token_not_pad(tiny_model):
    # A BART-style model starts decoding from </s> (2); its pad (1) would be a token it never saw first.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = BartConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None,
    )
    torch.manual_seed(0)
    model = BartForConditionalGeneration(config).eval()
    seen = _capture(model)
    _summarizer(model, tokenizer).summarize(["#Person1#: Hi.\n#Person2#: Hello."])
    assert seen["sequences"][0][0] == 2 != tokenizer.pad_token_id
    assert generation_config(GREEDY, tokenizer, model).decoder_start_token_id == 2
    # Without a model (older callers), T5's convention: start from pad.
    assert generation_config(GREEDY, tokenizer).decoder_start_token_id == tokenizer.pad_token_id


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _long_dialogue(tokenizer, tokens=2000):
    line = "#Person1#: Could you tell me where the station is?\n#Person2#: Two streets down, by the bank.\n"
    dialogue = line * (tokens // len(_ids(tokenizer, line)) + 1)
    assert len(_ids(tokenizer, dialogue)) >= tokens
    return dialogue


def assert_kept_instruction_and_cue(ids, tokenizer, limit):
    instruction = _ids(tokenizer, "Summarize the following conversation.")
    cue = _ids(tokenizer, "Summary: ")
    assert len(ids) == limit
    assert ids[: len(instruction)] == instruction, "the instruction was cut"
    assert ids[-len(cue) - 1 :] == cue + [tokenizer.eos_token_id], "the `Summary: ` cue was cut"


def test_overlong_prompts_lose_dialogue_not_instruction_or_cue_when_generating(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = load_base(str(tiny_model))
    seen = _capture(model)
    short = "#Person1#: Hi.\n#Person2#: Hello."
    _summarizer(model, tokenizer).summarize([_long_dialogue(tokenizer), short])
    long_ids, short_ids = seen["input_ids"]  # longest first; the short one padded
    assert_kept_instruction_and_cue(long_ids, tokenizer, 64)
    # A prompt that fits is fed exactly as the tokenizer encodes it.
    expected = tokenizer(PromptTemplate().format(short))["input_ids"]
    assert short_ids == expected + [tokenizer.pad_token_id] * (64 - len(expected))


def test_few_shot_prompt_whose_query_alone_is_too_long_cuts_the_query_dialogue(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = load_base(str(tiny_model))
    seen = _capture(model)
    shots = [{"id": "s", "dialogue": "#Person1#: Tea?\n#Person2#: Yes.", "references": ["They have tea."]}]
    prompts, report = build_prompts(PromptTemplate(), [_long_dialogue(tokenizer)], shots, tokenizer, 64)
    assert report.dropped == 1
    _summarizer(model, tokenizer).generate(prompts)
    assert_kept_instruction_and_cue(seen["input_ids"][0], tokenizer, 64)


def test_run_settings_give_the_generation_dict_the_summarizer_decodes_with(tiny_model):
    summarizer = Summarizer(None, None, Settings.of(Config(model=str(tiny_model))))
    assert summarizer.generation()["max_new_tokens"] == 200
    assert summarizer.generation(max_new_tokens=7)["max_new_tokens"] == 7
