"""The study database: SQLite (stdlib `sqlite3`) in WAL mode, one transaction per answer.

Tables: ``schema_version``, ``study`` (settings as JSON), ``systems``, ``items``, ``outputs`` (each
system's summary of each item), ``assignments`` (which rater sees which pair of an item, on which
side) and ``judgements``. An answer is committed before the page that follows it is sent, with
``synchronous=FULL``, so a server killed at any moment keeps every answer a rater saw accepted.
Judgements are keyed by (rater, item), inserted and never updated (a trigger refuses UPDATE and
DELETE), and must match an assignment (a foreign key): no rater can overwrite another's answers.
Each thread keeps its own connection (sqlite3 connections are not shared between threads), so
concurrent requests never share one; writers queue on SQLite's lock (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from dialogtune import runs
from dialogtune.errors import DialogtuneError
from dialogtune.review.sampling import StudyPlan, assignments, sample_study, sentences

SCHEMA_VERSION = 1
SCALES = ("consistency_a", "relevance_a", "consistency_b", "relevance_b")
PREFERENCES = ("A", "B", "tie")
_SCORE = "INTEGER NOT NULL CHECK ({0} BETWEEN 1 AND 5)"
SCHEMA = f"""
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE systems (name TEXT PRIMARY KEY, folder TEXT, method TEXT, rouge1 REAL, faithfulness_rate REAL,
                      hidden INTEGER NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, example_id TEXT NOT NULL UNIQUE, dialogue TEXT NOT NULL,
                    shared_pair INTEGER NOT NULL);
CREATE TABLE outputs (item_id INTEGER NOT NULL REFERENCES items(id), system TEXT NOT NULL REFERENCES systems(name),
                      summary TEXT NOT NULL, rouge1 REAL, unsupported INTEGER, PRIMARY KEY (item_id, system));
CREATE TABLE assignments (rater TEXT NOT NULL, item_id INTEGER NOT NULL REFERENCES items(id), position INTEGER NOT NULL,
                          system_a TEXT NOT NULL REFERENCES systems(name), system_b TEXT NOT NULL REFERENCES systems(name),
                          created TEXT NOT NULL, shown TEXT, PRIMARY KEY (rater, item_id), UNIQUE (rater, position));
CREATE TABLE judgements (rater TEXT NOT NULL, item_id INTEGER NOT NULL, system_a TEXT NOT NULL, system_b TEXT NOT NULL,
                         preference TEXT NOT NULL CHECK (preference IN ('A', 'B', 'tie')),
                         {', '.join(f'{s} {_SCORE.format(s)}' for s in SCALES)},
                         unsupported_a TEXT NOT NULL, unsupported_b TEXT NOT NULL, shown TEXT, answered TEXT NOT NULL,
                         PRIMARY KEY (rater, item_id), FOREIGN KEY (rater, item_id) REFERENCES assignments(rater, item_id));
CREATE TRIGGER judgements_are_final_u BEFORE UPDATE ON judgements BEGIN SELECT RAISE(ABORT, 'judgements are final'); END;
CREATE TRIGGER judgements_are_final_d BEFORE DELETE ON judgements BEGIN SELECT RAISE(ABORT, 'judgements are final'); END;
"""


class Refused(DialogtuneError):
    """An answer or rater the study does not accept; ``status`` is the HTTP status the app answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Store:
    """A study database on disk. Cheap to construct; every method opens and closes its own connection.

    `durable=False` skips the fsync per answer (WAL with synchronous=NORMAL): answers then survive a killed
    process but maybe not a power cut; for scripted raters, whose answers can be made again.
    """

    def __init__(self, path: str | Path, durable: bool = True) -> None:
        self.path, self.durable = Path(path), durable
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        # Kept open: closing the last connection checkpoints the WAL, which cost more than the answer itself.
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA foreign_keys = ON")
            # FULL: an acknowledged answer survives a power cut too, not just a killed server.
            con.execute(f"PRAGMA synchronous = {'FULL' if self.durable else 'NORMAL'}")
            self._local.con = con
        return con

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """This thread's connection; with `write`, inside one IMMEDIATE transaction committed on leaving
        (rolled back on error). Without, each statement is its own read."""
        con = self._connection()
        if not write:
            yield con
            return
        con.execute("BEGIN IMMEDIATE")  # take the write lock now, so two writers queue instead of failing midway
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @classmethod
    def create(cls, path: str | Path, plan: StudyPlan) -> "Store":
        """A new study database from `plan`; refuses an existing file."""
        path = Path(path)
        if path.exists():
            raise DialogtuneError(f"{path} already exists; pass a new --db, or omit the runs to reopen it")
        path.parent.mkdir(parents=True, exist_ok=True)
        store = cls(path)
        with store.connect() as con:
            con.execute("PRAGMA journal_mode = WAL")  # persistent: readers never block the writer
            con.executescript(SCHEMA)
        with store.connect(write=True) as con:
            con.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            con.executemany("INSERT INTO study VALUES (?, ?)", [(k, json.dumps(v)) for k, v in plan.meta.items()])
            con.executemany("INSERT INTO systems VALUES (:name, :folder, :method, :rouge1, :faithfulness_rate, :hidden)", plan.systems)
            for item in plan.items:
                item_id = con.execute("INSERT INTO items (example_id, dialogue, shared_pair) VALUES (?, ?, ?)",
                                      (item["example_id"], item["dialogue"], int(item["shared_pair"]))).lastrowid
                con.executemany("INSERT INTO outputs VALUES (?, ?, ?, ?, ?)",
                                [(item_id, s, o["summary"], o["rouge1"], o["unsupported"]) for s, o in item["outputs"].items()])
        return store

    @classmethod
    def open(cls, path: str | Path) -> "Store":
        """An existing study database; a clear error if it is not one or is of another schema version."""
        path = Path(path)
        if not path.is_file():
            raise DialogtuneError(f"study database {path} does not exist; start a study with `dialogtune review RUN... --db {path}`")
        store = cls(path)
        try:
            with store.connect() as con:
                version = con.execute("SELECT version FROM schema_version").fetchone()[0]
        except (sqlite3.DatabaseError, TypeError) as err:
            raise DialogtuneError(f"{path} is not a dialogtune review database ({err}); check --db") from None
        if version != SCHEMA_VERSION:
            raise DialogtuneError(f"{path} has schema version {version}; this dialogtune reads version {SCHEMA_VERSION}")
        return store

    def study(self) -> dict[str, Any]:
        with self.connect() as con:
            return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM study")}

    def systems(self) -> list[dict[str, Any]]:
        with self.connect() as con:
            return [dict(r, hidden=bool(r["hidden"])) for r in con.execute("SELECT * FROM systems ORDER BY name")]

    def start(self, rater: str) -> int:
        """Create the rater's assignments unless they exist (same every time: seeded); returns how many items."""
        with self.connect(write=True) as con:
            done = con.execute("SELECT count(*) FROM assignments WHERE rater = ?", (rater,)).fetchone()[0]
            if done:
                return done
            items = [(r["id"], bool(r["shared_pair"])) for r in con.execute("SELECT id, shared_pair FROM items")]
            names = [r["name"] for r in con.execute("SELECT name FROM systems")]
            seed = json.loads(con.execute("SELECT value FROM study WHERE key = 'seed'").fetchone()[0])
            rows = [(rater, *row, runs.now()) for row in assignments(rater, items, names, seed)]
            con.executemany("INSERT INTO assignments (rater, item_id, position, system_a, system_b, created) VALUES (?, ?, ?, ?, ?, ?)", rows)
            return len(rows)

    def progress(self, rater: str) -> tuple[int, int]:
        """(answered, assigned) for `rater`."""
        with self.connect() as con:
            total = con.execute("SELECT count(*) FROM assignments WHERE rater = ?", (rater,)).fetchone()[0]
            done = con.execute("SELECT count(*) FROM judgements WHERE rater = ?", (rater,)).fetchone()[0]
        return done, total

    def next_item(self, rater: str) -> dict[str, Any] | None:
        """The rater's first unanswered item with the two summaries as shown (A, B), or None when all are done."""
        with self.connect(write=True) as con:
            row = con.execute(
                "SELECT a.*, i.example_id, i.dialogue FROM assignments a JOIN items i ON i.id = a.item_id "
                "WHERE a.rater = ? AND NOT EXISTS (SELECT 1 FROM judgements j WHERE j.rater = a.rater AND j.item_id = a.item_id) "
                "ORDER BY a.position LIMIT 1", (rater,)).fetchone()
            if row is None:
                return None
            con.execute("UPDATE assignments SET shown = ? WHERE rater = ? AND item_id = ? AND shown IS NULL",
                        (runs.now(), rater, row["item_id"]))
            summary = {s: con.execute("SELECT summary FROM outputs WHERE item_id = ? AND system = ?",
                                      (row["item_id"], row[f"system_{s}"])).fetchone()[0] for s in "ab"}
        return {"item_id": row["item_id"], "position": row["position"], "dialogue": row["dialogue"],
                "summary_a": summary["a"], "summary_b": summary["b"]}

    def shown_systems(self, rater: str, item_id: int) -> tuple[str, str]:
        """(system shown as A, system shown as B) of one assignment: for scripted raters, never for the page."""
        with self.connect() as con:
            row = con.execute("SELECT system_a, system_b FROM assignments WHERE rater = ? AND item_id = ?", (rater, item_id)).fetchone()
        if row is None:
            raise Refused(403, f"item {item_id} is not assigned to rater {rater!r}")
        return row[0], row[1]

    def record(self, rater: str, item_id: int, answers: dict[str, Any]) -> bool:
        """Store one judgement in one transaction; False if this exact answer was already stored (a resubmit).

        Checked here, whatever the caller checked: the item is assigned to this rater, the systems are
        the assignment's (never the form's), scores are 1-5, marked sentences exist. A different answer
        to an item already answered is refused: answers are final.
        """
        pref, scores = answers.get("preference"), [answers.get(s) for s in SCALES]
        if pref not in PREFERENCES:
            raise Refused(422, f"preference is {pref!r}; answer A, B or tie")
        if any(type(v) is not int or not 1 <= v <= 5 for v in scores):
            bad = next(s for s, v in zip(SCALES, scores) if type(v) is not int or not 1 <= v <= 5)
            raise Refused(422, f"{bad} is {answers.get(bad)!r}; answer a whole number from 1 to 5")
        with self.connect(write=True) as con:
            assignment = con.execute("SELECT * FROM assignments WHERE rater = ? AND item_id = ?", (rater, item_id)).fetchone()
            if assignment is None:
                raise Refused(403, f"item {item_id} is not assigned to rater {rater!r}; open /rate/<your name> to get your items")
            marks = {}
            for side in "ab":
                text = con.execute("SELECT summary FROM outputs WHERE item_id = ? AND system = ?",
                                   (item_id, assignment[f"system_{side}"])).fetchone()[0]
                marked = answers.get(f"unsupported_{side}") or []
                count = len(sentences(text))
                if any(type(i) is not int or not 0 <= i < count for i in marked):
                    raise Refused(422, f"unsupported_{side} is {marked!r}; summary {side.upper()} has sentences 0 to {count - 1}")
                marks[side] = json.dumps(sorted(set(marked)))
            row = (rater, item_id, assignment["system_a"], assignment["system_b"], pref, *scores, marks["a"], marks["b"],
                   assignment["shown"])
            before = con.execute("SELECT * FROM judgements WHERE rater = ? AND item_id = ?", (rater, item_id)).fetchone()
            if before is not None:
                if tuple(before)[:len(row) - 1] == row[:-1]:
                    return False
                raise Refused(409, f"rater {rater!r} already answered item {item_id}; answers are final")
            con.execute(f"INSERT INTO judgements VALUES ({', '.join('?' * (len(row) + 1))})", (*row, runs.now()))
        return True

    def judgements(self) -> list[dict[str, Any]]:
        """Every judgement with its item's example id and both summaries' ROUGE-1 and unsupported-fact counts."""
        query = ("SELECT j.*, i.example_id, oa.rouge1 AS rouge1_a, ob.rouge1 AS rouge1_b, oa.unsupported AS facts_a, "
                 "ob.unsupported AS facts_b FROM judgements j JOIN items i ON i.id = j.item_id "
                 "JOIN outputs oa ON oa.item_id = j.item_id AND oa.system = j.system_a "
                 "JOIN outputs ob ON ob.item_id = j.item_id AND ob.system = j.system_b ORDER BY j.answered, j.rater, j.item_id")
        with self.connect() as con:
            rows = [dict(r) for r in con.execute(query)]
        for r in rows:
            r["unsupported_a"], r["unsupported_b"] = json.loads(r["unsupported_a"]), json.loads(r["unsupported_b"])
        return rows


def open_study(db: str | Path, folders: list[str | Path], sample: int | None = None, seed: int = 0,
               reference: bool = True, shared_pairs: int | None = None) -> Store:
    """Create the study from `folders`, or reopen `db`; runs given for an existing db must be the study's runs."""
    db = Path(db)
    if db.exists():
        store = Store.open(db)
        study = store.study()
        given = sorted(str(Path(f).resolve()) for f in folders)
        if given and given != sorted(study["runs"].values()):
            raise DialogtuneError(f"{db} holds a study of other runs ({', '.join(study['runs'])}); pass a new --db, "
                                  "or omit the runs to continue that study")
        if (sample is not None and sample != study["sample"]) or (given and seed != study["seed"]):
            raise DialogtuneError(f"{db} holds a study with --sample {study['sample']} --seed {study['seed']}; "
                                  "pass those (or omit the runs) to continue it, or a new --db")
        return store
    if not folders:
        raise DialogtuneError(f"{db} does not exist; pass the run folders to start a study")
    return Store.create(db, sample_study(folders, sample, seed, reference, shared_pairs))
