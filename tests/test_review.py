"""Human evaluation without a browser: sampling, the store's checks, the app's guards, aggregation against
numbers worked out by hand, scripted raters, and the exports that reach the comparison report.

The browser half (keyboard rating, two raters at once, a killed server) is tests/test_review_browser.py.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from fastapi.testclient import TestClient

from dialogtune.cli import main
from dialogtune.configio import load_config
from dialogtune.errors import DialogtuneError
from dialogtune.metrics import METRICS
from dialogtune.review.aggregate import aggregate, bradley_terry
from dialogtune.review.agreement import cohen_kappa, krippendorff_alpha_ordinal
from dialogtune.review.app import MAX_BODY, create_app
from dialogtune.review.pages import rater_url
from dialogtune.review.sampling import REFERENCE, StudyPlan, assignments, sentences
from dialogtune.review.simulate import simulate
from dialogtune.review.store import Refused, Store, open_study
from dialogtune import runs
from dialogtune.runs import RunFolder

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
TOPICS = ["hotel", "work", "travel", "food", "shopping", "school", "health", "sport", "music", "weather"]


def make_runs(folder: Path, count: int = 10, xss: bool = False) -> list[Path]:
    """Three evaluated run folders (original, full, lora) over `count` dialogues, as `evaluate` leaves them.

    With `xss`, the first dialogue and a summary hold markup that must show as text in the review page.
    """
    dialogues = {f"d{i}": f"#Person1#: Shall we talk about {t} on Friday at {i + 1} pm?\n#Person2#: Yes, {t} with Anna at {i + 1} pm."
                 for i, t in enumerate(TOPICS[:count])}
    if xss:
        dialogues["d0"] += f"\n#Person1#: {XSS}"
    outputs = {
        "original": {k: f"They talk about {TOPICS[int(k[1:])]}." for k in dialogues},
        "full": {k: f"They will talk about {TOPICS[int(k[1:])]} with Anna on Friday. It is at {int(k[1:]) + 1} pm." for k in dialogues},
        "lora": {k: f"They talk about {TOPICS[int(k[1:])]} with Bob on Monday." for k in dialogues},
    }
    if xss:
        outputs["lora"]["d0"] = f"They talk. {XSS}"
    made = []
    for rank, (method, texts) in enumerate(outputs.items()):
        config = load_config(None, {"model": "builtin:tiny-t5", "method": method, "output": str(folder / method)})
        with mock.patch.object(runs, "environment", dict):  # library versions: irrelevant here, and slow to import
            run = RunFolder.create(folder / method, config)
        rows = [{"id": k, "prediction": texts[k], "references": [f"They talk about {TOPICS[int(k[1:])]} on Friday."],
                 "reference_names": ["summary1"], "topic": None, "dialogue": d} for k, d in dialogues.items()]
        rouge = {m: {"score": 20.0 + 10 * rank, "ci_low": 10.0, "ci_high": 40.0} for m in METRICS}
        run.write_results("test", rows, {"split": "test", "protocol": "mean", "num_examples": len(rows), "dataset": "d", "rouge": rouge})
        made.append(folder / method)
    return made


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory) -> list[Path]:
    return make_runs(tmp_path_factory.mktemp("runs"))


ANSWER = {"preference": "A", "consistency_a": 4, "relevance_a": 5, "consistency_b": 2, "relevance_b": 3}


# ------------------------------------------------------------------ sampling and assignments

def test_the_sample_is_seeded_recorded_and_shared_by_every_run(run_folders, tmp_path):
    store = open_study(tmp_path / "a.sqlite", run_folders, sample=6, seed=3)
    again = open_study(tmp_path / "b.sqlite", run_folders, sample=6, seed=3)
    other = open_study(tmp_path / "c.sqlite", run_folders, sample=6, seed=4)

    def items(s: Store) -> list[str]:
        with s.connect() as con:
            return [r[0] for r in con.execute("SELECT example_id FROM items ORDER BY id")]

    assert items(store) == items(again) != items(other)
    assert len(items(store)) == 6
    study = store.study()
    assert (study["seed"], study["sample"], study["shared_pairs"]) == (3, 6, 2)
    assert sorted(study["runs"]) == ["full", "lora", "original"]
    systems = {s["name"]: s for s in store.systems()}
    assert systems[REFERENCE]["hidden"] and not systems["full"]["hidden"]
    assert systems["lora"]["rouge1"] == 40.0  # from metrics.json
    assert systems["lora"]["faithfulness_rate"] > systems["full"]["faithfulness_rate"] == 0.0  # Bob, Monday: not in the dialogue
    # Reopening with the same settings continues the study; other runs or another sample are refused.
    assert open_study(tmp_path / "a.sqlite", run_folders, sample=6, seed=3).study() == study
    assert open_study(tmp_path / "a.sqlite", []).study() == study
    with pytest.raises(DialogtuneError, match="other runs"):
        open_study(tmp_path / "a.sqlite", run_folders[:2], sample=6, seed=3)
    with pytest.raises(DialogtuneError, match="--sample 6 --seed 3"):
        open_study(tmp_path / "a.sqlite", run_folders, sample=5, seed=3)


def test_too_large_a_sample_is_one_clear_error(run_folders, tmp_path):
    with pytest.raises(DialogtuneError, match="--sample 11 is not possible: 10 test dialogues .* between 1 and 10"):
        open_study(tmp_path / "x.sqlite", run_folders, sample=11)
    assert not (tmp_path / "x.sqlite").exists()


def test_pairs_and_sides_are_seeded_per_rater_and_item_and_shared_items_agree():
    systems = ["full", "lora", "original", REFERENCE]
    items = [(i, i <= 3) for i in range(1, 13)]
    alice = assignments("alice", items, systems, 0)
    assert alice == assignments("alice", items, systems, 0)  # same rater, same seed: the same assignment
    bob = assignments("bob", items, systems, 0)
    assert alice != bob
    pair = {r[0]: frozenset(r[2:]) for r in alice}
    assert all(pair[i] == frozenset(r[2:]) for r in bob for i in (r[0],) if i <= 3)  # shared items: same pair
    assert {r[0] for r in alice[:3]} == {1, 2, 3}  # shared items first, so early quitters still overlap
    own = [frozenset(r[2:]) for r in alice[3:]]
    assert all(own.count(p) in (1, 2) for p in set(own)) and len(set(own)) == 6  # 9 items cycle through the 6 pairs
    sides = {(r[2], r[3]) for r in alice + bob}
    assert any((b, a) in sides for a, b in sides)  # both sides occur


def test_summaries_split_into_the_sentences_a_rater_can_mark():
    text = "Ms. Lee applies to be a chef at Umbrella. #Person2# offers Dr. J. Smith the job! She starts at 9 a.m. on Monday."
    assert sentences(text) == ["Ms. Lee applies to be a chef at Umbrella.", "#Person2# offers Dr. J. Smith the job!",
                               "She starts at 9 a.m. on Monday."]
    assert sentences("no full stop") == ["no full stop"]


# ------------------------------------------------------------------ the store's checks

@pytest.fixture
def store(run_folders, tmp_path) -> Store:
    return open_study(tmp_path / "s.sqlite", run_folders, sample=4, seed=0)


def test_answers_are_checked_final_and_kept_apart(store):
    store.start("alice")
    store.start("bob")
    item = store.next_item("alice")["item_id"]
    assert store.record("alice", item, ANSWER)
    assert store.record("alice", item, ANSWER) is False  # a resubmit of the same answer changes nothing
    with pytest.raises(Refused, match="answers are final") as err:
        store.record("alice", item, {**ANSWER, "preference": "B"})
    assert err.value.status == 409
    with pytest.raises(Refused, match="not assigned to rater 'mallory'") as err:
        store.record("mallory", item, ANSWER)
    assert err.value.status == 403
    for bad, message in [({"consistency_a": 6}, "consistency_a is 6"), ({"relevance_b": 0}, "relevance_b is 0"),
                         ({"preference": "C"}, "preference is 'C'"), ({"unsupported_a": [7]}, "unsupported_a is \\[7\\]")]:
        with pytest.raises(Refused, match=message):
            store.record("bob", item, {**ANSWER, **bad})
    store.record("bob", item, {**ANSWER, "preference": "tie"})  # bob's answer to the same item is his own row
    rows = {(j["rater"], j["preference"]) for j in store.judgements()}
    assert rows == {("alice", "A"), ("bob", "tie")}
    assert store.progress("alice") == (1, 4) and store.next_item("alice")["item_id"] != item
    with sqlite3.connect(store.path) as con, pytest.raises(sqlite3.DatabaseError, match="judgements are final"):
        con.execute("UPDATE judgements SET preference = 'B'")
    with sqlite3.connect(store.path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ------------------------------------------------------------------ the app's guards

def test_the_page_escapes_text_and_the_app_checks_every_form(tmp_path):
    store = open_study(tmp_path / "x.sqlite", make_runs(tmp_path / "xss", 3, xss=True), sample=3)
    client, eve = TestClient(create_app(store)), "<b onclick=x>eve"
    response = client.post("/start", data={"name": eve}, follow_redirects=True)
    assert response.status_code == 200 and "default-src 'none'" in response.headers["content-security-policy"]
    assert "<b onclick" not in response.text and "&lt;b onclick=x&gt;eve" in response.text
    pages = [response.text]
    for _ in range(2):  # the markup is in one dialogue; every item's page is seen
        client.post(f"{rater_url(eve)}/{store.next_item(eve)['item_id']}", data=ANSWER)
        pages.append(client.get(rater_url(eve)).text)
    assert any("&lt;script&gt;window.__xss = 1&lt;/script&gt;&lt;img src=x onerror=&quot;" in p for p in pages)
    assert not any("<script>window" in p or "<img" in p for p in pages)

    item = store.next_item(eve)["item_id"]
    url = f"{rater_url(eve)}/{item}"
    assert client.post(url, data={**ANSWER, "consistency_a": "9"}).json() == {"error": "consistency_a is 9; answer a whole number from 1 to 5"}
    assert client.post(url, data={**ANSWER, "extra": "1"}).status_code == 422
    assert client.post(url, data={k: v for k, v in ANSWER.items() if k != "preference"}).json()["error"].startswith("preference is missing")
    big = client.post(url, content=b"preference=" + b"A" * (MAX_BODY + 1), headers={"content-type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413 and f"over the server's limit of {MAX_BODY} bytes" in big.json()["error"]
    assert client.post(url, json=ANSWER).status_code == 415
    assert client.post(f"/rate/mallory/{item}", data=ANSWER).status_code == 403  # not mallory's item
    assert client.post(url, data=ANSWER, headers={"origin": "http://evil.example"}).status_code == 403
    assert client.post("/start", data={"name": "a/b"}).status_code == 422
    assert store.progress(eve) == (2, 3)  # none of the refused posts was stored


def test_a_token_guards_the_study_and_binding_elsewhere_needs_one(store, capsys):
    client = TestClient(create_app(store, token="s3cret"))
    assert 'name="token"' in client.get("/").text
    assert client.get("/rate/alice").status_code == 401
    assert client.post("/start", data={"name": "alice", "token": "wrong"}).status_code == 401
    assert client.post("/start", data={"name": "alice", "token": "s3cret"}, follow_redirects=True).status_code == 200
    assert "Summary A" in client.get("/rate/alice").text  # the cookie carries the token from now on
    assert main(["review", "--db", str(store.path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--host 0.0.0.0 makes the review page reachable" in err and "--token" in err


# ------------------------------------------------------------------ aggregation, by hand

def _j(rater: str, item: int, a: str, b: str, pref: str, ca: int = 3, cb: int = 3, rouge=(None, None), facts=(0, 0)) -> dict:
    return {"rater": rater, "item_id": item, "system_a": a, "system_b": b, "preference": pref,
            "consistency_a": ca, "relevance_a": 4, "consistency_b": cb, "relevance_b": 4,
            "unsupported_a": [], "unsupported_b": [0] if pref == "A" else [], "rouge1_a": rouge[0], "rouge1_b": rouge[1],
            "facts_a": facts[0], "facts_b": facts[1]}


def test_aggregation_matches_numbers_computed_by_hand():
    # Two raters, four dialogues, systems X and Y (shown on either side).
    judgements = [
        _j("r1", 1, "X", "Y", "A", 5, 2, rouge=(30, 20), facts=(0, 1)), _j("r1", 2, "Y", "X", "B", 2, 4, rouge=(30, 20)),
        _j("r1", 3, "X", "Y", "tie", 3, 3), _j("r1", 4, "X", "Y", "B", 2, 5, rouge=(40, 10), facts=(2, 0)),
        _j("r2", 1, "Y", "X", "B", 1, 5), _j("r2", 2, "X", "Y", "tie", 4, 4),
        _j("r2", 3, "Y", "X", "tie", 3, 3), _j("r2", 4, "Y", "X", "A", 5, 3),
    ]
    systems = [{"name": "X", "rouge1": 30.0, "faithfulness_rate": 0.1}, {"name": "Y", "rouge1": 20.0, "faithfulness_rate": 0.3}]
    result = aggregate(judgements, systems, resamples=200)
    assert result["pairs"] == [{"a": "X", "b": "Y", "a_wins": 3, "ties": 3, "b_wins": 2, "n": 8}]
    x, y = (next(s for s in result["systems"] if s["name"] == n) for n in "XY")
    assert (x["wins"], x["ties"], x["losses"], x["win_rate"]) == (3, 3, 2, 4.5 / 8)
    # Ties half a win each, plus one virtual tie: X 3 + 1.5 + 0.5 = 5, Y 2 + 1.5 + 0.5 = 4; p_X / p_Y = 5 / 4.
    assert x["bradley_terry"] == pytest.approx(math.log(5 / 4) / 2, abs=1e-4) and y["bradley_terry"] == -x["bradley_terry"]
    assert x["bradley_terry_ci"][0] <= x["bradley_terry"] <= x["bradley_terry_ci"][1]
    assert x["consistency"]["mean"] == pytest.approx((5 + 4 + 3 + 2 + 5 + 4 + 3 + 3) / 8)
    assert x["marked_unsupported"] == y["marked_unsupported"] == 1 / 8  # side B of the two "A" answers: Y once, X once
    # Preference units coded X-better 2, tie 1, Y-better 0: (2,2) (2,1) (1,1) (0,0). Ordinal alpha by hand:
    # n = (2, 3, 3); delta^2: 01 = 6.25, 12 = 9, 02 = 30.25; D_o sum 18, D_e sum 600; alpha = 1 - 7 * 18 / 600.
    preference = result["agreement"]["preference"]
    assert preference["alpha"] == pytest.approx(0.79) and preference["units"] == 4 and preference["observed_agreement"] == 0.75
    # Cohen's kappa: p_o = 3/4, p_e = (1*1 + 1*2 + 2*1) / 16 = 5/16.
    assert result["agreement"]["cohen_kappa_preference"]["kappa"] == pytest.approx((0.75 - 5 / 16) / (1 - 5 / 16))
    # Decisive judgements where ROUGE-1 differs: r1 items 1 (picked 30 over 20), 2 (picked 20 over 30), 4 (picked 10 over 40).
    assert result["correlation"]["judgement_level"]["rouge1"] == {"judgements": 3, "agree": 1, "share": 1 / 3}
    assert result["correlation"]["judgement_level"]["unsupported"] == {"judgements": 2, "agree": 2, "share": 1.0}
    assert result["correlation"]["system_level"]["rouge1"] == {"n": 2, "spearman": None, "pearson": None}  # 2 systems: too few


def test_agreement_statistics_on_textbook_cases():
    assert krippendorff_alpha_ordinal({1: [1, 1], 2: [2, 2], 3: [3, 3, 3]})["alpha"] == 1.0
    assert krippendorff_alpha_ordinal({1: [1, 1], 2: [1, 1]})["alpha"] is None  # no variation: undefined
    assert krippendorff_alpha_ordinal({1: [5], 2: [1]})["units"] == 0  # single ratings pair with nothing
    near = krippendorff_alpha_ordinal({1: [1, 2], 2: [4, 5], 3: [1, 1], 4: [5, 5]})["alpha"]
    far = krippendorff_alpha_ordinal({1: [1, 5], 2: [5, 1], 3: [1, 1], 4: [5, 5]})["alpha"]
    assert 1 > near > 0.5 > far  # ordinal: 1 vs 5 is a bigger disagreement than 1 vs 2
    # By hand: n_1 = n_5 = 4, delta^2 = (8 - 4)^2 = 16; D_o sum 4 * 16, D_e sum 2 * 4 * 4 * 16; 1 - 7 * 64 / 512.
    assert far == pytest.approx(0.125)
    assert krippendorff_alpha_ordinal({1: [1, 5], 2: [5, 1]})["alpha"] == pytest.approx(-0.5)  # worse than chance
    assert cohen_kappa(["A", "B", "A", "B"], ["A", "B", "A", "B"]) == 1.0
    assert cohen_kappa(["A", "A", "B", "B"], ["A", "B", "A", "B"]) == 0.0


def test_bradley_terry_solves_its_likelihood_equations_for_three_systems():
    wins = np.array([[0, 6, 8], [3, 0, 5], [1, 2, 0]], dtype=float)
    beta = bradley_terry(wins, prior_ties=1.0)
    w = wins + 0.5 * (1 - np.eye(3))
    p = np.exp(beta)
    expected = ((w + w.T) * p[:, None] / (p[:, None] + p[None, :])).sum(axis=1)
    assert np.allclose(expected, w.sum(axis=1), atol=1e-8) and beta.sum() == pytest.approx(0, abs=1e-12)
    assert list(np.argsort(-beta)) == [0, 1, 2]
    assert np.allclose(bradley_terry(np.zeros((3, 3))), 0)  # no judgements: all equal


# ------------------------------------------------------------------ scripted raters

def _synthetic(path: Path, items: int = 24) -> Store:
    """A study of four systems built by hand: no run folders needed."""
    names = ["a", "b", "c", REFERENCE]
    systems = [{"name": n, "folder": None, "method": n, "rouge1": r, "faithfulness_rate": f, "hidden": n == REFERENCE}
               for n, r, f in zip(names, [30.0, 25.0, 20.0, None], [0.1, 0.2, 0.4, 0.05])]
    plan = [{"example_id": f"e{i:02d}", "dialogue": f"#Person1#: hello {i}", "shared_pair": i < items // 2,
             "outputs": {n: {"summary": f"{n} says hello {i}.", "rouge1": None, "unsupported": 0} for n in names}}
            for i in range(items)]
    return Store.create(path, StudyPlan({"seed": 0, "sample": items, "shared_pairs": items // 2, "runs": {}}, systems, plan))


TRUTH = {REFERENCE: 1.5, "a": 0.7, "b": 0.0, "c": -1.0}


def test_scripted_raters_recover_the_known_ranking(tmp_path):
    store = _synthetic(tmp_path / "sim.sqlite")
    simulate(store, TRUTH, raters=3, noise=0.3, seed=1)
    result = aggregate(store.judgements(), store.systems(), resamples=200)
    assert [s["name"] for s in result["systems"]] == [REFERENCE, "a", "b", "c"]
    assert result["judgements"] == 3 * 24 and result["raters"] == {"sim-1": 24, "sim-2": 24, "sim-3": 24}
    strengths = {s["name"]: s["bradley_terry"] for s in result["systems"]}
    assert result["correlation"]["system_level"]["rouge1"]["spearman"] == pytest.approx(1.0)  # a > b > c in ROUGE-1 too
    assert strengths["a"] > strengths["b"]


def test_agreement_falls_as_rater_noise_grows(tmp_path):
    alphas = []
    for noise in (0.1, 0.8, 4.0):
        store = _synthetic(tmp_path / f"n{noise}.sqlite")
        simulate(store, TRUTH, raters=4, noise=noise, seed=2)
        alphas.append(aggregate(store.judgements(), store.systems(), resamples=50)["agreement"]["preference"]["alpha"])
    assert alphas[0] > alphas[1] > alphas[2]
    assert alphas[0] > 0.8 and alphas[2] < 0.4


# ------------------------------------------------------------------ exports and the report

def test_results_export_and_the_human_section_of_the_report(run_folders, tmp_path, capsys):
    db = tmp_path / "sim.sqlite"
    truth = "reference=1.5,full=0.8,lora=0.2,original=-1"
    assert main(["review-simulate", *map(str, run_folders), "--db", str(db), "--truth", truth, "--sample", "8", "--raters", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| reference (hidden human reference) |" in printed and "Krippendorff's alpha (ordinal)" in printed
    assert main(["review-results", "--db", str(db), "--output", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "human-eval.json").read_text())
    assert results["judgements"] == 16 and results["study"]["sample"] == 8
    csv_rows = (tmp_path / "out" / "judgements.csv").read_text().splitlines()
    assert len(csv_rows) == 17 and csv_rows[0].startswith("rater,example_id,item_id,system_a,system_b,preference,preferred")
    assert (tmp_path / "out" / "systems.csv").read_text().count("\n") == 5
    assert main(["compare", *map(str, run_folders), "--output", str(tmp_path / "report"), "--human", str(tmp_path / "out" / "human-eval.json")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [s["name"] for s in report["human_evaluation"]["systems"]] == [s["name"] for s in results["systems"]]
    assert report["human_evaluation"]["raters"] == 2 and report["human_evaluation"]["not_in_study"] == []
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Human evaluation" in markdown and "Bradley–Terry strength vs ROUGE-1, across 3 systems" in markdown
    assert "<h2>Human evaluation</h2>" in (tmp_path / "report" / "report.html").read_text()
    # The database works as --human too; a file that is neither is one line.
    assert main(["compare", *map(str, run_folders[:2]), "--output", str(tmp_path / "r2"), "--human", str(db)]) == 0
    assert json.loads((tmp_path / "r2" / "report.json").read_text())["human_evaluation"]["not_in_report"] == ["lora"]
    assert main(["compare", *map(str, run_folders), "--output", str(tmp_path / "r3"), "--human", str(tmp_path / "out" / "pairs.csv")]) == 2
    assert "pairs.csv is not human-evaluation results; pass the human-eval.json" in capsys.readouterr().err
    assert main(["review-simulate", *map(str, run_folders), "--db", str(tmp_path / "t.sqlite"), "--truth", "full=1"]) == 2
    assert "missing ['lora', 'original', 'reference']" in capsys.readouterr().err and not (tmp_path / "t.sqlite").exists()
