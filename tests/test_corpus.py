"""The bundled DialogSum-style corpus: deterministic, varied, in hub layout, with a held-out test split."""

import gzip
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

import dialogtune

# The generator is build-time code: it lives in scripts/, not in the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from build_corpus import FAMILIES, SPLITS, generate_corpus, generate_examples, is_heldout  # noqa: E402

ASSETS = Path(dialogtune.__file__).parent / "assets" / "dialogs"
SMALL = dict(n_train=300, n_validation=50, n_test=50)


@pytest.fixture(scope="module")
def examples():
    return generate_examples()


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus()


def test_same_seed_gives_identical_corpus():
    assert generate_corpus(seed=3, **SMALL) == generate_corpus(seed=3, **SMALL)


def test_different_seeds_give_different_corpora():
    a, b = generate_corpus(seed=0, **SMALL), generate_corpus(seed=1, **SMALL)
    for split in SPLITS:
        assert [r["dialogue"] for r in a[split]] != [r["dialogue"] for r in b[split]]


def test_default_corpus_is_large_enough_and_covers_every_family(examples):
    assert len(FAMILIES) >= 20
    assert sum(len(rows) for rows in examples.values()) >= 2000
    seen = Counter(ex.family for ex in examples["train"])
    assert set(seen) == set(FAMILIES)
    # Roughly balanced: no family is starved in training.
    assert min(seen.values()) >= len(examples["train"]) / len(FAMILIES) / 2


def test_rows_use_the_dialogsum_hub_layout(corpus):
    turn = re.compile(r"^#Person[12]#: \S")
    for split, rows in corpus.items():
        assert [r["id"] for r in rows] == [f"{split}_{i}" for i in range(len(rows))]
        for row in rows:
            assert set(row) == {"id", "dialogue", "summary", "topic"}
            lines = row["dialogue"].split("\n")
            assert len(lines) >= 4 and all(turn.match(line) for line in lines)
            # Turns alternate speakers, as consecutive same-speaker turns are merged.
            speakers = [line[:9] for line in lines]
            assert all(a != b for a, b in zip(speakers, speakers[1:]))
            assert 0 < len(row["topic"].split()) <= 3


def test_turn_counts_and_phrasing_vary_within_a_family(examples):
    hotel = [ex for ex in examples["train"] if ex.family == "hotel"]
    assert len({len(ex.turns) for ex in hotel}) >= 3
    assert len({ex.turns[0][1] if ex.turns[0][0] == 1 else ex.turns[1][1] for ex in hotel}) >= 5
    assert len({ex.summary.split(" ")[1] for ex in hotel}) >= 3


def test_slot_values_appear_in_dialogue_and_summary(examples):
    for rows in examples.values():
        for ex in rows:
            assert ex.name in ex.dialogue and ex.name in ex.summary
            # Items may be capitalised at the start of a turn.
            assert ex.item.lower() in ex.dialogue.lower() and ex.item.lower() in ex.summary.lower()


def test_summaries_are_written_from_an_observer_point_of_view(corpus):
    first_person = re.compile(r"\b(I|I'm|I'd|I'll|my|me)\b")
    for rows in corpus.values():
        for row in rows:
            assert not first_person.search(row["summary"]), row["summary"]


def test_test_split_holds_only_combinations_unseen_in_training(examples):
    combo = lambda ex: (ex.family, ex.name, ex.item)  # noqa: E731
    seen = {combo(ex) for split in ("train", "validation") for ex in examples[split]}
    test = {combo(ex) for ex in examples["test"]}
    assert test and not test & seen
    assert all(is_heldout(*c) for c in test)
    # Every held-out name and item still occurs in training, only never together in that family.
    names = {ex.name for ex in examples["train"]}
    items = {(ex.family, ex.item) for ex in examples["train"]}
    assert {c[1] for c in test} <= names and {(c[0], c[2]) for c in test} <= items


@pytest.mark.parametrize("split", SPLITS)
def test_committed_files_equal_a_fresh_generation(corpus, split):
    # If this fails, regenerate with the command in scripts/build_corpus.py's docstring.
    with gzip.open(ASSETS / f"{split}.jsonl.gz", "rt", encoding="utf-8") as handle:
        shipped = [json.loads(line) for line in handle if line.strip()]
    assert shipped == corpus[split]


def test_committed_files_stay_small():
    assert sum((ASSETS / f"{split}.jsonl.gz").stat().st_size for split in SPLITS) < 1_500_000
