"""`dialogtune serve`: one base model and many LoRA adapters over HTTP, in micro-batches that mix adapters.

    dialogtune serve --model builtin:tiny-t5 --adapter support=runs/lora-a --adapter sales=runs/lora-b
    curl -s localhost:8000/v1/summarize -d '{"dialogues": ["#Person1#: Hi.\\n#Person2#: Hello."], "adapter": "sales"}'

The app holds one `Summarizer` and loads models only through it; run folders are read by `runs.read_run`
(inside `Summarizer.add_adapter`). Requests queue in `batching.MicroBatcher`; one generate call may mix
adapters and the bare base (peft's `adapter_names`). Every limit answers with `{"error": "..."}` naming
the limit and its value. OpenAPI docs are at /docs.

Over 300 lines: the routes close over one server's state and read best as one API; the queue, the
options and running a batch through the summarizer live in `batching.py`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from dialogtune.batching import Expired, MicroBatcher, QueueFull, ServeOptions, UnknownAdapter, known, run_jobs
from dialogtune.errors import DialogtuneError
from dialogtune.inference import BASE
from dialogtune.serverguards import BodyLimit, check_bind
from dialogtune.weights import pickle_allowed

log = logging.getLogger(__name__)

# Names come from clients: letters, digits, `_.-`, no paths; peft reserves `lora_` and `__base__`.
ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CT2_ADAPTERS = "CTranslate2 has no LoRA support; merge the adapter with `dialogtune merge` and export it"


class ApiError(Exception):
    """An HTTP error whose body is `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class SummarizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dialogues: list[str] = Field(min_length=1, description="dialogues to summarise, e.g. '#Person1#: Hi.\\n#Person2#: Hello.'")
    adapter: str | None = Field(None, description="a loaded adapter's name; null (or __base__) for the bare base model")
    max_new_tokens: int | None = Field(None, ge=1, description="longest summary in tokens; the adapter's own setting if null")


class Timings(BaseModel):
    queue_ms: float = Field(description="waiting for a batch and for the worker")
    generation_ms: float = Field(description="the generate call(s) of the batch this request ran in")
    batch_dialogues: int = Field(description="dialogues in that batch, from all requests in it")


class SummarizeResponse(BaseModel):
    summaries: list[str]
    adapter: str | None
    timings: Timings


class AdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description=f"letters, digits, `_.-`; matches {ADAPTER_NAME.pattern}, without `lora_`")
    run: str = Field(description="a LoRA run folder, relative to the server's --adapter-root (or absolute inside it)")


def check_name(name: str) -> str:
    """An adapter name a client may use, or the reason it may not (one line)."""
    if not ADAPTER_NAME.fullmatch(name) or "lora_" in name:
        raise DialogtuneError(f"adapter name {name!r} is not allowed; use {ADAPTER_NAME.pattern} without `lora_`")
    return name


class Server:
    """The state behind the routes: the summarizer, its batcher, and where adapters came from."""

    def __init__(self, summarizer: Any, options: ServeOptions, runs: dict[str, str], adapter_root: Path) -> None:
        self.summarizer, self.options, self.runs, self.adapter_root = summarizer, options, dict(runs), adapter_root
        # Its own tokenizer and thread: counting never blocks the event loop or touches the worker's tokenizer,
        # and one thread (not asyncio's pool of several) keeps the memory of per-thread allocator arenas down.
        self.counter = copy.deepcopy(summarizer.tokenizer)
        self.counting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dialogtune-tokens")
        run = partial(run_jobs, summarizer, batch_size=options.max_batch_size)
        self.batcher = MicroBatcher(run, options.max_batch_size, options.max_wait_ms, options.max_queue)

    def check(self, body: SummarizeRequest) -> None:
        """Refuse a request over a limit before it queues, naming the limit and its value."""
        o, count = self.options, len(body.dialogues)
        if count > o.max_dialogues:
            raise ApiError(422, f"`dialogues` has {count} items, more than the server's limit max_dialogues={o.max_dialogues}; split the request")
        if body.max_new_tokens is not None and body.max_new_tokens > o.max_new_tokens:
            raise ApiError(422, f"max_new_tokens={body.max_new_tokens} is more than the server's limit max_new_tokens={o.max_new_tokens}")
        empty = next((i for i, d in enumerate(body.dialogues) if not d.strip()), None)
        if empty is not None:
            raise ApiError(422, f"dialogue {empty} is empty; send the dialogue's text")
        if body.adapter not in (None, BASE) and body.adapter not in self.summarizer.adapters:
            raise ApiError(404, f"unknown adapter {body.adapter!r}; the loaded adapters are: {known(self.summarizer)}")

    async def check_tokens(self, dialogues: list[str]) -> None:
        count = partial(self.counter, dialogues, add_special_tokens=False)
        ids = (await asyncio.get_running_loop().run_in_executor(self.counting, count))["input_ids"]
        limit = self.options.max_dialogue_tokens
        over = next(((i, len(x)) for i, x in enumerate(ids) if len(x) > limit), None)
        if over is not None:
            raise ApiError(422, f"dialogue {over[0]} is {over[1]} tokens, more than the server's limit max_dialogue_tokens={limit}; shorten it")

    def run_folder(self, run: str) -> Path:
        """A client's run path, only inside the adapter root (symlinks resolved), so clients name runs, not files."""
        root = self.adapter_root.resolve()
        folder = (root / run).resolve()
        if folder != root and root not in folder.parents:
            raise ApiError(403, f"run folder {run!r} is outside the server's adapter root {root}; pass a folder inside it")
        return folder


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is already read, so only a disconnect can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def api_error(err: Exception, timeout_s: float) -> ApiError:
    """What a failed request tells its client, in one line; a traceback goes only to the log."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, Expired):
        return ApiError(504, f"the request took longer than the server's limit timeout_s={timeout_s:g}; retry, or send fewer dialogues")
    if isinstance(err, QueueFull):
        return ApiError(503, str(err))
    if isinstance(err, DialogtuneError):
        return ApiError(404 if isinstance(err, UnknownAdapter) else 422, str(err))
    log.error("generation failed", exc_info=err)
    return ApiError(500, f"generation failed ({type(err).__name__}: {str(err)[:200]})")


def _safetensors_only(summarizer: Any, name: str, folder: Path) -> None:
    """Adapters named by clients load from safetensors only, whatever --allow-pickle allowed at startup."""
    with pickle_allowed(False):
        summarizer.add_adapter(name, folder)


def create_app(
    summarizer: Any, options: ServeOptions | None = None, token: str | None = None, runs: dict[str, str] | None = None,
    adapter_root: str | Path | None = None, base: str | None = None,
) -> FastAPI:
    """The FastAPI app over a loaded summarizer (see `serve` for the command line).

    `token`: every /v1 route needs `Authorization: Bearer <token>`. `runs`: where the loaded adapters came
    from (listed by GET /v1/adapters). POST /v1/adapters loads run folders inside `adapter_root` (default: cwd).
    """
    options = options or ServeOptions()
    server = Server(summarizer, options, runs or {}, Path(adapter_root or Path.cwd()))
    bearer = HTTPBearer(auto_error=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        server.batcher.start()
        yield
        await server.batcher.close()  # uvicorn has let in-flight requests finish; finish what still queues
        server.counting.shutdown()

    async def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is not None and (credentials is None or not secrets.compare_digest(credentials.credentials, token)):
            raise ApiError(401, "missing or wrong bearer token; send the header `Authorization: Bearer <token>`")

    app = FastAPI(title="dialogtune", summary="Dialogue summaries from one base model and many LoRA adapters",
                  lifespan=lifespan)
    app.state.server = server
    app.add_middleware(BodyLimit, limit=options.max_body_bytes,
                       hint=f"max_body_bytes={options.max_body_bytes}; send fewer or shorter dialogues")
    v1 = [Depends(authorized)]

    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, err: ApiError) -> JSONResponse:
        return JSONResponse({"error": err.message}, err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}" for e in err.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, err.status_code, headers=err.headers)

    @app.post("/v1/summarize", response_model=SummarizeResponse, dependencies=v1)
    async def summarize(body: SummarizeRequest, request: Request) -> Any:
        """Summaries of the dialogues with one adapter (or the base); batched with other requests."""
        server.check(body)
        await server.check_tokens(body.dialogues)
        overrides = {} if body.max_new_tokens is None else {"max_new_tokens": body.max_new_tokens}
        try:
            job = server.batcher.submit(body.dialogues, body.adapter, overrides)
            summaries = await server.batcher.wait(job, _disconnected(request), options.timeout_s)
        except Exception as err:  # noqa: BLE001 - every failure becomes its own one-line JSON error
            raise api_error(err, options.timeout_s) from None
        if summaries is None:
            return Response(status_code=499)  # the client has gone; nobody reads this
        timings = Timings(queue_ms=1000 * (job.started - job.queued), generation_ms=1000 * (job.finished - job.started),
                          batch_dialogues=job.batch_size)
        return SummarizeResponse(summaries=summaries, adapter=body.adapter, timings=timings)

    def listing(name: str) -> dict[str, Any]:
        return {"name": name, "run": server.runs.get(name), "generation": summarizer.adapters[name].generation}

    @app.get("/v1/adapters", dependencies=v1)
    async def adapters() -> dict[str, Any]:
        """The base model and the loaded adapters with their run folders and generation settings."""
        return {"base": base or getattr(summarizer, "base", None), "adapters": [listing(n) for n in list(summarizer.adapters)]}

    @app.post("/v1/adapters", status_code=201, dependencies=v1)
    async def load(body: AdapterRequest) -> dict[str, Any]:
        """Load a LoRA run folder (safetensors only) as adapter `name`, between batches."""
        if not hasattr(summarizer, "add_adapter"):
            raise ApiError(400, CT2_ADAPTERS)
        try:
            check_name(body.name)
        except DialogtuneError as err:
            raise ApiError(422, str(err)) from None
        if body.name in summarizer.adapters:
            raise ApiError(409, f"adapter {body.name!r} is already loaded; DELETE /v1/adapters/{body.name} first")
        folder = server.run_folder(body.run)
        if server.batcher.closing:
            raise ApiError(503, "the server is shutting down")
        try:
            await server.batcher.call(_safetensors_only, summarizer, body.name, folder)
        except DialogtuneError as err:
            raise ApiError(422, str(err)) from None
        server.runs[body.name] = str(folder)
        return listing(body.name)

    @app.delete("/v1/adapters/{name}", dependencies=v1)
    async def unload(name: str) -> dict[str, str]:
        """Unload an adapter; requests for it still queued get 404."""
        if name not in summarizer.adapters:
            raise ApiError(404, f"unknown adapter {name!r}; the loaded adapters are: {known(summarizer)}")
        if server.batcher.closing:
            raise ApiError(503, "the server is shutting down")
        await server.batcher.call(summarizer.remove_adapter, name)
        server.runs.pop(name, None)
        return {"deleted": name}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready to take requests: the model is loaded and the batcher runs (503 while shutting down)."""
        if not server.batcher.running:
            return JSONResponse({"error": "not ready: the batcher is not running (starting or shutting down)"}, 503)
        return JSONResponse({"ready": True, "adapters": len(summarizer.adapters), "queued": len(server.batcher.pending)})

    return app


def parse_adapters(pairs: list[str]) -> dict[str, str]:
    """`NAME=RUN` pairs from the command line, names checked like a client's."""
    runs: dict[str, str] = {}
    for pair in pairs:
        name, sep, run = pair.partition("=")
        if not sep or not run:
            raise DialogtuneError(f"--adapter {pair!r} is not NAME=RUN; e.g. --adapter support=runs/lora")
        if name in runs:
            raise DialogtuneError(f"--adapter {name} is given twice; each name serves one run")
        runs[check_name(name)] = run
    return runs


def load_summarizer(model: str, runs: dict[str, str], backend: str = "torch") -> Any:
    """The one model the server holds: base + adapters (torch), or a CTranslate2 export folder."""
    if backend == "ct2":
        if runs:
            raise DialogtuneError(CT2_ADAPTERS)
        from dialogtune.ct2 import CT2Summarizer

        return CT2Summarizer.from_folder(model)
    from dialogtune.inference import Summarizer

    return Summarizer.from_adapters(model, runs) if runs else Summarizer.from_base(model)


def serve(
    model: str, adapters: list[str], options: ServeOptions, token: str | None = None, backend: str = "torch",
    adapter_root: str | None = None,
) -> None:
    """Load the model and adapters, then serve until interrupted; in-flight requests finish first."""
    import uvicorn

    check_bind(options.host, token, "the server", "pass --token (or set DIALOGTUNE_TOKEN) so clients must send it")
    runs = parse_adapters(adapters)
    app = create_app(load_summarizer(model, runs, backend), options, token, runs, adapter_root, base=model)
    log.info("serving %s with adapters %s on http://%s:%d (docs at /docs)", model, ", ".join(runs) or "none",
             options.host, options.port)
    # Past the request timeout nothing in flight can still succeed, so shutdown waits no longer than that.
    level = "warning" if logging.getLogger().getEffectiveLevel() >= logging.WARNING else "info"  # -q: no access log
    uvicorn.run(app, host=options.host, port=options.port, timeout_graceful_shutdown=int(options.timeout_s) + 5,
                log_level=level)
