"""`dialogtune merge`: fold a LoRA run's adapter into its base and check that nothing but rounding changed.

    dialogtune merge runs/lora --output runs/lora-merged [--probes 8]

The output is a plain `save_pretrained` folder (safetensors, tokenizer) that is also a `full` run
folder (config, prompt, metadata, `merge.json`), so `evaluate`, `summarize --run`,
`Summarizer.from_run` and `export` take it as they take any full run.

Verification, on probe dialogues from the run's own data: plain greedy outputs of the unmerged
adapter (computed first, before the merge changes the base in place) and of the merged model as
reloaded from disk must be token for token identical; and teacher-forced on the unmerged outputs,
the largest logit difference must stay within RELATIVE_TOLERANCE of the largest logit.

Why 1e-4: merging computes (W + s*B*A) x where the adapter computed W x + s*B*(A x), the same sum in
another order, so in fp32 only rounding differs. Measured (targets q,v or every linear layer, B drawn
at 0.01 to 0.1, or trained a few steps): 2e-7 to 5e-6 of the largest logit, on the tests' tiny T5, the
bundled tiny model and a model of flan-t5-small's shape at a realistic init; the adapters themselves
moved logits by 1e-3 to 2e-1 of it. So 1e-4 leaves 20x headroom over rounding and still catches a merge
that lost or mis-scaled a layer. Only an unrealistic case exceeded it: flan-t5-small's shape at random
init (saturated attention amplifies rounding) with a full-size random B reached 1.3e-3, a model nobody
merges. `adapter_effect` records how far the adapter moves the logits, so a reader sees
when an (e.g. untrained) adapter is too small for the comparison to mean much.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from dialogtune import runs
from dialogtune.config import DataConfig
from dialogtune.data import load_split
from dialogtune.errors import DialogtuneError
from dialogtune.inference import generation_config
from dialogtune.modeling import (
    base_shapes, load_adapter, load_base, load_tokenizer, merge_adapter, parameter_counts, size_on_disk,
)
from dialogtune.runs import RunFolder, Status

log = logging.getLogger(__name__)

MERGE_FILE = "merge.json"
PROBES = 8
RELATIVE_TOLERANCE = 1e-4  # of the largest logit; see the module docstring
BUNDLED_CORPUS = "builtin:dialogs"


def merge_run(run_folder: str | Path, output: str | Path, probes: int = PROBES, overwrite: bool = False) -> dict[str, Any]:
    """Merge the LoRA run in `run_folder` into `output`, verify it, and return the figures (as in merge.json).

    `output` must be new, empty, or an earlier merge of the same run (replaced); anything else needs
    `overwrite`. Nothing appears at `output` unless the merged model passed verification.
    """
    run = runs.read_run(run_folder)
    if run.method != "lora":
        raise DialogtuneError(
            f"{run.folder} is a `{run.method}` run, not a LoRA adapter; merge takes LoRA run folders "
            f"(a full run already is a plain model: evaluate or export it as it is)"
        )
    if probes <= 0:
        raise DialogtuneError(f"--probes is {probes}; use 1 or more probe dialogues")
    output = Path(output)
    _check_output(run, output, overwrite)
    ids, dialogues, source = probe_dialogues(run, probes)
    tokenizer = load_tokenizer(run.base_model)
    shapes = run.metadata.get("base_shapes")
    model = load_adapter(load_base(run.base_model), run.folder, merge=False, trained_on=shapes, base_name=run.base_model)
    limit = run.config.data.max_source_length
    sources = [run.prompt.fit(run.prompt.format(d), tokenizer, limit)[0] for d in dialogues]
    inputs = tokenizer.pad({"input_ids": sources}, return_tensors="pt")
    # Plain greedy with the run's length limit: the check is about the model, not the decoding options.
    greedy = {"max_new_tokens": run.config.generation_args().get("max_new_tokens", 200), "num_beams": 1, "do_sample": False}
    config = generation_config(greedy, tokenizer, model)
    reference = _reference(model, inputs, config)  # before merge_and_unload changes the base in place
    merged = merge_adapter(model, run.folder)
    staging = _fresh(output, "merging")
    try:
        folder = RunFolder.create(staging, dataclasses.replace(run.config, method="full", output=str(output)))
        run.prompt.save(staging / runs.PROMPT)  # the run's own prompt file, as it was
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        del merged, model
        reloaded = load_base(str(staging)).eval()  # what was written, not what was in memory
        figures = _compare(reloaded, inputs, config, reference)
        figures.update(probe_source=source, probe_ids=ids, generation=greedy)
        _record(run, folder, reloaded, figures)
        if not figures["passed"]:
            raise DialogtuneError(
                f"merging {run.folder} changed the model: {describe(figures)}; nothing was written to {output}"
            )
        _move_into_place(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return figures


def _record(run: RunFolder, folder: RunFolder, merged: Any, figures: dict[str, Any]) -> None:
    """merge.json, then the metadata; `trained` status only for a merge that passed."""
    merged_from = {
        "run": str(run.folder.resolve()),
        "name": run.name,
        "base_model": run.base_model,
        "base_shapes": run.metadata.get("base_shapes"),
        "adapter_sha256": _sha256(run.folder / "adapter_model.safetensors"),
        "lora": {k: run.config.lora_args().get(k) for k in ("r", "lora_alpha", "target_modules")},
    }
    runs.write_json(folder.folder / MERGE_FILE, {"merged_from": merged_from, **figures})
    if not figures["passed"]:
        return
    _, total = parameter_counts(merged)
    carried = {k: run.metadata[k] for k in runs.TRAINING_FIELDS if k in run.metadata}
    folder.update(
        Status.TRAINED, **carried, name=Path(folder.config.output).name, merged=runs.now(), merged_from=merged_from,
        merge=_summary(figures), total_params=total, size_bytes=size_on_disk(folder.folder, "full"),
        base_shapes=base_shapes(merged, run.base_model),
    )


def probe_dialogues(run: RunFolder, n: int) -> tuple[list[str], list[str], str]:
    """(ids, dialogues, where they came from): the run's evaluation split, else its saved predictions,
    else the bundled corpus, each fallback announced with the reason."""
    config = run.config
    split = config.evaluation.split
    try:
        records = load_split(config.data, split, limit=n, require_references=False)
        return [r["id"] for r in records], [r["dialogue"] for r in records], f"{config.data.dataset} ({split} split)"
    except DialogtuneError as err:
        reason = str(err)
    saved = [p for p in sorted(run.folder.glob("predictions*.jsonl")) if not p.name.endswith(".partial.jsonl")]
    rows = [r for r in (runs.read_jsonl(saved[0]) if saved else []) if r.get("dialogue")][:n]
    if rows:
        log.warning("the run's data could not be read (%s); probing with the dialogues in %s instead", reason, saved[0])
        return [str(r.get("id")) for r in rows], [r["dialogue"] for r in rows], str(saved[0])
    log.warning("the run's data could not be read (%s) and it has no predictions; probing with %s", reason, BUNDLED_CORPUS)
    records = load_split(DataConfig(dataset=BUNDLED_CORPUS), "test", limit=n, require_references=False)
    return [r["id"] for r in records], [r["dialogue"] for r in records], f"{BUNDLED_CORPUS} (test split)"


@torch.inference_mode()
def _reference(model: Any, inputs: Any, config: Any) -> dict[str, torch.Tensor]:
    """The unmerged adapter's greedy tokens and its teacher-forced logits on them, plus how far the
    adapter moves those logits from the bare base (if not beyond the tolerance, the check proves little)."""
    sequences = _greedy(model, inputs, config)
    logits, mask = _forced(model, inputs, sequences, config.eos_token_id)
    with model.disable_adapter():
        bare, _ = _forced(model, inputs, sequences, config.eos_token_id)
    return {"sequences": sequences, "logits": logits, "effect": (logits - bare).abs().max(), "mask": mask}


def _greedy(model: Any, inputs: Any, config: Any) -> torch.Tensor:
    return model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], generation_config=config)


def _forced(model: Any, inputs: Any, sequences: torch.Tensor, eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at every step of `sequences` (decoder fed the sequence itself), kept up to each row's first eos."""
    targets = sequences[:, 1:]
    is_eos = targets == eos
    mask = (is_eos.long().cumsum(1) - is_eos.long()) == 0  # up to and including the first eos
    encoder = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    logits = model(**encoder, decoder_input_ids=sequences[:, :-1]).logits
    return logits[mask], mask


def _tokens(sequences: torch.Tensor, eos: int) -> list[list[int]]:
    rows = []
    for row in sequences.tolist():
        rows.append(row[: row.index(eos, 1) + 1] if eos in row[1:] else row)
    return rows


@torch.inference_mode()
def _compare(model: Any, inputs: Any, config: Any, reference: dict[str, torch.Tensor]) -> dict[str, Any]:
    """How the merged `model` compares with the unmerged reference: greedy tokens and logits."""
    eos = config.eos_token_id
    sequences = _greedy(model, inputs, config)
    mine, theirs = _tokens(sequences, eos), _tokens(reference["sequences"], eos)
    identical = sum(a == b for a, b in zip(mine, theirs, strict=True))
    logits, _ = _forced(model, inputs, reference["sequences"], eos)
    largest = float(reference["logits"].abs().max())
    difference = float((logits - reference["logits"]).abs().max())
    tolerance = RELATIVE_TOLERANCE * largest
    return {
        "probes": len(theirs),
        "greedy_identical": identical,
        "tokens_compared": int(reference["mask"].sum()),
        "max_abs_logit_diff": difference,
        "max_abs_logit": largest,
        "tolerance": tolerance,
        "tolerance_rule": f"{RELATIVE_TOLERANCE:g} x max |logit|, teacher-forced on the unmerged greedy outputs",
        "adapter_effect": float(reference["effect"]),
        "passed": identical == len(theirs) and difference <= tolerance,
    }


def describe(figures: dict[str, Any]) -> str:
    """One line with both figures, as `merge` prints them."""
    text = (
        f"greedy outputs identical on {figures['greedy_identical']} of {figures['probes']} probes; "
        f"max |logit difference| {figures['max_abs_logit_diff']:.2e} (tolerance {figures['tolerance']:.2e} = "
        f"{RELATIVE_TOLERANCE:g} x max |logit| {figures['max_abs_logit']:.3g}, over {figures['tokens_compared']} steps)"
    )
    if figures["adapter_effect"] <= figures["tolerance"]:
        text += f"; the adapter itself moves logits by only {figures['adapter_effect']:.2e}, so this check proves little"
    return text


def _summary(figures: dict[str, Any]) -> dict[str, Any]:
    keep = ("probes", "greedy_identical", "max_abs_logit_diff", "tolerance", "adapter_effect", "passed")
    return {k: figures[k] for k in keep}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_output(run: RunFolder, output: Path, overwrite: bool) -> None:
    """Refuse, before any model loads, an output that is (or holds) the run, a file, or a non-empty folder
    that is not an earlier merge of this run (unless `overwrite`)."""
    source, target = run.folder.resolve(), output.resolve()
    if target == source or target in source.parents:
        what = "the run folder" if target == source else "a folder holding the run"
        raise DialogtuneError(f"--output {output} is {what}; choose a new folder")
    if output.exists() and not output.is_dir():
        raise DialogtuneError(f"--output {output} is a file; choose a folder path")
    if not output.is_dir() or not any(output.iterdir()) or overwrite:
        return
    earlier = runs.read_run(output).metadata.get("merged_from", {}) if runs.is_run(output) else {}
    if earlier.get("run") != str(source):
        raise DialogtuneError(
            f"--output {output} is not empty and is not an earlier merge of {run.folder}; "
            f"choose a new folder, or pass --overwrite to replace what is there"
        )
    log.info("replacing the earlier merge of %s in %s", run.folder, output)


def _move_into_place(staging: Path, output: Path) -> None:
    """Swap the finished folder in by renames, so `output` is never half written."""
    if output.is_dir():
        old = _fresh(output, "old")
        output.rename(old / output.name)
        staging.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(output)


def _fresh(output: Path, purpose: str) -> Path:
    """An empty hidden folder beside `output` (made with mkdir, so the umask decides its permissions);
    one left by a killed earlier merge in this process id is cleared first."""
    folder = output.parent / f".{output.name}.{purpose}-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder

