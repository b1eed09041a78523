import json

from dialogtune.cli import main
from dialogtune.metrics import METRICS


def test_quick_demo_runs_offline_and_writes_a_valid_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| original | original |" in printed and str(out / "report.html") in printed
    report = json.loads((out / "report.json").read_text())
    assert [r["method"] for r in report["runs"]] == ["original", "full", "lora"]
    for run in report["runs"]:
        assert set(run["rouge"]) == set(METRICS) and run["num_examples"] == 16
        assert run["total_params"] > 1_000_000
    original, full, lora = report["runs"]
    assert lora["trainable_params"] / lora["total_params"] <= 0.08  # r 16 on the feed-forward layers: 7.2%
    assert lora["size_bytes"] <= 0.10 * full["size_bytes"]
    assert json.loads((out / "lora" / "metadata.json").read_text())["model"] == "builtin:tiny-t5"
    assert len(report["examples"]) == 2
    # The learning curves: two validations each (steps 6 and 12 of 12), the weights from the better one.
    assert original["curves"] is None
    for run in (full, lora):
        curves = run["curves"]
        assert [p["step"] for p in curves["validation"]] == [6, 12] and curves["val_samples"] == 8
        best = max(curves["validation"], key=lambda p: p["rouge1"])  # the first of equals, as transformers
        assert curves["best"]["step"] == curves["weights"]["step"] == best["step"]
    assert 'aria-label="learning curves"' in (out / "report.html").read_text()


def test_demo_with_another_dataset_drops_the_settings_sized_for_the_bundled_corpus():
    from dialogtune.demo import demo_config

    bundled = demo_config()
    assert bundled.data.max_source_length == 256 and bundled.generation["max_new_tokens"] == 96
    # LoRA's memory saver is left to its `auto` default, which decides by device for any model.
    assert "activation_checkpointing" not in bundled.training
    real_model = demo_config(overrides={"model": "google/flan-t5-base"})
    assert real_model.data.max_source_length == 256  # still the bundled corpus
    real_data = demo_config(overrides={"data.dataset": "knkarthick/dialogsum"})
    assert real_data.data.max_source_length == 512 and "max_new_tokens" not in real_data.generation


# Measured per run, so they differ between two identical runs; everything else in report.json must not.
TIMINGS = {"train_seconds", "train_examples_per_second", "train_tokens_per_second", "peak_memory_bytes",
           "summaries_per_second", "generation_seconds", "folder", "validation_seconds"}


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_two_quick_demos_on_one_machine_write_the_same_report(tmp_path):
    """Same code, same machine, same seed: bit-identical scores, CIs, examples and costs (timings aside)."""
    reports = []
    for name in ("first", "second"):
        assert main(["-q", "demo", "--quick", "--out", str(tmp_path / name)]) == 0
        reports.append(json.loads((tmp_path / name / "report.json").read_text()))
    assert reports[0]["runs"][0]["train_seconds"] is not None  # the stripped keys exist, so stripping is real
    assert _without_timings(reports[0]) == _without_timings(reports[1])
