"""Fine-tune a base model (full or LoRA) with Seq2SeqTrainer and write a self-describing run folder."""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback, set_seed

from dialogtune import runs
from dialogtune.config import Config
from dialogtune.data import load_split
from dialogtune.errors import DialogtuneError
from dialogtune.modeling import apply_lora, describe_parameters, load_base, load_tokenizer, parameter_counts, size_on_disk
from dialogtune.preprocess import collator, tokenize
from dialogtune.prompts import PromptTemplate

log = logging.getLogger(__name__)


class JsonlLog(TrainerCallback):
    """Append every trainer log line to train_log.jsonl as it happens, so a killed run keeps its history."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - trainer callback signature
        if logs:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


def precision() -> tuple[torch.dtype, dict[str, bool]]:
    """bf16 where the hardware has it, fp32 otherwise; fp16 is refused in config validation (T5 overflows)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.float32, {"bf16": True}
    return torch.float32, {}


def training_arguments(config: Config, folder: Path) -> Seq2SeqTrainingArguments:
    _, mixed = precision()
    args = {**mixed, **config.training_args(), "output_dir": str(folder / runs.CHECKPOINTS)}
    report_to = args.get("report_to") or []
    if "tensorboard" in ([report_to] if isinstance(report_to, str) else report_to):
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise DialogtuneError(
                "`training.report_to` is tensorboard, which is not installed; pip install 'dialogtune[tensorboard]'"
            ) from None
    try:
        return Seq2SeqTrainingArguments(**args)
    except (TypeError, ValueError) as err:
        raise DialogtuneError(f"invalid training options: {str(err).strip().splitlines()[0]}") from None


@dataclass
class Setup:
    """Everything training needs, built before any weight moves; tests inspect `model` before and after."""

    tokenizer: Any
    dataset: Any
    stats: Any
    base: torch.nn.Module
    model: torch.nn.Module
    template: PromptTemplate


def prepare(config: Config) -> Setup:
    """Load data, tokenise, and load a fresh base (wrapped with LoRA for `lora`)."""
    if config.method not in ("full", "lora"):
        raise DialogtuneError(f"`method` is {config.method!r}; training needs full or lora (original has nothing to train)")
    set_seed(config.seed)
    template = PromptTemplate(config.prompt.template)
    tokenizer = load_tokenizer(config.model)
    records = load_split(config.data, config.data.train_split, limit=config.data.max_train_samples)
    # A dialogue with several references gives one training example per reference.
    pairs = [(template.format(r["dialogue"]), ref) for r in records for ref in r["references"]]
    dataset, stats = tokenize(
        tokenizer, [p for p, _ in pairs], [s for _, s in pairs],
        config.data.max_source_length, config.data.max_target_length,
    )
    dtype, _ = precision()
    base = load_base(config.model, dtype=dtype)
    model = apply_lora(base, config.lora_args()) if config.method == "lora" else base
    log.info(describe_parameters(model))
    return Setup(tokenizer, dataset, stats, base, model, template)


def make_trainer(setup: Setup, config: Config, folder: Path) -> Seq2SeqTrainer:
    return Seq2SeqTrainer(
        model=setup.model,
        args=training_arguments(config, folder),
        train_dataset=setup.dataset,
        data_collator=collator(setup.tokenizer, setup.base),
        processing_class=setup.tokenizer,
        callbacks=[JsonlLog(folder / runs.TRAIN_LOG)],
    )


def fit(setup: Setup, config: Config, folder: str | Path, overwrite: bool = False, resume: bool = False) -> runs.Run:
    """Run the trainer on a prepared setup and save the result as a run folder."""
    folder = Path(folder)
    if not (resume and folder.exists()):
        runs.start_run(folder, config, setup.template, overwrite=overwrite)
        (folder / runs.TRAIN_LOG).unlink(missing_ok=True)
    trainable, total = parameter_counts(setup.model)
    # transformers 5 takes the TensorBoard folder from this variable only; default to the run folder
    # rather than a `runs/` folder in whatever directory the user happens to be in.
    tensorboard_dir = os.environ.get("TENSORBOARD_LOGGING_DIR") or str(folder / "tensorboard")
    previous = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = tensorboard_dir
    trainer = make_trainer(setup, config, folder)
    args = trainer.args
    checkpoint = _last_checkpoint(folder) if resume else None
    started = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        if previous is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
    seconds = time.perf_counter() - started
    # For LoRA this writes only adapter_model.safetensors + adapter_config.json: the base is not copied.
    setup.model.save_pretrained(folder)
    if config.method == "full":
        setup.tokenizer.save_pretrained(folder)
    stats = setup.stats
    examples_seen = result.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps
    if args.max_steps <= 0:
        examples_seen = min(examples_seen, math.ceil(args.num_train_epochs) * len(setup.dataset))
    tokens_seen = examples_seen * stats.tokens / max(1, stats.examples)
    runs.update_metadata(
        folder,
        status="trained",
        trained=runs.now(),
        trainable_params=trainable,
        total_params=total,
        size_bytes=size_on_disk(folder, config.method),
        train_examples=stats.examples,
        train_steps=result.global_step,
        train_loss=result.training_loss,
        train_seconds=round(seconds, 3),
        train_examples_per_second=round(examples_seen / seconds, 3),
        train_tokens_per_second=round(tokens_seen / seconds, 1),
        peak_memory_bytes=_peak_memory(),
        tokens=stats.as_dict(),
        resumed_from=checkpoint,
    )
    return runs.read_run(folder)


def train(config: Config, folder: str | Path, overwrite: bool = False, resume: bool = False) -> runs.Run:
    """Train `config.method` (full or lora) into `folder`; returns the run, ready to evaluate."""
    training_arguments(config, Path(folder))  # fail on bad options before loading anything
    if not resume:
        runs.check_output(folder, overwrite)
    return fit(prepare(config), config, folder, overwrite=overwrite, resume=resume)


def _last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    checkpoints = folder / runs.CHECKPOINTS
    return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None


def _peak_memory() -> int:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    # ru_maxrss is in KiB on Linux: the process's peak resident memory so far.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
