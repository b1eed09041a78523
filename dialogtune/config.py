"""The schema: every option dialogtune reads, with its default and its `--help` text.

Each section checks its own values in `__post_init__` (as `peft.LoraConfig` does) and raises every
problem it finds at once. `training`, `lora` and `generation` are passed straight through to
`Seq2SeqTrainingArguments`, `peft.LoraConfig` and `transformers.GenerationConfig`: only our defaults
for them live here, and `dialogtune.configio` checks their keys against those classes.
Reading YAML and applying `--key value` overrides is `dialogtune.configio`'s job. (A little over 300
lines: the many fields each carry their help text; validation during training is checked and resolved in
`dialogtune.validationconfig`.)
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from dialogtune.errors import DialogtuneError
from dialogtune.prompts import DEFAULT_TEMPLATE, PromptTemplate
from dialogtune import validationconfig
from dialogtune.taskconfig import MixingConfig, omit_default_tasks, resolve_tasks

Method = Literal["original", "full", "lora"]
METHODS: tuple[str, ...] = typing.get_args(Method)
TRAINED_METHODS = tuple(m for m in METHODS if m != "original")  # the original model is scored as it ships


def _option(default: Any, help: str) -> Any:  # noqa: A002 - `help` as in argparse and peft
    """A dataclass field carrying its `--help` text; a list or dict default is copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _section(cls: type, help: str) -> Any:  # noqa: A002
    return field(default_factory=cls, metadata={"help": help})


def _raise_all(problems: list[str]) -> None:
    if problems:
        raise DialogtuneError("; ".join(problems))


def _positive(key: str, value: int | None, fix: str = "it must be positive", unset_ok: bool = False) -> list[str]:
    if value is None and unset_ok:
        return []
    return [] if value is not None and value > 0 else [f"`{key}` is {value}; {fix}"]


def safe_name(name: str, what: str) -> str:
    """A user-given name that becomes one path component: no separators, no `..`, nothing hidden or empty."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or name.startswith(".")
        or any(sep in name for sep in ("/", "\\", "\0"))
    ):
        raise DialogtuneError(
            f"{what} {name!r} is not a valid name; use letters, digits, `-` or `_` (no `/`, `\\` or leading `.`)"
        )
    return name


@dataclass
class DataConfig:
    dataset: str = _option("knkarthick/dialogsum", "Hub dataset id, a local CSV/JSON/JSONL file or folder, or builtin:dialogs.")
    loader: Literal["auto", "hub", "local"] = _option("auto", "auto: an existing path is read locally, anything else goes to datasets.load_dataset.")
    train_split: str = _option("train", "The split trained on.")
    validation_split: str = _option("validation", "Name of the validation split in the data.")
    test_split: str = _option("test", "Name of the test split in the data.")
    id_column: str = _option("id", "Falls back to `fname` (original DialogSum layout) when absent.")
    dialogue_column: str = _option("dialogue", "Column holding the dialogue.")
    summary_column: str = _option(
        "summary", "Also read as summary1, summary2, ... when the plain column is absent (several references)."
    )
    topic_column: str = _option("topic", "Column for the report's per-topic scores; optional.")
    max_train_samples: int | None = _option(None, "Reproducible subsample of the train split (seeded by data.sample_seed).")
    max_eval_samples: int | None = _option(None, "Reproducible subsample of the evaluated split.")
    sample_seed: int = _option(0, "Seed for both subsamples.")
    split_sizes: list[float] = _option([0.9, 0.05, 0.05], "Train/validation/test fractions for a file (or folder) without split names.")
    split_seed: int = _option(0, "Seed for that split over dialogues; the sizes and seed are recorded in the run.")
    allow_overlap: bool = _option(False, "Train even if validation/test dialogues are also in train (the overlap is recorded).")
    max_source_length: int = _option(512, "Prompt tokens kept; longer prompts are truncated, counted and logged.")
    max_target_length: int = _option(128, "Summary tokens kept as labels.")

    def __post_init__(self) -> None:
        problems = []
        for key in ("max_source_length", "max_target_length"):
            problems += _positive(f"data.{key}", getattr(self, key))
        for key in ("max_train_samples", "max_eval_samples"):
            problems += _positive(f"data.{key}", getattr(self, key), "use a positive number or leave it unset", True)
        try:  # `--data.split_sizes 0.8,0.1,0.1` arrives as strings; NaN fails `0 <= s`
            sizes = [float(v) for v in self.split_sizes if not isinstance(v, bool)]
        except (TypeError, ValueError):
            sizes = []
        fractions = len(sizes) == len(self.split_sizes) == 3 and all(0 <= s <= 1 for s in sizes)
        if not fractions or not sizes[0] or abs(sum(sizes) - 1) > 1e-6:
            problems.append(
                f"`data.split_sizes` is {self.split_sizes!r}; use three fractions for train, validation and test "
                f"that sum to 1, train above 0, e.g. [0.9, 0.05, 0.05]"
            )
        self.split_sizes = sizes
        _raise_all(problems)


@dataclass
class PromptConfig:
    template: str = _option(DEFAULT_TEMPLATE, "Instruction template; must contain {dialogue}.")
    shots: int = _option(0, "In-context examples for the original model: 0 zero-shot, 1 one-shot, k few-shot.")
    shots_seed: int = _option(0, "Seed for drawing the in-context examples from the train split.")

    def __post_init__(self) -> None:
        problems = []
        try:
            PromptTemplate(self.template)  # the template checks itself; one home for the `{dialogue}` rule
        except DialogtuneError as err:
            problems.append(str(err))
        if self.shots < 0:
            problems.append(f"`prompt.shots` is {self.shots}; use 0 or more")
        _raise_all(problems)


@dataclass
class EvaluationConfig:
    split: str = _option("test", "Which split evaluate and run score: train, validation or test.")
    batch_size: int = _option(16, "Generation batch size; batches are sorted by length, so padding stays small.")
    protocol: str = _option("mean", "Multi-reference ROUGE protocol: mean, max or field:NAME.")
    bootstrap_resamples: int = _option(1000, "Resamples for the 95% confidence intervals.")
    merge_lora: bool = _option(True, "Merge the LoRA adapter into a copy of the base before generating (same outputs, faster).")
    eval_steps: int | None = _option(
        None, "Validate during training every this many steps: ROUGE, unsupported facts and loss on `val_samples` "
        "validation dialogues, logged to train_log.jsonl and drawn in the report; unset: no validation."
    )
    val_samples: int = _option(200, "Validation dialogues generated for at each validation (a seeded subset, data.sample_seed).")

    def __post_init__(self) -> None:
        from dialogtune.metrics import parse_protocol  # lazily: rouge_score is not needed to read a config

        problems = _positive("evaluation.batch_size", self.batch_size)
        problems += _positive("evaluation.eval_steps", self.eval_steps, "use a positive number of steps, or leave it unset", True)
        problems += _positive("evaluation.val_samples", self.val_samples, "use a positive number such as 200")
        problems += _positive("evaluation.bootstrap_resamples", self.bootstrap_resamples, "use a positive number such as 1000")
        try:
            parse_protocol(self.protocol)
        except ValueError:
            problems.append(f"`evaluation.protocol` is {self.protocol!r}; use mean, max or field:NAME (e.g. field:summary1)")
        _raise_all(problems)


@dataclass
class ReportConfig:
    num_examples: int = _option(5, "Test examples shown side by side in the report, chosen reproducibly.")
    examples_seed: int = _option(0, "Seed for choosing those examples.")
    min_topic_count: int = _option(10, "Topics with fewer test dialogues are left out of the by-topic table (their means are noise).")

    def __post_init__(self) -> None:
        _raise_all(_positive("report.min_topic_count", self.min_topic_count, "use 1 to list every topic"))


@dataclass
class RunConfig:
    methods: list[str] = _option(list(METHODS), "What `dialogtune run` does, in order.")
    overrides: dict[str, dict[str, Any]] = _option({}, "Per-method dotted overrides, e.g. {lora: {training.num_train_epochs: 3}}.")

    def __post_init__(self) -> None:
        problems = []
        for name in self.methods:
            try:
                safe_name(name, "`run.methods` entry")  # each method becomes a folder under `output`
            except DialogtuneError as err:
                problems.append(str(err))
                continue
            if name not in METHODS:
                problems.append(f"`run.methods` has {name!r}; choose from {', '.join(METHODS)}")
        for method in self.overrides:
            if method not in METHODS:
                problems.append(f"`run.overrides` has method {method!r}; use one of {', '.join(METHODS)}")
        _raise_all(problems)


TRAINING_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 8,
    "num_train_epochs": 1,
    "weight_decay": 0.0,
    "warmup_steps": 0,
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_total_limit": 2,
    "report_to": "none",
    "logging_first_step": True,  # the first loss is checked against ln(vocab) to catch supervised pads
    "logging_nan_inf_filter": False,  # show a NaN loss rather than hiding it behind an average
    # Length grouping keeps similar lengths in one batch, so dynamic padding pads little.
    "train_sampling_strategy": "group_by_length",
    "dataloader_num_workers": 0,
    # Validation during training (evaluation.eval_steps): listed here so --help shows them; unset by default.
    "metric_for_best_model": None,  # rouge1, rouge2, rougeL, rougeLsum, loss or unsupported_rate
    "load_best_model_at_end": False,  # the run folder gets the best validated checkpoint's weights
    "early_stopping_patience": None,  # validations without improvement before stopping (EarlyStoppingCallback)
}
AUTO = "auto"  # values we accept for a library's bool field and resolve before the library sees them
RESOLVED_VALUES: dict[str, tuple[str, ...]] = {"training.activation_checkpointing": (AUTO,)}
# Trainer defaults that differ by method, under the user's `training` settings.
METHOD_TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {"learning_rate": 3e-4},
    "lora": {
        # LoRA trains far fewer weights from a zero start, so it wants a larger step than full fine-tuning.
        "learning_rate": 1e-3,
        # Recomputing activations cut LoRA's peak from 4,705 to 1,741 MiB at batch 8 (BENCHMARKS.md) but
        # cost 25% of its tokens/s, leaving LoRA slower than full on CPU. `auto`: only on a GPU where the
        # estimate (dialogtune.memory) exceeds free memory; resolved in train.training_arguments.
        "activation_checkpointing": AUTO,
    },
    "original": {"learning_rate": 0.0},
}
LORA_DEFAULTS: dict[str, Any] = {
    "r": 32,  # higher: more capacity and a bigger adapter
    "lora_alpha": 32,  # scale of the update is lora_alpha / r
    # peft's default. With the notebook's 0.05, the demo's LoRA run scored 71.38 ROUGE-1 against 72.13
    # (paired difference not significant, p = 0.62) and trained in 184 s against 129 s: on CPU every
    # adapter draws a dropout mask over its input (BENCHMARKS.md, lever "lora_dropout 0.05").
    "lora_dropout": 0.0,
    "target_modules": ["q", "v"],  # FLAN-T5 attention projections; the FFN is wi_0, wi_1, wo
    "bias": "none",
}
LORA_ALIASES = {"alpha": "lora_alpha", "dropout": "lora_dropout"}
GENERATION_DEFAULTS: dict[str, Any] = {
    # The library default (20 tokens) cuts DialogSum summaries short; 200 leaves room.
    "max_new_tokens": 200,
    "num_beams": 1,
    "do_sample": False,
}
# The sections passed through to a library class, and our defaults under the user's values.
PASSTHROUGH: dict[str, dict[str, Any]] = {
    "training": TRAINING_DEFAULTS,
    "lora": LORA_DEFAULTS,
    "generation": GENERATION_DEFAULTS,
}


@dataclass
class Config:
    model: str = _option("google/flan-t5-base", "Hub id, a local model folder, or builtin:tiny-t5.")
    method: Method = _option("lora", "What train does: full fine-tuning or LoRA; original scores the base as it ships.")
    quantization: Literal["4bit", "8bit"] | None = _option(
        None, "QLoRA: with method lora, load the frozen base in 4bit (NF4) or 8bit through bitsandbytes (CUDA GPUs only); "
        "unset: fp32 weights."
    )
    seed: int = _option(42, "Seed for training, the bootstrap and anything else random.")
    dropout: float | None = _option(
        None, "The base model's dropout rate while training (T5's dropout_rate); unset keeps the checkpoint's (0.1 for FLAN-T5)."
    )
    output: str = _option("runs/dialogtune", "Run folder (train/evaluate) or the parent folder of all runs (run/demo).")
    data: DataConfig = _section(DataConfig, "Where the dialogues come from and how much of them is used.")
    prompt: PromptConfig = _section(PromptConfig, "The instruction around each dialogue.")
    evaluation: EvaluationConfig = _section(EvaluationConfig, "How predictions are generated and scored.")
    report: ReportConfig = _section(ReportConfig, "What the comparison report shows.")
    run: RunConfig = _section(RunConfig, "What `dialogtune run` does.")
    tasks: list[Any] = _option([], "Tasks trained on and scored: the YAML's own or built-ins (summary, topic, slot_qa, details); none: summary.")
    mixing: MixingConfig = _section(MixingConfig, "How several tasks are mixed in training.")
    training: dict[str, Any] = _option({}, "Any transformers.Seq2SeqTrainingArguments field.")
    lora: dict[str, Any] = _option({}, "Any peft.LoraConfig field; alpha and dropout stand for lora_alpha and lora_dropout.")
    generation: dict[str, Any] = _option({}, "Any transformers.GenerationConfig field.")

    def __post_init__(self) -> None:
        """Checks across the passthrough sections that types alone do not catch (their keys: configio)."""
        problems = []
        if self.method not in METHODS:
            problems.append(f"`method` is {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.quantization is not None and self.method != "lora":
            problems.append(
                f"`quantization` is {self.quantization!r} with method {self.method!r}; a quantized base is trained through a "
                f"LoRA adapter only (QLoRA): use `method: lora`, or leave `quantization` unset"
            )
        if self.dropout is not None and not 0 <= self.dropout < 1:
            problems.append(f"`dropout` is {self.dropout!r}; use a value in [0, 1), or leave it unset for the checkpoint's")
        if self.training.get("fp16"):
            problems.append(
                "`training.fp16` is not supported for T5: its activations overflow in fp16 and the loss "
                "turns to NaN; use `training.bf16=true` on hardware with bf16, or fp32 (the default)"
            )
        lr = self.training.get("learning_rate")
        if isinstance(lr, (int, float)) and lr <= 0:
            problems.append(f"`training.learning_rate` is {lr}; it must be positive")
        lora = self.lora_args()
        r = lora.get("r")
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            problems.append(f"`lora.r` is {r!r}; use a positive whole number such as 8, 16 or 32")
        dropout = lora.get("lora_dropout")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            problems.append(f"`lora.lora_dropout` is {dropout!r}; use a value in [0, 1)")
        new_tokens = self.generation_args().get("max_new_tokens")
        if new_tokens is not None and (not isinstance(new_tokens, int) or new_tokens <= 0):
            problems.append(f"`generation.max_new_tokens` is {new_tokens!r}; use a positive whole number")
        self.tasks = resolve_tasks(self.tasks, problems)  # each entry checked by dialogtune.taskconfig
        problems += validationconfig.problems(self)
        _raise_all(problems)

    def training_args(self) -> dict[str, Any]:
        """Trainer arguments: our defaults under the user's."""
        defaults = {**TRAINING_DEFAULTS, **METHOD_TRAINING_DEFAULTS[self.method]}
        if "gradient_checkpointing" in self.training:
            # The library's deprecated alias counts only when `activation_checkpointing` is unset.
            defaults.pop("activation_checkpointing", None)
        args = {**defaults, "seed": self.seed, **self.training}
        return validationconfig.trainer_args(self.evaluation.eval_steps, self.training, args)  # eval, save, best model

    def lora_args(self) -> dict[str, Any]:
        """`peft.LoraConfig` arguments: our defaults under the user's, aliases resolved."""
        args = {**LORA_DEFAULTS, **{LORA_ALIASES.get(k, k): v for k, v in self.lora.items()}}
        targets = args.get("target_modules")
        if isinstance(targets, str) and "," in targets:
            # `--lora.target_modules q,v` means a list; peft would read a plain string as one regex.
            args["target_modules"] = [t.strip() for t in targets.split(",") if t.strip()]
        return args

    def generation_args(self) -> dict[str, Any]:
        """`GenerationConfig` arguments: our defaults under the user's."""
        return {**GENERATION_DEFAULTS, **self.generation}

    def to_dict(self) -> dict[str, Any]:
        return omit_default_tasks(dataclasses.asdict(self))
