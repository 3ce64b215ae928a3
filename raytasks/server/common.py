"""What every route module shares: the services, the caller and its scope, and hiding
other owners' things.

The caller is a bearer token (the operator's ``api.tokens`` plus the token file that
``raytasks token`` and the first ``raytasks serve`` write, see :mod:`raytasks.tokens`)
or a dashboard session cookie, whose state-changing requests must carry the session's
CSRF token. Every route declares the scope it needs (:data:`Reader`, :data:`Submitter`,
:data:`Admin`; the OpenAPI document shows it), and a caller without it is refused with
403 before anything else is looked at. Another owner's task or schedule is refused
exactly like a random id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from starlette.requests import HTTPConnection

from .. import tokens as token_file
from ..api import ProgressTracker, TaskExecutionEngine, TaskManager, TaskNotificationService
from ..errors import QuotaExceededError, SettingsError, TaskNotFoundError
from ..models import Task, TaskCreateRequest
from ..settings import ApiToken, Settings
from ..store.access import AccessStore
from .audit import AuditTrail
from .auth import (
    ADMIN,
    CSRF_HEADER,
    READ,
    SESSION_COOKIE,
    SUBMIT,
    Principal,
    authenticate,
    csrf_ok,
)
from .edge import scrub
from .peers import source_key
from .sessions import Sessions
from .throttle import Holds, Rate, SignIns, SlidingWindow, Turns

log = logging.getLogger("raytasks.server")

#: How many live log readers (follow streams, sockets following logs) one owner may hold.
MAX_LIVE_READERS = 8


class Unauthorized(Exception):
    """No token, a wrong one, or no session: 401."""


class CsrfRefused(Exception):
    """A cookie-authenticated change without the session's CSRF token: 403."""


class MissingScope(Exception):
    """The caller's token lacks the scope the route needs (or the task type): 403."""

    def __init__(self, scope: str, reason: str | None = None) -> None:
        super().__init__(reason or f"this route needs a token with the {scope} scope")
        self.scope = scope


class TooManyWrongTokens(Exception):
    """The caller's source presented too many wrong tokens lately, and this one is
    wrong too: 429, answered after ``delay_s``."""

    def __init__(self, retry_after_s: float, delay_s: float = 0.0) -> None:
        super().__init__(f"too many wrong tokens; try again in {retry_after_s:.0f} s")
        self.retry_after_s, self.delay_s = retry_after_s, delay_s


class TooManySignIns(Exception):
    """An owner or a source signed in too often lately: 429 naming the limit."""

    def __init__(self, retry_after_s: float, limit: str) -> None:
        super().__init__(f"too many dashboard sign-ins ({limit}); try again in "
                         f"{retry_after_s:.0f} s")
        self.retry_after_s, self.limit = retry_after_s, limit


class TooManyRequests(Exception):
    """An owner called a task route faster than its rate (``limit`` names the setting):
    429 with ``Retry-After``."""

    def __init__(self, retry_after_s: float, limit: str) -> None:
        super().__init__(f"too many requests ({limit}); try again in "
                         f"{max(1, math.ceil(retry_after_s))} s")
        self.retry_after_s, self.limit = retry_after_s, limit


@dataclass
class LiveReaders:
    """Counts each owner's open live log readers, so timing cannot be used to load the
    manager with polls (over the limit: 429 naming ``live_log_readers``)."""

    limit: int = MAX_LIVE_READERS
    by_owner: dict[str, int] = field(default_factory=dict)

    def acquire(self, owner: str) -> Callable[[], None]:
        """Take one of ``owner``'s slots; returns its release (safe to call twice).

        Raises:
            QuotaExceededError: the owner holds ``limit`` readers already.
        """
        held = self.by_owner.get(owner, 0)
        if held + 1 > self.limit:
            raise QuotaExceededError(owner, "live_log_readers", held + 1, self.limit)
        self.by_owner[owner] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self.by_owner.get(owner, 0) - 1
            if left > 0:
                self.by_owner[owner] = left
            else:
                self.by_owner.pop(owner, None)

        return release


@dataclass
class Services:
    """The facades the routes call, with the settings, the store's sessions and audit
    trail, and the counts that slow down wrong tokens and sign-ins."""

    settings: Settings
    tm: TaskManager
    tracker: ProgressTracker
    notifier: TaskNotificationService
    engine: TaskExecutionEngine
    access: AccessStore
    live: LiveReaders = field(default_factory=LiveReaders)
    sessions: Sessions = field(init=False)
    audit: AuditTrail = field(init=False)
    wrong: SlidingWindow = field(init=False)
    sign_ins: SignIns = field(init=False)
    holds: Holds = field(default_factory=Holds)
    rates: dict[str, Rate] = field(init=False)

    def __post_init__(self) -> None:
        api = self.settings.api
        self.sessions = Sessions(self.access.sessions, api)
        self.audit = AuditTrail(self.access.audit)
        self.wrong = SlidingWindow(api.max_wrong_tokens)
        self.sign_ins = SignIns(api.max_sign_ins_per_owner, api.max_sign_ins_per_source)
        self.rates = {"max_creates_per_s": Rate(api.max_creates_per_s, api.rate_burst_s),
                      "max_reads_per_s": Rate(api.max_reads_per_s, api.rate_burst_s)}
        self.turns = Turns(api.max_calls_in_flight_per_owner)

    def tokens(self) -> list[ApiToken]:
        """The tokens accepted now: the settings' and the token file's (re-read when it
        changes, so a revoked token stops working without a restart)."""
        try:
            return token_file.api_tokens(self.settings)
        except SettingsError as exc:  # a broken file: its tokens are not accepted
            log.error("the token file is not readable, only api.tokens are accepted: %s", exc)
            return list(self.settings.api.tokens)

    def vet(self, caller: HTTPConnection, check: Callable[[], Principal | None]) -> Principal:
        """The principal of the token the caller presents (``check`` looks it up). A
        valid token always passes; a wrong one counts against the caller's source.

        Raises:
            TooManyWrongTokens: a wrong token from a source past its limit.
            Unauthorized: a wrong token.
        """
        found = check()
        if found is not None:
            return found
        source = source_key(caller.client.host if caller.client else "")
        wait = self.wrong.wait_s(source)
        self.wrong.add(source)
        if wait > 0:
            raise TooManyWrongTokens(wait, self.settings.api.wrong_token_delay_s)
        raise Unauthorized()

    @contextlib.asynccontextmanager
    async def paced(self, who: Principal, limit: str) -> AsyncIterator[None]:
        """Count one call of ``who``'s owner against ``limit`` (``max_creates_per_s`` or
        ``max_reads_per_s``), then run the block in one of the owner's turns
        (``max_calls_in_flight_per_owner``).

        Raises:
            TooManyRequests: the owner is past its rate, or has too many calls waiting
                for a turn; nothing of the call was done.
        """
        wait = self.rates[limit].take(who.owner)
        if wait > 0:
            raise TooManyRequests(wait, limit)
        async with self.turns.turn(who.owner) as allowed:
            if not allowed:
                raise TooManyRequests(1.0, "max_calls_in_flight_per_owner")
            yield

    async def slow_down(self, delay_s: float) -> None:
        """Hold a refused wrong token back for ``delay_s`` (answered at once when too
        many are held already: waiting requests must not pile up)."""
        if delay_s <= 0 or not self.holds.take():
            return
        try:
            await asyncio.sleep(delay_s)
        finally:
            self.holds.release()

    async def own_task(self, task_id: str, who: Principal) -> Task:
        """The task, if ``who`` may see it; else the same 404 as an unknown id."""
        task = await self.tm.get_task(task_id)
        if not who.may_see(task.owner):
            raise TaskNotFoundError(task_id)  # another owner's task does not exist for you
        return task

    async def read_task(self, caller: HTTPConnection, task_id: str, who: Principal) -> Task:
        """:meth:`own_task`, recording an admin's read of another owner's task."""
        task = await self.own_task(task_id, who)
        if task.owner != who.owner:
            await self.audit.record(caller, who, "task.read", [(task.id, task.owner)])
        return task

    async def changeable_task(self, task_id: str, who: Principal) -> Task:
        """:meth:`own_task`, if ``who``'s token may submit its type (403 otherwise)."""
        task = await self.own_task(task_id, who)
        check_types([task.task_type], who)
        return task


def check_types(task_types: list[str], who: Principal) -> None:
    """Raises MissingScope unless ``who`` may submit every one of ``task_types``."""
    refused = sorted({t for t in task_types if not who.may_submit(t)})
    if refused:
        allowed = ", ".join(sorted(who.task_types or ()))
        raise MissingScope(SUBMIT, f"this token may not submit task type {refused[0]!r} "
                           f"(only: {allowed})")


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


Svc = Annotated[Services, Depends(services)]
# only for the OpenAPI document (the docs' "Authorize" button): the header is read below
_bearer = HTTPBearer(auto_error=False, description="a token from api.tokens or "
                                                   "`raytasks token create`")


def caller(request: Request, security: SecurityScopes,
           _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """The caller: a bearer token, or a dashboard session (with its CSRF token when the
    request changes something); 401/403 otherwise, and 403 without the route's scope."""
    svc = services(request)
    header = request.headers.get("authorization")
    if header:
        who = svc.vet(request, lambda: authenticate(header, svc.tokens()))
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        session = svc.sessions.find(cookie, svc.tokens())
        if session is None or cookie is None:
            raise Unauthorized()
        if request.method not in ("GET", "HEAD", "OPTIONS") and \
                not csrf_ok(cookie, request.headers.get(CSRF_HEADER)):
            raise CsrfRefused()
        who = session.principal
    for scope in security.scopes:
        if scope not in who.granted:
            raise MissingScope(scope)
    return who


#: Any valid caller, whatever its scopes: only for signing out.
Anyone = Annotated[Principal, Security(caller)]
Reader = Annotated[Principal, Security(caller, scopes=[READ])]
Submitter = Annotated[Principal, Security(caller, scopes=[SUBMIT])]
Admin = Annotated[Principal, Security(caller, scopes=[ADMIN])]
TaskId = Annotated[str, Path(min_length=1, max_length=200)]


def public(task: Task) -> Task:
    """A task as a client may see it: no traceback, no server paths in its error."""
    if task.error is None:
        return task
    return task.model_copy(update={"error": task.error.model_copy(update={
        "traceback": None, "message": scrub(task.error.message)})})


def stamped(request: TaskCreateRequest, who: Principal) -> TaskCreateRequest:
    """The request in the caller's name (only an admin may name another owner)."""
    if who.admin and request.owner:
        return request
    return request.model_copy(update={"owner": who.owner})


def owner_for(named: str | None, who: Principal) -> str:
    return named if who.admin and named else who.owner
