import json

import pytest
from rouge_score import rouge_scorer

from conftest import shared_path, write_jsonl
from dialogtune.cli import main
from dialogtune.metrics import METRICS

REFS = [
    {"id": "a", "dialogue": "#Person1#: Hi Tom.\n#Person2#: Hello.", "summary1": "Tom says hello.", "summary2": "They greet each other.", "topic1": "greeting"},
    {"id": "b", "dialogue": "#Person1#: A room?\n#Person2#: Yes.", "summary1": "Someone books a room.", "summary2": "A room is booked.", "topic1": "hotel"},
]


@pytest.fixture
def refs(tmp_path):
    return write_jsonl(tmp_path / "refs.jsonl", REFS)


def _f(ref, pred, metric="rouge1"):
    return rouge_scorer.RougeScorer([metric], use_stemmer=True).score(ref, pred)[metric].fmeasure * 100


def test_score_text_predictions_in_reference_order(refs, tmp_path, capsys):
    preds = tmp_path / "p.txt"
    preds.write_text("Tom says hello.\nA room is booked.\n")
    out = tmp_path / "s.json"
    assert main(["-q", "score", "--predictions", str(preds), "--references", str(refs), "--protocol", "field:summary1", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"] == "field:summary1" and result["num_examples"] == 2
    expected = (_f("Tom says hello.", "Tom says hello.") + _f("Someone books a room.", "A room is booked.")) / 2
    assert result["rouge"]["rouge1"]["score"] == pytest.approx(expected)
    assert set(result["rouge"]) == set(METRICS)
    for m in METRICS:
        r = result["rouge"][m]
        assert r["ci_low"] <= r["score"] <= r["ci_high"]
    assert "rouge1" in capsys.readouterr().out


def test_score_jsonl_predictions_align_by_id(refs, tmp_path):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "b", "prediction": "A room is booked."}, {"id": "a", "prediction": "Tom says hello."}])
    out = tmp_path / "s.json"
    assert main(["-q", "score", "--predictions", str(preds), "--references", str(refs), "--protocol", "max", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["rouge"]["rouge1"]["score"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    "content, suffix, fragment",
    [
        ("only one line\n", ".txt", "has 1 lines but"),
        ('{"id": "a", "prediction": "x"}\n', ".jsonl", "no prediction for 1 ids, e.g. b"),
        ('{"id": "a"}\n', ".jsonl", "line 1 needs JSON with `id` and `prediction`"),
    ],
)
def test_misaligned_predictions_are_refused(refs, tmp_path, capsys, content, suffix, fragment):
    preds = tmp_path / f"p{suffix}"
    preds.write_text(content)
    assert main(["score", "--predictions", str(preds), "--references", str(refs)]) == 2
    assert fragment in capsys.readouterr().err


def test_bad_protocol_is_refused(refs, tmp_path, capsys):
    preds = tmp_path / "p.txt"
    preds.write_text("x\ny\n")
    assert main(["score", "--predictions", str(preds), "--references", str(refs), "--protocol", "best"]) == 2
    assert "best" in capsys.readouterr().err


def test_one_reference_set_scored_against_the_others(refs, tmp_path):
    out = tmp_path / "s.json"
    assert main(["-q", "score", "--prediction-field", "summary1", "--references", str(refs), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    expected = (_f("They greet each other.", "Tom says hello.") + _f("A room is booked.", "Someone books a room.")) / 2
    assert result["rouge"]["rouge1"]["score"] == pytest.approx(expected)
    assert result["predictions_from"] == "field:summary1"


def test_real_dialogsum_summary1_against_summary2_and_3(tmp_path, capsys):
    test_file = shared_path("dialogsum", "dialogsum.test.jsonl")
    out = tmp_path / "s.json"
    assert main(["-q", "score", "--prediction-field", "summary1", "--references", str(test_file), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_examples"] == 500 and result["protocol"] == "mean"
    assert 40 < result["rouge"]["rouge1"]["score"] < 65
    assert result["rouge"]["rouge1"]["ci_high"] - result["rouge"]["rouge1"]["ci_low"] < 5
    assert result["by_topic"] and result["degenerate"]["empty"]["count"] == 0


@pytest.mark.parametrize("protocol", ["mean", "max", "field:summary2"])
def test_scores_match_rouge_summary_exactly(refs, tmp_path, protocol):
    from dialogtune.config import DataConfig
    from dialogtune.data import load_split
    from dialogtune.metrics import rouge_summary
    from dialogtune.scoring import score_files

    preds = tmp_path / "p.txt"
    preds.write_text("Tom says hello to someone.\nA room is booked.\n")
    records = load_split(DataConfig(dataset=str(refs), loader="local"), "test")
    expected = rouge_summary(
        ["Tom says hello to someone.", "A room is booked."],
        [r["references"] for r in records],
        protocol,
        [r["reference_names"] for r in records],
        n_resamples=300,
        seed=3,
    )
    result = score_files(preds, refs, protocol=protocol, resamples=300, seed=3)
    assert {key: result[key] for key in expected} == expected  # same CIs from the same seed, same lengths
