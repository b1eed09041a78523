"""Resampling statistics over per-example scores: bootstrap confidence intervals and paired tests.

Every function resamples *examples* (dialogues), never tokens or references, because the dialogue is
the unit a test set is drawn in. All randomness comes from ``numpy.random.default_rng(seed)``, so the
same inputs and seed give the same numbers on every machine.
"""

from __future__ import annotations

import numpy as np

# Resampled means are computed in blocks of at most this many drawn indices, so a large test set with
# many resamples does not allocate an (n_resamples x n) matrix in one go (10k x 10k would be 800 MB).
_MAX_BLOCK_ELEMENTS = 4_000_000


def _as_scores(scores: np.ndarray, name: str) -> np.ndarray:
    """Return ``scores`` as a finite 1-D float array, or raise ValueError saying what is wrong."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one score per example); got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty; statistics need at least one example.")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"`{name}` holds a non-finite value ({arr[bad]}) at index {bad}; drop or fix that example.")
    return arr


def _check_resamples(n_resamples: int) -> None:
    if int(n_resamples) < 1:
        raise ValueError(f"`n_resamples` must be >= 1; got {n_resamples}. 1000 is a sensible default.")


def _resampled_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` bootstrap resamples (with replacement) of ``values``."""
    n = values.size
    block = max(1, _MAX_BLOCK_ELEMENTS // n)
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[idx].mean(axis=1)
    return means


def bootstrap_ci(
    scores: np.ndarray, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``scores``, resampling examples with replacement.

    Args:
        scores: one score per example (e.g. ROUGE-1 points per dialogue).
        n_resamples: number of bootstrap resamples; 1000 gives CI ends stable to about 0.1 point on DialogSum.
        seed: seeds the resampling, so the interval is reproducible.
        confidence: two-sided coverage, e.g. 0.95 for a 95% interval.
    """
    values = _as_scores(scores, "scores")
    _check_resamples(n_resamples)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be strictly between 0 and 1; got {confidence}. Use e.g. 0.95.")
    means = _resampled_means(values, int(n_resamples), np.random.default_rng(seed))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_test(scores_a: np.ndarray, scores_b: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Compare two systems scored on the same examples, pairing scores by example.

    Returns ``{"diff", "ci_low", "ci_high", "p_value", "significant"}``:
    ``diff`` is mean(a - b); the CI is a 95% paired bootstrap interval of that mean;
    ``p_value`` is two-sided, from a paired approximate-randomisation (sign-flip) test: under the null
    hypothesis that the systems are exchangeable, each example's difference is equally likely to have
    either sign. ``significant`` is ``p_value < 0.05``.

    The p-value is ``(1 + #{|flipped mean| >= |observed mean|}) / (1 + n_resamples)``, so it is never 0
    (the smallest reportable value is 1 / (n_resamples + 1)) and identical inputs give exactly 1.0.
    """
    a = _as_scores(scores_a, "scores_a")
    b = _as_scores(scores_b, "scores_b")
    if a.shape != b.shape:
        raise ValueError(
            f"paired_test needs scores for the same examples: `scores_a` has {a.size} and `scores_b` has {b.size}. "
            "Score both systems on the same split, in the same order."
        )
    _check_resamples(n_resamples)
    n_resamples = int(n_resamples)
    rng = np.random.default_rng(seed)
    diffs = a - b
    observed = float(diffs.mean())

    low, high = np.quantile(_resampled_means(diffs, n_resamples, rng), [0.025, 0.975])

    # Sign-flip test, in blocks: (signs @ diffs) / n is the mean of one randomised pairing per row.
    n = diffs.size
    block = max(1, _MAX_BLOCK_ELEMENTS // n)
    # Tolerance so that flips equal to the observed statistic up to float rounding count as "as extreme";
    # without it identical runs could get p < 1 from summation-order noise.
    threshold = abs(observed) - 1e-12 * max(1.0, float(np.abs(diffs).max()))
    extreme = 0
    for start in range(0, n_resamples, block):
        rows = min(block, n_resamples - start)
        signs = rng.integers(0, 2, size=(rows, n)) * 2.0 - 1.0
        extreme += int(np.count_nonzero(np.abs(signs @ diffs) / n >= threshold))
    p_value = (1 + extreme) / (1 + n_resamples)
    return {
        "diff": observed,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(p_value),
        "significant": bool(p_value < 0.05),
    }
