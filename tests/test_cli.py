"""Bad input gives exit code 2 and one line on stderr, never a traceback."""

import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import FAST_TRAINING, REPO, build_tiny_t5, write_jsonl
from dialogtune.cli import main


def _flags(overrides):
    out = []
    for key, value in overrides.items():
        out += [f"--{key}", str(value)]
    return out


def _fails_with(capsys, argv, *fragments):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("dialogtune: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def train_args(tiny_model, small_data, tmp_path):
    return ["-q", "train", "--model", str(tiny_model), "--method", "lora", "--output", str(tmp_path / "run")]


def test_missing_data_file(capsys, train_args, tmp_path):
    _fails_with(capsys, train_args + ["--dataset", str(tmp_path / "nope.jsonl")], "nope.jsonl", "does not exist")


def test_missing_column(capsys, train_args, tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"id": "a", "text": "hi", "summary": "s"}])
    _fails_with(capsys, train_args + ["--dataset", str(path)], f"{path} line 1", "no `dialogue` column", "data.dialogue_column")


@pytest.mark.parametrize("field", ["dialogue", "summary"])
def test_empty_cell(capsys, train_args, tmp_path, field):
    row = {"id": "a", "dialogue": "#Person1#: hi", "summary": "s"}
    row[field] = ""
    path = write_jsonl(tmp_path / "train.jsonl", [{"id": "z", "dialogue": "ok", "summary": "ok"}, row])
    _fails_with(capsys, train_args + ["--dataset", str(path)], f"{path} line 2", f"`{field}` is empty")


def test_non_utf8_file(capsys, train_args, tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("id,dialogue,summary\n1,caf\xe9 talk,s\n".encode("latin-1"))
    _fails_with(capsys, train_args + ["--dataset", str(path)], str(path), "not UTF-8", "line 2")


def test_unknown_config_key_on_the_command_line(capsys, train_args, small_data):
    _fails_with(capsys, train_args + ["--dataset", str(small_data), "--lora.rank", "4"], "unknown config key `lora.rank`")


def test_unknown_config_key_in_yaml(capsys, train_args, small_data, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"trainig": {"learning_rate": 1e-3}}))
    _fails_with(capsys, train_args + ["--config", str(config)], str(config), "`trainig`", "did you mean `training`")


def test_unknown_plain_option(capsys, train_args):
    _fails_with(capsys, train_args + ["--learning-rate", "3"], "unrecognized arguments: --learning-rate")


def test_fp16_is_refused_with_the_reason(capsys, train_args, small_data):
    _fails_with(capsys, train_args + ["--dataset", str(small_data), "--training.fp16", "true"], "fp16", "overflow", "bf16")


def test_lora_target_matching_nothing(capsys, train_args, small_data):
    _fails_with(capsys, train_args + ["--dataset", str(small_data), "--lora.target_modules", "q,wi"], "'wi' matches no module", "wi_0")


def test_model_folder_that_is_not_seq2seq(capsys, train_args, small_data, tmp_path):
    from transformers import GPT2Config

    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(folder)
    shutil.copy(REPO / "dialogtune/assets/tiny-t5/tokenizer.json", folder) if (REPO / "dialogtune/assets/tiny-t5/tokenizer.json").exists() else None
    args = ["-q", "evaluate", "--method", "original", "--model", str(folder), "--dataset", str(small_data), "--output", str(tmp_path / "o")]
    _fails_with(capsys, args, str(folder), "not a sequence-to-sequence")


def test_model_path_that_does_not_exist(capsys, small_data, tmp_path):
    args = ["evaluate", "--method", "original", "--model", str(tmp_path / "missing"), "--dataset", str(small_data)]
    _fails_with(capsys, args, "missing", "not a folder")


def test_adapter_whose_base_does_not_match(capsys, tiny_model, small_data, tmp_path):
    run = tmp_path / "lora"
    code = main(["-q", "train", "--model", str(tiny_model), "--dataset", str(small_data), "--method", "lora", "--output", str(run)] + _flags(FAST_TRAINING))
    assert code == 0
    other = build_tiny_t5(tmp_path / "other", d_model=48)
    for name in ("config.yaml", "metadata.json"):
        path = run / name
        path.write_text(path.read_text().replace(str(tiny_model), str(other)))
    _fails_with(capsys, ["-q", "evaluate", str(run)], "adapter", "does not fit this base model")


def test_finished_run_is_not_overwritten(capsys, tiny_model, small_data, tmp_path):
    out = tmp_path / "orig"
    args = ["-q", "evaluate", "--method", "original", "--model", str(tiny_model), "--dataset", str(small_data), "--output", str(out)] + _flags(FAST_TRAINING)
    assert main(args) == 0
    _fails_with(capsys, args, str(out), "--overwrite")
    assert main(args + ["--overwrite"]) == 0


def test_module_entry_point_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dialogtune", "score", "--predictions", str(tmp_path / "p.txt"), "--references", str(tmp_path / "r.jsonl")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "r.jsonl does not exist" in result.stderr


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "dialogtune", "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0
    for command in ("run", "train", "evaluate", "compare", "summarize", "score"):
        assert command in result.stdout
