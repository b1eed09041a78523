"""What a study shows: which dialogues (a seeded sample), which systems, and who sees which pair on which side.

Run folders are read only through `runs.read_run`; nothing here loads a model. A study's systems are
the runs (by folder name) and, unless left out, the human reference as a hidden system called
``reference`` (each dialogue's first reference, as in the comparison report). Each system's ROUGE-1
comes from the run's metrics.json; its rate of unsupported facts is computed here over the run's
whole test predictions with :func:`dialogtune.faithfulness.faithfulness_summary`, as the report does.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialogtune import runs
from dialogtune.errors import DialogtuneError
from dialogtune.faithfulness import faithfulness_summary
from dialogtune.metrics import per_example_scores

REFERENCE = "reference"  # the hidden system holding each dialogue's first human reference
DEFAULT_SAMPLE = 20
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z#\"'\d])")
# A full stop after these ends no sentence: "Ms. Lee", "Dr. Smith", "J. Smith".
_ABBREVIATION = re.compile(r"(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|vs|etc|e\.g|i\.e|[A-Z])\.", re.I)


def sentences(text: str) -> list[str]:
    """A summary split into sentences, the unit a rater marks as holding an unsupported fact."""
    parts: list[str] = []
    for piece in _SENTENCE_END.split(text.strip()):
        if parts and _ABBREVIATION.fullmatch(parts[-1].split()[-1]):
            parts[-1] += " " + piece
        elif piece:
            parts.append(piece)
    return parts or [text]


@dataclass
class StudyPlan:
    """Everything a new study database is created from: plain data, so tests can build one by hand."""

    meta: dict[str, Any]  # seed, sample, shared_pairs, runs (name -> folder), created
    systems: list[dict[str, Any]]  # name, folder, method, rouge1, faithfulness_rate, hidden
    items: list[dict[str, Any]] = field(default_factory=list)  # example_id, dialogue, outputs {system: {summary, rouge1, unsupported}}


def _load(folder: Path) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    run = runs.read_run(folder)
    metrics = run.metrics
    if metrics is None:
        raise DialogtuneError(f"run {folder} has not been evaluated; run `dialogtune evaluate {folder}` first")
    return run, metrics, run.predictions()


def sample_study(
    folders: list[str | Path], sample: int | None = None, seed: int = 0, reference: bool = True,
    shared_pairs: int | None = None,
) -> StudyPlan:
    """Read the runs and draw `sample` test dialogues that every run has predictions for (seeded).

    `shared_pairs` items (default: a quarter of the sample, rounded up) show every rater the same pair,
    so agreement between raters can be measured on them; the other items spread the pairs evenly.
    """
    if not folders:
        raise DialogtuneError("a review needs at least one run folder (two systems, counting the reference)")
    loaded = [_load(Path(f)) for f in folders]
    names = [run.name for run, _, _ in loaded]
    if len(set(names)) != len(names) or REFERENCE in names:
        raise DialogtuneError(f"run names must be unique and not {REFERENCE!r} (got {', '.join(names)}); give each run its own folder name")
    if len(names) + int(reference) < 2:
        raise DialogtuneError("a review compares two systems at least; pass two runs, or keep the reference as a side")
    by_id = [{p["id"]: p for p in predictions} for _, _, predictions in loaded]
    common = sorted(set.intersection(*(set(table) for table in by_id)))
    for (run, _, _), table in zip(loaded[1:], by_id[1:]):
        differ = next((i for i in common if table[i].get("dialogue") != by_id[0][i].get("dialogue")), None)
        if differ is not None:
            raise DialogtuneError(f"{run.folder} and {loaded[0][0].folder} hold different dialogues under id {differ}; "
                                  "review runs evaluated on the same test split")
    count = min(DEFAULT_SAMPLE, len(common)) if sample is None else sample
    if count < 1 or count > len(common):
        raise DialogtuneError(f"--sample {count} is not possible: {len(common)} test dialogues have predictions from every run; "
                              f"pass --sample between 1 and {len(common)}")
    chosen = sorted(random.Random(seed).sample(common, count))
    shared = math.ceil(count / 4) if shared_pairs is None else shared_pairs
    if not 0 <= shared <= count:
        raise DialogtuneError(f"--shared-pairs {shared} must be between 0 and the sample size {count}")
    systems, outputs = [], {i: {} for i in chosen}
    for (run, metrics, predictions), table in zip(loaded, by_id):
        faith = faithfulness_summary([p["prediction"] for p in predictions], [p.get("dialogue", "") for p in predictions],
                                     n_resamples=1, seed=seed)
        systems.append({"name": run.name, "folder": str(run.folder), "method": run.method, "hidden": False,
                        "rouge1": metrics["rouge"]["rouge1"]["score"], "faithfulness_rate": faith["rate"]})
        rows = [table[i] for i in chosen]
        rouge1 = per_example_scores([r["prediction"] for r in rows], [r["references"] for r in rows],
                                    protocol=metrics.get("protocol", "mean"),
                                    reference_names=[r.get("reference_names") or [] for r in rows])["rouge1"]
        unsupported = faithfulness_summary([r["prediction"] for r in rows], [r.get("dialogue", "") for r in rows], 1, seed)
        for row, score, facts in zip(rows, rouge1, unsupported["per_example"]):
            outputs[row["id"]][run.name] = {"summary": row["prediction"], "rouge1": float(score), "unsupported": facts["unsupported"]}
    first = by_id[0]
    if reference:
        every = list(first.values())
        faith = faithfulness_summary([p["references"][0] for p in every], [p.get("dialogue", "") for p in every], 1, seed)
        systems.append({"name": REFERENCE, "folder": None, "method": "human", "hidden": True, "rouge1": None,
                        "faithfulness_rate": faith["rate"]})
        facts = faithfulness_summary([first[i]["references"][0] for i in chosen], [first[i].get("dialogue", "") for i in chosen], 1, seed)
        for i, e in zip(chosen, facts["per_example"]):
            outputs[i][REFERENCE] = {"summary": first[i]["references"][0], "rouge1": None, "unsupported": e["unsupported"]}
    items = [{"example_id": i, "dialogue": first[i].get("dialogue", ""), "shared_pair": n < shared, "outputs": outputs[i]}
             for n, i in enumerate(random.Random(f"{seed}/shared").sample(chosen, count))]
    meta = {"seed": seed, "sample": count, "shared_pairs": shared, "reference": reference,
            "runs": {run.name: str(Path(run.folder).resolve()) for run, _, _ in loaded}, "created": runs.now()}
    return StudyPlan(meta, systems, sorted(items, key=lambda item: item["example_id"]))


def assignments(rater: str, items: list[tuple[int, bool]], systems: list[str], seed: int) -> list[tuple[int, int, str, str]]:
    """(item id, position, system shown as A, system shown as B) for each item, for one rater.

    `items` are (id, shared_pair). Everything is seeded by the study seed and the rater's name, so a
    rater who comes back (or a restarted server) gets the same assignment. Shared items come first, so
    raters who stop early still overlap; their pair is seeded by the item alone. Other items take the
    pairs in a rater-seeded cycle, so each rater sees every pair about equally often. Sides are seeded
    by rater and item.
    """
    pairs = list(itertools.combinations(sorted(systems), 2))
    rng = random.Random(f"{seed}/{rater}")
    shared = sorted(i for i, s in items if s)
    own = sorted(i for i, s in items if not s)
    rng.shuffle(shared)
    rng.shuffle(own)
    cycle: list[tuple[str, str]] = []
    rows = []
    for position, item in enumerate(shared + own):
        if item in shared:
            pair = random.Random(f"{seed}/shared/{item}").choice(pairs)
        else:
            if not cycle:
                cycle = pairs[:]
                rng.shuffle(cycle)
            pair = cycle.pop()
        a, b = pair if random.Random(f"{seed}/{rater}/{item}").random() < 0.5 else pair[::-1]
        rows.append((item, position, a, b))
    return rows
