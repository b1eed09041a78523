"""Faithfulness: facts in a summary (numbers, times and dates, names, codes) that the dialogue does not support.

ROUGE rewards the template and cannot see a wrong price, name or flight number. This module extracts
checkable facts from a summary with regular expressions and looks each one up in the dialogue after
normalisation (case, punctuation, number words <-> digits, possessive 's). It is offline and
model-free on purpose: a reviewer can see exactly why a span was flagged. (Over 300 lines because
about a third is data: the patterns, number words and stop-lists that define what a fact is.) It does not catch wrong
relations between correct entities, nor wrong lowercase common nouns (roles, objects); see
docs/faithfulness.md for its measured precision on DialogSum.
"""

from __future__ import annotations

import html
import re
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from dialogtune.errors import DialogtuneError
from dialogtune.significance import bootstrap_ci, paired_test

KINDS = ("number", "time", "date", "name", "code")

_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
             "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fifteenth": 15,
             "twentieth": 20, "thirtieth": 30}
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december"]
_MONTH_OF = {**{m: m for m in _MONTHS}, **{m[:3]: m for m in _MONTHS}, "sept": "september"}
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

_NUMWORD = "|".join(sorted([*_UNITS, *_TENS, *_SCALES], key=len, reverse=True))
_NUMWORDS_RE = re.compile(rf"\b(?:{_NUMWORD})(?:(?:[\s-]|\sand\s)(?:{_NUMWORD}))*\b", re.I)
_DIGITS = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_UNIT = (r"%|percent|per cent|dollars?|bucks?|cents?|yuan|rmb|pounds?|euros?|yen|kilomet(?:er|re)s?|km|miles?|"
         r"met(?:er|re)s?|kilo(?:gram)?s?|kg|grams?|hours?|minutes?|days?|weeks?|months?|years?(?: old)?|"
         r"people|persons?|times|floors?|pieces?|copies|tickets?|rooms?|nights?")
_NUMBER_RE = re.compile(
    rf"(?<![\w.,])(?P<cur>[$£€¥]\s?)?(?P<num>{_DIGITS})(?:st|nd|rd|th)?(?!\d|,\d)"
    rf"(?:\s?(?P<mult>million|billion|thousand|k)\b)?(?:\s?(?:{_UNIT})(?![A-Za-z]))?",
    re.I,
)
_UNIT_AFTER_RE = re.compile(rf"\s?(?:{_UNIT})(?![A-Za-z])", re.I)
_AMPM = r"[ap]\.?\s?m\b\.?"
_TIME_RE = re.compile(
    rf"\b(?P<h>\d{{1,2}}):(?P<m>\d{{2}})(?:\s?{_AMPM})?|\b(?P<h2>\d{{1,2}})\s?{_AMPM}"
    rf"|\b(?P<h3>\d{{1,2}}|{'|'.join(_UNITS)})\s?o'clock\b"
    rf"|\b(?P<q>half|quarter)\s(?P<dir>past|to)\s(?P<h4>\d{{1,2}}|{'|'.join(_UNITS)})\b",
    re.I,
)
_MONTH_PAT = "|".join(m.capitalize() for m in sorted(_MONTH_OF, key=len, reverse=True))
_DATE_RE = re.compile(
    rf"\b(?:(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?\s(?:of\s)?(?P<m1>{_MONTH_PAT})\b"
    rf"|(?P<m2>{_MONTH_PAT})\b(?:\s(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?\b)?)(?:,?\s(?P<y>\d{{4}})\b)?"
    rf"|\b(?P<wd>{'|'.join(w.capitalize() for w in _WEEKDAYS)})s?\b"
    rf"|(?<![$£€¥\d])\b(?P<year>1[6-9]\d\d|20\d\d)s?\b(?!\s?(?:{_UNIT})(?![A-Za-z]))"
)
_CODE_RE = re.compile(r"\b[A-Z]{1,3}\d{1,5}[A-Z]?\b|\b[A-Z]{2,3} \d{1,5}\b|\b\d{1,4}[A-Z]\b")
_DIALOGUE_CODE_RE = re.compile(r"\b([A-Za-z]{1,3})[\s-]?(\d{1,5}[A-Za-z]?)\b|\b(\d{1,4})[\s-]?([A-Za-z])\b")
_WORD_RE = re.compile(r"(?<![A-Za-z0-9'’])[A-Z][A-Za-z]*(?:[-'’][A-Z][A-Za-z]*)*(?:['’]s\b|['’](?![A-Za-z]))?")
_ACRONYM_RE = re.compile(r"(?<![A-Za-z.])(?:[A-Z]\.){2,}")
_TAG_RE = re.compile(r"#\s*Person\s*\d+\s*#|\bPerson\s?\d+\b", re.I)
# Capitalised words that are not names: pronouns, titles (the name follows them), family roles,
# interjections, and the function words and connectives that start sentences in DialogSum summaries.
_NOT_NAMES = set("""i i'm i'd i'll i've ok okay mr mrs ms miss dr prof sir madam mom mum dad mommy daddy grandma
grandpa the a an and but or so then he she they it we you his her their its our this that these those there here
what when where why how who which if in on at to for of with by from after before finally also yes no hi hello
oh well please thanks thank person rmb usd tv however both thus since during although as though unlike therefore
according later meanwhile eventually afterwards next first second third last today tomorrow tonight yesterday now
everyone everybody nobody someone somebody all each many most some one another while because despite instead
besides moreover furthermore even only just still yet not neither either together luckily unfortunately
fortunately actually surprisingly anyway otherwise soon without under through then finally""".split())
# A name is supported by the dialogue's demonym or plural: "America"/"Americans", "ATM"/"ATMs".
_NAME_SUFFIXES = ("", "s", "n", "ns", "an", "ans", "er", "ers", "ern", "erner", "erners")
_SPACED_NUMBER_RE = re.compile(r"(\d)([,.]) (\d)")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "m", "no"}


@dataclass(frozen=True)
class Fact:
    """One checkable span of a summary: ``text`` is ``summary[start:end]``; ``norm`` is what is looked up."""

    kind: str
    text: str
    start: int
    end: int
    norm: str


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}".rstrip("0")


def _words_value(text: str) -> float:
    """Value of a number-word phrase such as 'twenty-five' or 'one hundred and fifty'."""
    total, current = 0, 0
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word in _SCALES:
            total += max(current, 1) * _SCALES[word]
            current = 0
    return float(total + current)


def _number_value(match: re.Match) -> float:
    value = float(match["num"].replace(",", ""))
    mult = (match["mult"] or "").lower()
    return value * {"": 1, "k": 1_000, "thousand": 1_000, "million": 1e6, "billion": 1e9}[mult]


def _hour(token: str) -> int:
    return int(token) if token.isdigit() else _UNITS[token.lower()]


def _time_key(match: re.Match) -> tuple[int, int]:
    """(hour mod 12, minute): '7 pm', '19:00' and "seven o'clock" are the same time of day."""
    if match["h"]:
        return int(match["h"]) % 12, int(match["m"])
    if match["h2"] or match["h3"]:
        return _hour(match["h2"] or match["h3"]) % 12, 0
    hour = _hour(match["h4"])
    if match["q"].lower() == "half":
        return hour % 12, 30
    return (hour % 12, 15) if match["dir"].lower() == "past" else ((hour - 1) % 12, 45)


def _name_tokens(text: str) -> list[str]:
    """Lowercase word tokens with possessive 's dropped, so "Stark's" and "stark" are the same name."""
    return re.findall(r"[a-z0-9]+", re.sub(r"['’]s\b", "", text.lower()))


def _is_stop(word: str) -> bool:
    return " ".join(_name_tokens(word)) in _NOT_NAMES


def _sentence_initial(text: str, pos: int) -> bool:
    before = text[:pos].rstrip(" \t\"'“‘([")
    if not before or before[-1] in "!?:\n":
        return True
    if before[-1] != ".":
        return False
    word = re.search(r"([A-Za-z]*)\.$", before)[1].lower()  # "Mr." and "p.m." do not end a sentence
    return not (word in _ABBREVIATIONS or len(word) == 1)


def extract_facts(summary: str) -> list[Fact]:
    """Numbers (with units/currency), times, dates, capitalised names and codes in ``summary``, in order.

    '#Person1#'-style tags are masked first, so they are never facts. Where spans overlap, the earlier
    kind in this order wins: time, code, date, number, name ('7:30' is one time, not two numbers).
    """
    text = _TAG_RE.sub(lambda m: " " * len(m.group()), summary)
    facts: list[Fact] = []
    taken = np.zeros(len(text) + 1, dtype=bool)

    def add(kind: str, start: int, end: int, norm: str) -> None:
        if not taken[start:end].any():
            taken[start:end] = True
            facts.append(Fact(kind, summary[start:end], start, end, norm))

    for m in _TIME_RE.finditer(text):
        add("time", m.start(), m.end(), "%d:%02d" % _time_key(m))
    for m in _CODE_RE.finditer(text):
        add("code", m.start(), m.end(), m.group().replace(" ", ""))
    for m in _DATE_RE.finditer(text):
        if m["wd"]:
            add("date", m.start(), m.end(), m["wd"].lower())
        elif m["year"]:
            add("date", m.start(), m.end(), m["year"])
        elif m["m2"] == "May" and not m["d2"] and _sentence_initial(text, m.start()):
            continue  # "May I ..." is a modal verb
        else:
            parts = [_MONTH_OF[(m["m1"] or m["m2"]).lower()], m["d1"] or m["d2"], m["y"]]
            add("date", m.start(), m.end(), " ".join(str(int(p)) if p and p.isdigit() else p for p in parts if p))
    for m in _NUMBER_RE.finditer(text):
        add("number", m.start(), m.end(), _fmt(_number_value(m)))
    for m in _NUMWORDS_RE.finditer(text):
        if m.group().lower() != "one":  # bare "one" is mostly a pronoun ("the red one")
            unit = _UNIT_AFTER_RE.match(text, m.end())
            end = unit.end() if unit else m.end()
            add("number", m.start(), end, _fmt(_words_value(m.group())))
    for m in _ACRONYM_RE.finditer(text):  # "P.E.", "U.S.": one name, matching "PE" or "P. E."
        add("name", m.start(), m.end(), re.sub(r"[^a-z]", "", m.group().lower()))
    # Names: runs of adjacent capitalised words, trimmed of stop-list words at either end. A word that
    # starts a sentence is a run of its own (DialogSum summaries mostly start with a name, but
    # "Yesterday Tom" must not become one name).
    runs: list[list[re.Match]] = []
    for m in _WORD_RE.finditer(text):
        if taken[m.start():m.end()].any():
            continue
        initial = _sentence_initial(text, m.start())
        if runs and not initial and text[runs[-1][-1].end():m.start()] == " " \
                and not _sentence_initial(text, runs[-1][-1].start()):
            runs[-1].append(m)
        else:
            runs.append([m])
    for run in runs:
        while run and _is_stop(run[0].group()):
            run.pop(0)
        while run and _is_stop(run[-1].group()):
            run.pop()
        if run:
            add("name", run[0].start(), run[-1].end(), " ".join(_name_tokens(text[run[0].start():run[-1].end()])))
    return sorted(facts, key=lambda f: f.start)


@dataclass
class _Evidence:
    """What a dialogue can support, normalised once: tokens, number values, times of day, codes."""

    tokens: str  # space-joined, with spaces at both ends, for whole-token sequence search
    vocabulary: set
    numbers: set
    times: set
    codes: set

    @classmethod
    def of(cls, dialogue: str) -> "_Evidence":
        dialogue = _SPACED_NUMBER_RE.sub(r"\1\2\3", dialogue)  # DialogSum writes "3, 000" and "32. 42"
        tokens = _name_tokens(dialogue)
        numbers = {_number_value(m) for m in _NUMBER_RE.finditer(dialogue)}
        for m in _NUMWORDS_RE.finditer(dialogue):  # the phrase and each word: "one fifty" may mean 1.50 or 150
            numbers.add(_words_value(m.group()))
            numbers.update(_words_value(w) for w in re.findall(r"[a-z]+", m.group().lower()))
        numbers.update(float(n) for n in re.findall(r"\d+", dialogue))
        numbers.update(float(_ORDINALS[t]) for t in tokens if t in _ORDINALS)
        numbers.update(12.0 for t in tokens if t == "dozen")
        times = {_time_key(m) for m in _TIME_RE.finditer(dialogue)}
        times.update((0, 0) for t in tokens if t in ("noon", "midnight"))
        codes = {(m[1] + m[2] if m[1] else m[3] + m[4]).upper() for m in _DIALOGUE_CODE_RE.finditer(dialogue)}
        words = [_MONTH_OF.get(t, t) for t in tokens]
        words = [t[:-1] if t[:-1] in _WEEKDAYS else t for t in words]
        # A name spelled out letter by letter ("S M I T H", "a B. A. in") is the name; any stretch of a run
        # of single letters may be it, as the run can take in an article.
        spelled = {"".join(letters[i:j]) for run in re.findall(r"(?<!\S)(?:[a-z] )+[a-z](?!\S)", " ".join(tokens))
                   for letters in [run.split()[:12]] for i in range(len(letters)) for j in range(i + 2, len(letters) + 1)}
        return cls(" " + " ".join(words) + " ", set(words) | spelled, numbers, times, codes)

    def _has_name_token(self, token: str) -> bool:
        return any(token + suffix in self.vocabulary for suffix in _NAME_SUFFIXES)

    def supports(self, fact: Fact) -> bool:
        if fact.kind == "number":
            return float(fact.norm) in self.numbers
        if fact.kind == "code":
            return fact.norm.upper() in self.codes
        if fact.kind == "time":
            hour, minute = (int(x) for x in fact.norm.split(":"))
            # Spoken times ("seven thirty", "at seven") reach the dialogue as bare numbers.
            return (hour, minute) in self.times or (bool({float(hour), float(hour + 12)} & self.numbers)
                                                    and (minute == 0 or float(minute) in self.numbers))
        if fact.kind == "date":
            words = [p for p in fact.norm.split() if not p.isdigit()]
            return all(f" {w} " in self.tokens for w in words) and all(
                float(p) in self.numbers for p in fact.norm.split() if p.isdigit())
        # The whole sequence, or else each word on its own: "tell Jim Dave called" joins two names.
        return f" {fact.norm} " in self.tokens or all(self._has_name_token(t) for t in fact.norm.split())


def unsupported(summary: str, dialogue: str) -> list[Fact]:
    """Facts of ``summary`` whose normalised form does not occur in ``dialogue``."""
    evidence = _Evidence.of(dialogue)
    return [fact for fact in extract_facts(summary) if not evidence.supports(fact)]


def faithfulness_summary(
    predictions: Sequence[str], dialogues: Sequence[str], n_resamples: int = 1000, seed: int = 0
) -> dict:
    """Unsupported facts over a set of summaries, with bootstrap 95% CIs over summaries.

    ``rate`` is the mean number of unsupported facts per summary; ``share`` the fraction of summaries
    with at least one. ``per_example`` keeps each summary's counts and flagged facts, in input order,
    for paired comparisons (``paired_faithfulness``) and for highlighting.
    """
    if len(predictions) != len(dialogues):
        raise DialogtuneError(
            f"faithfulness needs one dialogue per summary: got {len(predictions)} summaries and {len(dialogues)} "
            "dialogues; pass the dialogues of the same split, in the same order."
        )
    if not predictions:
        raise DialogtuneError("faithfulness got no summaries; pass at least one summary and its dialogue.")
    per_example = []
    for summary, dialogue in zip(predictions, dialogues):
        facts = extract_facts(summary)
        evidence = _Evidence.of(dialogue)
        flagged = [f for f in facts if not evidence.supports(f)]
        per_example.append({"facts": len(facts), "unsupported": len(flagged), "flagged": [asdict(f) for f in flagged]})
    counts = np.array([e["unsupported"] for e in per_example], dtype=float)
    any_flag = (counts > 0).astype(float)
    total_facts = sum(e["facts"] for e in per_example)
    return {
        "n": len(per_example),
        "facts_checked": total_facts,
        "unsupported_facts": int(counts.sum()),
        "unsupported_fact_share": float(counts.sum() / total_facts) if total_facts else 0.0,
        "rate": float(counts.mean()),
        "rate_ci": list(bootstrap_ci(counts, n_resamples=n_resamples, seed=seed)),
        "share": float(any_flag.mean()),
        "share_ci": list(bootstrap_ci(any_flag, n_resamples=n_resamples, seed=seed)),
        "per_example": per_example,
    }


def paired_faithfulness(
    a_counts: Sequence[int], b_counts: Sequence[int], n_resamples: int = 1000, seed: int = 0
) -> dict:
    """Paired test of two systems' unsupported-fact counts on the same dialogues (``diff`` = mean a - b)."""
    return paired_test(np.asarray(a_counts, dtype=float), np.asarray(b_counts, dtype=float), n_resamples, seed)


def _marked(summary: str, facts: Sequence[Fact], wrap, escape) -> str:
    pieces, pos = [], 0
    for fact in sorted(facts, key=lambda f: f.start):
        if summary[fact.start:fact.end] != fact.text:
            raise ValueError(f"fact {fact.text!r} is not at {fact.start}:{fact.end} of this summary; "
                             "pass facts extracted from the same summary.")
        if fact.start < pos:
            continue  # overlapping spans: the first one is already marked
        pieces += [escape(summary[pos:fact.start]), wrap(escape(fact.text))]
        pos = fact.end
    return "".join(pieces) + escape(summary[pos:])


def mark_markdown(summary: str, facts: Sequence[Fact]) -> str:
    """``summary`` with each fact's span written as ``**[span?]**`` (bold, bracketed, queried)."""
    return _marked(summary, facts, lambda s: f"**[{s}?]**", lambda s: s)


def mark_html(summary: str, facts: Sequence[Fact]) -> str:
    """HTML-escaped ``summary`` with each fact's span in ``<mark class="unsupported">``."""
    return _marked(summary, facts, lambda s: f'<mark class="unsupported" title="not in the dialogue">{s}</mark>',
                   lambda s: html.escape(s, quote=True))
