"""The outermost layer of the HTTP app: what every request and response goes through.

- Every response carries ``X-Request-Id`` and security headers (``nosniff``,
  no framing, no referrer, a deny-all Content-Security-Policy unless the route
  set its own).
- Bodies over the limit are refused with 413; JSON bodies are parsed strictly
  before pydantic sees them (valid UTF-8, no NaN or infinities, no lone
  surrogates, at most :data:`~raytasks.inputs.MAX_DEPTH` levels): 422 otherwise.
- An unexpected exception becomes a 500 that names its request id and nothing
  else; the traceback goes to the server log under the same id.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse

from ..inputs import MAX_DEPTH, check_json_tree

log = logging.getLogger("raytasks.server")

REQUEST_ID = "X-Request-Id"
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# an absolute or home-relative path, but not the path part of a URL or a fraction
_PATH = re.compile(r"(?<![\w.:/~-])~?/[\w.@+-]+(?:/[\w.@+-]*)+")


class FieldError(BaseModel):
    field: str
    reason: str


class ErrorBody(BaseModel):
    """Every error response: what went wrong, in a sentence, and which fields."""

    model_config = ConfigDict(extra="allow")

    error: str
    message: str
    errors: list[FieldError] | None = None
    request_id: str | None = None


def error(status: int, kind: str, message: str, **data: Any) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message, **data}, status_code=status)


def scrub(text: str) -> str:
    """``text`` without server paths (they tell an attacker where things are)."""
    return _PATH.sub("<path>", text)


def strict_json(body: bytes) -> Any:
    """Parse a request body as strict JSON.

    Raises:
        ValueError: saying why it is not acceptable JSON.
    """
    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError("NaN and infinities are not JSON numbers")
        return value

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the body is not valid UTF-8") from None
    if _nesting(text) > MAX_DEPTH + 1:  # +1: the body itself is the outermost level
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(text, parse_float=finite, parse_constant=constant)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    return check_json_tree(value, MAX_DEPTH + 1)


def _nesting(text: str) -> int:
    """The deepest bracket nesting outside strings, counted before parsing anything."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH + 1:
                return deepest
        elif char in "]}":
            depth -= 1
    return deepest


class Edge:
    """ASGI middleware: request ids, security headers, body limit, strict JSON, 500s."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app, self.limit = app, max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_headers(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID] = request_id
                for name, value in _SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Content-Security-Policy", API_CSP)
            await send(message)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
                refused, receive = await self._read_body(scope, receive)
                if refused is not None:
                    return await refused(scope, receive, send_with_headers)
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("request %s (%s %s) failed", request_id, scope["method"],
                          scope["path"])
            if not started:
                response = error(500, "InternalError", "the server failed on this request; "
                                 f"quote request id {request_id} to the operator",
                                 request_id=request_id)
                await response(scope, receive, send_with_headers)

    async def _read_body(self, scope: Any, receive: Any) -> tuple[JSONResponse | None, Any]:
        """Read the whole body (refusing it early when too large), check JSON, replay it."""
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = error(413, "PayloadTooLargeError",
                          f"request body over the limit of {self.limit} bytes",
                          field="body", limit=self.limit)
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return too_large, receive
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return too_large, receive
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body:  # every body this API takes is JSON, whatever the client calls it
            try:
                strict_json(body)
            except ValueError as exc:
                return error(422, "InvalidParametersError", f"invalid request: body: {exc}",
                             errors=[{"field": "body", "reason": str(exc)}]), receive
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        return None, replay
