"""Training and evaluation speed: dialogtune's own paths vs the FLAN-T5 + DialogSum notebook recipe, side by side.

    .venv/bin/python bench/bench_speed.py --quick                       # ~3 min on 2 cores: flan-t5-small shape, every ratio
    .venv/bin/python bench/bench_speed.py --output bench-cpu.json       # the full measurement: small compared, base MFU
    .venv/bin/python bench/bench_speed.py --compare-base                # also the notebook at the base shape (> 24 GiB)
    bash bench/gpu.sh                                                   # the same on a CUDA GPU in bf16, under 8 minutes

Two recipes train and evaluate the same randomly initialised FLAN-T5-shaped models (speed does not depend
on the weights' values) on the same real DialogSum dev dialogues, with the same tokenizer, batch size and
number of optimizer steps:

(a) notebook: inputs and labels padded to 512 (padding="max_length"), label pads left as pad id 0, no
    attention mask, plain `transformers.Trainer` with its default collator, and evaluation that calls
    `generate` once per example on the padded 512-token input;
(b) dialogtune: `dialogtune.preprocess.tokenize` + `collator` (per-batch padding, -100 label pads, attention
    masks), `Seq2SeqTrainer` built by `dialogtune.train.make_trainer` with our defaults
    (train_sampling_strategy=group_by_length; activation checkpointing for LoRA), and
    `dialogtune.generate.generate` (batched, length-sorted).

Levers: dialogtune with one setting changed (dropout 0, LoRA without activation checkpointing), timed
the same way, so each setting's cost is measured rather than assumed.

Every job runs in its own process, forked from this one after the libraries are imported, so its peak
resident memory is its own. Each
trains 1 warm-up step (not timed) plus `--steps` timed steps. Throughput counts only real tokens (non-pad
source tokens + real label tokens), which is the same work for both recipes, so the notebook's padding
shows up as lower throughput. FLOP accounting is documented in `flops()` and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

SHARED = REPO.parent / "shared"
DEFAULT_DATA = SHARED / "dialogsum" / "dialogsum.dev.jsonl"
DEFAULT_TOKENIZER = SHARED / "t5-tokenizer"
NOTEBOOK_LENGTH = 512  # the notebook pads inputs and labels to the tokenizer's model_max_length
LORA_R = 32  # dialogtune's default LoRA rank on q and v; the issue's target configuration
# The notebook's own LoraConfig (it also sets task_type=SEQ_2_SEQ_LM, which dialogtune.modeling.apply_lora sets).
NOTEBOOK_LORA = {"r": 32, "lora_alpha": 32, "target_modules": ["q", "v"], "lora_dropout": 0.05, "bias": "none"}


@dataclass(frozen=True)
class Shape:
    """The architecture of a T5 v1.1 / FLAN-T5 checkpoint: all that speed depends on."""

    name: str
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int  # encoder and decoder each
    num_heads: int
    params: int | None  # the real checkpoint's parameter count, asserted when the model is built

    @property
    def inner(self) -> int:
        """Width of the attention projections (heads x d_kv); not d_model for flan-t5-small (6 x 64 = 384)."""
        return self.num_heads * self.d_kv


SHAPES = {
    "small": Shape("flan-t5-small", 32128, 512, 64, 1024, 8, 6, 76_961_152),
    "base": Shape("flan-t5-base", 32128, 768, 64, 2048, 12, 12, 247_577_856),
    # Not a real checkpoint: a stand-in that lets the tests run the whole benchmark in seconds.
    "tiny": Shape("tiny", 32128, 32, 8, 64, 2, 4, None),
}


# --------------------------------------------------------------------------------------------- models


def t5_config(shape: Shape, dropout: float | None = None) -> Any:
    """A T5Config with FLAN-T5's layout: gated-GELU feed-forward and an untied, unscaled lm_head.

    Dropout is FLAN-T5's 0.1 unless `dropout` replaces it, as dialogtune's `dropout` setting does.
    """
    from transformers import T5Config

    return T5Config(
        dropout_rate=0.1 if dropout is None else dropout,
        vocab_size=shape.vocab_size,
        d_model=shape.d_model,
        d_kv=shape.d_kv,
        d_ff=shape.d_ff,
        num_layers=shape.num_layers,
        num_decoder_layers=shape.num_layers,
        num_heads=shape.num_heads,
        feed_forward_proj="gated-gelu",
        # transformers 5 forces tie_word_embeddings=True on T5, but passing False still switches off the
        # tied-head output scaling (scale_decoder_outputs=False), as in the FLAN-T5 checkpoints.
        tie_word_embeddings=False,
        decoder_start_token_id=0,  # needed before `labels=` works on a T5Config built in code
        pad_token_id=0,
        eos_token_id=1,
    )


def build_model(shape: Shape, device: str = "cpu", seed: int = 0, dropout: float | None = None) -> Any:
    """A randomly initialised model of `shape` with its own lm_head; asserts the real checkpoint's size.

    `device="meta"` builds it without allocating weights (for counting parameters in tests).
    """
    import torch
    from transformers import T5ForConditionalGeneration

    from dialogtune.modeling import parameter_counts

    torch.manual_seed(seed)
    with torch.device(device):
        model = T5ForConditionalGeneration(t5_config(shape, dropout))
        # FLAN-T5 checkpoints have a separate lm_head; without this the count is short by vocab x d_model.
        model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    _, total = parameter_counts(model)
    if shape.params is not None:
        assert total == shape.params, f"{shape.name} stand-in has {total:,} parameters, the checkpoint {shape.params:,}"
    return model


# ---------------------------------------------------------------------------------------------- FLOPs


def flops(shape: Shape, src: int, tgt: int, method: str = "full", train: bool = True, lora_r: int = LORA_R) -> float:
    """Model FLOPs for one example with `src` encoder tokens and `tgt` decoder tokens (2 FLOPs per multiply-add).

    Forward, per layer (inner = heads x d_kv):
      encoder, per encoder token: q,k,v,o 8*d*inner + gated FFN 6*d*d_ff + attention scores/context 4*src*inner
      decoder, per decoder token: self q,k,v,o 8*d*inner + cross q,o 4*d*inner + FFN 6*d*d_ff
                                  + self attention 4*tgt*inner + cross attention 4*src*inner
      decoder cross k,v, per encoder token: 4*d*inner
    plus the lm_head, 2*d*vocab per decoder token. Embedding lookups, norms, softmax and the relative
    position bias are left out (they are not matmuls and are small).
    Attention is counted over the full `src` x `src` / `tgt` x `tgt` matrices, as the kernels compute them.

    Training = forward + backward:
      full: backward = 2 x forward (input gradients + weight gradients), so 3 x forward (the 6*N*tokens rule).
      lora: base weights are frozen, so their weight gradients are skipped, but the input gradients must
            still flow through every layer to reach the adapters: weight matmuls cost 2 x forward. Attention
            score/context matmuls have no weights; both operands need gradients: 3 x forward. The rank-r
            adapters on q and v (d -> r -> inner) count 3 x their forward.
    """
    d, inner = shape.d_model, shape.inner
    layers = shape.num_layers
    enc_weights = layers * src * (8 * d * inner + 6 * d * shape.d_ff)
    enc_attention = layers * src * 4 * src * inner
    dec_weights = layers * tgt * (12 * d * inner + 6 * d * shape.d_ff) + layers * src * 4 * d * inner
    dec_attention = layers * tgt * 4 * (tgt + src) * inner
    head = tgt * 2 * d * shape.vocab_size
    weights = enc_weights + dec_weights + head
    attention = enc_attention + dec_attention
    # LoRA on q and v: two adapters per attention block (encoder self, decoder self, decoder cross).
    adapter_per_token = 2 * 2 * lora_r * (d + inner)
    adapters = adapter_per_token * layers * (src + 2 * tgt) if method == "lora" else 0
    if not train:
        return float(weights + attention + adapters)
    if method == "full":
        return float(3 * (weights + attention))
    if method == "lora":
        return float(2 * weights + 3 * attention + 3 * adapters)
    raise ValueError(f"method is {method!r}; use full or lora")


def batch_flops(shape: Shape, src_lengths: list[int], tgt_lengths: list[int], method: str, padded: tuple[int, int] | None = None) -> float:
    """FLOPs of one batch: on each example's real lengths, or (with `padded`) on the padded lengths executed."""
    if padded is not None:
        return len(src_lengths) * flops(shape, padded[0], padded[1], method)
    return sum(flops(shape, s, t, method) for s, t in zip(src_lengths, tgt_lengths, strict=True))


# ----------------------------------------------------------------------------------------------- data


def load_examples(n: int, path: Path = DEFAULT_DATA) -> tuple[list[str], list[str]]:
    """The first `n` dev dialogues as prompts (dialogtune's template, the notebook's text) and summaries."""
    from dialogtune.prompts import PromptTemplate

    if not path.is_file():
        raise SystemExit(f"{path} not found: the benchmark reads real DialogSum dialogues from ../shared/dialogsum")
    template = PromptTemplate("Summarize the following conversation.\n\n{dialogue}\n\nSummary: ")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                rows.append(json.loads(line))
            if len(rows) == n:
                break
    if len(rows) < n:
        raise SystemExit(f"{path} has {len(rows)} dialogues; the benchmark needs {n}")
    return [template.format(r["dialogue"]) for r in rows], [r["summary"] for r in rows]


def load_tokenizer(path: Path = DEFAULT_TOKENIZER) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def notebook_dataset(tokenizer: Any, prompts: list[str], summaries: list[str]) -> Any:
    """The notebook's tokenize_function: both sides padded to 512, pads kept in the labels, no attention mask."""
    from datasets import Dataset

    pad = {"padding": "max_length", "truncation": True, "max_length": NOTEBOOK_LENGTH}
    return Dataset.from_dict({
        "input_ids": tokenizer(prompts, **pad)["input_ids"],
        "labels": tokenizer(summaries, **pad)["input_ids"],
    })


def notebook_collator() -> Any:
    """What `transformers.Trainer` uses when given no tokenizer and no collator, as in the notebook."""
    from transformers import default_data_collator

    return default_data_collator


# ------------------------------------------------------------------------------------------- training


class StepClock:
    """Trainer callback: wall time at the end of every optimizer step (after a device sync)."""

    def __init__(self, cuda: bool) -> None:
        from transformers import TrainerCallback

        self.cuda = cuda
        self.ends: list[float] = []
        clock = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - trainer signature
                clock.begin = clock.now()

            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                clock.ends.append(clock.now())

        self.callback = _Callback()

    def now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()  # kernels run asynchronously; without this a step "ends" before its work
        return time.perf_counter()


class BatchLog:
    """Forward pre-hook that keeps each training batch's real and padded lengths.

    Real tokens are ids > 0: id 0 is T5's pad, and the labels pad with 0 (notebook) or -100 (ours). The
    counts stay on the device until the end, so the hook adds no synchronisation to the timed steps.
    """

    def __init__(self) -> None:
        self.batches: list[tuple[Any, Any, tuple[int, int]]] = []

    def __call__(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids, labels = kwargs["input_ids"], kwargs["labels"]
        self.batches.append(((ids > 0).sum(1), (labels > 0).sum(1), (ids.shape[1], labels.shape[1])))

    def lengths(self) -> list[tuple[list[int], list[int], tuple[int, int]]]:
        return [(s.tolist(), t.tolist(), shape) for s, t, shape in self.batches]


def _train_args_common(job: dict[str, Any]) -> dict[str, Any]:
    """Options both recipes share: same steps, batch, seed and learning rate; no checkpoints or log noise."""
    from dialogtune.config import METHOD_TRAINING_DEFAULTS

    common = {
        "per_device_train_batch_size": job["batch_size"],
        "max_steps": job["warmup_steps"] + job["steps"],
        "learning_rate": METHOD_TRAINING_DEFAULTS[job["method"]]["learning_rate"],
        "save_strategy": "no",
        "logging_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": job["seed"],
        "dataloader_num_workers": 0,
    }
    if job["device"] == "cpu":
        common["use_cpu"] = True
    return common


def _notebook_trainer(job: dict[str, Any], model: Any, tokenizer: Any, prompts: list[str], summaries: list[str], folder: Path) -> Any:
    """Recipe (a): plain `Trainer`, default collator, 512-padded inputs and labels."""
    from transformers import Trainer, TrainingArguments

    args = _train_args_common(job)
    if job["device"] == "cuda":
        args["bf16"] = True  # the same precision dialogtune picks on a bf16 GPU, so only the recipe differs
    return Trainer(
        model=model,
        args=TrainingArguments(output_dir=str(folder / "checkpoints"), **args),
        train_dataset=notebook_dataset(tokenizer, prompts, summaries),
    )


def _dialogtune_trainer(job: dict[str, Any], base: Any, model: Any, tokenizer: Any, prompts: list[str], summaries: list[str], folder: Path) -> Any:
    """Recipe (b): dialogtune.preprocess.tokenize + dialogtune.train.make_trainer with our default options."""
    from dialogtune.config import Config, DataConfig
    from dialogtune.preprocess import tokenize
    from dialogtune.prompts import PromptTemplate
    from dialogtune.train import Setup, make_trainer

    # A lever's settings (e.g. dropout 0, or activation checkpointing off) go through the config, as a user's would.
    training = {**_train_args_common(job), **job.get("training", {})}
    config = Config(method=job["method"], seed=job["seed"], dropout=job.get("dropout"), data=DataConfig(), training=training)
    dataset, stats = tokenize(tokenizer, prompts, summaries, config.data.max_source_length, config.data.max_target_length)
    setup = Setup(tokenizer, dataset, stats, base, model, PromptTemplate(config.prompt.template))
    return make_trainer(setup, config, folder)


def run_train(job: dict[str, Any]) -> dict[str, Any]:
    """One training configuration (recipe x shape x method); meant to run alone in a fresh process."""
    import torch

    from dialogtune.config import Config
    from dialogtune.modeling import apply_lora, parameter_counts

    shape = SHAPES[job["shape"]]
    tokenizer = load_tokenizer(Path(job["tokenizer"]))
    n = job["batch_size"] * (job["warmup_steps"] + job["steps"])  # exactly one epoch: both recipes see every example once
    prompts, summaries = load_examples(n, Path(job["data"]))
    base = build_model(shape, seed=job["seed"], dropout=job.get("dropout"))
    if job["recipe"] == "notebook":
        lora_args = NOTEBOOK_LORA
    else:  # dialogtune's defaults, under a lever's settings
        lora_args = Config(method="lora", lora=job.get("lora", {})).lora_args()
    model = apply_lora(base, lora_args) if job["method"] == "lora" else base
    trainable, total = parameter_counts(model)
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        folder = Path(tmp)
        if job["recipe"] == "notebook":
            trainer = _notebook_trainer(job, model, tokenizer, prompts, summaries, folder)
        else:
            trainer = _dialogtune_trainer(job, base, model, tokenizer, prompts, summaries, folder)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        for noisy in (PrinterCallback, ProgressCallback):  # they print the final metrics dict to stdout
            trainer.remove_callback(noisy)
        clock = StepClock(cuda=job["device"] == "cuda")
        trainer.add_callback(clock.callback)
        log = BatchLog()
        handle = trainer.model.register_forward_pre_hook(log, with_kwargs=True)
        trainer.train()
        handle.remove()
    if job["device"] == "cuda":
        peak = int(torch.cuda.max_memory_allocated())
    else:
        peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
    batches = log.lengths()
    warm = job["warmup_steps"]
    if len(clock.ends) != warm + job["steps"] or len(batches) != len(clock.ends):
        raise RuntimeError(f"expected {warm + job['steps']} steps, saw {len(clock.ends)} steps and {len(batches)} batches")
    timed = batches[warm:]
    seconds = clock.ends[-1] - clock.ends[warm - 1] if warm else clock.ends[-1] - clock.begin
    steps = [b - a for a, b in zip(([clock.begin] + clock.ends)[warm:], clock.ends[warm:])]
    tokens = sum(sum(s) + sum(t) for s, t, _ in timed)
    useful = sum(batch_flops(shape, s, t, job["method"]) for s, t, _ in timed)
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
        "padded_lengths": [p for _, _, p in timed],
        "peak_rss_bytes": peak,
    }


# ----------------------------------------------------------------------------------------- evaluation


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def run_eval(job: dict[str, Any]) -> dict[str, Any]:
    """Both evaluation paths on the same dialogues and the same output length, in this process."""
    import torch
    from transformers import GenerationConfig

    from dialogtune.generate import generate, generation_config

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

    def notebook(batch: list[str]) -> list[str]:
        # The notebook's loop: one dialogue per generate call, its 512-padded input, no attention mask.
        config = GenerationConfig(**settings)
        out = []
        for prompt in batch:
            ids = tokenizer(prompt, return_tensors="pt", padding="max_length", truncation=True, max_length=NOTEBOOK_LENGTH).input_ids
            with torch.no_grad():
                generated = model.generate(ids.to(job["device"]), generation_config=config)
            out.append(tokenizer.decode(generated[0], skip_special_tokens=True))
        return out

    def ours(batch: list[str]) -> list[str]:
        config = generation_config(settings, tokenizer)
        return generate(model, tokenizer, batch, config, batch_size=job["eval_batch_size"], progress=False)

    results: dict[str, Any] = {"shape": job["shape"], "examples": len(prompts), "new_tokens": length}
    results["flop_ratio"] = generation_flop_ratio(shape, tokenizer, prompts, length, job["eval_batch_size"])
    outputs = {}
    for name, fn in (("notebook", notebook), ("dialogtune", ours)):
        fn(prompts[:1])  # warm-up: first-call allocations and lazy initialisation are not timed
        _sync(job["device"])
        start = time.perf_counter()
        outputs[name] = fn(prompts)
        _sync(job["device"])
        seconds = time.perf_counter() - start
        results[name] = {
            "seconds": seconds,
            "summaries_per_s": len(prompts) / seconds,
            "generated_tokens_per_s": len(prompts) * length / seconds,
        }
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
    from dialogtune.generate import batches

    lengths = [len(ids) for ids in tokenizer(prompts, truncation=True, max_length=NOTEBOOK_LENGTH)["input_ids"]]
    loop = len(prompts) * flops(shape, NOTEBOOK_LENGTH, new_tokens, train=False)
    ours = sum(len(b) * flops(shape, max(lengths[i] for i in b), new_tokens, train=False) for b in batches(lengths, batch_size))
    return loop / ours


# ------------------------------------------------------------------------------------------ matmul peak


def matmul_peak(device: str, size: int | None = None, repeats: int = 8) -> dict[str, Any]:
    """The best rate of large square matmuls: fp32 on the CPU (all threads), bf16 on CUDA."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    size = size or (8192 if device == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    calls = 20 if device == "cuda" else 1
    best = 0.0
    for _ in range(repeats + 1):  # the first round warms up (thread pool, kernel choice)
        _sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            torch.matmul(a, b)
        _sync(device)
        best = max(best, calls * 2 * size**3 / (time.perf_counter() - start))
    return {"gflops": best / 1e9, "dtype": str(dtype).replace("torch.", ""), "size": size, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------- orchestration


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    if job["kind"] == "peak":
        return matmul_peak(job["device"], size=job.get("size"))
    return run_train(job) if job["kind"] == "train" else run_eval(job)


def _quiet() -> None:
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

    for module in ("datasets", "peft", "dialogtune.generate", "dialogtune.train"):
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
            _quiet()
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


# dialogtune settings measured against its defaults, on the small shape: what each costs or saves.
LEVERS: list[tuple[str, str, dict[str, Any]]] = [
    ("full", "dropout 0", {"dropout": 0.0}),
    ("lora", "dropout 0", {"dropout": 0.0}),
    ("lora", "lora_dropout 0.05 (the notebook's)", {"lora": {"lora_dropout": 0.05}}),
    ("lora", "no activation checkpointing", {"training": {"activation_checkpointing": False}}),
]


@dataclass
class Plan:
    """What one benchmark run measures."""

    shapes: list[str]  # shapes trained with both recipes and both methods
    mfu_shapes: list[str]  # extra shapes trained with dialogtune `full` only (the MFU figure)
    eval_shapes: list[str]
    steps: int
    warmup_steps: int
    batch_size: int
    eval_examples: int
    eval_batch_size: int
    new_tokens: int
    lever_shapes: list[str]  # shapes on which each of LEVERS is trained (dialogtune only)
    mfu_steps: int | None = None  # timed steps for the MFU-only shapes (default: `steps`)


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        # Sized for <= 3 minutes on 2 idle cores. A notebook step executes every example at 512 + 512
        # tokens (~0.2 TFLOP each at the small shape), so those steps dominate: quick trains batches of
        # 2 and times 2 steps; the base shape (MFU only) times 1. Smaller batches pad less inside a
        # batch, so the FLOP ratio is higher than at batch 8; the table prints it next to each ratio.
        plan = Plan(["small"], ["base"], ["small"], steps=2, warmup_steps=1, batch_size=2,
                    eval_examples=8, eval_batch_size=16, new_tokens=32, lever_shapes=["small"], mfu_steps=1)
    elif args.compare_base:
        plan = Plan(["small", "base"], [], ["small", "base"], steps=10, warmup_steps=1, batch_size=8,
                    eval_examples=64, eval_batch_size=16, new_tokens=64, lever_shapes=["small"])
    else:
        # The notebook recipe at the base shape and batch 8 needs more memory than a 24 GiB machine has
        # (8 x 512 x 32,128 logits and 512 x 512 attention maps in 36 attention blocks), and an hour of
        # 2 cores: on CPU the base shape is trained by dialogtune only, for MFU. --compare-base adds it.
        plan = Plan(["small"], ["base"], ["small", "base"], steps=10, warmup_steps=1, batch_size=8,
                    eval_examples=64, eval_batch_size=16, new_tokens=64, lever_shapes=["small"])
    if args.shape:  # one shape for everything (the tests use the tiny stand-in)
        plan.shapes, plan.eval_shapes, plan.lever_shapes = [args.shape], [args.shape], [args.shape]
        plan.mfu_shapes = []
    if args.quick and not args.levers:
        plan.lever_shapes = []  # they would take quick mode past 3 minutes; --levers adds them
    for key in ("steps", "batch_size", "eval_examples", "new_tokens"):
        if getattr(args, key) is not None:
            setattr(plan, key, getattr(args, key))
    return plan


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    _quiet()
    if not args.in_process:
        preload()
    plan = make_plan(args)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible; run on a GPU machine or use --device cpu")
    base_job = {"device": device, "seed": 0, "data": str(args.data), "tokenizer": str(args.tokenizer),
                "batch_size": plan.batch_size, "steps": plan.steps, "warmup_steps": plan.warmup_steps}
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    print(f"machine: {machine(device)}", flush=True)
    print(f"plan: {asdict(plan)}", flush=True)
    # In its own process too: this one must not start a thread pool before it forks the jobs.
    peak = spawn({"kind": "peak", "device": device, "size": 256 if args.shape == "tiny" else None}, args.in_process)
    print(f"matmul peak ({peak['dtype']}, {peak['size']}^2, {peak['threads']} threads): {peak['gflops']:.1f} GFLOP/s", flush=True)

    def train_job(shape: str, method: str, recipe: str, label: str = "", **extra: Any) -> dict[str, Any]:
        started = time.perf_counter()
        job = {**base_job, "kind": "train", "shape": shape, "method": method, "recipe": recipe, **extra}
        result = spawn(job, args.in_process)
        print(f"  train {shape:5s} {method:4s} {recipe:10s} {result['tokens_per_s']:9.1f} tok/s  "
              f"{result['step_s']:7.2f} s/step  peak {result['peak_rss_bytes'] / 2**20:7.0f} MiB  "
              f"({time.perf_counter() - started:.0f} s wall){'  ' + label if label else ''}", flush=True)
        return result

    train: dict[tuple[str, str, str], dict[str, Any]] = {}
    for shape, method, recipe in [(s, m, r) for s in plan.shapes for m in ("full", "lora") for r in ("notebook", "dialogtune")]:
        train[(shape, method, recipe)] = train_job(shape, method, recipe)
    for shape in plan.mfu_shapes:
        train[(shape, "full", "dialogtune")] = train_job(shape, "full", "dialogtune", steps=plan.mfu_steps or plan.steps)
    levers = []
    for shape in plan.lever_shapes:
        for method, label, settings in LEVERS:
            levers.append({"shape": shape, "method": method, "lever": label, "settings": settings,
                           **train_job(shape, method, "dialogtune", label, **settings)})

    evals = []
    for shape in plan.eval_shapes:
        started = time.perf_counter()
        job = {**base_job, "kind": "eval", "shape": shape, "eval_examples": plan.eval_examples,
               "eval_batch_size": plan.eval_batch_size, "new_tokens": plan.new_tokens}
        evals.append(spawn(job, args.in_process))
        print(f"  eval  {shape:5s} done ({time.perf_counter() - started:.0f} s wall)", flush=True)

    report = assemble(peak, plan, train, evals, device, levers)
    print_report(report)
    return report


def assemble(peak: dict[str, Any], plan: Plan, train: dict, evals: list[dict], device: str, levers: list[dict] | None = None) -> dict[str, Any]:
    """The JSON contract: ratios are dialogtune / notebook for every figure."""
    peak_flops = peak["gflops"] * 1e9
    rows = []
    for (shape, method, recipe), ours in train.items():
        if recipe != "dialogtune":
            continue
        base = train.get((shape, method, "notebook"))
        row: dict[str, Any] = {
            "shape": SHAPES[shape].name,
            "method": method,
            "batch_size": ours["batch_size"],
            "steps": ours["steps"],
            "tokens_per_s": ours["tokens_per_s"],
            "examples_per_s": ours["examples_per_s"],
            "step_s": ours["step_s"],
            "peak_rss_bytes": ours["peak_rss_bytes"],
            "model_gflops_per_s": ours["useful_flops_per_s"] / 1e9,
            "mfu": ours["useful_flops_per_s"] / peak_flops,
            "trainable_params": ours["trainable_params"],
            "total_params": ours["total_params"],
        }
        if base:
            row.update({
                "baseline_tokens_per_s": base["tokens_per_s"],
                "baseline_examples_per_s": base["examples_per_s"],
                "baseline_step_s": base["step_s"],
                "baseline_peak_rss_bytes": base["peak_rss_bytes"],
                "baseline_mfu": base["useful_flops_per_s"] / peak_flops,
                "ratio": _ratio(ours["tokens_per_s"], base["tokens_per_s"]),
                "examples_ratio": _ratio(ours["examples_per_s"], base["examples_per_s"]),
                "step_time_ratio": _ratio(base["step_s"], ours["step_s"]),  # > 1: our steps are faster
                "peak_rss_ratio": _ratio(ours["peak_rss_bytes"], base["peak_rss_bytes"]),
                # FLOPs the padded recipe executes / FLOPs ours executes, over the same examples: the
                # speed-up that removing padding alone can give.
                "flop_ratio": _ratio(base["executed_flops_all"], ours["executed_flops_all"]),
            })
            row["ratio_of_flop_ratio"] = _ratio(row["ratio"], row["flop_ratio"]) if row["flop_ratio"] else None
        else:
            row.update({k: None for k in ("baseline_tokens_per_s", "ratio", "flop_ratio")})
        rows.append(row)
    for row in rows:
        if row["method"] == "lora":
            full = next((r for r in rows if r["shape"] == row["shape"] and r["method"] == "full"), None)
            row["peak_rss_vs_full"] = _ratio(row["peak_rss_bytes"], full["peak_rss_bytes"]) if full else None
    eval_rows = []
    for result in evals:
        nb, ours = result["notebook"], result["dialogtune"]
        eval_rows.append({
            "shape": SHAPES[result["shape"]].name,
            "examples": result["examples"],
            "new_tokens": result["new_tokens"],
            "baseline_summaries_per_s": nb["summaries_per_s"],
            "summaries_per_s": ours["summaries_per_s"],
            "ratio": _ratio(ours["summaries_per_s"], nb["summaries_per_s"]),
            "flop_ratio": result.get("flop_ratio"),
            "baseline_generated_tokens_per_s": nb["generated_tokens_per_s"],
            "generated_tokens_per_s": ours["generated_tokens_per_s"],
            "identical_outputs": result["identical_outputs"],
        })
    lever_rows = []
    for lever in levers or []:
        default = train.get((lever["shape"], lever["method"], "dialogtune"))
        notebook = train.get((lever["shape"], lever["method"], "notebook"))
        lever_rows.append({
            "shape": SHAPES[lever["shape"]].name,
            "method": lever["method"],
            "lever": lever["lever"],
            "settings": lever["settings"],
            "tokens_per_s": lever["tokens_per_s"],
            "step_s": lever["step_s"],
            "peak_rss_bytes": lever["peak_rss_bytes"],
            "mfu": lever["useful_flops_per_s"] / peak_flops,
            # > 1: faster than dialogtune's default settings / than the notebook recipe.
            "vs_default": _ratio(lever["tokens_per_s"], default["tokens_per_s"]) if default else None,
            "peak_rss_vs_default": _ratio(lever["peak_rss_bytes"], default["peak_rss_bytes"]) if default else None,
            "ratio": _ratio(lever["tokens_per_s"], notebook["tokens_per_s"]) if notebook else None,
        })
    return {
        "matmul_peak_gflops": peak["gflops"],
        "matmul_peak": peak,
        "device": device,
        "machine": machine(device),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "plan": asdict(plan),
        "train": rows,
        "eval": eval_rows,
        "levers": lever_rows,
    }


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def print_report(report: dict[str, Any]) -> None:
    print(f"\nmatmul peak: {report['matmul_peak_gflops']:.1f} GFLOP/s ({report['matmul_peak']['dtype']})")
    print("\ntraining (ratio = dialogtune / notebook; tokens = non-pad source + real label tokens)")
    head = (f"{'shape':14s} {'method':6s} {'nb tok/s':>9s} {'our tok/s':>9s} {'ratio':>6s} {'FLOP ratio':>10s} "
            f"{'ratio/FLOP':>10s} {'ex/s ratio':>10s} {'step s (nb/ours)':>17s} {'MFU':>6s} {'peak MiB (nb/ours)':>19s} {'lora/full mem':>13s}")
    print(head)
    for r in report["train"]:
        nb_rss = r.get("baseline_peak_rss_bytes")
        print(f"{r['shape']:14s} {r['method']:6s} {_fmt(r['baseline_tokens_per_s'], '9.1f')} {r['tokens_per_s']:9.1f} "
              f"{_fmt(r['ratio'], '5.2f', 'x')} {_fmt(r['flop_ratio'], '9.2f', 'x')} {_fmt(r.get('ratio_of_flop_ratio'), '9.0%')} "
              f"{_fmt(r.get('examples_ratio'), '9.2f', 'x')} "
              f"{_fmt(r.get('baseline_step_s'), '8.2f')}/{r['step_s']:<8.2f} {r['mfu']:6.1%} "
              f"{_fmt(nb_rss / 2**20 if nb_rss else None, '9.0f')}/{r['peak_rss_bytes'] / 2**20:<9.0f} "
              f"{_fmt(r.get('peak_rss_vs_full'), '12.0%')}")
    if report.get("levers"):
        print("\nlevers (dialogtune with one setting changed; vs default = tokens/s against dialogtune's defaults)")
        print(f"{'shape':14s} {'method':6s} {'lever':36s} {'tok/s':>8s} {'vs default':>10s} {'vs notebook':>11s} "
              f"{'MFU':>6s} {'peak MiB':>9s} {'mem vs default':>14s}")
        for r in report["levers"]:
            print(f"{r['shape']:14s} {r['method']:6s} {r['lever']:36s} {r['tokens_per_s']:8.1f} "
                  f"{_fmt(r['vs_default'], '9.2f', 'x')} {_fmt(r['ratio'], '10.2f', 'x')} {r['mfu']:6.1%} "
                  f"{r['peak_rss_bytes'] / 2**20:9.0f} {_fmt(r['peak_rss_vs_default'], '13.0%')}")
    print("\nevaluation (greedy, every summary exactly new_tokens long)")
    print(f"{'shape':14s} {'n':>4s} {'tokens':>6s} {'nb sum/s':>9s} {'our sum/s':>9s} {'ratio':>6s} {'FLOP ratio':>10s} {'nb gen tok/s':>12s} {'our gen tok/s':>13s} {'same text':>9s}")
    for r in report["eval"]:
        print(f"{r['shape']:14s} {r['examples']:4d} {r['new_tokens']:6d} {r['baseline_summaries_per_s']:9.2f} "
              f"{r['summaries_per_s']:9.2f} {_fmt(r['ratio'], '5.2f', 'x')} {_fmt(r.get('flop_ratio'), '9.2f', 'x')} "
              f"{r['baseline_generated_tokens_per_s']:12.1f} "
              f"{r['generated_tokens_per_s']:13.1f} {r['identical_outputs']:>4d}/{r['examples']}")


def machine(device: str) -> str:
    """One line describing where the numbers came from."""
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, transformers {transformers.__version__}, " \
           f"{torch.get_num_threads()} threads"
    if device == "cuda":
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shape + base-shape MFU, batch 2, 2 timed steps (<= 3 min on 2 idle cores)")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--compare-base", action="store_true", dest="compare_base",
                        help="also train the notebook recipe at the flan-t5-base shape (needs > 24 GiB on CPU; gpu.sh sets it)")
    parser.add_argument("--levers", action="store_true", help="with --quick: also time the lever runs (dropout 0, no activation checkpointing)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda trains in bf16 (see bench/gpu.sh)")
    parser.add_argument("--steps", type=int, help="timed optimizer steps per training configuration (after 1 warm-up step)")
    parser.add_argument("--batch-size", type=int, dest="batch_size", help="training batch size (both recipes)")
    parser.add_argument("--eval-examples", type=int, dest="eval_examples", help="dialogues summarised per evaluation path")
    parser.add_argument("--new-tokens", type=int, dest="new_tokens", help="tokens generated per summary (min = max)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DialogSum-format JSONL (fname, dialogue, summary)")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="T5 tokenizer folder")
    # For the tests: one tiny stand-in shape, run in this process so the whole benchmark takes seconds.
    parser.add_argument("--shape", choices=list(SHAPES), help=argparse.SUPPRESS)
    parser.add_argument("--in-process", action="store_true", dest="in_process", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = run_benchmark(args)
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.output}")
    return report


if __name__ == "__main__":
    main()
