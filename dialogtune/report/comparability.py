"""When two runs' per-example scores may be paired: the same split, references, protocol and dialogues.

A paired test between runs scored differently measures the scoring, not the systems: the same
predictions scored with `max` and with `mean` differ by about 6 ROUGE-1 points, "significantly".
"""

from __future__ import annotations

from typing import Any, Sequence


def _names(predictions: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [tuple(p.get("reference_names") or ()) for p in predictions]


def why_not_comparable(
    a_metrics: dict[str, Any], a_predictions: Sequence[dict[str, Any]],
    b_metrics: dict[str, Any], b_predictions: Sequence[dict[str, Any]],
) -> str | None:
    """Why the two runs' scores cannot be paired ("protocol max vs mean; ..."), or None when they can.

    The reference set is compared by content (each dialogue's reference texts and names, as the
    predictions files hold them) rather than by the dataset's name, so the same data read from the hub
    and from a local copy still pairs; the dataset names are quoted when the references differ.
    """
    reasons = []
    for key in ("split", "protocol"):
        if a_metrics.get(key) != b_metrics.get(key):
            reasons.append(f"{key} {a_metrics.get(key)} vs {b_metrics.get(key)}")
    a_ids, b_ids = [p["id"] for p in a_predictions], [p["id"] for p in b_predictions]
    if a_ids != b_ids:
        shared = len(set(a_ids) & set(b_ids))
        reasons.append(f"example ids differ ({len(a_ids)} vs {len(b_ids)} dialogues, {shared} shared)")
    elif _names(a_predictions) != _names(b_predictions) or [p["references"] for p in a_predictions] != [
        p["references"] for p in b_predictions
    ]:
        datasets = (a_metrics.get("dataset"), b_metrics.get("dataset"))
        where = f" (dataset {datasets[0]} vs {datasets[1]})" if datasets[0] != datasets[1] else ""
        reasons.append(f"reference sets differ{where}")
    return "; ".join(reasons) or None
