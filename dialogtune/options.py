"""Command-line options generated from the config schema, so no option or default is declared twice.

Any config key is set with its dotted name (`--lora.r 16`, `--training.bf16=true`); those are split
out of argv before argparse sees them, so any passthrough field works, not only the ones listed.
A few common keys also have a short flag (`--seed`). `--help` lists every key of `dialogtune.config`
with its help text and default, and the passthrough keys that have one of our defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from dialogtune.config import METHOD_TRAINING_DEFAULTS, PASSTHROUGH, TRAINED_METHODS, Config
from dialogtune.errors import DialogtuneError

# Short flags (by argparse dest) for config keys; every key also works dotted (`--data.dataset`).
FLAGS = {
    "model": "model",
    "dataset": "data.dataset",
    "method": "method",
    "output": "output",
    "seed": "seed",
    "dropout": "dropout",
    "max_train_samples": "data.max_train_samples",
    "max_eval_samples": "data.max_eval_samples",
    "split": "evaluation.split",
    "allow_overlap": "data.allow_overlap",
    "quantization": "quantization",  # QLoRA: the LoRA run's base in 4bit / 8bit
    "tasks": "tasks",  # names: of the YAML's own tasks or built-ins (dialogtune.tasks.select); --task in train and evaluate
}
TRAIN_FLAGS = (
    "model", "dataset", "method", "output", "seed", "dropout", "max_train_samples", "max_eval_samples", "allow_overlap", "tasks",
    "quantization",
)
RUN_FLAGS = tuple(f for f in TRAIN_FLAGS if f != "method")  # run and demo do every method in `run.methods`
Sections = list[tuple[str, "str | None", list[argparse.Action]]]


@dataclasses.dataclass(frozen=True)
class Setting:
    """One key of the schema as `--help` lists it."""

    key: str  # dotted: `seed`, `data.max_train_samples`; a passthrough section is one key (`training`)
    type: Any
    default: Any
    help: str


def settings(cls: type = Config, prefix: str = "") -> dict[str, Setting]:
    """Every key of Config by dotted name, its sections expanded in place, in the order declared."""
    listed = {}
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        key, hint = prefix + spec.name, hints[spec.name]
        if dataclasses.is_dataclass(hint):
            listed.update(settings(hint, f"{key}."))
        else:
            default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
            listed[key] = Setting(key, hint, default, spec.metadata["help"])
    return listed


SETTINGS = settings()


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus an error; we print one line and exit 2, like every other bad input.

    `key_help`, when set, lists the config keys after the options, built only when help is shown.
    """

    key_help: Callable[[], Sections] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Dotted keys are long; a wider name column keeps most entries on one line.
        kwargs.setdefault("formatter_class", lambda prog: argparse.HelpFormatter(prog, max_help_position=40))
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise DialogtuneError(f"{message} (see `{self.prog} --help`)")

    def format_help(self) -> str:
        if self.key_help is None:
            return super().format_help()
        formatter = self._get_formatter()
        for title, description, entries in self.key_help():
            formatter.start_section(title)
            formatter.add_text(description)
            formatter.add_arguments(entries)
            formatter.end_section()
        return super().format_help() + "\n" + formatter.format_help()


def global_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every command takes, before or after its name; SUPPRESS so a subcommand never resets them."""
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only warnings and results")
    parser.add_argument(
        "--allow-pickle", action="store_true", default=argparse.SUPPRESS,
        help="also load pickle weights (pytorch_model.bin, adapter_model.bin); pickle can run code, so only for trusted files",
    )


def no_recipe() -> dict[str, Any]:
    return {}


def config_flags(
    parser: OneLineParser, dests: tuple[str, ...], recipe: Callable[[], dict[str, Any]] = no_recipe, **aliases: str
) -> None:
    """Short flags for config keys, typed from the schema; `--help` lists them with every dotted key.

    `recipe` gives the YAML tree whose values --help shows as the defaults (the demo's recipe).
    """
    flags = {}
    for dest in dests:
        setting = SETTINGS[FLAGS[dest]]
        names = [*([aliases[dest]] if dest in aliases else []), f"--{dest.replace('_', '-')}"]
        parser.add_argument(*names, dest=dest, help=argparse.SUPPRESS, **_typed(setting.type))  # listed by key_help
        flags[setting.key] = names
    parser.key_help = functools.partial(_key_sections, flags, recipe)


def schema_flag(parser: argparse.ArgumentParser, flag: str, key: str, default_text: str | None = None) -> None:
    """A flag whose default is a config key's (`--examples` is `report.num_examples`); read it with `or_default`."""
    setting = SETTINGS[key]
    help_text = f"{setting.help} (default: {default_text or _shown(setting.default)})".replace("%", "%%")
    parser.add_argument(flag, **_typed(setting.type), metavar=_metavar(setting.type), help=help_text)


def or_default(value: Any, key: str) -> Any:
    """A flag's value, or the schema's default for `key` when it was not given."""
    return SETTINGS[key].default if value is None else value


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The short flags given, as dotted config keys."""
    return {key: getattr(args, dest) for dest, key in FLAGS.items() if getattr(args, dest, None) is not None}


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Pull dotted config keys out of argv: `--lora.r 16 --training.bf16=true` -> {"lora.r": 16, ...}.

    Done before argparse, so a value such as `16` is never mistaken for a positional argument.
    """
    from dialogtune.configio import parse_value

    rest: list[str] = []
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        key, eq, value = token[2:].partition("=")
        if not token.startswith("--") or "." not in key:
            rest.append(token)
            i += 1
            continue
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise DialogtuneError(f"option --{key} needs a value, e.g. --{key} 16")
            value = argv[i + 1]
            i += 1
        overrides[key] = parse_value(value)
        i += 1
    return rest, overrides


# ------------------------------------------------------------------ --help


def _shown(value: Any) -> str:
    """A default as you would type it."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "unset"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, str) and (not value or value != value.strip() or "\n" in value):
        return repr(value)
    return str(value)


def _inner(hint: Any) -> Any:
    """`int` for `int | None`; other types as they are."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return hint


def _metavar(hint: Any) -> str:
    hint = _inner(hint)
    if typing.get_origin(hint) is Literal:
        return "{" + ",".join(typing.get_args(hint)) + "}"
    kind = typing.get_origin(hint) or hint
    return {int: "N", float: "X", bool: "{true,false}", str: "TEXT", list: "A,B"}.get(kind, "YAML")


def _typed(hint: Any) -> dict[str, Any]:
    """argparse's `type` or `choices` for a short flag, from the schema."""
    hint = _inner(hint)
    if typing.get_origin(hint) is Literal:
        return {"choices": typing.get_args(hint)}
    if hint is bool:  # `--allow-overlap` alone turns it on; None when absent, so the YAML's value stands
        return {"action": "store_true", "default": None}
    return {"type": hint} if hint in (int, float) else {}


def _entry(names: list[str], help: str, default: str, metavar: str) -> argparse.Action:  # noqa: A002
    """A --help line for a key that split_overrides (or a short flag) reads, not argparse itself."""
    text = f"{help} (default: {default})" if help else f"default: {default}"
    return argparse.Action(names, dest=names[-1], metavar=metavar, help=text.replace("%", "%%"))


def _lookup(tree: Any, dotted: str, default: Any) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


def _passthrough_defaults(section: str, recipe: dict[str, Any]) -> dict[str, str]:
    """Our defaults for a passthrough section under the recipe's; per method where they differ."""
    per_method = {}
    for method in TRAINED_METHODS:
        method_defaults = METHOD_TRAINING_DEFAULTS[method] if section == "training" else {}
        method_recipe = _lookup(recipe, f"run.overrides.{method}", {})
        dotted = {k.split(".", 1)[1]: v for k, v in method_recipe.items() if k.startswith(f"{section}.")}
        per_method[method] = {**PASSTHROUGH[section], **method_defaults, **recipe.get(section, {}), **dotted}
    shown = {}
    for key in dict.fromkeys(k for values in per_method.values() for k in values):
        values = {m: per_method[m].get(key) for m in TRAINED_METHODS}
        if len({repr(v) for v in values.values()}) == 1:
            shown[key] = _shown(values[TRAINED_METHODS[0]])
        else:
            shown[key] = ", ".join(f"{m}: {'the library default' if v is None else _shown(v)}" for m, v in values.items())
    return shown


def _key_sections(flags: dict[str, list[str]], recipe: Callable[[], dict[str, Any]]) -> Sections:
    """The --help sections listing every config key with its help and default, grouped as in YAML."""
    tree = recipe()
    groups: dict[str, list[argparse.Action]] = {}
    described: dict[str, str] = {}
    for key, setting in SETTINGS.items():
        section, _, _ = key.rpartition(".")
        if key in PASSTHROUGH:
            title = f"{key}.*"
            described[title] = f"{setting.help} Listed: those with a default here."
            defaults = _passthrough_defaults(key, tree)
            groups[title] = [_entry([f"--{key}.{name}"], "", shown, "VALUE") for name, shown in defaults.items()]
        elif section or key in flags:  # a top-level key is settable only through its short flag
            names = flags.get(key, []) + ([f"--{key}"] if section else [])
            default = _shown(_lookup(tree, key, setting.default))
            title = f"{section}.*" if section else "config keys (also YAML keys; options win over the YAML)"
            entries = groups.setdefault(title, [])
            if setting.type is bool and key in flags and section:  # the short flag takes no value, the key does
                entries.append(argparse.Action(flags[key], dest=key, nargs=0, help=f"same as --{key} true"))
                names = names[-1:]
            entries.append(_entry(names, setting.help, default, _metavar(setting.type)))
    return [(title, described.get(title), entries) for title, entries in groups.items()]
