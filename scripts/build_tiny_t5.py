"""Build dialogtune's tiny offline stand-in for FLAN-T5: tokenizer, then pre-training (never on summaries).

    python scripts/build_tiny_t5.py --out dialogtune/assets/tiny-t5

Runs single-threaded on purpose (about 25 minutes on one laptop core) and is seeded, so a rerun gives
a model of the same quality (bit-identical on the same torch build and CPU). Steps:

1. Train a SentencePiece-style Unigram tokenizer (T5 layout: ``<pad>``=0, ``</s>``=1, ``<unk>``=2,
   sentinels ``<extra_id_N>`` at the end) on the bundled corpus text and the instruction prompts.
2. Pre-train a small T5 with FLAN-T5's gated-GELU feed-forward and an untied ``lm_head`` on the
   *train-split dialogues only*, with a mix of tasks that teach it dialogues but not summaries:
   span corruption, topic naming, next-turn prediction, and slot questions/extraction that copy
   names, items, days and prices out of the dialogue. No summary is ever used as a target or input,
   so "Summarize the following conversation." is new to it, just as DialogSum is new to FLAN-T5.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling corpus generator, also when loaded by path
from build_corpus import Example, generate_examples  # noqa: E402

SUMMARY_PROMPT = "Summarize the following conversation.\n\n{dialogue}\n\nSummary: "  # tokenizer only
TOPIC_PROMPT = "What is the topic of the following conversation?\n\n{dialogue}\n\nTopic: "
NEXT_PROMPT = "What does #Person{who}# say next in the following conversation?\n\n{dialogue}\n\nNext: "
QUESTION_PROMPT = "Answer the question about the following conversation.\n\n{dialogue}\n\nQuestion: {question}\n\nAnswer: "
DETAILS_PROMPT = "List the details in the following conversation.\n\n{dialogue}\n\nDetails: "

# Slot key -> what the question calls it. Keys not listed are asked about by their own name.
SLOT_WORDS = {
    "name": "customer's name", "room": "room type", "nights": "number of nights", "ajob": "job", "n": "number of tickets",
    "thing": "item", "cls": "class", "flat": "home", "member": "membership", "back": "day to come back",
    "ago": "number of days since the purchase", "years": "number of years", "start": "start day", "way": "ticket type",
}
N_SENTINELS = 32

# Model shape: FLAN-T5's layout (gated-GELU, untied lm_head, relative attention), scaled down so one
# fine-tuning method fits in about a minute on two CPU cores.
MODEL = dict(d_model=128, d_kv=32, d_ff=384, num_layers=3, num_decoder_layers=3, num_heads=4,
             relative_attention_num_buckets=32, relative_attention_max_distance=128)


def train_tokenizer(texts: list[str], vocab_size: int, out: Path):
    """Train a T5-style Unigram tokenizer and save it where AutoTokenizer finds it.

    The `tokenizers` Unigram trainer splits even frequent words on a corpus this small ("▁fr", "o",
    "m"), so the pieces come from a BPE trainer and get Unigram scores from their frequency in the
    segmented corpus. Viterbi decoding then prefers whole words, as SentencePiece does.
    """
    from collections import Counter

    from transformers import T5Tokenizer

    specials = ["<pad>", "</s>", "<unk>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    # Same whitespace handling as T5: split on whitespace (newlines vanish), mark word starts with ▁.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    bpe.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=vocab_size - N_SENTINELS, special_tokens=specials, show_progress=False))
    # Drop pieces that glue punctuation to a word ("▁#Person1#:", "▁Friday."): "Friday" should be one
    # token whether a dialogue asks "Friday?" or a summary ends on "Friday.", and the turn tag
    # "#Person1#:" should share its token with the "#Person1#" that summaries talk about.
    glued = re.compile(r"[.,?!:;].|.[.,?!:;]")
    tags = ["▁#Person1#", "▁#Person2#"]
    pieces = tags + [p for p in bpe.get_vocab() if p not in specials and p not in tags and ("#" not in p or p == "#")
                     and not (glued.search(p.lstrip("▁")) and re.search(r"\w", p))]
    scores = {p: 0.0 for p in pieces}
    for _ in range(2):
        # Two EM-style rounds: segment the corpus with the current scores, re-score by frequency.
        unigram = Tokenizer(models.Unigram([(t, 0.0) for t in specials] + sorted(scores.items()), unk_id=2))
        unigram.pre_tokenizer = bpe.pre_tokenizer
        counts = Counter(piece for text in texts for piece in unigram.encode(text).tokens)
        total = sum(counts[p] + 1 for p in pieces)  # +1: pieces unused by the segmentation stay reachable
        scores = {p: math.log((counts[p] + 1) / total) for p in pieces}
    scored = sorted(scores.items(), key=lambda ps: (-ps[1], ps[0]))
    # T5 layout: specials first, sentinels last and in reverse, so <extra_id_0> is the highest id.
    vocab = [(t, 0.0) for t in specials] + scored
    vocab += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(N_SENTINELS))]
    tok = T5Tokenizer(vocab=vocab, extra_ids=N_SENTINELS, model_max_length=512)
    tok.save_pretrained(out)
    return tok


def slot_questions(ex: Example) -> list[tuple[str, str]]:
    """(question, answer) pairs for slots whose value is written verbatim in the dialogue."""
    pairs = []
    for key, value in ex.slots.items():
        if key in ("job",) or value.lower() not in ex.dialogue.lower():
            continue
        # Answer with the dialogue's own casing, so the task is pure copying.
        start = ex.dialogue.lower().index(value.lower())
        pairs.append((f"What is the {SLOT_WORDS.get(key, key)}?", ex.dialogue[start:start + len(value)]))
    return pairs


def span_corrupt(ids: list[int], sentinels: list[int], rng: random.Random, noise: float = 0.15, mean_span: float = 3.0):
    """T5 span corruption: replace ~15% of tokens, in spans of ~3, by sentinels; target lists the spans."""
    n = len(ids)
    n_noise = max(1, round(n * noise))
    n_spans = max(1, min(len(sentinels), round(n_noise / mean_span)))
    starts = sorted(rng.sample(range(n), n_spans))
    masked = [False] * n
    for s in starts:
        for j in range(s, min(n, s + max(1, round(rng.expovariate(1 / mean_span))))):
            masked[j] = True
    inp, tgt, k, prev = [], [], 0, False
    for tid, m in zip(ids, masked):
        if m and not prev:
            if k == len(sentinels):
                m = False  # out of sentinels: leave the rest visible
            else:
                inp.append(sentinels[k]); tgt.append(sentinels[k]); k += 1
        if m:
            tgt.append(tid)
        else:
            inp.append(tid)
        prev = m
    return inp, tgt


def make_example(ex: Example, tok, sentinels: list[int], rng: random.Random) -> tuple[list[int], list[int]]:
    """One pre-training (input ids, target ids) pair for a random task; never uses the summary."""
    r = rng.random()
    enc = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731
    eos = [tok.eos_token_id]
    if r < 0.35:
        inp, tgt = span_corrupt(enc(ex.dialogue), sentinels, rng)
        return inp + eos, tgt + eos
    if r < 0.45:
        return enc(TOPIC_PROMPT.format(dialogue=ex.dialogue)) + eos, enc(ex.topic) + eos
    if r < 0.65:
        k = rng.randrange(1, len(ex.turns))
        prefix = "\n".join(f"#Person{w}#: {t}" for w, t in ex.turns[:k])
        who, text = ex.turns[k]
        return enc(NEXT_PROMPT.format(who=who, dialogue=prefix)) + eos, enc(text) + eos
    if r < 0.85:
        q, a = rng.choice(slot_questions(ex))
        return enc(QUESTION_PROMPT.format(dialogue=ex.dialogue, question=q)) + eos, enc(a) + eos
    return enc(DETAILS_PROMPT.format(dialogue=ex.dialogue)) + eos, enc(details(ex)) + eos


def details(ex: Example) -> str:
    """The detail-extraction target: every slot written in the dialogue, in dialogue order (`key: value; ...`)."""
    # Extraction of several slots at once teaches copying a sequence of facts, in dialogue order.
    pairs = sorted(slot_questions(ex), key=lambda qa: ex.dialogue.lower().index(qa[1].lower()))
    return "; ".join(f"{SLOT_WORDS.get(k, k)}: {v}" for k, v in
                     [(q[len("What is the "):-1], a) for q, a in pairs])


def collate(pairs: list[tuple[list[int], list[int]]], max_src: int, max_tgt: int) -> dict[str, torch.Tensor]:
    """Pad inputs with <pad>=0 and labels with -100, so the loss never trains on padding."""
    src = [p[0][:max_src] for p in pairs]
    tgt = [p[1][:max_tgt] for p in pairs]
    ls, lt = max(map(len, src)), max(map(len, tgt))
    input_ids = torch.tensor([s + [0] * (ls - len(s)) for s in src])
    labels = torch.tensor([t + [-100] * (lt - len(t)) for t in tgt])
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(), "labels": labels}


def build_model(vocab_size: int, seed: int):
    """A small T5 shaped like FLAN-T5 (gated-GELU, untied lm_head), with a fresh init."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    # transformers 5 forces tie_word_embeddings=True in T5Config; passing False only turns off the
    # d_model**-0.5 output scaling (as in FLAN-T5). The untying itself happens below.
    config = T5Config(vocab_size=vocab_size, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **MODEL)
    model = T5ForConditionalGeneration(config)
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    # Unscaled decoder output has unit RMS, so std d_model**-0.5 gives unit-scale initial logits.
    torch.nn.init.normal_(model.lm_head.weight, std=config.d_model ** -0.5)
    return model


@torch.no_grad()
def eval_loss(model, batches) -> float:
    model.eval()
    losses = [model(**b).loss.item() for b in batches]
    model.train()
    return sum(losses) / len(losses)


def save(model, out: Path) -> None:
    """Save weights, config and generation defaults (greedy, long enough for a summary)."""
    model.save_pretrained(out)
    gen = model.generation_config
    gen.decoder_start_token_id, gen.pad_token_id, gen.eos_token_id = 0, 0, 1
    gen.max_new_tokens = 128  # summaries here run to ~60 tokens; the 20-token default would cut them off
    gen.save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dialogtune/assets/tiny-t5", help="folder to write the model to")
    parser.add_argument("--steps", type=int, default=2500, help="optimizer steps; time grows linearly")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (warmup, then cosine)")
    parser.add_argument("--vocab-size", type=int, default=2048, help="including the sentinels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 1 leaves a core for others")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="also save the model every N steps (0: only at the end)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    splits = generate_examples(seed=0)
    # The tokenizer may read every text, summaries included: a vocabulary is not training signal.
    texts = [t for rows in splits.values() for ex in rows for t in (ex.dialogue, ex.summary, ex.topic)]
    texts += [p.format(dialogue="", who=1, question="") for p in
              (SUMMARY_PROMPT, TOPIC_PROMPT, NEXT_PROMPT, QUESTION_PROMPT, DETAILS_PROMPT)]
    texts += [f"What is the {w}?" for w in SLOT_WORDS.values()] + ["key: value; key: value"]  # ";" joins details
    tok = train_tokenizer(texts, args.vocab_size, out)
    sentinels = [tok.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(N_SENTINELS)]
    print(f"tokenizer: {len(tok)} tokens ({time.time() - t0:.1f}s)", flush=True)

    model = build_model(len(tok), args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters", flush=True)

    # Pre-training sees train-split dialogues only: validation for the loss curve, test never.
    rng = random.Random(args.seed)
    train, val = splits["train"], splits["validation"]
    val_batches = [collate([make_example(ex, tok, sentinels, random.Random(i)) for i, ex in
                            enumerate(val[j:j + 50], start=j)], 256, 96) for j in range(0, 200, 50)]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    model.train()
    log = []
    queue: list[dict[str, torch.Tensor]] = []
    for step in range(1, args.steps + 1):
        if not queue:
            # Draw 8 batches at once and group them by length: less padding, about 30% faster.
            pool = sorted((make_example(rng.choice(train), tok, sentinels, rng) for _ in range(8 * args.batch_size)),
                          key=lambda p: len(p[0]))
            queue = [collate(pool[i:i + args.batch_size], 256, 96) for i in range(0, len(pool), args.batch_size)]
            rng.shuffle(queue)
        batch = queue.pop()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        if step % 250 == 0 or step == args.steps:
            vl = eval_loss(model, val_batches)
            log.append({"step": step, "train_loss": round(loss.item(), 4), "val_loss": round(vl, 4),
                        "elapsed_s": round(time.time() - t0, 1)})
            print(json.dumps(log[-1]), flush=True)
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                save(model, out)

    save(model, out)
    elapsed = time.time() - t0
    (out / "pretrain_log.json").write_text(json.dumps({"args": vars(args), "parameters": n_params,
                                                       "elapsed_s": round(elapsed, 1), "log": log}, indent=1))
    print(f"done in {elapsed:.0f}s -> {out}", flush=True)


if __name__ == "__main__":
    main()
