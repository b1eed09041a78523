"""The server's options and its micro-batcher: requests wait until a batch is full or the oldest has
waited long enough, then one worker thread runs the whole batch through the summarizer (`run_jobs`).

No web framework and no torch here: the CLI lists `ServeOptions` without importing FastAPI, and the
batcher is tested on its own. Generation runs in one thread because a torch model is not safe to call from two
threads at once; the event loop only queues, groups and hands out results, so it never blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dialogtune.errors import DialogtuneError

log = logging.getLogger(__name__)
T = TypeVar("T")


def _option(default: Any, help: str) -> Any:  # noqa: A002
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServeOptions:
    """Where `dialogtune serve` listens, how it batches, and the limits every request must respect."""

    host: str = _option("127.0.0.1", "address to bind; anything but loopback needs --token")
    port: int = _option(8000, "TCP port")
    max_batch_size: int = _option(16, "most dialogues in one generate call; 1 serves one request at a time")
    # 25 ms: on 2 cores with 16 clients, 10 ms batches averaged 12.7 requests and 25 ms 13.7, with a lower p50
    # (611 against 815 ms); 50 ms gained nothing more (BENCHMARKS.md, serving).
    max_wait_ms: float = _option(25.0, "how long a batch collects requests once the worker is free, unless full")
    max_queue: int = _option(1024, "most requests waiting; more are refused with 503")
    max_body_bytes: int = _option(1_000_000, "largest request body (413 beyond)")
    max_dialogues: int = _option(64, "most dialogues in one request (422 beyond)")
    max_dialogue_tokens: int = _option(2048, "most tokens in one dialogue (422 beyond)")
    max_new_tokens: int = _option(512, "cap on a request's max_new_tokens (422 beyond)")
    timeout_s: float = _option(60.0, "longest a request may take, queueing included (504 beyond)")

    def __post_init__(self) -> None:
        bad = [f"--{k.replace('_', '-')} {v}" for k, v in vars(self).items() if not isinstance(v, str) and v <= 0]
        if bad:
            raise DialogtuneError(f"{', '.join(bad)}: serving limits must be positive")


class QueueFull(Exception):
    """The server is draining for shutdown, or too many requests are waiting."""


class Expired(Exception):
    """A job took longer than its caller would wait."""


@dataclass
class Job:
    """One request's dialogues on their way through the queue; `future` gets its summaries or error."""

    dialogues: list[str]
    adapter: str | None
    overrides: dict[str, Any]
    future: asyncio.Future
    queued: float
    started: float | None = None
    finished: float | None = None
    batch_size: int = 0  # dialogues in the generate batch it ran in

    @property
    def abandoned(self) -> bool:
        """Its client left or timed out: nobody will read the result, so it is not generated."""
        return self.future.done()


# Runs in the worker thread: one result per job, each a list of summaries or the exception for that job.
RunBatch = Callable[[list[Job]], list[Any]]


class MicroBatcher:
    """Groups queued jobs into batches of at most `max_batch_size` dialogues (a bigger job runs alone)."""

    def __init__(self, run_batch: RunBatch, max_batch_size: int, max_wait_ms: float, max_queue: int) -> None:
        self.run_batch = run_batch
        self.max_batch_size, self.max_wait, self.max_queue = max_batch_size, max_wait_ms / 1000, max_queue
        self.pending: deque[Job] = deque()
        self.current: list[Job] = []  # the batch the worker runs now
        self.closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dialogtune-generate")
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._free_since = 0.0  # when the worker finished its last batch (event-loop time)

    def start(self) -> None:
        """Start collecting batches on the running event loop."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._collect())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self.closing

    def submit(self, dialogues: list[str], adapter: str | None, overrides: dict[str, Any]) -> Job:
        """Queue a request; await `job.future` for its summaries."""
        if self.closing:
            raise QueueFull("the server is shutting down; retry on another instance")
        if len(self.pending) >= self.max_queue:
            raise QueueFull(f"{len(self.pending)} requests are waiting, the server's limit max_queue={self.max_queue}; retry later")
        loop = asyncio.get_running_loop()
        job = Job(dialogues, adapter, overrides, loop.create_future(), loop.time())
        self.pending.append(job)
        self._wakeup.set()
        return job

    async def wait(self, job: Job, gone: Awaitable[Any], timeout_s: float) -> Any:
        """The job's result; None when `gone` (its client leaving) finishes first; `Expired` past `timeout_s`.

        A job given up on is abandoned: unless its batch already runs it is never generated, and the
        other jobs of its batch are untouched either way."""
        left = asyncio.ensure_future(gone)
        try:
            done, _ = await asyncio.wait({job.future, left}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this task itself is cancelled
            left.cancel()
            abandoned = not job.future.done()
            if abandoned:
                job.future.cancel()
        if not abandoned:
            return job.future.result()
        if left in done:
            return None
        raise Expired(f"waited {timeout_s:g} s")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in the worker thread between batches (e.g. loading an adapter), never during one."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        """Refuse new jobs, finish every queued one, then stop the worker."""
        self.closing = True
        if self._task is not None:
            self._wakeup.set()
            await self._task
        self._executor.shutdown(wait=True)

    def _queued_size(self) -> int:
        return sum(len(job.dialogues) for job in self.pending if not job.abandoned)

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self.pending and self.pending[0].abandoned:
                self.pending.popleft()
            if not self.pending:
                if self.closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # A batch collects for max_wait after the oldest job arrived or the worker came free, whichever
            # is later: clients answered by the last batch have that long to send their next request, so
            # under load the batches stay full instead of alternating between big and small ones.
            deadline = max(self.pending[0].queued, self._free_since) + self.max_wait
            while self._queued_size() < self.max_batch_size and not self.closing:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            batch = self._take()
            if batch:
                await self._run(batch)

    def _take(self) -> list[Job]:
        batch: list[Job] = []
        size = 0
        while self.pending:
            job = self.pending[0]
            if job.abandoned:
                self.pending.popleft()
                continue
            if batch and size + len(job.dialogues) > self.max_batch_size:
                break
            batch.append(self.pending.popleft())
            size += len(job.dialogues)
        return batch

    async def _run(self, batch: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        size = sum(len(job.dialogues) for job in batch)
        for job in batch:
            job.started, job.batch_size = started, size
        self.current = batch
        try:
            results = await loop.run_in_executor(self._executor, self.run_batch, batch)
        except Exception as err:  # noqa: BLE001 - whatever broke, it must not take the other jobs with it
            if len(batch) == 1:
                results = [err]
            else:
                log.warning("a batch of %d requests failed (%s); running each alone", len(batch), err)
                results = []
                for job in batch:
                    job.batch_size = len(job.dialogues)
                    try:
                        results += await loop.run_in_executor(self._executor, self.run_batch, [job])
                    except Exception as alone:  # noqa: BLE001
                        results.append(alone)
        finished = self._free_since = loop.time()
        self.current = []
        for job, result in zip(batch, results, strict=True):
            job.finished = finished
            if job.future.done():
                continue  # the client left or timed out meanwhile
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)


class UnknownAdapter(DialogtuneError):
    """A request names an adapter that is not (or no longer) loaded."""


def known(summarizer: Any) -> str:
    return ", ".join(list(summarizer.adapters)) or "none (only the base model: adapter null)"


def run_jobs(summarizer: Any, jobs: list[Job], batch_size: int) -> list[Any]:
    """In the worker thread: every job's dialogues in one `summarize_mixed` pass (calls of up to
    `batch_size` rows); a job whose adapter was removed after it queued gets its own `UnknownAdapter`."""
    from dialogtune.inference import BASE

    results: list[Any] = []
    rows: list[tuple[int, str, str | None, dict[str, Any]]] = []
    for j, job in enumerate(jobs):
        adapter = None if job.adapter == BASE else job.adapter
        if adapter is not None and adapter not in summarizer.adapters:
            results.append(UnknownAdapter(f"unknown adapter {adapter!r} (removed); the loaded adapters are: {known(summarizer)}"))
        else:
            results.append([])
            rows += [(j, d, adapter, job.overrides) for d in job.dialogues]
    if rows:
        texts = _summarize(summarizer, *map(list, zip(*[r[1:] for r in rows], strict=True)), batch_size)
        for (j, *_), text in zip(rows, texts, strict=True):
            results[j].append(text)
    return results


def _summarize(summarizer: Any, dialogues: list[str], adapters: list, overrides: list[dict], batch_size: int) -> list[str]:
    mixed = getattr(summarizer, "summarize_mixed", None)
    if mixed is not None:
        return mixed(dialogues, adapters, overrides, batch_size=batch_size)
    # An engine without adapters (CTranslate2): one call per distinct set of overrides.
    out = [""] * len(dialogues)
    for key in {tuple(sorted(o.items())) for o in overrides}:
        rows = [i for i, o in enumerate(overrides) if tuple(sorted(o.items())) == key]
        for i, text in zip(rows, summarizer.summarize([dialogues[i] for i in rows], None, **dict(key)), strict=True):
            out[i] = text
    return out
