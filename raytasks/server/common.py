"""What every route module shares: the services, the caller, and hiding other owners' things.

The caller is a bearer token (the operator's ``api.tokens`` plus the token file that
``raytasks token`` and the first ``raytasks serve`` write, see :mod:`raytasks.tokens`)
or a dashboard session cookie, whose state-changing requests must carry the session's
CSRF token. Another owner's task or schedule is refused exactly like a random id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from .. import tokens as token_file
from ..api import ProgressTracker, TaskExecutionEngine, TaskManager, TaskNotificationService
from ..errors import QuotaExceededError, SettingsError, TaskNotFoundError
from ..models import Task, TaskCreateRequest
from ..settings import ApiToken, Settings
from .auth import CSRF_HEADER, SESSION_COOKIE, Principal, Sessions, WrongTokens, authenticate
from .edge import scrub

log = logging.getLogger("raytasks.server")

#: How many live log readers (follow streams, sockets following logs) one owner may hold.
MAX_LIVE_READERS = 8


class Unauthorized(Exception):
    """No token, a wrong one, or no session: 401."""


class CsrfRefused(Exception):
    """A cookie-authenticated change without the session's CSRF token: 403."""


class TooManyWrongTokens(Exception):
    """The caller's address presented too many wrong tokens lately: 429."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many wrong tokens; try again in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


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
    """The facades the routes call, with the settings and the dashboard sessions."""

    settings: Settings
    tm: TaskManager
    tracker: ProgressTracker
    notifier: TaskNotificationService
    engine: TaskExecutionEngine
    sessions: Sessions = field(default_factory=Sessions)
    live: LiveReaders = field(default_factory=LiveReaders)
    wrong: WrongTokens = field(init=False)

    def __post_init__(self) -> None:
        self.wrong = WrongTokens(self.settings.api.max_wrong_tokens)

    def tokens(self) -> list[ApiToken]:
        """The tokens accepted now: the settings' and the token file's (re-read when it
        changes, so a revoked token stops working without a restart)."""
        try:
            return token_file.api_tokens(self.settings)
        except SettingsError as exc:  # a broken file: its tokens are not accepted
            log.error("the token file is not readable, only api.tokens are accepted: %s", exc)
            return list(self.settings.api.tokens)

    def vet(self, caller: HTTPConnection, check: Callable[[], Principal | None]) -> Principal:
        """The principal of the token the caller presents (``check`` looks it up), with
        the caller's address answering for its wrong tokens.

        Raises:
            TooManyWrongTokens: the address is refused for now; the token is not checked.
            Unauthorized: a wrong token.
        """
        address = caller.client.host if caller.client else "unknown"
        wait = self.wrong.refused_for(address)
        if wait > 0:
            raise TooManyWrongTokens(wait)
        found = check()
        if found is None:
            self.wrong.wrong(address)
            raise Unauthorized()
        return found

    async def own_task(self, task_id: str, who: Principal) -> Task:
        """The task, if ``who`` may see it; else the same 404 as an unknown id."""
        task = await self.tm.get_task(task_id)
        if not who.may_see(task.owner):
            raise TaskNotFoundError(task_id)  # another owner's task does not exist for you
        return task


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


Svc = Annotated[Services, Depends(services)]
# only for the OpenAPI document (the docs' "Authorize" button): the header is read below
_bearer = HTTPBearer(auto_error=False, description="a token from api.tokens or "
                                                   "`raytasks token create`")


def principal(request: Request,
              _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """The caller: a bearer token, or a dashboard session (with its CSRF token when the
    request changes something); 401/403 otherwise."""
    svc = services(request)
    header = request.headers.get("authorization")
    if header:
        return svc.vet(request, lambda: authenticate(header, svc.tokens()))
    session = svc.sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise Unauthorized()
    if request.method not in ("GET", "HEAD", "OPTIONS") and \
            not session.csrf_ok(request.headers.get(CSRF_HEADER)):
        raise CsrfRefused()
    return session.principal


Auth = Annotated[Principal, Depends(principal)]
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
