"""`dialogtune forgetting`: six models x every task of a suite, adapter off = original (checked, and a broken base
caught), the change numbers against a hand computation, and bad suites refused in one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from conftest import FAST_TRAINING, one_error
from dialogtune import forgetting, tasks
from dialogtune.cli import main
from dialogtune.configio import load_config
from dialogtune.errors import DialogtuneError
from dialogtune.forgetting import MODELS, analyse, check_adapter_off, run_forgetting, suite_config
from dialogtune.report.forgetting import change_chart, findings
from dialogtune.runs import read_run
from dialogtune.significance import paired_test

SUITE = ["summary", {"name": "topic", "weight": 0.2}, {"name": "slot_qa", "weight": 0.2}]
TASKS = ("summary", "topic", "slot_qa")
FOLDERS = ("original", "full-summary", "lora-summary", "full-multitask", "lora-multitask")


def _recipe(path, tasks_: list | None, **extra) -> str:
    tree = {"tasks": tasks_, **extra} if tasks_ is not None else dict(extra)
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return str(path)


def _flags(tiny_model, small_data) -> list[str]:
    settings = {**FAST_TRAINING, "training.max_steps": 4, "data.max_eval_samples": 8, "evaluation.batch_size": 8,
                "lora.r": 4, "mixing.examples": 96, "data.max_train_samples": 48}
    return ["--model", str(tiny_model), "--dataset", str(small_data),
            *[x for key, value in settings.items() for x in (f"--{key}", str(value))]]


@pytest.fixture(scope="module")
def study(tiny_model, small_data, tmp_path_factory):
    """The forgetting command run once on the tiny fixture model: 4 steps per model, 8 items per task."""
    folder = tmp_path_factory.mktemp("forgetting")
    out = folder / "out"
    argv = ["-q", "forgetting", _recipe(folder / "suite.yaml", SUITE), "--output", str(out), *_flags(tiny_model, small_data)]
    assert main(argv) == 0
    return out, argv


def test_report_holds_every_model_and_task_and_the_runs_are_normal_run_folders(study, capsys):
    out, _ = study
    report = json.loads((out / "forgetting.json").read_text())
    assert [m["key"] for m in report["models"]] == [m.key for m in MODELS]
    assert [s["task"] for s in report["suite"]] == list(TASKS)
    assert [s["metric"] for s in report["suite"]] == ["rouge1", "exact_match", "exact_match"]
    for key, by_task in report["results"].items():
        assert set(by_task) == set(TASKS)
        for cell in by_task.values():
            assert cell["n"] == 8 and cell["ci_low"] <= cell["score"] <= cell["ci_high"]
            assert ("change" in cell) == (key != "original")
    markdown = (out / "forgetting.md").read_text()
    page = (out / "forgetting.html").read_text()
    for m in MODELS:
        assert f"| {m.label} |" in markdown and m.label in page
    assert page.count("<rect") >= 5 * len(TASKS) and "change from the original" in page
    for name in FOLDERS:
        run = read_run(out / name)
        assert run.finished and [t.name for t in run.config.tasks] == list(TASKS)
    # Summary only: the retained tasks at weight 0 (scored, never trained); multi-task: at the suite's weight.
    assert read_run(out / "full-summary").metadata["mixing"]["realised"] == {"summary": 1.0}
    assert set(read_run(out / "lora-multitask").metadata["mixing"]["realised"]) == set(TASKS)
    assert (out / "lora-summary" / "adapter_model.safetensors").is_file() and not (out / "lora-summary" / "model.safetensors").exists()
    assert read_run(out / "lora-summary").read_metrics(task="topic")["evaluated_with"] == "one base, adapters unmerged"


def test_the_numbers_are_paired_tests_on_the_folders_per_example_scores(study):
    out, _ = study
    report = json.loads((out / "forgetting.json").read_text())
    b = report["bootstrap"]
    for task, primary in zip(TASKS, ("rouge1", "exact_match", "exact_match"), strict=True):
        original = [row["scores"][primary] for row in read_run(out / "original").predictions(task=task)]
        full = [row["scores"][primary] for row in read_run(out / "full-summary").predictions(task=task)]
        expected = paired_test(np.array(full), np.array(original), b["n_resamples"], b["seed"])
        assert report["results"]["full_summary"][task]["change"] == pytest.approx(expected)
        assert report["results"]["full_summary"][task]["score"] == pytest.approx(np.mean(full))


def test_adapter_off_equals_the_original_and_a_rerun_keeps_every_run(study, capsys):
    out, argv = study
    report = json.loads((out / "forgetting.json").read_text())
    check = report["adapter_off_check"]
    assert check["equal"] and check["items"] == {t: 8 for t in TASKS}
    off, original = report["results"]["lora_summary_off"], report["results"]["original"]
    for task in TASKS:
        assert off[task]["score"] == original[task]["score"]
        assert off[task]["change"]["diff"] == 0 and off[task]["change"]["p_value"] == 1.0
    trained = {name: read_run(out / name).metadata.get("trained") for name in FOLDERS}
    capsys.readouterr()
    assert main(argv) == 0  # a rerun: every run kept, adapter off checked again
    printed = capsys.readouterr().out
    assert "| same LoRA, adapter off | +0.0 [+0.0, +0.0], p=1.000 |" in printed and "forgetting.html" in printed
    again = json.loads((out / "forgetting.json").read_text())
    assert all(m["kept"] for m in again["models"] if m["folder"])
    assert {name: read_run(out / name).metadata.get("trained") for name in FOLDERS} == trained
    assert again["results"] == report["results"]


def test_a_base_changed_under_the_adapters_is_caught(study, monkeypatch, capsys):
    """The trap the guide warns of: a base trained in place is no longer the original. Simulated by changing a
    weight of the base the adapters are loaded on; the check must fail, in one line, and name an item."""
    import torch

    out, argv = study
    real = forgetting.Summarizer.from_adapters

    def tampered(*args, **kwargs):
        summarizer = real(*args, **kwargs)
        with torch.no_grad():
            summarizer.model.get_base_model().lm_head.weight.mul_(-1.0)
        return summarizer

    monkeypatch.setattr(forgetting.Summarizer, "from_adapters", tampered)
    one_error(capsys, argv, "with the LoRA adapter off", "predictions differ from the original model's", "(first: id ")


def test_check_adapter_off_compares_item_by_item():
    original = {"topic": {"ids": ["a", "b"], "predictions": ["hotel booking", "shopping"]}}
    assert check_adapter_off(original, original) == {"equal": True, "items": {"topic": 2}, "total": 2}
    with pytest.raises(DialogtuneError, match=r"1 of 2 `topic` predictions differ .*id b: 'shop'"):
        check_adapter_off(original, {"topic": {"ids": ["a", "b"], "predictions": ["hotel booking", "shop"]}})
    with pytest.raises(DialogtuneError, match="different items"):
        check_adapter_off(original, {"topic": {"ids": ["b", "a"], "predictions": ["shopping", "hotel booking"]}})


# ---------------------------------------------------------------- the numbers, by hand


def _result(primary: str, scores: list[float]) -> dict:
    mean = float(np.mean(scores))
    return {"metrics": {"primary": primary, "scores": {primary: {"score": mean, "ci_low": mean - 1, "ci_high": mean + 1}}},
            "ids": [f"test_{i}" for i in range(len(scores))], "scores": scores}


def test_changes_cis_and_paired_tests_match_a_hand_computation():
    """Ten items. Exact sign-flip p-values count the sign patterns at least as extreme as the observed one, and the
    bootstrap CI ends are quantiles of K ~ Binomial(10, share of items that changed), so both are known exactly."""
    n = 10
    scores = {  # (summary rouge1, topic exact match) per model, one value per item
        "original": ([10.0] * n, [100.0] * n),
        "full_summary": ([60.0] * n, [0.0] * 8 + [100.0] * 2),  # summary +50 everywhere; topic lost on 8 of 10
        "lora_summary": ([40.0] * n, [100.0] * n),
        "lora_summary_off": ([10.0] * n, [100.0] * n),
        "full_multitask": ([50.0] * n, [0.0] * 2 + [100.0] * 8),
        "lora_multitask": ([40.0] * n, [0.0] * 8 + [100.0] * 2),  # topic lost exactly as full on summaries lost it
    }
    results = {key: {"summary": _result("rouge1", s), "topic": _result("exact_match", t)}
               for key, (s, t) in scores.items()}
    suite = tasks.resolve(load_config(None, {"tasks": ["summary", {"name": "topic", "weight": 0.2}]}))
    report = analyse(results, suite, n_resamples=20_000, seed=3)
    full = report["results"]["full_summary"]
    # topic: 8 items fell by 100, 2 stayed: mean -80. Sign flips: only all 8 changed items the same way are as
    # extreme, 2 of 2^8 patterns. Bootstrap: mean = -10 K; K=10 has probability 0.107 > 2.5% (low end -100), and
    # P(K <= 4) = 0.006 < 2.5% < P(K <= 5) = 0.033 (high end -50).
    topic = full["topic"]["change"]
    assert topic["diff"] == pytest.approx(-80.0) and (topic["ci_low"], topic["ci_high"]) == pytest.approx((-100.0, -50.0))
    assert abs(topic["p_value"] - 2 / 2**8) < 0.003 and topic["significant"]
    summary = full["summary"]["change"]  # +50 on every item: 2 of 2^10 sign patterns as extreme
    assert summary["diff"] == pytest.approx(50.0) and (summary["ci_low"], summary["ci_high"]) == pytest.approx((50.0, 50.0))
    assert abs(summary["p_value"] - 2 / 2**10) < 0.002
    # Multi-task full lost topic on 2 items: 2 of 2^2 patterns, p = 0.5, not significant.
    multi = report["results"]["full_multitask"]["topic"]["change"]
    assert multi["diff"] == pytest.approx(-20.0) and abs(multi["p_value"] - 0.5) < 0.02 and not multi["significant"]
    # Against full on summaries: LoRA kept topic where full lost it (+80), and scored 20 lower on summary.
    vs_full = report["results"]["lora_summary"]
    assert vs_full["topic"]["vs_full_summary"]["diff"] == pytest.approx(80.0)
    assert vs_full["summary"]["vs_full_summary"]["diff"] == pytest.approx(-20.0)
    assert report["results"]["original"]["topic"] == {"score": 100.0, "ci_low": 99.0, "ci_high": 101.0, "n": n}
    assert "vs_full_summary" not in report["results"]["lora_summary_off"]["topic"]
    # The sentences follow the numbers.
    report["models"] = [{"key": m.key, "label": m.label} for m in MODELS]
    report["adapter_off_check"] = {"equal": True, "items": {"summary": n, "topic": n}, "total": 2 * n}
    said = findings(report)
    assert said[1].startswith("Full fine-tuning on summaries alone lost significant ability on topic (-80.0 [-100.0, -50.0], p=0.0")
    assert "keeps topic 0% of the original's score" not in said[2] and "keeps topic 20% of the original's score" in said[2]
    assert said[3].startswith("LoRA, summary only: summary +30.0 [+30.0, +30.0]") and "keeps topic 100% of the original's score" in said[3]
    against = "against full fine-tuning on summaries alone: retained tasks significantly higher: topic"
    assert said[6].startswith(f"LoRA, summary only {against} (+80.0")
    # Multi-task full kept topic on 6 more items than full on summaries: 2 of 2^6 sign patterns, p = 0.031.
    assert said[7].startswith(f"full, multi-task {against} (+60.0")
    assert "no significant difference: none; summary -10.0" in said[7]
    assert ("no significant difference: topic (so it lost as much as full fine-tuning on summaries alone did on topic); "
            "summary -20.0") in said[8] and said[8].startswith("LoRA, multi-task against")
    svg = change_chart(report)
    assert svg.startswith("<svg") and svg.count("<title>") == 5 * 2


def test_nothing_lost_is_said_plainly():
    same = {key: {"summary": _result("rouge1", [10.0, 20.0, 30.0]), "topic": _result("exact_match", [100.0, 0.0, 100.0])}
            for key in [m.key for m in MODELS]}
    suite = tasks.resolve(load_config(None, {"tasks": ["summary", {"name": "topic", "weight": 0.2}]}))
    report = analyse(same, suite, n_resamples=200, seed=0)
    report["models"] = [{"key": m.key, "label": m.label} for m in MODELS]
    report["adapter_off_check"] = {"equal": True, "items": {"summary": 3, "topic": 3}, "total": 6}
    said = findings(report)
    assert said[1] == ("Full fine-tuning on summaries alone lost no significant ability on any retained task (topic) "
                       "at p < 0.05 on these items.")
    assert all(math.isclose(report["results"][k]["topic"]["change"]["p_value"], 1.0) for k in report["results"] if k != "original")


# ---------------------------------------------------------------- the suite and bad input


def test_default_suite_on_the_bundled_model():
    config = suite_config(load_config(None, {"model": "builtin:tiny-t5", "data.dataset": "builtin:dialogs"}))
    assert [(t.name, t.weight) for t in config.tasks] == [("summary", 1.0), ("topic", 0.15), ("slot_qa", 0.15), ("details", 0.15)]
    configs = forgetting.model_configs(config)
    assert [t.weight for t in configs["full_summary"].tasks] == [1.0, 0.0, 0.0, 0.0] and configs["lora_summary"].method == "lora"
    assert [t.weight for t in configs["lora_multitask"].tasks] == [1.0, 0.15, 0.15, 0.15] and configs["original"].method == "original"


BAD_SUITES = {
    "no summary": (["topic", "slot_qa"], ("forgetting suite (topic, slot_qa) has no `summary` task",)),
    "summary only": (["summary"], ("holds only `summary`",)),
    "unknown task": (["summary", "nosuch"], ("unknown task `nosuch`",)),
    "retained never trained": (["summary", {"name": "topic", "weight": 0}], ("every retained task (topic) has weight 0",)),
    "summary never trained": ([{"name": "summary", "weight": 0}, "topic"], ("`summary` has weight 0",)),
    "no suite for another model": (None, ("lists no `tasks:`", "for google/flan-t5-base")),
}


@pytest.mark.parametrize("case", BAD_SUITES, ids=list(BAD_SUITES))
def test_bad_suites_exit_2_in_one_line_before_any_work(capsys, tmp_path, case):
    entries, fragments = BAD_SUITES[case]
    out = tmp_path / "out"
    one_error(capsys, ["forgetting", _recipe(tmp_path / "suite.yaml", entries), "--output", str(out)], *fragments)
    assert not out.exists()


def test_missing_config_file(capsys, tmp_path):
    one_error(capsys, ["forgetting", str(tmp_path / "nope.yaml")], "does not exist")


def test_run_forgetting_refuses_a_finished_run_of_other_settings(study, tiny_model, small_data):
    out, _ = study
    config = load_config(None, {"model": str(tiny_model), "data.dataset": str(small_data), "tasks": SUITE, "seed": 7})
    with pytest.raises(DialogtuneError, match="finished run with other settings"):
        run_forgetting(config, out)
