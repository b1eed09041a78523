"""Bootstrap CIs and the paired test: coverage of the estimate, narrowing with n, p-values, errors."""

from __future__ import annotations

import numpy as np
import pytest

from dialogtune.significance import bootstrap_ci, paired_test


def _rouge_like(n: int, seed: int) -> np.ndarray:
    """Per-dialogue scores shaped like ROUGE-1 points: mean ~45, sd ~15, within 0-100."""
    return np.clip(np.random.default_rng(seed).normal(45, 15, size=n), 0, 100)


@pytest.mark.parametrize("n", [20, 500])
def test_ci_contains_point_estimate(n):
    scores = _rouge_like(n, seed=n)
    low, high = bootstrap_ci(scores, n_resamples=1000, seed=0)
    assert low < scores.mean() < high


def test_ci_narrows_with_more_examples():
    low20, high20 = bootstrap_ci(_rouge_like(20, seed=1))
    low500, high500 = bootstrap_ci(_rouge_like(500, seed=2))
    # Width shrinks like 1/sqrt(n): 500 examples should be ~5x narrower than 20. A 20-example CI is itself
    # noisy (and the bootstrap runs narrow at small n), so demand only 2x.
    assert (high500 - low500) * 2 < (high20 - low20)
    # And the width is about right for a 95% CI of the mean: 2 * 1.96 * sd / sqrt(n) ~ 2.6 points at n=500.
    assert 1.8 < high500 - low500 < 3.5


def test_ci_is_seeded_and_respects_confidence():
    scores = _rouge_like(100, seed=3)
    assert bootstrap_ci(scores, seed=7) == bootstrap_ci(scores, seed=7)
    assert bootstrap_ci(scores, seed=7) != bootstrap_ci(scores, seed=8)
    low90, high90 = bootstrap_ci(scores, confidence=0.90)
    low99, high99 = bootstrap_ci(scores, confidence=0.99)
    assert high90 - low90 < high99 - low99


def test_ci_of_constant_scores_is_a_point():
    assert bootstrap_ci(np.full(10, 42.0)) == (42.0, 42.0)


def test_ci_in_blocks_matches_shape_for_large_inputs():
    # 5,000 examples x 1,000 resamples exceeds one block, so this exercises the blocked path.
    scores = _rouge_like(5000, seed=4)
    low, high = bootstrap_ci(scores)
    assert low < scores.mean() < high
    assert high - low < 1.5


@pytest.mark.parametrize(
    "scores,kwargs,match",
    [
        (np.array([]), {}, "empty"),
        (np.ones((2, 2)), {}, "1-D"),
        (np.array([1.0, np.nan]), {}, r"non-finite value \(nan\) at index 1"),
        (np.ones(3), {"n_resamples": 0}, "n_resamples"),
        (np.ones(3), {"confidence": 95}, "confidence"),
    ],
)
def test_ci_rejects_bad_input(scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(scores, **kwargs)


def test_paired_identical_runs_are_not_significant():
    scores = _rouge_like(200, seed=5)
    result = paired_test(scores, scores.copy())
    assert result["diff"] == 0.0
    assert result["p_value"] == 1.0
    assert result["p_value"] > 0.5
    assert result["significant"] is False
    assert result["ci_low"] == result["ci_high"] == 0.0


def test_paired_clearly_better_run_is_significant():
    rng = np.random.default_rng(6)
    b = _rouge_like(200, seed=6)
    a = b + 5 + rng.normal(0, 3, size=200)
    result = paired_test(a, b)
    assert result["p_value"] < 0.01
    assert result["significant"] is True
    assert 0 < result["ci_low"] < result["diff"] < result["ci_high"]
    assert result["diff"] == pytest.approx(float(np.mean(a - b)))
    flipped = paired_test(b, a)
    assert flipped["diff"] == pytest.approx(-result["diff"])
    assert flipped["p_value"] == pytest.approx(result["p_value"])


def test_paired_test_uses_the_pairing():
    # A 1-point gain on every dialogue is tiny next to the 30-point spread between dialogues:
    # an unpaired comparison could not see it, a paired one must.
    base = np.random.default_rng(7).uniform(0, 100, size=100)
    result = paired_test(base + 1.0, base)
    assert result["p_value"] < 0.01
    assert result["diff"] == pytest.approx(1.0)


def test_paired_small_noisy_difference_is_not_significant():
    # Differences of +/-10 that cancel out exactly: no evidence either way.
    diffs = np.tile([10.0, -10.0], 50)
    b = _rouge_like(100, seed=8)
    result = paired_test(b + diffs, b)
    assert result["p_value"] > 0.5
    assert result["significant"] is False


def test_paired_test_rejects_length_mismatch():
    with pytest.raises(ValueError, match="`scores_a` has 3 and `scores_b` has 4"):
        paired_test(np.ones(3), np.ones(4))
