"""Shared fixtures: one local Ray cluster per session, a fresh raytasks namespace per test."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.isolation import home_snapshot, isolate_suite

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# embedded clusters in tests (and their subprocesses) start without Ray's dashboard
os.environ.setdefault("RAYTASKS_RAY_DASHBOARD", "false")

# Nothing the suite needs lives outside the checkout and its own temp directories: every Ray
# this process or its children start keeps its files under SUITE_ROOT (not /tmp/ray) and
# takes its token from a file there (not ~/.ray/auth_token, which Ray would otherwise
# create), and raytasks' data directory defaults to one there (not ~/.raytasks).
REAL_HOME = Path(os.environ.get("HOME", "~")).expanduser()
SUITE_ROOT = isolate_suite()
HOME_BEFORE = home_snapshot(REAL_HOME)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``last`` run after all others: they check what the whole run left."""
    last = [item for item in items if item.get_closest_marker("last")]
    items[:] = [item for item in items if not item.get_closest_marker("last")] + last


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.05,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def answering_executors(engine: Any, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """The engine's ``count`` executors once each answers its state: on a loaded machine one
    can miss the engine's 3 s and be listed with an ``error`` and no pid for a while."""
    import ray

    def states() -> list[dict[str, Any]] | None:
        try:
            found = engine.executors_sync()
        except ray.exceptions.RayActorError:  # the engine is restarting
            return None
        return found if len(found) == count and all("pid" in e for e in found) else None

    return wait_for(states, timeout_s=timeout_s, interval_s=0.2,  # type: ignore[no-any-return]
                    what=f"{count} executors to answer")


def executor_running(engine: Any, task_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The state of the executor that runs ``task_id`` (it answers, so it has a pid)."""
    return wait_for(lambda: next((e for e in engine.executors_sync()  # type: ignore[no-any-return]
                                  if e.get("current") == task_id and "pid" in e), None),
                    timeout_s=timeout_s, what=f"the executor running {task_id}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    from tests.pg import ThrowawayPostgres

    server = ThrowawayPostgres()
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    import sqlalchemy as sa

    server_url: str = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    import ray

    # "local": a cluster of this session's own, whatever else runs on the machine
    ray.init(address="local", namespace="raytasks-tests", include_dashboard=False,
             configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@contextmanager
def _services(data_dir: Path) -> Iterator[Callable[..., Any]]:
    """A maker of raytasks services, each in a namespace of its own; all shut down on exit."""
    from raytasks import Settings, runtime

    started: list[Any] = []

    def make(**overrides: Any) -> Any:
        values: dict[str, Any] = {
            "namespace": f"t-{uuid.uuid4().hex[:10]}",
            "data_dir": data_dir,
            "lease_ttl_s": 3.0,
            "heartbeat_interval_s": 0.3,
            "retry_backoff_base_s": 0.2,
            "retry_jitter": 0.5,
            "cancel_grace_s": 1.0,
            "workers_per_type": 0,
            "progress_flush_interval_s": 0.2,
            # a run per research task costs MLflow's import and a store: on where tested
            # (tests/ray/test_tracking.py)
            "mlflow_tracking": False,
        }
        values.update(overrides)
        rt = runtime.connect(settings=Settings(**values))
        started.append(rt)
        return rt

    try:
        yield make
    finally:
        for rt in started:
            rt.shutdown()
        runtime.disconnect()


@pytest.fixture
def make_service(ray_cluster: None, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start raytasks in a namespace of its own; every built-in pool empty unless asked."""
    with _services(tmp_path / "data") as make:
        yield make


@pytest.fixture
def service(make_service: Callable[..., Any]) -> Any:
    return make_service()


@contextmanager
def _api(make_service: Callable[..., Any]) -> Iterator[Any]:
    from raytasks import register_task_type
    from raytasks.settings import ApiSettings, TaskTypeSettings
    from tests.helpers import SleepParams, sleepy
    from tests.httpserver import ApiServer, api_tokens

    service = make_service(api=ApiSettings(tokens=api_tokens(), max_body_bytes=64 * 1024),
                           max_queue_size=20,
                           task_types={"prediction": TaskTypeSettings(min_workers=0,
                                                                      max_workers=1)})
    register_task_type("sleepy", sleepy, params_model=SleepParams, workers=1, runtime=service)
    server = ApiServer(service)
    server.service = service  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def api(make_service: Callable[..., Any]) -> Iterator[Any]:
    """The HTTP API over a fresh service with three tokens (alice, bob, root=admin)."""
    with _api(make_service) as server:
        yield server


@pytest.fixture(scope="module")
def shared_api(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The ``api`` fixture's API, one per module, for tests that create no task, stop
    nothing and count nothing (refusals, headers, sockets): they cannot disturb one
    another, and a service costs a few seconds to start."""
    with _services(tmp_path_factory.mktemp("shared-api") / "data") as make, \
            _api(make) as server:
        yield server


@pytest.fixture
def make_api(make_service: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """HTTP APIs over fresh services with settings of the test's choosing (tokens of alice,
    bob and root=admin; ``sleepy`` registered with ``sleepy_workers`` workers)."""
    from tests.httpserver import start_api

    servers: list[Any] = []

    def make(sleepy_workers: int = 1, **overrides: Any) -> Any:
        servers.append(start_api(make_service, sleepy_workers, **overrides))
        return servers[-1]

    yield make
    for server in servers:
        server.close()
