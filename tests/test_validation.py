"""Validation during training (dialogtune.validation): on its schedule, on validation data only, the best checkpoint
kept (also across a kill and a resume), early stopping, the report's learning curves, and the bad inputs.

A randomly initialised tiny model scores 0 ROUGE at every step, so the runs here replace the logged ROUGE-1 by a
script of values per step (`scripted`): the summaries are still generated and scored, but which checkpoint is the
best is known in advance. That the figures are the real scores is checked on its own, on the bundled model.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import FAST_TRAINING, REPO, corpus_rows, write_jsonl
from dialogtune import validation
from dialogtune.checkpoints import MARKER, prune
from dialogtune.cli import main
from dialogtune.configio import load_config
from dialogtune.data import load_split
from dialogtune.faithfulness import unsupported
from dialogtune.inference import Settings, Summarizer
from dialogtune.metrics import per_example_scores
from dialogtune.modeling import load_base, load_tokenizer
from dialogtune.prompts import PromptTemplate
from dialogtune.report import write_report
from dialogtune.train import fit, prepare
from dialogtune.validation import ValidatingTrainer

SCRIPT = {2: 10.0, 4: 30.0, 6: 20.0, 8: 25.0}  # validation ROUGE-1 by step: the best is in the middle
FALLING = {2: 30.0, 4: 20.0, 6: 10.0, 8: 5.0}  # worse at every validation after the first
TIMING = ("eval_train_seconds", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def scripted(loop, script):
    """`ValidatingTrainer.evaluation_loop` with eval_rouge1 replaced by `script[step]`."""
    def evaluation_loop(self, *args, **kwargs):
        output = loop(self, *args, **kwargs)
        output.metrics["eval_rouge1"] = script[self.state.global_step]
        return output
    return evaluation_loop


def _overrides(tiny_model, small_data, out, method="lora", **extra):
    fast = {k: v for k, v in FAST_TRAINING.items() if k != "training.save_strategy"}  # checkpoints follow validation
    return {**fast, "model": str(tiny_model), "data.dataset": str(small_data), "method": method, "output": str(out),
            "training.learning_rate": 5e-3, "training.max_steps": 8,  # batch 8: 6 steps an epoch, so 8 cross into a second
            "training.save_total_limit": 2, "lora.r": 4, "evaluation.batch_size": 2, "evaluation.eval_steps": 2,
            "evaluation.val_samples": 4, "training.metric_for_best_model": "rouge1", "training.load_best_model_at_end": True,
            **extra}


def _argv(overrides):
    return ["-q", "train", *[f"--{k}={v}" for k, v in overrides.items()]]


def _log(folder):
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def _meta(folder):
    return json.loads((folder / "metadata.json").read_text())


@pytest.fixture(scope="module")
def validated(tiny_model, small_data, tmp_path_factory):
    """A LoRA run validated every 2 of 8 steps, the best by (scripted) ROUGE-1 kept; every generate call recorded."""
    out = tmp_path_factory.mktemp("validated") / "lora"
    config = load_config(None, _overrides(tiny_model, small_data, out))
    calls = []
    generate = validation.sharding.generate

    def spy(summarizer, prompts, *args, **kwargs):
        calls.append({"model": summarizer.model, "prompts": list(prompts)})
        return generate(summarizer, prompts, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation.sharding, "generate", spy)
        patch.setattr(ValidatingTrainer, "evaluation_loop", scripted(ValidatingTrainer.evaluation_loop, SCRIPT))
        setup = prepare(config)
        fit(setup, config, out)
    return config, setup, out, calls


def test_validation_runs_on_its_schedule_and_logs_every_figure(validated):
    config, _, out, calls = validated
    evals = [e for e in _log(out) if "eval_loss" in e]
    assert [e["step"] for e in evals] == [2, 4, 6, 8] and len(calls) == 4  # not again at the end
    for e in evals:
        assert {"eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_rougeLsum", "eval_unsupported_rate", "eval_train_seconds"} <= set(e)
    assert [e["eval_rouge1"] for e in evals] == [SCRIPT[s] for s in (2, 4, 6, 8)]
    assert [e["eval_train_seconds"] for e in evals] == sorted(e["eval_train_seconds"] for e in evals)
    meta = _meta(out)
    assert meta["validation"]["steps"] == [2, 4, 6, 8] and meta["validation"]["evaluations"] == 4
    # Validation time is reported apart: the trainer's own runtime includes it, train_seconds does not.
    runtime = _log(out)[-1]["train_runtime"]
    assert meta["validation_seconds"] > 0
    assert meta["train_seconds"] < runtime <= meta["train_seconds"] + meta["validation_seconds"]


def test_validation_uses_the_seeded_validation_subset_only_and_the_model_in_place(validated, small_data):
    config, setup, out, calls = validated
    records = load_split(config.data, "validation", limit=4)
    template = PromptTemplate(config.prompt.template)
    assert all(c["prompts"] == [template.format(r["dialogue"]) for r in records] for c in calls)
    ids = _meta(out)["validation"]["ids"]
    assert ids == [r["id"] for r in records] and len(ids) == 4
    others = {r["id"] for split in ("train", "test") for r in load_split(config.data, split)}
    assert not set(ids) & others
    # LoRA: the adapter being trained generates, in place; no merged or copied model.
    assert all(c["model"] is setup.model for c in calls)


def test_the_run_keeps_the_best_checkpoint_and_says_which_and_why(validated):
    _, _, out, _ = validated
    meta = _meta(out)
    assert meta["best"] == {"metric": "rouge1", "value": 30.0, "step": 4, "greater_is_better": True, "checkpoint": "checkpoint-4"}
    assert meta["weights"]["step"] == 4 and "highest validation rouge1 (30)" in meta["weights"]["why"]
    kept = load_file(out / "adapter_model.safetensors")
    best = load_file(out / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors")
    last = load_file(out / "checkpoints" / "checkpoint-8" / "adapter_model.safetensors")
    assert kept.keys() == best.keys()
    assert all((kept[k] == best[k]).all() for k in kept)
    assert any((kept[k] != last[k]).any() for k in kept)  # so the check above tells best from last
    # save_total_limit 2 rotated checkpoint-2 and -6 away, but never the best one.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-8"]


def test_validating_changes_nothing_in_training(validated, tiny_model, small_data, tmp_path):
    """The same run never validated trains to the same weights, bit for bit, across the epoch boundary at step 6, where
    the next shuffle draws from the RNG that validation's data loading would have moved."""
    _, _, out, _ = validated
    unvalidated = {k: v for k, v in _overrides(tiny_model, small_data, tmp_path / "plain").items()
                   if k not in ("evaluation.eval_steps", "training.metric_for_best_model", "training.load_best_model_at_end")}
    config = load_config(None, {**unvalidated, "training.save_strategy": "no"})
    fit(prepare(config), config, config.output)
    assert _log(tmp_path / "plain")[-1]["epoch"] > 1
    a = load_file(out / "checkpoints" / "checkpoint-8" / "adapter_model.safetensors")
    b = load_file(tmp_path / "plain" / "adapter_model.safetensors")
    assert all((a[k] == b[k]).all() for k in b)
    losses = [[e for e in _log(folder) if "loss" in e and "eval_loss" not in e] for folder in (out, tmp_path / "plain")]
    assert [(e["step"], e["loss"]) for e in losses[0]] == [(e["step"], e["loss"]) for e in losses[1]]


KILL_AT_STEP_5 = """
import os, signal, sys
import torch
torch.set_num_threads(int(os.environ["TEST_THREADS"]))  # the parent's count: another count sums in another order
sys.path.insert(0, "tests")
from test_validation import SCRIPT, scripted
from dialogtune import checkpoints, validation
validation.ValidatingTrainer.evaluation_loop = scripted(validation.ValidatingTrainer.evaluation_loop, SCRIPT)
original = checkpoints.CheckpointingTrainer.training_step
def step(self, *args, **kwargs):
    if self.state.global_step == 5:  # checkpoint-4, the best so far, is on disk
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)
checkpoints.CheckpointingTrainer.training_step = step
from dialogtune.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_and_resumed_run_keeps_the_same_best_checkpoint(validated, tiny_model, small_data, tmp_path, monkeypatch):
    _, _, reference, _ = validated
    out = tmp_path / "lora"
    argv = _argv(_overrides(tiny_model, small_data, out))
    env = {**os.environ, "TEST_THREADS": str(torch.get_num_threads())}
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(KILL_AT_STEP_5), *argv], cwd=REPO,
                            capture_output=True, text=True, timeout=600, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "checkpoints" / "checkpoint-4" / MARKER).is_file()
    # After the resume, the later validations (20 and 25) are worse than the 30 kept in the checkpoint's state: a
    # resume that forgot the best so far would keep step 8's weights.
    monkeypatch.setattr(ValidatingTrainer, "evaluation_loop", scripted(ValidatingTrainer.evaluation_loop, SCRIPT))
    assert main(argv) == 0
    meta, expected = _meta(out), _meta(reference)
    assert meta["resumed_from"].endswith("checkpoint-4")
    assert meta["best"] == expected["best"] and meta["weights"] == expected["weights"]
    a, b = load_file(out / "adapter_model.safetensors"), load_file(reference / "adapter_model.safetensors")
    assert all((a[k] == b[k]).all() for k in b)
    # The same validations, and the same losses after the resume: it trained as the uninterrupted run did.
    strip = lambda log: [{k: v for k, v in e.items() if k not in TIMING} for e in log if "eval_loss" in e]  # noqa: E731
    assert strip(_log(out)) == strip(_log(reference))


@pytest.fixture(scope="module")
def stopped(tiny_model, small_data, tmp_path_factory):
    """Full fine-tuning whose (scripted) ROUGE-1 falls after the first validation, with a patience of 2."""
    out = tmp_path_factory.mktemp("stopped") / "full"
    config = load_config(None, _overrides(tiny_model, small_data, out, "full", **{"training.early_stopping_patience": 2}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ValidatingTrainer, "evaluation_loop", scripted(ValidatingTrainer.evaluation_loop, FALLING))
        fit(prepare(config), config, out)
    return out


def test_early_stopping_after_patience_validations_without_improvement(stopped):
    meta = _meta(stopped)
    assert meta["train_steps"] == 6 and meta["early_stopped"] is True  # of 8: stopped at the second validation without gain
    assert meta["validation"]["steps"] == [2, 4, 6]
    assert meta["weights"]["step"] == 2
    kept, best = load_file(stopped / "model.safetensors"), load_file(stopped / "checkpoints" / "checkpoint-2" / "model.safetensors")
    assert all((kept[k] == best[k]).all() for k in best)


def test_the_report_draws_each_runs_learning_curves(validated, stopped, tmp_path):
    from dialogtune.evaluation import evaluate_run

    _, _, lora, _ = validated
    for folder in (lora, stopped):
        evaluate_run(folder, progress=False)
    report = write_report([stopped, lora], tmp_path / "report")
    full_run, lora_run = report["runs"]
    curves = lora_run["curves"]
    assert [p["step"] for p in curves["validation"]] == [2, 4, 6, 8]
    assert [p["rouge1"] for p in curves["validation"]] == [SCRIPT[s] for s in (2, 4, 6, 8)]
    assert curves["best"]["step"] == 4 and curves["weights"]["step"] == 4 and curves["val_samples"] == 4
    logged = [[e["step"], e["loss"]] for e in _log(lora) if "loss" in e]
    assert curves["train_loss"] == [[s, round(v, 4)] for s, v in logged] and len(logged) >= 4
    assert all(p["train_loss"] is not None and p["train_seconds"] is not None for p in curves["validation"])
    assert full_run["curves"]["early_stopped"] is True and [p["step"] for p in full_run["curves"]["validation"]] == [2, 4, 6]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Learning curves" in md and "| 4 (best) |" in md and "| 2 (best) |" in md
    page = (tmp_path / "report" / "report.html").read_text()
    curves_svg = page.split('aria-label="learning curves"')[1].split("</svg>")[0]
    assert curves_svg.count("<polyline") == 4  # loss and ROUGE-1, for full and for LoRA, on the same two panels
    assert 'aria-label="training time against ROUGE-1"' in page


def test_a_run_without_validation_has_no_curves(tiny_model, small_data, tmp_path):
    from dialogtune.report.analysis import curves
    from dialogtune.runs import read_run

    config = load_config(None, {**FAST_TRAINING, "model": str(tiny_model), "data.dataset": str(small_data), "method": "full",
                                "output": str(tmp_path / "full"), "training.max_steps": 2})
    run = fit(prepare(config), config, config.output)
    assert curves(read_run(run.folder)) is None
    assert "validation_seconds" not in _meta(run.folder) and "best" not in _meta(run.folder)


def test_validation_figures_are_the_scores_of_the_models_own_summaries(small_data):
    """On the bundled model, which writes words (a random one scores 0 and would prove nothing)."""
    config = load_config(None, {"model": "builtin:tiny-t5", "data.dataset": str(small_data), "evaluation.eval_steps": 1,
                                "evaluation.val_samples": 4, "generation.max_new_tokens": 16})
    tokenizer, template = load_tokenizer(config.model), PromptTemplate(config.prompt.template)
    check = validation.validation_set(config, tokenizer, template)
    model = load_base(config.model)
    model.train()
    figures = check.score(model)
    assert model.training  # left as the trainer had it
    summaries = Summarizer(model, tokenizer, Settings.of(config, template)).generate(check.prompts)
    scores = per_example_scores(summaries, [r["references"] for r in check.records])
    assert figures["rouge1"] > 0
    assert {m: figures[m] for m in scores} == {m: float(np.mean(v)) for m, v in scores.items()}
    assert figures["unsupported_rate"] == np.mean([len(unsupported(s, r["dialogue"])) for s, r in zip(summaries, check.records)])
    assert len(check.dataset) == sum(len(r["references"]) for r in check.records)  # the loss: one pair per reference


def test_trainer_arguments_follow_the_validation_settings():
    args = load_config(None, {"evaluation.eval_steps": 5, "training.metric_for_best_model": "unsupported_rate",
                              "training.load_best_model_at_end": True}).training_args()
    assert (args["eval_strategy"], args["eval_steps"], args["save_strategy"], args["save_steps"]) == ("steps", 5, "steps", 5)
    assert args["greater_is_better"] is False  # fewer unsupported facts is better; transformers would guess True
    assert load_config(None, {"evaluation.eval_steps": 5, "training.metric_for_best_model": "eval_rouge1"}).training_args()["greater_is_better"]
    mine = load_config(None, {"evaluation.eval_steps": 5, "training.metric_for_best_model": "rouge1",
                              "training.greater_is_better": False, "training.early_stopping_patience": 3}).training_args()
    assert mine["greater_is_better"] is False and "early_stopping_patience" not in mine  # the user's value wins; ours stays ours
    assert "eval_strategy" not in load_config(None, {}).training_args()


def test_pruning_never_deletes_the_best_checkpoint(tmp_path):
    for step in (2, 4, 6, 8):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / MARKER).write_text("{}")
    prune(tmp_path, 2, best=str(tmp_path / "checkpoint-2"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-8"]
    prune(tmp_path, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-8"]


# ---------------------------------------------------------------- bad inputs (docs/bad-inputs.md)


def _fails(capsys, argv, fragment, out):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("dialogtune: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]
    assert not (out / "metrics.json").exists() and not (out / "adapter_model.safetensors").exists()
    return lines[0]


@pytest.mark.parametrize("extra, fragment", [
    ({"evaluation.eval_steps": 0}, "`evaluation.eval_steps` is 0; use a positive number of steps"),
    ({"evaluation.eval_steps": -5}, "`evaluation.eval_steps` is -5"),
    ({"training.metric_for_best_model": "bleu"}, "`training.metric_for_best_model` is 'bleu'; choose one of loss, rouge1"),
    ({"evaluation.eval_steps": None, "training.eval_strategy": "no", "training.early_stopping_patience": 2},
     "`training.early_stopping_patience` needs validation during training, and none is scheduled"),
    ({"training.early_stopping_patience": 0}, "`training.early_stopping_patience` is 0"),
    ({"data.validation_split": "test"}, "`data.validation_split` is 'test', the split the run is scored on (`data.test_split`)"),
    ({"training.save_strategy": "no"}, "`training.save_strategy` is 'no': leave it unset"),
])
def test_bad_validation_settings(capsys, tiny_model, small_data, tmp_path, extra, fragment):
    overrides = {k: v for k, v in _overrides(tiny_model, small_data, tmp_path / "run", **extra).items() if v is not None}
    _fails(capsys, _argv(overrides), fragment, tmp_path / "run")


def test_early_stopping_without_validation_data(capsys, tiny_model, tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", corpus_rows("train", 16))
    write_jsonl(data / "test.jsonl", corpus_rows("test", 4))
    overrides = _overrides(tiny_model, data, tmp_path / "run", **{"training.early_stopping_patience": 2})
    _fails(capsys, _argv(overrides), "validation during training needs validation data: ", tmp_path / "run")


def test_a_validation_split_overlapping_train_is_the_overlap_error(capsys, tiny_model, tmp_path):
    data = tmp_path / "data"
    train = corpus_rows("train", 16)
    write_jsonl(data / "train.jsonl", train)
    write_jsonl(data / "validation.jsonl", corpus_rows("validation", 3) + train[:1])
    write_jsonl(data / "test.jsonl", corpus_rows("test", 4))
    line = _fails(capsys, _argv(_overrides(tiny_model, data, tmp_path / "run")),
                  "1 of 4 validation dialogues also appear in the train split", tmp_path / "run")
    assert "--allow-overlap" in line
