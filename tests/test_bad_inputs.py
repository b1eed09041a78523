"""The bad-input matrix (docs/bad-inputs.md): every case is one line, exit code 2, no traceback, no finished run.

Each case runs the real CLI entry in-process. The line must name the bad thing (file, row, column,
option or folder) and say how to fix it; the output folder must not be left looking finished.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from conftest import FAST_TRAINING, REPO, build_tiny_t5, corpus_rows, write_jsonl
from dialogtune.cli import main
from dialogtune.config import safe_name
from dialogtune.errors import DialogtuneError

# Smaller than FAST_TRAINING's 6 steps: these runs only need to exist, not to learn.
QUICK = {**FAST_TRAINING, "training.max_steps": 1}


def _flags(overrides: dict) -> list[str]:
    out: list[str] = []
    for key, value in overrides.items():
        out += [f"--{key}", str(value)]
    return out


def _assert_not_finished(folder: Path | None) -> None:
    """A failed command leaves no metrics.json and no `evaluated` status behind."""
    if folder is None:
        return
    assert not (folder / "metrics.json").exists(), f"{folder} looks finished after a failed command"
    metadata = folder / "metadata.json"
    if metadata.exists():
        assert json.loads(metadata.read_text())["status"] != "evaluated"


def fails(capsys: pytest.CaptureFixture, argv: list[str], fragments: tuple[str, ...], output: Path | None) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("dialogtune: error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    _assert_not_finished(output)
    return lines[0]


# ---------------------------------------------------------------- fixtures


def _trained(method: str, tiny_model: Path, small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad-inputs") / method
    argv = ["-q", "train", "--model", str(tiny_model), "--dataset", str(small_data), "--method", method, "--output", str(folder)]
    assert main(argv + _flags(QUICK)) == 0
    return folder


@pytest.fixture(scope="module")
def lora_run(tiny_model: Path, small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained (not evaluated) LoRA run folder; tests copy it before breaking it."""
    return _trained("lora", tiny_model, small_data, tmp_path_factory)


@pytest.fixture(scope="module")
def full_run(tiny_model: Path, small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trained("full", tiny_model, small_data, tmp_path_factory)


@pytest.fixture(scope="module")
def pickle_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its weights written only as pytorch_model.bin (torch.save of the state dict)."""
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("pickle-model")
    for item in tiny_model.iterdir():
        if item.name != "model.safetensors":
            shutil.copy(item, folder)
    torch.save(load_file(tiny_model / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


def _copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def _train(tiny_model: Path, data: Path | str, out: Path, *extra: str) -> list[str]:
    argv = ["-q", "train", "--model", str(tiny_model), "--dataset", str(data), "--method", "lora", "--output", str(out)]
    return argv + _flags(QUICK) + list(extra)


# ------------------------------------------------------------- data files

ROW = {"id": "a", "dialogue": "#Person1#: hi\n#Person2#: hello", "summary": "They greet.", "topic": "t"}


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _mixed_folder(tmp: Path) -> Path:
    """One split in two files: the hub layout (id/summary) and the original one (fname/summary1..3)."""
    write_jsonl(tmp / "data" / "train_hub.jsonl", [ROW])
    original = {"fname": "train_9", "dialogue": "#Person1#: bye", "summary1": "a", "summary2": "b", "summary3": "c"}
    write_jsonl(tmp / "data" / "train_orig.jsonl", [original])
    return tmp / "data"


# Each builder writes the bad data under tmp and returns (dataset path, fragments the line must hold).
DATA_CASES: dict[str, Callable[[Path], tuple[Path, tuple[str, ...]]]] = {
    "missing file": lambda t: (t / "nope.jsonl", ("nope.jsonl", "does not exist", "check `data.dataset`")),
    "empty jsonl (0 bytes)": lambda t: (_write(t / "train.jsonl", b""), ("train.jsonl is empty", "at least one row")),
    "empty csv (0 bytes)": lambda t: (_write(t / "train.csv", b""), ("train.csv is empty", "header row")),
    "csv with only a header": lambda t: (
        _write(t / "train.csv", "id,dialogue,summary\n"),
        ("train.csv has a header row but no data rows", "add rows"),
    ),
    "non-utf8 file": lambda t: (
        _write(t / "train.csv", "id,dialogue,summary\n1,caf\xe9 talk,s\n".encode("latin-1")),
        ("train.csv is not UTF-8", "line 2", "iconv"),
    ),
    "missing dialogue column": lambda t: (
        write_jsonl(t / "train.jsonl", [{"id": "a", "text": "hi", "summary": "s"}]),
        ("train.jsonl line 1", "no `dialogue` column", "set data.dialogue_column"),
    ),
    "empty dialogue cell": lambda t: (
        write_jsonl(t / "train.jsonl", [ROW, {**ROW, "id": "b", "dialogue": "  "}]),
        ("train.jsonl line 2", "`dialogue` is empty", "fill it in or remove the row"),
    ),
    "empty summary cell": lambda t: (
        write_jsonl(t / "train.jsonl", [ROW, {**ROW, "id": "b", "dialogue": "#Person1#: other", "summary": ""}]),
        ("train.jsonl line 2", "`summary` is empty", "fill it in or remove the row"),
    ),
    "duplicate id, different dialogues": lambda t: (
        write_jsonl(t / "train.jsonl", [ROW, {**ROW, "summary": "x"}, {**ROW, "dialogue": "#Person1#: something else"}]),
        ("train.jsonl line 1 and", "train.jsonl line 3", "share the id `a`", "give each dialogue its own id"),
    ),
    "mixed layouts in one split (two files)": lambda t: (
        _mixed_folder(t),
        ("train_orig.jsonl line 1 uses the `fname` + `summary1`", "train_hub.jsonl line 1 uses `id` + `summary`", "convert the rows"),
    ),
    "mixed layouts in one file": lambda t: (
        write_jsonl(t / "train.jsonl", [ROW, {"fname": "x", "dialogue": "#Person1#: b", "summary1": "a", "summary2": "b"}]),
        ("train.jsonl line 2 uses the `fname`", "train.jsonl line 1 uses `id`", "one split must use one layout"),
    ),
    "test dialogue also in train (same text, other case and id)": lambda t: (
        _leaky_folder(t),
        ("1 of 1 test dialogues also appear in the train split", "e.g. id t1, same text as train id a", "--allow-overlap"),
    ),
}


def _leaky_folder(tmp: Path) -> Path:
    """A test split that repeats a train dialogue, differing only in case, spacing and id."""
    write_jsonl(tmp / "data" / "train.jsonl", [ROW, {**ROW, "id": "b", "dialogue": "#Person1#: bye"}])
    write_jsonl(tmp / "data" / "test.jsonl", [{**ROW, "id": "t1", "dialogue": "#PERSON1#:  Hi\n#Person2#: hello"}])
    return tmp / "data"


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_file(capsys, tiny_model, tmp_path, case):
    dataset, fragments = DATA_CASES[case](tmp_path)
    out = tmp_path / "run"
    fails(capsys, _train(tiny_model, dataset, out), fragments, out)
    assert not out.exists()  # data is checked before the run folder is created


def test_summary_column_that_is_not_there(capsys, tiny_model, small_data, tmp_path):
    out = tmp_path / "run"
    argv = _train(tiny_model, small_data, out, "--data.summary_column", "tldr")
    fails(capsys, argv, ("train.jsonl line 1", "no `tldr` column", "set data.summary_column"), out)


def test_same_dialogue_under_one_id_is_still_merged_not_refused(tmp_path):
    """The hub test split's rows share a dialogue: they stay one multi-reference record, not a duplicate-id error."""
    from dialogtune.config import DataConfig
    from dialogtune.data import load_split

    path = write_jsonl(tmp_path / "test.jsonl", [ROW, {**ROW, "summary": "Two people say hello."}])
    (record,) = load_split(DataConfig(dataset=str(path)), "test")
    assert record["id"] == "a" and record["references"] == ["They greet.", "Two people say hello."]


def test_allow_overlap_trains_and_records_the_overlap(caplog, tiny_model, tmp_path):
    out = tmp_path / "run"
    caplog.set_level(logging.WARNING, logger="dialogtune")
    assert main(_train(tiny_model, _leaky_folder(tmp_path), out, "--allow-overlap")) == 0
    assert "1 of 1 test dialogues also appear in the train split" in caplog.text
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["data_overlap"]["overlap"] == 1 and metadata["data_overlap"]["example"] == "t1"


def test_a_100000_token_dialogue_is_truncated_and_counted_not_refused(caplog, tiny_model, small_data, tmp_path):
    data = Path(shutil.copytree(small_data, tmp_path / "data"))
    long_row = {"id": "long", "dialogue": "#Person1#: " + " ".join(["hello"] * 100_000), "summary": "Someone says hello."}
    train_rows = corpus_rows("train", 16) + [long_row]
    write_jsonl(data / "train.jsonl", train_rows)
    long_test = {"id": "long_test", "dialogue": "#Person2#: " + " ".join(["goodbye"] * 100_000), "summary": "Bye."}
    write_jsonl(data / "test.jsonl", corpus_rows("test", 3) + [long_test])  # not long_row: no test dialogue in train
    out = tmp_path / "run"
    caplog.set_level(logging.INFO, logger="dialogtune")
    argv = ["train", "--model", str(tiny_model), "--dataset", str(data), "--method", "lora", "--output", str(out)]
    assert main(argv + _flags(QUICK)) == 0
    tokens = json.loads((out / "metadata.json").read_text())["tokens"]
    assert tokens["truncated_sources"] == 1, tokens
    assert re.search(r"truncated 1 of \d+ prompts", caplog.text)
    assert main(["-q", "evaluate", str(out)]) == 0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert "long_test" in {p["id"] for p in predictions}


# ----------------------------------------------------------------- config

CONFIG_CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "unknown key on the command line": (["--lora.rank", "4"], ("unknown config key `lora.rank`", "use a field of peft.LoraConfig")),
    "lora.r not a number": (["--lora.r", "abc"], ("`lora.r` is 'abc'", "whole number")),
    "epochs not a number": (["--training.num_train_epochs", "many"], ("`training.num_train_epochs` is 'many'", "must be a number")),
    "max_source_length not whole": (["--data.max_source_length", "1.5"], ("`data.max_source_length` is 1.5", "whole number")),
    "negative learning rate": (["--training.learning_rate", "-1"], ("`training.learning_rate` is -1", "must be positive")),
    "lora.r zero": (["--lora.r", "0"], ("`lora.r` is 0", "positive whole number")),
    "dropout of 1 or more": (["--dropout", "1.5"], ("`dropout` is 1.5", "[0, 1)")),
    "fp16 with T5": (["--training.fp16", "true"], ("training.fp16", "overflow", "bf16")),
    "lora target matching nothing": (["--lora.target_modules", "q,wi"], ("'wi' matches no module", "wi_0")),
    "template without placeholder": (["--prompt.template", "no placeholder"], ("`prompt.template`", "add one")),
    "negative shots": (["--prompt.shots", "-1"], ("`prompt.shots` is -1", "use 0 or more")),
    "unknown protocol": (["--evaluation.protocol", "best"], ("`evaluation.protocol` is 'best'", "mean, max or field:NAME")),
    "generation options that contradict": (["--generation.temperature", "0.5"], ("temperature", "do_sample")),
    "split sizes not summing to 1": (["--data.split_sizes", "0.8,0.1,0.2"], ("`data.split_sizes` is", "sum to 1", "[0.9, 0.05, 0.05]")),
    "unknown plain option": (["--learning-rate", "3"], ("unrecognized arguments: --learning-rate", "--help")),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_value(capsys, tiny_model, small_data, tmp_path, case):
    extra, fragments = CONFIG_CASES[case]
    out = tmp_path / "run"
    fails(capsys, _train(tiny_model, small_data, out, *extra), fragments, out)
    assert not out.exists()  # refused before any folder or model work


def test_max_eval_samples_zero(capsys, tiny_model, small_data, tmp_path):
    out = tmp_path / "orig"
    argv = ["-q", "evaluate", "--method", "original", "--model", str(tiny_model), "--dataset", str(small_data), "--output", str(out)]
    fails(capsys, argv + ["--max-eval-samples", "0"], ("`data.max_eval_samples` is 0", "use a positive number"), out)


YAML_CASES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "unknown key in yaml": (yaml.safe_dump({"trainig": {"learning_rate": 1e-3}}), ("`trainig`", "did you mean `training`")),
    "bad yaml syntax": ("model: [unclosed\nseed: 1\n", ("is not valid YAML", "line", "fix the syntax")),
    "yaml that is a list": ("- model\n- seed\n", ("must be a mapping of options",)),
    "config file that does not exist": (None, ("does not exist", "check the path")),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_bad_config_file(capsys, tiny_model, small_data, tmp_path, case):
    text, fragments = YAML_CASES[case]
    path = tmp_path / "recipe.yaml"
    if text is not None:
        path.write_text(text)
    out = tmp_path / "run"
    fails(capsys, _train(tiny_model, small_data, out, "--config", str(path)), (str(path), *fragments), out)


def test_run_method_name_with_path_traversal(capsys, tiny_model, small_data, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(tiny_model), "data": {"dataset": str(small_data)}, "run": {"methods": ["../evil"]}}))
    out = tmp_path / "runs"
    fails(capsys, ["-q", "run", str(recipe), "--output", str(out)], ("'../evil' is not a valid name", "no `/`"), out)
    assert not (tmp_path / "evil").exists() and not out.exists()


@pytest.mark.parametrize("name", ["..", "../x", "a/b", ".hidden", "", "a\\b"])
def test_safe_name_refuses_anything_that_leaves_its_folder(name):
    with pytest.raises(DialogtuneError, match="not a valid name"):
        safe_name(name, "run name")
    assert safe_name("lora-r16_v2", "run name") == "lora-r16_v2"


# ----------------------------------------------------------- model folders


def test_model_folder_that_is_not_seq2seq(capsys, small_data, tmp_path):
    from transformers import GPT2Config

    folder = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(folder)
    out = tmp_path / "orig"
    argv = ["-q", "evaluate", "--method", "original", "--model", str(folder), "--dataset", str(small_data), "--output", str(out)]
    fails(capsys, argv, (str(folder), "`gpt2` model, not a sequence-to-sequence one", "pass a T5"), out)


def test_model_folder_without_tokenizer(capsys, tiny_model, small_data, tmp_path):
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model / name, folder)
    out = tmp_path / "run"
    fails(capsys, _train(folder, small_data, out), (str(folder), "no tokenizer files", "tokenizer.save_pretrained"), out)


def test_model_path_that_does_not_exist(capsys, small_data, tmp_path):
    out = tmp_path / "run"
    fails(capsys, _train(tmp_path / "missing", small_data, out), ("missing", "not a folder", "pass a model folder"), out)


def test_model_folder_with_pickle_only_weights(capsys, pickle_model, small_data, tmp_path):
    out = tmp_path / "run"
    fails(capsys, _train(pickle_model, small_data, out), (str(pickle_model), "pytorch_model.bin", "--allow-pickle"), out)


def test_allow_pickle_loads_pickle_weights_with_a_warning(caplog, capsys, pickle_model, tiny_model, small_data, tmp_path):
    out = tmp_path / "orig"
    argv = ["-q", "evaluate", "--method", "original", "--model", str(pickle_model), "--dataset", str(small_data),
            "--output", str(out), "--max-eval-samples", "2"] + _flags(QUICK)
    assert main(argv + ["--allow-pickle"]) == 0, capsys.readouterr().err
    assert "pytorch_model.bin" in caplog.text and "execute arbitrary code" in caplog.text
    # The flag lasts for that command only: the next one refuses pickle again.
    fails(capsys, argv + ["--overwrite"], ("--allow-pickle",), None)


# ---------------------------------------------------------------- adapters and run folders


def test_adapter_for_another_base(capsys, lora_run, tmp_path):
    run = _copy_run(lora_run, tmp_path)
    other = build_tiny_t5(tmp_path / "other", d_model=48)
    base = json.loads((run / "metadata.json").read_text())["model"]
    for name in ("config.yaml", "metadata.json"):
        path = run / name
        path.write_text(path.read_text().replace(base, str(other)))
    fails(capsys, ["-q", "evaluate", str(run)], (str(run), "does not fit this base model", "size mismatch", "adapter_config.json"), run)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_adapter_safetensors(capsys, lora_run, tmp_path, damage):
    run = _copy_run(lora_run, tmp_path)
    weights = run / "adapter_model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"\x00garbage" * 10)
    fails(capsys, ["-q", "evaluate", str(run)], (str(weights), "not a valid safetensors file", "re-train the run"), run)


def test_pickle_only_adapter(capsys, lora_run, tmp_path):
    from safetensors.torch import load_file

    run = _copy_run(lora_run, tmp_path)
    weights = run / "adapter_model.safetensors"
    torch.save(load_file(weights), run / "adapter_model.bin")
    weights.unlink()
    fails(capsys, ["-q", "evaluate", str(run)], (str(run), "adapter_model.bin", "--allow-pickle"), run)


def test_corrupt_full_model_safetensors(capsys, full_run, tmp_path):
    run = _copy_run(full_run, tmp_path)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    fails(capsys, ["-q", "evaluate", str(run)], (str(weights), "not a valid safetensors file", "re-run training"), run)


def test_evaluate_unknown_split(capsys, lora_run, tmp_path):
    run = _copy_run(lora_run, tmp_path)
    fails(capsys, ["-q", "evaluate", str(run), "--split", "nosuchsplit"], ("no `nosuchsplit` split", "found: test, train, validation"), run)


def test_evaluate_run_with_max_eval_samples_zero(capsys, lora_run, tmp_path):
    run = _copy_run(lora_run, tmp_path)
    fails(capsys, ["-q", "evaluate", str(run), "--max-eval-samples", "0"], ("sample limit for the `test` split is 0", "--max-eval-samples"), run)


def test_output_that_holds_a_finished_run(capsys, tiny_model, small_data, tmp_path):
    out = tmp_path / "orig"
    argv = ["-q", "evaluate", "--method", "original", "--model", str(tiny_model), "--dataset", str(small_data),
            "--output", str(out), "--max-eval-samples", "2"] + _flags(QUICK)
    assert main(argv) == 0
    before = (out / "metrics.json").read_bytes()
    fails(capsys, argv, (str(out), "already holds a finished run", "--overwrite"), None)
    assert (out / "metrics.json").read_bytes() == before  # the finished run is untouched
    assert main(argv + ["--overwrite"]) == 0  # and --overwrite, as the message says, replaces it


RUN_FOLDER_CASES: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    "evaluate a folder that does not exist": (lambda t: ["evaluate", str(t / "gone")], ("gone does not exist", "dialogtune train")),
    "evaluate a folder that is not a run": (
        lambda t: ["evaluate", str(_mkdir(t / "plain"))], ("plain is not a dialogtune run folder", "check the path")
    ),
    "compare a folder that does not exist": (lambda t: ["compare", str(t / "gone")], ("gone does not exist", "dialogtune train")),
    "summarize with a run that does not exist": (
        lambda t: ["summarize", "#Person1#: hi", "--run", str(t / "gone")], ("gone does not exist", "dialogtune train")
    ),
}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("case", list(RUN_FOLDER_CASES))
def test_bad_run_folder(capsys, tmp_path, case):
    build, fragments = RUN_FOLDER_CASES[case]
    fails(capsys, ["-q", *build(tmp_path)], fragments, None)
    assert not (tmp_path / "gone").exists()


# ------------------------------------------------------------------ safe loading


def test_no_code_path_trusts_remote_code():
    """trust_remote_code must never be True anywhere; loaders pass False explicitly."""
    sources = {path: path.read_text(encoding="utf-8") for path in (REPO / "dialogtune").rglob("*.py")}
    passed = [(p.name, m) for p, text in sources.items() for m in re.findall(r"trust_remote_code\s*=\s*(\w+)", text)]
    assert passed and all(value == "False" for _, value in passed), passed
    modeling = sources[REPO / "dialogtune" / "modeling.py"]
    assert modeling.count("trust_remote_code=False") >= 3  # config, tokenizer, model
