"""The run folder: what is in it, written atomically, and read back so a run describes itself."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dialogtune.config import Config, build_config, dump_yaml, read_yaml
from dialogtune.errors import DialogtuneError
from dialogtune.prompts import PromptTemplate

CONFIG = "config.yaml"
PROMPT = "prompt.json"
METADATA = "metadata.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl"
TRAIN_LOG = "train_log.jsonl"
CHECKPOINTS = "checkpoints"


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
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
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


def check_output(folder: str | Path, overwrite: bool = False) -> None:
    """Refuse to clobber a finished run (or a file) before any expensive work starts."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DialogtuneError(f"output {folder} is a file; choose a folder path for --output")
    if (folder / METRICS).exists() and not overwrite:
        raise DialogtuneError(f"{folder} already holds a finished run; choose another --output or pass --overwrite")


def start_run(folder: str | Path, config: Config, prompt: PromptTemplate, overwrite: bool = False) -> Path:
    """Create a run folder with its config, prompt and metadata; refuse to clobber a finished run."""
    folder = Path(folder)
    check_output(folder, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (METRICS, PREDICTIONS):
        (folder / stale).unlink(missing_ok=True)
    write_text(folder / CONFIG, dump_yaml(config))
    prompt.save(folder / PROMPT)
    write_json(
        folder / METADATA,
        {
            "name": folder.name,
            "method": config.method,
            "model": config.model,
            "seed": config.seed,
            "created": now(),
            "status": "started",
            "environment": environment(),
        },
    )
    return folder


def same_config(folder: str | Path, config: Config) -> bool:
    """True if `folder` is a run made with exactly `config` (so a rerun may continue or keep it)."""
    return is_run(folder) and read_yaml(Path(folder) / CONFIG) == config.to_dict()


def status(folder: str | Path) -> str | None:
    path = Path(folder) / METADATA
    return read_json(path).get("status") if path.is_file() else None


def update_metadata(folder: str | Path, **fields: Any) -> dict[str, Any]:
    path = Path(folder) / METADATA
    data = read_json(path) if path.exists() else {}
    data.update(fields)
    write_json(path, data)
    return data


@dataclass
class Run:
    """A run folder read back: its config, prompt, metadata and (when evaluated) metrics."""

    folder: Path
    config: Config
    prompt: PromptTemplate
    metadata: dict[str, Any]

    @property
    def name(self) -> str:
        return self.metadata.get("name", self.folder.name)

    @property
    def method(self) -> str:
        return self.metadata.get("method", self.config.method)

    @property
    def metrics(self) -> dict[str, Any] | None:
        path = self.folder / METRICS
        return read_json(path) if path.exists() else None

    def predictions(self) -> list[dict[str, Any]]:
        path = self.folder / PREDICTIONS
        if not path.exists():
            raise DialogtuneError(f"{self.folder} has no {PREDICTIONS}; run `dialogtune evaluate {self.folder}` first")
        return read_jsonl(path)


def is_run(folder: str | Path) -> bool:
    return (Path(folder) / METADATA).is_file() and (Path(folder) / CONFIG).is_file()


def read_run(folder: str | Path) -> Run:
    """Read a run folder; a clear error if it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DialogtuneError(f"run folder {folder} does not exist; pass a folder written by `dialogtune train`")
    if not is_run(folder):
        raise DialogtuneError(f"{folder} is not a dialogtune run folder (no {METADATA}/{CONFIG}); check the path")
    config = build_config(read_yaml(folder / CONFIG), source=str(folder / CONFIG))
    return Run(folder, config, PromptTemplate.load(folder / PROMPT), read_json(folder / METADATA))
