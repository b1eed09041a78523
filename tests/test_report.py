"""The comparison report: analysis reads and scores each run once; renderers only render its data."""

from __future__ import annotations

import builtins
import copy
import io
import json
from pathlib import Path

import pytest

import dialogtune.report.analysis as analysis
from dialogtune.cli import main
from dialogtune.configio import load_config
from dialogtune.errors import DialogtuneError
from dialogtune.metrics import METRICS
from dialogtune.report import analyse, build_report, rouge_table, to_html, to_markdown, write_report
from dialogtune.runs import RunFolder

DIALOGUES = {
    "d1": "#Person1#: Shall we book the hotel room for Friday night?\n#Person2#: Yes, a double room please.",
    "d2": "#Person1#: Did you finish the report for the meeting?\n#Person2#: Not yet, I need one more day.",
    "d3": "#Person1#: Let us go to the park after lunch today.\n#Person2#: Good idea, the weather is nice.",
}
REFERENCES = {
    "d1": ["They book a double room for Friday.", "A hotel room is booked."],
    "d2": ["The report needs one more day.", "#Person2# has not finished the report."],
    "d3": ["They will go to the park after lunch.", "They plan a walk in the park."],
}
OUTPUTS = {
    "original": {"d1": "book the hotel room", "d2": "the report", "d3": "go to the park"},
    "full": {"d1": "They book a double room for Friday night.", "d2": "The report needs one more day.", "d3": "They go to the park."},
    # "Monday" and "Globex" are in no dialogue: unsupported facts the faithfulness section must show.
    "lora": {"d1": "They book a room for Monday.", "d2": "#Person2# needs one more day for the Globex report.", "d3": "They will go to the park after lunch."},
}
TOPICS = {"d1": "hotel", "d2": "daily", "d3": "daily"}


def _config(folder: Path, method: str, **overrides):
    return load_config(None, {"model": "builtin:tiny-t5", "method": method, "output": str(folder), **overrides})


class FakeRun:
    """Just what the report may rely on from runs.read_run; counts how often predictions are read."""

    def __init__(self, folder: Path, method: str) -> None:
        self.folder, self.name, self.method, self.config = folder, folder.name, method, _config(folder, method)
        self.topics = dict(TOPICS)
        trainable = {"original": 0, "full": 1000, "lora": 10}[method]
        self.metadata = {"model": "tiny", "total_params": 1000, "trainable_params": trainable}
        self.metrics = {
            "protocol": "mean",
            "split": "test",
            "num_examples": 3,
            "gen_len": 4.0,
            "rouge": {m: {"score": 30.0, "ci_low": 20.0, "ci_high": 40.0} for m in METRICS},
        }
        self.reads = 0

    def predictions(self) -> list[dict]:
        self.reads += 1
        return [
            {
                "id": ex_id,
                "dialogue": DIALOGUES[ex_id],
                "topic": self.topics[ex_id],
                "references": REFERENCES[ex_id],
                "reference_names": ["summary1", "summary2"],
                "prediction": text,
            }
            for ex_id, text in OUTPUTS[self.method].items()
        ]


@pytest.fixture
def fake_runs(tmp_path, monkeypatch):
    """Three run folders that exist but hold no files: any read that bypasses read_run fails."""
    made: dict[str, FakeRun] = {}
    for method in OUTPUTS:
        (tmp_path / method).mkdir()
        made[method] = FakeRun(tmp_path / method, method)
    monkeypatch.setattr(analysis.runs, "read_run", lambda folder: made[Path(folder).name])
    return made


def test_write_report_reads_and_scores_each_run_once(fake_runs, tmp_path, monkeypatch):
    scored = []
    real_scores = analysis.per_example_scores
    monkeypatch.setattr(analysis, "per_example_scores", lambda *a, **k: scored.append(1) or real_scores(*a, **k))
    report = write_report([run.folder for run in fake_runs.values()], tmp_path / "out", num_examples=2, seed=0)
    assert [run.reads for run in fake_runs.values()] == [1, 1, 1]
    assert len(scored) == 3
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report
    assert (tmp_path / "out" / "report.md").read_text() == to_markdown(report) + "\n"
    assert (tmp_path / "out" / "report.html").is_file()


def test_analysis_carries_the_histogram_data_outside_report_json(fake_runs):
    result = analyse([run.folder for run in fake_runs.values()], num_examples=3)
    assert set(result.report) == {"runs", "comparisons", "not_compared", "human_faithfulness", "examples"}
    assert result.generated_words == {
        name: [len(text.split()) for text in outputs.values()] for name, outputs in OUTPUTS.items()
    }
    assert {(c["a"], c["b"]) for c in result.report["comparisons"]} == {("full", "original"), ("lora", "original"), ("lora", "full")}
    assert [ex["id"] for ex in result.report["examples"]] == ["d1", "d2", "d3"]
    assert build_report([run.folder for run in fake_runs.values()], num_examples=3) == result.report


def test_renderers_are_pure_functions_of_the_report_data(fake_runs, monkeypatch):
    result = analyse([run.folder for run in fake_runs.values()], num_examples=2)
    report, words = copy.deepcopy(result.report), copy.deepcopy(result.generated_words)

    def no_files(*args, **kwargs):
        raise AssertionError(f"a renderer opened a file: {args[:1]}")

    monkeypatch.setattr(builtins, "open", no_files)
    monkeypatch.setattr(io, "open", no_files)
    monkeypatch.setattr(analysis.runs, "read_run", no_files)
    markdown, page = to_markdown(result.report), to_html(result.report, result.generated_words)
    assert (to_markdown(result.report), to_html(result.report, result.generated_words)) == (markdown, page)
    assert result.report == report and result.generated_words == words  # inputs untouched
    assert rouge_table(result.report) in markdown
    assert page.count("<polyline") == len(OUTPUTS)  # one histogram line per run
    assert "lora vs full: rouge1" in page and "**" not in page
    assert "- **lora vs full**: rouge1" in markdown


def test_an_unevaluated_run_is_refused(fake_runs):
    fake_runs["lora"].metrics = None
    with pytest.raises(DialogtuneError, match="has not been evaluated"):
        build_report([run.folder for run in fake_runs.values()])


def _real_run(folder: Path, method: str, protocol: str, outputs: dict[str, str]) -> Path:
    """A run folder on disk, evaluated with `protocol`, as `evaluate` would leave it."""
    config = _config(folder, method, **{"evaluation.protocol": protocol})
    run = RunFolder.create(folder, config)
    rows = [
        {"id": i, "prediction": text, "references": REFERENCES[i], "reference_names": ["summary1", "summary2"],
         "topic": TOPICS[i], "dialogue": DIALOGUES[i]}
        for i, text in outputs.items()
    ]
    rouge = {m: {"score": 30.0, "ci_low": 20.0, "ci_high": 40.0} for m in METRICS}
    run.write_results("test", rows, {"split": "test", "protocol": protocol, "num_examples": len(rows), "dataset": "d", "rouge": rouge})
    return folder


def test_identical_predictions_scored_with_max_and_mean_are_not_paired(tmp_path, capsys):
    # The measured bug: the same predictions, one run scored with `max` and one with `mean`, came out
    # as a significant ROUGE-1 difference. Runs scored differently are listed with the reason instead.
    full = _real_run(tmp_path / "full", "full", "max", OUTPUTS["full"])
    lora = _real_run(tmp_path / "lora", "lora", "mean", OUTPUTS["full"])
    report = analyse([full, lora])
    assert report.report["comparisons"] == []
    assert report.report["not_compared"] == [{"a": "lora", "b": "full", "reason": "protocol mean vs max"}]
    markdown, page = to_markdown(report.report), to_html(report.report, report.generated_words)
    assert "- lora vs full: not compared: protocol mean vs max" in markdown and "**lora vs full**" not in markdown
    assert "lora vs full: not compared: protocol mean vs max" in page
    # The header says how each run was scored where they differ.
    assert "- **full**: ROUGE protocol `max`" in markdown and "- **lora**: ROUGE protocol `mean`" in markdown
    assert "<li>full: ROUGE protocol max</li>" in page

    out = tmp_path / "report"
    assert main(["-q", "compare", str(full), str(lora), "--output", str(out)]) == 2
    assert "protocol mean vs max" in capsys.readouterr().err and not (out / "report.json").exists()
    assert main(["-q", "compare", str(full), str(lora), "--output", str(out), "--allow-mixed"]) == 0
    assert json.loads((out / "report.json").read_text())["not_compared"][0]["reason"] == "protocol mean vs max"


def test_runs_on_other_dialogues_are_not_paired_and_say_why(fake_runs):
    fake_runs["lora"].metrics["split"] = "validation"
    report = build_report([run.folder for run in fake_runs.values()])
    assert {(c["a"], c["b"]) for c in report["comparisons"]} == {("full", "original")}
    reasons = {(n["a"], n["b"]): n["reason"] for n in report["not_compared"]}
    assert reasons == {("lora", "original"): "split validation vs test", ("lora", "full"): "split validation vs test"}


def test_topic_table_is_matched_by_topic_name_not_row_position(fake_runs):
    # original: daily (2) before hotel (1); full: hotel (2) before daily (1).
    fake_runs["full"].topics = {"d1": "hotel", "d2": "hotel", "d3": "daily"}
    report = build_report([fake_runs["original"].folder, fake_runs["full"].folder], min_topic_count=1)
    full = {row["topic"]: row for row in report["runs"][1]["by_topic"]}
    line = next(line for line in to_markdown(report).splitlines() if line.startswith("| daily |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2].startswith(f"{full['daily']['score']:.2f} [") and cells[3] == "2 / 1"


def test_topic_table_keeps_topics_with_enough_dialogues(fake_runs):
    folders = [run.folder for run in fake_runs.values()]
    assert all(r["by_topic"] == [] for r in build_report(folders)["runs"])  # default 10: none of 3 dialogues
    report = build_report(folders, min_topic_count=2)
    assert all([row["topic"] for row in r["by_topic"]] == ["daily"] for r in report["runs"])
    assert all(row["ci"][0] <= row["score"] <= row["ci"][1] for r in report["runs"] for row in r["by_topic"])
    assert "| hotel |" not in to_markdown(report) and "| daily |" in to_markdown(report)


def test_length_buckets_come_from_the_dialogues_so_short_ones_fill_them(fake_runs):
    report = build_report([run.folder for run in fake_runs.values()])
    for run in report["runs"]:
        # The dialogues are 16-17 words: fixed edges at 100+ words put all three in one of five buckets.
        assert len(run["by_length"]) > 1 and all(row["count"] >= 1 for row in run["by_length"])
        assert sum(row["count"] for row in run["by_length"]) == 3


def test_paired_tests_use_the_runs_bootstrap_resamples(fake_runs, monkeypatch):
    seen = []
    real = analysis.paired_test
    monkeypatch.setattr(analysis, "paired_test", lambda a, b, n_resamples=1000, seed=0: seen.append(n_resamples) or real(a, b, n_resamples, seed))
    fake_runs["original"].config = _config(fake_runs["original"].folder, "original", **{"evaluation.bootstrap_resamples": 200})
    fake_runs["full"].config = _config(fake_runs["full"].folder, "full", **{"evaluation.bootstrap_resamples": 300})
    fake_runs["lora"].config = _config(fake_runs["lora"].folder, "lora", **{"evaluation.bootstrap_resamples": 300})
    report = build_report([run.folder for run in fake_runs.values()])
    assert seen == [200] * len(METRICS) * 2 + [300] * len(METRICS)
    notes = {(c["a"], c["b"]): c.get("note") for c in report["comparisons"]}
    assert notes[("lora", "full")] is None and notes[("full", "original")] == "evaluation.bootstrap_resamples differ (300 vs 200); used 200"
    assert "used 200" in to_markdown(report)


def test_faithfulness_is_reported_with_the_human_floor_and_marked_spans(fake_runs):
    result = analyse([run.folder for run in fake_runs.values()], num_examples=3)
    report = result.report
    lora = next(r for r in report["runs"] if r["name"] == "lora")["faithfulness"]
    assert lora["unsupported_facts"] == 2 and lora["rate"] == pytest.approx(2 / 3, abs=1e-4) and "per_example" not in lora
    assert report["human_faithfulness"]["unsupported_facts"] == 0 and report["human_faithfulness"]["n"] == 3
    assert all("faithfulness" in c and "p_value" in c["faithfulness"] for c in report["comparisons"])
    markdown, page = to_markdown(report), to_html(report, result.generated_words)
    section = markdown.split("## Faithfulness")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| run")]
    assert rows[0].startswith("| human (reference) |") and rows[3].startswith("| lora | ")
    assert "- **lora vs full**: unsupported per summary +0.667" in section
    assert "They book a room for **[Monday?]**." in markdown and "the **[Globex?]** report" in markdown
    assert '<mark class="unsupported" title="not in the dialogue">Monday</mark>' in page and "<h2>Faithfulness</h2>" in page
    assert "human (reference)" in page and "lora vs full: unsupported per summary" in page
