"""Fine-tune a base model (full or LoRA) with Seq2SeqTrainer and write a self-describing run folder.

Under torchrun or accelerate launch the same code trains data-parallel and rank 0 alone writes the folder
(`dialogtune.ranks`); those guards put the module a little over 300 lines.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback, set_seed

from dialogtune import engines, ranks, runs
from dialogtune.runs import Plan, RunFolder, Status
from dialogtune.checkpoints import check_world_size
from dialogtune.config import AUTO, TRAINED_METHODS, Config
from dialogtune.data import check_splits_disjoint, load_split, split_info
from dialogtune.errors import DialogtuneError
from dialogtune.memory import auto_activation_checkpointing
from dialogtune.modeling import (
    apply_lora, base_shapes, check_lora, describe_parameters, load_base, load_tokenizer, parameter_counts, quiet_libraries,
    size_on_disk,
)
from dialogtune.preprocess import collator, tokenize, tokenize_tasks
from dialogtune.quantization import check_quantization, prepare_quantized
from dialogtune.prompts import PromptTemplate
from dialogtune.validation import ValidatingTrainer, callbacks, outcome, validation_set

log = logging.getLogger(__name__)

SAVING = ".saving"  # staging folder for the final weights
FIRST_LOSS_FACTOR = 2.0  # a first loss above this many times ln(vocab) is suspicious


class JsonlLog(TrainerCallback):
    """Append every trainer log line to train_log.jsonl as it happens, so a killed run keeps its history.

    It also looks at the first loss: far above ln(vocabulary) means the model is asked to predict
    something it never could, most often padding left in the labels.
    """

    def __init__(self, path: Path, vocab_size: int) -> None:
        self.path = path
        self.vocab_size = vocab_size
        self.checked = False

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - trainer callback signature
        if not logs or not state.is_world_process_zero:  # one process writes the run folder
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")
        if not self.checked and "loss" in logs:
            self.checked = True
            ceiling = FIRST_LOSS_FACTOR * math.log(self.vocab_size)
            if logs["loss"] > ceiling:
                log.warning(
                    "first training loss %.2f is far above ln(vocabulary)=%.2f: check that label pads are -100 "
                    "and that the model and tokenizer belong together",
                    logs["loss"], math.log(self.vocab_size),
                )


_TOLD: set[str] = set()  # reasons for fp32 already logged in this process


def mixed_precision() -> dict[str, bool]:
    """bf16 autocast where the GPU has it natively, fp32 otherwise; fp16 is refused in config validation
    (T5 overflows). Weights stay fp32 either way.

    Emulated bf16 (what `is_bf16_supported()` also counts on pre-Ampere GPUs) is slower than fp32, so
    only native support counts.
    """
    if not torch.cuda.is_available():
        reason = "no CUDA GPU"
    elif torch.cuda.is_bf16_supported(including_emulation=False):
        return {"bf16": True}
    else:
        major, minor = torch.cuda.get_device_capability()
        reason = f"the GPU (compute capability {major}.{minor}) has no native bf16, which needs 8.0 or later"
    if reason not in _TOLD:
        _TOLD.add(reason)
        log.info("bf16 not used: %s; training in fp32", reason)
    return {}


def training_arguments(config: Config, folder: Path, announce: bool = True) -> Seq2SeqTrainingArguments:
    """The trainer's arguments, with `auto` settings resolved (logged at info level when `announce`)."""
    mixed = mixed_precision()
    # Pinned memory only helps copies to a GPU; on CPU it just prints a warning every run.
    pin = {"dataloader_pin_memory": torch.cuda.is_available()}
    args = {**mixed, **pin, **ranks.trainer_args(), **config.training_args(), "output_dir": str(folder / runs.CHECKPOINTS)}
    if args.get("activation_checkpointing") == AUTO:  # the library takes only a bool
        args["activation_checkpointing"], reason = auto_activation_checkpointing(config)
        if announce:
            log.info("activation checkpointing: %s (auto: %s)", "on" if args["activation_checkpointing"] else "off", reason)
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
    data_checks: dict[str, Any] = field(default_factory=dict)  # how the data was split and checked, for metadata
    validation: Any = None  # the subset validated during training, if any (dialogtune.validation)


def prepare(config: Config) -> Setup:
    """Load data, tokenise, and load a fresh base (wrapped with LoRA for `lora`)."""
    if config.method not in TRAINED_METHODS:
        raise DialogtuneError(f"`method` is {config.method!r}; training needs full or lora (original has nothing to train)")
    check_quantization(config.quantization)  # QLoRA needs CUDA and bitsandbytes: refuse before loading anything
    set_seed(config.seed)
    template = PromptTemplate(config.prompt.template)
    tokenizer = load_tokenizer(config.model)
    if config.method == "lora":
        check_lora(config.model, config.lora_args())  # from the model's config alone, before the data
    if config.tasks:  # each task with its own data, columns and template, mixed by weight (dialogtune.tasks)
        dataset, stats, data_checks = tokenize_tasks(tokenizer, config)
        template = config.tasks[0].prompt(config.prompt.template)  # the run's prompt.json
    else:
        records = load_split(config.data, config.data.train_split, limit=config.data.max_train_samples)
        # Never train on what is scored: every evaluation split is checked against the train dialogues.
        evaluated = [config.data.validation_split, config.data.test_split, config.evaluation.split]
        data_checks = {
            "data_split": split_info(config.data),
            "data_overlap": check_splits_disjoint(config.data, records, evaluated, config.data.allow_overlap),
        }
        # A dialogue with several references gives one training example per reference.
        pairs = [(template.format(r["dialogue"]), ref) for r in records for ref in r["references"]]
        dataset, stats = tokenize(
            tokenizer, [p for p, _ in pairs], [s for _, s in pairs],
            config.data.max_source_length, config.data.max_target_length, template,
        )
    validation = validation_set(config, tokenizer, template)  # a missing validation split fails here, before the model
    base = load_base(config.model, dropout=config.dropout, quantization=config.quantization)
    if config.quantization:
        base = prepare_quantized(base)
    with quiet_libraries():
        model = apply_lora(base, config.lora_args()) if config.method == "lora" else base
    log.info(describe_parameters(model))
    return Setup(tokenizer, dataset, stats, base, model, template, data_checks, validation)


def make_trainer(setup: Setup, config: Config, folder: Path) -> Seq2SeqTrainer:
    return ValidatingTrainer(
        model=setup.model,
        args=training_arguments(config, folder),
        train_dataset=setup.dataset,
        data_collator=collator(setup.tokenizer, setup.base),
        processing_class=setup.tokenizer,
        callbacks=[JsonlLog(folder / runs.TRAIN_LOG, len(setup.tokenizer)), *callbacks(config)],
        validation=setup.validation,
    )


def fit(
    setup: Setup, config: Config, folder: str | Path, overwrite: bool = False, checkpoint: Path | None = None
) -> RunFolder:
    """Run the trainer on a prepared setup (from `checkpoint` if given) and save the result as a run folder."""
    folder = Path(folder)
    if checkpoint is None:
        run = RunFolder.create(folder, config, overwrite=overwrite)
        if ranks.is_main():  # the others write nothing into the run folder (ranks)
            shutil.rmtree(folder / runs.CHECKPOINTS, ignore_errors=True)
            (folder / runs.TRAIN_LOG).unlink(missing_ok=True)
    else:
        log.info("resuming from %s", checkpoint)
        run = runs.read_run(folder)
        if ranks.is_main():
            _trim_log(folder / runs.TRAIN_LOG, int(checkpoint.name.split("-")[-1]))
    trainable, total = parameter_counts(setup.model)
    # transformers 5 takes the TensorBoard folder from this variable only; default to the run folder
    # rather than a `runs/` folder in whatever directory the user happens to be in.
    tensorboard_dir = os.environ.get("TENSORBOARD_LOGGING_DIR") or str(folder / "tensorboard")
    previous = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = tensorboard_dir
    trainer = make_trainer(setup, config, folder)
    args = trainer.args
    _reset_peak_memory()
    run.update(Status.TRAINING)
    started = time.perf_counter()
    try:
        with quiet_libraries():
            result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except BaseException:
        run.update(Status.FAILED)  # a rerun of the same command resumes from the last complete checkpoint
        raise
    finally:
        if previous is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
    seconds = time.perf_counter() - started - trainer.validation_seconds  # validation is reported apart
    _save_atomically(trainer, setup, config, folder)
    stats = setup.stats
    examples_seen = result.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    if args.max_steps <= 0:
        examples_seen = min(examples_seen, math.ceil(args.num_train_epochs) * len(setup.dataset))
    tokens_seen = examples_seen * stats.tokens / max(1, stats.examples)
    run.update(
        Status.TRAINED,
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
        activation_checkpointing=bool(args.activation_checkpointing),
        tokens=stats.as_dict(),
        resumed_from=str(checkpoint) if checkpoint else None,
        world_size=args.world_size,  # processes trained together; a resume needs as many (checkpoints)
        # An adapter fits only a base of these shapes; loading it elsewhere is refused by name (modeling.check_base).
        base_shapes=base_shapes(setup.base, config.model),
        **setup.data_checks,
        **outcome(trainer),  # validation_seconds; which step's weights the folder holds, and why
    )
    return run


def _save_atomically(trainer: Seq2SeqTrainer, setup: Setup, config: Config, folder: Path) -> None:
    """Write the trained weights beside the run, then rename each file in: a kill never leaves half a file.
    Every rank calls it; rank 0 writes, and no rank returns before the weights are on disk.

    For LoRA this is only adapter_model.safetensors + adapter_config.json: the base is not copied.
    """
    staging = folder / SAVING
    if ranks.is_main():
        shutil.rmtree(staging, ignore_errors=True)
    if engines.detect().shards_parameters:  # FSDP / ZeRO-3: every rank hands in its shard, rank 0 writes them whole
        ranks.barrier()
        trainer.save_model(str(staging))
        if ranks.is_main():
            (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle, and not part of the run
    elif ranks.is_main():  # setup.model is the bare model, not the DDP wrapper: the same weights on every rank
        setup.model.save_pretrained(staging)
    if ranks.is_main():
        if config.method == "full":
            setup.tokenizer.save_pretrained(staging)
        for path in staging.iterdir():
            os.replace(path, folder / path.name)
        staging.rmdir()
    ranks.barrier()


def train(config: Config, folder: str | Path, overwrite: bool = False, resume: bool = False) -> RunFolder:
    """Train `config.method` (full or lora) into `folder`; returns the run, ready to evaluate.

    An unfinished run of the same config in `folder` continues from its last complete checkpoint,
    whether or not `resume` is set: rerunning the command that was killed is enough.
    """
    folder = Path(folder)
    training_arguments(config, folder, announce=False)  # fail on bad options before loading anything
    runs.check_output(folder, overwrite)
    plan, checkpoint = RunFolder.plan(folder, config, overwrite)
    if plan is not Plan.RESUME:
        checkpoint = None  # a trained but unscored run is trained again: `train` was asked for
    else:
        check_world_size(checkpoint, ranks.world_size())
    if resume and checkpoint is None:
        log.warning("--resume: %s has no complete checkpoint of an unfinished run; starting from the beginning", folder)
    return fit(prepare(config), config, folder, overwrite=overwrite, checkpoint=checkpoint)


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from: they are about to be redone."""
    if path.exists():
        keep = [line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line).get("step", 0) <= step]
        runs.write_text(path, "".join(line + "\n" for line in keep))


def _reset_peak_memory() -> None:
    """Start a fresh peak, so a run's figure is its own and not that of a run before it in this process."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        # Linux: writing 5 resets the resident-set high-water mark (VmHWM) of this process.
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _peak_memory() -> int:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # Elsewhere ru_maxrss (KiB on Linux, bytes on macOS) is the peak of the whole process so far.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
