"""RunFolder: the one owner of a run folder's layout, status, atomic writes, metadata and results.

A run folder describes itself: its config, prompt and metadata are written when it is created, so
evaluation reads the prompt and generation settings from the folder and can never score a model
with a prompt other than the one it was trained with. Whether a run is finished, can resume or may
be overwritten is decided here (`RunFolder.plan`) and nowhere else. Under several processes only
rank 0 writes or decides (`dialogtune.ranks`); that guard is why the module runs a little over 300 lines.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from dialogtune import ranks
from dialogtune.config import Config
from dialogtune.configio import build_config, dump_yaml, read_yaml
from dialogtune.errors import DialogtuneError
from dialogtune.prompts import PromptTemplate
from dialogtune.taskconfig import SUMMARY

CONFIG = "config.yaml"
PROMPT = "prompt.json"
METADATA = "metadata.json"
TRAIN_LOG = "train_log.jsonl"
CHECKPOINTS = "checkpoints"


# What a run's metadata says about its training, which stays true of a model made from it (a merge, an export):
# the report shows that model's training cost as its source's.
TRAINING_FIELDS = (
    "trained", "trainable_params", "train_examples", "train_steps", "train_loss", "train_seconds",
    "train_examples_per_second", "train_tokens_per_second", "peak_memory_bytes", "tokens", "data_split", "data_overlap",
    "tasks", "mixing",
)

class Status(str, Enum):
    """Where a run is in its life; stored in metadata.json as the lower-case name."""

    CREATED = "created"  # config, prompt and metadata written
    TRAINING = "training"  # the trainer is running (or was killed: checkpoints say how far it got)
    TRAINED = "trained"  # final weights saved
    EVALUATING = "evaluating"  # generating; predictions are saved batch by batch
    EVALUATED = "evaluated"  # predictions and metrics written for a split
    FAILED = "failed"  # training stopped with an error; a rerun resumes from the last checkpoint


class Plan(str, Enum):
    """What a command should do with an output folder, given what is already in it."""

    START = "start"  # nothing usable there (or --overwrite): start from scratch
    RESUME = "resume"  # an unfinished training run of the same config with a complete checkpoint
    EVALUATE = "evaluate"  # trained with the same config, not yet scored
    KEEP = "keep"  # finished with the same config: nothing to do


def write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file and rename, so a killed process never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DialogtuneError(f"{path} is missing; is this a dialogtune run folder?") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise DialogtuneError(f"{path} is not valid JSON ({err}); the run folder is damaged, re-run it") from None


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    """Library versions, machine and source revision: enough to say how a number was produced."""
    import datasets
    import peft
    import torch
    import transformers

    from dialogtune import __version__

    return {
        "dialogtune": __version__,
        "git_sha": _git_sha(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "datasets": datasets.__version__,
        "platform": platform.platform(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunFolder:
    """A run folder on disk: config, prompt and metadata, plus predictions and metrics per split.

    The run's own evaluation split (`evaluation.split`, test by default) is stored as
    `predictions.jsonl` / `metrics.json`; any other split as `predictions.<split>.jsonl` /
    `metrics.<split>.json`, so scoring the validation split never replaces the test scores. A task other
    than `summary` adds its name: `metrics.<task>.json`, `metrics.<task>.<split>.json`.
    """

    folder: Path
    config: Config
    prompt: PromptTemplate
    metadata: dict[str, Any]

    @classmethod
    def create(cls, folder: str | Path, config: Config, overwrite: bool = False) -> "RunFolder":
        """A fresh run folder with its config, prompt and metadata; refuses to clobber a finished run."""
        folder = Path(folder)
        if ranks.collective():  # several processes: rank 0 writes it, every rank reads it once written
            return ranks.on_main(lambda: cls.create(folder, config, overwrite), share=False) or read_run(folder)
        check_output(folder, overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        # Earlier scores go; a partial evaluation stays, since its own key says whether it still applies.
        for stale in [*folder.glob("metrics*.json"), *folder.glob("predictions*.jsonl")]:
            if not stale.name.endswith(".partial.jsonl"):
                stale.unlink()
        prompt = config.tasks[0].prompt(config.prompt.template) if config.tasks else PromptTemplate(config.prompt.template)
        write_text(folder / CONFIG, dump_yaml(config))
        prompt.save(folder / PROMPT)
        metadata = {
            "name": folder.name,
            "method": config.method,
            "model": config.model,
            "seed": config.seed,
            "created": now(),
            "status": Status.CREATED.value,
            "environment": environment(),
        }
        write_json(folder / METADATA, metadata)
        return cls(folder, config, prompt, metadata)

    @property
    def name(self) -> str:
        return self.metadata.get("name", self.folder.name)

    @property
    def method(self) -> str:
        return self.metadata.get("method", self.config.method)

    @property
    def base_model(self) -> str:
        """The base this run started from (for LoRA, the base its adapter goes on)."""
        return self.metadata.get("model", self.config.model)

    @property
    def status(self) -> Status:
        value = self.metadata.get("status", Status.CREATED.value)
        # "started" is what folders written before the status enum said for created-or-training.
        return Status.TRAINING if value == "started" else Status(value)

    def update(self, status: Status | None = None, **fields: Any) -> None:
        """Merge `fields` (and the new status) into metadata.json, written atomically."""
        if status is not None:
            fields["status"] = status.value
        self.metadata.update(fields)
        if ranks.is_main():  # the other ranks keep their copy in memory only
            write_json(self.folder / METADATA, self.metadata)

    def changed_keys(self, config: Config) -> list[str]:
        """The top-level config keys in which `config` differs from this run's; none means the same run."""
        previous, current = read_yaml(self.folder / CONFIG), config.to_dict()
        return sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))

    def _suffix(self, split: str | None, task: str | None = None) -> str:  # task names hold no dot (taskconfig)
        return ("" if task in (None, SUMMARY) else f".{task}") + ("" if split in (None, self.config.evaluation.split) else f".{split}")

    def metrics_path(self, split: str | None = None, task: str | None = None) -> Path:
        return self.folder / f"metrics{self._suffix(split, task)}.json"

    def predictions_path(self, split: str | None = None, task: str | None = None) -> Path:
        return self.folder / f"predictions{self._suffix(split, task)}.jsonl"

    def partial_path(self, split: str | None = None, task: str | None = None) -> Path:
        """Where evaluation saves predictions batch by batch until every one exists."""
        return self.folder / f"predictions{self._suffix(split, task)}.partial.jsonl"

    def read_metrics(self, split: str | None = None, task: str | None = None) -> dict[str, Any] | None:
        path = self.metrics_path(split, task)
        return read_json(path) if path.exists() else None

    @property
    def metrics(self) -> dict[str, Any] | None:
        """Metrics of the run's own evaluation split, or None before it is evaluated."""
        return self.read_metrics()

    def predictions(self, split: str | None = None, task: str | None = None) -> list[dict[str, Any]]:
        path = self.predictions_path(split, task)
        if not path.exists():
            raise DialogtuneError(f"{self.folder} has no {path.name}; run `dialogtune evaluate {self.folder}` first")
        return read_jsonl(path)

    def write_results(self, split: str, rows: list[dict[str, Any]], metrics: dict[str, Any], task: str | None = None, **fields: Any) -> None:
        """Predictions, then metrics, then the status: a run counts as evaluated only once all exist."""
        if ranks.is_main():
            write_jsonl(self.predictions_path(split, task), rows)
            write_json(self.metrics_path(split, task), metrics)
        self.update(Status.EVALUATED, evaluated=now(), **fields)

    @property
    def finished(self) -> bool:
        """Scored on its own evaluation split (a task run: for each of its tasks; the first one's prompt is prompt.json)."""
        return all(self.metrics_path(task=name).exists() for name in [t.name for t in self.config.tasks] or [None])

    @classmethod
    def plan(cls, folder: str | Path, config: Config, overwrite: bool = False) -> tuple[Plan, Path | None]:
        """What to do with `folder` for `config`: (plan, checkpoint to resume from or None).

        A finished run of the same config is kept; one of other settings is an error unless
        `overwrite`. A run that trained with the same config is only evaluated. An unfinished
        training run continues from its last complete checkpoint, whether or not --resume is given:
        rerunning the command that was killed is enough.
        """
        folder = Path(folder)
        if ranks.collective():  # several processes: rank 0 decides (it tidies checkpoints), every rank acts on it
            return ranks.on_main(lambda: cls.plan(folder, config, overwrite))
        check_output(folder, overwrite=True)  # a file in the way is an error even with --overwrite
        if overwrite or not is_run(folder):
            return Plan.START, None
        run = read_run(folder)
        same = not run.changed_keys(config)
        if run.finished:
            if same:
                return Plan.KEEP, None
            raise DialogtuneError(
                f"{folder} already holds a finished run with other settings; choose another output or pass --overwrite"
            )
        if run.status in (Status.TRAINED, Status.EVALUATING, Status.EVALUATED) and same:
            return Plan.EVALUATE, None  # trained; its evaluation never finished (or scored another split)
        if run.status in (Status.CREATED, Status.TRAINING, Status.FAILED):
            checkpoint = _last_checkpoint(folder / CHECKPOINTS)
            if checkpoint is not None:
                if not same:
                    raise DialogtuneError(
                        f"{folder} holds an unfinished run with other settings ({', '.join(run.changed_keys(config))}); "
                        f"rerun it with the same settings to resume from {checkpoint.name}, or pass --overwrite to start again"
                    )
                return Plan.RESUME, checkpoint
        return Plan.START, None


def _last_checkpoint(folder: Path) -> Path | None:
    from dialogtune.checkpoints import last_complete, prune  # lazily: it imports transformers' trainer

    prune(folder, keep=None)  # a checkpoint the kill interrupted is never picked up
    return last_complete(folder)


def check_output(folder: str | Path, overwrite: bool = False) -> None:
    """Refuse to clobber a finished run (or a file) before any expensive work starts."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DialogtuneError(f"output {folder} is a file; choose a folder path for --output")
    if is_run(folder) and read_run(folder).finished and not overwrite:
        raise DialogtuneError(f"{folder} already holds a finished run; choose another --output or pass --overwrite")


def is_run(folder: str | Path) -> bool:
    return (Path(folder) / METADATA).is_file() and (Path(folder) / CONFIG).is_file()


def read_run(folder: str | Path) -> RunFolder:
    """Read a run folder; a clear error if it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DialogtuneError(f"run folder {folder} does not exist; pass a folder written by `dialogtune train`")
    if not is_run(folder):
        raise DialogtuneError(f"{folder} is not a dialogtune run folder (no {METADATA}/{CONFIG}); check the path")
    config = build_config(read_yaml(folder / CONFIG), source=str(folder / CONFIG))
    return RunFolder(folder, config, PromptTemplate.load(folder / PROMPT), read_json(folder / METADATA))
