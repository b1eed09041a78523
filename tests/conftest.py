"""Fixtures: tiny T5 models built and saved by the tests, and small local data sets. No network."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that reaches for the hub fails fast instead of hanging
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_CACHE", str(Path(__import__("tempfile").gettempdir()) / "dialogtune-test-datasets"))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BUNDLED_TOKENIZER = REPO / "dialogtune" / "assets" / "tiny-t5"
CORPUS = REPO / "dialogtune" / "assets" / "dialogs"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the real DialogSum/T5 material lives in ../shared beside the repo")
    return path


def _tokenizer_source() -> Path:
    if (BUNDLED_TOKENIZER / "tokenizer.json").is_file():
        return BUNDLED_TOKENIZER
    return shared_path("t5-tokenizer")


def build_tiny_t5(folder: Path, d_model: int = 32, seed: int = 0, untie: bool = True) -> Path:
    """A randomly initialised 2-layer T5 with FLAN-T5's gated-GELU FFN, saved with its tokenizer."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(_tokenizer_source())
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        num_heads=4,
        d_ff=2 * d_model,
        num_layers=2,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        initializer_factor=0.3,  # milder than 1.0 (huge logits), strong enough for every weight to get a gradient
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    if untie:
        # transformers 5 always ties T5's lm_head in code; FLAN-T5 checkpoints have their own.
        model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone() * 0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


def corpus_rows(split: str, n: int) -> list[dict]:
    with gzip.open(CORPUS / f"{split}.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(n), handle)]
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with train (48), validation (8) and test (8) dialogues from the bundled corpus."""
    folder = tmp_path_factory.mktemp("data")
    write_jsonl(folder / "train.jsonl", corpus_rows("train", 48))
    write_jsonl(folder / "validation.jsonl", corpus_rows("validation", 8))
    write_jsonl(folder / "test.jsonl", corpus_rows("test", 8))
    return folder


FAST_TRAINING = {
    "training.max_steps": 6,
    "training.per_device_train_batch_size": 8,
    "training.save_strategy": "no",
    "training.logging_steps": 2,
    "generation.max_new_tokens": 12,
    "evaluation.bootstrap_resamples": 200,
    "data.max_source_length": 256,
    "data.max_target_length": 64,
}


# Greedy decoding picks the top token at each step. Two code paths that compute the same function (padded
# or not, LoRA merged or not) round differently on different CPUs (AVX2 vs AVX-512 kernels), by about
# 1e-6 of a logit here; where the top two tokens are closer than that, either path may pick either one.
DECISIVE = 1e-3


def greedy_margin(model, tokenizer, prompt: str, max_new_tokens: int) -> float:
    """The smallest gap between the best and second-best logit over the greedy steps for `prompt`, alone."""
    import torch

    encoded = tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             output_scores=True, return_dict_in_generate=True)
    return min(float(step.topk(2).values[0, 0] - step.topk(2).values[0, 1]) for step in out.scores)


def assert_same_text_where_decisive(a: list[str], b: list[str], margins: list[float]) -> None:
    """Texts from two code paths agree wherever greedy decoding was decisive; that must be most of them."""
    decisive = [i for i, m in enumerate(margins) if m > DECISIVE]
    assert len(decisive) >= len(margins) / 2, f"too few decisive prompts for a meaningful check: {margins}"
    assert [a[i] for i in decisive] == [b[i] for i in decisive]


@pytest.fixture(autouse=True)
def _dialogtune_logging_as_configured():
    """The benchmark quietens the `dialogtune` logger in-process; later tests read its warnings with caplog."""
    yield
    import logging

    logging.getLogger("dialogtune").setLevel(logging.NOTSET)


def one_error(capsys: pytest.CaptureFixture, argv: list[str], *fragments: str) -> str:
    """The command fails as every bad input does: exit 2 and one `dialogtune: error:` line, no traceback, naming each
    of `fragments`; returns that line."""
    from dialogtune.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("dialogtune: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module's tests, the caller's count put back after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
