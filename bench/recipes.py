"""The two recipes the speed benchmark compares: how each batches, trains and generates.

(a) notebook, the FLAN-T5 + DialogSum notebook's, and (b) dialogtune's own, as bench_speed.py's docstring
(its --help) describes them; dialogtune generates with PyTorch and with its CTranslate2 backend. Both get the same randomly initialised FLAN-T5-shaped model (speed does not
depend on the weights' values), the same real DialogSum dev dialogues and the same tokenizer. Nothing
here times anything: jobs.py runs a recipe, and measure.py turns the run into figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from measure import Shape

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

SHARED = REPO.parent / "shared"
DEFAULT_DATA = SHARED / "dialogsum" / "dialogsum.dev.jsonl"
DEFAULT_TOKENIZER = SHARED / "t5-tokenizer"
NOTEBOOK_LENGTH = 512  # the notebook pads inputs and labels to the tokenizer's model_max_length
# The notebook's own LoraConfig (it also sets task_type=SEQ_2_SEQ_LM, which dialogtune.modeling.apply_lora sets).
NOTEBOOK_LORA = {"r": 32, "lora_alpha": 32, "target_modules": ["q", "v"], "lora_dropout": 0.05, "bias": "none"}


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


def lora_args(job: dict[str, Any]) -> dict[str, Any]:
    """The job's recipe's LoRA settings: the notebook's own, or dialogtune's defaults under a lever's settings."""
    if job["recipe"] == "notebook":
        return NOTEBOOK_LORA
    from dialogtune.config import Config

    return Config(method="lora", lora=job.get("lora", {})).lora_args()


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
    trainer = make_trainer(setup, config, folder)
    if job.get("pad_to_multiple_of"):  # a lever, not a dialogtune setting: buckets of lengths for torch.compile
        trainer.data_collator.pad_to_multiple_of = job["pad_to_multiple_of"]
    return trainer


def recipe_trainer(job: dict[str, Any], base: Any, model: Any, tokenizer: Any, prompts: list[str], summaries: list[str], folder: Path) -> Any:
    """The job's recipe's trainer for `model` (`base` with or without adapters), silent on stdout."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if job["recipe"] == "notebook":
        built = _notebook_trainer(job, model, tokenizer, prompts, summaries, folder)
    else:
        built = _dialogtune_trainer(job, base, model, tokenizer, prompts, summaries, folder)
    for noisy in (PrinterCallback, ProgressCallback):  # they print the final metrics dict to stdout
        built.remove_callback(noisy)
    return built


# ----------------------------------------------------------------------------------------- generation


def notebook_generate(model: Any, tokenizer: Any, prompts: list[str], settings: dict[str, Any], device: str) -> list[str]:
    """The notebook's loop: one dialogue per generate call, its 512-padded input, no attention mask."""
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(**settings)
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", padding="max_length", truncation=True, max_length=NOTEBOOK_LENGTH).input_ids
        with torch.no_grad():
            generated = model.generate(ids.to(device), generation_config=config)
        out.append(tokenizer.decode(generated[0], skip_special_tokens=True))
    return out


def dialogtune_generate(model: Any, tokenizer: Any, prompts: list[str], settings: dict[str, Any], batch_size: int) -> list[str]:
    """dialogtune's path: length-sorted batches with attention masks, through `dialogtune.inference.generate`."""
    from dialogtune.inference import generate, generation_config

    return generate(model, tokenizer, prompts, generation_config(settings, tokenizer), batch_size=batch_size, progress=False)


CT2_QUANTIZATIONS = ("float32", "int8")  # the CTranslate2 weight types the evaluation job times


def ct2_convert(model: Any, tokenizer: Any, folder: Path, quantization: str) -> float:
    """The stand-in converted as `dialogtune export` converts a run (`dialogtune.ct2.convert`), into
    `folder`/`quantization`; returns the conversion's seconds (saving the PyTorch model first is not counted)."""
    from dialogtune.ct2 import convert

    source = folder / "pytorch"
    if not source.is_dir():
        model.save_pretrained(source)
        tokenizer.save_pretrained(source)
    return convert(source, folder / quantization, quantization)


def ct2_summarizer(folder: Path, tokenizer: Any, quantization: str, settings: dict[str, Any], batch_size: int, threads: int) -> Any:
    """dialogtune's CTranslate2 backend on a converted stand-in: its `generate` fits and batches the prompts
    exactly as `dialogtune_generate` does (512 source tokens, the default template, longest first), and its
    translator is loaded as `dialogtune evaluate --backend ct2` loads one (`threads` workers)."""
    from dialogtune.ct2 import CT2Summarizer, load_translator
    from dialogtune.inference import Settings
    from dialogtune.prompts import PromptTemplate

    translator = load_translator(folder / quantization, quantization, threads)
    return CT2Summarizer(translator, tokenizer, Settings(PromptTemplate(), dict(settings), NOTEBOOK_LENGTH, batch_size), quantization)
