"""Validation during training as configured: what turns it on, what the trainer is told, and the checks.

`evaluation.eval_steps` (or `training.eval_strategy: epoch`) schedules it; `training.metric_for_best_model`,
`load_best_model_at_end` and `early_stopping_patience` build on transformers' own machinery. This module only
resolves and checks those settings (it comes before `dialogtune.config`, which calls it, and imports nothing
heavy); generating and scoring during training is `dialogtune.validation`'s job.
"""

from __future__ import annotations

from typing import Any

# The figures every validation logs (as eval_<name>), and whether more is better.
BEST_METRICS: dict[str, bool] = {
    "loss": False,  # the validation loss (eval_loss)
    "rouge1": True,
    "rouge2": True,
    "rougeL": True,
    "rougeLsum": True,
    "unsupported_rate": False,  # unsupported facts per summary (dialogtune.faithfulness)
}
# Keys of the `training` section that are dialogtune's, not Seq2SeqTrainingArguments fields.
TRAINING_EXTRAS: dict[str, type] = {"early_stopping_patience": int}


def metric_name(metric: str) -> str:
    """`eval_rouge1` and `rouge1` name the same figure, as in transformers."""
    return metric.removeprefix("eval_")


def scheduled(eval_steps: int | None, training: dict[str, Any]) -> bool:
    """Whether anything is validated during training."""
    return eval_steps is not None or str(training.get("eval_strategy") or "no") != "no"


def problems(config: Any) -> list[str]:
    """Every problem with the validation settings of `config` (a `dialogtune.config.Config`), one line each."""
    from dialogtune.sources import canonical_split  # lazily: sources imports config

    training, steps = config.training, config.evaluation.eval_steps
    on = scheduled(steps, training)
    found = []
    metric = training.get("metric_for_best_model")
    if metric is not None and metric_name(str(metric)) not in BEST_METRICS:
        found.append(f"`training.metric_for_best_model` is {metric!r}; choose one of {', '.join(BEST_METRICS)} "
                     f"(validation figures; unsupported_rate is unsupported facts per summary, lower is better)")
    patience = training.get("early_stopping_patience")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience <= 0):
        found.append(f"`training.early_stopping_patience` is {patience!r}; use a positive whole number of validations, or leave it unset")
    elif patience is not None and metric is None and not training.get("load_best_model_at_end"):
        found.append("`training.early_stopping_patience` needs `training.metric_for_best_model` (e.g. rouge1) to know what must improve")
    wanted = [k for k in ("early_stopping_patience", "metric_for_best_model", "load_best_model_at_end") if training.get(k)]
    if wanted and not on:
        found.append(f"`training.{wanted[0]}` needs validation during training, and none is scheduled: set "
                     f"`evaluation.eval_steps` (e.g. 100) or `training.eval_strategy: epoch`")
    if steps is not None and ("eval_strategy" in training or "eval_steps" in training):
        found.append("`evaluation.eval_steps` and `training.eval_strategy`/`training.eval_steps` both schedule validation; set one")
    if not on:
        return found
    saving, strategy = training.get("save_strategy"), "steps" if steps is not None else training.get("eval_strategy")
    if training.get("load_best_model_at_end") and saving is not None and saving not in (strategy, "best"):
        found.append(f"`training.load_best_model_at_end` reloads the best validated checkpoint, but `training.save_strategy` "
                     f"is {saving!r}: leave it unset (a checkpoint at every validation) or set it to {strategy!r}")
    split = canonical_split(config.data.validation_split)
    scored = {canonical_split(config.evaluation.split): "evaluation.split", canonical_split(config.data.test_split): "data.test_split"}
    if split in scored:
        found.append(f"`data.validation_split` is {config.data.validation_split!r}, the split the run is scored on "
                     f"(`{scored[split]}`); validation during training must not see it: use the validation split")
    if config.tasks:
        found.append("validation during training scores the summary data only; with `tasks:` leave `evaluation.eval_steps` "
                     "and `training.eval_strategy` unset")
    return found


def trainer_args(eval_steps: int | None, user: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """`args` (the trainer arguments with our defaults) with validation resolved for Seq2SeqTrainingArguments.

    `user`: the config's own `training` settings, which always win.
    """
    args = {k: v for k, v in args.items() if k not in TRAINING_EXTRAS}
    if eval_steps is not None:
        args.update(eval_strategy="steps", eval_steps=eval_steps)
    metric = args.get("metric_for_best_model")
    if metric is not None and "greater_is_better" not in user:  # transformers guesses from a `loss` suffix only
        args["greater_is_better"] = BEST_METRICS.get(metric_name(str(metric)), True)
    if args.get("load_best_model_at_end") and str(args.get("eval_strategy") or "no") != "no":
        # The best model is reloaded from a checkpoint, so there must be one at every validation.
        if "save_strategy" not in user:
            args["save_strategy"] = args["eval_strategy"]
        if "save_steps" not in user and args.get("eval_steps"):
            args["save_steps"] = args["eval_steps"]
    return args
