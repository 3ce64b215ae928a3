"""``/session``, ``/sessions`` and ``/audit``: signing the dashboard in and out (here, or
everywhere), and the audit trail an admin reads.

A sign-in takes a token with the ``read`` scope once, in the body, and answers with an
HttpOnly, SameSite=Strict session cookie and the session's CSRF token (the page keeps it
in memory). Sign-ins are counted per owner and per source (429 ``TooManySignIns`` past
``api.max_sign_ins_per_owner`` / ``max_sign_ins_per_source`` a minute); an owner's new
session past ``api.max_sessions_per_owner`` ends that owner's oldest.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, Field

from ..inputs import check_text
from .audit import AuditPage
from .auth import CSRF_HEADER, READ, SESSION_COOKIE, principal_for
from .common import (
    Admin,
    Anyone,
    CsrfRefused,
    MissingScope,
    Svc,
    TooManySignIns,
    Unauthorized,
    owner_for,
)
from .peers import source_key

router = APIRouter()
#: A name in a query: one line of text (no control characters, no lone surrogates).
Name = Annotated[str, AfterValidator(check_text)]


class Login(BaseModel):
    token: str = Field(min_length=1, max_length=1024)


class SessionInfo(BaseModel):
    owner: str
    role: str
    scopes: list[str]
    csrf: str = Field(description=f"send it back as {CSRF_HEADER} on every change")


class SessionsEnded(BaseModel):
    ended: int = Field(description="how many sessions were ended, on every server")


@router.post("/session")
async def login(body: Login, request: Request, response: Response, svc: Svc) -> SessionInfo:
    """Sign a dashboard in: an HttpOnly session cookie and the session's CSRF token.
    The token must hold the ``read`` scope; the session has the token's scopes and ends
    when the token is revoked."""
    origin = request.headers.get("origin")
    if origin and origin.split("://", 1)[-1] != request.headers.get("host"):
        raise CsrfRefused()
    who = svc.vet(request, lambda: principal_for(body.token, svc.tokens()))
    if READ not in who.granted:
        raise MissingScope(READ, "a dashboard session needs a token with the read scope")
    address = request.client.host if request.client else ""
    wait, limit = svc.sign_ins.wait_s(who.owner, source_key(address))
    if wait > 0:
        raise TooManySignIns(wait, limit)
    cookie, session, evicted = await asyncio.to_thread(svc.sessions.open, who, address)
    svc.sign_ins.add(who.owner, source_key(address))
    response.set_cookie(SESSION_COOKIE, cookie, max_age=math.ceil(svc.sessions.max_s),
                        httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    await svc.audit.record(request, who, "session.open", [(session.handle, who.owner)],
                           f"ended {evicted} older session(s) of the owner" if evicted
                           else None)
    return _info(who.owner, who.admin, who.granted, session.csrf)


@router.get("/session")
async def current_session(request: Request, svc: Svc) -> SessionInfo:
    """The session of the cookie sent (the dashboard reloaded): who, and its CSRF token."""
    session = await asyncio.to_thread(svc.sessions.find, request.cookies.get(SESSION_COOKIE),
                                      svc.tokens())
    if session is None:
        raise Unauthorized()
    who = session.principal
    return _info(who.owner, who.admin, who.granted, session.csrf)


@router.delete("/session", status_code=204)
async def logout(request: Request, who: Anyone, svc: Svc) -> Response:
    """Sign this dashboard out (the session of the cookie sent)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if await asyncio.to_thread(svc.sessions.close, cookie):
        await svc.audit.record(request, who, "session.close")
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.delete("/sessions")
async def logout_everywhere(
        request: Request, who: Anyone, svc: Svc,
        owner: Annotated[Name | None, Query(min_length=1, max_length=200, description=(
            "an admin's: whose sessions to end (default: the caller's own)"))] = None,
) -> SessionsEnded:
    """Sign out everywhere: end every dashboard session of the caller's owner, on every
    server (an admin may name another owner)."""
    whose = owner_for(owner, who)
    ended = await asyncio.to_thread(svc.sessions.close_owner, whose)
    await svc.audit.record(request, who, "session.close_all", [(None, whose)],
                           f"ended {ended} session(s)")
    return SessionsEnded(ended=ended)


@router.get("/audit")
async def audit_trail(
        who: Admin, svc: Svc,
        owner: Annotated[Name | None, Query(max_length=200, description=(
            "entries of what this owner did"))] = None,
        target_owner: Annotated[Name | None, Query(max_length=200, description=(
            "entries about this owner's things"))] = None,
        action: Annotated[Name | None, Query(max_length=32, description=(
            "one action, e.g. task.create, session.open, token.revoke"))] = None,
        since: Annotated[float | None, Query(ge=0, le=1e11, description=(
            "entries at or after this time (Unix seconds)"))] = None,
        until: Annotated[float | None, Query(ge=0, le=1e11, description=(
            "entries before this time (Unix seconds)"))] = None,
        before: Annotated[int | None, Query(ge=1, le=2**62, description=(
            "the next_before of the previous page"))] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """The audit trail, newest first (admin): who did what, with which token, from
    which address, in which request."""
    return await asyncio.to_thread(svc.audit.page, limit, owner=owner,
                                   target_owner=target_owner, action=action, since=since,
                                   until=until, before=before)


def _info(owner: str, admin: bool, scopes: frozenset[str], csrf: str) -> SessionInfo:
    return SessionInfo(owner=owner, role="admin" if admin else "user",
                       scopes=sorted(scopes), csrf=csrf)
