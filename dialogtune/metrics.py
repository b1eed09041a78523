"""ROUGE for dialogue summaries: per-example multi-reference scores, and summaries with bootstrap CIs.

Scores come from ``rouge_score`` (Google's reimplementation of ROUGE-1.5.5, offline, Porter stemming)
and are reported in points (0-100). Every per-pair number equals
``RougeScorer(METRICS, use_stemmer=True).score(reference, prediction)[metric].fmeasure * 100``;
for ``rougeLsum`` both texts are first put one sentence per line by :func:`sentence_lines`, which is
what ``rouge_score`` expects (it splits summaries on newlines only).

A test example (a dialogue) may have several references. How they combine is the *protocol*:

- ``mean``: F averaged over the example's references (every reference counts).
- ``max``: the best reference per example and per metric (``RougeScorer.score_multi`` semantics).
- ``field:NAME``: only the reference named NAME, e.g. ``field:summary1`` (the usual single-reference
  number on the original DialogSum test set).

Scoring DialogSum's 1,500 HF test rows as independent examples is none of these: it counts each
dialogue three times and treats three references as three predictions' targets. Group by dialogue first.
(`dialogtune score --protocol rows`, in :mod:`dialogtune.rows`, computes that row average to match published
tables, with CIs that resample dialogues; with one prediction per dialogue it equals ``mean``.)
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np
from rouge_score import rouge_scorer, tokenizers

from dialogtune.significance import bootstrap_ci

METRICS: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")

PROTOCOL_FORMS = "'mean', 'max' or 'field:NAME' (e.g. 'field:summary1')"

# Words that end in a period without ending the sentence. Lower-case, without the final period.
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "a.m", "p.m", "u.s", "u.k"}
)
# End-of-sentence punctuation, with any closing quotes or brackets, followed by whitespace.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")
_LAST_WORD = re.compile(r"(\S+)$")


def sentence_lines(text: str) -> str:
    """Put each sentence of ``text`` on its own line, for rougeLsum.

    A regex splitter, so no nltk ``punkt`` download is needed: a sentence ends at ``.``, ``!`` or ``?``
    (plus closing quotes or brackets) followed by whitespace, except after a known abbreviation
    ("Mr.", "e.g.") or a single-letter initial ("J."). Like nltk's punkt, it splits before a lower-case
    word too, so all-lower-case outputs ("he left. she stayed.") still get one sentence per line.
    Existing line breaks are kept as sentence breaks. Only whitespace is changed, so the ROUGE tokens
    of the text are exactly the same before and after.
    """
    lines: list[str] = []
    for line in text.splitlines():
        start = 0
        for match in _SENTENCE_END.finditer(line):
            end = match.end()
            if not line[end:].strip():
                continue  # the line ends here anyway
            if match.group().startswith(".") and len(match.group().rstrip("\"'\u201d\u2019)]")) == 1:
                word = _LAST_WORD.search(line[: match.start()])
                if word is not None:
                    stem = word.group(1).lower().lstrip("(\"'")
                    if stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha()):
                        continue
            lines.append(line[start:end].strip())
            start = end
        lines.append(line[start:].strip())
    return "\n".join(line for line in lines if line)


def parse_protocol(protocol: str) -> tuple[str, str | None]:
    """Parse a multi-reference protocol: ``'mean'``, ``'max'`` or ``'field:NAME'`` -> ``(mode, name)``."""
    if protocol in ("mean", "max"):
        return protocol, None
    if isinstance(protocol, str) and protocol.startswith("field:"):
        name = protocol[len("field:") :]
        if name and name == name.strip():
            return "field", name
    raise ValueError(f"Unknown ROUGE protocol {protocol!r}; valid forms are {PROTOCOL_FORMS}.")


class _CachedTokenizer(tokenizers.Tokenizer):
    """rouge_score's default stemming tokenizer, memoised per text.

    ``RougeScorer.score`` tokenizes the prediction again for every reference and every sentence again
    for rougeLsum; Porter stemming dominates the cost, so caching makes multi-reference scoring about
    twice as fast. The tokens are identical (same tokenizer, same input), so scores are unchanged.
    """

    def __init__(self) -> None:
        self._inner = tokenizers.DefaultTokenizer(use_stemmer=True)
        self._cache: dict[str, list[str]] = {}

    def tokenize(self, text: str) -> list[str]:
        tokens = self._cache.get(text)
        if tokens is None:
            tokens = self._cache[text] = self._inner.tokenize(text)
        return tokens


def _select_references(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    protocol: str,
    reference_names: Sequence[Sequence[str]] | None,
) -> tuple[str, list[list[str]]]:
    """Validate the inputs and return ``(mode, references each example is scored against)``."""
    mode, field = parse_protocol(protocol)
    if isinstance(predictions, str) or isinstance(references, str):
        raise ValueError("`predictions` and `references` must be sequences with one entry per example, not a str.")
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} reference lists; "
            "pass one list of references per prediction, in the same order."
        )
    if mode == "field" and reference_names is None:
        raise ValueError(
            f"Protocol {protocol!r} needs `reference_names` (one list of names per example, parallel to "
            "`references`); without names use protocol 'mean' or 'max'."
        )
    if mode == "field" and len(reference_names) != len(references):
        raise ValueError(
            f"Got {len(reference_names)} reference-name lists for {len(references)} examples; pass one per example."
        )
    selected: list[list[str]] = []
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        if not isinstance(pred, str):
            raise ValueError(f"predictions[{i}] is {type(pred).__name__}, not str; use '' for an empty output.")
        if isinstance(refs, str):
            # A bare string is a Sequence[str] too, and would be scored character by character.
            raise ValueError(f"references[{i}] is a str; wrap it in a list: [reference].")
        refs = list(refs)
        if not refs:
            raise ValueError(f"references[{i}] is empty; every example needs at least one reference summary.")
        for j, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise ValueError(f"references[{i}][{j}] is {type(ref).__name__}, not str.")
        if mode == "field":
            names = list(reference_names[i])
            if len(names) != len(refs):
                raise ValueError(
                    f"Example {i} has {len(refs)} references but {len(names)} reference names {names}; "
                    "pass one name per reference."
                )
            hits = [j for j, name in enumerate(names) if name == field]
            if len(hits) != 1:
                problem = "no reference" if not hits else f"{len(hits)} references"
                raise ValueError(
                    f"Example {i} has {problem} named {field!r} (names: {names}); "
                    f"choose one of those with 'field:NAME', or use protocol 'mean' or 'max'."
                )
            refs = [refs[hits[0]]]
        selected.append(refs)
    return mode, selected


def per_example_scores(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    protocol: str = "mean",
    reference_names: Sequence[Sequence[str]] | None = None,
) -> dict[str, np.ndarray]:
    """Per-example ROUGE F-measure in points (0-100) for each metric in :data:`METRICS`.

    Args:
        predictions: one generated summary per example.
        references: for each example, a list of >= 1 reference summaries.
        protocol: how references combine, see the module docstring.
        reference_names: for each example, the names of its references (e.g. ``["summary1", "summary2"]``);
            needed only for ``field:NAME`` and ignored by ``mean`` and ``max`` (so callers may always pass them,
            even empty lists).

    Returns:
        ``{metric: float64 array of shape (num_examples,)}``.
    """
    mode, selected = _select_references(predictions, references, protocol, reference_names)
    return _score_selected(predictions, selected, mode)


def _score_selected(predictions: Sequence[str], selected: list[list[str]], mode: str) -> dict[str, np.ndarray]:
    """Score validated inputs; ``selected`` holds the references each example is scored against."""
    # One scorer per call: its tokenizer cache lives only as long as this call.
    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True, tokenizer=_CachedTokenizer())
    rows = np.empty((len(selected), len(METRICS)), dtype=np.float64)
    for i, (pred, refs) in enumerate(zip(predictions, selected)):
        pred_lines = sentence_lines(pred)
        # Scoring the newline-split texts is exact for every metric: rouge1/2/L tokens ignore whitespace,
        # and rougeLsum needs the newlines. rouge_score takes (target, prediction) in that order.
        pair = [scorer.score(sentence_lines(ref), pred_lines) for ref in refs]
        points = np.array([[s[m].fmeasure * 100 for m in METRICS] for s in pair], dtype=np.float64)
        rows[i] = points.max(axis=0) if mode == "max" else points.mean(axis=0)
    return {metric: rows[:, j].copy() for j, metric in enumerate(METRICS)}


def rouge_summary_from_scores(
    scores: dict[str, np.ndarray], protocol: str, n_resamples: int = 1000, seed: int = 0
) -> dict:
    """Summarise per-example scores: mean over examples with a 95% bootstrap CI for each metric.

    Use this when per-example scores already exist (e.g. to also run :func:`~dialogtune.significance.paired_test`).
    """
    parse_protocol(protocol)  # so a typo is caught here, not written into metrics.json
    if not scores:
        raise ValueError(f"`scores` is empty; expected per-example arrays for the metrics {list(METRICS)}.")
    lengths = {metric: np.asarray(values).shape for metric, values in scores.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"Per-example score arrays differ in shape: {lengths}; they must cover the same examples.")
    num_examples = int(np.asarray(next(iter(scores.values()))).size)
    if num_examples == 0:
        raise ValueError("No examples to summarise: the score arrays are empty.")
    rouge = {}
    for metric, values in scores.items():
        low, high = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
        rouge[metric] = {"score": float(np.mean(values)), "ci_low": low, "ci_high": high}
    return {
        "protocol": protocol,
        "num_examples": num_examples,
        "rouge": rouge,
        "bootstrap": {"n_resamples": int(n_resamples), "seed": seed, "confidence": 0.95},
    }


def rouge_summary(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    protocol: str = "mean",
    reference_names: Sequence[Sequence[str]] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """ROUGE of a system on a test set, with bootstrap CIs and output lengths.

    Returns ``{"protocol", "num_examples", "rouge": {metric: {"score", "ci_low", "ci_high"}}, "bootstrap",
    "gen_len", "ref_len"}``. Scores are points (0-100). ``gen_len`` is the mean number of whitespace words per
    prediction; ``ref_len`` the mean words per reference actually scored (all of an example's references for
    mean/max, averaged within the example first so every dialogue weighs the same; the named one for field:NAME).
    """
    mode, selected = _select_references(predictions, references, protocol, reference_names)
    summary = rouge_summary_from_scores(
        _score_selected(predictions, selected, mode),
        protocol,
        n_resamples=n_resamples,
        seed=seed,
    )
    summary.update(_lengths(predictions, selected))
    return summary


def output_lengths(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    protocol: str = "mean",
    reference_names: Sequence[Sequence[str]] | None = None,
) -> dict[str, float]:
    """``{"gen_len", "ref_len"}`` exactly as :func:`rouge_summary` reports them, without scoring anything.

    With :func:`per_example_scores` and :func:`rouge_summary_from_scores` this rebuilds ``rouge_summary``'s
    dict for a caller that also needs the per-example scores, so ROUGE is computed once.
    """
    _, selected = _select_references(predictions, references, protocol, reference_names)
    return _lengths(predictions, selected)


def _lengths(predictions: Sequence[str], selected: list[list[str]]) -> dict[str, float]:
    return {
        "gen_len": float(np.mean([len(p.split()) for p in predictions])),
        "ref_len": float(np.mean([np.mean([len(r.split()) for r in refs]) for refs in selected])),
    }


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, punctuation and articles (a, an, the) removed, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's F1 (0-1) over the normalised answers' tokens; two empty answers agree."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or not common:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_scores(predictions: Sequence[str], references: Sequence[Sequence[str]], metric: str) -> np.ndarray:
    """Per-example `exact_match` or `token_f1` of short answers (a topic, a slot's value) in points (0-100), the
    best over an example's references (as SQuAD); bootstrap CIs and paired tests take them as ROUGE's."""
    scorers = {"exact_match": lambda p, r: float(normalize_answer(p) == normalize_answer(r)), "token_f1": token_f1}
    if metric not in scorers:
        raise ValueError(f"Unknown answer metric {metric!r}; use one of {', '.join(scorers)}.")
    _, selected = _select_references(predictions, references, "max", None)
    return np.array([100.0 * max(scorers[metric](p, r) for r in refs) for p, refs in zip(predictions, selected)])
