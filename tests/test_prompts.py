import pytest
from transformers import AutoTokenizer

from dialogtune.prompts import DEFAULT_TEMPLATE
from dialogtune.errors import DialogtuneError
from dialogtune.prompts import PromptTemplate, build_prompts, draw_shots


def _pool(n):
    return [{"id": f"t{i}", "dialogue": f"#Person1#: topic {i} " + "word " * (5 * i), "references": [f"summary {i}"]} for i in range(n)]


def test_default_template_is_the_instruction_prompt():
    assert PromptTemplate().format("#Person1#: Hi.") == "Summarize the following conversation.\n\n#Person1#: Hi.\n\nSummary: "
    assert PromptTemplate().template == DEFAULT_TEMPLATE


def test_only_the_dialogue_slot_is_filled_so_braces_stay_literal():
    assert PromptTemplate("JSON {x}: {dialogue}").format("a {b} c") == "JSON {x}: a {b} c"


def test_template_without_slot_is_refused():
    with pytest.raises(DialogtuneError, match=r"no `\{dialogue\}` placeholder"):
        PromptTemplate("Summarize this.")


def test_shots_are_drawn_reproducibly_and_never_include_the_target():
    pool = _pool(20)
    first = draw_shots(pool, 3, seed=1, exclude={"t0"})
    assert first == draw_shots(pool, 3, seed=1, exclude={"t0"}) != draw_shots(pool, 3, seed=2, exclude={"t0"})
    assert all(s["id"] != "t0" for s in first)
    with pytest.raises(DialogtuneError, match="only 20"):
        draw_shots(pool, 21, seed=0)


def test_few_shot_drops_examples_that_do_not_fit_but_never_cuts_the_dialogue(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    template = PromptTemplate()
    shots = _pool(6)[1:]
    short, long = "#Person1#: Hi.", "#Person1#: " + "again " * 60
    budget = 120
    prompts, report = build_prompts(template, [short, long], shots, tokenizer, budget)
    for dialogue, prompt in zip([short, long], prompts):
        assert prompt.endswith(template.format(dialogue)), "the dialogue being summarised was changed"
        kept = prompt.count("Summary: ") - 1
        assert kept < len(shots) or len(tokenizer(prompt)["input_ids"]) <= budget
    assert report.requested == 5 and report.used + report.dropped == 10 and report.dropped > 0
    assert prompts[0].count("Summary: ") > prompts[1].count("Summary: ")


def test_zero_shot_has_no_examples():
    prompts, report = build_prompts(PromptTemplate(), ["a", "b"])
    assert prompts == [PromptTemplate().format("a"), PromptTemplate().format("b")] and report.used == 0
