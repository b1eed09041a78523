"""`dialogtune run` end to end on a tiny model, and the run-folder guarantees it relies on."""

import json

import pytest
import yaml

from conftest import FAST_TRAINING
from dialogtune import evaluation, inference
from dialogtune.cli import main
from dialogtune.metrics import METRICS
from dialogtune.modeling import fingerprint, load_base


@pytest.fixture(scope="module")
def finished_run(tiny_model, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    recipe = out / "tiny.yaml"
    tree = {"model": str(tiny_model), "data": {"dataset": str(small_data)}, "output": str(out / "runs")}
    recipe.write_text("# dialogtune run tiny.yaml\n" + yaml.safe_dump(tree))
    flags = [f"--{k}={v}" for k, v in FAST_TRAINING.items()]
    code = main(["-q", "run", str(recipe), "--lora.r", "4", "--report.num_examples", "3"] + flags)
    assert code == 0
    return out / "runs"


def test_report_json_follows_the_contract(finished_run):
    report = json.loads((finished_run / "report.json").read_text())
    assert [r["method"] for r in report["runs"]] == ["original", "full", "lora"]
    for run in report["runs"]:
        for key in ("name", "method", "rouge", "num_examples", "trainable_params", "total_params", "size_bytes", "train_seconds", "train_tokens_per_second"):
            assert key in run, key
        assert set(run["rouge"]) == set(METRICS)
        assert all(0 <= v <= 100 for v in run["rouge"].values())
        assert run["num_examples"] == 8
    original, full, lora = report["runs"]
    assert original["trainable_params"] == 0 and original["train_seconds"] == 0
    assert full["trainable_params"] == full["total_params"] > lora["trainable_params"] > 0
    assert 0 < lora["size_bytes"] < full["size_bytes"]
    assert full["train_tokens_per_second"] > 0 and lora["train_tokens_per_second"] > 0
    assert len(report["examples"]) == 3
    example = report["examples"][0]
    assert example["dialogue"] and example["human"] and set(example["predictions"]) == {"original", "full", "lora"}
    names = {(c["a"], c["b"]) for c in report["comparisons"]}
    assert names == {("full", "original"), ("lora", "original"), ("lora", "full")}


def test_original_numbers_come_from_an_untouched_model(finished_run, tiny_model):
    pristine = fingerprint(load_base(str(tiny_model)))
    original = json.loads((finished_run / "original" / "metrics.json").read_text())
    full = json.loads((finished_run / "full" / "metrics.json").read_text())
    assert original["weights_fingerprint"] == pristine
    assert full["weights_fingerprint"] != pristine


def test_report_files_are_written_and_html_is_self_contained(finished_run):
    html = (finished_run / "report.html").read_text()
    assert "<svg" in html and "<script" not in html and "<link" not in html and "src=" not in html
    markdown = (finished_run / "report.md").read_text()
    assert "| original | original |" in markdown and "## Examples" in markdown


def test_predictions_file_has_ids_predictions_and_references(finished_run):
    rows = [json.loads(line) for line in (finished_run / "lora" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all({"id", "prediction", "references"} <= set(r) for r in rows)


def test_evaluating_a_run_uses_the_prompt_it_was_trained_with(finished_run, monkeypatch):
    prompt_file = finished_run / "lora" / "prompt.json"
    prompt_file.write_text(json.dumps({"template": "DIALOG>> {dialogue} <<SUM"}))
    seen = []

    def fake_generate(model, tokenizer, prompts, *args, **kwargs):
        seen.extend(prompts)
        return ["a summary"] * len(prompts)

    monkeypatch.setattr(inference, "generate", fake_generate)
    evaluation.evaluate_run(finished_run / "lora", progress=False)
    assert seen and all(p.startswith("DIALOG>> ") and p.endswith(" <<SUM") for p in seen)


def test_compare_command_rebuilds_the_report(finished_run, tmp_path, capsys):
    code = main(["-q", "compare", str(finished_run / "original"), str(finished_run / "full"), "--output", str(tmp_path)])
    assert code == 0
    assert (tmp_path / "report.json").is_file()
    assert "report.html" in capsys.readouterr().out


def test_summarize_with_a_run_folder_and_stdin(finished_run, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("#Person1#: Hello.\n#Person2#: Hi there."))
    assert main(["-q", "summarize", "--run", str(finished_run / "lora")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # one dialogue in, one summary line out


def test_summarize_a_data_file_prints_one_json_line_per_dialogue(finished_run, small_data, capsys):
    assert main(["-q", "summarize", "--run", str(finished_run / "full"), "--file", str(small_data / "test.jsonl")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 8 and all(set(r) == {"id", "summary"} for r in rows)


def test_rerunning_a_finished_run_keeps_it_and_other_settings_are_refused(finished_run, capsys):
    config = finished_run.parent / "tiny.yaml"
    flags = [f"--{k}={v}" for k, v in FAST_TRAINING.items()]
    before = (finished_run / "full" / "metrics.json").stat().st_mtime_ns
    assert main(["-q", "run", str(config), "--lora.r", "4", "--report.num_examples", "3"] + flags) == 0
    assert (finished_run / "full" / "metrics.json").stat().st_mtime_ns == before
    capsys.readouterr()
    assert main(["-q", "run", str(config), "--lora.r", "8", "--report.num_examples", "3"] + flags) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_original_few_shot_prompts_carry_examples_from_the_train_split(tiny_model, small_data, tmp_path, monkeypatch):
    seen = []

    def fake_generate(model, tokenizer, prompts, *args, **kwargs):
        seen.extend(prompts)
        return ["a summary"] * len(prompts)

    monkeypatch.setattr(inference, "generate", fake_generate)
    flags = [f"--{k}={v}" for k, v in FAST_TRAINING.items()]
    out = tmp_path / "fewshot"
    args = ["-q", "evaluate", "--method", "original", "--model", str(tiny_model), "--dataset", str(small_data), "--output", str(out), "--prompt.shots", "2"]
    assert main(args + flags) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["shots"] == 2 and metrics["shots_used"] + metrics["shots_dropped"] == 2 * 8
    assert metrics["shots_used"] > 0 and sum(p.count("Summary: ") for p in seen) == len(seen) + metrics["shots_used"]
    assert json.loads((out / "metadata.json").read_text())["method"] == "original"


def test_html_charts_are_well_formed_svg_with_ci_error_bars(finished_run):
    import re
    import xml.etree.ElementTree as ET

    html = (finished_run / "report.html").read_text()
    charts = [ET.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", html, flags=re.S)]
    assert len(charts) == 2, "a ROUGE bar chart and a length histogram"
    ns = "{http://www.w3.org/2000/svg}"
    bars = [r for r in charts[0].iter(f"{ns}rect") if r.find(f"{ns}title") is not None]
    assert len(bars) == 3 * 4, "one bar per run and metric"
    assert len(list(charts[0].iter(f"{ns}line"))) == 3 * 4 + 1, "one CI error bar per bar, plus the axis"
    assert len(list(charts[1].iter(f"{ns}polyline"))) == 3, "one length curve per run"


def test_changed_generation_settings_start_an_interrupted_evaluation_afresh(finished_run, tmp_path, monkeypatch):
    import dataclasses
    import shutil

    folder = shutil.copytree(finished_run / "lora", tmp_path / "lora")
    monkeypatch.setattr(evaluation.Partial, "remove", lambda self: None)  # keep every saved prediction
    summarizer = inference.Summarizer.from_run(folder)

    def resumed(summarizer):
        evaluation.evaluate_run(folder, progress=False, summarizer=summarizer)
        return json.loads((folder / "metadata.json").read_text())["resumed_predictions"]

    resumed(summarizer)
    assert resumed(summarizer) == 8  # the same settings continue from the saved predictions...
    generation = {**summarizer.settings.generation, "max_new_tokens": 5}
    summarizer.settings = dataclasses.replace(summarizer.settings, generation=generation)
    assert resumed(summarizer) == 0  # ...other ones start afresh
