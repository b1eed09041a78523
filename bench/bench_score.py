"""Benchmark the ROUGE + statistics layer on 1,500 multi-reference predictions.

    .venv/bin/python bench/bench_score.py            # time scoring + 95% CIs (1,000 resamples)
    .venv/bin/python bench/bench_score.py --check    # also time plain rouge_score and check every pair is equal

Data: ../shared/dialogsum/dialogsum.test.jsonl (500 dialogues x 3 human summaries). Each summary in turn is
the "prediction" against the other two, giving 1,500 predictions and 3,000 prediction-reference pairs, all
scored with the 'mean' protocol. Without the shared data, 500 synthetic dialogues of the same size are used.
Target: <= 15 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

from dialogtune.metrics import METRICS, per_example_scores, rouge_summary_from_scores, sentence_lines  # noqa: E402
from dialogtune.significance import paired_test  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "dialogsum" / "dialogsum.test.jsonl"


def load_summaries(path: Path) -> tuple[list[list[str]], str]:
    """Three summaries per dialogue, from DialogSum JSONL or, if ``path`` is missing, synthesised."""
    if path.exists():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [[row["summary1"], row["summary2"], row["summary3"]] for row in rows], str(path)
    # DialogSum-sized stand-in: ~19 words in 1-3 sentences, from a small vocabulary so references overlap.
    rng = np.random.default_rng(0)
    vocab = ("#Person1# #Person2# asks tells wants buy book ticket the a to and about because meeting office "
             "dinner tomorrow price cheaper helps decides going party job interview new car house plans").split()
    def sentence() -> str:
        return " ".join(rng.choice(vocab, size=rng.integers(5, 12))).capitalize() + "."
    groups = [[" ".join(sentence() for _ in range(rng.integers(1, 4))) for _ in range(3)] for _ in range(500)]
    return groups, f"synthetic ({path} not found)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DialogSum-format JSONL with summary1..3")
    parser.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples per CI")
    parser.add_argument("--check", action="store_true", help="also score with plain rouge_score and compare")
    args = parser.parse_args()

    groups, source = load_summaries(args.data)
    # Rotate: summary k is the prediction, the other two are its references.
    predictions = [g[k] for k in range(3) for g in groups]
    references = [[g[j] for j in range(3) if j != k] for k in range(3) for g in groups]
    n_pairs = sum(len(refs) for refs in references)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"data: {source}: {len(predictions)} predictions, {n_pairs} prediction-reference pairs")

    start = time.perf_counter()
    scores = per_example_scores(predictions, references, protocol="mean")
    scored = time.perf_counter()
    summary = rouge_summary_from_scores(scores, "mean", n_resamples=args.n_resamples, seed=0)
    # A paired test between the first and second rotation, as `compare` would run per metric.
    tests = {m: paired_test(scores[m][:500], scores[m][500:1000], n_resamples=args.n_resamples) for m in METRICS}
    done = time.perf_counter()

    for metric, entry in summary["rouge"].items():
        print(f"  {metric:9s} {entry['score']:6.2f}  95% CI [{entry['ci_low']:.2f}, {entry['ci_high']:.2f}]"
              f"  summary1 vs summary2 diff {tests[metric]['diff']:+.2f} p={tests[metric]['p_value']:.3f}")
    print(f"scoring: {scored - start:.2f} s; CIs + paired tests ({args.n_resamples} resamples): {done - scored:.2f} s")
    print(f"TOTAL: {done - start:.2f} s for {len(predictions)} predictions (target <= 15 s)")

    if args.check:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
        start = time.perf_counter()
        mismatches = 0
        for i, (pred, refs) in enumerate(zip(predictions, references)):
            pairs = [(scorer.score(ref, pred), scorer.score(sentence_lines(ref), sentence_lines(pred))) for ref in refs]
            for metric in METRICS:
                points = [(split if metric == "rougeLsum" else plain)[metric].fmeasure * 100 for plain, split in pairs]
                mismatches += scores[metric][i] != np.mean(points)
        print(f"check: plain rouge_score took {time.perf_counter() - start:.2f} s; "
              f"{mismatches} of {len(predictions) * len(METRICS)} per-example values differ")
        if mismatches:
            sys.exit(1)


if __name__ == "__main__":
    main()
