"""Kill a run at awkward moments (SIGKILL, no clean-up), rerun the same command, and compare with a
run that was never interrupted: on CPU the weights and metrics.json must be identical."""

import json
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from conftest import FAST_TRAINING, REPO
from dialogtune.checkpoints import MARKER
from dialogtune.cli import main

STEPS = 8


def _argv(tiny_model, small_data, out, command="train"):
    flags = {**FAST_TRAINING, "training.max_steps": STEPS, "training.save_strategy": "steps", "training.save_steps": 2,
             "training.save_total_limit": 2, "training.per_device_train_batch_size": 4, "lora.r": 4,
             "evaluation.batch_size": 2}
    if command == "evaluate":
        return ["-q", "evaluate", str(out)]
    return ["-q", "train", "--model", str(tiny_model), "--dataset", str(small_data), "--method", "lora",
            "--output", str(out)] + [f"--{k}={v}" for k, v in flags.items()]


# Each snippet replaces one method so that the process SIGKILLs itself at a chosen moment.
KILL_DURING_STEP = """
from dialogtune import checkpoints
original = checkpoints.CheckpointingTrainer.training_step
def step(self, *args, **kwargs):
    if self.state.global_step == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)
checkpoints.CheckpointingTrainer.training_step = step
"""
KILL_DURING_SAVE = """
from transformers import Trainer
original = Trainer._save_optimizer_and_scheduler
def save(self, output_dir):
    if self.state.global_step == 6:  # the model is already in checkpoint-6, the optimizer not yet
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, output_dir)
Trainer._save_optimizer_and_scheduler = save
"""
KILL_DURING_FINAL_SAVE = """
from dialogtune import train
original = train.os.replace
def replace(src, dst):
    original(src, dst)
    if str(dst).endswith("adapter_config.json") or str(dst).endswith("adapter_model.safetensors"):
        os.kill(os.getpid(), signal.SIGKILL)  # one file moved in, the other not
train.os.replace = replace
"""
KILL_DURING_EVALUATION = """
from dialogtune import evaluation
original = evaluation.Partial.append
calls = []
def append(self, indices, texts):
    original(self, indices, texts)
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
evaluation.Partial.append = append
"""


def _killed(snippet, argv):
    # The parent's thread count: the reference trained in this process, and another count sums in another order.
    code = (f"import os, signal, sys, torch\ntorch.set_num_threads({torch.get_num_threads()})\n" + textwrap.dedent(snippet)
            + "from dialogtune.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


@pytest.fixture(scope="module")
def reference(tiny_model, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert main(_argv(tiny_model, small_data, out)) == 0
    assert main(_argv(tiny_model, small_data, out, "evaluate")) == 0
    return out


def _same_result(run, reference):
    a = load_file(run / "adapter_model.safetensors")
    b = load_file(reference / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), f"{key} differs from the uninterrupted run"
    assert (run / "metrics.json").read_text() == (reference / "metrics.json").read_text()
    assert (run / "predictions.jsonl").read_text() == (reference / "predictions.jsonl").read_text()


def test_killed_during_a_step_resumes_to_the_same_result(reference, tiny_model, small_data, tmp_path):
    out = tmp_path / "run"
    _killed(KILL_DURING_STEP, _argv(tiny_model, small_data, out))
    assert (out / "checkpoints" / "checkpoint-4" / MARKER).is_file() and not (out / "metrics.json").exists()
    assert main(_argv(tiny_model, small_data, out)) == 0  # the same command again
    assert json.loads((out / "metadata.json").read_text())["resumed_from"].endswith("checkpoint-4")
    assert main(_argv(tiny_model, small_data, out, "evaluate")) == 0
    _same_result(out, reference)


def test_killed_while_writing_a_checkpoint_never_uses_the_half_written_one(reference, tiny_model, small_data, tmp_path):
    out = tmp_path / "run"
    _killed(KILL_DURING_SAVE, _argv(tiny_model, small_data, out))
    half = out / "checkpoints" / "checkpoint-6"
    assert half.is_dir() and not (half / MARKER).exists()
    assert (out / "checkpoints" / "checkpoint-4" / MARKER).is_file(), "the older checkpoint was deleted too early"
    assert main(_argv(tiny_model, small_data, out) + ["--resume"]) == 0
    assert json.loads((out / "metadata.json").read_text())["resumed_from"].endswith("checkpoint-4")
    assert main(_argv(tiny_model, small_data, out, "evaluate")) == 0
    _same_result(out, reference)


def test_killed_while_saving_the_final_weights_leaves_no_half_file(reference, tiny_model, small_data, tmp_path):
    out = tmp_path / "run"
    _killed(KILL_DURING_FINAL_SAVE, _argv(tiny_model, small_data, out))
    assert json.loads((out / "metadata.json").read_text())["status"] == "training", "a half-saved run looks trained"
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (out / name).exists() or (out / ".saving" / name).is_file(), "a weights file was lost or torn"
    assert main(_argv(tiny_model, small_data, out)) == 0  # resumes from checkpoint-8 and saves again
    assert not (out / ".saving").exists()
    assert main(_argv(tiny_model, small_data, out, "evaluate")) == 0
    _same_result(out, reference)


def test_killed_during_evaluation_resumes_from_the_predictions_written(reference, tiny_model, small_data, tmp_path):
    out = tmp_path / "run"
    assert main(_argv(tiny_model, small_data, out)) == 0
    _killed(KILL_DURING_EVALUATION, _argv(tiny_model, small_data, out, "evaluate"))
    assert not (out / "metrics.json").exists(), "scores were written before every prediction existed"
    assert (out / "predictions.partial.jsonl").is_file()
    assert main(_argv(tiny_model, small_data, out, "evaluate")) == 0
    assert json.loads((out / "metadata.json").read_text())["resumed_predictions"] == 4  # two batches of 2
    assert not (out / "predictions.partial.jsonl").exists()
    _same_result(out, reference)


def test_rerun_with_other_settings_does_not_resume_silently(tiny_model, small_data, tmp_path, capsys):
    out = tmp_path / "run"
    _killed(KILL_DURING_STEP, _argv(tiny_model, small_data, out))
    assert main(_argv(tiny_model, small_data, out) + ["--lora.r", "8"]) == 2
    assert "unfinished run with other settings (lora)" in capsys.readouterr().err


def test_same_config_and_seed_give_identical_metrics_and_predictions(reference, tiny_model, small_data, tmp_path):
    out = tmp_path / "again"
    assert main(_argv(tiny_model, small_data, out)) == 0
    assert main(_argv(tiny_model, small_data, out, "evaluate")) == 0
    _same_result(out, reference)
