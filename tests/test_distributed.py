"""Two processes under torchrun (gloo on CPU) on the bundled tiny model: `run` trains, evaluates and reports
like one process does, and rank 0 alone writes.

Tolerances. With the same global batch (2 processes x 4 vs 1 x 8, `train_sampling_strategy: random`, so
both runs draw the same seeded order and accelerate hands rank r the r-th half of each global batch), the
gradients differ only by summation order: each rank sums its half and DDP averages the two. fp32
reassociation is ~1e-7 relative per operation, so the losses must agree to 1e-5 relative (measured ~1e-7).
The weights go through 4 Adam steps of lr 5e-3. Adam divides each gradient coordinate by its own running
RMS, which normalises the rounding away except where a coordinate's gradient is near Adam's eps (1e-8):
rows of rare tokens' embeddings, where a rounding difference d in the gradient moves the weight by d/eps of a step. So
each tensor's difference must be under 1e-3 of the change training made to it (measured <= 1.3e-4) and
no weight may differ by a quarter step (lr/4; measured <= 1.7e-4 on a dozen embedding entries); another data
order (seed 43) gives 1.3 and 2.5e-2. Dropout is pinned to 0 (the bundled model's own; FLAN-T5 has 0.1): no
random masks enter.
Evaluation shards whole batches of the single-process batching (`dialogtune.sharding`), so each
dialogue is generated with the same batch-mates, padding and thread count (1) as in one process: its
predictions must be identical, not close. A resume with the same world size replays the same path: identical too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from dialogtune import ranks
from dialogtune.checkpoints import MARKER
from dialogtune.configio import load_config
from dialogtune.errors import DialogtuneError
from dialogtune.evaluation import evaluate_run
from dialogtune.inference import batches
from dialogtune.modeling import load_base
from dialogtune.runs import read_run
from dialogtune.train import train

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()), reason="torch.distributed has no gloo"
)

STEPS, LR = 4, 5e-3
LOSS_RTOL, UPDATE_RTOL, WEIGHT_ATOL = 1e-5, 1e-3, LR / 4


def _recipe(data: Path) -> dict:
    return {
        "model": "builtin:tiny-t5", "seed": 42, "dropout": 0.0,
        "data": {"dataset": str(data), "max_source_length": 256, "max_target_length": 64},
        "run": {"methods": ["full"]},
        "training": {"max_steps": STEPS, "per_device_train_batch_size": 4, "learning_rate": LR, "logging_steps": 1,
                     "save_strategy": "steps", "save_steps": 2, "train_sampling_strategy": "random"},
        "generation": {"max_new_tokens": 12},
        "evaluation": {"batch_size": 2, "bootstrap_resamples": 200},  # 8 test dialogues: 4 batches, 2 per rank
    }


# Loaded into every process of a launch (PYTHONPATH): on ranks other than 0 it records each write, rename,
# removal or mkdir under DT_WATCH, and saves the list at exit, so the test sees what those ranks touched.
WATCHER = '''
import os, sys
if os.environ.get("RANK", "0") != "0" and os.environ.get("DT_WATCH"):
    _watch, _seen, _busy = os.path.abspath(os.environ["DT_WATCH"]) + os.sep, [], [False]
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    def _hook(event, args):
        if _busy[0]:
            return
        if event == "open":
            paths = [args[0]] if isinstance(args[2], int) and args[2] & _WRITE else []
        elif event in ("os.rename", "os.replace", "os.link", "os.symlink"):
            paths = list(args[:2])
        elif event in ("os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate", "os.chmod"):
            paths = [args[0]]
        else:
            return
        for path in paths:
            if isinstance(path, (str, bytes, os.PathLike)):
                path = os.path.abspath(os.fsdecode(path))
                if (path + os.sep).startswith(_watch):
                    _seen.append(event + " " + path)
    sys.addaudithook(_hook)
    def _dump():
        _busy[0] = True
        with open(os.environ["DT_WATCH_LOG"] + os.environ["RANK"] + ".txt", "w") as handle:
            handle.write("".join(line + "\\n" for line in _seen))
    import atexit
    atexit.register(_dump)
'''


# This process computes with one thread, as each rank does: the same kernels, the same rounding.
@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    """Before any other fixture of the module (autouse), so its runs use one thread too."""


def _launch(tmp: Path, watch: Path, *args: str) -> None:
    """`dialogtune ARGS` in 2 processes under torchrun, one thread each."""
    (tmp / "hook").mkdir(exist_ok=True)
    (tmp / "hook" / "sitecustomize.py").write_text(WATCHER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DT_WATCH": str(watch), "DT_WATCH_LOG": str(tmp / "writes-rank"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp / "hook"), os.environ.get("PYTHONPATH")]))}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "dialogtune", *args, "-q"]
    done = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


@pytest.fixture(scope="module")
def launched(small_data, tmp_path_factory):
    """`dialogtune run` (train, evaluate, report) with 2 processes of batch 4."""
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(_recipe(small_data)))
    _launch(tmp, tmp / "out", "run", str(tmp / "recipe.yaml"), "--output", str(tmp / "out"))
    return tmp


@pytest.fixture(scope="module")
def single(small_data, tmp_path_factory):
    """The same training in this one process, with batch 8: the same global batch."""
    recipe = _recipe(small_data)
    recipe["training"].update(per_device_train_batch_size=8, save_strategy="no")
    folder = tmp_path_factory.mktemp("single") / "full"
    config = load_config(None, {"method": "full", "output": str(folder), **_flat(recipe)})
    return train(config, folder).folder


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _losses(folder: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return {line["step"]: line["loss"] for line in lines if "loss" in line}


def test_distributed_training_matches_one_process_with_the_same_global_batch(launched, single):
    ddp = launched / "out" / "full"
    assert list(_losses(ddp)) == list(range(1, STEPS + 1)), "each step logged once, by rank 0"
    assert _losses(ddp) == pytest.approx(_losses(single), rel=LOSS_RTOL)
    before = load_base("builtin:tiny-t5").state_dict()
    a, b = load_file(ddp / "model.safetensors"), load_file(single / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        moved = float((b[key] - before[key]).norm())
        assert moved > 0, f"training left {key} as it was: the comparison would be empty"
        assert float((a[key] - b[key]).norm()) < UPDATE_RTOL * moved, f"{key} was trained differently"
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < WEIGHT_ATOL, f"a weight differs by {worst:.2e} after {STEPS} steps"
    assert read_run(ddp).metadata["world_size"] == 2 and read_run(single).metadata["world_size"] == 1


def test_only_rank_0_writes_the_run_folder_and_the_report(launched):
    out = launched / "out"
    writes = (launched / "writes-rank1.txt").read_text().splitlines()  # absent: the watcher never ran
    elsewhere = [w for w in writes if not w.split(" ", 1)[1].startswith(str(out / "logs"))]
    assert elsewhere in ([], [f"os.mkdir {out}"]), f"rank 1 wrote into the run folder: {elsewhere}"
    log = (out / "logs" / "rank1.log").read_text()
    assert "rank 1 of 2 generates 4 of 8 prompts" in log, "rank 1 did not generate its shard"
    assert sorted(p.name for p in out.iterdir()) == ["full", "logs", "report.html", "report.json", "report.md"]
    for checkpoint in (out / "full" / "checkpoints").iterdir():
        assert json.loads((checkpoint / MARKER).read_text()) == {"world_size": 2}
        assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()


def test_distributed_evaluation_gives_the_single_process_predictions(launched, tmp_path):
    ddp = launched / "out" / "full"
    copy = tmp_path / "full"
    shutil.copytree(ddp, copy, ignore=shutil.ignore_patterns("checkpoints", "metrics*", "predictions*"))
    evaluate_run(copy, progress=False)  # in this process, with one thread (one_thread) as each rank had
    two = [r["prediction"] for r in read_run(ddp).predictions()]
    one = [r["prediction"] for r in read_run(copy).predictions()]
    assert sum(bool(p) for p in one) >= 6, f"too few non-empty predictions for a meaningful check: {one}"
    assert two == one
    assert (ddp / "metrics.json").read_text() == (copy / "metrics.json").read_text()


def test_distributed_resume_needs_the_same_number_of_processes(launched, tmp_path):
    reference, out = launched / "out", tmp_path / "out"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("logs", "report.*"))
    run = out / "full"
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace(str(reference), str(out)))
    # As if killed in step 3: the last complete checkpoint is checkpoint-2.
    for name in ("model.safetensors", "metrics.json", "predictions.jsonl"):
        (run / name).unlink()
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")
    metadata = json.loads((run / "metadata.json").read_text())
    (run / "metadata.json").write_text(json.dumps({**metadata, "status": "training"}))
    with pytest.raises(DialogtuneError, match=r"written by 2 process\(es\) but this run has 1"):
        train(read_run(run).config, run)  # this process alone: world size 1
    _launch(tmp_path, out, "run", str(launched / "recipe.yaml"), "--output", str(out))
    assert read_run(run).metadata["resumed_from"].endswith("checkpoint-2")
    a, b = load_file(run / "model.safetensors"), load_file(reference / "full" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in b), "the resumed run ended with other weights"
    assert (run / "predictions.jsonl").read_text() == (reference / "full" / "predictions.jsonl").read_text()


def test_gradient_accumulation_gives_the_loss_of_the_whole_batch(small_data, tmp_path):
    """2 x 4 accumulated is batch 8 (T5 ignores the trainer's token count; dialogtune's loss does not)."""
    folders = {}
    for name, batch, accumulation in (("whole", 8, 1), ("accumulated", 4, 2)):
        recipe = _recipe(small_data)
        recipe["training"].update(max_steps=2, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
                                  save_strategy="no")
        folders[name] = tmp_path / name
        train(load_config(None, {"method": "full", "output": str(folders[name]), **_flat(recipe)}), folders[name])
    assert _losses(folders["accumulated"]) == pytest.approx(_losses(folders["whole"]), rel=LOSS_RTOL)


# Rank 0 decides; each rank records what it got. No model: only the process group.
DECISIONS = '''
import json, os, sys
from dialogtune import ranks
from dialogtune.errors import DialogtuneError
seen = []
def refuse():
    raise DialogtuneError("a finished run is in the way")
for fn in (lambda: {"plan": "resume", "rank": ranks.rank()}, refuse):
    try:
        seen.append(ranks.on_main(fn))
    except DialogtuneError as err:
        seen.append("error: " + str(err))
ranks.on_main(lambda: seen.append("written by rank 0 only"), share=False)
seen.append(sorted(sum(ranks.all_gather([ranks.rank()]), [])))
with open(os.path.join(sys.argv[1], f"rank{ranks.rank()}.json"), "w") as handle:
    json.dump(seen, handle)
ranks.finish()
'''


def test_rank_0_decides_and_every_rank_gets_its_decision_or_its_error(tmp_path):
    (tmp_path / "decide.py").write_text(DECISIONS)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(tmp_path / "decide.py"), str(tmp_path)]
    done = subprocess.run(command, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    zero, one = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    decision = {"plan": "resume", "rank": 0}
    assert zero == [decision, "error: a finished run is in the way", "written by rank 0 only", [0, 1]]
    assert one == [decision, "error: a finished run is in the way", [0, 1]]


@pytest.mark.parametrize("world", [2, 3])
def test_shards_are_whole_batches_of_the_single_process_batching(world, monkeypatch):
    rng = random.Random(world)
    for _ in range(20):
        lengths, size = [rng.randint(1, 9) for _ in range(rng.randint(1, 40))], rng.randint(1, 5)
        everything = batches(lengths, size)
        shards = []
        for r in range(world):
            monkeypatch.setenv("RANK", str(r))
            monkeypatch.setenv("WORLD_SIZE", str(world))
            mine = ranks.shard(everything)
            # What the summarizer does with this rank's prompts: the same batching over the subset.
            formed = [[mine[j] for j in batch] for batch in batches([lengths[i] for i in mine], size)]
            assert formed == everything[r::world]
            shards.extend(mine)
        assert sorted(shards) == list(range(len(lengths)))
