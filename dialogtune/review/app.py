"""`dialogtune review`: the blind side-by-side rating page, a FastAPI app over a study database.

    dialogtune review runs/original runs/full runs/lora --sample 30 --db study.sqlite
    # raters open http://127.0.0.1:8001/, enter a name, and rate; then:
    dialogtune review-results --db study.sqlite

The app reads and writes only the study database (`store.Store`); the run folders are read once,
through `runs.read_run`, when the study is created, and no model is ever loaded. Routes:
``GET /`` name form, ``POST /start``, ``GET /rate/{rater}`` next item (or done),
``POST /rate/{rater}/{item}`` one answer, ``GET /healthz``. Errors are JSON ``{"error": ...}``.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from dialogtune.review import pages
from dialogtune.review.store import PREFERENCES, SCALES, Refused, Store, open_study
from dialogtune.serverguards import BodyLimit, check_bind

MAX_BODY = 8_192  # bytes; an answer form is a few hundred
RATER = re.compile(r"[^\x00-\x1f\x7f/\\]{1,40}")  # any printable name without slashes; it becomes a URL segment
COOKIE = "dialogtune_review_token"
FIELDS = {"preference", *SCALES, "unsupported_a", "unsupported_b"}
OPEN_PATHS = {"/", "/start", "/healthz", "/review.css", "/review.js"}
SECURITY_HEADERS = {
    # Only our own script and stylesheet may run: an escaping slip still could not execute anything.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def check_rater(name: str) -> str:
    """A rater name, stripped; Refused if empty, too long, or holding control characters or slashes."""
    name = name.strip()
    if not RATER.fullmatch(name):
        raise Refused(422, "a rater name is 1 to 40 characters, without slashes or control characters")
    return name


async def _form(request: Request) -> dict[str, list[str]]:
    """The URL-encoded form of `request`; Refused (415, 400) otherwise."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise Refused(415, "send the form as application/x-www-form-urlencoded")
    body = await request.body()  # at most MAX_BODY bytes: BodyLimit answered 413 to anything bigger
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), max_num_fields=40)
    except (UnicodeDecodeError, ValueError) as err:
        raise Refused(400, f"the form could not be read ({err}); submit it from the review page") from None


def _answers(form: dict[str, list[str]]) -> dict[str, Any]:
    """Form fields -> typed answers; unknown or repeated fields are refused (the store checks the ranges)."""
    unknown = set(form) - FIELDS
    if unknown:
        raise Refused(422, f"unexpected form field {sorted(unknown)[0]!r}; submit the form from the review page")
    answers: dict[str, Any] = {}
    for name in ("preference", *SCALES):
        values = form.get(name, [])
        if len(values) != 1:
            raise Refused(422, f"{name} is missing; answer every question" if not values else f"{name} is given twice")
        answers[name] = values[0] if name == "preference" else int(values[0]) if values[0].isdigit() else values[0]
    if answers["preference"] not in PREFERENCES:
        raise Refused(422, f"preference is {answers['preference']!r}; answer A, B or tie")
    for side in "ab":
        marked = form.get(f"unsupported_{side}", [])
        answers[f"unsupported_{side}"] = [int(v) if v.isdigit() else v for v in marked]
    return answers


def create_app(store: Store, token: str | None = None) -> FastAPI:
    """The review app over `store`. With `token`, raters enter it once on the start page (kept in a cookie)."""
    app = FastAPI(title="dialogtune review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY, hint="submit the answer from the review page")

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if request.method == "POST":
            origin = request.headers.get("origin")
            if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
                return _error(403, "cross-site form posts are refused; answer from the review page itself")
        if token is not None and request.url.path not in OPEN_PATHS:
            given = request.cookies.get(COOKIE) or request.headers.get("authorization", "").removeprefix("Bearer ")
            if not secrets.compare_digest(given.encode(), token.encode()):
                return _error(401, "this study needs its token; open / and enter it with your name")
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(Refused)
    async def refused(_: Request, err: Refused) -> JSONResponse:
        return _error(err.status, str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, _: Exception) -> JSONResponse:
        return _error(422, f"{request.url.path} is not a review address; items are numbered, raters start at /")

    @app.exception_handler(404)
    async def not_found(request: Request, _: Exception) -> JSONResponse:
        return _error(404, f"no page {request.url.path}; raters start at /")

    @app.exception_handler(405)
    async def not_allowed(request: Request, _: Exception) -> JSONResponse:
        return _error(405, f"{request.method} is not allowed on {request.url.path}")

    @app.get("/", response_class=HTMLResponse)
    def start() -> str:
        return pages.start_page(token is not None)

    @app.post("/start")
    async def begin(request: Request) -> Response:
        form = await _form(request)
        if token is not None and not secrets.compare_digest(form.get("token", [""])[0].encode(), token.encode()):
            return HTMLResponse(pages.start_page(True, "That is not the study's token."), 401)
        rater = check_rater(form.get("name", [""])[0])
        await run_in_threadpool(store.start, rater)
        response = RedirectResponse(pages.rater_url(rater), 303)
        if token is not None:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.get("/rate/{rater}", response_class=HTMLResponse)
    def rate(rater: str) -> Response:
        rater = check_rater(rater)
        done, total = store.progress(rater)
        if total == 0:
            return RedirectResponse("/", 303)  # a name that never started: the start page
        item = store.next_item(rater)
        return HTMLResponse(pages.done_page(rater, total) if item is None else pages.item_page(rater, item, done, total))

    @app.post("/rate/{rater}/{item_id}")
    async def answer(rater: str, item_id: int, request: Request) -> Response:
        rater = check_rater(rater)
        answers = _answers(await _form(request))
        await run_in_threadpool(store.record, rater, item_id, answers)
        return RedirectResponse(pages.rater_url(rater), 303)  # post/redirect/get: a reload never resubmits

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/review.css")
    def css() -> Response:
        return Response(pages.CSS, media_type="text/css")

    @app.get("/review.js")
    def js() -> Response:
        return Response(pages.JS, media_type="text/javascript")

    return app


def review(folders: list[str], db: str | Path, sample: int | None = None, seed: int = 0, host: str = "127.0.0.1",
           port: int = 8001, token: str | None = None, reference: bool = True, shared_pairs: int | None = None) -> None:
    """Create (or reopen) the study in `db` and serve the rating page until interrupted."""
    import uvicorn

    check_bind(host, token, "the review page", "pass --token T (raters enter it once)")
    store = open_study(db, folders, sample, seed, reference, shared_pairs)
    study = store.study()
    print(f"review: http://{host}:{port}/ ({study['sample']} dialogues, systems {', '.join(s['name'] for s in store.systems())}; "
          f"answers saved in {Path(db).resolve()})", flush=True)
    uvicorn.run(create_app(store, token), host=host, port=port, log_level="warning")
