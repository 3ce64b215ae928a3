"""The one place where raytasks meets Ray: named actors, get-or-create, ``connect()``.

:mod:`.manager`, :mod:`.tracker`, :mod:`.notifier` and :mod:`.engine` hold the
actor classes (each a plain class plus its loops; what they share is in
:mod:`.actors`); :class:`Runtime` gets or creates them in the settings'
namespace, importing each class only when it creates that actor.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from typing import TYPE_CHECKING, Any

import ray
from ray.actor import ActorHandle

from ..errors import NotConnectedError
from ..settings import Settings
from . import connection
from .actors import ENGINE, MANAGER, NOTIFIER, TRACKER, get
from .calls import ManagerCalls
from .connection import Connection

if TYPE_CHECKING:
    from .session import ClientSession

log = logging.getLogger(__name__)

#: each role's actor class, imported only by the process that creates the actor
_ROLES: dict[str, tuple[str, str]] = {
    MANAGER: (".manager", "Manager"), TRACKER: (".tracker", "Tracker"),
    NOTIFIER: (".notifier", "Notifier"), ENGINE: (".engine", "Engine"),
}


class Runtime:
    """A client's connection: settings plus handles to the system actors."""

    #: how this process joined Ray (None when Ray was already initialised)
    connection: Connection | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._handles: dict[str, ActorHandle] = {}
        self._lock = threading.Lock()
        self._session: ClientSession | None = None

    @property
    def manager(self) -> ManagerCalls:
        """The manager actor's methods, typed (:class:`raytasks.protocol.ManagerApi`)."""
        return ManagerCalls(self.handle(MANAGER))

    @property
    def session(self) -> ClientSession:
        """This client's submit routes and wait stream (made on first use)."""
        if self._session is None:
            from .session import ClientSession

            manager = self.manager
            with self._lock:
                if self._session is None:
                    self._session = ClientSession(self.settings, manager)
        return self._session

    def handle(self, role: str) -> ActorHandle:
        handle = self._handles.get(role)
        if handle is None:
            with self._lock:
                handle = self._handles[role] = self._get_or_create(role)
        return handle

    def forget(self, role: str) -> None:
        self._handles.pop(role, None)

    def _get_or_create(self, role: str) -> ActorHandle:
        options: dict[str, Any] = {
            "name": role, "namespace": self.settings.namespace, "lifetime": "detached",
            "get_if_exists": True, "max_restarts": -1, "num_cpus": 0,
        }
        if self.settings.system_actors_on_head:
            # worker nodes come and go (autoscaling); the head stays
            options["resources"] = {"node:__internal_head__": 0.001}
        if role != ENGINE:
            options.update(max_concurrency=10_000, max_task_retries=-1)
        module, name = _ROLES[role]
        actor: Any = ray.remote(getattr(importlib.import_module(module, __name__), name))
        handle: ActorHandle = actor.options(**options).remote(self.settings)
        return handle

    def start(self) -> Runtime:
        """Bring every system actor up, and one executor pool per known task type.

        All four side by side: each is a process of its own, and starting them one after
        another costs seconds on a laptop. Whichever opens a new store first migrates it;
        the others wait for the migration's lock and find it done
        (:mod:`raytasks.store.migrate`).
        """
        manager, engine = self.handle(MANAGER), self.handle(ENGINE)
        types: list[Any] = get([manager.types.remote(), self.handle(TRACKER).ready.remote(),
                                self.handle(NOTIFIER).last_event_id.remote()])[0]
        get(engine.ensure_pools.remote([t.name for t in types]))
        return self

    def shutdown(self) -> None:
        """Kill this namespace's system actors and executors (state stays in the store)."""
        if self._session is not None:  # its last notices first, then its threads stop
            self._session.close()
            self._session = None
        try:
            ray.get(self.handle(ENGINE).shutdown.remote(), timeout=30)
        except Exception as exc:
            log.warning("engine shutdown: %s", exc)
        for role in (ENGINE, MANAGER, TRACKER, NOTIFIER):
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(role, namespace=self.settings.namespace),
                         no_restart=True)
        self._handles.clear()


_current: Runtime | None = None


def connect(address: str | None = None, *, settings: Settings | None = None,
            **overrides: Any) -> Runtime:
    """Join a Ray cluster or start an embedded one, then bring the system actors up.

    ``address`` takes every form Ray does: ``"auto"``, ``"host:6379"`` (a GCS),
    ``"ray://host:10001"`` (a Ray client server); without one,
    ``RAYTASKS_ADDRESS`` or ``RAY_ADDRESS``, else an embedded local Ray (with
    Ray's dashboard and Jobs API when ``settings.ray_dashboard``). Token auth is
    arranged as the cluster needs (:mod:`raytasks.runtime.connection`). The
    system actors are created if missing (detached, so they outlive this
    client on a real cluster) and reused if present.

    Raises:
        NotConnectedError: the cluster cannot be joined; the message says why and
            what to set (it fails within seconds, not after Ray's 30 s timeout).
    """
    global _current
    settings = settings or Settings(**overrides)
    joined = None
    if not ray.is_initialized():
        joined = connection.join(address, settings)
    _current = Runtime(settings).start()
    _current.connection = joined
    return _current


def current() -> Runtime:
    """The runtime of the last :func:`connect`, connecting with defaults if there is none."""
    if _current is None:
        return connect()
    if not ray.is_initialized():
        raise NotConnectedError("Ray was shut down after raytasks.connect(); connect again")
    return _current


def disconnect() -> None:
    global _current
    _current = None


__all__ = ["ENGINE", "MANAGER", "NOTIFIER", "TRACKER", "Runtime", "connect", "current",
           "disconnect", "get"]
