"""The one place where raytasks' plain classes become named Ray actors.

Each system actor is a thin shell with a single ``call(method, *args)``
entry point in front of a plain class (``TaskManagerCore``,
``ProgressTrackerCore``, ``NotificationHub``, ``TaskExecutor``), plus the
background loop that class needs. :func:`connect` joins or starts Ray and
gets-or-creates the actors in the settings' namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import threading
import time
from typing import Any

import ray
from ray.actor import ActorHandle

from .errors import NotConnectedError, RaytasksError
from .executor import TaskExecutor
from .manager import TaskManagerCore
from .metrics import RayQueueGauges
from .notifications import NotificationHub
from .notify import Dispatcher
from .progress import ProgressTrackerCore
from .settings import Settings
from .store import SqlTaskStore

log = logging.getLogger(__name__)

MANAGER, TRACKER, NOTIFIER, ENGINE = "manager", "progress-tracker", "notifier", "engine"
NOTIFIER_POKE_S = 0.02


class _Peers:
    """Handles of other system actors, looked up once (a handle survives actor restarts)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._handles: dict[str, ActorHandle] = {}

    def get(self, name: str) -> ActorHandle | None:
        handle = self._handles.get(name)
        if handle is None:
            try:
                handle = self._handles[name] = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                return None
        return handle


def get(ref: Any, timeout_s: float | None = None) -> Any:
    """``ray.get`` with an untyped result (Ray's stubs type actor-call results poorly)."""
    return ray.get(ref, timeout=timeout_s)


async def _dispatch(target: Any, method: str, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
    if method.startswith("_"):
        raise RaytasksError(f"{method!r} is not a public method")
    result = getattr(target, method)(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


@ray.remote
class _ManagerShell:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.core = TaskManagerCore(settings)
        self.core.on_events = self._poke_notifier
        self.core.on_cancel = self._cancel_on_executor
        self.peers = _Peers(settings.namespace)
        self.gauges = RayQueueGauges()
        self.recovered = self.core.reconcile()
        self._loop_started = False
        self._background: list[asyncio.Task[None]] = []
        self._last_poke = 0.0

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self._loop_started:
            self._loop_started = True
            self._background.append(asyncio.get_running_loop().create_task(self._expiry_loop()))
        return await _dispatch(self.core, method, args, kwargs)

    async def _expiry_loop(self) -> None:
        interval = min(0.5, self.settings.lease_ttl_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                self.core.expire_leases()
            except Exception:
                log.exception("lease expiry failed")
            if time.monotonic() - self._last_poke > 1.0:
                # also wakes a restarted notifier, whose loops start on its first call
                self._poke_notifier([])
                self.gauges.update({"queues": self.core.queue_stats()})

    def _poke_notifier(self, _events: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        if now - self._last_poke < NOTIFIER_POKE_S:
            return  # the notifier's own poll picks these up within its interval
        self._last_poke = now
        notifier = self.peers.get(NOTIFIER)
        if notifier is not None:
            notifier.call.remote("poll")

    def _cancel_on_executor(self, executor_id: str, task_id: str, token: int) -> None:
        handle = self.peers.get(executor_id)
        if handle is not None:  # else a lease recovered after a restart: heartbeats tell it
            handle.call.remote("cancel", task_id, token)


@ray.remote
class _TrackerShell:
    def __init__(self, settings: Settings) -> None:
        assert settings.store_url is not None
        self.settings = settings
        self.peers = _Peers(settings.namespace)
        self.core = ProgressTrackerCore(
            SqlTaskStore(settings.store_url), self._renew,
            flush_interval_s=settings.progress_flush_interval_s)
        self._loop_started = False
        self._background: list[asyncio.Task[None]] = []

    async def _renew(self, leases: list[tuple[str, int]]) -> dict[str, list[str]]:
        manager = self.peers.get(MANAGER)
        if manager is None:
            return {"lost": [], "cancel": []}
        answer: dict[str, list[str]] = await manager.call.remote("renew", leases)
        return answer

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self._loop_started:
            self._loop_started = True
            self._background.append(asyncio.get_running_loop().create_task(self._flush_loop()))
        return await _dispatch(self.core, method, args, kwargs)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.progress_flush_interval_s)
            try:
                notifier = self.peers.get(NOTIFIER)
                if self.core.flush() and notifier is not None:
                    notifier.call.remote("poll")
            except Exception:
                log.exception("progress flush failed")


@ray.remote
class _NotifierShell:
    def __init__(self, settings: Settings) -> None:
        assert settings.store_url is not None
        self.core = NotificationHub(SqlTaskStore(settings.store_url),
                                    buffer_size=settings.event_buffer_size)
        # its own store connection: the dispatcher's blocking I/O runs in a thread
        self.dispatcher = Dispatcher(SqlTaskStore(settings.store_url), settings.notify)
        self._loop_started = False
        self._background: list[asyncio.Task[None]] = []

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self._loop_started:
            self._loop_started = True
            loop = asyncio.get_running_loop()
            self._background.append(loop.create_task(self._poll_loop()))
            if self.dispatcher.channels:
                self._background.append(loop.create_task(self._deliver_loop()))
        return await _dispatch(self.core, method, args, kwargs)

    async def _deliver_loop(self) -> None:
        while True:
            try:
                moved = await asyncio.to_thread(self.dispatcher.tick)
            except Exception:
                log.exception("notification delivery failed")
                moved = 0
            if not moved:
                await asyncio.sleep(0.1)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            try:
                self.core.poll()
            except Exception:
                log.exception("event poll failed")


@ray.remote
class _ExecutorShell:
    def __init__(self, executor_id: str, task_type: str, settings: Settings) -> None:
        peers = _Peers(settings.namespace)

        def call(method: str, *args: Any) -> Any:
            role = TRACKER if method == "heartbeat" else MANAGER
            handle = peers.get(role)
            if handle is None:
                raise RaytasksError(f"system actor {role!r} is not running")
            return ray.get(handle.call.remote(method, *args), timeout=60)

        self.core = TaskExecutor(executor_id, task_type, settings, call)

    def call(self, method: str, *args: Any) -> Any:
        if method.startswith("_"):
            raise RaytasksError(f"{method!r} is not a public method")
        return getattr(self.core, method)(*args)


@ray.remote
class _EngineShell:
    """Keeps one pool of executor actors per task type, sized from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pools: dict[str, list[ActorHandle]] = {}
        self._adopt_existing()

    def _adopt_existing(self) -> None:
        """After a restart, take back the executors that outlived the old engine (by name)."""
        try:
            manager = ray.get_actor(MANAGER, namespace=self.settings.namespace)
            types = get(manager.call.remote("types"), 30)
        except Exception:  # no manager yet: nothing to adopt
            return
        for info in types:
            pool: list[ActorHandle] = []
            while True:
                try:
                    pool.append(ray.get_actor(f"executor:{info.name}:{len(pool)}",
                                              namespace=self.settings.namespace))
                except ValueError:
                    break
            if pool:
                self.pools[info.name] = pool

    def ensure_pool(self, task_type: str, workers: int | None = None) -> int:
        type_settings = self.settings.for_type(task_type)
        size = type_settings.workers if workers is None else workers
        assert size is not None
        pool = self.pools.setdefault(task_type, [])
        while len(pool) < size:
            name = f"executor:{task_type}:{len(pool)}"
            pool.append(_ExecutorShell.options(  # type: ignore[attr-defined]
                name=name, namespace=self.settings.namespace, lifetime="detached",
                get_if_exists=True, max_restarts=-1, max_task_retries=0,
                max_concurrency=4, num_cpus=type_settings.num_cpus,
                resources=type_settings.resources or None,
            ).remote(name, task_type, self.settings))
        return len(pool)

    def ensure_pools(self, task_types: list[str]) -> dict[str, int]:
        return {t: self.ensure_pool(t) for t in task_types}

    def stats(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for task_type, pool in self.pools.items():
            refs: list[Any] = [h.call.remote("state") for h in pool]
            for i, ref in enumerate(refs):
                try:
                    out.append(get(ref, 5))
                except Exception as exc:
                    out.append({"executor_id": f"executor:{task_type}:{i}",
                                "task_type": task_type, "error": type(exc).__name__})
        return out

    def shutdown(self) -> int:
        count = 0
        for pool in self.pools.values():
            for handle in pool:
                ray.kill(handle, no_restart=True)
                count += 1
        self.pools.clear()
        return count

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method.startswith("_") or method == "call":
            raise RaytasksError(f"{method!r} is not a public method")
        return getattr(self, method)(*args, **kwargs)


class Runtime:
    """A client's connection: settings plus handles to the system actors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._handles: dict[str, ActorHandle] = {}
        self._lock = threading.Lock()

    def handle(self, role: str) -> ActorHandle:
        handle = self._handles.get(role)
        if handle is None:
            with self._lock:
                handle = self._handles[role] = self._get_or_create(role)
        return handle

    def forget(self, role: str) -> None:
        self._handles.pop(role, None)

    def _get_or_create(self, role: str) -> ActorHandle:
        shell = {MANAGER: _ManagerShell, TRACKER: _TrackerShell, NOTIFIER: _NotifierShell,
                 ENGINE: _EngineShell}[role]
        options: dict[str, Any] = {
            "name": role, "namespace": self.settings.namespace, "lifetime": "detached",
            "get_if_exists": True, "max_restarts": -1, "num_cpus": 0,
        }
        if self.settings.system_actors_on_head:
            # worker nodes come and go (autoscaling); the head stays
            options["resources"] = {"node:__internal_head__": 0.001}
        if role != ENGINE:
            options.update(max_concurrency=10_000, max_task_retries=-1)
        return shell.options(**options).remote(self.settings)  # type: ignore[attr-defined]

    def start(self) -> Runtime:
        """Bring every system actor up, and one executor pool per known task type."""
        manager = self.handle(MANAGER)
        types: list[Any] = get(manager.call.remote("types"))
        for role in (TRACKER, NOTIFIER):
            ray.get(self.handle(role).call.remote("last_event_id" if role == NOTIFIER
                                                  else "flush"))
        ray.get(self.handle(ENGINE).ensure_pools.remote([t.name for t in types]))
        return self

    def shutdown(self) -> None:
        """Kill this namespace's system actors and executors (state stays in the store)."""
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
    """Join a Ray cluster (``"auto"``, ``"ray://host:10001"``) or start an embedded one.

    With no address and no ``RAY_ADDRESS`` a local Ray is started in this
    process. The system actors are created if missing (detached, so they
    outlive this client on a real cluster) and reused if present.
    """
    global _current
    settings = settings or Settings(**overrides)
    if not ray.is_initialized():
        address = address or os.environ.get("RAYTASKS_ADDRESS") or None
        ray.init(address=address, namespace=settings.namespace, include_dashboard=False,
                 log_to_driver=os.environ.get("RAYTASKS_WORKER_LOGS", "0") == "1",
                 configure_logging=False)
    _current = Runtime(settings).start()
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
