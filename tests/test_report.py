"""The comparison report: analysis reads and scores each run once; renderers only render its data."""

from __future__ import annotations

import builtins
import copy
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import dialogtune.report.analysis as analysis
from dialogtune.errors import DialogtuneError
from dialogtune.metrics import METRICS
from dialogtune.report import analyse, build_report, rouge_table, to_html, to_markdown, write_report

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
    "lora": {"d1": "They book a room.", "d2": "#Person2# needs one more day for the report.", "d3": "They will go to the park after lunch."},
}


class FakeRun:
    """Just what the report may rely on from runs.read_run; counts how often predictions are read."""

    def __init__(self, folder: Path, method: str) -> None:
        self.folder, self.name, self.method, self.config = folder, folder.name, method, None
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
                "topic": "hotel" if ex_id == "d1" else "daily",
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
    assert set(result.report) == {"runs", "comparisons", "examples"}
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
