"""Our own options as dataclasses, loaded from YAML and overridden by dotted CLI flags.

`training`, `lora` and `generation` are passed straight through to `Seq2SeqTrainingArguments`,
`peft.LoraConfig` and `transformers.GenerationConfig`: their fields are validated against those
classes, never re-declared here.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from dialogtune.errors import DialogtuneError

DEFAULT_TEMPLATE = "Summarize the following conversation.\n\n{dialogue}\n\nSummary: "
METHODS = ("original", "full", "lora")


@dataclass
class DataConfig:
    dataset: str = "knkarthick/dialogsum"
    """Hub dataset id, a local CSV/JSON/JSONL file or folder, or `builtin:dialogs`."""
    loader: Literal["auto", "hub", "local"] = "auto"
    """`auto`: an existing path is read locally, anything else goes to `datasets.load_dataset`."""
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    id_column: str = "id"
    """Falls back to `fname` (original DialogSum layout) when absent."""
    dialogue_column: str = "dialogue"
    summary_column: str = "summary"
    """Also read as `summary1`, `summary2`, ... when the plain column is absent (several references)."""
    topic_column: str = "topic"
    max_train_samples: int | None = None
    """Reproducible subsample of the train split (seeded by `data.sample_seed`)."""
    max_eval_samples: int | None = None
    """Reproducible subsample of the evaluated split."""
    sample_seed: int = 0
    max_source_length: int = 512
    """Prompt tokens kept; longer prompts are truncated, counted and logged."""
    max_target_length: int = 128
    """Summary tokens kept as labels."""


@dataclass
class PromptConfig:
    template: str = DEFAULT_TEMPLATE
    """Instruction template; must contain `{dialogue}`."""
    shots: int = 0
    """In-context examples for the original model: 0 zero-shot, 1 one-shot, k few-shot."""
    shots_seed: int = 0
    """Seed for drawing the in-context examples from the train split."""


@dataclass
class EvaluationConfig:
    split: str = "test"
    """Which split `evaluate` and `run` score: train, validation or test."""
    batch_size: int = 16
    """Generation batch size; batches are sorted by length, so padding stays small."""
    protocol: str = "mean"
    """Multi-reference ROUGE protocol: mean, max or field:NAME."""
    bootstrap_resamples: int = 1000
    """Resamples for the 95% confidence intervals."""
    merge_lora: bool = True
    """Merge the LoRA adapter into a copy of the base before generating (same outputs, faster)."""


@dataclass
class ReportConfig:
    num_examples: int = 5
    """Test examples shown side by side in the report, chosen reproducibly."""
    examples_seed: int = 0


@dataclass
class RunConfig:
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """What `dialogtune run` does, in order."""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-method dotted overrides, e.g. {lora: {training.num_train_epochs: 3}}."""


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
}
# Trainer defaults that differ by method, under the user's `training` settings.
METHOD_TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {"learning_rate": 3e-4},
    "lora": {
        # LoRA trains far fewer weights from a zero start, so it wants a larger step than full fine-tuning.
        "learning_rate": 1e-3,
        # LoRA's point is to fit where full fine-tuning does not. Its optimizer state is tiny, so
        # activations are most of its memory: recomputing them in the backward pass cut LoRA's peak from
        # 4,705 to 1,741 MiB at batch 8 for 25% fewer tokens/s (BENCHMARKS.md), and leaves the
        # gradients unchanged (tests/test_train.py).
        "activation_checkpointing": True,
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


@dataclass
class Config:
    model: str = "google/flan-t5-base"
    """Hub id, a local model folder, or `builtin:tiny-t5`."""
    method: Literal["original", "full", "lora"] = "lora"
    seed: int = 42
    dropout: float | None = None
    """The base model's dropout rate while training (T5's `dropout_rate`); None keeps the checkpoint's (0.1 for FLAN-T5)."""
    output: str = "runs/dialogtune"
    """Run folder (train/evaluate) or the parent folder of all runs (run/demo)."""
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    run: RunConfig = field(default_factory=RunConfig)
    training: dict[str, Any] = field(default_factory=dict)
    """Any `Seq2SeqTrainingArguments` field."""
    lora: dict[str, Any] = field(default_factory=dict)
    """Any `peft.LoraConfig` field (`alpha`/`dropout` are accepted for `lora_alpha`/`lora_dropout`)."""
    generation: dict[str, Any] = field(default_factory=dict)
    """Any `transformers.GenerationConfig` field."""

    def training_args(self) -> dict[str, Any]:
        """Trainer arguments: our defaults under the user's."""
        defaults = {**TRAINING_DEFAULTS, **METHOD_TRAINING_DEFAULTS[self.method]}
        return {**defaults, "seed": self.seed, **self.training}

    def lora_args(self) -> dict[str, Any]:
        args = {**LORA_DEFAULTS, **{LORA_ALIASES.get(k, k): v for k, v in self.lora.items()}}
        targets = args.get("target_modules")
        if isinstance(targets, str) and "," in targets:
            # `--lora.target_modules q,v` means a list; peft would read a plain string as one regex.
            args["target_modules"] = [t.strip() for t in targets.split(",") if t.strip()]
        return args

    def generation_args(self) -> dict[str, Any]:
        return {**GENERATION_DEFAULTS, **self.generation}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PASSTHROUGH = ("training", "lora", "generation")


def _passthrough_fields(section: str) -> set[str]:
    # Imported lazily: transformers and peft take seconds to import, and `--help` should not wait.
    if section == "training":
        from transformers import Seq2SeqTrainingArguments

        return {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments)}
    if section == "lora":
        from peft import LoraConfig

        return {f.name for f in dataclasses.fields(LoraConfig)} | set(LORA_ALIASES)
    from transformers import GenerationConfig

    return set(GenerationConfig().to_dict()) - {"transformers_version"}


def _passthrough_types(section: str) -> dict[str, Any]:
    """Field types of the class a passthrough section feeds; generation options have no typed fields."""
    if section == "training":
        from transformers import Seq2SeqTrainingArguments

        return typing.get_type_hints(Seq2SeqTrainingArguments)
    if section == "lora":
        from peft import LoraConfig

        hints = typing.get_type_hints(LoraConfig)
        return {**hints, **{alias: hints[name] for alias, name in LORA_ALIASES.items()}}
    return {}


def _scalar(annotation: Any) -> type | None:
    """int, float or bool when a field is exactly that (optionally None); anything richer is left to the library."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (int, float, bool) else None


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


PASSTHROUGH_CLASSES = {
    "training": "transformers.Seq2SeqTrainingArguments",
    "lora": "peft.LoraConfig (e.g. r, lora_alpha, lora_dropout, target_modules)",
    "generation": "transformers.GenerationConfig",
}


def _suggest(key: str, valid: typing.Iterable[str], section: str | None = None) -> str:
    """The closest valid key, or else where the valid keys are listed, so every unknown key comes with a fix."""
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    if close:
        return f"; did you mean `{close[0]}`?"
    if section in PASSTHROUGH_CLASSES:
        return f"; use a field of {PASSTHROUGH_CLASSES[section]}"
    return f"; valid keys: {', '.join(sorted(valid))}"


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a dataclass field type, converting the few cases YAML and the CLI blur."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None and (annotation is type(None) or type(None) in args):
        return None
    if origin is Literal:
        if value not in args:
            raise DialogtuneError(f"`{key}` is {value!r}; choose one of {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except DialogtuneError:
                pass
        raise DialogtuneError(f"`{key}` is {value!r}, which is not a valid {annotation}")
    if origin in (list, dict):
        if not isinstance(value, origin):
            if origin is list and isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            raise DialogtuneError(f"`{key}` is {value!r}; it must be a {origin.__name__}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise DialogtuneError(f"`{key}` is {value!r}; use true or false")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DialogtuneError(f"`{key}` is {value!r}; it must be a whole number")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DialogtuneError(f"`{key}` is {value!r}; it must be a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            return str(value)
        return value
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: `no` stays the string "no" (save_strategy: no) and `1e-3` is a float."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.inf|\.nan)$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def parse_value(text: str) -> Any:
    """Turn a CLI string into a value with the same rules as the YAML files."""
    try:
        return yaml_load(text)
    except yaml.YAMLError:
        return text


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise DialogtuneError(f"`{dotted}`: `{part}` is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply dotted-key overrides (`lora.r: 16`) onto a nested config mapping."""
    for key, value in overrides.items():
        _set_dotted(tree, key, value)
    return tree


def build_config(tree: dict[str, Any], source: str = "config") -> Config:
    """Validate a nested mapping into a Config, collecting every problem before raising once."""
    problems: list[str] = []
    hints = _hints(Config)
    kwargs: dict[str, Any] = {}
    for key, value in tree.items():
        if key not in hints:
            problems.append(f"unknown config key `{key}`{_suggest(key, hints)}")
            continue
        annotation = hints[key]
        sectioned = key in PASSTHROUGH or dataclasses.is_dataclass(annotation)
        if sectioned:
            value = {} if value is None else value
            if not isinstance(value, dict):
                problems.append(f"`{key}` must be a mapping of options, got {value!r}")
                continue
        if key in PASSTHROUGH:
            valid = _passthrough_fields(key)
            field_types = _passthrough_types(key) if value else {}
            for sub, sub_value in value.items():
                if sub not in valid:
                    problems.append(f"unknown config key `{key}.{sub}`{_suggest(sub, valid, key)}")
                    continue
                # The libraries store a wrong type without complaint and fail mid-training; check it now.
                scalar = _scalar(field_types.get(sub))
                if scalar is not None and not (sub_value is None and scalar is not bool):
                    try:
                        _coerce(sub_value, scalar, f"{key}.{sub}")
                    except DialogtuneError as err:
                        problems.append(str(err))
            kwargs[key] = dict(value)
        elif sectioned:
            sub_hints = _hints(annotation)
            sub_kwargs = {}
            for sub, sub_value in value.items():
                if sub not in sub_hints:
                    problems.append(f"unknown config key `{key}.{sub}`{_suggest(sub, sub_hints)}")
                    continue
                try:
                    sub_kwargs[sub] = _coerce(sub_value, sub_hints[sub], f"{key}.{sub}")
                except DialogtuneError as err:
                    problems.append(str(err))
            kwargs[key] = annotation(**sub_kwargs)
        else:
            try:
                kwargs[key] = _coerce(value, annotation, key)
            except DialogtuneError as err:
                problems.append(str(err))
    if not problems:
        config = Config(**kwargs)
        problems.extend(validate(config))
    if problems:
        raise DialogtuneError(f"{source}: " + "; ".join(problems))
    return config


def validate(config: Config) -> list[str]:
    """Value checks that types alone do not catch."""
    problems = []
    if config.method not in METHODS:
        problems.append(f"`method` is {config.method!r}; choose one of {', '.join(METHODS)}")
    for name in config.run.methods:
        try:
            safe_name(name, "`run.methods` entry")  # each method becomes a folder under `output`
        except DialogtuneError as err:
            problems.append(str(err))
            continue
        if name not in METHODS:
            problems.append(f"`run.methods` has {name!r}; choose from {', '.join(METHODS)}")
    if "{dialogue}" not in config.prompt.template:
        problems.append("`prompt.template` has no `{dialogue}` placeholder; add one where the dialogue goes")
    if config.dropout is not None and not 0 <= config.dropout < 1:
        problems.append(f"`dropout` is {config.dropout!r}; use a value in [0, 1), or leave it unset for the checkpoint's")
    if config.prompt.shots < 0:
        problems.append(f"`prompt.shots` is {config.prompt.shots}; use 0 or more")
    for key in ("max_source_length", "max_target_length"):
        if getattr(config.data, key) <= 0:
            problems.append(f"`data.{key}` is {getattr(config.data, key)}; it must be positive")
    for key in ("max_train_samples", "max_eval_samples"):
        value = getattr(config.data, key)
        if value is not None and value <= 0:
            problems.append(f"`data.{key}` is {value}; use a positive number or leave it unset")
    if config.evaluation.batch_size <= 0:
        problems.append(f"`evaluation.batch_size` is {config.evaluation.batch_size}; it must be positive")
    if config.evaluation.bootstrap_resamples <= 0:
        problems.append(
            f"`evaluation.bootstrap_resamples` is {config.evaluation.bootstrap_resamples}; use a positive number such as 1000"
        )
    from dialogtune.metrics import parse_protocol  # lazily: rouge_score is not needed to read a config

    try:
        parse_protocol(config.evaluation.protocol)
    except ValueError:
        problems.append(
            f"`evaluation.protocol` is {config.evaluation.protocol!r}; use mean, max or field:NAME (e.g. field:summary1)"
        )
    training = config.training_args()
    if training.get("fp16"):
        problems.append(
            "`training.fp16` is not supported for T5: its activations overflow in fp16 and the loss "
            "turns to NaN; use `training.bf16=true` on hardware with bf16, or fp32 (the default)"
        )
    lr = config.training.get("learning_rate")
    if isinstance(lr, (int, float)) and lr <= 0:
        problems.append(f"`training.learning_rate` is {lr}; it must be positive")
    lora = config.lora_args()
    r = lora.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        problems.append(f"`lora.r` is {r!r}; use a positive whole number such as 8, 16 or 32")
    dropout = lora.get("lora_dropout")
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        problems.append(f"`lora.lora_dropout` is {dropout!r}; use a value in [0, 1)")
    gen = config.generation_args()
    mnt = gen.get("max_new_tokens")
    if mnt is not None and (not isinstance(mnt, int) or mnt <= 0):
        problems.append(f"`generation.max_new_tokens` is {mnt!r}; use a positive whole number")
    elif config.generation:
        problems.extend(_generation_problems(gen))
    for method, overrides in config.run.overrides.items():
        if method not in METHODS:
            problems.append(f"`run.overrides` has method {method!r}; use one of {', '.join(METHODS)}")
    return problems


def _generation_problems(settings: dict[str, Any]) -> list[str]:
    """Contradictory generation options (e.g. temperature without sampling), found before any training."""
    from transformers import GenerationConfig

    try:
        GenerationConfig(**settings).validate(strict=True)
    except (TypeError, ValueError) as err:
        reason = " ".join(str(err).split()).removeprefix("GenerationConfig is invalid: ").removeprefix("- ")
        reason = reason.split(" If you're using a pretrained model")[0]  # advice about hub configs, not ours
        if len(reason) > 300:
            reason = reason[:300].rsplit(" ", 1)[0] + " ..."
        return [f"invalid generation options: {reason.rstrip('.')}; fix or remove the `generation.*` values named"]
    return []


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file, with one-line errors for the usual mistakes."""
    path = Path(path)
    if not path.is_file():
        raise DialogtuneError(f"config file {path} does not exist; check the path")
    try:
        tree = yaml_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DialogtuneError(f"config file {path} is not UTF-8 ({err.reason}); re-save it as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise DialogtuneError(f"config file {path} is not valid YAML{where}; fix the syntax") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise DialogtuneError(
            f"config file {path} must be a mapping of options at the top level, not a {type(tree).__name__}; "
            f"write `key: value` lines such as `method: lora` (see configs/)"
        )
    return tree


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """YAML file (optional) plus dotted overrides -> a validated Config. CLI values win over YAML."""
    tree = read_yaml(path) if path else {}
    apply_overrides(tree, overrides or {})
    return build_config(tree, source=str(path) if path else "options")


def for_method(config: Config, method: str) -> Config:
    """The config a `run` uses for one method: the method set and its `run.overrides` applied."""
    tree = config.to_dict()
    tree["method"] = method
    apply_overrides(tree, config.run.overrides.get(method, {}))
    return build_config(tree, source=f"run.overrides.{method}")


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
