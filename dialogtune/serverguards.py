"""What both HTTP servers (`serve`, `review`) guard the same way: who can reach them, and how big a body may be."""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi.responses import JSONResponse

from dialogtune.errors import DialogtuneError


def check_bind(host: str, token: str | None, what: str, token_hint: str) -> None:
    """Loopback by default; any other address is reachable by other machines, so it needs a token.

    `what` names the server in the error ("the server"), `token_hint` says how the token is given and used.
    """
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve anywhere
        loopback = False
    if not loopback and not token:
        raise DialogtuneError(f"--host {host} makes {what} reachable from other machines; {token_hint}, "
                              "or keep --host 127.0.0.1")


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is answered 413 (JSON) before the app parses any of it.

    The declared Content-Length is checked first; a chunked body is counted as it arrives, and what was read is
    replayed to the app. `hint` ends the error: what the client should send instead.
    """

    def __init__(self, app: Any, limit: int, hint: str) -> None:
        self.app, self.limit, self.hint = app, limit, hint

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        chunks, size, message = [], int(declared) if declared.isdigit() else 0, {"more_body": True}
        received = 0
        while size <= self.limit and message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            size = max(size, received)
        if size > self.limit:
            text = f"request body is over the server's limit of {self.limit} bytes; {self.hint}"
            return await JSONResponse({"error": text}, 413)(scope, receive, send)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # later reads wait for the client to disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
