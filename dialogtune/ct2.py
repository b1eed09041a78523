"""CTranslate2: export a full (or merged LoRA) run to a CTranslate2 folder, and summarise with it on CPU.

    dialogtune export runs/full --format ct2 --quantization int8 --output runs/full-ct2-int8
    dialogtune evaluate runs/full-ct2-int8          # the backend is read from the folder
    dialogtune compare runs/full runs/full-ct2-int8  # paired tests: what int8 costs, measured

The export is a run folder too (method full; metadata: backend ct2, quantization, source run), carrying
the tokenizer, the prompt and the generation settings, so it describes itself like any other run.
`CT2Summarizer` has `inference.Summarizer`'s interface; `summarizer_for` is the one place that picks
the backend for a run folder. CTranslate2 has no LoRA support, so an adapter is merged first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialogtune import runs
from dialogtune.errors import DialogtuneError
from dialogtune.inference import BASE, Settings, Summarizer, generation_config, in_batches

BACKENDS = ("torch", "ct2")
QUANTIZATIONS = ("int8", "int8_float32", "float32")
WEIGHTS = "model.bin"
# GenerationConfig options CTranslate2 can honour, and what each becomes in `translate_batch`.
OPTIONS = {
    "max_new_tokens": "max_decoding_length",
    "min_new_tokens": "min_decoding_length",
    "num_beams": "beam_size",
    "no_repeat_ngram_size": "no_repeat_ngram_size",
    "length_penalty": "length_penalty",
    "repetition_penalty": "repetition_penalty",
    "do_sample": None,  # sampling: top_k, top_p, temperature below
    "top_k": "sampling_topk",
    "top_p": "sampling_topp",
    "temperature": "sampling_temperature",
}


def _ctranslate2() -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise DialogtuneError("CTranslate2 is not installed; pip install 'dialogtune[ct2]'") from None
    return ctranslate2


def is_export(run: runs.RunFolder) -> bool:
    """Whether a run folder holds a CTranslate2 model (written by `export`) rather than PyTorch weights."""
    return run.metadata.get("backend") == "ct2"


# ----------------------------------------------------------------------------------------------- export


def _converter(source: str) -> Any:
    """CTranslate2's own Transformers converter, loading the model through dialogtune's weight policy."""
    from ctranslate2.converters import TransformersConverter

    from dialogtune.modeling import load_base

    class Converter(TransformersConverter):
        def load_model(self, model_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            model = load_base(model_name_or_path)  # safetensors only, unless pickle is allowed
            config = model.config
            # transformers 5 reports tie_word_embeddings=True for every T5 and keeps the real convention in
            # scale_decoder_outputs (False for FLAN-T5's own lm_head). CTranslate2's T5 loader reads the former
            # to scale the decoder's output by d_model**-0.5, which would change every logit of FLAN-T5.
            config.tie_word_embeddings = bool(getattr(config, "scale_decoder_outputs", config.tie_word_embeddings))
            return model

    return Converter(source)


def convert(model_folder: str | Path, output: str | Path, quantization: str) -> float:
    """Convert a `save_pretrained` model folder (with its tokenizer) into `output`, replacing it; returns seconds.

    `export` wraps this for run folders; bench/ calls it on stand-in models.
    """
    if quantization not in QUANTIZATIONS:
        raise DialogtuneError(f"--quantization is {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")
    _ctranslate2()
    started = time.perf_counter()
    try:
        _converter(str(model_folder)).convert(str(output), quantization=quantization, force=True)
    except (ValueError, RuntimeError, NotImplementedError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DialogtuneError(f"CTranslate2 could not convert {model_folder} ({reason})") from None
    return time.perf_counter() - started


def _check_room(output: Path, overwrite: bool) -> None:
    """Refuse an `output` the export may not replace: only an earlier run folder, and only with overwrite."""
    runs.check_output(output, overwrite)
    if output.is_dir() and any(output.iterdir()):
        if not runs.is_run(output):
            raise DialogtuneError(f"output {output} is a folder with other files in it; choose a new or empty folder")
        if not overwrite:
            raise DialogtuneError(f"{output} already holds a run; choose another --output or pass --overwrite")


def export(folder: str | Path, output: str | Path, quantization: str = "int8", overwrite: bool = False) -> runs.RunFolder:
    """Convert a full or merged run's model to a CTranslate2 run folder with `quantization` weights.

    Conversion goes to a temporary folder beside `output`, which is put in place only once complete.
    """
    from dialogtune.modeling import load_tokenizer

    if quantization not in QUANTIZATIONS:
        raise DialogtuneError(f"--quantization is {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")
    run = runs.read_run(folder)
    if is_export(run):
        raise DialogtuneError(f"{folder} is already a CTranslate2 export; export its source run {run.metadata.get('source_run')}")
    if run.method == "lora":
        raise DialogtuneError(f"CTranslate2 has no LoRA support; merge it first: dialogtune merge {folder} --output DIR")
    if run.method != "full":
        raise DialogtuneError(f"{folder} is a `{run.method}` run with no weights of its own; export a full run or a merged LoRA run")
    output = Path(output)
    if output.resolve() == run.folder.resolve():
        raise DialogtuneError(f"--output {output} is the run folder itself; choose another folder for the export")
    _check_room(output, overwrite)
    if not (run.folder / "config.json").is_file():
        raise DialogtuneError(f"{folder} holds no saved model (no config.json); train it to the end first")
    tokenizer = load_tokenizer(str(run.folder))  # fails, clearly, before any conversion work
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.ct2-"))
    try:
        seconds = convert(run.folder, staging, quantization)
        tokenizer.save_pretrained(str(staging))
        if output.exists():  # an earlier export, or an empty folder: _check_room allowed it
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    config = run.config if run.config.method == "full" else dataclasses.replace(run.config, method="full")
    exported = runs.RunFolder.create(output, config, overwrite=True)
    run.prompt.save(output / runs.PROMPT)  # the run's own prompt file, whatever its config says
    exported = dataclasses.replace(exported, prompt=run.prompt)
    source = run.metadata
    exported.update(
        runs.Status.TRAINED,
        backend="ct2", quantization=quantization, source_run=str(run.folder.resolve()), ctranslate2=_ctranslate2().__version__,
        model=run.base_model, conversion_seconds=round(seconds, 3),
        size_bytes=(output / WEIGHTS).stat().st_size,
        **{k: source[k] for k in (*runs.TRAINING_FIELDS, "total_params", "merged_from") if k in source},
    )
    return exported


# ----------------------------------------------------------------------------------------------- backend


def load_translator(folder: str | Path, compute_type: str, workers: int | None = None) -> Any:
    """A CPU translator for the converted model in `folder` that decodes `workers` batches (or parts of one batch)
    at once, one thread each; default: torch's thread count (the cores, or OMP_NUM_THREADS).

    Why not one batch on all threads: on 2 cores at the flan-t5-small shape, int8 decoding ran 2.1x faster as two
    one-thread workers each taking half of every batch than as one two-thread worker, with identical outputs; a
    decoding step's matmuls are too small to split well across threads (BENCHMARKS.md, evaluation engines).
    """
    import torch

    threads = torch.get_num_threads()
    workers = workers or threads
    try:
        return _ctranslate2().Translator(str(folder), device="cpu", compute_type=compute_type, intra_threads=1,
                                         inter_threads=workers)
    finally:
        # CTranslate2 and torch share the OpenMP runtime, and creating a translator sets the calling thread's
        # OpenMP thread count to intra_threads: without this, every later torch op in the process runs on 1 thread.
        torch.set_num_threads(threads)


def translate_options(generation: dict[str, Any]) -> dict[str, Any]:
    """`translate_batch` keyword arguments for dialogtune's generation settings; a clear error for the rest."""
    unsupported = sorted(set(generation) - set(OPTIONS))
    if unsupported:
        raise DialogtuneError(
            f"the CTranslate2 backend does not support generation option(s) {', '.join(f'`{k}`' for k in unsupported)}; "
            f"use {', '.join(OPTIONS)}, or --backend torch"
        )
    sample = bool(generation.get("do_sample", False))
    beams = int(generation.get("num_beams", 1))
    if sample and beams > 1:
        raise DialogtuneError("the CTranslate2 backend samples with num_beams 1 only; set num_beams 1 or do_sample false")
    options: dict[str, Any] = {"beam_size": beams, "min_decoding_length": 0, "max_input_length": 0}
    for key, value in generation.items():
        name = OPTIONS[key]
        if name is None or (name.startswith("sampling_") and not sample):
            continue  # GenerationConfig ignores top_k/top_p/temperature when not sampling; so do we
        options[name] = value
    if sample:
        # GenerationConfig's sampling defaults, where the settings leave them out.
        options = {"sampling_topk": 50, "sampling_topp": 1.0, "sampling_temperature": 1.0, **options}
    return options


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass
class CT2Summarizer:
    """A CTranslate2 model with its tokenizer and settings: `inference.Summarizer`'s interface, without adapters.

    Prompts are fitted to `settings.max_source_length` and batched longest first exactly as the torch path
    does; the translator is fed the Hugging Face tokenizer's tokens.
    """

    translator: Any
    tokenizer: Any
    settings: Settings
    fingerprint: str  # of the weights file: equal fingerprints mean the same converted model
    adapters: dict[str, Settings] = field(default_factory=dict)

    @classmethod
    def from_folder(cls, folder: str | Path, workers: int | None = None) -> "CT2Summarizer":
        """Load an export written by `export` (`workers`: see `load_translator`)."""
        from dialogtune.modeling import load_tokenizer

        run = runs.read_run(folder)
        if not is_export(run):
            raise DialogtuneError(f"{folder} is not a CTranslate2 export; convert it first: dialogtune export {folder} --format ct2 --output DIR")
        weights = run.folder / WEIGHTS
        if not weights.is_file():
            raise DialogtuneError(f"{folder} has no {WEIGHTS}; export the run again")
        try:
            translator = load_translator(run.folder, run.metadata.get("quantization", "default"), workers)
        except (RuntimeError, ValueError) as err:
            raise DialogtuneError(f"CTranslate2 could not load {folder} ({str(err).strip().splitlines()[0]})") from None
        return cls(translator, load_tokenizer(str(run.folder)), Settings.of(run.config, run.prompt), _hash(weights))

    def _check(self, adapter: str | None) -> None:
        if adapter not in (None, BASE):
            raise DialogtuneError(f"unknown adapter {adapter!r}; a CTranslate2 model has no adapters (merge them before export)")

    def prompts(self, dialogues: list[str], adapter: str | None = None) -> list[str]:
        self._check(adapter)
        return [self.settings.template.format(d) for d in dialogues]

    def generation(self, adapter: str | None = None, **generation: Any) -> dict[str, Any]:
        """The generation settings a call with these overrides decodes with."""
        self._check(adapter)
        return {**self.settings.generation, **generation}

    def generate(
        self,
        prompts: list[str],
        adapter: str | None = None,
        progress: bool = False,
        done: dict[int, str] | None = None,
        on_batch: Callable[[list[int], list[str]], None] | None = None,
        **generation: Any,
    ) -> list[str]:
        """Summaries for ready-made prompts, in order; `done` and `on_batch` as in `inference.generate`."""
        settings = self.generation(adapter, **generation)
        generation_config(settings, self.tokenizer)  # the same validation, and errors, as the torch path
        options = translate_options(settings)
        template, tokenizer = self.settings.template, self.tokenizer
        sources = [template.fit(prompt, tokenizer, self.settings.max_source_length)[0] for prompt in prompts]

        def decode(batch: list[int]) -> list[str]:
            tokens = [tokenizer.convert_ids_to_tokens(sources[i]) for i in batch]
            # Split over the translator's workers, which decode the parts at once (load_translator).
            workers = getattr(self.translator, "num_translators", 1)
            results = self.translator.translate_batch(tokens, max_batch_size=math.ceil(len(tokens) / workers), **options)
            ids = [tokenizer.convert_tokens_to_ids(r.hypotheses[0]) for r in results]
            return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]

        return in_batches([len(ids) for ids in sources], self.settings.batch_size, decode, progress, done, on_batch)

    def summarize(self, dialogues: list[str], adapter: str | None = None, **generation: Any) -> list[str]:
        """One summary per dialogue, in order."""
        return self.generate(self.prompts(dialogues, adapter), adapter, **generation)


def summarizer_for(run: runs.RunFolder, backend: str | None = None) -> Summarizer | CT2Summarizer:
    """The summarizer for a run folder: `backend` if given, else the folder's own (ct2 for an export)."""
    exported = is_export(run)
    backend = backend or ("ct2" if exported else "torch")
    if backend not in BACKENDS:
        raise DialogtuneError(f"--backend is {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "ct2":
        if not exported:
            raise DialogtuneError(
                f"{run.folder} holds a PyTorch model, not a CTranslate2 one; convert it first: "
                f"dialogtune export {run.folder} --format ct2 --output DIR"
            )
        return CT2Summarizer.from_folder(run.folder)
    if exported:
        raise DialogtuneError(
            f"{run.folder} is a CTranslate2 export with no PyTorch weights; use --backend ct2, "
            f"or the source run {run.metadata.get('source_run')} for torch"
        )
    return Summarizer.from_run(run)
