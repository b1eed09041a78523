import gzip
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


def test_score_reports_unsupported_facts(refs, tmp_path, capsys):
    preds = tmp_path / "p.txt"
    preds.write_text("Jim says hello.\nA room is booked.\n")  # no Jim in the dialogue: one unsupported fact
    out = tmp_path / "s.json"
    assert main(["-q", "score", "--predictions", str(preds), "--references", str(refs), "--output", str(out)]) == 0
    faithful = json.loads(out.read_text())["faithfulness"]
    assert faithful["unsupported_facts"] == 1 and faithful["rate"] == 0.5 and faithful["share"] == 0.5
    assert "per_example" not in faithful
    assert "unsupported facts per summary 0.500" in capsys.readouterr().out


def test_score_jsonl_predictions_align_by_id(refs, tmp_path):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "b", "prediction": "A room is booked."}, {"id": "a", "prediction": "Tom says hello."}])
    out = tmp_path / "s.json"
    assert main(["-q", "score", "--predictions", str(preds), "--references", str(refs), "--protocol", "max", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["rouge"]["rouge1"]["score"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    "content, suffix, fragment",
    [
        ('{"id": "a", "prediction": "x"}\n', ".jsonl", "no prediction for 1 ids, e.g. b"),
        ('{"id": "a"}\n', ".jsonl", "line 1 needs JSON with `id` and `prediction`"),
    ],
)
def test_misaligned_predictions_are_refused(refs, tmp_path, capsys, content, suffix, fragment):
    preds = tmp_path / f"p{suffix}"
    preds.write_text(content)
    assert main(["score", "--predictions", str(preds), "--references", str(refs)]) == 2
    assert fragment in capsys.readouterr().err


def _score(args, out):
    """Exit code of `dialogtune score ARGS --output OUT`, and the rouge1 score written there (None on error)."""
    code = main(["-q", "score", *args, "--output", str(out)])
    return code, json.loads(out.read_text())["rouge"]["rouge1"]["score"] if code == 0 else None


# Rows in the reverse of the references' order: read as plain text they would not line up.
JSONL_ROWS = [{"id": "b", "prediction": "A room is booked."}, {"id": "a", "prediction": "Tom says hello."}]


@pytest.mark.parametrize("name", ["p.json", "p.JSONL", "p.jsonl.gz", "p.txt"])
def test_jsonl_is_recognised_by_content_not_name(refs, tmp_path, caplog, name):
    text = "".join(json.dumps(row) + "\n" for row in JSONL_ROWS).encode()
    preds = tmp_path / name
    preds.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    assert _score(["--predictions", str(preds), "--references", str(refs), "--protocol", "max"], tmp_path / "s.json") == (0, pytest.approx(100.0))
    noted = [r.getMessage() for r in caplog.records if "read as JSONL" in r.getMessage()]
    assert len(noted) == (1 if name == "p.txt" else 0)  # a .txt holding JSON lines is worth a note; .json is not


def test_summarize_output_is_scored_as_it_is(refs, tmp_path, monkeypatch):
    """The exact lines `dialogtune summarize --file` prints ({id, summary}), saved as .txt, raw U+2028 included."""
    from dialogtune import summarize

    class Fake:
        def summarize(self, dialogues):
            return ["Tom says\u2028hello." if "Tom" in d else "A room is booked." for d in dialogues]

    monkeypatch.setattr(summarize.Summarizer, "from_base", classmethod(lambda cls, name: Fake()))
    lines = list(summarize.summarize_inputs(None, str(refs), "any-model", None))
    assert json.loads(lines[0]).keys() == {"id", "summary"}  # the format this test stands for
    preds = tmp_path / "summaries.txt"
    preds.write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    assert _score(["--predictions", str(preds), "--references", str(refs), "--protocol", "max"], tmp_path / "s.json") == (0, pytest.approx(100.0))


def test_prediction_field_defaults_and_prediction_key(refs, tmp_path):
    both = write_jsonl(tmp_path / "both.jsonl", [{**row, "summary": "unrelated words"} for row in JSONL_ROWS])
    assert _score(["--predictions", str(both), "--references", str(refs), "--protocol", "max"], tmp_path / "s.json") == (0, pytest.approx(100.0))
    named = write_jsonl(tmp_path / "named.jsonl", [{"id": row["id"], "output": row["prediction"], "prediction": "x"} for row in JSONL_ROWS])
    args = ["--predictions", str(named), "--references", str(refs), "--protocol", "max", "--prediction-key", "output"]
    assert _score(args, tmp_path / "s.json") == (0, pytest.approx(100.0))


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('{"id": "a", "output": "x"}\n{"id": "b", "prediction": "y"}\n', "line 2 needs JSON with `id` and `output`"),
        ("Tom says hello.\nA room is booked.\n", "--prediction-column output needs JSONL predictions"),
    ],
)
def test_prediction_key_problems_are_refused(refs, tmp_path, capsys, content, fragment):
    preds = tmp_path / "p.txt"
    preds.write_text(content)
    assert main(["-q", "score", "--predictions", str(preds), "--references", str(refs), "--prediction-key", "output"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "ids, fragment",
    [
        (["a", "b", "a"], "line 3 repeats id a (first on line 1)"),
        (["a", "b", "zz"], "refs.jsonl does not, e.g. zz"),
        (["a"], "no prediction for 1 ids, e.g. b"),
    ],
)
def test_id_problems_name_the_id(refs, tmp_path, capsys, ids, fragment):
    preds = write_jsonl(tmp_path / "p.json", [{"id": i, "prediction": "Tom says hello."} for i in ids])
    assert main(["-q", "score", "--predictions", str(preds), "--references", str(refs)]) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert err.count("\n") == 1 and err.startswith("dialogtune: error:")


def test_plain_text_splits_on_newlines_only(refs, tmp_path):
    """U+2028 is a line break to str.splitlines, not to the file's author; CRLF and the final newline are fine."""
    preds = tmp_path / "p.txt"
    preds.write_bytes("Tom says\u2028hello.\r\nA room is booked.\r\n".encode())
    expected = (_f("Tom says hello.", "Tom says hello.") + _f("Someone books a room.", "A room is booked.")) / 2
    args = ["--predictions", str(preds), "--references", str(refs), "--protocol", "field:summary1"]
    assert _score(args, tmp_path / "s.json") == (0, pytest.approx(expected))


def test_line_count_mismatch_names_both_counts_and_suggests_ids(refs, tmp_path, capsys):
    preds = tmp_path / "p.txt"
    preds.write_text("only one line\n")
    assert main(["score", "--predictions", str(preds), "--references", str(refs)]) == 2
    err = capsys.readouterr().err
    assert "has 1 lines but" in err and "has 2 dialogues" in err and "JSONL" in err and "`id`" in err


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
    records = load_split(DataConfig(dataset=str(refs), loader="local"), "test", whole_file=True)
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


def test_real_dialogsum_predictions_read_alike_as_text_and_as_json(tmp_path):
    """summary1 of the real test set scored as plain text and as JSONL misnamed .json: the same scores."""
    from dialogtune.config import DataConfig
    from dialogtune.data import load_split
    from dialogtune.scoring import score_files

    test_file = shared_path("dialogsum", "dialogsum.test.jsonl")
    records = load_split(DataConfig(dataset=str(test_file), loader="local"), "test")
    summaries = [r["references"][r["reference_names"].index("summary1")] for r in records]
    as_text = tmp_path / "summary1.txt"
    as_text.write_text("".join(s + "\n" for s in summaries), encoding="utf-8")
    as_json = write_jsonl(tmp_path / "summary1.json", [{"id": r["id"], "prediction": s} for r, s in zip(records, summaries)][::-1])
    text_result = score_files(as_text, test_file, resamples=200)
    json_result = score_files(as_json, test_file, resamples=200)
    assert text_result["num_examples"] == json_result["num_examples"] == 500
    assert json_result["rouge"] == text_result["rouge"]  # same code path after reading, same machine: exact
    assert round(text_result["rouge"]["rouge1"]["score"], 2) == 68.92  # summary1 is one of the mean's references
