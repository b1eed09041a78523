"""`dialogtune sweep`: grid expansion, deterministic point names, resume that skips finished points, the
Pareto front, the report, and bad inputs (one line, exit 2)."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from conftest import FAST_TRAINING, REPO
from dialogtune import pipeline
from dialogtune.cli import main
from dialogtune.configio import read_yaml
from dialogtune.errors import DialogtuneError
from dialogtune.report.pareto import pareto_front
from dialogtune.sweep import default_jobs, expand, plan_points, point_name, read_sweep, run_sweep


def _recipe(path, tiny_model, small_data, sweep, **extra):
    tree = {"model": str(tiny_model), "method": "lora", "output": str(path.parent / "sweep"), "data": {"dataset": str(small_data)},
            "sweep": sweep, **extra}
    for key, value in {**FAST_TRAINING, "data.max_eval_samples": 4}.items():
        section, leaf = key.split(".")
        tree.setdefault(section, {})[leaf] = value
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def test_the_grid_is_every_combination_first_key_slowest():
    points = expand({"lora.r": [1, 4], "lora.target_modules": [["q", "v"], "all-linear", ["wo"]]})
    assert len(points) == 6
    assert [p["lora.r"] for p in points] == [1, 1, 1, 4, 4, 4]
    assert points[1] == {"lora.r": 1, "lora.target_modules": "all-linear"}


def test_point_names_come_from_the_values_alone():
    values = {"lora.r": 16, "lora.target_modules": ["q", "v"], "training.learning_rate": 0.001}
    assert point_name(values) == "r=16__target_modules=q+v__learning_rate=0.001"
    assert point_name(dict(values)) == point_name(values)  # deterministic: a rerun finds the same folder
    assert point_name({"lora.dropout": 0.1, "dropout": 0.2}) == "lora.dropout=0.1__dropout=0.2"  # same leaf: whole keys
    assert point_name({"prompt.template": "Sum up: {dialogue}"}) == "template=Sum-up---dialogue-"
    long = point_name({"lora.target_modules": [f"module_{i}" for i in range(40)]})
    assert len(long) <= 100 and re.search(r"-[0-9a-f]{8}$", long)


def test_points_are_validated_configs_in_their_own_folders(tmp_path, tiny_model, small_data):
    path = _recipe(tmp_path / "s.yaml", tiny_model, small_data, {"lora.r": [2, 4], "lora.target_modules": ["q,v", ["q", "v"]]})
    tree, grid = read_sweep(path)
    root, points = plan_points(tree, grid)
    assert root == tmp_path / "sweep" and len(points) == 4
    names = [p.name for p in points]
    assert len(set(names)) == 4, "two spellings of q,v must not share a folder"
    assert all(p.folder == root / p.name and p.config.output == str(root / p.name) for p in points)
    assert [p.config.lora_args()["r"] for p in points] == [2, 2, 4, 4]


def test_default_jobs_use_one_thread_a_point():
    assert default_jobs(cores=2) == (2, 1)
    assert default_jobs(threads=2, cores=2) == (1, 2)
    assert default_jobs(threads=4, cores=2) == (1, 4)


def test_parallel_points_are_capped_by_free_memory(monkeypatch):
    from dialogtune import sweep
    from dialogtune.memory import PROCESS_BYTES

    _, points = plan_points(*read_sweep(REPO / "configs" / "sweep-demo.yaml"))
    monkeypatch.setattr(sweep, "_available_memory", lambda: PROCESS_BYTES)  # not even one point's estimate
    assert sweep.memory_jobs(points) == 1
    monkeypatch.setattr(sweep, "_available_memory", lambda: 2**40)
    assert sweep.memory_jobs(points) > 100
    monkeypatch.setattr(sweep, "_available_memory", lambda: None)  # unknown (not Linux): no cap
    assert sweep.memory_jobs(points) is None


@pytest.mark.parametrize(("points", "front"), [
    ([(10, 50.0), (20, 60.0), (30, 55.0), (40, 70.0)], [0, 1, 3]),  # (30, 55) is beaten by (20, 60)
    ([(10, 50.0), (10, 50.0), (5, 40.0)], [2, 0, 1]),  # equal points are both kept
    ([(10, 50.0), (10, 60.0)], [1]),  # same cost, better score dominates
    ([(1, 10.0)], [0]),
    ([], []),
])
def test_pareto_front(points, front):
    assert pareto_front(points) == front


def test_a_sweep_runs_every_point_writes_the_report_and_a_rerun_skips_finished_points(tmp_path, tiny_model, small_data, monkeypatch):
    path = _recipe(tmp_path / "s.yaml", tiny_model, small_data, {"lora.r": [2, 8]})
    calls = {"train": 0, "evaluate": 0}
    real_train, real_evaluate = pipeline.train, pipeline.evaluate_run

    def counted(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(pipeline, "train", counted("train", real_train))
    monkeypatch.setattr(pipeline, "evaluate_run", counted("evaluate", real_evaluate))
    before = torch.get_num_threads()
    sweep = run_sweep(path, jobs=1, threads=1 if before != 1 else 2)
    assert calls == {"train": 2, "evaluate": 2}
    # In-process points leave the caller's thread count as it was (a changed count changes later runs bitwise).
    assert torch.get_num_threads() == before
    root = tmp_path / "sweep"
    for name in ("sweep.json", "sweep.md", "sweep.html", "sweep-trainable_params.svg", "sweep-train_seconds.svg"):
        assert (root / name).is_file(), name
    rows = {r["name"]: r for r in sweep["points"]}
    assert set(rows) == {"r=2", "r=8"} and json.loads((root / "sweep.json").read_text())["points"] == sweep["points"]
    assert rows["r=8"]["trainable_params"] == 4 * rows["r=2"]["trainable_params"] > 0
    for r in rows.values():
        low, score, high = (r["rouge"]["rouge1"][k] for k in ("ci_low", "score", "ci_high"))
        assert low <= score <= high and r["train_seconds"] > 0 and r["status"] == "evaluated"
    assert "r=2" in sweep["pareto"]["trainable_params"]  # the cheapest point is always on the front
    svg = (root / "sweep-trainable_params.svg").read_text()
    assert svg.count("<circle") == 2 and "Pareto front" in svg
    assert "| r=2 |" in (root / "sweep.md").read_text()

    # A rerun keeps both finished points; a point whose scores were lost is only evaluated again.
    (root / "r=8" / "metrics.json").unlink()
    calls.update(train=0, evaluate=0)
    assert main(["-q", "sweep", str(path), "--jobs", "1"]) == 0
    assert calls == {"train": 0, "evaluate": 1}


@pytest.mark.parametrize(("sweep", "fragment"), [
    ({"lora.rank": [1, 2]}, "unknown config key `lora.rank`"),
    ({"lora.r": []}, "`sweep.lora.r` is []; give a non-empty list of values"),
    ({"lora.r": 4}, "`sweep.lora.r` is 4; give a non-empty list"),
    ({"output": ["a", "b"]}, "`sweep.output` cannot be swept"),
    ({}, "has no `sweep:` mapping"),
    ({"lora.r": [0, 4]}, "`lora.r` is 0; use a positive whole number"),
])
def test_bad_sweeps_are_one_line_exit_2_before_any_work(sweep, fragment, tmp_path, tiny_model, small_data, capsys):
    path = _recipe(tmp_path / "s.yaml", tiny_model, small_data, sweep)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dialogtune: error:") and fragment in err[0], err
    assert not (tmp_path / "sweep").exists()


def test_bad_jobs_are_refused():
    with pytest.raises(DialogtuneError, match="--jobs is 0"):
        run_sweep(REPO / "configs" / "sweep-demo.yaml", jobs=0)


def test_the_shipped_demo_sweep_is_the_issues_grid_on_the_bundled_model():
    path = REPO / "configs" / "sweep-demo.yaml"
    assert path.read_text(encoding="utf-8").startswith("# dialogtune sweep configs/sweep-demo.yaml")
    tree, grid = read_sweep(path)
    assert grid == {"lora.r": [1, 4, 16, 64], "lora.target_modules": [["q", "v"], "all-linear"]}
    assert tree["model"] == "builtin:tiny-t5" and read_yaml(path)["data"]["dataset"] == "builtin:dialogs"
    _, points = plan_points(tree, grid)
    assert len(points) == 8 and len({p.name for p in points}) == 8
