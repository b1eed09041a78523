"""Which weight files may be read: safetensors, or pickle only when the user allows it for this command.

Unpickling can run arbitrary code, so `pytorch_model.bin` / `adapter_model.bin` are refused unless
`--allow-pickle` is given; every safetensors file is opened first, so a damaged one is one clear error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from dialogtune.errors import DialogtuneError

log = logging.getLogger(__name__)

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
PICKLE_ADAPTER = "adapter_model.bin"
# Set by the CLI's --allow-pickle for the whole command, so every loader (base, run, adapter) obeys it
# without threading a flag through train, evaluate and summarize.
_ALLOW_PICKLE: ContextVar[bool] = ContextVar("dialogtune_allow_pickle", default=False)
PICKLE_WARNING = (
    "loading pickle weights %s because --allow-pickle was given: unpickling can execute arbitrary code, "
    "so only do this for files you trust (convert them with save_pretrained to get safetensors)"
)


@contextmanager
def pickle_allowed(allow: bool = True) -> Iterator[None]:
    """Within this block, loaders accept pickle weights (with a warning) when no safetensors exist."""
    token = _ALLOW_PICKLE.set(allow)
    try:
        yield
    finally:
        _ALLOW_PICKLE.reset(token)


def pickle_ok(allow_pickle: bool | None) -> bool:
    return _ALLOW_PICKLE.get() if allow_pickle is None else allow_pickle


def check_safetensors(path: Path, fix: str) -> None:
    """Read a safetensors header, so a damaged file is one clear error instead of a loader traceback."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DialogtuneError(f"{path} is not a valid safetensors file ({reason}); {fix}") from None


def local_weights(folder: Path, name: str, allow_pickle: bool) -> bool:
    """Check a model folder's weights before loading; True when only pickle weights exist (and are allowed)."""
    if any((folder / f).is_file() for f in SAFE_WEIGHTS):
        for weights in sorted(folder.glob("model*.safetensors")):
            check_safetensors(weights, "the weights are damaged; re-save the model or re-run training")
        return False
    pickles = [f for f in PICKLE_WEIGHTS if (folder / f).is_file()]
    if not pickles:
        raise DialogtuneError(
            f"model folder {name} has no weights ({SAFE_WEIGHTS[0]}); pass a folder written by save_pretrained"
        )
    if not allow_pickle:
        raise DialogtuneError(
            f"model folder {name} has only pickle weights ({pickles[0]}), which can run code when loaded; "
            f"convert them to safetensors with save_pretrained, or pass --allow-pickle if you trust the source"
        )
    log.warning(PICKLE_WARNING, folder / pickles[0])
    return True


def check_adapter(folder: Path, allow_pickle: bool) -> None:
    """Refuse a missing, damaged or (unless allowed) pickled adapter before peft reads it."""
    if not (folder / "adapter_config.json").is_file():
        raise DialogtuneError(f"{folder} has no adapter_config.json; pass a LoRA run folder written by `dialogtune train`")
    weights = folder / "adapter_model.safetensors"
    if weights.is_file():
        check_safetensors(weights, "the adapter is damaged; re-train the run or restore the file")
        return
    if not (folder / PICKLE_ADAPTER).is_file():
        raise DialogtuneError(f"{folder} has no adapter weights ({weights.name}); re-train the run or restore the file")
    if not allow_pickle:
        raise DialogtuneError(
            f"{folder} has only a pickle adapter ({PICKLE_ADAPTER}), which can run code when loaded; "
            f"re-save it as {weights.name} with save_pretrained, or pass --allow-pickle if you trust it"
        )
    log.warning(PICKLE_WARNING, folder / PICKLE_ADAPTER)
