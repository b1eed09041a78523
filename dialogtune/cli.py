"""Command line: thin subcommands over the library. Bad input is one line on stderr and exit code 2.

No config option or default is declared here: `dialogtune.options` generates them from the
dataclasses in `dialogtune.config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from dialogtune import ranks
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
    config_flags(p, TRAIN_FLAGS, tasks="--task")
    p.add_argument("--overwrite", action="store_true", help=overwrite)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")

    p = sub.add_parser("evaluate", help="score a run folder, or the original model with --method original")
    p.add_argument("run", nargs="?", help="run folder (omit with --method original --model M)")
    p.add_argument("--config", help="YAML recipe (see configs/); options override it")
    config_flags(p, (*TRAIN_FLAGS, "split"), tasks="--task")
    p.add_argument("--backend", choices=["torch", "ct2"], help="torch or ct2 (a `dialogtune export` folder); default: the folder's own")
    p.add_argument("--overwrite", action="store_true", help=overwrite)

    p = sub.add_parser("compare", help="compare evaluated runs -> report.md/.html/.json")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--output", help="report folder (default: the first run's parent)")
    schema_flag(p, "--examples", "report.num_examples")
    schema_flag(p, "--seed", "report.examples_seed")
    schema_flag(p, "--min-topic-count", "report.min_topic_count", "the first run's report.min_topic_count")
    p.add_argument("--human", metavar="FILE", help="attach a human evaluation: the human-eval.json of `dialogtune review-results`, or the study database")
    p.add_argument("--allow-mixed", action="store_true",
                   help="write the report even when no two runs were scored alike (no paired tests then, only the reasons)")

    p = sub.add_parser("summarize", help="summarise dialogues with a base model or a run folder")
    p.add_argument("text", nargs="?", help="dialogue text; or use --file, or pipe it on stdin")
    p.add_argument("--file", help="a .txt dialogue, or a CSV/JSON/JSONL file of dialogues")
    p.add_argument("--model", help="base model (hub id, folder, builtin:tiny-t5)")
    p.add_argument("--run", help="run folder whose model and prompt to use")
    batch = SETTINGS["evaluation.batch_size"].default
    schema_flag(p, "--batch-size", "evaluation.batch_size", f"the run's evaluation.batch_size; {batch} for a base model")
    p.add_argument("--backend", choices=["torch", "ct2"], help="torch or ct2 (a `dialogtune export` folder); default: the folder's own")

    p = sub.add_parser("export", help="convert a full (or merged LoRA) run for another engine: CTranslate2")
    p.add_argument("run", help="a full run folder, or one written by `dialogtune merge`")
    p.add_argument("--format", required=True, choices=["ct2"], help="ct2: CTranslate2, a fast CPU engine")
    p.add_argument("--quantization", choices=["int8", "int8_float32", "float32"], default="int8",
                   help="weight type (default: int8); `dialogtune compare RUN EXPORT` measures what it costs")
    p.add_argument("--output", required=True, help="the export's folder (a run folder: evaluate and compare it)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run or export in --output")

    p = sub.add_parser("merge", help="fold a LoRA run's adapter into its base: a plain model folder, verified")
    p.add_argument("run", help="a LoRA run folder")
    p.add_argument("--output", required=True, help="folder for the merged model (also a full run: evaluate or export it)")
    p.add_argument("--probes", type=int, default=8,
                   help="dialogues from the run's data on which merged and unmerged must agree (default: 8)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output (an earlier merge of RUN is replaced anyway)")

    p = sub.add_parser("demo", help="the whole flow offline on the bundled tiny model and corpus")
    p.description = "Defaults shown are the bundled recipe's (dialogtune/assets/demo.yaml); options override it."
    config_flags(p, RUN_FLAGS, _demo_recipe, output="--out")
    p.add_argument("--quick", action="store_true", help="a few dozen steps: checks the flow, not the quality")
    p.add_argument("--overwrite", action="store_true", help="redo runs already finished in --out")

    p = sub.add_parser("score", help="score any system's predictions against references")
    p.add_argument("--predictions", help="text file (one summary per line) or JSONL with id and prediction (or summary); "
                   "the format is read from the content, .gz allowed")
    p.add_argument("--prediction-column", "--prediction-key", dest="prediction_column", metavar="NAME",
                   help="the predictions' column (default: prediction, then summary); --prediction-key is an older name for it")
    p.add_argument("--prediction-field", help="score this reference (e.g. summary1) against the others instead")
    p.add_argument("--references", required=True, help="any file the data loader reads; the same file as --predictions "
                   "when it holds a prediction column beside the references")
    p.add_argument("--reference-column", metavar="NAME", help="the references' column, also read as NAME1, NAME2, ... (default: summary)")
    p.add_argument("--id-column", metavar="NAME", help="the id column of references and JSONL predictions (default: id; references fall back to fname)")
    p.add_argument("--dialogue-column", metavar="NAME", help="the references' dialogue column, which groups rows into dialogues (default: dialogue)")
    p.add_argument("--protocol", metavar="PROTOCOL", help=f"mean, max or field:NAME (one prediction per dialogue), or rows (each reference "
                   f"row on its own, averaged over rows, as published tables; see docs/scoring.md) "
                   f"(default: {SETTINGS['evaluation.protocol'].default})")
    p.add_argument("--output", help="write the scores as JSON here")
    schema_flag(p, "--resamples", "evaluation.bootstrap_resamples")
    p.add_argument("--seed", type=int, help="seed for the bootstrap resamples (fixed by default, so reruns agree)")

    p = sub.add_parser("serve", help="HTTP server: one base model, many LoRA adapters, micro-batches mixing them")
    p.add_argument("--model", required=True, help="base model (hub id, folder, builtin:tiny-t5); with --backend ct2 an export folder")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=RUN", help="serve a LoRA run as NAME (repeatable)")
    p.add_argument("--token", default=os.environ.get("DIALOGTUNE_TOKEN"),
                   help="bearer token every /v1 request must send (default: $DIALOGTUNE_TOKEN); required off loopback")
    p.add_argument("--backend", choices=["torch", "ct2"], default="torch", help="torch (default) or ct2 (no adapters)")
    p.add_argument("--adapter-root", help="POST /v1/adapters loads run folders only inside this folder (default: cwd)")
    from dialogtune.batching import ServeOptions

    for spec in dataclasses.fields(ServeOptions):
        p.add_argument(f"--{spec.name.replace('_', '-')}", type=type(spec.default), default=spec.default,
                       help=f"{spec.metadata['help']} (default: {spec.default})")

    p = sub.add_parser("review", help="blind side-by-side rating page for people: pairs of runs' summaries, stored in SQLite")
    p.add_argument("runs", nargs="*", help="evaluated run folders (omit to continue the study in --db)")
    _review_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1); any other needs --token")
    p.add_argument("--port", type=int, default=8001, help="port (default: 8001)")
    p.add_argument("--token", default=os.environ.get("DIALOGTUNE_TOKEN"), help="shared token raters enter once (default: $DIALOGTUNE_TOKEN)")
    p.add_argument("--no-reference", action="store_true", help="leave out the human reference as a hidden side")
    p.add_argument("--shared-pairs", type=int, help="items every rater sees with the same pair, for agreement (default: a quarter of --sample)")

    p = sub.add_parser("review-results", help="aggregate a review: Bradley-Terry, means, agreement, ROUGE correlation; CSV and JSON")
    p.add_argument("--db", required=True, help="the study database of `dialogtune review`")
    p.add_argument("--output", help="folder for human-eval.json and the CSV files (default: the database's folder)")
    p.add_argument("--seed", type=int, default=0, help="seed for the bootstrap resamples (default: 0)")

    p = sub.add_parser("review-simulate", help="answer a new review with scripted raters of known preferences (checks the pipeline)")
    p.add_argument("runs", nargs="+", help="evaluated run folders")
    _review_flags(p)
    p.add_argument("--truth", required=True, help="each system's true quality, e.g. reference=1.5,full=0.5,lora=0.3,original=-1")
    p.add_argument("--raters", type=int, default=3, help="scripted raters (default: 3)")
    p.add_argument("--noise", type=float, default=0.5, help="rater noise, on the scale of --truth (default: 0.5)")
    p.add_argument("--output", help="folder for the exports (default: the database's folder)")

    p = sub.add_parser("sweep", help="a grid over config keys (the YAML's `sweep:`), each point a run folder; Pareto report")
    p.add_argument("config_file", metavar="CONFIG", help="YAML recipe with a `sweep:` mapping, e.g. configs/sweep-demo.yaml")
    p.add_argument("--output", help="sweep folder (default: the recipe's output)")
    p.add_argument("--jobs", type=int, help="points trained at once (default: cores / --threads)")
    p.add_argument("--threads", type=int, help="torch threads per point (default: 1; see docs/sweeps.md)")
    p.add_argument("--overwrite", action="store_true", help="redo points already finished")

    p = sub.add_parser("forgetting", help="catastrophic forgetting, measured: every task of a suite on the original, full and "
                       "LoRA (summary only, and multi-task), LoRA adapter off = original checked")
    p.add_argument("config_file", metavar="CONFIG", help="YAML recipe whose `tasks:` is the suite, e.g. configs/forgetting-demo.yaml")
    config_flags(p, RUN_FLAGS, tasks="--task")
    p.add_argument("--overwrite", action="store_true", help="redo runs already finished in --output")

    p = sub.add_parser("plan", help="per-GPU memory of full / LoRA / QLoRA training per engine, from config.json alone")
    p.add_argument("--model", required=True, help="hub id (its config.json is downloaded), model folder or builtin:tiny-t5")
    p.add_argument("--method", required=True, help="full, lora or qlora (LoRA on a 4-bit base)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs (processes) training together (default: 1)")
    p.add_argument("--gpu-memory", default="24GB", help="memory of one GPU, e.g. 24GB, 80GB, 16GiB (GB = GiB = 2^30 bytes; default: 24GB)")
    p.add_argument("--batch-size", type=int, default=8, help="per-GPU batch the table is computed at; the suggestion keeps "
                   "batch x GPUs as the global batch through gradient accumulation (default: 8)")
    p.add_argument("--source-len", type=int, default=512, help="prompt tokens per example (default: 512, data.max_source_length)")
    p.add_argument("--target-len", type=int, default=128, help="summary tokens per example (default: 128, data.max_target_length)")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                   help="bf16 autocast (what dialogtune uses on a GPU with bf16) or fp32 (default: bf16)")
    p.add_argument("--output", metavar="FILE.json", help="also write the plan as JSON")

    for command in sub.choices.values():
        global_flags(command)
    return parser


def _review_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample", type=int, help="test dialogues to rate, drawn by --seed among those every run predicted (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sample, the pairs and the sides (default: 0)")
    p.add_argument("--db", help="study database (default: review.sqlite beside the first run)")


def _review_db(args: argparse.Namespace) -> str:
    if args.db:
        return args.db
    if not args.runs:
        raise DialogtuneError("pass --db FILE to continue a study, or the run folders to start one")
    return str(Path(args.runs[0]).resolve().parent / "review.sqlite")


# ----------------------------------------------------------- commands


def _config(args: argparse.Namespace, extra: dict[str, Any], config_file: str | None = None) -> Any:
    from dialogtune.configio import load_config

    overrides = {**flag_overrides(args), **extra}
    names = overrides.pop("tasks", None)  # --task A,B picks tasks by name: the YAML's own, or built-ins
    config = load_config(config_file or getattr(args, "config", None), overrides)
    if names:
        from dialogtune.tasks import select

        config = select(config, _task_names(names))
    return config


def _print_table(report: dict[str, Any], output: Path) -> None:
    from dialogtune.report import rouge_table

    print(rouge_table(report))
    print(f"report: {(output / 'report.html').resolve()}")


def _quiet(args: argparse.Namespace) -> bool:
    return getattr(args, "quiet", False)


def cmd_run(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.pipeline import run_all

    config = _config(args, extra, args.config_file)
    ranks.log_to(config.output)  # ranks other than 0 (torchrun, accelerate launch) log to OUTPUT/logs/rank<N>.log
    report = run_all(config, overwrite=args.overwrite, progress=not _quiet(args))
    _print_table(report, Path(config.output))


def cmd_train(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.train import train

    config = _config(args, extra)
    ranks.log_to(config.output)
    run = train(config, config.output, overwrite=args.overwrite, resume=args.resume)
    print(f"trained {run.method} run: {run.folder}")


def _task_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _score_line(metrics: dict[str, Any]) -> str:
    from dialogtune.metrics import METRICS

    if "rouge" in metrics:
        line = " ".join(f"{m}={metrics['rouge'][m]['score']:.2f}" for m in METRICS) + f" (n={metrics['num_examples']}, {metrics['protocol']})"
    else:
        score = metrics["scores"][metrics["primary"]]
        line = f"{metrics['primary']}={score['score']:.2f} [{score['ci_low']:.2f}, {score['ci_high']:.2f}] (n={metrics['num_examples']})"
    return f"{metrics['task']}: {line}" if "task" in metrics else line


def cmd_evaluate(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.evaluation import evaluate_original, evaluate_run_tasks

    if args.run:
        if args.model or args.dataset or args.method or args.quantization or extra or args.config:
            raise DialogtuneError("a run folder is evaluated with its own settings; pass only --split, --max-eval-samples and --task")
        if Path(args.run).is_dir():  # a wrong path stays an error, not a folder with logs in it
            ranks.log_to(args.run)
        names = _task_names(args.tasks) if args.tasks else None  # default: the run's own tasks
        results = evaluate_run_tasks(args.run, names, split=args.split, limit=args.max_eval_samples, progress=not _quiet(args),
                                     backend=args.backend)
    else:
        from dialogtune.runs import read_run

        config = _config(args, extra)
        if config.method != "original":
            raise DialogtuneError("evaluate needs a run folder, or --method original --model M to score a base model")
        if args.backend == "ct2":
            raise DialogtuneError("--backend ct2 evaluates a CTranslate2 export; make one with: dialogtune export RUN --format ct2 --output DIR")
        ranks.log_to(config.output)
        first = evaluate_original(config, config.output, overwrite=args.overwrite, progress=not _quiet(args))
        run = read_run(config.output)  # a task config scored every task; print each
        results = {t.name: run.read_metrics(task=t.name) for t in config.tasks} or {"summary": first}
    for metrics in results.values():
        print(_score_line(metrics))


def cmd_compare(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.report import write_report

    if extra:
        raise DialogtuneError(f"compare takes run folders only; unexpected --{next(iter(extra))}")
    output = Path(args.output) if args.output else Path(args.runs[0]).resolve().parent
    examples, seed = or_default(args.examples, "report.num_examples"), or_default(args.seed, "report.examples_seed")
    human = None
    if args.human:
        from dialogtune.review.export import load_human

        human = load_human(args.human)
    report = write_report(args.runs, output, examples, seed, min_topic_count=args.min_topic_count, allow_mixed=args.allow_mixed,
                          human=human)
    _print_table(report, output)


def cmd_summarize(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.summarize import summarize_inputs

    if extra:
        raise DialogtuneError(f"summarize does not take --{next(iter(extra))}; its settings come from --run")
    for line in summarize_inputs(args.text, args.file, args.model, args.run, args.batch_size, args.backend):
        print(line)


def cmd_export(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.ct2 import export

    if extra:
        raise DialogtuneError(f"export does not take --{next(iter(extra))}")
    run = export(args.run, args.output, args.quantization, overwrite=args.overwrite)
    print(f"exported {args.run} to CTranslate2 ({args.quantization}): {run.folder} "
          f"in {run.metadata['conversion_seconds']:.1f} s; evaluate it with: dialogtune evaluate {run.folder}")


def cmd_merge(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.merging import describe, merge_run

    if extra:
        raise DialogtuneError(f"merge does not take --{next(iter(extra))}; it uses the run's own settings")
    figures = merge_run(args.run, args.output, probes=args.probes, overwrite=args.overwrite)
    print(describe(figures))
    print(f"merged model: {args.output}")


def cmd_serve(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.batching import ServeOptions
    from dialogtune.serve import serve

    if extra:
        raise DialogtuneError(f"serve does not take --{next(iter(extra))}; adapters keep their runs' settings")
    options = ServeOptions(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(ServeOptions)})
    serve(args.model, args.adapter, options, args.token, args.backend, args.adapter_root)


def cmd_score(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.scoring import score_files, score_table

    if extra:
        key = next(iter(extra))
        flag = {"data.summary_column": "--reference-column", "data.id_column": "--id-column", "data.dialogue_column": "--dialogue-column"}
        instead = f"; use {flag[key]}" if key in flag else ""
        raise DialogtuneError(f"score does not take --{key}{instead}")
    protocol = or_default(args.protocol, "evaluation.protocol")
    resamples = or_default(args.resamples, "evaluation.bootstrap_resamples")
    seed = {} if args.seed is None else {"seed": args.seed}  # else score_files' own fixed seed
    result = score_files(args.predictions, args.references, protocol, resamples, prediction_field=args.prediction_field,
                         prediction_key=args.prediction_column, reference_column=args.reference_column,
                         id_column=args.id_column, dialogue_column=args.dialogue_column, **seed)
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


def cmd_review(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.review.app import review

    if extra:
        raise DialogtuneError(f"review does not take --{next(iter(extra))}")
    review(args.runs, _review_db(args), args.sample, args.seed, args.host, args.port, args.token,
           reference=not args.no_reference, shared_pairs=args.shared_pairs)


def cmd_review_results(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.report.markdown import human_table
    from dialogtune.review.export import write_results

    if extra:
        raise DialogtuneError(f"review-results does not take --{next(iter(extra))}")
    print(human_table(write_results(args.db, args.output, seed=args.seed)))


def cmd_review_simulate(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.report.markdown import human_table
    from dialogtune.review.simulate import run_simulation

    if extra:
        raise DialogtuneError(f"review-simulate does not take --{next(iter(extra))}")
    print(human_table(run_simulation(args.runs, _review_db(args), args.truth, args.raters, args.noise, args.sample,
                                     args.seed, args.output)))


def cmd_forgetting(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.forgetting import run_forgetting
    from dialogtune.report.forgetting import change_table

    config = _config(args, extra, args.config_file)
    report = run_forgetting(config, overwrite=args.overwrite, progress=not _quiet(args))
    print(change_table(report))
    print(f"report: {(Path(config.output) / 'forgetting.html').resolve()} ({report['timing']['wall_seconds']:.0f} s)")


def cmd_sweep(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.report.pareto import to_markdown
    from dialogtune.sweep import run_sweep

    sweep = run_sweep(args.config_file, extra, args.output, args.jobs, args.threads, overwrite=args.overwrite)
    print(to_markdown(sweep))


def cmd_plan(args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from dialogtune.planner import format_plan, make_plan

    plan = make_plan(args.model, args.method, gpus=args.gpus, gpu_memory=args.gpu_memory, batch_size=args.batch_size,
                     source_len=args.source_len, target_len=args.target_len, precision=args.precision, overrides=extra)
    print(format_plan(plan))
    if args.output:
        from dialogtune.runs import write_json

        write_json(args.output, plan)


COMMANDS = {
    "demo": cmd_demo,
    "run": cmd_run,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "compare": cmd_compare,
    "summarize": cmd_summarize,
    "score": cmd_score,
    "serve": cmd_serve,
    "merge": cmd_merge,
    "export": cmd_export,
    "sweep": cmd_sweep,
    "forgetting": cmd_forgetting,
    "plan": cmd_plan,
    "review": cmd_review,
    "review-results": cmd_review_results,
    "review-simulate": cmd_review_simulate,
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
        _setup_logging(_quiet(args) or not ranks.is_main())  # no progress bars from ranks other than 0
        ranks.quiet_console()
        if getattr(args, "allow_pickle", False):
            from dialogtune.weights import pickle_allowed

            with pickle_allowed():
                COMMANDS[args.command](args, extra)
        else:
            COMMANDS[args.command](args, extra)
        ranks.finish()  # under torchrun / accelerate launch: every rank done, then the process group closes
    except DialogtuneError as err:
        print(f"dialogtune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dialogtune: interrupted", file=sys.stderr)
        return 130
    return 0
