"""Agreement between raters: Krippendorff's alpha with the ordinal metric, and Cohen's kappa for two raters.

Alpha is the statistic the review reports for every question, because it takes any number of raters,
skips units only one rater judged, and with the ordinal metric counts "A better" against "B better"
as a bigger disagreement than either against "tie" (and 1 against 5 as bigger than 4 against 5).
Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011), sections on the coincidence
matrix and the ordinal metric. Cohen's kappa (unweighted) is added for the preference when exactly
two raters judged shared units, as the familiar two-rater figure.
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable

import numpy as np


def krippendorff_alpha_ordinal(units: dict[Hashable, list[int]]) -> dict[str, float | int | None]:
    """Alpha over `units` (unit -> the values raters gave it), ordinal metric.

    Returns ``{"alpha", "units", "values", "observed_agreement"}``: units and values counted are those
    with two or more values; ``observed_agreement`` is the share of within-unit value pairs that are
    equal. ``alpha`` is None when fewer than two values are pairable or every value is the same (then
    no disagreement is expected and alpha is undefined).
    """
    pairable = {u: v for u, v in units.items() if len(v) >= 2}
    categories = sorted({x for v in pairable.values() for x in v})
    index = {c: i for i, c in enumerate(categories)}
    k = len(categories)
    coincidence = np.zeros((k, k))
    agree = pairs = 0
    for values in pairable.values():
        m = len(values)
        for i, x in enumerate(values):
            for j, y in enumerate(values):
                if i != j:
                    coincidence[index[x], index[y]] += 1.0 / (m - 1)
                    if j > i:
                        pairs += 1
                        agree += x == y
    result: dict[str, float | int | None] = {
        "alpha": None, "units": len(pairable), "values": int(sum(map(len, pairable.values()))),
        "observed_agreement": agree / pairs if pairs else None,
    }
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    if k < 2 or n < 2:
        return result
    # Ordinal distance: (sum of n_g from c to k, minus half of n_c and n_k) squared.
    cumulative = np.concatenate([[0.0], np.cumsum(n_c)])
    delta = np.zeros((k, k))
    for c in range(k):
        for d in range(k):
            lo, hi = min(c, d), max(c, d)
            delta[c, d] = (cumulative[hi + 1] - cumulative[lo] - (n_c[c] + n_c[d]) / 2) ** 2
    observed = (coincidence * delta).sum()
    expected = (np.outer(n_c, n_c) * delta).sum()
    result["alpha"] = float(1.0 - (n - 1) * observed / expected)
    return result


def cohen_kappa(first: list[Hashable], second: list[Hashable]) -> float | None:
    """Unweighted Cohen's kappa of two raters' labels on the same units (None if chance agreement is 1)."""
    n = len(first)
    if n == 0 or n != len(second):
        return None
    observed = sum(a == b for a, b in zip(first, second)) / n
    ca, cb = Counter(first), Counter(second)
    expected = sum(ca[c] * cb[c] for c in ca) / n**2
    return None if expected == 1 else (observed - expected) / (1 - expected)
