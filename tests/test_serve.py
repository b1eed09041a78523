"""The server: mixed-adapter batches, the micro-batcher, every limit's JSON error, faults, load and shutdown.

Two LoRA adapters on the tiny random T5 are made different from the base and from each other by random
(non-zero) weights, so a row given the wrong adapter shows in its text. Real uvicorn servers bind
127.0.0.1 on a port the OS picks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from conftest import FAST_TRAINING, assert_same_text_where_decisive, corpus_rows
from dialogtune.batching import MicroBatcher, ServeOptions
from dialogtune.cli import main
from dialogtune.configio import load_config
from dialogtune.inference import BASE, Summarizer, generation_config
from dialogtune.serve import create_app
from dialogtune.serverguards import check_bind
from dialogtune.train import train

NAMES = ("a", "b", None)  # None: the bare base
DIALOGUES = [r["dialogue"][: 60 + 45 * i] for i, r in enumerate(corpus_rows("test", 8))]  # eight lengths


# The tiny model gains nothing from torch's threads, and on a shared host their waits cost seconds.
@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    """Before any other fixture of the module (autouse), so its runs use one thread too."""


@pytest.fixture(scope="module")
def runs(tiny_model, small_data, tmp_path_factory):
    """Adapter root with LoRA runs `a` and `b`: one real run (1 step), its weights replaced by random ones."""
    root = tmp_path_factory.mktemp("adapters")
    overrides = {**FAST_TRAINING, "model": str(tiny_model), "data.dataset": str(small_data), "method": "lora",
                 "output": str(root / "trained"), "training.max_steps": 1, "lora.r": 4}
    config = load_config(None, overrides)
    trained = train(config, config.output)
    for name, seed in (("a", 1), ("b", 2)):
        shutil.copytree(trained.folder, root / name)
        weights = load_file(root / name / "adapter_model.safetensors")
        generator = torch.Generator().manual_seed(seed)
        save_file({k: 0.5 * torch.randn(v.shape, generator=generator) for k, v in weights.items()},
                  root / name / "adapter_model.safetensors")
    return root, config


def make_summarizer(tiny_model, runs):
    root, config = runs
    # The base decodes with the runs' settings too, so base rows can share a generate call with adapter rows.
    return Summarizer.from_adapters(str(tiny_model), {"a": root / "a", "b": root / "b"}, config)


@pytest.fixture(scope="module")
def summarizer(tiny_model, runs):
    return make_summarizer(tiny_model, runs)


def record_generate(summarizer):
    """Wrap the model's generate to record each call's per-row adapter names."""
    calls, original = [], summarizer.model.generate

    def generate(**kwargs):
        calls.append(kwargs.get("adapter_names"))
        return original(**kwargs)

    summarizer.model.generate = generate
    return calls


# ------------------------------------------------------------------ mixed batches


@pytest.mark.parametrize("num_beams", [1, 3])
def test_a_mixed_batch_gives_each_row_what_its_adapter_gives_alone(tiny_model, runs, num_beams):
    summarizer = make_summarizer(tiny_model, runs)
    generation = {"max_new_tokens": 10, "num_beams": num_beams}
    # "Alone": all eight dialogues with one adapter, through the same batched peft call (`adapter_names`),
    # so the padded batch and its length order are the mixed batch's. Only which adapter a row gets differs,
    # hence exact equality.
    alone = {name: summarizer.summarize(DIALOGUES, adapter=name, **generation) for name in NAMES}
    assert all(len({alone[n][i] for n in NAMES}) == 3 for i in range(8)), "each adapter must change every text"
    assignment = ["a", None, "b", "b", None, "a", "a", BASE]  # longest-first sorting permutes these rows
    calls = record_generate(summarizer)
    mixed = summarizer.summarize_mixed(DIALOGUES, assignment, **generation)
    assert mixed == [alone[None if n == BASE else n][i] for i, n in enumerate(assignment)]
    assert len(calls) == 1 and set(calls[0]) == {"a", "b", BASE}, "one generate call mixes both adapters and the base"


def test_rows_whose_settings_differ_are_decoded_in_separate_calls(summarizer):
    calls = record_generate(summarizer)
    try:
        overrides = [{}, {"max_new_tokens": 3}, {}, {"max_new_tokens": 3}]
        out = summarizer.summarize_mixed(DIALOGUES[:4], ["a", "b", "b", None], overrides, max_new_tokens=10)
        assert sorted(map(sorted, calls)) == [[BASE, "b"], ["a", "b"]]
        short = summarizer.summarize_mixed([DIALOGUES[1], DIALOGUES[3]], ["b", None], max_new_tokens=3)
        assert [out[1], out[3]] == short != summarizer.summarize_mixed([DIALOGUES[1], DIALOGUES[3]], ["b", None], max_new_tokens=10)
    finally:
        del summarizer.model.generate


# ------------------------------------------------------------------ the micro-batcher alone


def batcher_run(jobs_spec, max_batch_size=4, fail_on=None, cancel=()):
    """Run the batcher over jobs (lists of dialogues) submitted at once; return (results, batches seen)."""
    batches = []

    def run_batch(jobs):
        batches.append([d for job in jobs for d in job.dialogues])
        if fail_on is not None and any(fail_on in job.dialogues for job in jobs):
            raise RuntimeError(f"cannot summarise {fail_on!r}")
        return [[d.upper() for d in job.dialogues] for job in jobs]

    async def scenario():
        batcher = MicroBatcher(run_batch, max_batch_size, max_wait_ms=50, max_queue=100)
        batcher.start()
        jobs = [batcher.submit(dialogues, None, {}) for dialogues in jobs_spec]
        for i in cancel:
            jobs[i].future.cancel()  # its client left before the batch ran
        results = await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)
        await batcher.close()
        return results

    return asyncio.run(scenario()), batches


def test_batcher_fills_batches_up_to_the_size_and_runs_an_oversized_job_alone():
    results, batches = batcher_run([["a"], ["b", "c"], ["d"], ["e", "f"], ["g", "h", "i", "j", "k"]])
    assert batches == [["a", "b", "c", "d"], ["e", "f"], ["g", "h", "i", "j", "k"]]
    assert results[1] == ["B", "C"] and results[4] == ["G", "H", "I", "J", "K"]


def test_a_batch_collects_after_the_worker_is_free_so_returning_clients_join_it():
    """Y queued while X ran, longer than max_wait; Z, sent just after X is answered (a client's round trip),
    still joins Y: batches do not alternate between big and small under load."""
    batches, running = [], threading.Event()

    def run_batch(jobs):
        batches.append([d for job in jobs for d in job.dialogues])
        if len(batches) == 1:
            running.set()
            time.sleep(1.5)  # Y arrives meanwhile and waits past max_wait
        return [job.dialogues for job in jobs]

    async def scenario():
        batcher = MicroBatcher(run_batch, max_batch_size=4, max_wait_ms=1000, max_queue=10)
        batcher.start()
        x = batcher.submit(["x"] * 4, None, {})  # a full batch: it runs at once
        await asyncio.to_thread(running.wait, 10)
        y = batcher.submit(["y"], None, {})
        await x.future
        await asyncio.sleep(0.05)
        z = batcher.submit(["z"], None, {})
        batcher.submit(["w", "v", "u"], None, {})  # overflows the batch: Y and Z go at once
        await asyncio.gather(y.future, z.future)
        await batcher.close()

    asyncio.run(scenario())
    assert batches[:2] == [["x"] * 4, ["y", "z"]]


def test_a_failing_request_gets_its_own_error_and_the_rest_of_its_batch_succeeds():
    results, batches = batcher_run([["a"], ["boom"], ["c"]], fail_on="boom")
    assert batches[0] == ["a", "boom", "c"]  # the batch failed, then each job ran alone
    assert results[0] == ["A"] and results[2] == ["C"]
    assert isinstance(results[1], RuntimeError) and "boom" in str(results[1])


def test_a_job_abandoned_before_its_batch_is_never_generated():
    results, batches = batcher_run([["a"], ["gone"], ["c"]], cancel=[1])
    assert batches == [["a", "c"]] and results[0] == ["A"] and results[2] == ["C"]


# ------------------------------------------------------------------ the HTTP API and its limits


class Gate:
    """Holds every batch in the worker until released; records the dialogues and adapters of each batch."""

    def __init__(self, summarizer, closed=False):
        self.calls, self.started, self.open = [], threading.Event(), threading.Event()
        if not closed:
            self.open.set()
        self.original = original = summarizer.summarize_mixed

        def gated(dialogues, adapters, *args, **kwargs):
            self.calls.append((list(dialogues), list(adapters)))
            self.started.set()
            assert self.open.wait(60), "the test never opened the gate"
            return original(dialogues, adapters, *args, **kwargs)

        summarizer.summarize_mixed = gated


def client(summarizer, runs, **options):
    root, _ = runs
    return TestClient(create_app(summarizer, ServeOptions(**options), runs={"a": str(root / "a")}, adapter_root=root))


def test_each_limit_answers_with_its_own_json_error_naming_it(summarizer, runs):
    options = {"max_dialogues": 3, "max_dialogue_tokens": 50, "max_new_tokens": 20, "max_body_bytes": 4000}
    with client(summarizer, runs, **options) as api:
        def error(status, **body):
            response = api.post("/v1/summarize", json=body)
            assert response.status_code == status, response.text
            return response.json()["error"]

        assert "max_dialogues=3" in error(422, dialogues=["Hi."] * 4)
        too_long = error(422, dialogues=["Hi.", "word " * 60])
        assert "max_dialogue_tokens=50" in too_long and too_long.startswith("dialogue 1 is ")
        assert "max_new_tokens=20" in error(422, dialogues=["Hi."], max_new_tokens=21)
        assert "loaded adapters are: a, b" in error(404, dialogues=["Hi."], adapter="nope")
        assert "dialogue 0 is empty" in error(422, dialogues=["  "])
        assert "dialogues" in error(422, dialogues="Hi.")
        assert "extra" in error(422, dialogues=["Hi."], temperature=3).lower()
        for body in (b"x" * 5000, iter([b"x" * 3000, b"x" * 3000])):  # declared length, then chunked
            response = api.post("/v1/summarize", content=body)
            assert response.status_code == 413 and "max_body_bytes=4000" in response.json()["error"]
        ok = api.post("/v1/summarize", json={"dialogues": DIALOGUES[:2], "adapter": "b", "max_new_tokens": 5})
        assert ok.status_code == 200
        assert ok.json()["summaries"] == summarizer.summarize(DIALOGUES[:2], adapter="b", max_new_tokens=5)
        assert ok.json()["adapter"] == "b" and ok.json()["timings"]["batch_dialogues"] == 2
        assert api.get("/nowhere").json() == {"error": "Not Found"}
        assert "/v1/summarize" in api.get("/openapi.json").json()["paths"] and api.get("/docs").status_code == 200


def test_a_request_past_the_timeout_gets_504_and_the_server_goes_on(tiny_model, runs):
    summarizer = make_summarizer(tiny_model, runs)
    gate = Gate(summarizer, closed=True)
    with client(summarizer, runs, timeout_s=0.3) as api:
        response = api.post("/v1/summarize", json={"dialogues": ["Hi."]})
        assert response.status_code == 504 and "timeout_s=0.3" in response.json()["error"]
        gate.open.set()
        batcher = api.app.state.server.batcher
        until(lambda: not batcher.current, "the abandoned batch finishes")
        assert batcher.running and api.get("/readyz").status_code == 200 and len(gate.calls) == 1


def test_a_token_guards_every_v1_route_but_not_health(summarizer, runs):
    root, _ = runs
    with TestClient(create_app(summarizer, token="s3cret", adapter_root=root)) as api:
        assert api.get("/v1/adapters").status_code == 401
        wrong = api.get("/v1/adapters", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "bearer token" in wrong.json()["error"]
        assert api.get("/v1/adapters", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert api.get("/healthz").status_code == 200 and api.get("/readyz").json()["ready"] is True


def test_binding_beyond_loopback_needs_a_token(capsys, monkeypatch):
    monkeypatch.delenv("DIALOGTUNE_TOKEN", raising=False)
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, None, "the server", "pass --token")
    check_bind("0.0.0.0", "s3cret", "the server", "pass --token")
    assert main(["serve", "--model", "builtin:tiny-t5", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--token" in err and len(err.splitlines()) == 1
    assert main(["serve", "--model", "x", "--backend", "ct2", "--adapter", "a=runs/a"]) == 2
    assert "CTranslate2 has no LoRA support" in capsys.readouterr().err


def test_adapters_load_and_unload_by_name_from_safetensors_inside_the_root_only(tiny_model, runs, tmp_path):
    root, _ = runs
    summarizer = make_summarizer(tiny_model, runs)
    pickled = root / "pickled"
    if not pickled.exists():
        shutil.copytree(root / "a", pickled)
        torch.save(load_file(pickled / "adapter_model.safetensors"), pickled / "adapter_model.bin")
        (pickled / "adapter_model.safetensors").unlink()
    with client(summarizer, runs) as api:
        def load(name, run):
            response = api.post("/v1/adapters", json={"name": name, "run": run})
            return response.status_code, response.json()

        for bad in ("../a", "a/b", "my_lora_x", "__base__", ""):
            status, body = load(bad, "a")
            assert status == 422 and "not allowed" in body["error"], bad
        assert load("c", str(tmp_path))[0] == 403 and load("c", "../..")[0] == 403
        status, body = load("c", "pickled")
        assert status == 422 and "pickle" in body["error"]
        assert load("a", "b") == (409, {"error": "adapter 'a' is already loaded; DELETE /v1/adapters/a first"})
        status, body = load("c", "b")
        assert status == 201 and body["run"] == str((root / "b").resolve())
        said = api.post("/v1/summarize", json={"dialogues": DIALOGUES[:1], "adapter": "c", "max_new_tokens": 6}).json()
        assert said["summaries"] == summarizer.summarize(DIALOGUES[:1], adapter="b", max_new_tokens=6)
        assert [a["name"] for a in api.get("/v1/adapters").json()["adapters"]] == ["a", "b", "c"]
        for name in ("a", "b", "c"):
            assert api.delete(f"/v1/adapters/{name}").json() == {"deleted": name}
        assert api.delete("/v1/adapters/a").status_code == 404
        gone = api.post("/v1/summarize", json={"dialogues": ["Hi."], "adapter": "a"})
        assert gone.status_code == 404 and "none (only the base model" in gone.json()["error"]
        assert api.post("/v1/summarize", json={"dialogues": ["Hi."]}).status_code == 200  # the bare base again
        assert load("a", "a")[0] == 201  # and adapters go back on
        assert api.post("/v1/summarize", json={"dialogues": ["Hi."], "adapter": "a"}).status_code == 200


# ------------------------------------------------------------------ a real uvicorn: faults, load, shutdown


@contextmanager
def serving(app):
    """uvicorn on 127.0.0.1 in a thread (port chosen by the OS); stopped, gracefully, on exit."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}", thread
    finally:
        server.should_exit = True
        thread.join(60)


def raw_request(url, body):
    """Send a request on a bare socket (so the test can hang up mid-request)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    data = json.dumps(body).encode()
    sock.sendall(b"POST /v1/summarize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def until(condition, what):
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def in_threads(url, bodies):
    """POST each body from its own thread; returns the responses in order."""
    responses = [None] * len(bodies)

    def post(i):
        responses[i] = httpx.post(f"{url}/v1/summarize", json=bodies[i], timeout=60)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    return responses, threads


def test_a_client_that_hangs_up_mid_batch_does_not_break_the_batch(tiny_model, runs, caplog):
    summarizer = make_summarizer(tiny_model, runs)
    gate = Gate(summarizer, closed=True)
    app = create_app(summarizer, ServeOptions(max_batch_size=3, max_wait_ms=10_000))
    bodies = [{"dialogues": [DIALOGUES[0]], "adapter": "a"}, {"dialogues": [DIALOGUES[1]], "adapter": "b"}]
    with caplog.at_level(logging.WARNING), serving(app) as (_, url, _):
        responses, threads = in_threads(url, bodies)
        until(lambda: len(app.state.server.batcher.pending) == 2, "two requests queue")
        leaver = raw_request(url, {"dialogues": [DIALOGUES[2]]})  # the third dialogue fills the batch
        assert gate.started.wait(30)
        batcher = app.state.server.batcher
        leaver.close()
        until(lambda: any(job.abandoned for job in batcher.current), "the server notices the hang-up")
        gate.open.set()
        for t in threads:
            t.join(60)
        # The batch ran with the leaver's row; the others get exactly that batch's texts.
        [(dialogues, adapters)] = gate.calls
        assert sorted(zip(dialogues, adapters, strict=True), key=str) == sorted(
            [(DIALOGUES[0], "a"), (DIALOGUES[1], "b"), (DIALOGUES[2], None)], key=str)
        expected = dict(zip(dialogues, gate.original(dialogues, adapters, [{}] * 3, batch_size=3), strict=True))
        assert [r.status_code for r in responses] == [200, 200]
        assert [r.json()["summaries"][0] for r in responses] == [expected[DIALOGUES[0]], expected[DIALOGUES[1]]]
        again = {"dialogues": DIALOGUES[:3], "adapter": "a"}  # a full batch: no waiting for company
        assert httpx.post(f"{url}/v1/summarize", json=again, timeout=60).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the hang-up logged an error"


def test_a_client_that_hangs_up_while_queued_is_never_generated(tiny_model, runs):
    summarizer = make_summarizer(tiny_model, runs)
    gate = Gate(summarizer, closed=True)
    app = create_app(summarizer, ServeOptions(max_batch_size=1, max_wait_ms=1))
    with serving(app) as (_, url, _):
        responses, threads = in_threads(url, [{"dialogues": ["first"]}])
        assert gate.started.wait(30)
        leaver = raw_request(url, {"dialogues": ["never"]})
        batcher = app.state.server.batcher
        until(lambda: len(batcher.pending) == 1, "the second request queues")
        leaver.close()
        until(lambda: batcher.pending[0].abandoned, "the server notices the hang-up")
        gate.open.set()
        threads[0].join(60)
        assert responses[0].status_code == 200
        assert httpx.post(f"{url}/v1/summarize", json={"dialogues": ["last"]}, timeout=60).status_code == 200
    assert [c[0] for c in gate.calls] == [["first"], ["last"]]


def alone(summarizer, dialogue, adapter, max_new_tokens):
    """A row on its own (a batch of one, no padding): its greedy text and smallest top-two logit gap."""
    tokenizer, model = summarizer.tokenizer, summarizer.model
    encoded = tokenizer(summarizer.prompts([dialogue], adapter), return_tensors="pt")
    config = generation_config(summarizer.generation(adapter, max_new_tokens=max_new_tokens), tokenizer, model)
    with torch.no_grad():
        out = model.generate(**encoded, generation_config=config, adapter_names=[adapter or BASE], output_scores=True,
                             return_dict_in_generate=True)
    gaps = [float(step.topk(2).values[0, 0] - step.topk(2).values[0, 1]) for step in out.scores]
    return tokenizer.decode(out.sequences[0], skip_special_tokens=True).strip(), min(gaps)


async def _load(url, bodies, concurrency):
    queue = list(enumerate(bodies))
    responses = [None] * len(bodies)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        async def worker():
            while queue:
                i, body = queue.pop()
                responses[i] = await http.post("/v1/summarize", json=body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return responses


def test_load_mixed_adapters_and_malformed_requests_in_a_burst(tiny_model, runs):
    """About 200 requests, 16 at a time, spread over two adapters and the base, 1 in 10 malformed."""
    summarizer = make_summarizer(tiny_model, runs)
    calls = record_generate(summarizer)
    pool = DIALOGUES[:6]
    bad = [{"dialogues": "not a list"}, {"dialogues": ["Hi."], "adapter": "nope"}, {"dialogues": ["Hi."], "max_new_tokens": 0},
           {"dialogues": []}, {"dialogues": ["word " * 3000]}]
    bodies = []
    for i in range(200):
        if i % 10 == 9:
            bodies.append(bad[(i // 10) % len(bad)])
        else:
            bodies.append({"dialogues": [pool[i % 6]] * (1 + i % 2), "adapter": NAMES[i % 3], "max_new_tokens": 6})
    app = create_app(summarizer, ServeOptions(max_batch_size=16, max_wait_ms=5))
    with serving(app) as (_, url, _):
        responses = asyncio.run(_load(url, bodies, concurrency=16))
    batched = [c for c in calls if c is not None]
    good = [(b, r) for b, r in zip(bodies, responses, strict=True) if b not in bad]
    assert [r.status_code for _, r in good] == [200] * 180, "every well-formed request succeeds"
    for body, response in zip(bodies, responses, strict=True):
        if body in bad:
            assert response.status_code in (404, 422) and response.json()["error"], body
    # Rows ran in batches of every composition and padding, which round differently from the row alone;
    # so texts must agree where greedy decoding was decisive (conftest), which is most of them.
    reference = {(d, n): alone(summarizer, d, n, 6) for d in pool for n in NAMES}
    served = [(text, reference[(d, b["adapter"])]) for b, r in good for d, text in zip(b["dialogues"], r.json()["summaries"], strict=True)]
    assert_same_text_where_decisive([s for s, _ in served], [ref for _, (ref, _) in served], [m for _, (_, m) in served])
    assert any(len(set(c)) == 3 for c in batched), "no generate call mixed both adapters and the base under load"
    assert len(batched) < len(good), "requests were not batched"


def test_shutdown_lets_in_flight_and_queued_requests_finish(tiny_model, runs):
    summarizer = make_summarizer(tiny_model, runs)
    gate = Gate(summarizer, closed=True)
    app = create_app(summarizer, ServeOptions(max_batch_size=2, max_wait_ms=1))
    bodies = [{"dialogues": [d], "adapter": n} for d, n in zip(DIALOGUES[:4], ["a", "b", None, "a"], strict=True)]
    with serving(app) as (server, url, thread):
        responses, threads = in_threads(url, bodies)
        assert gate.started.wait(30)
        batcher = app.state.server.batcher
        until(lambda: len(batcher.pending) + len(batcher.current) == 4, "the other requests queue behind the batch")
        server.should_exit = True  # what SIGTERM / Ctrl-C does
        until(lambda: not server.servers[0].is_serving(), "uvicorn stops listening")
        gate.open.set()
        for t in threads:
            t.join(60)
        thread.join(60)
        assert not thread.is_alive()
    assert [r.status_code for r in responses] == [200] * 4
    assert sum(len(c[0]) for c in gate.calls) == 4 and not app.state.server.batcher.running
