"""The command line itself: entry point, generated --help, global flags, defaults from the schema.

Bad input through the CLI (one line, exit code 2) is the matrix in tests/test_bad_inputs.py.
"""

import dataclasses
import re
import subprocess
import sys

import pytest

from conftest import REPO
from dialogtune.cli import build_parser, main
from dialogtune.config import Config, EvaluationConfig, ReportConfig


def _help(*command):
    result = subprocess.run([sys.executable, "-m", "dialogtune", *command, "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _entries(help_text):
    """{option name: its whole --help entry, whitespace collapsed}."""
    entries = {}
    for block in re.split(r"\n(?=  -)", help_text):
        invocation = re.split(r"\s{2,}", block.strip())[0]
        for name in re.findall(r"--[\w.-]+", invocation):
            entries[name] = " ".join(block.split())
    return entries


def _squashed(text):
    return re.sub(r"\s", "", text)  # help wraps lines, breaking at spaces and hyphens


def _own_keys(cls=Config, prefix=""):
    """(dotted key, field) for every key of our schema, sections expanded; passthrough sections are one key."""
    for spec in dataclasses.fields(cls):
        section = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(section):
            yield from _own_keys(type(section), f"{prefix}{spec.name}.")
        else:
            yield prefix + spec.name, spec


def test_module_entry_point_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dialogtune", "score", "--predictions", str(tmp_path / "p.txt"), "--references", str(tmp_path / "r.jsonl")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "r.jsonl does not exist" in result.stderr


def test_help_lists_every_command():
    text = _help()
    for command in ("run", "train", "evaluate", "compare", "summarize", "score", "demo"):
        assert command in text


@pytest.mark.parametrize("command", ["train", "evaluate", "run", "demo"])
def test_help_lists_every_config_key_with_its_help_and_default(command):
    entries = _entries(_help(command))
    passthrough = {"training", "lora", "generation"}
    for key, spec in _own_keys():
        if key in passthrough or (key == "method" and command in ("run", "demo")):
            continue  # run and demo do every method in `run.methods`
        entry = entries.get(f"--{key}")
        assert entry, f"--{key} missing from `dialogtune {command} --help`"
        assert _squashed(spec.metadata["help"]) in _squashed(entry) and "(default: " in entry, entry
    for key in ("training.learning_rate", "training.num_train_epochs", "lora.r", "lora.target_modules", "generation.max_new_tokens"):
        assert "default: " in entries[f"--{key}"], key
    if command == "train":  # the schema's defaults, not a recipe's
        assert "(default: 42)" in entries["--seed"] and "(default: 512)" in entries["--data.max_source_length"]
        assert entries["--dataset"] == entries["--data.dataset"]  # the short flag is the same key
        assert "default: 32" in entries["--lora.r"] and "default: q,v" in entries["--lora.target_modules"]
        assert "full: 0.0003, lora: 0.001" in entries["--training.learning_rate"]
        assert "default: 200" in entries["--generation.max_new_tokens"]
    if command == "demo":  # the bundled recipe's values
        assert "(default: builtin:tiny-t5)" in entries["--model"] and "default: 16" in entries["--lora.r"]


def test_help_is_fast_because_it_imports_no_ml_library():
    code = "import sys, dialogtune.cli; dialogtune.cli.build_parser().format_help(); print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


COMMAND_ARGS = {
    "run": ["recipe.yaml"],
    "train": [],
    "evaluate": ["runs/x"],
    "compare": ["runs/x"],
    "summarize": ["#Person1#: hi", "--model", "m"],
    "demo": ["--quick"],
    "score": ["--references", "r.jsonl"],
}


@pytest.mark.parametrize("command", list(COMMAND_ARGS))
def test_global_flags_work_before_or_after_the_command(command):
    parser = build_parser()
    after = parser.parse_args([command, *COMMAND_ARGS[command], "-q", "--allow-pickle"])
    before = parser.parse_args(["--quiet", "--allow-pickle", command, *COMMAND_ARGS[command]])
    neither = parser.parse_args([command, *COMMAND_ARGS[command]])
    assert after.quiet and after.allow_pickle and before.quiet and before.allow_pickle
    assert not getattr(neither, "quiet", False) and not getattr(neither, "allow_pickle", False)


def test_quiet_after_the_command_runs_it(capsys, tiny_model):
    assert main(["summarize", "-q", "#Person1#: Hello.\n#Person2#: Hi.", "--model", str(tiny_model)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.count("\n") == 1  # one summary (an untrained model's may be empty)


def test_flags_left_out_take_the_schema_defaults(monkeypatch, tmp_path):
    calls = {}
    monkeypatch.setattr("dialogtune.report.write_report", lambda runs, out, n, seed, **kw: calls.update(compare=(n, seed)) or {})
    monkeypatch.setattr("dialogtune.report.rouge_table", lambda report: "")
    monkeypatch.setattr("dialogtune.scoring.score_files", lambda p, r, protocol, resamples, **kw: calls.update(score=(protocol, resamples)) or {})
    monkeypatch.setattr("dialogtune.scoring.score_table", lambda result: "")
    assert main(["compare", str(tmp_path / "run")]) == 0
    assert main(["score", "--predictions", "p.txt", "--references", "r.jsonl"]) == 0
    assert calls["compare"] == (ReportConfig().num_examples, ReportConfig().examples_seed)
    assert calls["score"] == (EvaluationConfig().protocol, EvaluationConfig().bootstrap_resamples)
    assert main(["compare", str(tmp_path / "run"), "--examples", "2", "--seed", "7"]) == 0
    assert calls["compare"] == (2, 7)
