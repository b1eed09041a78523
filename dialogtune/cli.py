"""Command line: thin subcommands over the library. Bad input is one line on stderr and exit code 2.

No config option or default is declared here: `dialogtune.options` generates them from the
dataclasses in `dialogtune.config`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from dialogtune.errors import DialogtuneError
from dialogtune.options import (
    RUN_FLAGS,
    SETTINGS,
    TRAIN_FLAGS,
    OneLineParser,
    config_flags,
    flag_overrides,
    global_flags,
    or_default,
    schema_flag,
    split_overrides,
)


def _demo_recipe() -> dict[str, Any]:
    from dialogtune.assets import DEMO_RECIPE
    from dialogtune.configio import read_yaml

    return read_yaml(DEMO_RECIPE)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="dialogtune",
        description="Fine-tune FLAN-T5 for dialogue summarization (full and LoRA), evaluate and compare.",
        epilog="Any other option is a dotted config key, e.g. --lora.r 16 or --training.learning_rate 1e-3 "
        "(`dialogtune train --help` lists them).",
    )
    global_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    overwrite = "replace a finished run in --output"

    p = sub.add_parser("run", help="original zero-shot, full, LoRA, then the comparison report")
    p.add_argument("config_file", metavar="CONFIG", help="YAML recipe (see configs/); options override it")
    config_flags(p, RUN_FLAGS)
    p.add_argument("--overwrite", action="store_true", help=overwrite)

    p = sub.add_parser("train", help="fine-tune (full or lora) into a run folder")
    p.add_argument("--config", help="YAML recipe (see configs/); options override it")
    config_flags(p, TRAIN_FLAGS)
    p.add_argument("--overwrite", action="store_true", help=overwrite)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")

    p = sub.add_parser("evaluate", help="score a run folder, or the original model with --method original")
    p.add_argument("run", nargs="?", help="run folder (omit with --method original --model M)")
    p.add_argument("--config", help="YAML recipe (see configs/); options override it")
    config_flags(p, (*TRAIN_FLAGS, "split"))
    p.add_argument("--overwrite", action="store_true", help=overwrite)

    p = sub.add_parser("compare", help="compare evaluated runs -> report.md/.html/.json")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--output", help="report folder (default: the first run's parent)")
    schema_flag(p, "--examples", "report.num_examples")
    schema_flag(p, "--seed", "report.examples_seed")
    schema_flag(p, "--min-topic-count", "report.min_topic_count", "the first run's report.min_topic_count")
    p.add_argument("--allow-mixed", action="store_true",
                   help="write the report even when no two runs were scored alike (no paired tests then, only the reasons)")

    p = sub.add_parser("summarize", help="summarise dialogues with a base model or a run folder")
    p.add_argument("text", nargs="?", help="dialogue text; or use --file, or pipe it on stdin")
    p.add_argument("--file", help="a .txt dialogue, or a CSV/JSON/JSONL file of dialogues")
    p.add_argument("--model", help="base model (hub id, folder, builtin:tiny-t5)")
    p.add_argument("--run", help="run folder whose model and prompt to use")
    batch = SETTINGS["evaluation.batch_size"].default
    schema_flag(p, "--batch-size", "evaluation.batch_size", f"the run's evaluation.batch_size; {batch} for a base model")

    p = sub.add_parser("demo", help="the whole flow offline on the bundled tiny model and corpus")
    p.description = "Defaults shown are the bundled recipe's (dialogtune/assets/demo.yaml); options override it."
    config_flags(p, RUN_FLAGS, _demo_recipe, output="--out")
    p.add_argument("--quick", action="store_true", help="a few dozen steps: checks the flow, not the quality")
    p.add_argument("--overwrite", action="store_true", help="redo runs already finished in --out")

    p = sub.add_parser("score", help="score any system's predictions against references")
    p.add_argument("--predictions", help="text file (one summary per line) or JSONL with id and prediction (or summary); "
                   "the format is read from the content, .gz allowed")
    p.add_argument("--prediction-key", metavar="NAME", help="the JSONL field holding the prediction (default: prediction, then summary)")
    p.add_argument("--prediction-field", help="score this reference (e.g. summary1) against the others instead")
    p.add_argument("--references", required=True, help="any file the data loader reads")
    schema_flag(p, "--protocol", "evaluation.protocol")
    p.add_argument("--output", help="write the scores as JSON here")
    schema_flag(p, "--resamples", "evaluation.bootstrap_resamples")
    p.add_argument("--seed", type=int, help="seed for the bootstrap resamples (fixed by default, so reruns agree)")

    for command in sub.choices.values():
        global_flags(command)
    return parser


# ----------------------------------------------------------- commands


def _config(args: argparse.Namespace, extra: dict[str, Any], config_file: str | None = None) -> Any:
    from dialogtune.configio import load_config

    return load_config(config_file or getattr(args, "config", None), {**flag_overrides(args), **extra})


def _print_table(report: dict[str, Any], output: Path) -> None:
    from dialogtune.report import rouge_table

    print(rouge_table(report))
    print(f"report: {(output / 'report.html').resolve()}")


def _quiet(args: argparse.Namespace) -> bool:
    return getattr(args, "quiet", False)


def cmd_run(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.pipeline import run_all

    config = _config(args, extra, args.config_file)
    report = run_all(config, overwrite=args.overwrite, progress=not _quiet(args))
    _print_table(report, Path(config.output))


def cmd_train(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.train import train

    config = _config(args, extra)
    run = train(config, config.output, overwrite=args.overwrite, resume=args.resume)
    print(f"trained {run.method} run: {run.folder}")


def cmd_evaluate(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.evaluation import evaluate_original, evaluate_run
    from dialogtune.metrics import METRICS

    if args.run:
        if args.model or args.dataset or args.method or extra or args.config:
            raise DialogtuneError("a run folder is evaluated with its own settings; pass only --split and --max-eval-samples")
        metrics = evaluate_run(args.run, split=args.split, limit=args.max_eval_samples, progress=not _quiet(args))
    else:
        config = _config(args, extra)
        if config.method != "original":
            raise DialogtuneError("evaluate needs a run folder, or --method original --model M to score a base model")
        metrics = evaluate_original(config, config.output, overwrite=args.overwrite, progress=not _quiet(args))
    print(" ".join(f"{m}={metrics['rouge'][m]['score']:.2f}" for m in METRICS) + f" (n={metrics['num_examples']}, {metrics['protocol']})")


def cmd_compare(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.report import write_report

    if extra:
        raise DialogtuneError(f"compare takes run folders only; unexpected --{next(iter(extra))}")
    output = Path(args.output) if args.output else Path(args.runs[0]).resolve().parent
    examples, seed = or_default(args.examples, "report.num_examples"), or_default(args.seed, "report.examples_seed")
    report = write_report(args.runs, output, examples, seed, min_topic_count=args.min_topic_count, allow_mixed=args.allow_mixed)
    _print_table(report, output)


def cmd_summarize(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.summarize import summarize_inputs

    if extra:
        raise DialogtuneError(f"summarize does not take --{next(iter(extra))}; its settings come from --run")
    for line in summarize_inputs(args.text, args.file, args.model, args.run, args.batch_size):
        print(line)


def cmd_score(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.scoring import score_files, score_table

    if extra:
        raise DialogtuneError(f"score does not take --{next(iter(extra))}")
    protocol = or_default(args.protocol, "evaluation.protocol")
    resamples = or_default(args.resamples, "evaluation.bootstrap_resamples")
    seed = {} if args.seed is None else {"seed": args.seed}  # else score_files' own fixed seed
    result = score_files(args.predictions, args.references, protocol, resamples, prediction_field=args.prediction_field,
                         prediction_key=args.prediction_key, **seed)
    print(score_table(result))
    if args.output:
        from dialogtune.runs import write_json

        write_json(args.output, result)


def cmd_demo(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.demo import demo_config
    from dialogtune.pipeline import run_all

    config = demo_config(None, args.quick, {**flag_overrides(args), **extra})
    report = run_all(config, overwrite=args.overwrite, progress=not _quiet(args))
    _print_table(report, Path(config.output))


COMMANDS = {
    "demo": cmd_demo,
    "run": cmd_run,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "compare": cmd_compare,
    "summarize": cmd_summarize,
    "score": cmd_score,
}


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    import transformers

    transformers.utils.logging.set_verbosity_error()
    if quiet:
        import warnings

        transformers.utils.logging.disable_progress_bar()
        # Library deprecation notices are for us, not for someone reading results.
        warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    try:
        rest, extra = split_overrides(sys.argv[1:] if argv is None else list(argv))
        args = parser.parse_args(rest)
        _setup_logging(_quiet(args))
        if getattr(args, "allow_pickle", False):
            from dialogtune.weights import pickle_allowed

            with pickle_allowed():
                COMMANDS[args.command](args, extra)
        else:
            COMMANDS[args.command](args, extra)
    except DialogtuneError as err:
        print(f"dialogtune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dialogtune: interrupted", file=sys.stderr)
        return 130
    return 0
