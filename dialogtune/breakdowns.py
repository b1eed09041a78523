"""Where a system does well or badly: scores by topic and by dialogue length, output lengths, and
degenerate outputs (empty, looping, or copying a dialogue turn).

Everything here takes per-example scores and plain strings, so it works on any run's predictions.jsonl.
Words are whitespace-separated tokens throughout, the same unit as ``gen_len`` in metrics.json.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from dialogtune.significance import bootstrap_ci

# An output is "repetitive" when more than 30% of its word 3-grams repeat a 3-gram seen earlier in it.
# A fluent 20-word summary repeats no 3-gram, or one once (~5%); a generation stuck in a loop
# ("he says he will go he says he will go ...") scores 40-90%, and a phrase said twice in a row 35%+.
# Counting all repeats, not just the most frequent 3-gram, matters: a 5-word loop spreads its repeats
# over 5 different 3-grams.
REPEAT_NGRAM = 3
REPEAT_SHARE = 0.30
# A turn counts as copied when its text (at least this many words) appears verbatim in the output.
# Shorter turns ("Yes, sir.") turn up in good summaries by chance.
COPY_MIN_WORDS = 5

# A speaker tag such as "#Person1#:". Split on it anywhere, not only at line starts, because some
# DialogSum dialogues run several turns together on one line.
_TURN_TAG = re.compile(r"#[A-Za-z]+\d*#\s*:")
_WORD = re.compile(r"\w+")


def _check_parallel(name_a: str, a: Sequence, name_b: str, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"`{name_a}` has {len(a)} entries but `{name_b}` has {len(b)}; pass one per example.")


def by_topic(
    scores: np.ndarray, topics: Sequence[str], top: int = 10, min_count: int = 1,
    n_resamples: int | None = None, seed: int = 0,
) -> list[dict]:
    """Mean score of the ``top`` most frequent topics: ``[{"topic", "count", "score"}]``, most frequent first.

    Only topics with at least ``min_count`` examples are listed: a mean over three dialogues says little.
    With ``n_resamples``, each row also has ``"ci"``, a bootstrap 95% interval of its mean.
    Ties in frequency are broken by topic name so the table is stable between runs.
    """
    values = np.asarray(scores, dtype=np.float64)
    _check_parallel("scores", values, "topics", topics)
    if top < 1:
        raise ValueError(f"`top` must be >= 1; got {top}.")
    counts = Counter(topics)
    ranked = sorted(((t, c) for t, c in counts.items() if c >= min_count), key=lambda item: (-item[1], str(item[0])))[:top]
    topic_array = np.asarray(topics, dtype=object)
    rows = []
    for topic, count in ranked:
        mine = values[topic_array == topic]
        row = {"topic": topic, "count": count, "score": float(mine.mean())}
        if n_resamples is not None:
            row["ci"] = list(bootstrap_ci(mine, n_resamples=n_resamples, seed=seed))
        rows.append(row)
    return rows


def quantile_edges(lengths: Sequence[int], parts: int = 4) -> list[int]:
    """Bucket edges for :func:`by_length` at the data's own quantiles (quartiles by default).

    Each edge is a length that occurs in the data (``method="higher"``) and exceeds the shortest one, so
    every bucket holds at least one example: fixed edges put all of a corpus of short dialogues in one
    bucket and leave the rest empty. All lengths equal gives no edges (one bucket).
    """
    values = np.asarray(lengths, dtype=np.int64)
    if values.size == 0:
        return []
    cuts = np.quantile(values, [i / parts for i in range(1, parts)], method="higher")
    return sorted({int(c) for c in cuts if c > values.min()})


def by_length(
    scores: np.ndarray, lengths: Sequence[int], edges: Sequence[int] = (100, 200, 300, 400)
) -> list[dict]:
    """Mean score per length bucket: ``[{"bucket", "count", "score"}]`` in length order.

    With the default edges the buckets are ``<100``, ``100-199``, ``200-299``, ``300-399`` and ``>=400``
    (e.g. dialogue length in words). Every bucket is listed so tables line up across runs; an empty one has
    ``count`` 0 and ``score`` None (None rather than NaN so the result stays valid JSON). No edges gives one
    bucket, ``all``.
    """
    values = np.asarray(scores, dtype=np.float64)
    _check_parallel("scores", values, "lengths", lengths)
    edges = [int(e) for e in edges]
    if any(lo >= hi for lo, hi in zip(edges, edges[1:])):
        raise ValueError(f"`edges` must be a strictly increasing list of lengths; got {edges}.")
    # np.digitize with right=False puts a length equal to an edge in the bucket that starts there.
    bucket_of = np.digitize(np.asarray(lengths, dtype=np.int64), edges)
    labels = ["all"] if not edges else [f"<{edges[0]}"] + [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])] + [f">={edges[-1]}"]
    rows = []
    for b, label in enumerate(labels):
        mask = bucket_of == b
        count = int(mask.sum())
        rows.append({"bucket": label, "count": count, "score": float(values[mask].mean()) if count else None})
    return rows


def length_stats(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """Mean and median words of predictions vs references, and their ratio (mean prediction / mean reference).

    An example's reference length is the mean over its references, so every dialogue weighs the same.
    A ratio well below 1 often means generation was cut short (e.g. a too-small ``max_new_tokens``).
    """
    _check_parallel("predictions", predictions, "references", references)
    if not predictions:
        raise ValueError("No predictions given; length statistics need at least one example.")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"references[{i}] must be a non-empty list of strings; got {refs!r}.")
    pred_words = np.array([len(p.split()) for p in predictions], dtype=np.float64)
    ref_words = np.array([np.mean([len(r.split()) for r in refs]) for refs in references], dtype=np.float64)
    ref_mean = float(ref_words.mean())
    return {
        "pred_mean": float(pred_words.mean()),
        "pred_median": float(np.median(pred_words)),
        "ref_mean": ref_mean,
        "ref_median": float(np.median(ref_words)),
        "ratio": float(pred_words.mean() / ref_mean) if ref_mean else None,
    }


def repetition_share(text: str, n: int = REPEAT_NGRAM) -> float:
    """Share of the text's word n-grams (lower-cased) that repeat an n-gram occurring earlier in it; 0 if none."""
    words = _WORD.findall(text.lower())
    ngrams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not ngrams:
        return 0.0
    return (len(ngrams) - len(set(ngrams))) / len(ngrams)


def dialogue_turns(dialogue: str) -> list[str]:
    """The text of each speaker turn (tags such as ``#Person1#:`` removed), in order."""
    pieces = _TURN_TAG.split(dialogue)
    # pieces[0] is whatever precedes the first tag (usually nothing); it is not a turn.
    return [" ".join(piece.split()) for piece in pieces[1:] if piece.strip()]


def copied_turn(prediction: str, dialogue: str, min_words: int = COPY_MIN_WORDS) -> str | None:
    """The first turn of ``dialogue`` with >= ``min_words`` words whose text appears verbatim in ``prediction``."""
    output = " ".join(prediction.split())  # whitespace differences do not make a copy original
    for turn in dialogue_turns(dialogue):
        if len(turn.split()) >= min_words and turn in output:
            return turn
    return None


def degenerate_outputs(predictions: Sequence[str], dialogues: Sequence[str], ids: Sequence[str]) -> dict:
    """Find degenerate outputs.

    Returns ``{"num_examples", "empty", "repetitive", "copied_turn", "thresholds"}``, where each of the three
    kinds is ``{"count": int, "ids": [example ids]}``:

    - empty: nothing but whitespace;
    - repetitive: :func:`repetition_share` > ``REPEAT_SHARE``, i.e. more than 30% of the output's word
      3-grams repeat one seen earlier in it;
    - copied_turn: some turn's text of >= ``COPY_MIN_WORDS`` words appears verbatim (whitespace-normalised,
      case-sensitive) in the output, i.e. the model pasted the dialogue rather than summarising it.
    """
    _check_parallel("predictions", predictions, "dialogues", dialogues)
    _check_parallel("predictions", predictions, "ids", ids)
    found: dict[str, list[str]] = {"empty": [], "repetitive": [], "copied_turn": []}
    for pred, dialogue, example_id in zip(predictions, dialogues, ids):
        if not pred.strip():
            found["empty"].append(example_id)
            continue  # an empty output can be neither repetitive nor a copy
        if repetition_share(pred) > REPEAT_SHARE:
            found["repetitive"].append(example_id)
        if copied_turn(pred, dialogue) is not None:
            found["copied_turn"].append(example_id)
    result: dict = {"num_examples": len(predictions)}
    result.update({kind: {"count": len(hit_ids), "ids": hit_ids} for kind, hit_ids in found.items()})
    result["thresholds"] = {
        "repeat_ngram": REPEAT_NGRAM,
        "repeat_share": REPEAT_SHARE,
        "copy_min_words": COPY_MIN_WORDS,
    }
    return result
