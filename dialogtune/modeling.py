"""Load a base model (hub id or folder), turn it into a full or LoRA trainee, and count its cost.

Which weight files may be read at all is `dialogtune.weights`' decision. Over 300 lines: an adapter
(its fit to a base, loading, merging) is kept beside the base it goes on, so inference, training and
merging import every loader from this one place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from dialogtune.assets import resolve
from dialogtune.errors import DialogtuneError
from dialogtune.quantization import quantization_kwargs
from dialogtune.weights import check_adapter, local_weights, pickle_ok

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
# Any one of these lets AutoTokenizer build the real vocabulary; without them it silently builds an empty one.
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer.model", "vocab.json", "vocab.txt")


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Hide the libraries' deprecation notices (e.g. transformers' `is_gradient_checkpointing`) while
    wrapping, training and loading adapters: they are about the libraries' calls to each other and the
    user can do nothing about them. dialogtune reports through logging, which this leaves alone."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def _check_folder(name: str) -> None:
    path = Path(name)
    looks_like_path = path.exists() or name.startswith((".", "/", "~"))
    if not looks_like_path:
        return
    if not path.is_dir():
        raise DialogtuneError(f"model path {name} is not a folder; pass a model folder or a hub id")
    if not (path / "config.json").is_file():
        raise DialogtuneError(f"model folder {name} has no config.json; pass a folder written by save_pretrained")


def load_tokenizer(name: str) -> Any:
    """The tokenizer of a hub model or model folder."""
    from transformers import AutoTokenizer

    source = resolve(name, "model")
    _check_folder(source)
    path = Path(source)
    if path.is_dir() and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise DialogtuneError(
            f"model folder {name} has no tokenizer files ({' or '.join(TOKENIZER_FILES[:2])}); "
            f"save the tokenizer there too, e.g. tokenizer.save_pretrained('{name}')"
        )
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as err:
        reason = str(err).splitlines()[0]
        raise DialogtuneError(f"could not load a tokenizer from {name} ({reason}); the folder needs tokenizer.json or a hub id") from None


def _model_config(name: str) -> tuple[str, Any]:
    """(where the model lives, its config), refusing models that are not sequence-to-sequence."""
    from transformers import AutoConfig

    source = resolve(name, "model")
    _check_folder(source)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0]
        raise DialogtuneError(f"could not load model `{name}` ({reason}); check the id, your connection or the folder") from None
    if not getattr(config, "is_encoder_decoder", False):
        raise DialogtuneError(
            f"{name} is a `{config.model_type}` model, not a sequence-to-sequence one; pass a T5 / FLAN-T5 model"
        )
    return source, config


def load_base(
    name: str, dtype: torch.dtype = torch.float32, allow_pickle: bool | None = None, dropout: float | None = None,
    quantization: str | None = None,
) -> torch.nn.Module:
    """A fresh copy of the base model. Callers that train get their own copy, so the original stays pristine.

    Only safetensors weights are read unless pickle is allowed (`allow_pickle`, or the CLI's --allow-pickle).
    `dropout` replaces the checkpoint's dropout rate in every layer; the model's config keeps the
    checkpoint's value, so a saved model is not silently changed for whoever trains it next.
    `quantization` (4bit / 8bit) loads it through bitsandbytes on this process's GPU (dialogtune.quantization).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForSeq2SeqLM

    allow = pickle_ok(allow_pickle)
    source, config = _model_config(name)
    original_dropout = getattr(config, "dropout_rate", None)
    if dropout is not None:
        if original_dropout is None:
            raise DialogtuneError(
                f"`dropout` is set, but {name} (`{config.model_type}`) has no `dropout_rate` to set; "
                "leave `dropout` unset for this model"
            )
        config.dropout_rate = dropout  # read once, when the layers are built
    if Path(source).is_dir():
        use_safetensors: bool | None = not local_weights(Path(source), name, allow)
    else:
        use_safetensors = None if allow else True  # a hub repo: let transformers pick only when pickle is allowed
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(
            source, config=config, dtype=dtype, use_safetensors=use_safetensors, trust_remote_code=False,
            **quantization_kwargs(quantization),
        )
    except (OSError, ValueError, SafetensorError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = "" if allow else "; if it has only pickle weights (pytorch_model.bin) and you trust it, pass --allow-pickle"
        raise DialogtuneError(f"could not load model weights from {name} ({reason}){hint}") from None
    if dropout is not None:
        model.config.dropout_rate = original_dropout
    return model


def target_matches(model: torch.nn.Module, lora_args: dict[str, Any]) -> dict[str, int]:
    """How many modules each LoRA target matches, using peft's own matching rule."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    targets = lora_args.get("target_modules")
    if targets == "all-linear":
        # peft's own shorthand: every linear layer but the output layer (FLAN-T5: q, k, v, o, wi_0, wi_1, wo).
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        return {targets: sum(1 for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)}
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        raise DialogtuneError("`lora.target_modules` is empty; name modules such as q, v (FLAN-T5 attention)")
    names = [n for n, m in model.named_modules() if n]
    counts = {}
    for target in targets:
        probe = LoraConfig(target_modules=[target])
        counts[target] = sum(1 for n in names if check_target_module_exists(probe, n))
    return counts


def apply_lora(model: torch.nn.Module, lora_args: dict[str, Any]) -> torch.nn.Module:
    """Wrap `model` with a LoRA adapter after checking that every target matches something."""
    from peft import get_peft_model

    return get_peft_model(model, _lora_config(model, lora_args, report=True))


def check_lora(name: str, lora_args: dict[str, Any]) -> None:
    """Check LoRA settings against the model `name` built from its config alone (no weights are read),
    so a bad target fails before any data is loaded."""
    _lora_config(skeleton(name), lora_args)


def skeleton(name: str, lora_args: dict[str, Any] | None = None) -> torch.nn.Module:
    """The model `name` (with a LoRA adapter if `lora_args` are given) built from its config on the meta
    device: names, shapes and parameter counts, with nothing allocated and no weights read."""
    from peft import get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    _, config = _model_config(name)
    with torch.device("meta"), quiet_libraries():
        model = AutoModelForSeq2SeqLM.from_config(config)
        return get_peft_model(model, _lora_config(model, lora_args)) if lora_args is not None else model


def _lora_config(model: torch.nn.Module, lora_args: dict[str, Any], report: bool = False) -> Any:
    from peft import LoraConfig, TaskType

    counts = target_matches(model, lora_args)
    if report:
        log.info("LoRA targets matched: %s", ", ".join(f"{t}={c}" for t, c in counts.items()))
    missing = [t for t, c in counts.items() if c == 0]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise DialogtuneError(
            f"LoRA target {', '.join(map(repr, missing))} matches no module in this model; "
            f"its linear layers are named {', '.join(leaves)} (FLAN-T5's feed-forward is wi_0, wi_1, wo)"
        )
    try:
        return LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, **lora_args)
    except (TypeError, ValueError) as err:
        raise DialogtuneError(f"invalid LoRA settings: {str(err).splitlines()[0]}") from None


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, counting shared tensors once."""
    seen: dict[int, torch.nn.Parameter] = {}
    for p in model.parameters():
        seen.setdefault(id(p), p)
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    total = sum(p.numel() for p in seen.values())
    return trainable, total


def describe_parameters(model: torch.nn.Module) -> str:
    trainable, total = parameter_counts(model)
    return (
        f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%), "
        f"frozen: {total - trainable:,}"
    )


def fingerprint(model: torch.nn.Module) -> str:
    """A hash of every weight: equal fingerprints mean bit-identical models."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _base_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of the base's own weights, with peft's wrapping undone (`q.base_layer.weight` is
    `q.weight`; adapter weights are left out), so a base carrying adapters describes the bare base."""
    from peft import PeftModel

    model = model.get_base_model() if isinstance(model, PeftModel) else model
    for name, tensor in model.state_dict().items():
        if "lora_" not in name and ".modules_to_save." not in name:
            yield name.replace(".base_layer.", ".").replace(".original_module.", "."), tensor


def shape_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every base weight's name, shape and dtype (not its values): equal fingerprints mean an
    adapter trained on one base fits the other."""
    digest = hashlib.sha256()
    for name, tensor in sorted(_base_weights(model), key=lambda item: item[0]):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}\n".encode())
    return digest.hexdigest()[:16]


def base_shapes(model: torch.nn.Module, name: str) -> dict[str, Any]:
    """What a run records about its base: the id, the shape fingerprint and the sizes a message can quote."""
    config = model.config
    sizes = {key: getattr(config, key, None) for key in ("d_model", "num_layers", "num_decoder_layers", "vocab_size")}
    return {"model": name, "shape_fingerprint": shape_fingerprint(model), "model_type": config.model_type, **sizes}


def _describe(shapes: dict[str, Any]) -> str:
    layers = f"{shapes.get('num_layers')}+{shapes.get('num_decoder_layers')} layers"
    return f"{shapes.get('model_type')}, d_model {shapes.get('d_model')}, {layers}, vocab {shapes.get('vocab_size')}"


def check_base(model: torch.nn.Module, trained_on: dict[str, Any] | None, folder: Path, name: str) -> None:
    """Refuse a base whose shapes differ from those the adapter in `folder` was trained on (`trained_on`,
    the run's recorded `base_shapes`), naming both bases; runs recorded before fingerprints pass here."""
    if not trained_on or not trained_on.get("shape_fingerprint"):
        return
    given = base_shapes(model, name)
    recorded = trained_on.get("model", "its base")
    if given["shape_fingerprint"] != trained_on["shape_fingerprint"]:
        raise DialogtuneError(
            f"the adapter in {folder} was trained on {recorded} ({_describe(trained_on)}) and does not fit this base "
            f"model {name} ({_describe(given)}): size mismatch (shape fingerprint {trained_on['shape_fingerprint']} vs "
            f"{given['shape_fingerprint']}); use the base it was trained on (see adapter_config.json)"
        )
    if resolve(recorded, "model") != resolve(name, "model"):
        log.info("the adapter in %s was trained on %s; %s has the same shapes, so it is loaded there", folder, recorded, name)


def _adapter_base(folder: Path) -> str:
    """The base named in adapter_config.json (peft writes it there), for messages about old runs."""
    try:
        return json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path") or "?"
    except (OSError, ValueError, AttributeError):
        return "?"


def size_on_disk(folder: str | Path, method: str) -> int:
    """Bytes of the trained artefact: the adapter for LoRA, the weights for full fine-tuning."""
    folder = Path(folder)
    if method == "lora":
        files = [folder / f for f in ADAPTER_FILES]
    else:
        files = list(folder.glob("*.safetensors")) + [folder / "config.json"]
    return sum(f.stat().st_size for f in files if f.is_file())


def load_adapter(
    base: torch.nn.Module,
    folder: str | Path,
    merge: bool,
    allow_pickle: bool | None = None,
    adapter_name: str = "default",
    trained_on: dict[str, Any] | None = None,
    base_name: str | None = None,
) -> torch.nn.Module:
    """Put a saved adapter on a fresh base; merged, it generates the same text without the LoRA overhead.

    A `base` that already carries adapters (a PeftModel) gets this one beside them, under `adapter_name`.
    `trained_on` is the run's recorded `base_shapes`: a base of other shapes is refused before peft
    loads anything, naming both bases (`base_name`, default the base's own name_or_path).
    """
    from peft import PeftModel

    folder = Path(folder)
    check_adapter(folder, pickle_ok(allow_pickle))
    base_name = base_name or getattr(base.config, "name_or_path", None) or "the given base"
    check_base(base, trained_on, folder, base_name)
    try:
        with quiet_libraries():
            if isinstance(base, PeftModel):
                base.load_adapter(str(folder), adapter_name=adapter_name)
                model = base
            else:
                model = PeftModel.from_pretrained(base, str(folder), adapter_name=adapter_name)
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()] or [type(err).__name__]
        # torch puts the useful part ("size mismatch for ...") on the lines after its header.
        reason = next((line for line in lines if "size mismatch" in line or "Missing key" in line), lines[0])
        recorded = (trained_on or {}).get("model") or _adapter_base(folder)
        raise DialogtuneError(
            f"the adapter in {folder} was trained on {recorded} and does not fit this base model {base_name} "
            f"({reason[:200]}); use the base it was trained on (see adapter_config.json)"
        ) from None
    model.eval()
    return merge_adapter(model, folder) if merge else model


def merge_adapter(model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    """Fold the adapter into the base weights (in place) and drop the LoRA layers.

    peft's safe_merge checks every merged weight and refuses NaN or inf, which become one line naming
    the run instead of a model that silently generates garbage.
    """
    with warnings.catch_warnings():
        # FLAN-T5's lm_head is untied by design; peft's notice about it is noise here.
        warnings.filterwarnings("ignore", message="Input and output embeddings are no longer tied")
        try:
            return model.merge_and_unload(safe_merge=True)
        except ValueError as err:
            if "NaN" not in str(err):  # peft's wording for any non-finite merged weight (it checks isfinite)
                raise
            raise DialogtuneError(
                f"the adapter in {folder} has NaN or inf weights, so merging it would break the model; "
                f"re-train the run or restore its adapter_model.safetensors"
            ) from None
