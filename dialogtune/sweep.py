"""`dialogtune sweep CONFIG`: a grid over any config keys; every point is a normal run folder.

    dialogtune sweep configs/sweep-demo.yaml              # LoRA r x targets on the bundled model
    dialogtune sweep configs/sweep-demo.yaml --jobs 1 --threads 2   # one point at a time on two threads

Points run `--jobs` at a time in fresh processes: by default one per GPU, or on CPU one per core
(one thread each) and no more than free RAM holds by `dialogtune.memory`'s estimate.

The YAML is an ordinary recipe plus a `sweep:` mapping of dotted keys to lists of values, e.g.
`sweep: {lora.r: [1, 4, 16, 64], lora.target_modules: [[q, v], all-linear]}`. Each point of the
cartesian product is the recipe with those values, trained and evaluated into `output/<name>`, where
the name is made from the point's values alone, so a rerun finds the same folders: finished points are
kept (`RunFolder.plan`), interrupted ones resume, and the report (sweep.md/.html/.json) is rewritten.
"""

from __future__ import annotations

import concurrent.futures
import copy
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dialogtune.config import Config
from dialogtune.configio import apply_overrides, build_config, read_yaml
from dialogtune.errors import DialogtuneError
from dialogtune.runs import Plan, RunFolder

log = logging.getLogger(__name__)

SWEEP_KEY = "sweep"
UNSWEEPABLE = ("output", "run")  # the folder comes from the point's name; `run.*` steers `dialogtune run`, not a point
MAX_NAME = 100  # characters of a point's folder name before it is shortened with a hash


@dataclass
class Point:
    """One setting of the grid: its values (dotted key -> value), validated config and folder."""

    name: str
    values: dict[str, Any]
    config: Config
    folder: Path


def read_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(the recipe without its `sweep:` mapping, with `overrides` applied; the grid), checked."""
    tree = read_yaml(path)
    grid = tree.pop(SWEEP_KEY, None)
    if not isinstance(grid, dict) or not grid:
        raise DialogtuneError(
            f"{path} has no `sweep:` mapping of config keys to lists of values; add one, "
            f"e.g. `sweep: {{lora.r: [4, 16]}}` (see configs/sweep-demo.yaml)"
        )
    for key, values in grid.items():
        if not isinstance(key, str) or not key:
            raise DialogtuneError(f"{path}: `sweep` key {key!r} is not a dotted config key such as lora.r")
        if key.split(".")[0] in UNSWEEPABLE:
            raise DialogtuneError(f"{path}: `sweep.{key}` cannot be swept; each point's folder is named from its values under `output`")
        if not isinstance(values, list) or not values:
            raise DialogtuneError(f"{path}: `sweep.{key}` is {values!r}; give a non-empty list of values, e.g. [4, 16]")
    apply_overrides(tree, overrides or {})
    return tree, grid


def expand(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest (the YAML's order)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(_text(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def point_name(values: dict[str, Any], keys: list[str] | None = None) -> str:
    """A folder name from a point's values alone, e.g. `r=4__target_modules=q+v`: the key's last part
    unless two swept keys share it (then the whole dotted key); characters outside [A-Za-z0-9._+-] become -."""
    keys = keys or list(values)
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    parts = []
    for key, leaf in zip(keys, leaves, strict=True):
        label = leaf if leaves.count(leaf) == 1 else key
        parts.append(f"{label}={_text(values[key])}")
    name = re.sub(r"[^A-Za-z0-9._+=-]", "-", "__".join(parts))
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME - 9] + "-" + _digest(values)
    return name


def _digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]


def plan_points(tree: dict[str, Any], grid: dict[str, list[Any]], output: str | Path | None = None) -> tuple[Path, list[Point]]:
    """(the sweep folder, every point with its validated config), before any work starts."""
    root = Path(output or tree.get("output") or "runs/sweep")
    combos = expand(grid)
    names = [point_name(values, list(grid)) for values in combos]
    for i, name in enumerate(names):  # two spellings of one value ("q,v" and [q, v]) must not share a folder
        if names.count(name) > 1:
            names[i] = f"{name}-{_digest(combos[i])}"
    points = []
    for name, values in zip(names, combos, strict=True):
        point_tree = copy.deepcopy(tree)
        apply_overrides(point_tree, {**values, "output": str(root / name)})
        config = build_config(point_tree, source=f"sweep point {name}")
        points.append(Point(name, values, config, root / name))
    return root, points


def default_jobs(threads: int | None = None, cores: int | None = None) -> tuple[int, int]:
    """(parallel points, threads per point): one thread a point and as many points as there are cores.

    Measured on a 2-core host shared with other work (docs/sweeps.md): one demo point trained 20 steps
    in 19-22 s on 1 thread and in 168-235 s on 2, since OpenMP threads wait for each other at every
    operation and a busy core stalls them all. Small models gain little from a second thread anyway.
    """
    cores = cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    threads = threads or 1
    return max(1, cores // threads), threads


def run_point(config: Config, folder: str | Path, overwrite: bool = False, threads: int | None = None) -> str:
    """Bring one point's run folder to finished (train + evaluate); returns what was done."""
    from dialogtune.pipeline import run_one

    import torch

    # In-process (jobs=1) the thread count is the caller's global state: put it back, or every later training in the
    # process runs on a different count, and CPU kernels sum in a different order (bitwise different weights).
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        plan, _ = RunFolder.plan(folder, config, overwrite)
        run_one(config, Path(folder), plan, overwrite=overwrite, progress=False)
    finally:
        torch.set_num_threads(before)
    return plan.value


def _available_memory() -> int | None:
    """Bytes of RAM the kernel says new processes can have (Linux), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def memory_jobs(points: list[Point]) -> int | None:
    """How many points fit in free RAM at once (CPU training), by dialogtune.memory's estimate of the largest."""
    from dialogtune.memory import PROCESS_BYTES, estimate_training_memory
    from dialogtune.modeling import skeleton

    available = _available_memory()
    if available is None or not points:
        return None
    need = PROCESS_BYTES
    for p in points:
        if p.config.method in ("full", "lora"):
            model = skeleton(p.config.model, p.config.lora_args() if p.config.method == "lora" else None)
            batch = int(p.config.training_args().get("per_device_train_batch_size", 8))
            need = max(need, PROCESS_BYTES + estimate_training_memory(
                model, batch, p.config.data.max_source_length, p.config.data.max_target_length, checkpointing=False))
    return max(1, available // need)


def _worker_init(threads: int, level: int, gpus: Any = None) -> None:
    if gpus is not None:  # one GPU per worker: each takes the next id before anything touches CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import torch

    torch.set_num_threads(threads)


def run_sweep(
    path: str | Path, overrides: dict[str, Any] | None = None, output: str | Path | None = None,
    jobs: int | None = None, threads: int | None = None, overwrite: bool = False,
) -> dict[str, Any]:
    """Run every point of the sweep in `path` not finished yet (`jobs` at a time), then write the report."""
    from dialogtune.report.pareto import write_sweep_report

    for flag, value in (("--jobs", jobs), ("--threads", threads)):
        if value is not None and value < 1:
            raise DialogtuneError(f"{flag} is {value}; use 1 or more (or leave it out for the default)")
    tree, grid = read_sweep(path, overrides)
    root, points = plan_points(tree, grid, output)
    plans = {p.name: RunFolder.plan(p.folder, p.config, overwrite)[0] for p in points}  # refuse before any work
    pending = [p for p in points if plans[p.name] is not Plan.KEEP]
    auto_jobs, threads = default_jobs(threads)
    import torch

    gpus = torch.cuda.device_count()
    if jobs is None:  # one point per GPU; on CPU, per core and as many as free RAM holds
        jobs = gpus or min(auto_jobs, memory_jobs(pending) or auto_jobs)
    jobs = min(jobs, max(1, len(pending)))
    log.info("sweep: %d points, %d finished, %d to run, %d at a time x %d threads; folder %s",
             len(points), len(points) - len(pending), len(pending), jobs, threads, root)
    started = time.perf_counter()
    if jobs == 1:
        for i, point in enumerate(pending, 1):
            log.info("== sweep point %d/%d: %s ==", i, len(pending), point.name)
            run_point(point.config, point.folder, overwrite, threads)
    else:
        # Fresh interpreters (spawn): forking a process whose torch thread pool already ran can deadlock.
        context = multiprocessing.get_context("spawn")
        level = logging.getLogger().getEffectiveLevel()
        queue = None
        if gpus:
            queue = context.Manager().Queue()
            for i in range(jobs):
                queue.put(i % gpus)
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                                                    initargs=(threads, level, queue)) as pool:
            futures = {pool.submit(run_point, p.config, p.folder, overwrite, threads): p for p in pending}
            for future in concurrent.futures.as_completed(futures):
                future.result()  # a failed point stops the sweep with its own error; finished points stay
                log.info("sweep point done: %s", futures[future].name)
    wall = time.perf_counter() - started
    return write_sweep_report(root, points, grid, {"jobs": jobs, "threads": threads, "wall_seconds": round(wall, 1),
                                                   "config": str(path)})
