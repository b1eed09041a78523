"""Faithfulness: facts of a summary that its dialogue does not support."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_path
from dialogtune.errors import DialogtuneError
from dialogtune.faithfulness import (
    extract_facts,
    faithfulness_summary,
    mark_html,
    mark_markdown,
    paired_faithfulness,
    unsupported,
)
from dialogtune.significance import bootstrap_ci

INTERVIEW = (
    "#Person1#: Good morning, you're here for the accountant position at Stark, right?\n"
    "#Person2#: Yes. I worked as an accountant for five years."
)
GYM = "#Person1#: How much is the membership?\n#Person2#: It's 85 dollars a month."
FLIGHT = "#Person1#: Which flight are you on?\n#Person2#: BA698 to London, leaving at 7:30 pm on Monday."


def _flagged(summary: str, dialogue: str) -> list[tuple[str, str]]:
    return [(f.kind, f.text) for f in unsupported(summary, dialogue)]


def test_the_demo_hallucinations_are_flagged():
    assert _flagged("#Person2# interviews for the driver position at Globex.", INTERVIEW) == [("name", "Globex")]
    assert _flagged("The membership costs $30 a month.", GYM) == [("number", "$30")]
    assert _flagged("#Person2# is on flight LH 681 to London.", FLIGHT) == [("code", "LH 681")]


def test_faithful_versions_pass_across_spellings():
    assert _flagged("#Person2# interviews for the accountant position at Stark's office.", INTERVIEW) == []
    assert _flagged("The membership costs $85 a month.", GYM) == []
    assert _flagged("#Person2# takes flight BA 698 to London at 7:30 on Monday.", FLIGHT) == []
    assert _flagged("#Person2# worked there for 5 years.", INTERVIEW) == []  # "five" in the dialogue


def test_number_words_and_digits_match_both_ways():
    assert _flagged("It costs twenty dollars.", "#Person1#: That's $20, please.") == []
    assert _flagged("It costs $20.", "#Person1#: That's twenty dollars, please.") == []
    assert _flagged("It costs twenty-five dollars.", "#Person1#: That's $20, please.") == [("number", "twenty-five dollars")]
    # DialogSum writes thousands and decimals with a space after the separator.
    assert _flagged("#Person2# pays $32.42 and earns 4,000 yuan.", "It's 32. 42. I earn 4, 000 yuan.") == []


def test_extracted_kinds_spans_and_norms():
    summary = "They meet Ms. Dawson at 7 pm on March 3rd, 2021 and pay 30% of $1,000 for gate A12."
    facts = extract_facts(summary)
    assert [(f.kind, f.text, f.norm) for f in facts] == [
        ("name", "Dawson", "dawson"),
        ("time", "7 pm", "7:00"),
        ("date", "March 3rd, 2021", "march 3 2021"),
        ("number", "30%", "30"),
        ("number", "$1,000", "1000"),
        ("code", "A12", "A12"),
    ]
    assert all(summary[f.start:f.end] == f.text for f in facts)


def test_person_tags_and_sentence_initial_common_words_are_not_names():
    summary = "#Person1# tells #Person2#'s sister the news. Then they leave. However, #Person2# stays. The end."
    assert extract_facts(summary) == []


def test_names_match_ignoring_case_and_possessive():
    dialogue = "#Person1#: This is mary's car. And that is Jim. Dave called. My name is S M I T H."
    assert _flagged("#Person2# borrows Mary's car. #Person2# will tell Jim Dave called. Mr. Smith agrees.", dialogue) == []
    assert _flagged("#Person2# borrows Marry's car.", dialogue) == [("name", "Marry's")]


def test_markdown_and_html_marking():
    summary = "Tom pays <$30> to Globex & co."
    facts = unsupported(summary, "#Person1#: Tom pays 85 dollars.")
    assert [f.text for f in facts] == ["$30", "Globex"]
    assert mark_markdown(summary, facts) == "Tom pays <**[$30?]**> to **[Globex?]** & co."
    assert mark_html(summary, facts) == (
        'Tom pays &lt;<mark class="unsupported" title="not in the dialogue">$30</mark>&gt; to '
        '<mark class="unsupported" title="not in the dialogue">Globex</mark> &amp; co.'
    )
    with pytest.raises(ValueError, match="same summary"):
        mark_html("another summary", facts)


def test_summary_rate_share_and_cis_on_a_hand_made_case():
    dialogues = [GYM, GYM, FLIGHT, INTERVIEW]
    predictions = [
        "It costs $85.",  # 1 fact, supported
        "It costs $30 at Globex.",  # 2 facts, both unsupported
        "#Person2# takes BA 698 on Friday.",  # 2 facts, Friday unsupported
        "#Person2# is an accountant.",  # no facts
    ]
    result = faithfulness_summary(predictions, dialogues, n_resamples=200, seed=3)
    counts = [e["unsupported"] for e in result["per_example"]]
    assert counts == [0, 2, 1, 0]
    assert [e["facts"] for e in result["per_example"]] == [1, 2, 2, 0]
    assert result["facts_checked"] == 5 and result["unsupported_facts"] == 3
    assert result["rate"] == pytest.approx(0.75) and result["share"] == pytest.approx(0.5)
    assert result["unsupported_fact_share"] == pytest.approx(0.6)
    assert result["rate_ci"] == list(bootstrap_ci(np.array([0, 2, 1, 0.0]), n_resamples=200, seed=3))
    assert result["share_ci"] == list(bootstrap_ci(np.array([0, 1, 1, 0.0]), n_resamples=200, seed=3))
    assert result["per_example"][1]["flagged"][0]["text"] == "$30"


def test_summary_rejects_mismatched_or_empty_inputs():
    with pytest.raises(DialogtuneError, match="2 summaries and 1 dialogues"):
        faithfulness_summary(["a", "b"], [GYM])
    with pytest.raises(DialogtuneError, match="no summaries"):
        faithfulness_summary([], [])


def test_paired_faithfulness_compares_counts_by_example():
    same = paired_faithfulness([0, 1, 2], [0, 1, 2], n_resamples=100)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0
    worse = paired_faithfulness([0] * 30, [1] * 30, n_resamples=200)
    assert worse["diff"] == -1.0 and worse["significant"]


def test_human_references_beat_a_shuffled_baseline_on_dialogsum():
    path = shared_path("dialogsum", "dialogsum.test.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 500
    dialogues = [r["dialogue"] for r in rows]
    faithful = faithfulness_summary([r["summary1"] for r in rows], dialogues, n_resamples=200)
    shuffled = faithfulness_summary([rows[(i + 1) % 500]["summary1"] for i in range(500)], dialogues, n_resamples=200)
    # Measured: 0.02 vs 1.31 unsupported facts per summary; the CIs are far apart.
    assert faithful["rate"] < 0.1 < 1.0 < shuffled["rate"]
    assert faithful["rate_ci"][1] < shuffled["rate_ci"][0]
    assert faithful["share"] * 10 < shuffled["share"]
    paired = paired_faithfulness(
        [e["unsupported"] for e in faithful["per_example"]],
        [e["unsupported"] for e in shuffled["per_example"]],
        n_resamples=200,
    )
    assert paired["significant"] and paired["diff"] < -1.0


def test_dotted_acronyms_are_one_name():
    assert _flagged("#Person2# likes P.E. best.", "#Person1#: PE. What about you?") == []
    assert _flagged("#Person2# likes P.E. best.", "#Person1#: P. E. What about you?") == []
    assert _flagged("#Person2# likes P.E. best.", "#Person1#: Art. What about you?") == [("name", "P.E.")]
