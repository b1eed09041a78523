"""RunFolder owns a run folder: status, per-split results, and the finished / resume / overwrite policy."""

import json

import pytest

from dialogtune.checkpoints import MARKER
from dialogtune.configio import load_config
from dialogtune.errors import DialogtuneError
from dialogtune.runs import Plan, RunFolder, Status, read_run


def _config(tmp_path, **overrides):
    return load_config(None, {"model": "builtin:tiny-t5", "method": "lora", "output": str(tmp_path / "run"), **overrides})


def _result(run, split, score):
    run.write_results(split, [{"id": "a", "prediction": "p"}], {"split": split, "rouge1": score})


def test_a_new_run_describes_itself_and_starts_created(tmp_path):
    config = _config(tmp_path)
    run = RunFolder.create(config.output, config)
    again = read_run(config.output)
    assert again.status is Status.CREATED and again.method == "lora" and again.base_model == "builtin:tiny-t5"
    assert again.prompt.template == config.prompt.template and not again.changed_keys(config)
    assert json.loads((run.folder / "metadata.json").read_text())["status"] == "created"
    assert again.metrics is None and not again.finished


def test_scoring_another_split_keeps_the_test_scores(tmp_path):
    config = _config(tmp_path)
    run = RunFolder.create(config.output, config)
    _result(run, "test", 1.0)
    _result(run, "validation", 2.0)
    again = read_run(config.output)
    assert again.metrics == {"split": "test", "rouge1": 1.0}
    assert again.read_metrics("validation") == {"split": "validation", "rouge1": 2.0}
    assert (run.folder / "metrics.json").is_file() and (run.folder / "metrics.validation.json").is_file()
    assert (run.folder / "predictions.validation.jsonl").is_file() and again.status is Status.EVALUATED


def test_plan_keeps_finished_refuses_other_settings_and_overwrites_on_request(tmp_path):
    config = _config(tmp_path)
    assert RunFolder.plan(config.output, config) == (Plan.START, None)
    run = RunFolder.create(config.output, config)
    _result(run, "test", 1.0)
    assert RunFolder.plan(config.output, config) == (Plan.KEEP, None)
    other = _config(tmp_path, **{"lora.r": 4})
    with pytest.raises(DialogtuneError, match="finished run with other settings"):
        RunFolder.plan(config.output, other)
    assert RunFolder.plan(config.output, other, overwrite=True) == (Plan.START, None)
    with pytest.raises(DialogtuneError, match="already holds a finished run"):
        RunFolder.create(config.output, config)


def test_plan_evaluates_a_trained_run_and_resumes_an_unfinished_one(tmp_path):
    config = _config(tmp_path)
    run = RunFolder.create(config.output, config)
    run.update(Status.TRAINING)
    assert RunFolder.plan(config.output, config) == (Plan.START, None), "no checkpoint yet: start again"
    checkpoint = run.folder / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (run.folder / "checkpoints" / "checkpoint-6").mkdir()  # half-written: no marker
    (checkpoint / MARKER).write_text("ok\n")
    for status in (Status.TRAINING, Status.FAILED):
        run.update(status)
        assert RunFolder.plan(config.output, config) == (Plan.RESUME, checkpoint)
    assert not (run.folder / "checkpoints" / "checkpoint-6").exists(), "an incomplete checkpoint was kept"
    with pytest.raises(DialogtuneError, match=r"unfinished run with other settings \(lora\)"):
        RunFolder.plan(config.output, _config(tmp_path, **{"lora.r": 4}))
    for status in (Status.TRAINED, Status.EVALUATING):
        run.update(status)
        assert RunFolder.plan(config.output, config) == (Plan.EVALUATE, None)


def test_a_file_in_the_way_is_refused_even_with_overwrite(tmp_path):
    path = tmp_path / "run"
    path.write_text("not a folder")
    with pytest.raises(DialogtuneError, match="is a file"):
        RunFolder.plan(path, _config(tmp_path), overwrite=True)


def test_folders_from_before_the_status_enum_still_read(tmp_path):
    config = _config(tmp_path)
    run = RunFolder.create(config.output, config)
    meta = json.loads((run.folder / "metadata.json").read_text())
    (run.folder / "metadata.json").write_text(json.dumps({**meta, "status": "started"}))
    assert read_run(run.folder).status is Status.TRAINING
