"""Summarizer: a model loaded once that turns dialogues into summaries.

It is loaded from a base model, from a run folder (with that run's prompt and generation settings),
or from a base plus several LoRA adapters served side by side. `evaluate`, `summarize`, and later the
server and the review page all go through it. Generation is batched, longest prompts first, so each
batch pads little, and the order is restored after.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from dialogtune.config import Config
from dialogtune.errors import DialogtuneError
from dialogtune.prompts import PromptTemplate

log = logging.getLogger(__name__)

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


def decoder_start(model: Any) -> int | None:
    """The token the model's decoder was trained to start from: T5 starts from pad, BART from </s>."""
    for config in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        start = getattr(config, "decoder_start_token_id", None)
        if start is not None:
            return start
    return None


def generation_config(settings: dict[str, Any], tokenizer: Any, model: Any = None) -> GenerationConfig:
    """Our settings on top of the special tokens; the library's 20-token default is never used.

    The decoder starts from `model`'s own start token; without a model, from the pad token (T5's).
    """
    start = decoder_start(model) if model is not None else None
    try:
        config = GenerationConfig(
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id if start is None else start,
            **settings,
        )
        config.validate(strict=True)
    except (TypeError, ValueError) as err:
        raise DialogtuneError(f"invalid generation options: {str(err).strip().splitlines()[0]}") from None
    return config


def batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches, longest first; the same lengths always give the same batches."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    config: GenerationConfig,
    batch_size: int = 16,
    max_source_length: int = 512,
    progress: bool = True,
    done: dict[int, str] | None = None,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
    template: PromptTemplate | None = None,
    **generate_kwargs: Any,
) -> list[str]:
    """Summaries for `prompts`, in the same order.

    A prompt over `max_source_length` tokens loses the end of its dialogue, never `template`'s
    instruction or cue (the default template if None); see `PromptTemplate.fit`.

    `done` holds outputs of an interrupted earlier call (by prompt index); batches it fully covers are
    skipped, so the remaining batches are exactly those an uninterrupted call would run. `on_batch`
    is told each finished batch, e.g. to save progress. `generate_kwargs` go to `model.generate`
    (e.g. peft's `adapter_names`, given per prompt and split with the batches here).
    """
    model.eval()
    template = template or PromptTemplate()
    sources = [template.fit(prompt, tokenizer, max_source_length)[0] for prompt in prompts]
    device = next(model.parameters()).device
    adapter_names = generate_kwargs.pop("adapter_names", None)

    def decode(batch: list[int]) -> list[str]:
        kwargs = dict(generate_kwargs)
        encoded = tokenizer.pad({"input_ids": [sources[i] for i in batch]}, return_tensors="pt").to(device)
        if adapter_names is not None:
            kwargs["adapter_names"] = [adapter_names[i] for i in batch]
            # peft repeats each row's adapter name per beam only when `num_beams` is a keyword argument; it
            # does not look inside generation_config, and beam search then fails with a length mismatch.
            if config.num_beams > 1:
                kwargs["num_beams"] = config.num_beams
        # Keyword arguments only: PeftModel.generate rejects positional ones.
        generated = model.generate(
            input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], generation_config=config, **kwargs,
        )
        return [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]

    return in_batches([len(ids) for ids in sources], batch_size, decode, progress, done, on_batch)


def in_batches(
    lengths: list[int],
    batch_size: int,
    decode: Callable[[list[int]], list[str]],
    progress: bool = False,
    done: dict[int, str] | None = None,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
) -> list[str]:
    """`decode(batch)` over `batches(lengths, batch_size)`, the outputs back in prompt order (any engine's loop).

    Batches that `done` (outputs by prompt index) fully covers are skipped, so the remaining batches are exactly
    those an uninterrupted call would run; `on_batch` is told each finished batch (prompt indices, texts).
    """
    done = done or {}
    outputs = [done.get(i, "") for i in range(len(lengths))]
    bar = tqdm(total=len(lengths), desc="generating", unit="summary", disable=not progress)
    for batch in batches(lengths, batch_size):
        if not all(i in done for i in batch):
            texts = decode(batch)
            for i, text in zip(batch, texts, strict=True):
                outputs[i] = text
            if on_batch is not None:
                on_batch(batch, texts)
        bar.update(len(batch))
    bar.close()
    return outputs


@dataclass(frozen=True)
class Settings:
    """How one model (or adapter) is prompted and decoded: a run's own, or the defaults."""

    template: PromptTemplate
    generation: dict[str, Any]
    max_source_length: int
    batch_size: int

    @classmethod
    def of(cls, config: Config, template: PromptTemplate | None = None) -> "Settings":
        return cls(
            template or PromptTemplate(config.prompt.template),
            config.generation_args(),
            config.data.max_source_length,
            config.evaluation.batch_size,
        )


@dataclass
class Summarizer:
    """A loaded model, its tokenizer and settings; `adapters` maps adapter names to their own settings."""

    model: Any
    tokenizer: Any
    settings: Settings
    adapters: dict[str, Settings] = field(default_factory=dict)
    base: str | None = None  # the base model's name, where adapters may be added (from_base, from_adapters)

    @classmethod
    def from_base(cls, name: str, config: Config | None = None) -> "Summarizer":
        """The untouched base model, freshly loaded, with `config`'s settings (defaults if None)."""
        from dialogtune.modeling import load_base, load_tokenizer

        config = config or Config(model=name)
        return cls(load_base(name), load_tokenizer(name), Settings.of(config), base=name)

    @classmethod
    def from_run(cls, run: str | Path | Any, merge: bool | None = None) -> "Summarizer":
        """The model a run produced, loaded fresh from disk (the evaluated model is the one saved),
        with the run's own prompt and generation settings."""
        from dialogtune.modeling import load_adapter, load_base, load_tokenizer
        from dialogtune.runs import read_run

        run = read_run(run) if isinstance(run, (str, Path)) else run
        settings = Settings.of(run.config, run.prompt)
        if run.method == "full":
            return cls(load_base(str(run.folder)), load_tokenizer(str(run.folder)), settings)
        model = load_base(run.base_model)
        if run.method == "lora":
            merge = run.config.evaluation.merge_lora if merge is None else merge
            shapes = run.metadata.get("base_shapes")
            model = load_adapter(model, run.folder, merge=merge, trained_on=shapes, base_name=run.base_model)
        return cls(model, load_tokenizer(run.base_model), settings)

    @classmethod
    def from_adapters(cls, base: str, runs: Mapping[str, str | Path], config: Config | None = None) -> "Summarizer":
        """One base with several LoRA runs' adapters on it, unmerged, each chosen by name per call.

        Every adapter keeps its run's prompt and generation settings; each must have been trained on `base`.
        """
        from dialogtune.modeling import load_base, load_tokenizer

        if not runs:
            raise DialogtuneError("no adapters given; pass at least one LoRA run folder")
        summarizer = cls(load_base(base), load_tokenizer(base), Settings.of(config or Config(model=base)), base=base)
        for name, folder in runs.items():
            summarizer.add_adapter(name, folder)
        return summarizer

    def add_adapter(self, name: str, run: str | Path) -> None:
        """Load a LoRA run (trained on this summarizer's bare base) beside the other adapters as `name`,
        unmerged, with the run's own settings. Not thread-safe: no generation may run meanwhile."""
        from dialogtune.modeling import load_adapter
        from dialogtune.runs import read_run

        # peft selects by name and treats `lora_` inside a name as part of its own parameter names.
        if name == BASE or "lora_" in name or not name.strip():
            raise DialogtuneError(f"adapter name {name!r} is not allowed; use a name without `lora_` other than {BASE}")
        if name in self.adapters:
            raise DialogtuneError(f"adapter {name!r} is already loaded; remove it first or choose another name")
        if self.base is None:
            raise DialogtuneError("adapters go on a bare base model; load it with Summarizer.from_base or from_adapters")
        folder = read_run(run)
        if folder.method != "lora":
            raise DialogtuneError(f"{run} is a `{folder.method}` run, not a LoRA adapter; pass LoRA run folders")
        trained_on = folder.metadata.get("base_shapes")  # recorded since issue 13: shapes decide, not the name
        if folder.base_model != self.base and not trained_on:
            raise DialogtuneError(
                f"adapter {name!r} ({run}) was trained on {folder.base_model}, not {self.base}; serve it with its own base"
            )
        self.model = load_adapter(
            self.model, folder.folder, merge=False, adapter_name=name, trained_on=trained_on, base_name=self.base
        )
        self.adapters[name] = Settings.of(folder.config, folder.prompt)

    def remove_adapter(self, name: str) -> None:
        """Unload the adapter `name`; without adapters left, the model is the bare base again."""
        self._settings(name)  # unknown names: the same error as everywhere
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was active which is now deleted")
            if len(self.adapters) == 1:
                # peft cannot delete the last adapter and keep working, so unwrap the base instead.
                self.model = self.model.unload()
            else:
                self.model.delete_adapter(name)
        del self.adapters[name]

    def _settings(self, adapter: str | None) -> Settings:
        if adapter is None or adapter == BASE:
            return self.settings
        if adapter not in self.adapters:
            known = ", ".join(self.adapters) or "none loaded"
            raise DialogtuneError(f"unknown adapter {adapter!r}; the loaded adapters are: {known}")
        return self.adapters[adapter]

    def prompts(self, dialogues: list[str], adapter: str | None = None) -> list[str]:
        template = self._settings(adapter).template
        return [template.format(d) for d in dialogues]

    def generate(
        self,
        prompts: list[str],
        adapter: str | None = None,
        progress: bool = False,
        done: dict[int, str] | None = None,
        on_batch: Callable[[list[int], list[str]], None] | None = None,
        template: PromptTemplate | None = None,
        **generation: Any,
    ) -> list[str]:
        """Summaries for ready-made prompts (e.g. few-shot ones), with the adapter's settings plus `generation`;
        `template`: the prompts' own if not the adapter's (another task's), so truncation keeps its cue."""
        settings = self._settings(adapter)
        config = generation_config(self.generation(adapter, **generation), self.tokenizer, self.model)
        extra = {"adapter_names": [adapter or BASE] * len(prompts)} if self.adapters else {}
        return generate(
            self.model, self.tokenizer, prompts, config, settings.batch_size, settings.max_source_length,
            progress, done=done, on_batch=on_batch, template=template or settings.template, **extra,
        )

    def generation(self, adapter: str | None = None, **generation: Any) -> dict[str, Any]:
        """The generation settings a call with this adapter and these overrides decodes with."""
        return {**self._settings(adapter).generation, **generation}

    def summarize(self, dialogues: list[str], adapter: str | None = None, **generation: Any) -> list[str]:
        """One summary per dialogue, in order; `adapter` picks a loaded adapter (None: the base or the run)."""
        return self.generate(self.prompts(dialogues, adapter), adapter, **generation)

    def summarize_mixed(
        self, dialogues: list[str], adapters: list[str | None], overrides: list[dict[str, Any]] | None = None,
        batch_size: int | None = None, **generation: Any,
    ) -> list[str]:
        """One summary per dialogue; row i with `adapters[i]` (None or BASE: the base), its template and
        settings, and `generation` then `overrides[i]` on top.

        Rows that decode alike (same generation settings, source length and template) share generate
        calls of up to `batch_size` rows (all of them if None), whatever their adapter: peft applies each
        row's adapter by name (`adapter_names`). Rows whose settings differ go to separate calls.
        """
        if len(adapters) != len(dialogues) or len(overrides or dialogues) != len(dialogues):
            raise ValueError("one adapter (and one overrides dict, if given) per dialogue")
        groups: dict[tuple[str, int, PromptTemplate], list[int]] = {}
        decoding = {}  # the same key, the settings themselves
        for i, adapter in enumerate(adapters):
            settings = self._settings(adapter)
            options = self.generation(adapter, **{**generation, **(overrides[i] if overrides else {})})
            key = (json.dumps(options, sort_keys=True, default=repr), settings.max_source_length, settings.template)
            groups.setdefault(key, []).append(i)
            decoding[key] = options
        outputs: dict[int, str] = {}
        for key, rows in groups.items():
            _, max_source_length, template = key
            config = generation_config(decoding[key], self.tokenizer, self.model)
            extra = {"adapter_names": [adapters[i] or BASE for i in rows]} if self.adapters else {}
            texts = generate(self.model, self.tokenizer, [template.format(dialogues[i]) for i in rows], config,
                             batch_size or len(rows), max_source_length, progress=False, template=template, **extra)
            outputs.update(zip(rows, texts, strict=True))
        return [outputs[i] for i in range(len(dialogues))]
