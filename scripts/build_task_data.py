"""Write the bundled data of the built-in tasks `slot_qa` and `details`: the tiny model's pre-training tasks
on the bundled corpus, split as the corpus is (same ids, same dialogues).

    python scripts/build_task_data.py --out dialogtune/assets/dialogs

The corpus rows drop the slots a dialogue was built from, so they are generated again here with the
corpus generator (`build_corpus.generate_examples`, same seed, hence the same dialogues) and turned into
tasks with the pre-training code (`build_tiny_t5.slot_questions` and `details`):

- `slot_qa/{split}.jsonl.gz`: one seeded question per dialogue, `{id, dialogue, question, answer, topic}`;
- `details/{split}.jsonl.gz`: every slot in dialogue order, `{id, dialogue, details, topic}`.

Pre-training read train-split dialogues only, so the test items (from the corpus's test split) are new
to the model. tests/test_tasks.py checks that the shipped files equal a fresh run of this script.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling build scripts, also when loaded by path
from build_corpus import SPLITS, generate_examples  # noqa: E402
from build_tiny_t5 import details, slot_questions  # noqa: E402

TASKS = ("slot_qa", "details")


def task_rows(seed: int = 0) -> dict[str, dict[str, list[dict]]]:
    """`{task: {split: rows}}` for the corpus of `seed` (the shipped corpus uses 0)."""
    out: dict[str, dict[str, list[dict]]] = {task: {} for task in TASKS}
    for index, (split, examples) in enumerate(generate_examples(seed=seed).items()):
        rng = random.Random(seed * 1_000 + index)  # one stream per split, as the corpus generator does
        qa, listed = [], []
        for i, ex in enumerate(examples):
            row_id = f"{split}_{i}"  # the corpus's own id (build_corpus.generate_corpus)
            pairs = slot_questions(ex)
            if pairs:  # every family writes the customer's name into the dialogue, so none is skipped today
                question, answer = rng.choice(pairs)
                qa.append({"id": row_id, "dialogue": ex.dialogue, "question": question, "answer": answer, "topic": ex.topic})
                listed.append({"id": row_id, "dialogue": ex.dialogue, "details": details(ex), "topic": ex.topic})
        out["slot_qa"][split], out["details"][split] = qa, listed
    assert set(out["slot_qa"]) == set(SPLITS)
    return out


def write_task_data(folder: str | Path, seed: int = 0) -> list[Path]:
    """Write `<task>/<split>.jsonl.gz` under `folder`; returns the paths written."""
    paths = []
    for task, splits in task_rows(seed).items():
        for split, rows in splits.items():
            path = Path(folder) / task / f"{split}.jsonl.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            # mtime=0 keeps the gzip bytes identical across reruns, so git sees no spurious change.
            with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
                for row in rows:
                    gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
            paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dialogtune/assets/dialogs", help="the corpus folder; tasks go to subfolders")
    parser.add_argument("--seed", type=int, default=0, help="the shipped corpus uses seed 0")
    args = parser.parse_args(argv)
    for path in write_task_data(args.out, args.seed):
        print(path)


if __name__ == "__main__":
    main()
