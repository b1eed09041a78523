"""Command line: thin subcommands over the library. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from dialogtune.errors import DialogtuneError

log = logging.getLogger("dialogtune")

# Flags with their own names; each maps onto a config key. Anything else must be a dotted key.
COMMON_FLAGS = {
    "model": "model",
    "dataset": "data.dataset",
    "method": "method",
    "output": "output",
    "seed": "seed",
    "dropout": "dropout",
    "max_train_samples": "data.max_train_samples",
    "max_eval_samples": "data.max_eval_samples",
    "split": "evaluation.split",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus an error; we print one line and exit 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise DialogtuneError(f"{message} (see `{self.prog} --help`)")


def _common(parser: argparse.ArgumentParser, method: bool = True) -> None:
    parser.add_argument("--config", help="YAML recipe (see configs/); flags override it")
    parser.add_argument("--model", help="hub id, model folder, or builtin:tiny-t5")
    parser.add_argument("--dataset", help="hub id, CSV/JSON/JSONL file or folder, or builtin:dialogs")
    if method:
        parser.add_argument("--method", choices=["original", "full", "lora"])
    parser.add_argument("--output", help="output folder")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--dropout", type=float, help="the model's dropout while training (default: the checkpoint's)")
    parser.add_argument("--max-train-samples", type=int, dest="max_train_samples")
    parser.add_argument("--max-eval-samples", type=int, dest="max_eval_samples")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --output")
    _allow_pickle(parser)


def _allow_pickle(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-pickle", action="store_true", dest="allow_pickle",
        help="also load pickle weights (pytorch_model.bin, adapter_model.bin); pickle can run code, so only for trusted files",
    )


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="dialogtune",
        description="Fine-tune FLAN-T5 for dialogue summarization (full and LoRA), evaluate and compare.",
        epilog="Any other option is a dotted config key, e.g. --lora.r 16 or --training.learning_rate 1e-3.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("run", help="original zero-shot, full, LoRA, then the comparison report")
    p.add_argument("config_file", metavar="CONFIG", help="YAML recipe")
    _common(p, method=False)

    p = sub.add_parser("train", help="fine-tune (full or lora) into a run folder")
    _common(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")

    p = sub.add_parser("evaluate", help="score a run folder, or the original model with --method original")
    p.add_argument("run", nargs="?", help="run folder (omit with --method original --model M)")
    _common(p)
    p.add_argument("--split", help="train, validation or test")

    p = sub.add_parser("compare", help="compare evaluated runs -> report.md/.html/.json")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--output", default=None, help="report folder (default: the first run's parent)")
    p.add_argument("--examples", type=int, default=5, help="side-by-side examples to show")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing the examples")

    p = sub.add_parser("summarize", help="summarise dialogues with a base model or a run folder")
    p.add_argument("text", nargs="?", help="dialogue text; or use --file, or pipe it on stdin")
    p.add_argument("--file", help="a .txt dialogue, or a CSV/JSON/JSONL file of dialogues")
    p.add_argument("--model", help="base model (hub id, folder, builtin:tiny-t5)")
    p.add_argument("--run", help="run folder whose model and prompt to use")
    p.add_argument("--batch-size", type=int, default=16)
    _allow_pickle(p)

    p = sub.add_parser("demo", help="the whole flow offline on the bundled tiny model and corpus")
    p.add_argument("--out", default=None, help="output folder (default runs/demo)")
    p.add_argument("--model", help="another base, e.g. google/flan-t5-base (default builtin:tiny-t5)")
    p.add_argument("--dataset", help="another dataset, e.g. knkarthick/dialogsum (default builtin:dialogs)")
    p.add_argument("--quick", action="store_true", help="a few dozen steps: checks the flow, not the quality")
    p.add_argument("--overwrite", action="store_true", help="redo runs already finished in --out")

    p = sub.add_parser("score", help="score any system's predictions against references")
    p.add_argument("--predictions", help="text file (one summary per line) or JSONL with id, prediction")
    p.add_argument("--prediction-field", help="score this reference (e.g. summary1) against the others instead")
    p.add_argument("--references", required=True, help="any file the data loader reads")
    p.add_argument("--protocol", default="mean", help="mean, max or field:NAME")
    p.add_argument("--output", help="write the scores as JSON here")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    return parser


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Pull dotted config keys out of argv: `--lora.r 16 --training.bf16=true` -> {"lora.r": 16, ...}.

    Done before argparse, so a value such as `16` is never mistaken for a positional argument.
    """
    from dialogtune.config import parse_value

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


def _config(args: argparse.Namespace, extra: dict[str, Any], config_file: str | None = None) -> Any:
    from dialogtune.config import load_config

    overrides = {}
    for flag, key in COMMON_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    overrides.update(extra)
    return load_config(config_file or getattr(args, "config", None), overrides)


def _print_table(report: dict[str, Any], output: Path) -> None:
    from dialogtune.report import rouge_table

    print(rouge_table(report))
    print(f"report: {(output / 'report.html').resolve()}")


def cmd_run(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.pipeline import run_all

    config = _config(args, extra, args.config_file)
    report = run_all(config, overwrite=args.overwrite, progress=not args.quiet)
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
        metrics = evaluate_run(args.run, split=args.split, limit=args.max_eval_samples, progress=not args.quiet)
    else:
        config = _config(args, extra)
        if config.method != "original":
            raise DialogtuneError("evaluate needs a run folder, or --method original --model M to score a base model")
        metrics = evaluate_original(config, config.output, overwrite=args.overwrite, progress=not args.quiet)
    print(" ".join(f"{m}={metrics['rouge'][m]['score']:.2f}" for m in METRICS) + f" (n={metrics['num_examples']}, {metrics['protocol']})")


def cmd_compare(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.report import write_report

    if extra:
        raise DialogtuneError(f"compare takes run folders only; unexpected --{next(iter(extra))}")
    output = Path(args.output) if args.output else Path(args.runs[0]).resolve().parent
    report = write_report(args.runs, output, args.examples, args.seed)
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
    result = score_files(args.predictions, args.references, args.protocol, args.resamples, args.seed, args.prediction_field)
    print(score_table(result))
    if args.output:
        from dialogtune.runs import write_json

        write_json(args.output, result)


def cmd_demo(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.demo import demo_config
    from dialogtune.pipeline import run_all

    named = {key: getattr(args, flag) for flag, key in (("model", "model"), ("dataset", "data.dataset")) if getattr(args, flag)}
    config = demo_config(args.out, args.quick, {**named, **extra})
    report = run_all(config, overwrite=args.overwrite, progress=not args.quiet)
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
        _setup_logging(args.quiet)
        if getattr(args, "allow_pickle", False):
            from dialogtune.modeling import pickle_allowed

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
