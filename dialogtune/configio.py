"""YAML recipes and dotted overrides in, a validated `Config` out.

Every problem is collected before raising once, so a recipe with three mistakes takes one attempt to
fix, not three. The passthrough sections (`training`, `lora`, `generation`) are checked against the
fields of the library classes they feed, imported lazily: transformers and peft take seconds to
import, and `--help` should not wait for them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml

from dialogtune.config import LORA_ALIASES, PASSTHROUGH, RESOLVED_VALUES, Config
from dialogtune.errors import DialogtuneError
from dialogtune.validationconfig import TRAINING_EXTRAS

PASSTHROUGH_CLASSES = {
    "training": "transformers.Seq2SeqTrainingArguments",
    "lora": "peft.LoraConfig (e.g. r, lora_alpha, lora_dropout, target_modules)",
    "generation": "transformers.GenerationConfig",
}


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
    """Parse YAML with the YAML 1.2 scalar rules above."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def parse_value(text: str) -> Any:
    """Turn a CLI string into a value with the same rules as the YAML files."""
    try:
        return yaml_load(text)
    except yaml.YAMLError:
        return text


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


def dump_yaml(config: Config) -> str:
    """The config as YAML, in declaration order; `read_yaml` + `build_config` read it back."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)


def apply_overrides(tree: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply dotted-key overrides (`lora.r: 16`) onto a nested config mapping, in place."""
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = tree
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise DialogtuneError(f"`{dotted}`: `{part}` is not a section")
            node = child
        node[last] = value
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
    if method != "lora":
        tree["quantization"] = None  # QLoRA quantizes the LoRA run's base; original and full use it as it ships
    apply_overrides(tree, config.run.overrides.get(method, {}))
    return build_config(tree, source=f"run.overrides.{method}")


def build_config(tree: dict[str, Any], source: str = "config") -> Config:
    """Validate a nested mapping into a Config, collecting every problem before raising once.

    First every key and type is checked; then, if all are right, every section checks its values.
    """
    problems: list[str] = []
    hints = typing.get_type_hints(Config)
    kwargs: dict[str, Any] = {}
    for key, value in tree.items():
        if key not in hints:
            problems.append(f"unknown config key `{key}`{_suggest(key, hints)}")
            continue
        annotation = hints[key]
        if key in PASSTHROUGH or dataclasses.is_dataclass(annotation):
            value = {} if value is None else value
            if not isinstance(value, dict):
                problems.append(f"`{key}` must be a mapping of options, got {value!r}")
                continue
        if key in PASSTHROUGH:
            problems.extend(_passthrough_problems(key, value))
            kwargs[key] = dict(value)
        elif dataclasses.is_dataclass(annotation):
            kwargs[key] = _section_kwargs(key, annotation, value, problems)
        else:
            try:
                kwargs[key] = _coerce(value, annotation, key)
            except DialogtuneError as err:
                problems.append(str(err))
    _raise_all(source, problems)
    for key, value in kwargs.items():
        if dataclasses.is_dataclass(hints[key]):
            try:
                kwargs[key] = hints[key](**value)
            except DialogtuneError as err:
                problems.append(str(err))
                kwargs[key] = hints[key]()  # so Config still checks the other sections
    try:
        config = Config(**kwargs)
    except DialogtuneError as err:
        problems.append(str(err))
    else:
        if config.generation:
            problems.extend(_generation_problems(config.generation_args()))
    _raise_all(source, problems)
    return config


def _raise_all(source: str, problems: list[str]) -> None:
    if problems:
        raise DialogtuneError(f"{source}: " + "; ".join(problems))


def _section_kwargs(key: str, cls: type, values: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The known, well-typed keys of one of our sections; the rest go to `problems`."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for sub, value in values.items():
        if sub not in hints:
            problems.append(f"unknown config key `{key}.{sub}`{_suggest(sub, hints)}")
            continue
        try:
            kwargs[sub] = _coerce(value, hints[sub], f"{key}.{sub}")
        except DialogtuneError as err:
            problems.append(str(err))
    return kwargs


def _passthrough_problems(section: str, values: dict[str, Any]) -> list[str]:
    """Unknown keys, and wrong types of the library's int/float/bool fields."""
    if not values:
        return []
    valid, field_types = _passthrough_schema(section)
    problems = []
    for key, value in values.items():
        if key not in valid:
            problems.append(f"unknown config key `{section}.{key}`{_suggest(key, valid, section)}")
            continue
        # The libraries store a wrong type without complaint and fail mid-training; check it now.
        scalar = _scalar(field_types.get(key))
        ours = RESOLVED_VALUES.get(f"{section}.{key}", ())
        if scalar is not None and not (value is None and scalar is not bool) and value not in ours:
            try:
                _coerce(value, scalar, f"{section}.{key}")
            except DialogtuneError as err:
                problems.append(str(err) + "".join(f" or {v}" for v in ours))
    return problems


def _passthrough_schema(section: str) -> tuple[set[str], dict[str, Any]]:
    """The keys a passthrough section accepts, and their types (generation options have no typed fields)."""
    if section == "training":
        from transformers import Seq2SeqTrainingArguments

        fields, hints = dataclasses.fields(Seq2SeqTrainingArguments), typing.get_type_hints(Seq2SeqTrainingArguments)
        return {f.name for f in fields} | set(TRAINING_EXTRAS), {**hints, **TRAINING_EXTRAS}  # ours: early stopping
    if section == "lora":
        from peft import LoraConfig

        hints = typing.get_type_hints(LoraConfig)
        aliases = {alias: hints[name] for alias, name in LORA_ALIASES.items()}
        return {f.name for f in dataclasses.fields(LoraConfig)} | set(aliases), {**hints, **aliases}
    from transformers import GenerationConfig

    return set(GenerationConfig().to_dict()) - {"transformers_version"}, {}


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


def _suggest(key: str, valid: Iterable[str], section: str | None = None) -> str:
    """The closest valid key, or else where the valid keys are listed, so every unknown key comes with a fix."""
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    if close:
        return f"; did you mean `{close[0]}`?"
    if section in PASSTHROUGH_CLASSES:
        return f"; use a field of {PASSTHROUGH_CLASSES[section]}"
    return f"; valid keys: {', '.join(sorted(valid))}"


def _scalar(annotation: Any) -> type | None:
    """int, float or bool when a field is exactly that (optionally None); anything richer is left to the library."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (int, float, bool) else None


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a field type, converting the few cases YAML and the CLI blur."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None and (annotation is type(None) or type(None) in args):
        return None
    if origin is Literal:
        if value not in args:
            raise DialogtuneError(f"`{key}` is {value!r}; choose one of {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        if len(present) == 1:  # Optional[X]: X's own message says what is allowed
            return _coerce(value, present[0], key)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except DialogtuneError:
                pass
        raise DialogtuneError(f"`{key}` is {value!r}, which is not a valid {annotation}")
    if origin in (list, dict):
        if isinstance(value, origin):
            return value
        if origin is list and isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        raise DialogtuneError(f"`{key}` is {value!r}; it must be a {origin.__name__}")
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
        return value if isinstance(value, str) else str(value)
    return value
