"""Validation during training: the model being trained summarises a seeded validation subset, scored as evaluation
scores (ROUGE, unsupported facts per summary) and logged with the validation loss.

`ValidatingTrainer` adds these figures to transformers' own evaluation (eval_loss, eval_rouge1, ...,
eval_unsupported_rate), so `metric_for_best_model`, `load_best_model_at_end` and `EarlyStoppingCallback` work
on them unchanged, and they reach train_log.jsonl and TensorBoard through the trainer's log. Summaries come
from the same batched generation as evaluation (`Summarizer.generate`) with the run's prompt and generation
settings; a LoRA adapter is used in place, with no copy of the model. Time spent validating is kept apart from
training time. What turns it on and how it is checked: `dialogtune.validationconfig`.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import EarlyStoppingCallback, TrainerCallback

from dialogtune import runs, sharding
from dialogtune.checkpoints import CheckpointingTrainer
from dialogtune.data import load_split
from dialogtune.errors import DialogtuneError
from dialogtune.faithfulness import unsupported
from dialogtune.inference import Settings, Summarizer
from dialogtune.metrics import per_example_scores
from dialogtune.preprocess import tokenize
from dialogtune.prompts import PromptTemplate
from dialogtune.validationconfig import metric_name, scheduled


@dataclass
class Validation:
    """The validation subset, its prompts and tokenised pairs (for the loss), and how summaries are made."""

    split: str
    records: list[dict[str, Any]]
    prompts: list[str]
    dataset: Any
    tokenizer: Any
    settings: Settings
    protocol: str

    def score(self, model: torch.nn.Module) -> dict[str, float]:
        """ROUGE (points) and unsupported facts per summary of `model`'s summaries; `model` is left in the mode
        it was in (training, usually)."""
        was_training = model.training
        try:
            with torch.no_grad():  # Summarizer.generate switches to eval mode (no dropout) and inference mode
                predictions = sharding.generate(Summarizer(model, self.tokenizer, self.settings), self.prompts)
        finally:
            model.train(was_training)
        scores = per_example_scores(predictions, [r["references"] for r in self.records], self.protocol,
                                    [r["reference_names"] for r in self.records])
        figures = {metric: float(np.mean(values)) for metric, values in scores.items()}
        flagged = [len(unsupported(p, r["dialogue"])) for p, r in zip(predictions, self.records, strict=True)]
        return {**figures, "unsupported_rate": float(np.mean(flagged))}


def validation_set(config: Any, tokenizer: Any, template: PromptTemplate) -> Validation | None:
    """The seeded validation subset of `config` (None when nothing is validated during training)."""
    if not scheduled(config.evaluation.eval_steps, config.training):
        return None
    split = config.data.validation_split
    try:
        records = load_split(config.data, split, limit=config.evaluation.val_samples)
    except DialogtuneError as err:  # no such split, or an empty part of a seeded split
        raise DialogtuneError(f"validation during training needs validation data: {err}") from None
    prompts = [template.format(r["dialogue"]) for r in records]
    pairs = [(p, ref) for p, r in zip(prompts, records) for ref in r["references"]]  # as training pairs are made
    dataset, _ = tokenize(tokenizer, [p for p, _ in pairs], [s for _, s in pairs], config.data.max_source_length,
                          config.data.max_target_length, template)
    return Validation(split, records, prompts, dataset, tokenizer, Settings.of(config, template), config.evaluation.protocol)


def callbacks(config: Any) -> list[TrainerCallback]:
    """transformers' early stopping, when `training.early_stopping_patience` is set."""
    patience = config.training.get("early_stopping_patience")
    return [EarlyStoppingCallback(early_stopping_patience=patience)] if patience else []


class ValidatingTrainer(CheckpointingTrainer):
    """A CheckpointingTrainer whose evaluation also generates and scores the validation subset.

    `validation_seconds` is the time spent in evaluation by this process; each validation also logs
    `eval_train_seconds`, the training time before it (validation excluded; counted on from the log after a resume).
    """

    def __init__(self, *args: Any, validation: Validation | None = None, **kwargs: Any) -> None:
        if validation is not None:
            kwargs.setdefault("eval_dataset", validation.dataset)  # eval_loss on the same subset
        super().__init__(*args, **kwargs)
        self.validation = validation
        self.validation_seconds = 0.0
        self._started = self._trained = self._at = 0.0  # when train() began; seconds trained before it; at this validation

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        self._started = time.perf_counter()
        self._trained = _trained_before(Path(self.args.output_dir).parent / runs.TRAIN_LOG) if resume_from_checkpoint else 0.0
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """transformers' evaluation, timed apart, and without side effects on training: every DataLoader pass draws
        from the global torch RNG, which would reshuffle the next epoch differently (and sampled generation draws
        more), so the RNG states are put back and a validated run trains exactly as an unvalidated one."""
        started = time.perf_counter()
        self._at = self._trained + started - (self._started or started) - self.validation_seconds
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        devices = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
            if devices is not None:
                torch.cuda.set_rng_state_all(devices)
            self.validation_seconds += time.perf_counter() - started

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        """The loss over the subset (transformers), then the generated figures in the same metrics, so one log line
        and one `on_evaluate` carry them all."""
        output = super().evaluation_loop(*args, **kwargs)
        if self.validation is not None:
            prefix = kwargs.get("metric_key_prefix", "eval")
            figures = {**self.validation.score(self.model), "train_seconds": round(self._at, 3)}
            output.metrics.update({f"{prefix}_{name}": value for name, value in figures.items()})
        return output


def _trained_before(log: Path) -> float:
    """Training seconds at the last validation logged (the log is already trimmed to the resumed checkpoint)."""
    seconds = 0.0
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            seconds = json.loads(line).get("eval_train_seconds", seconds)
    return seconds


def outcome(trainer: Any) -> dict[str, Any]:
    """For the run's metadata: the validation subset and its cost, and which step's weights the run holds and why."""
    validation = trainer.validation
    if validation is None:
        return {}
    state, args = trainer.state, trainer.args
    points = [e for e in state.log_history if "eval_loss" in e]  # every validation, the resumed ones included
    found: dict[str, Any] = {
        "validation_seconds": round(trainer.validation_seconds, 3),
        "validation": {"split": validation.split, "samples": len(validation.records), "ids": [r["id"] for r in validation.records],
                       "evaluations": len(points), "steps": [e["step"] for e in points]},
    }
    weights = {"step": state.global_step, "why": "the last step (no best-model selection)"}
    if args.metric_for_best_model and points:
        name, greater = metric_name(args.metric_for_best_model), bool(args.greater_is_better)
        best = max(points, key=lambda e: e[f"eval_{name}"] if greater else -e[f"eval_{name}"])  # the first of equals, as transformers
        checkpoint = Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None
        found["best"] = {"metric": name, "value": best[f"eval_{name}"], "step": best["step"], "greater_is_better": greater,
                         "checkpoint": checkpoint}
        if args.load_best_model_at_end and checkpoint:  # transformers reloaded it before the weights were saved
            word = "highest" if greater else "lowest"
            weights = {"step": int(checkpoint.split("-")[-1]),
                       "why": f"{word} validation {name} ({best[f'eval_{name}']:.4g}) of {len(points)} validations"}
    stopping = any(isinstance(c, EarlyStoppingCallback) for c in trainer.callback_handler.callbacks)
    found["early_stopped"] = stopping and state.global_step < state.max_steps
    found["weights"] = weights
    return found
