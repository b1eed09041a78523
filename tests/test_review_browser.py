"""The review page in a real browser: Playwright driving Debian's chromium headless against a real
`dialogtune review` server process (killed with SIGKILL and restarted in one test).

Skipped, with the reason, only when playwright or chromium is absent (`make test` installs chromium).
Aggregation against hand-computed numbers is in tests/test_review.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_review import XSS, make_runs

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("chromium is absent: install Debian's chromium (`make browser` or apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

ITEMS = 6
REPO = Path(__file__).resolve().parents[1]


class ReviewServer:
    """`python -m dialogtune review ...` as a child process on a free loopback port."""

    def __init__(self, db: Path, runs: list[Path]) -> None:
        self.db, self.runs = db, runs
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "dialogtune", "-q", "review", *map(str, self.runs), "--db", str(self.db),
                   "--sample", str(ITEMS), "--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(600):  # up to a minute on a loaded machine; the loop ends as soon as it answers
            if self.process.poll() is not None:
                raise AssertionError(f"review server exited: {self.process.stdout.read()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("review server did not come up")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review")
    runs = make_runs(folder / "runs", count=ITEMS, xss=True)
    server = ReviewServer(folder / "study.sqlite", runs)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


def judgements(db: Path, rater: str) -> list[dict]:
    """The rater's judgements in the order they were assigned, read straight from the database."""
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(
            "SELECT j.*, a.system_a AS assigned_a, a.system_b AS assigned_b FROM judgements j "
            "JOIN assignments a USING (rater, item_id) WHERE j.rater = ? ORDER BY a.position", (rater,))]


def sign_in(browser, server: ReviewServer, name: str):
    page = browser.new_context().new_page()
    page.goto(server.url)
    page.fill("input[name=name]", name)
    page.keyboard.press("Enter")
    expect(page.locator("#rater")).to_have_text(name)
    return page


def keys(page, sequence: str) -> None:
    """Press each key of `sequence`; "<" stands for Backspace."""
    for key in sequence:
        page.keyboard.press("Backspace" if key == "<" else key)


def answered(page, count: int) -> None:
    expect(page.locator("#progress-text")).to_have_text(f"{count} of {ITEMS} answered")


def test_keyboard_rating_progress_and_two_raters_at_once(server, browser):
    alice, bob = sign_in(browser, server, "alice"), sign_in(browser, server, "bob")
    answered(alice, 0)
    # Enter before every answer is given submits nothing and highlights what is missing.
    keys(alice, "a4")
    alice.keyboard.press("Enter")
    expect(alice.locator("#missing")).to_be_visible()
    expect(alice.locator("#f-relevance_a")).to_have_class(re.compile(r"\bmissing\b"))
    expect(alice.locator("#f-consistency_a")).not_to_have_class(re.compile(r"\bmissing\b"))
    keys(alice, "5132<2")  # Backspace clears the last score: relevance_b ends up 2
    alice.locator("#summary-b .sentence input").first.check()  # mark an unsupported sentence with the mouse
    keys(bob, "b2345")
    alice.keyboard.press("Enter")  # both submit together
    bob.keyboard.press("Enter")
    answered(alice, 1)
    answered(bob, 1)
    for done, sequence in ((2, "t3333"), (3, "b5151")):
        keys(alice, sequence)
        alice.keyboard.press("Enter")
        answered(alice, done)
    keys(bob, "a1111")
    bob.keyboard.press("Enter")
    answered(bob, 2)
    expect(alice.locator("#progress")).to_have_attribute("value", "3")

    current = alice.locator("#dialogue").inner_text()
    alice.reload()
    answered(alice, 3)
    assert alice.locator("#dialogue").inner_text() == current
    again = sign_in(browser, server, "alice")  # continue where I left off, by name, in a fresh browser
    answered(again, 3)
    assert again.locator("#dialogue").inner_text() == current

    mine, his = judgements(server.db, "alice"), judgements(server.db, "bob")
    answers = [(j["preference"], j["consistency_a"], j["relevance_a"], j["consistency_b"], j["relevance_b"]) for j in mine]
    assert answers == [("A", 4, 5, 1, 2), ("tie", 3, 3, 3, 3), ("B", 5, 1, 5, 1)]
    assert [(j["preference"], j["consistency_a"]) for j in his] == [("B", 2), ("A", 1)]
    assert json.loads(mine[0]["unsupported_b"]) == [0] and json.loads(mine[1]["unsupported_b"]) == []
    assert all((j["system_a"], j["system_b"]) == (j["assigned_a"], j["assigned_b"]) for j in mine + his)
    assert all(j["shown"] and j["answered"] >= j["shown"] for j in mine + his)


def test_a_killed_server_loses_nothing_answered(server, browser):
    carol = sign_in(browser, server, "carol")
    for done, sequence in ((1, "a5544"), (2, "b1234")):
        keys(carol, sequence)
        carol.keyboard.press("Enter")
        answered(carol, done)
    before = {r: judgements(server.db, r) for r in ("alice", "bob", "carol")}
    server.kill()  # SIGKILL: no shutdown handler runs
    assert {r: judgements(server.db, r) for r in before} == before
    assert [j["preference"] for j in before["carol"]] == ["A", "B"]
    server.start()
    carol.reload()
    answered(carol, 2)
    keys(carol, "t2222")
    carol.keyboard.press("Enter")
    answered(carol, 3)
    assert len(judgements(server.db, "carol")) == 3 and judgements(server.db, "alice") == before["alice"]


def test_markup_in_a_dialogue_shows_as_text(server, browser):
    page = sign_in(browser, server, "<img src=x onerror=alert(1)>")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    seen = []
    for n in range(ITEMS):
        seen.append(page.locator("#dialogue").inner_text())
        assert page.locator("main img, main script").count() == 0
        keys(page, "a3333")
        page.keyboard.press("Enter")
        if n + 1 < ITEMS:
            answered(page, n + 1)
    expect(page.locator("#done")).to_be_visible()
    assert sum(XSS in text for text in seen) == 1  # the probe dialogue, shown literally
    assert page.evaluate("typeof window.__xss") == "undefined" and dialogs == []
    expect(page.locator("#rater")).to_have_text("<img src=x onerror=alert(1)>")


def test_export_holds_every_answer(server, tmp_path):
    from dialogtune.cli import main

    assert main(["review-results", "--db", str(server.db), "--output", str(tmp_path)]) == 0
    with sqlite3.connect(server.db) as con:
        stored = con.execute("SELECT count(*) FROM judgements").fetchone()[0]
    rows = (tmp_path / "judgements.csv").read_text().splitlines()
    results = json.loads((tmp_path / "human-eval.json").read_text())
    assert stored == len(rows) - 1 == results["judgements"] >= 8
    assert {"alice", "bob", "carol"} <= set(results["raters"])
    assert sum(s["judgements"] for s in results["systems"]) == 2 * stored
