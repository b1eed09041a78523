"""Tasks: the schema and the built-ins, the bundled task data, mixing by weight and temperature, per-task
evaluation, one adapter per task, and the bad inputs listed under "Tasks" in docs/bad-inputs.md."""

from __future__ import annotations

import gzip
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import CORPUS, FAST_TRAINING, REPO, corpus_rows, one_error, write_jsonl
from dialogtune import tasks
from dialogtune.cli import main
from dialogtune.configio import build_config, dump_yaml, load_config
from dialogtune.errors import DialogtuneError
from dialogtune.evaluation import evaluate_task
from dialogtune.inference import BASE, Summarizer
from dialogtune.metrics import answer_scores, normalize_answer, token_f1
from dialogtune.prompts import DEFAULT_TEMPLATE, DETAILS_TEMPLATE, QUESTION_TEMPLATE, TOPIC_TEMPLATE, PromptTemplate
from dialogtune.runs import read_run
from dialogtune.significance import paired_test

sys.path.insert(0, str(REPO / "scripts"))  # build-time code: the tiny model's prompts and the task-data builder

SPLITS = ("train", "validation", "test")
HEADLINE = {"name": "headline", "target": "headline", "template": "Headline of:\n\n{dialogue}\n\nHeadline: ", "metric": "token_f1"}


def _shipped(task: str, split: str) -> list[dict]:
    with gzip.open(CORPUS / task / f"{split}.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# ---------------------------------------------------------------- schema and built-ins


def test_builtin_templates_are_the_tiny_models_pretraining_prompts():
    import build_tiny_t5

    assert DEFAULT_TEMPLATE == build_tiny_t5.SUMMARY_PROMPT
    assert TOPIC_TEMPLATE == build_tiny_t5.TOPIC_PROMPT
    assert QUESTION_TEMPLATE == build_tiny_t5.QUESTION_PROMPT
    assert DETAILS_TEMPLATE == build_tiny_t5.DETAILS_PROMPT


def test_task_list_takes_builtins_changed_builtins_and_own_tasks():
    config = load_config(None, {"tasks": ["summary", {"name": "topic", "weight": 0.2}, HEADLINE]})
    summary, topic, headline = config.tasks
    assert (summary.template, summary.metric, summary.target, summary.weight) == (None, "rouge", "summary", 1.0)
    assert (topic.template, topic.target, topic.metric, topic.weight) == (TOPIC_TEMPLATE, "topic", "exact_match", 0.2)
    assert (headline.target, headline.metric, headline.data, headline.input) == ("headline", "token_f1", None, "dialogue")
    bound = tasks.resolve(config)
    assert bound[0].template == PromptTemplate(config.prompt.template)  # summary: the config's own prompt
    assert bound[2].data.dataset == config.data.dataset and bound[2].data.summary_column == "headline"
    # A run folder writes the tasks out in full and reads them back as the same tasks.
    assert build_config(yaml.safe_load(dump_yaml(config))).tasks == config.tasks


def test_a_config_without_tasks_is_the_summary_task_and_is_written_as_before():
    config = load_config(None, {})
    tree = yaml.safe_load(dump_yaml(config))
    assert "tasks" not in tree and "mixing" not in tree  # so earlier run folders still count as the same run
    (only,) = tasks.resolve(config)
    assert (only.name, only.metric, only.data) == ("summary", "rouge", config.data)


def test_slot_qa_fills_its_question_and_keeps_it_when_the_dialogue_is_cut():
    config = load_config(None, {"data.dataset": "builtin:dialogs"})
    qa = tasks.get(config, "slot_qa")
    records = qa.records("test", limit=5)
    prompt, record = qa.prompts(records)[0], records[0]
    assert record["id"].startswith("test_") and record["references"][0] in record["dialogue"]  # answers are copied spans
    assert prompt.endswith(f"\n\nQuestion: {record['fields']['question']}\n\nAnswer: ")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(REPO / "dialogtune" / "assets" / "tiny-t5")
    ids, cut = qa.template.fit(qa.template.format(record["dialogue"] * 20, question="What is the price?"), tokenizer, 60)
    assert cut and len(ids) == 60
    assert tokenizer.decode(ids, skip_special_tokens=True).endswith("Question: What is the price? Answer:")
    # Values are filled in one pass: a question that mentions {dialogue} is not filled again.
    assert qa.template.format("D", question="{dialogue}?").count("{dialogue}?") == 1


# ---------------------------------------------------------------- the bundled task data


@pytest.mark.parametrize("task", ["slot_qa", "details"])
@pytest.mark.parametrize("split", SPLITS)
def test_bundled_task_data_holds_the_corpus_dialogues_under_their_ids(task, split):
    shipped = _shipped(task, split)
    corpus = corpus_rows(split, 10_000)
    assert [(r["id"], r["dialogue"]) for r in shipped] == [(r["id"], r["dialogue"]) for r in corpus]


def test_bundled_task_data_equals_a_fresh_build():
    # If this fails, regenerate with the command in scripts/build_task_data.py's docstring.
    from build_task_data import task_rows

    fresh = task_rows()
    for task, splits in fresh.items():
        for split, rows in splits.items():
            assert _shipped(task, split) == rows, (task, split)
    assert {r["question"] for r in fresh["slot_qa"]["test"]} >= {"What is the customer's name?", "What is the price?"}


# ---------------------------------------------------------------- metrics


def test_exact_match_and_token_f1_normalise_answers_as_squad():
    assert normalize_answer("The  Hotel-booking!") == "hotelbooking"
    assert answer_scores(["Mr. Smith", "friday", ""], [["mr smith"], ["Monday", "Friday."], ["x"]], "exact_match").tolist() == [100, 100, 0]
    assert token_f1("a hotel booking", "Hotel booking.") == 1.0
    assert token_f1("the hotel", "hotel booking") == pytest.approx(2 / 3)  # precision 1, recall 1/2
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    with pytest.raises(ValueError):
        answer_scores(["x"], [["x"]], "bleu")


# ---------------------------------------------------------------- mixing


def test_temperature_sampling_over_task_weights():
    assert tasks.probabilities({"a": 3, "b": 1}) == pytest.approx({"a": 0.75, "b": 0.25})  # T=1: as the weights
    assert tasks.probabilities({"a": 3, "b": 1}, 2)["a"] == pytest.approx(math.sqrt(3) / (math.sqrt(3) + 1))
    assert tasks.probabilities({"a": 3, "b": 1}, 1e9)["a"] == pytest.approx(0.5)  # T -> inf: uniform
    assert tasks.probabilities({"a": 1e6, "b": 1}, 0.01)["a"] == pytest.approx(1.0)  # small T: no overflow
    assert tasks.probabilities({"a": 1, "b": 0}) == {"a": 1.0}  # weight 0: evaluated, never trained on


@pytest.mark.parametrize("temperature", [1.0, 2.0, 100.0])
def test_realised_proportions_are_within_sampling_error(temperature):
    from datasets import Dataset

    parts = {"a": Dataset.from_dict({"x": list(range(300))}), "b": Dataset.from_dict({"x": list(range(1000, 1100))})}
    probs = tasks.probabilities({"a": 3.0, "b": 1.0}, temperature)
    total = 4000
    mixed, info = tasks.mix(parts, probs, seed=0, total=total)
    drawn = mixed["x"]
    share = sum(x < 1000 for x in drawn) / total
    assert len(drawn) == total and info["task_examples"]["a"] == round(share * total)
    # The count of task a is binomial(total, p): within 4 standard errors unless something is wrong.
    p = probs["a"]
    assert abs(share - p) <= 4 * math.sqrt(p * (1 - p) / total), (share, p)
    assert info["realised"]["a"] == pytest.approx(share) and info["probabilities"]["a"] == pytest.approx(p)
    # A task's examples are reused only once all of them were used: their counts differ by at most one.
    for lo, hi in ((0, 300), (1000, 1100)):
        uses = Counter(x for x in drawn if lo <= x < hi)
        assert len(uses) == hi - lo and max(uses.values()) - min(uses.values()) <= 1
    again, _ = tasks.mix(parts, probs, seed=0, total=total)
    other, _ = tasks.mix(parts, probs, seed=1, total=total)
    assert again["x"] == drawn and other["x"] != drawn


def test_training_set_of_several_tasks_is_mixed_and_its_proportions_logged(tiny_model, small_data, caplog):
    from transformers import AutoTokenizer

    from dialogtune.preprocess import tokenize_tasks

    config = load_config(None, {
        **FAST_TRAINING, "model": str(tiny_model), "data.dataset": str(small_data), "mixing.examples": 600,
        "tasks": [{"name": "summary", "weight": 3}, {"name": "topic", "weight": 1}, {"name": "slot_qa", "weight": 0}],
    })
    with caplog.at_level("INFO", logger="dialogtune"):
        dataset, stats, info = tokenize_tasks(AutoTokenizer.from_pretrained(tiny_model), config)
    mixing = info["mixing"]
    assert len(dataset) == stats.examples == 600 and set(mixing["task_examples"]) == {"summary", "topic"}  # slot_qa: weight 0
    assert abs(mixing["realised"]["summary"] - 0.75) <= 4 * math.sqrt(0.75 * 0.25 / 600)
    assert info["tasks"]["topic"]["data_overlap"]["overlap"] == 0
    assert "training on 600 examples from 2 task(s)" in caplog.text and "topic" in caplog.text


# ---------------------------------------------------------------- evaluation and one adapter per task


def test_per_task_evaluation_on_the_bundled_model(tmp_path, capsys):
    """The bundled tiny-t5 was pre-trained on topic naming and slot questions: it names topics and answers."""
    out = tmp_path / "original"
    argv = ["-q", "evaluate", "--method", "original", "--model", "builtin:tiny-t5", "--dataset", "builtin:dialogs",
            "--task", "topic,slot_qa", "--max-eval-samples", "16", "--output", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("topic: exact_match=") and printed[1].startswith("slot_qa: exact_match=")
    run = read_run(out)
    topic = run.read_metrics(task="topic")
    assert topic["num_examples"] == 16 and topic["scores"]["exact_match"]["score"] >= 75
    assert not run.metrics_path().exists() and run.finished  # no summary was asked for; both tasks are scored
    rows = run.predictions(task="slot_qa")
    assert all(row["id"].startswith("test_") and "question" in row["fields"] for row in rows)
    # The API the forgetting report uses: the aggregate with its CI, and per-example scores for paired tests.
    config = load_config(None, {"model": "builtin:tiny-t5", "data.dataset": "builtin:dialogs"})
    result = evaluate_task(Summarizer.from_base("builtin:tiny-t5", config), tasks.get(config, "slot_qa"), "test", limit=16,
                           n_resamples=200)
    scores = result["per_example"]["exact_match"]
    assert result["ids"] == [row["id"] for row in rows] and set(scores) <= {0.0, 100.0}
    aggregate = result["metrics"]["scores"]["exact_match"]
    assert aggregate["score"] == pytest.approx(np.mean(scores)) and aggregate["ci_low"] <= aggregate["score"] <= aggregate["ci_high"]
    assert aggregate["score"] == run.read_metrics(task="slot_qa")["scores"]["exact_match"]["score"] > 0
    assert paired_test(np.array(scores), np.array(scores))["p_value"] == 1.0


@pytest.fixture(scope="module")
def topic_run(tiny_model, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks") / "topic"
    flags = [x for key, value in {**FAST_TRAINING, "lora.r": 4, "training.learning_rate": 5e-3}.items() for x in (f"--{key}", str(value))]
    argv = ["-q", "train", "--model", str(tiny_model), "--dataset", str(small_data), "--method", "lora", "--task", "topic",
            "--output", str(out), *flags]
    assert main(argv) == 0
    return out


def test_train_task_writes_an_adapter_for_that_task(topic_run):
    run = read_run(topic_run)
    assert (topic_run / "adapter_model.safetensors").is_file() and not (topic_run / "model.safetensors").exists()
    assert [t.name for t in run.config.tasks] == ["topic"] and run.prompt.template == TOPIC_TEMPLATE
    assert run.metadata["mixing"]["realised"] == {"topic": 1.0} and run.metadata["tasks"]["topic"]["data_overlap"]["overlap"] == 0
    assert main(["-q", "evaluate", str(topic_run)]) == 0
    run = read_run(topic_run)
    metrics = run.read_metrics(task="topic")
    assert run.finished and not run.metrics_path().exists()  # the topic task's own files, not metrics.json
    assert metrics["task"] == "topic" and metrics["generation"]["max_new_tokens"] == 16  # the task's own settings
    assert main(["-q", "evaluate", str(topic_run), "--task", "summary", "--max-eval-samples", "4"]) == 0
    assert read_run(topic_run).read_metrics()["rouge"]["rouge1"]["score"] >= 0  # summary keeps metrics.json


def test_adapter_off_on_one_base_gives_the_original_model_exactly(topic_run, tiny_model):
    config = load_config(None, {"model": str(tiny_model), "data.dataset": str(read_run(topic_run).config.data.dataset),
                                **{k: v for k, v in FAST_TRAINING.items() if k.startswith("generation.")}})
    task = tasks.get(config, "topic")
    original = evaluate_task(Summarizer.from_base(str(tiny_model), config), task, limit=8, n_resamples=50)
    both = Summarizer.from_adapters(str(tiny_model), {"topic": topic_run}, config)
    off = evaluate_task(both, task, limit=8, adapter=BASE, n_resamples=50)
    on = evaluate_task(both, task, limit=8, adapter="topic", n_resamples=50)
    assert [r["prediction"] for r in off["rows"]] == [r["prediction"] for r in original["rows"]]
    assert off["per_example"] == original["per_example"] and on["ids"] == off["ids"]


# ---------------------------------------------------------------- bad input


def _recipe(tmp_path: Path, entries: list) -> str:
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump({"tasks": entries}), encoding="utf-8")
    return str(path)


BAD_TASKS = {
    "unknown metric": ([{**HEADLINE, "metric": "bleu"}], ("task `headline`", "`metric` is 'bleu'", "rouge, exact_match, token_f1")),
    "template without {dialogue}": ([{**HEADLINE, "template": "Headline: "}], ("task `headline`", "no `{dialogue}` placeholder")),
    "template without its declared placeholder": (
        [{**HEADLINE, "placeholder": "text"}], ("task `headline`", "no `{text}` placeholder", "`dialogue` column")),
    "negative weight": ([{"name": "summary", "weight": -1}], ("task `summary`", "`weight` is -1", "0 or more")),
    "all weights zero": ([{"name": "summary", "weight": 0}, {"name": "topic", "weight": 0}], ("every task has weight 0",)),
    "duplicate names": (["topic", {"name": "topic", "weight": 2}], ("task `topic` is listed 2 times",)),
    "unknown built-in": (["topics"], ("unknown task `topics`", "summary, topic, slot_qa, details")),
    "misspelt key": ([{**HEADLINE, "tempalte": "x"}], ("task `headline`", "unknown key `tempalte`", "did you mean `template`")),
}


@pytest.mark.parametrize("case", BAD_TASKS, ids=list(BAD_TASKS))
def test_bad_task_definitions(capsys, tiny_model, small_data, tmp_path, case):
    entries, fragments = BAD_TASKS[case]
    out = tmp_path / "out"
    one_error(capsys, ["train", "--config", _recipe(tmp_path, entries), "--model", str(tiny_model),
                        "--dataset", str(small_data), "--output", str(out)], *fragments)
    assert not out.exists()  # refused before any folder was made


def test_task_column_missing_from_its_data(capsys, tiny_model, small_data, tmp_path):
    out = tmp_path / "out"
    one_error(capsys, ["train", "--config", _recipe(tmp_path, [HEADLINE]), "--model", str(tiny_model),
                        "--dataset", str(small_data), "--output", str(out)],
               "task `headline`", "has no `headline` column", "(columns: id, dialogue, summary, topic)", "the task's `target`")
    assert not out.exists()


def test_unknown_task_name_on_the_command_line(capsys, tiny_model, small_data, topic_run, tmp_path):
    one_error(capsys, ["train", "--task", "nosuch", "--model", str(tiny_model), "--dataset", str(small_data),
                        "--output", str(tmp_path / "out")], "unknown task `nosuch`", "known tasks: summary, topic, slot_qa, details")
    one_error(capsys, ["evaluate", str(topic_run), "--task", "summary,nosuch"], "unknown task `nosuch`", "known tasks: topic, summary")


def test_a_task_on_one_file_gets_the_seeded_split(tmp_path):
    rows = [{**row, "headline": row["topic"]} for row in corpus_rows("train", 40)]
    data = write_jsonl(tmp_path / "dialogues.jsonl", rows)  # no split in the name: split by data.split_sizes
    config = load_config(None, {"tasks": [{**HEADLINE, "data": str(data)}], "data.split_sizes": [0.8, 0.1, 0.1]})
    task = tasks.get(config, "headline")
    parts = {split: {r["id"] for r in task.records(split)} for split in SPLITS}
    assert [len(parts[s]) for s in SPLITS] == [32, 4, 4]
    assert not parts["train"] & parts["test"] and set().union(*parts.values()) == {r["id"] for r in rows}


def test_help_documents_tasks_and_mixing(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--task A,B" in text and "--mixing.temperature" in text and "weight_i^(1/T)" in text


def test_tasks_entries_that_are_not_a_list_or_mapping():
    with pytest.raises(DialogtuneError, match="`tasks` entry 1 is 3"):
        load_config(None, {"tasks": [3]})
