"""Breakdowns by topic and length, length statistics, and degenerate-output detection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dialogtune.breakdowns import (
    by_length,
    by_topic,
    degenerate_outputs,
    dialogue_turns,
    length_stats,
    quantile_edges,
    repetition_share,
)


def test_by_topic_orders_by_frequency_and_averages():
    topics = ["work", "food", "work", "travel", "food", "work"]
    scores = np.array([10.0, 40.0, 20.0, 90.0, 60.0, 30.0])
    rows = by_topic(scores, topics, top=10)
    assert rows == [
        {"topic": "work", "count": 3, "score": pytest.approx(20.0)},
        {"topic": "food", "count": 2, "score": pytest.approx(50.0)},
        {"topic": "travel", "count": 1, "score": pytest.approx(90.0)},
    ]
    assert [row["topic"] for row in by_topic(scores, topics, top=2)] == ["work", "food"]


def test_by_topic_breaks_ties_by_name():
    rows = by_topic(np.array([1.0, 2.0]), ["zoo", "art"])
    assert [row["topic"] for row in rows] == ["art", "zoo"]


def test_by_topic_min_count_and_ci():
    topics = ["work", "food", "work", "travel", "food", "work"]
    scores = np.array([10.0, 40.0, 20.0, 90.0, 60.0, 30.0])
    rows = by_topic(scores, topics, min_count=2, n_resamples=200, seed=1)
    assert [row["topic"] for row in rows] == ["work", "food"]
    assert rows[0]["ci"][0] <= rows[0]["score"] <= rows[0]["ci"][1] and rows[0]["ci"][0] >= 10.0
    assert "ci" not in by_topic(scores, topics)[0]


def test_quantile_edges_fill_every_bucket_of_short_dialogues():
    lengths = [12, 15, 15, 18, 20, 22, 25, 31, 40]  # all under the old fixed 100-word first edge
    edges = quantile_edges(lengths)
    rows = by_length(np.arange(len(lengths), dtype=float), lengths, edges)
    assert len(rows) == 4 and all(row["count"] > 0 for row in rows)
    assert quantile_edges([7, 7, 7]) == [] and by_length(np.ones(3), [7, 7, 7], []) == [{"bucket": "all", "count": 3, "score": 1.0}]


def test_by_length_buckets_and_edges():
    lengths = [5, 99, 100, 199, 250, 400, 1000]
    scores = np.array([1.0, 3.0, 10.0, 20.0, 30.0, 40.0, 60.0])
    rows = by_length(scores, lengths)
    assert [row["bucket"] for row in rows] == ["<100", "100-199", "200-299", "300-399", ">=400"]
    assert [row["count"] for row in rows] == [2, 2, 1, 0, 2]
    assert rows[0]["score"] == pytest.approx(2.0)
    assert rows[1]["score"] == pytest.approx(15.0)
    assert rows[3]["score"] is None  # empty bucket: listed, no score
    assert rows[4]["score"] == pytest.approx(50.0)
    json.dumps(rows)


def test_by_length_custom_edges_and_errors():
    rows = by_length(np.array([1.0, 2.0]), [10, 60], edges=[50])
    assert rows == [{"bucket": "<50", "count": 1, "score": 1.0}, {"bucket": ">=50", "count": 1, "score": 2.0}]
    with pytest.raises(ValueError, match="strictly increasing"):
        by_length(np.array([1.0]), [10], edges=[200, 100])
    with pytest.raises(ValueError, match="`scores` has 2 entries but `lengths` has 1"):
        by_length(np.array([1.0, 2.0]), [10])


def test_length_stats():
    preds = ["one two", "one two three four", "a b c d e f"]
    refs = [["one two three four"], ["x y", "x y z w"], ["p q r s t u v w"]]
    stats = length_stats(preds, refs)
    assert stats["pred_mean"] == pytest.approx(4.0)
    assert stats["pred_median"] == pytest.approx(4.0)
    assert stats["ref_mean"] == pytest.approx((4 + 3 + 8) / 3)
    assert stats["ref_median"] == pytest.approx(4.0)
    assert stats["ratio"] == pytest.approx(4.0 / 5.0)


def test_repetition_share():
    assert repetition_share("Tom asks Mary to dinner and she agrees to go with him.") == 0.0
    loop = "he says he will go he says he will go he says he will go"
    assert repetition_share(loop) > 0.3
    # One repeated 3-gram in a long summary is normal, not degenerate.
    normal = (
        "#Person1# tells #Person2# about the new office policy and #Person2# asks whether it covers "
        "outside communication, then #Person1# tells #Person2# to type the memo."
    )
    assert 0 < repetition_share(normal) < 0.3


DIALOGUE = (
    "#Person1#: Ms. Dawson, I need you to take a dictation for me.\n"
    "#Person2#: Yes, sir...\n"
    "#Person1#: This should go out as an intra-office memorandum to all employees."
)


def test_dialogue_turns_inline_and_per_line():
    assert dialogue_turns(DIALOGUE)[1] == "Yes, sir..."
    assert dialogue_turns("#Person1#: Hi there. #Person2#: Hello!") == ["Hi there.", "Hello!"]


def test_degenerate_outputs_flags_each_kind():
    preds = [
        "",
        "   ",
        "he says he will go he says he will go he says he will go",
        "#Person1# says Ms. Dawson, I need you to take a dictation for me. She agrees.",  # copies an 11-word turn
        "#Person1# asks Ms. Dawson to take a dictation for me.",  # most of that turn, but not all of it
        "Yes, sir... #Person1# dictates a memo to Ms. Dawson.",  # copies only a 2-word turn
        "#Person1# dictates a memo on instant messaging to Ms. Dawson.",
    ]
    ids = [f"ex{i}" for i in range(len(preds))]
    result = degenerate_outputs(preds, [DIALOGUE] * len(preds), ids)
    assert result["num_examples"] == 7
    assert result["empty"] == {"count": 2, "ids": ["ex0", "ex1"]}
    assert result["repetitive"] == {"count": 1, "ids": ["ex2"]}
    assert result["copied_turn"] == {"count": 1, "ids": ["ex3"]}
    assert result["thresholds"]["repeat_share"] == 0.3
    json.dumps(result)


def test_degenerate_copy_ignores_whitespace_differences():
    pred = "Summary:  This should go out as an\nintra-office memorandum to all employees."
    assert degenerate_outputs([pred], [DIALOGUE], ["a"])["copied_turn"]["ids"] == ["a"]


def test_degenerate_outputs_length_mismatch():
    with pytest.raises(ValueError, match="`ids` has 1"):
        degenerate_outputs(["a", "b"], ["d", "d"], ["x"])
