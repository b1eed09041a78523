"""A study's judgements -> results: win/tie/loss, Bradley-Terry strengths with CIs, criterion means, agreement,
and how human preference lines up with ROUGE-1 and with unsupported facts.

Bradley-Terry: P(i beats j) = p_i / (p_i + p_j), fitted by maximum likelihood with Hunter's (2004) MM
updates. A tie counts as half a win for each side. One virtual tie per pair of systems is added
(half a win each way), so a system that won or lost every judgement still gets a finite strength; it
pulls strengths slightly towards equal. Strengths are reported as log p, centred to mean 0; a
difference d means the stronger is preferred with probability 1 / (1 + e^-d). CIs are 95% percentile
bootstrap intervals resampling dialogues with all their judgements, as `significance.py` resamples
dialogues: a dialogue is the unit the study drew.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from dialogtune.review.agreement import cohen_kappa, krippendorff_alpha_ordinal
from dialogtune.significance import bootstrap_ci

PRIOR_TIES = 1.0  # virtual ties per pair of systems (see the module docstring)
CRITERIA = ("consistency", "relevance")
METHOD = {
    "preference": "blind pairwise preference (A, B or tie), sides and pairs randomised per rater and dialogue",
    "bradley_terry": "log-strength, mean 0; ties count half a win each way; one virtual tie per pair of systems; "
                     "95% percentile bootstrap CI resampling dialogues",
    "criteria": "1-5 scales (SummEval): consistency = facts supported by the dialogue, relevance = covers what matters; "
                "mean per system with a 95% bootstrap CI",
    "agreement": "Krippendorff's alpha, ordinal metric, over units judged by two or more raters "
                 "(preference: dialogue and pair; scales: dialogue and system); Cohen's kappa when exactly two raters share units",
    "correlation": "system level: Spearman and Pearson of Bradley-Terry strength against ROUGE-1 (metrics.json) and against "
                   "unsupported facts per summary (faithfulness.py); judgement level: how often the preferred summary "
                   "is also the one with the higher ROUGE-1 / fewer unsupported facts, where they differ",
}


def winner(j: dict[str, Any]) -> str | None:
    """The system a judgement preferred, None for a tie."""
    return {"A": j["system_a"], "B": j["system_b"]}.get(j["preference"])


def _wins_matrix(judgements: list[dict[str, Any]], index: dict[str, int]) -> np.ndarray:
    """W[i, j] = wins of i over j, ties counting half each way."""
    w = np.zeros((len(index), len(index)))
    for j in judgements:
        a, b, won = index[j["system_a"]], index[j["system_b"]], winner(j)
        if won is None:
            w[a, b] += 0.5
            w[b, a] += 0.5
        elif won == j["system_a"]:
            w[a, b] += 1
        else:
            w[b, a] += 1
    return w


def bradley_terry(wins: np.ndarray, prior_ties: float = PRIOR_TIES, tol: float = 1e-10, max_iter: int = 100_000) -> np.ndarray:
    """Log-strengths (mean 0) maximising the Bradley-Terry likelihood of `wins` plus `prior_ties` per pair.

    `wins` is (k, k), or (..., k, k) to fit many tables at once (the bootstrap fits all its resamples together).
    """
    k = wins.shape[-1]
    w = wins + prior_ties / 2 * (1 - np.eye(k))
    games = w + np.swapaxes(w, -1, -2)
    total = w.sum(axis=-1)
    log_p = np.zeros(total.shape)
    for _ in range(max_iter):
        p = np.exp(log_p)
        new = np.log(total / (games / (p[..., :, None] + p[..., None, :])).sum(axis=-1))
        new -= new.mean(axis=-1, keepdims=True)
        done = np.max(np.abs(new - log_p)) < tol
        log_p = new
        if done:
            break
    return log_p


def _bt_with_ci(judgements: list[dict[str, Any]], names: list[str], resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    index = {n: i for i, n in enumerate(names)}
    items = sorted({j["item_id"] for j in judgements})
    per_item = np.stack([_wins_matrix([j for j in judgements if j["item_id"] == i], index) for i in items])
    point = bradley_terry(per_item.sum(axis=0))
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(items), len(items)), minlength=len(items)) for _ in range(resamples)])
    draws = bradley_terry(np.tensordot(counts, per_item, axes=1))
    return point, np.quantile(draws, [0.025, 0.975], axis=0)


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort()
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for v in np.unique(values):  # ties share their mean rank
        ranks[values == v] = ranks[values == v].mean()
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _system_correlation(strength: dict[str, float], systems: list[dict[str, Any]], key: str) -> dict[str, Any]:
    rows = [(strength[s["name"]], s[key]) for s in systems if s.get(key) is not None and s["name"] in strength]
    x, y = np.array([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=float)
    return {"n": len(rows), "spearman": _pearson(_ranks(x), _ranks(y)) if rows else None, "pearson": _pearson(x, y) if rows else None}


def _judgement_agreement(judgements: list[dict[str, Any]], key: str, higher_is_better: bool) -> dict[str, Any]:
    """Among decisive judgements whose two summaries differ on `key`, how often the human picked the better one."""
    agree = counted = 0
    for j in judgements:
        a, b = j[f"{key}_a"], j[f"{key}_b"]
        if j["preference"] == "tie" or a is None or b is None or a == b:
            continue
        counted += 1
        better = "A" if (a > b) == higher_is_better else "B"
        agree += j["preference"] == better
    return {"judgements": counted, "agree": agree, "share": agree / counted if counted else None}


def _agreement(judgements: list[dict[str, Any]]) -> dict[str, Any]:
    preference: dict[Any, list[int]] = {}
    by_rater: dict[Any, dict[str, int]] = {}
    scales: dict[str, dict[Any, list[int]]] = {c: {} for c in CRITERIA}
    for j in judgements:
        first, second = sorted((j["system_a"], j["system_b"]))
        won = winner(j)
        code = 1 if won is None else 2 if won == first else 0  # ordinal: second better < tie < first better
        unit = (j["item_id"], first, second)
        preference.setdefault(unit, []).append(code)
        by_rater.setdefault(unit, {})[j["rater"]] = code
        for c in CRITERIA:
            for side in "ab":
                scales[c].setdefault((j["item_id"], j[f"system_{side}"]), []).append(j[f"{c}_{side}"])
    result = {"preference": krippendorff_alpha_ordinal(preference)}
    result.update({c: krippendorff_alpha_ordinal(scales[c]) for c in CRITERIA})
    shared = [u for u in by_rater.values() if len(u) >= 2]
    raters = sorted({r for u in shared for r in u})
    kappa = None
    if len(raters) == 2:
        kappa = {"raters": raters, "units": len(shared),
                 "kappa": cohen_kappa([u[raters[0]] for u in shared], [u[raters[1]] for u in shared])}
    result["cohen_kappa_preference"] = kappa
    return result


def aggregate(judgements: list[dict[str, Any]], systems: list[dict[str, Any]], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The results of a study (the human-evaluation JSON contract; see METHOD for what each part means).

    `judgements` are `Store.judgements()` rows; `systems` are `Store.systems()` rows (name, hidden,
    rouge1, faithfulness_rate).
    """
    names = [s["name"] for s in systems]
    pairs = []
    for a, b in itertools.combinations(names, 2):
        rows = [j for j in judgements if {j["system_a"], j["system_b"]} == {a, b}]
        won = [winner(j) for j in rows]
        pairs.append({"a": a, "b": b, "a_wins": won.count(a), "ties": won.count(None), "b_wins": won.count(b), "n": len(rows)})
    strength, ci = (_bt_with_ci(judgements, names, resamples, seed) if judgements
                    else (np.zeros(len(names)), np.zeros((2, len(names)))))
    out_systems = []
    for i, s in enumerate(systems):
        mine = [(j, side) for j in judgements for side in "ab" if j[f"system_{side}"] == s["name"]]
        won = [winner(j) for j, _ in mine]
        wins, ties = won.count(s["name"]), won.count(None)
        entry = {"name": s["name"], "hidden": bool(s.get("hidden")), "judgements": len(mine),
                 "wins": wins, "ties": ties, "losses": len(mine) - wins - ties,
                 "win_rate": (wins + ties / 2) / len(mine) if mine else None,
                 "bradley_terry": round(float(strength[i]), 4), "bradley_terry_ci": [round(float(c), 4) for c in ci[:, i]],
                 "marked_unsupported": sum(bool(j[f"unsupported_{side}"]) for j, side in mine) / len(mine) if mine else None,
                 "rouge1": s.get("rouge1"), "faithfulness_rate": s.get("faithfulness_rate")}
        for c in CRITERIA:
            values = np.array([j[f"{c}_{side}"] for j, side in mine], dtype=float)
            entry[c] = ({"mean": float(values.mean()), "ci": list(bootstrap_ci(values, resamples, seed)), "n": len(values)}
                        if len(values) else {"mean": None, "ci": None, "n": 0})
        out_systems.append(entry)
    ranked = sorted(out_systems, key=lambda e: -e["bradley_terry"])
    by_name = {e["name"]: e["bradley_terry"] for e in out_systems if e["judgements"]}
    return {
        "kind": "dialogtune human evaluation",
        "judgements": len(judgements),
        "items": len({j["item_id"] for j in judgements}),
        "raters": dict(sorted({r: sum(j["rater"] == r for j in judgements) for r in {j["rater"] for j in judgements}}.items())),
        "resamples": resamples,
        "method": METHOD,
        "systems": ranked,
        "pairs": pairs,
        "agreement": _agreement(judgements),
        "correlation": {
            "system_level": {"rouge1": _system_correlation(by_name, systems, "rouge1"),
                             "unsupported_rate": _system_correlation(by_name, systems, "faithfulness_rate")},
            "judgement_level": {"rouge1": _judgement_agreement(judgements, "rouge1", higher_is_better=True),
                                "unsupported": _judgement_agreement(judgements, "facts", higher_is_better=False)},
        },
    }
