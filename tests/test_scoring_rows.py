"""`dialogtune score --protocol rows`: per-row predictions in the hub's one-row-per-reference layout."""

import json

import pytest
from rouge_score import rouge_scorer

from conftest import shared_path, write_jsonl
from dialogtune.cli import main
from dialogtune.scoring import score_files

# Two dialogues in the hub layout: one row per reference, ids <dialogue>_<k>.
D1, D2 = "#Person1#: Hi Tom.\n#Person2#: Hello.", "#Person1#: A room?\n#Person2#: Yes."
HUB = [
    {"id": "t_0_1", "dialogue": D1, "summary": "Tom says hello.", "topic": "greeting"},
    {"id": "t_0_2", "dialogue": D1, "summary": "They greet each other.", "topic": "greeting"},
    {"id": "t_0_3", "dialogue": D1, "summary": "Tom is greeted.", "topic": "greeting"},
    {"id": "t_1_1", "dialogue": D2, "summary": "Someone books a room.", "topic": "hotel"},
    {"id": "t_1_2", "dialogue": D2, "summary": "A room is booked.", "topic": "hotel"},
    {"id": "t_1_3", "dialogue": D2, "summary": "They talk about a room.", "topic": "hotel"},
]
PER_DIALOGUE = {"t_0": "Tom says hello to them.", "t_1": "A room is booked."}


def _rouge1(ref, pred):
    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True).score(ref, pred)["rouge1"].fmeasure * 100


def _err(args, capsys):
    """The one stderr line of a refused `dialogtune score ARGS` (exit 2)."""
    assert main(["-q", "score", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dialogtune: error:"), err
    return err


@pytest.fixture
def hub(tmp_path):
    return write_jsonl(tmp_path / "hub.jsonl", HUB)


def _hub_from_shared(tmp_path, n=None):
    """The real DialogSum test references rewritten in the hub layout: 3 rows per dialogue, ids test_K_j, and
    summary1 as a "system" prediction (one per dialogue, repeated on its rows)."""
    original = [json.loads(line) for line in shared_path("dialogsum", "dialogsum.test.jsonl").read_text(encoding="utf-8").splitlines()]
    original = original[:n]
    rows = [
        {"id": f"{r['fname']}_{k}", "dialogue": r["dialogue"], "reference": r[f"summary{k}"], "topic": r[f"topic{k}"],
         "prediction": r["summary1"]}
        for r in original for k in (1, 2, 3)
    ]
    return original, rows, write_jsonl(tmp_path / "hub_with_predictions.jsonl", rows)


def test_rows_equals_mean_exactly_on_real_dialogsum(tmp_path):
    """Per-dialogue predictions: the 1,500-row average and its CIs are `mean`'s, to the last bit (same operations)."""
    original, rows, both = _hub_from_shared(tmp_path)
    per_dialogue = write_jsonl(tmp_path / "summary1.jsonl", [{"id": r["fname"], "prediction": r["summary1"]} for r in original])
    rows_result = score_files(both, both, "rows", resamples=200, reference_column="reference")
    mean_result = score_files(per_dialogue, shared_path("dialogsum", "dialogsum.test.jsonl"), "mean", resamples=200)
    assert rows_result["protocol"] == "rows" and rows_result["num_rows"] == len(rows) == 1500
    assert rows_result["rows"]["dialogues"] == 500 and rows_result["rows"]["dialogues_with_differing_predictions"] == 0
    assert rows_result["rouge"] == mean_result["rouge"]  # scores and CI ends, exactly
    assert rows_result["bootstrap"]["unit"] == "dialogue"
    assert rows_result["gen_len"] == pytest.approx(mean_result["gen_len"], abs=1e-9)  # summed in another order
    assert rows_result["ref_len"] == pytest.approx(mean_result["ref_len"], abs=1e-9)
    assert rows_result["by_topic"] == mean_result["by_topic"] and rows_result["faithfulness"] == mean_result["faithfulness"]
    assert round(rows_result["rouge"]["rouge1"]["score"], 2) == 68.92  # summary1 against all three, as test_scoring finds


def test_three_input_forms_agree_on_real_dialogsum(tmp_path, capsys):
    """Row ids (JSONL), one text line per row, and the references file's own prediction column: the same figures."""
    _, rows, both = _hub_from_shared(tmp_path, n=60)
    references = write_jsonl(tmp_path / "hub.jsonl", [{k: r[k] for k in ("id", "dialogue", "reference", "topic")} for r in rows])
    by_id = write_jsonl(tmp_path / "by_id.jsonl", [{"id": r["id"], "prediction": r["prediction"]} for r in rows][::-1])
    lines = tmp_path / "generated_predictions.txt"
    lines.write_text("".join(r["prediction"] + "\n" for r in rows), encoding="utf-8")
    results = []
    for predictions, refs in ((both, both), (by_id, references), (lines, references)):
        out = tmp_path / "s.json"
        args = ["--predictions", str(predictions), "--references", str(refs), "--reference-column", "reference"]
        assert main(["-q", "score", *args, "--protocol", "rows", "--resamples", "100", "--output", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert [r["predictions_per"] for r in results] == ["row"] * 3
    assert results[0]["rouge"] == results[1]["rouge"] == results[2]["rouge"]
    assert results[0]["num_rows"] == 180 and results[0]["num_examples"] == 60
    assert "protocol rows, averaged over 180 (prediction, reference) rows of 60 dialogues" in capsys.readouterr().out


def test_rows_averages_rows_and_counts_dialogues_whose_predictions_differ(hub, tmp_path, capsys):
    preds = {row["id"]: PER_DIALOGUE[row["id"][:3]] for row in HUB}
    preds["t_1_3"] = "They talk about a room."  # dialogue t_1 now has two different predictions
    file = write_jsonl(tmp_path / "p.jsonl", [{"id": i, "prediction": p} for i, p in preds.items()])
    out = tmp_path / "s.json"
    assert main(["-q", "score", "--predictions", str(file), "--references", str(hub), "--protocol", "rows", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    expected = sum(_rouge1(row["summary"], preds[row["id"]]) for row in HUB) / len(HUB)
    assert result["rouge"]["rouge1"]["score"] == pytest.approx(expected, abs=1e-9)
    assert result["rows"]["dialogues_with_differing_predictions"] == 1 and result["rows"]["first_differing"] == "t_1"
    assert "1 of 2 dialogues have different predictions across their rows (e.g. t_1)" in capsys.readouterr().out
    # The output checks see each distinct prediction of a dialogue once: 1 + 2.
    assert result["degenerate"]["num_examples"] == 3


def test_unequal_row_counts_weigh_rows_and_resample_dialogues(tmp_path):
    rows = HUB[:5]  # t_1 keeps two rows: the row average is no longer the average of dialogue means
    preds = [PER_DIALOGUE[row["id"][:3]] for row in rows]
    refs = write_jsonl(tmp_path / "hub.jsonl", rows)
    text = tmp_path / "p.txt"
    text.write_text("".join(p + "\n" for p in preds))
    result = score_files(text, refs, "rows", resamples=300)
    scores = [_rouge1(row["summary"], p) for row, p in zip(rows, preds)]
    assert result["rouge"]["rouge1"]["score"] == pytest.approx(sum(scores) / 5, abs=1e-9)
    assert result["rouge"]["rouge1"]["score"] != pytest.approx((sum(scores[:3]) / 3 + sum(scores[3:]) / 2) / 2)
    # Each dialogue's rows twice: the same dialogues, so the same cluster-bootstrap CI (resampling rows would narrow it).
    doubled = write_jsonl(tmp_path / "doubled.jsonl", [r for r in rows for _ in range(2)])
    text.write_text("".join(p + "\n" for p in preds for _ in range(2)))
    twice = score_files(text, doubled, "rows", resamples=300)
    for metric, entry in result["rouge"].items():
        assert twice["rouge"][metric] == pytest.approx(entry, abs=1e-9)


def test_rows_with_per_dialogue_predictions_and_held_out_field(hub, tmp_path):
    """Per-dialogue predictions (and --prediction-field) are spread over each dialogue's rows: rows == mean."""
    file = write_jsonl(tmp_path / "p.jsonl", [{"id": i, "prediction": p} for i, p in PER_DIALOGUE.items()])
    rows, mean = score_files(file, hub, "rows", resamples=50), score_files(file, hub, "mean", resamples=50)
    assert rows["rouge"] == mean["rouge"] and rows["predictions_per"] == "dialogue"
    held_rows = score_files(None, hub, "rows", resamples=50, prediction_field="summary1")
    held_mean = score_files(None, hub, "mean", resamples=50, prediction_field="summary1")
    assert held_rows["rouge"] == held_mean["rouge"] and held_rows["num_rows"] == 4


def test_column_options(tmp_path):
    """--reference-column, --dialogue-column, --id-column and --prediction-column on one file with its own names."""
    renamed = [{"key": r["id"], "text": r["dialogue"], "gold": r["summary"], "output": PER_DIALOGUE[r["id"][:3]]} for r in HUB]
    both = write_jsonl(tmp_path / "renamed.jsonl", renamed)
    out = tmp_path / "s.json"
    args = ["--predictions", str(both), "--references", str(both), "--protocol", "rows", "--output", str(out),
            "--reference-column", "gold", "--dialogue-column", "text", "--id-column", "key", "--prediction-column", "output"]
    assert main(["-q", "score", *args]) == 0
    result = json.loads(out.read_text())
    assert result["num_rows"] == 6 and result["num_examples"] == 2
    expected = sum(_rouge1(r["gold"], r["output"]) for r in renamed) / 6
    assert result["rouge"]["rouge1"]["score"] == pytest.approx(expected, abs=1e-9)
    # --id-column also names the id field of separate JSONL predictions (here in reverse order, so ids must align them).
    separate = write_jsonl(tmp_path / "p.jsonl", [{"key": r["key"], "output": r["output"]} for r in renamed][::-1])
    args[1] = str(separate)
    assert main(["-q", "score", *args]) == 0
    assert json.loads(out.read_text())["rouge"] == result["rouge"]


@pytest.mark.parametrize(
    "form, fragments",
    [
        ("text", ["p.txt has 6 lines, one per row", "groups its 6 rows into 2 dialogues", "row t_0_2 is one of the 3 rows of dialogue t_0",
                  "pass --protocol rows"]),
        ("ids", ["p.jsonl keys its 6 predictions by row id (e.g. t_0_1)", "groups its 6 rows into 2 dialogues", "pass --protocol rows"]),
        ("both", ["both.jsonl holds one prediction per row", "row t_0_2 is one of the 3 rows of dialogue t_0", "pass --protocol rows"]),
    ],
)
def test_per_row_predictions_without_rows_are_refused(hub, tmp_path, capsys, form, fragments):
    if form == "text":
        predictions = tmp_path / "p.txt"
        predictions.write_text("".join(PER_DIALOGUE[r["id"][:3]] + "\n" for r in HUB))
        references = hub
    elif form == "ids":
        predictions = write_jsonl(tmp_path / "p.jsonl", [{"id": r["id"], "prediction": "x"} for r in HUB])
        references = hub
    else:
        predictions = references = write_jsonl(tmp_path / "both.jsonl", [{**r, "prediction": "x"} for r in HUB])
    err = _err(["--predictions", str(predictions), "--references", str(references)], capsys)
    assert all(fragment in err for fragment in fragments), err


def _both(tmp_path, rows):
    return str(write_jsonl(tmp_path / "both.jsonl", rows))


@pytest.mark.parametrize(
    "rows, extra, fragments",
    [
        # the file: `reference` and `prediction`, no flag
        ([{"id": r["id"], "dialogue": r["dialogue"], "reference": r["summary"], "prediction": "x"} for r in HUB], [],
         ["line 1 has no `summary` column (columns: id, dialogue, reference, prediction)", "--reference-column"]),
        (HUB, [], ["line 1 has no `prediction` column (columns: id, dialogue, summary, topic)", "--prediction-column"]),
        (HUB, ["--prediction-column", "summary"], ["`summary` would be both the prediction and the reference"]),
        ([{**r, "prediction": "x"} for r in HUB], ["--id-column", "key"], ["line 1 has no `key` column (columns: id, dialogue, summary, topic, prediction)"]),
        ([{**r, "prediction": "x"} for r in HUB], ["--dialogue-column", "text"], ["has no `text` column (columns: id, dialogue,", "--dialogue-column"]),
    ],
)
def test_column_problems_are_refused_in_one_line(tmp_path, capsys, rows, extra, fragments):
    path = _both(tmp_path, rows)
    err = _err(["--predictions", path, "--references", path, "--protocol", "rows", *extra], capsys)
    assert all(fragment in err for fragment in fragments), err


def test_other_mismatches_name_counts_and_the_first_id(hub, tmp_path, capsys):
    short = tmp_path / "p.txt"
    short.write_text("one\ntwo\nthree\nfour\nfive\n")
    err = _err(["--predictions", str(short), "--references", str(hub), "--protocol", "rows"], capsys)
    assert "p.txt has 5 lines but" in err and "has 2 dialogues in 6 rows (the first row without a line is t_1_3)" in err
    partial = write_jsonl(tmp_path / "p.jsonl", [{"id": r["id"], "prediction": "x"} for r in HUB[:4]])
    err = _err(["--predictions", str(partial), "--references", str(hub), "--protocol", "rows"], capsys)
    assert "no prediction for 2 of 6 rows" in err and "e.g. t_1_2" in err
    original = write_jsonl(tmp_path / "orig.jsonl", [{"fname": "t_0", "dialogue": D1, "summary1": "a", "summary2": "b"}])
    hub_ids = write_jsonl(tmp_path / "h.jsonl", [{"id": "t_0_1", "prediction": "x"}, {"id": "t_0_2", "prediction": "x"}])
    err = _err(["--predictions", str(hub_ids), "--references", str(original), "--protocol", "rows"], capsys)
    assert "has 2 ids that" in err and "t_0_1 looks like a row id of the hub layout" in err
    err = _err(["--predictions", str(partial), "--references", str(hub), "--protocol", "best"], capsys)
    assert "'best'" in err and "'rows'" in err
    err = _err(["--predictions", str(partial), "--references", str(hub), "--data.summary_column", "gold"], capsys)
    assert "score does not take --data.summary_column; use --reference-column" in err
