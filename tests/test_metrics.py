"""ROUGE layer: exact agreement with rouge_score, multi-reference protocols, summaries, input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rouge_score import rouge_scorer

from dialogtune.metrics import (
    METRICS,
    output_lengths,
    parse_protocol,
    per_example_scores,
    rouge_summary,
    rouge_summary_from_scores,
    sentence_lines,
)

DIALOGSUM_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "dialogsum" / "dialogsum.test.jsonl"

# (prediction, reference) pairs: short, multi-sentence, stemming, punctuation, abbreviations, empty.
PAIRS = [
    ("#Person1# asks #Person2# to type a memo.", "Ms. Dawson takes a dictation for #Person1#."),
    (
        "Ms. Dawson helps #Person1# write a memo. The memo bans instant messaging! Employees must use email.",
        "#Person1# dictates a memo to Ms. Dawson. Instant messaging is banned at work. Staff will be warned first.",
    ),
    ("They are running late. He ran to the station.", "He runs to the stations because they're late."),
    ("Tom and Mary discuss their plans for the weekend.", "Mary invites Tom to a party. Tom says yes."),
    ("", "A reference that the empty prediction cannot match."),
]


@pytest.fixture(scope="module")
def scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)


@pytest.mark.parametrize("prediction,reference", PAIRS)
def test_single_pair_equals_rouge_score_exactly(scorer, prediction, reference):
    ours = per_example_scores([prediction], [[reference]])
    plain = scorer.score(reference, prediction)
    split = scorer.score(sentence_lines(reference), sentence_lines(prediction))
    for metric in ("rouge1", "rouge2", "rougeL"):
        assert ours[metric][0] == plain[metric].fmeasure * 100
    assert ours["rougeLsum"][0] == split["rougeLsum"].fmeasure * 100


def test_rougelsum_scores_newline_separated_sentences(scorer):
    # Same two sentences in the opposite order: one LCS over the whole text finds only one sentence,
    # summary-level LCS over sentences finds both. The oracle is rouge_score on hand-split text, so this
    # fails if sentence splitting is skipped or wrong.
    prediction = "The memo bans instant messaging at work. Ms. Dawson types the memo for #Person1#."
    reference = "Ms. Dawson types the memo for #Person1#. The memo bans instant messaging at work!"
    by_hand_pred = "The memo bans instant messaging at work.\nMs. Dawson types the memo for #Person1#."
    by_hand_ref = "Ms. Dawson types the memo for #Person1#.\nThe memo bans instant messaging at work!"
    ours = per_example_scores([prediction], [[reference]])
    expected = scorer.score(by_hand_ref, by_hand_pred)["rougeLsum"].fmeasure * 100
    assert ours["rougeLsum"][0] == expected
    assert ours["rougeLsum"][0] == pytest.approx(100.0)
    # Without the split rougeLsum would equal rougeL, which misses the reordered sentence.
    assert ours["rougeL"][0] < 70


def test_sentence_lines_splits_sentences_but_not_abbreviations():
    text = 'Mr. Smith met Ms. Dawson at 3.5 p.m. today. "Go," he said. Did J. K. Rowling agree? Yes!'
    assert sentence_lines(text) == (
        "Mr. Smith met Ms. Dawson at 3.5 p.m. today.\n" '"Go," he said.\n' "Did J. K. Rowling agree?\n" "Yes!"
    )
    assert sentence_lines("First line\n\n  second line.  Third.") == "First line\nsecond line.\nThird."
    assert sentence_lines("he left. she stayed, etc. and so on.") == "he left.\nshe stayed, etc. and so on."
    assert sentence_lines("   ") == ""


def test_sentence_lines_only_changes_whitespace():
    text = "He said: \"No way!\" (Really.) They left... Then e.g. Tom came back?  OK."
    assert sentence_lines(text).split() == text.split()


# Hand-worked protocol example. Prediction tokens: the cat sat on the mat (6 unigrams, 5 bigrams).
#   ref A "mat on the sat cat the": same 6 unigrams -> rouge1 F = 100;
#         shares 1 bigram ("on the") of 5 -> P = R = 1/5 -> rouge2 F = 20.
#   ref B "the cat sat": 3 unigram hits -> P = 3/6, R = 3/3 -> rouge1 F = 2*(1/2)*1/(3/2) = 66.67;
#         2 bigram hits -> P = 2/5, R = 2/2 -> rouge2 F = 2*(2/5)*1/(7/5) = 4/7 = 57.14.
# So "max" takes A for rouge1 but B for rouge2: the best reference is chosen per metric.
PRED = "the cat sat on the mat"
REF_A = "mat on the sat cat the"
REF_B = "the cat sat"
NAMES = [["A", "B"]]


def test_hand_worked_pair_scores_match_rouge_score(scorer):
    a, b = scorer.score(REF_A, PRED), scorer.score(REF_B, PRED)
    assert a["rouge1"].fmeasure * 100 == pytest.approx(100.0)
    assert a["rouge2"].fmeasure * 100 == pytest.approx(20.0)
    assert b["rouge1"].fmeasure * 100 == pytest.approx(200 / 3)
    assert b["rouge2"].fmeasure * 100 == pytest.approx(400 / 7)


def test_protocol_mean_averages_references():
    got = per_example_scores([PRED], [[REF_A, REF_B]], protocol="mean")
    assert got["rouge1"][0] == pytest.approx((100 + 200 / 3) / 2)  # 83.33
    assert got["rouge2"][0] == pytest.approx((20 + 400 / 7) / 2)  # 38.57


def test_protocol_max_takes_best_reference_per_metric(scorer):
    got = per_example_scores([PRED], [[REF_A, REF_B]], protocol="max")
    assert got["rouge1"][0] == pytest.approx(100.0)  # from A
    assert got["rouge2"][0] == pytest.approx(400 / 7)  # from B
    # Same semantics as rouge_score's own multi-reference scorer.
    multi = scorer.score_multi([REF_A, REF_B], PRED)
    for metric in ("rouge1", "rouge2", "rougeL"):
        assert got[metric][0] == multi[metric].fmeasure * 100


def test_protocol_field_uses_only_the_named_reference():
    got_b = per_example_scores([PRED], [[REF_A, REF_B]], protocol="field:B", reference_names=NAMES)
    got_a = per_example_scores([PRED], [[REF_A, REF_B]], protocol="field:A", reference_names=NAMES)
    assert got_b["rouge1"][0] == pytest.approx(200 / 3)
    assert got_b["rouge2"][0] == pytest.approx(400 / 7)
    assert got_a["rouge1"][0] == pytest.approx(100.0)
    assert got_a["rouge2"][0] == pytest.approx(20.0)


def test_protocols_handle_several_examples_in_order():
    preds = [PRED, "a dog ran in the park"]
    refs = [[REF_A, REF_B], ["a dog ran in the park", "the cat sat"]]
    got = per_example_scores(preds, refs, protocol="max")
    assert got["rouge1"].shape == (2,)
    assert got["rouge1"][1] == pytest.approx(100.0)
    assert got["rouge1"][0] == pytest.approx(100.0)
    assert per_example_scores(preds, refs, protocol="mean")["rouge2"][1] == pytest.approx(50.0)


def test_mean_and_max_ignore_reference_names():
    # Callers pass whatever names they have (even none); only field:NAME reads them.
    for protocol in ("mean", "max"):
        with_names = per_example_scores([PRED], [[REF_A, REF_B]], protocol=protocol, reference_names=[[]])
        without = per_example_scores([PRED], [[REF_A, REF_B]], protocol=protocol)
        assert with_names["rouge1"][0] == without["rouge1"][0]


def test_field_protocol_errors_name_the_example_and_names():
    with pytest.raises(ValueError, match=r"Example 0 has no reference named 'C'.*\['A', 'B'\]"):
        per_example_scores([PRED], [[REF_A, REF_B]], protocol="field:C", reference_names=NAMES)
    with pytest.raises(ValueError, match="needs `reference_names`"):
        per_example_scores([PRED], [[REF_A, REF_B]], protocol="field:A")
    with pytest.raises(ValueError, match="2 references but 1 reference names"):
        per_example_scores([PRED], [[REF_A, REF_B]], protocol="field:A", reference_names=[["A"]])


@pytest.mark.parametrize("protocol,expected", [("mean", ("mean", None)), ("max", ("max", None)),
                                               ("field:summary1", ("field", "summary1"))])
def test_parse_protocol_valid(protocol, expected):
    assert parse_protocol(protocol) == expected


@pytest.mark.parametrize("bad", ["median", "MEAN", "", "field:", "field: summary1", "field", "summary1"])
def test_parse_protocol_rejects_bad_values_with_one_line_message(bad):
    with pytest.raises(ValueError) as info:
        parse_protocol(bad)
    message = str(info.value)
    assert repr(bad) in message
    assert "'mean'" in message and "'max'" in message and "field:NAME" in message
    assert "\n" not in message


def test_input_shape_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 reference lists"):
        per_example_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match=r"references\[1\] is empty"):
        per_example_scores(["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match=r"references\[0\] is a str; wrap it in a list"):
        per_example_scores(["a"], ["a reference"])
    with pytest.raises(ValueError, match=r"predictions\[0\] is NoneType"):
        per_example_scores([None], [["a"]])


def test_rouge_summary_shape_lengths_and_consistency():
    preds = [PRED, "a dog ran in the park", "nothing in common"]
    refs = [[REF_A, REF_B], ["a dog ran in the park"], ["the cat sat"]]
    summary = rouge_summary(preds, refs, protocol="mean", n_resamples=200, seed=1)
    assert summary["protocol"] == "mean"
    assert summary["num_examples"] == 3
    assert set(summary["rouge"]) == set(METRICS)
    per = per_example_scores(preds, refs)
    for metric in METRICS:
        entry = summary["rouge"][metric]
        assert entry["score"] == pytest.approx(per[metric].mean())
        assert entry["ci_low"] <= entry["score"] <= entry["ci_high"]
    assert summary["gen_len"] == pytest.approx((6 + 6 + 3) / 3)
    # Reference words are averaged within an example first: (6+3)/2, 6, 3.
    assert summary["ref_len"] == pytest.approx((4.5 + 6 + 3) / 3)
    from_scores = rouge_summary_from_scores(per, "mean", n_resamples=200, seed=1)
    assert from_scores["rouge"] == summary["rouge"]
    json.dumps(summary)  # metrics.json must be writable as-is


def test_rouge_summary_field_counts_only_the_named_reference_length():
    summary = rouge_summary([PRED], [[REF_A, REF_B]], protocol="field:B", reference_names=NAMES, n_resamples=50)
    assert summary["ref_len"] == 3
    assert summary["rouge"]["rouge1"]["score"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("protocol", ["mean", "max", "field:B"])
def test_rouge_summary_is_summary_from_scores_plus_output_lengths(protocol):
    preds = [PRED, "a dog ran in the park"]
    refs = [[REF_A, REF_B], ["a dog ran in the park", "the cat sat"]]
    names = NAMES * 2
    rebuilt = rouge_summary_from_scores(per_example_scores(preds, refs, protocol, names), protocol, n_resamples=100, seed=2)
    rebuilt.update(output_lengths(preds, refs, protocol, names))
    assert rebuilt == rouge_summary(preds, refs, protocol, names, n_resamples=100, seed=2)
    assert list(rebuilt) == list(rouge_summary(preds, refs, protocol, names, n_resamples=100, seed=2))


def test_rouge_summary_from_scores_rejects_bad_input():
    with pytest.raises(ValueError, match="Unknown ROUGE protocol"):
        rouge_summary_from_scores({"rouge1": np.ones(3)}, "avg")
    with pytest.raises(ValueError, match="differ in shape"):
        rouge_summary_from_scores({"rouge1": np.ones(3), "rouge2": np.ones(4)}, "mean")


def test_dialogsum_test_split_multi_reference():
    if not DIALOGSUM_TEST.exists():
        pytest.skip(f"shared DialogSum data not found at {DIALOGSUM_TEST}; real-data check needs ../shared")
    rows = [json.loads(line) for line in DIALOGSUM_TEST.read_text(encoding="utf-8").splitlines() if line.strip()]
    predictions = [row["summary1"] for row in rows]
    references = [[row["summary2"], row["summary3"]] for row in rows]
    mean = per_example_scores(predictions, references, protocol="mean")
    best = per_example_scores(predictions, references, protocol="max")
    assert len(rows) == 500
    for metric in METRICS:
        assert mean[metric].shape == (500,)
        assert np.all(best[metric] >= mean[metric])
        assert best[metric].mean() > mean[metric].mean()
    # Human references agree with each other at roughly 50 ROUGE-1 on DialogSum.
    assert 30 <= mean["rouge1"].mean() <= 70
    assert 30 <= best["rouge1"].mean() <= 70
    assert mean["rouge2"].mean() < mean["rougeL"].mean() <= mean["rouge1"].mean()
