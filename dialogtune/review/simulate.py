"""`dialogtune review-simulate`: scripted raters with known system preferences, through the real study database.

A check of the whole pipeline, not a substitute for people: each scripted rater starts like a person
(``Store.start``), takes its items in order (``Store.next_item``) and answers through ``Store.record``,
so assignments, checks and aggregation are the ones real raters get. Each system has a true quality
(``--truth reference=1.5,full=0.5,...``); for every judgement the rater perceives each shown summary's
quality as the truth plus Gaussian noise (``--noise``, the same scale as the truths), prefers the higher,
and calls a tie when the two are within ``tie_margin``. Its 1-5 scores are 3 + quality + noise, rounded
and clipped. With little noise the aggregation must recover the true order; agreement must fall as
noise grows (tests/test_review.py checks both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dialogtune.errors import DialogtuneError
from dialogtune.review.export import write_results
from dialogtune.review.sampling import sample_study
from dialogtune.review.store import Store

TIE_MARGIN = 0.25


def parse_truth(text: str, systems: list[str]) -> dict[str, float]:
    """`name=quality,...` for every system of the study (one line error naming what is missing or wrong)."""
    truth: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            truth[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise DialogtuneError(f"--truth entry {part!r} is not NAME=NUMBER; e.g. --truth {','.join(f'{s}=0' for s in systems)}")
    missing, unknown = sorted(set(systems) - set(truth)), sorted(set(truth) - set(systems))
    if missing or unknown:
        raise DialogtuneError(f"--truth must give each system of the study a quality: missing {missing or 'none'}, "
                              f"unknown {unknown or 'none'} (systems: {', '.join(systems)})")
    return truth


def _check(raters: int, noise: float) -> None:
    if raters < 1 or noise < 0:
        raise DialogtuneError(f"a simulation needs --raters >= 1 and --noise >= 0 (got {raters} and {noise})")


def simulate(store: Store, truth: dict[str, float], raters: int = 3, noise: float = 0.5, seed: int = 0,
             tie_margin: float = TIE_MARGIN) -> list[str]:
    """Let `raters` scripted raters (sim-1, sim-2, ...) answer every item of `store`; returns their names."""
    _check(raters, noise)
    rng = np.random.default_rng(seed)
    store = Store(store.path, durable=False)  # scripted answers can be made again: no fsync per answer
    names = [f"sim-{i + 1}" for i in range(raters)]
    for name in names:
        store.start(name)
        while (item := store.next_item(name)) is not None:
            shown = store.shown_systems(name, item["item_id"])
            perceived = [truth[s] + rng.normal(0.0, noise) for s in shown]
            diff = perceived[0] - perceived[1]
            answers: dict[str, Any] = {"preference": "tie" if abs(diff) < tie_margin else "A" if diff > 0 else "B"}
            for side, system in zip("ab", shown):
                for criterion in ("consistency", "relevance"):
                    score = 3 + truth[system] + rng.normal(0.0, noise)
                    answers[f"{criterion}_{side}"] = int(np.clip(np.rint(score), 1, 5))
            store.record(name, item["item_id"], answers)
    return names


def run_simulation(folders: list[str], db: str | Path, truth: str, raters: int = 3, noise: float = 0.5,
                   sample: int | None = None, seed: int = 0, output: str | Path | None = None) -> dict[str, Any]:
    """A new study of `folders` in `db`, answered by scripted raters, aggregated and exported."""
    if Path(db).exists():
        raise DialogtuneError(f"{db} already exists; a simulation writes a new study database, pass another --db")
    _check(raters, noise)
    plan = sample_study(folders, sample, seed)
    qualities = parse_truth(truth, [s["name"] for s in plan.systems])  # checked before the database exists
    simulate(Store.create(db, plan), qualities, raters, noise, seed)
    return write_results(db, output, seed=seed)
