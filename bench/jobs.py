"""One benchmark job: train or evaluate one recipe at one shape, timed, in a process of its own.

Every job runs in its own process, forked from the benchmark's after the libraries are imported, so its
peak resident memory is its own. A job is a plain dict (kind, shape, method, recipe, sizes, a lever's
settings), so it crosses the fork as JSON and shows up in an error message as it was planned.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from measure import SHAPES, BatchLog, Shape, StepClock, batch_flops, flops, matmul_peak, peak_memory, timed
from recipes import (CT2_QUANTIZATIONS, NOTEBOOK_LENGTH, build_model, ct2_convert, ct2_summarizer, dialogtune_generate, load_examples,
                     load_tokenizer, lora_args, notebook_generate, recipe_trainer)


def run_train(job: dict[str, Any]) -> dict[str, Any]:
    """One training configuration (recipe x shape x method); meant to run alone in a fresh process."""
    from dialogtune.modeling import apply_lora, parameter_counts

    shape = SHAPES[job["shape"]]
    if job.get("threads"):  # the thread-count lever; quiet() set every other job to BENCH_THREADS
        import torch

        torch.set_num_threads(job["threads"])
    tokenizer = load_tokenizer(Path(job["tokenizer"]))
    n = job["batch_size"] * (job["warmup_steps"] + job["steps"])  # exactly one epoch: both recipes see every example once
    prompts, summaries = load_examples(n, Path(job["data"]))
    base = build_model(shape, seed=job["seed"], dropout=job.get("dropout"))
    model = apply_lora(base, lora_args(job)) if job["method"] == "lora" else base
    trainable, total = parameter_counts(model)
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        trainer = recipe_trainer(job, base, model, tokenizer, prompts, summaries, Path(tmp))
        clock = StepClock(cuda=job["device"] == "cuda")
        trainer.add_callback(clock.callback)
        log = BatchLog()
        handle = trainer.model.register_forward_pre_hook(log, with_kwargs=True)
        trainer.train()
        handle.remove()
    peak = peak_memory(job["device"])
    batches = log.lengths()
    warm = job["warmup_steps"]
    if len(clock.ends) != warm + job["steps"] or len(batches) != len(clock.ends):
        raise RuntimeError(f"expected {warm + job['steps']} steps, saw {len(clock.ends)} steps and {len(batches)} batches")
    timed_batches = batches[warm:]
    seconds = clock.ends[-1] - clock.ends[warm - 1] if warm else clock.ends[-1] - clock.begin
    steps = [b - a for a, b in zip(([clock.begin] + clock.ends)[warm:], clock.ends[warm:])]
    tokens = sum(sum(s) + sum(t) for s, t, _ in timed_batches)
    useful = sum(batch_flops(shape, s, t, job["method"]) for s, t, _ in timed_batches)
    return {
        **{k: job[k] for k in ("recipe", "shape", "method", "batch_size", "steps")},
        "trainable_params": trainable,
        "total_params": total,
        "seconds": seconds,
        "step_s": seconds / job["steps"],
        "step_s_median": statistics.median(steps),
        "examples_per_s": job["batch_size"] * job["steps"] / seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "useful_flops_per_s": useful / seconds,
        # Over every example (warm-up batch included), so both recipes are compared on the same examples.
        "executed_flops_all": sum(batch_flops(shape, s, t, job["method"], padded=p) for s, t, p in batches),
        "useful_flops_all": sum(batch_flops(shape, s, t, job["method"]) for s, t, _ in batches),
        "padded_lengths": [p for _, _, p in timed_batches],
        "peak_rss_bytes": peak,
    }


def run_eval(job: dict[str, Any]) -> dict[str, Any]:
    """Every evaluation path on the same dialogues and the same output length, in this process: the notebook's
    loop, dialogtune's PyTorch batches and, on the CPU with `job["ct2"]`, dialogtune's CTranslate2 backend with
    float32 and int8 weights. Conversion happens before any timing and is reported apart (`conversion_s`)."""
    import torch

    shape = SHAPES[job["shape"]]
    tokenizer = load_tokenizer(Path(job["tokenizer"]))
    prompts, _ = load_examples(job["eval_examples"], Path(job["data"]))
    model = build_model(shape, seed=job["seed"]).to(job["device"])
    if job["device"] == "cuda":
        model = model.to(torch.bfloat16)  # both paths generate in bf16 on the GPU
    model.eval()
    length = job["new_tokens"]
    # min = max: every summary is exactly `length` tokens, so an early end of sequence cannot skew speed.
    settings = {"max_new_tokens": length, "min_new_tokens": length, "num_beams": 1, "do_sample": False}
    paths = {
        "notebook": lambda batch: notebook_generate(model, tokenizer, batch, settings, job["device"]),
        "dialogtune": lambda batch: dialogtune_generate(model, tokenizer, batch, settings, job["eval_batch_size"]),
    }
    conversions = {}
    if job.get("ct2") and job["device"] == "cpu":  # CTranslate2 is dialogtune's CPU engine
        with tempfile.TemporaryDirectory(prefix="bench-ct2-") as tmp:
            for quantization in CT2_QUANTIZATIONS:
                name = f"ct2_{quantization}"
                conversions[name] = ct2_convert(model, tokenizer, Path(tmp), quantization)
                # The translator holds its weights in memory, so the folder may go once it is loaded.
                paths[name] = ct2_summarizer(Path(tmp), tokenizer, quantization, settings, job["eval_batch_size"],
                                             torch.get_num_threads()).generate

    results: dict[str, Any] = {"shape": job["shape"], "examples": len(prompts), "new_tokens": length}
    results["flop_ratio"] = generation_flop_ratio(shape, tokenizer, prompts, length, job["eval_batch_size"])
    outputs = {}
    for name, fn in paths.items():
        outputs[name], seconds = timed(fn, prompts, job["device"])
        results[name] = {
            "seconds": seconds,
            "summaries_per_s": len(prompts) / seconds,
            "generated_tokens_per_s": len(prompts) * length / seconds,
        }
        if name in conversions:
            results[name]["conversion_s"] = conversions[name]
            # Reported, not asserted: a random model's top tokens are close, and int8 moves some of them.
            results[f"{name}_same_text"] = sum(a == b for a, b in zip(outputs["dialogtune"], outputs[name], strict=True))
    # Expected to differ: without an attention mask the notebook's encoder attends to its 512-token padding
    # (generate does not infer a mask here), so this counts texts, not a check on our optimisations;
    # tests/test_bench.py checks that batching, length sorting and LoRA merging change nothing.
    results["identical_outputs"] = sum(a == b for a, b in zip(outputs["notebook"], outputs["dialogtune"], strict=True))
    return results


def generation_flop_ratio(shape: Shape, tokenizer: Any, prompts: list[str], new_tokens: int, batch_size: int) -> float:
    """FLOPs the per-example loop executes / FLOPs dialogtune's batches execute, for the same summaries.

    The loop encodes every dialogue at 512 tokens and decodes against 512 encoder states; dialogtune
    encodes each length-sorted batch at its longest prompt. Decoding the same tokens costs the same
    FLOPs in a batch of 1 or 16, so what batching buys beyond this ratio is memory traffic (the weights
    are read once per step for the whole batch), not arithmetic.
    """
    from dialogtune.inference import batches

    lengths = [len(ids) for ids in tokenizer(prompts, truncation=True, max_length=NOTEBOOK_LENGTH)["input_ids"]]
    loop = len(prompts) * flops(shape, NOTEBOOK_LENGTH, new_tokens, train=False)
    ours = sum(len(b) * flops(shape, max(lengths[i] for i in b), new_tokens, train=False) for b in batches(lengths, batch_size))
    return loop / ours


# ---------------------------------------------------------------------------------------- processes


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    if job["kind"] == "peak":
        return matmul_peak(job["device"], size=job.get("size"))
    return run_train(job) if job["kind"] == "train" else run_eval(job)


def quiet() -> None:
    """Silence library notices and fix the thread count, in the benchmark's process and in every job's."""
    import logging
    import warnings

    import torch
    import transformers

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # renamed-argument notices from transformers
    # ERROR: random weights make the first-loss warning fire on every run; it means nothing here.
    logging.getLogger("dialogtune").setLevel(logging.ERROR)
    threads = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)  # the same thread count for every configuration and both recipes


def preload() -> None:
    """Import what every job needs once, in the parent, so each forked job starts in well under a second.

    Nothing here runs a parallel region: a process must not fork after its OpenMP pool has started.
    """
    import importlib

    for module in ("datasets", "peft", "dialogtune.inference", "dialogtune.train", "dialogtune.ct2"):
        importlib.import_module(module)
    import transformers

    for name in ("Trainer", "Seq2SeqTrainer", "T5ForConditionalGeneration", "GenerationConfig"):
        getattr(transformers, name)  # transformers imports lazily: touching each name loads its module


def spawn(job: dict[str, Any], in_process: bool) -> dict[str, Any]:
    """Run a job in its own process (so its peak memory is its own), or here for fast tests.

    The process is forked from this one, which has only imported the libraries: a fresh interpreter
    would spend ~6 s importing them for every job. (The benchmark needs Linux or macOS: fork, and
    `resource` for peak memory.)
    """
    if in_process:
        return run_job(job)
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: run the job, hand back one JSON document, and leave without cleanup
        os.close(read_fd)
        code = 0
        try:
            quiet()
            payload = json.dumps({"result": run_job(job)})
        except BaseException:  # noqa: BLE001 - everything goes back to the parent as text
            import traceback

            payload, code = json.dumps({"error": traceback.format_exc()[-4000:]}), 1
        with os.fdopen(write_fd, "w") as handle:
            handle.write(payload)
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as handle:
        payload = handle.read()
    _, status = os.waitpid(pid, 0)
    try:
        answer = json.loads(payload)
    except json.JSONDecodeError:
        answer = {"error": f"the job's process ended with status {status} and no result (out of memory?)"}
    if "error" in answer:
        raise SystemExit(f"benchmark job {job} failed:\n{answer['error']}")
    return answer["result"]
