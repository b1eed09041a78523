import logging

from conftest import FAST_TRAINING
from dialogtune.cli import main


def _train(tiny_model, small_data, out, **extra):
    flags = {**FAST_TRAINING, **extra}
    return ["-q", "train", "--model", str(tiny_model), "--dataset", str(small_data), "--method", "full",
            "--output", str(out)] + [f"--{k}={v}" for k, v in flags.items()]


def test_non_finite_loss_stops_training_with_one_line(tiny_model, small_data, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(_train(tiny_model, small_data, out, **{"training.learning_rate": 1e30, "training.max_steps": 12}))
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = [l for l in err.splitlines() if l.startswith("dialogtune: error:")]
    assert "training loss is" in line and "learning_rate" in line
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()


def test_suspicious_first_loss_is_warned_about(tiny_model, small_data, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("dialogtune.train.FIRST_LOSS_FACTOR", 0.01)  # any real loss is now "far above"
    with caplog.at_level(logging.WARNING, logger="dialogtune.train"):
        assert main(_train(tiny_model, small_data, tmp_path / "run", **{"training.max_steps": 1})) == 0
    assert any("first training loss" in r.message for r in caplog.records)


def test_normal_first_loss_is_not_warned_about(tiny_model, small_data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dialogtune.train"):
        assert main(_train(tiny_model, small_data, tmp_path / "run", **{"training.max_steps": 1})) == 0
    assert not any("first training loss" in r.message for r in caplog.records)


def test_heavy_truncation_is_warned_about_and_recorded(tiny_model, small_data, tmp_path, caplog):
    # 40 tokens: room for the 24-token instruction and cue, and a little of every dialogue.
    import json

    with caplog.at_level(logging.WARNING, logger="dialogtune.preprocess"):
        assert main(_train(tiny_model, small_data, tmp_path / "run", **{"training.max_steps": 1, "data.max_source_length": 40})) == 0
    assert any("100% of prompts were truncated (more than 5%)" in r.getMessage() for r in caplog.records)
    tokens = json.loads((tmp_path / "run" / "metadata.json").read_text())["tokens"]
    assert tokens["truncated_sources"] == tokens["examples"] == 48
