"""`dialogtune merge` (merged = unmerged, verified and recorded) and adapters that know their base."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from conftest import FAST_TRAINING, build_tiny_t5, one_error
from dialogtune import merging
from dialogtune.cli import main
from dialogtune.errors import DialogtuneError
from dialogtune.inference import Summarizer
from dialogtune.merging import probe_dialogues
from dialogtune.modeling import apply_lora, fingerprint, load_base, quiet_libraries, shape_fingerprint
from dialogtune.runs import read_run

TRAIN = {**FAST_TRAINING, "training.max_steps": 3, "training.per_device_train_batch_size": 4,
         "training.learning_rate": 5e-3, "lora.r": 4}
DIALOGUES = ["#Person1#: Where is the bank?\n#Person2#: Next to the post office.", "#Person1#: Hi.\n#Person2#: Hello."]


def _flags(overrides: dict) -> list[str]:
    return [item for key, value in overrides.items() for item in (f"--{key}", str(value))]


@pytest.fixture(scope="module")
def lora_run(tiny_model: Path, small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA run trained a few steps, so its adapter is not the zero update it starts as."""
    folder = tmp_path_factory.mktemp("merge") / "lora"
    argv = ["-q", "train", "--model", str(tiny_model), "--dataset", str(small_data), "--method", "lora", "--output", str(folder)]
    assert main(argv + _flags(TRAIN)) == 0
    return folder


@pytest.fixture(scope="module")
def merged(lora_run: Path) -> tuple[Path, str]:
    """The run merged by the CLI with the default 8 probes: (folder, what the command printed)."""
    out = lora_run.parent / "merged"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert main(["-q", "merge", str(lora_run), "--output", str(out)]) == 0
    return out, stdout.getvalue()


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


# ----------------------------------------------------------------- adapters know their base


def test_training_records_the_base_id_and_shape_fingerprint(lora_run, tiny_model):
    shapes = read_run(lora_run).metadata["base_shapes"]
    assert shapes["model"] == str(tiny_model) == read_run(lora_run).base_model
    assert shapes["shape_fingerprint"] == shape_fingerprint(load_base(str(tiny_model)))
    assert (shapes["d_model"], shapes["num_layers"], shapes["model_type"]) == (32, 2, "t5")


def test_shape_fingerprint_sees_shapes_not_values_nor_peft_wrapping(tiny_model, tmp_path):
    base = load_base(str(tiny_model))
    reference = shape_fingerprint(base)
    other_values = load_base(str(build_tiny_t5(tmp_path / "seed1", seed=1)))
    assert fingerprint(other_values) != fingerprint(base) and shape_fingerprint(other_values) == reference
    with quiet_libraries():
        wrapped = apply_lora(base, {"r": 2, "target_modules": ["q", "v"]})
    assert shape_fingerprint(wrapped) == reference
    assert shape_fingerprint(load_base(str(build_tiny_t5(tmp_path / "wide", d_model=48)))) != reference


def _move_to_base(run: Path, base: Path) -> None:
    """Point a copied run at another base, as a user editing the recipe would (the recorded shapes stay)."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"] = str(base)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    metadata = json.loads((run / "metadata.json").read_text())
    metadata["model"] = str(base)
    (run / "metadata.json").write_text(json.dumps(metadata))


def test_adapter_on_another_base_is_one_line_naming_both(capsys, lora_run, tiny_model, tmp_path):
    run = _copy(lora_run, tmp_path)
    other = build_tiny_t5(tmp_path / "wide", d_model=48)
    _move_to_base(run, other)
    for command in (["evaluate", str(run)], ["merge", str(run), "--output", str(tmp_path / "m")]):
        line = one_error(capsys, ["-q", *command])
        for fragment in (str(run), str(tiny_model), str(other), "d_model 32", "d_model 48", "does not fit"):
            assert fragment in line, line
    assert not (tmp_path / "m").exists()
    with pytest.raises(DialogtuneError, match="d_model 32.*d_model 48") as caught:
        Summarizer.from_adapters(str(other), {"a": lora_run})
    assert "\n" not in str(caught.value)


def test_a_base_with_the_same_shapes_under_another_name_is_accepted(lora_run, tiny_model, tmp_path):
    # Shapes decide, not the name: the same model copied elsewhere serves the adapter as the original does.
    copy = Path(shutil.copytree(tiny_model, tmp_path / "copy-of-base"))
    served = Summarizer.from_adapters(str(copy), {"a": lora_run})
    alone = Summarizer.from_run(lora_run, merge=False)
    assert served.summarize(DIALOGUES, adapter="a") == alone.summarize(DIALOGUES)


def test_runs_without_a_recorded_fingerprint_still_get_one_line(capsys, lora_run, tiny_model, tmp_path):
    run = _copy(lora_run, tmp_path)
    metadata = json.loads((run / "metadata.json").read_text())
    del metadata["base_shapes"]  # as written before fingerprints were recorded
    (run / "metadata.json").write_text(json.dumps(metadata))
    other = build_tiny_t5(tmp_path / "wide", d_model=48)
    _move_to_base(run, other)
    line = one_error(capsys, ["-q", "evaluate", str(run)])
    assert "size mismatch" in line and str(other) in line and str(tiny_model) in line  # adapter_config.json's base


# ----------------------------------------------------------------- merge


def test_merge_writes_a_verified_full_run(merged, lora_run, tiny_model):
    out, printed = merged
    assert "identical on 8 of 8 probes" in printed and "max |logit difference|" in printed
    figures = json.loads((out / "merge.json").read_text())
    assert figures["passed"] and figures["greedy_identical"] == figures["probes"] == 8
    assert figures["tokens_compared"] >= 8
    assert 0 <= figures["max_abs_logit_diff"] <= figures["tolerance"]
    # The adapter matters far beyond the tolerance, or identical outputs would prove nothing.
    assert figures["adapter_effect"] > 100 * figures["tolerance"]
    assert figures["merged_from"]["run"] == str(lora_run.resolve())
    run = read_run(out)
    assert (run.method, run.status.value, run.base_model) == ("full", "trained", str(tiny_model))
    assert run.metadata["merge"]["passed"] and run.metadata["merged_from"]["name"] == "lora"
    assert run.prompt == read_run(lora_run).prompt
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "adapter_model.safetensors").exists()
    assert not list(out.parent.glob(".merged.*")), "staging folders left behind"


def test_merged_folder_is_the_merged_model_and_evaluates(merged, lora_run, tiny_model, capsys):
    out, _ = merged
    from_disk = Summarizer.from_run(out)
    in_memory = Summarizer.from_run(lora_run, merge=True)
    assert fingerprint(from_disk.model) == fingerprint(in_memory.model)  # bit for bit what was verified
    base = load_base(str(tiny_model)).state_dict()
    changed = {n for n, t in from_disk.model.state_dict().items() if not torch.equal(t, base[n])}
    assert changed and all(n.endswith((".q.weight", ".v.weight")) for n in changed)  # the LoRA targets only
    assert main(["-q", "evaluate", str(out), "--max-eval-samples", "4"]) == 0
    assert read_run(out).metrics["num_examples"] == 4


def test_merge_of_a_full_run_is_refused(capsys, merged, tmp_path):
    out, _ = merged
    line = one_error(capsys, ["-q", "merge", str(out), "--output", str(tmp_path / "again")])
    assert "`full` run, not a LoRA adapter" in line and str(out) in line
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_nan_or_inf_adapter_weights_are_refused(capsys, lora_run, tmp_path, poison):
    run = _copy(lora_run, tmp_path)
    weights = load_file(run / "adapter_model.safetensors")
    name = next(n for n in sorted(weights) if "lora_B" in n)
    weights[name][0, 0] = poison
    save_file(weights, run / "adapter_model.safetensors")
    out = tmp_path / "merged"
    line = one_error(capsys, ["-q", "merge", str(run), "--output", str(out), "--probes", "2"])
    assert str(run) in line and "NaN or inf" in line
    assert not out.exists() and not list(tmp_path.glob(".merged.*"))


def test_output_policy_remerge_refuse_overwrite(capsys, lora_run, tmp_path):
    out = tmp_path / "out"
    assert main(["-q", "merge", str(lora_run), "--output", str(out), "--probes", "2"]) == 0
    assert main(["-q", "merge", str(lora_run), "--output", str(out), "--probes", "2"]) == 0  # its own earlier merge
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    line = one_error(capsys, ["-q", "merge", str(lora_run), "--output", str(other), "--probes", "2"])
    assert "not empty" in line and "--overwrite" in line and (other / "keep.txt").read_text() == "mine"
    assert main(["-q", "merge", str(lora_run), "--output", str(other), "--probes", "2", "--overwrite"]) == 0
    assert read_run(other).method == "full" and not (other / "keep.txt").exists()


def test_a_merge_that_changes_the_model_leaves_nothing_finished(capsys, lora_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert main(["-q", "merge", str(lora_run), "--output", str(out), "--probes", "2"]) == 0
    before = (out / "merge.json").read_text()
    real = merging.merge_adapter

    def broken(model, folder):  # a merge that mis-scales one layer: what verification is for
        model = real(model, folder)
        with torch.no_grad():
            model.lm_head.weight.mul_(1.01)
        return model

    monkeypatch.setattr(merging, "merge_adapter", broken)
    line = one_error(capsys, ["-q", "merge", str(lora_run), "--output", str(out), "--probes", "2"])
    assert str(lora_run) in line and "changed the model" in line and "max |logit difference|" in line
    assert (out / "merge.json").read_text() == before, "the earlier, verified merge must stay as it was"
    assert not list(tmp_path.glob(".out.*"))


def test_probes_fall_back_when_the_runs_data_is_gone(lora_run, tmp_path, caplog):
    run = _copy(lora_run, tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["dataset"] = str(tmp_path / "gone")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    ids, dialogues, source = probe_dialogues(read_run(run), 3)
    assert source == "builtin:dialogs (test split)" and len(dialogues) == 3 == len(ids)
    assert "could not be read" in caplog.text
    rows = [{"id": f"p{i}", "dialogue": d, "prediction": "", "references": ["x"]} for i, d in enumerate(DIALOGUES)]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert probe_dialogues(read_run(run), 3) == (["p0", "p1"], DIALOGUES, str(run / "predictions.jsonl"))
