"""Pool sizing (pure, with a clock the test drives) and address handling, without Ray."""

from __future__ import annotations

import time

import pytest

from raytasks import Settings
from raytasks.errors import NotConnectedError
from raytasks.models import QueueStats
from raytasks.runtime.connection import Target, parse_address, probe
from raytasks.runtime.engine import PoolBounds, PoolSizer, demand_by_type
from raytasks.settings import TaskTypeSettings
from tests.cluster import free_port


def _queue(waiting: dict[str, int], leased: dict[str, int]) -> QueueStats:
    return QueueStats(queue="q", waiting={}, delayed=0, leased=sum(leased.values()),
                      max_queue_size=10, oldest_wait_s=0.0, waiting_by_type=waiting,
                      leased_by_type=leased)


def test_demand_is_ready_plus_running_over_queues_capped_by_the_type_limit() -> None:
    stats = [_queue({"training": 3, "data": 1}, {"training": 1}), _queue({"training": 2}, {})]
    assert demand_by_type(stats, {"training": None}) == {"training": 6, "data": 1}
    assert demand_by_type(stats, {"training": 4})["training"] == 4


def test_a_pool_grows_at_once_and_shrinks_only_after_the_idle_timeout() -> None:
    sizer, bounds = PoolSizer(), PoolBounds(low=0, high=3, idle_timeout_s=10.0)
    # Given an empty pool, when work arrives, then it grows at once, up to its maximum
    assert sizer.target("training", bounds, 0, 1, now=0.0) == 1
    assert sizer.target("training", bounds, 1, 7, now=0.5) == 3
    # When the queue drains, then it keeps its executors for the idle timeout...
    assert sizer.target("training", bounds, 3, 0, now=1.0) == 3
    assert sizer.target("training", bounds, 3, 0, now=10.9) == 3
    # ...and shrinks to its minimum after it
    assert sizer.target("training", bounds, 3, 0, now=11.0) == 0
    # A burst inside the timeout resets the clock
    assert sizer.target("training", bounds, 2, 0, now=20.0) == 2
    assert sizer.target("training", bounds, 2, 2, now=25.0) == 2
    assert sizer.target("training", bounds, 2, 0, now=29.0) == 2
    assert sizer.target("training", bounds, 2, 0, now=38.9) == 2
    assert sizer.target("training", bounds, 2, 1, now=39.0) == 1


def test_a_fixed_size_never_shrinks_and_the_minimum_is_kept() -> None:
    sizer = PoolSizer()
    fixed, floor = PoolBounds(2, 2, 1.0), PoolBounds(1, 4, 1.0)
    assert sizer.target("a", fixed, 2, 0, now=100.0) == 2
    assert sizer.target("b", floor, 0, 0, now=0.0) == 1
    assert sizer.target("b", floor, 4, 0, now=1.0) == 4
    assert sizer.target("b", floor, 4, 0, now=2.0) == 1


def test_pool_bounds_from_settings() -> None:
    settings = Settings(task_types={"training": TaskTypeSettings(min_workers=0, max_workers=4,
                                                                 resources={"trainer": 1}),
                                    "backtest": TaskTypeSettings(workers=3)},
                        idle_timeout_s=30)
    # built-in families scale from none by default; `workers` is a fixed size
    assert PoolBounds.of(settings, "data") == PoolBounds(0, 2, 30)
    assert PoolBounds.of(settings, "training") == PoolBounds(0, 4, 30)
    assert PoolBounds.of(settings, "backtest") == PoolBounds(3, 3, 30)
    assert PoolBounds.of(settings, "data", workers=1) == PoolBounds(1, 1, 30)
    # a fixed size for every type (what the tests' services use) still fixes every pool
    assert PoolBounds.of(Settings(workers_per_type=0), "prediction") == PoolBounds(0, 0, 60)


@pytest.mark.parametrize("address,kind,hostport", [
    (None, "embedded", None), ("local", "embedded", None), ("auto", "auto", None),
    ("10.0.0.5:6379", "gcs", "10.0.0.5:6379"),
    ("ray://head.internal:10001", "client", "head.internal:10001"),
])
def test_every_address_form_ray_accepts(address: str | None, kind: str,
                                        hostport: str | None) -> None:
    target = parse_address(address)
    assert (target.kind, target.hostport) == (kind, hostport)


@pytest.mark.parametrize("address,says", [
    ("http://127.0.0.1:8265", "HTTP address"), ("head", "not an address"),
    ("ray://head:port", "not an address"), ("head:70000", "not an address"),
])
def test_an_address_ray_cannot_join_is_refused_with_the_forms_it_can(address: str,
                                                                     says: str) -> None:
    with pytest.raises(NotConnectedError, match=says) as err:
        parse_address(address)
    assert "ray://host" in str(err.value) and err.value.data["reason"] == "address"


def test_a_port_nobody_listens_on_is_unreachable_within_seconds() -> None:
    port = free_port()
    for kind in ("gcs", "client"):
        started = time.monotonic()
        assert probe(Target(kind, f"127.0.0.1:{port}", f"127.0.0.1:{port}"), None) == \
            "unreachable"  # type: ignore[arg-type]
        assert time.monotonic() - started < 4


def test_a_client_server_that_did_not_start_for_this_client_is_tried_again() -> None:
    from raytasks.runtime.connection import _specific_server_failed

    # as CI saw it: the proxier's per-client server died as it forked (ray-project/ray#63202)
    zombie = ("Initialization failure from server:\nTraceback (most recent call last):\n"
              '  File ".../ray/util/client/server/proxier.py", line 765, in Datapath\n'
              "    if not self.proxy_manager.start_specific_server(\n"
              "psutil.ZombieProcess: PID still exists but it's a zombie (pid=13586)")
    assert _specific_server_failed(zombie)
    assert _specific_server_failed("Starting Ray client server failed. See "
                                   "ray_client_server_23000.err for detailed logs.")
    # a failure of the client's own (its runtime env, say) is not tried again
    assert not _specific_server_failed("Initialization failure from server:\n"
                                       "RuntimeEnvSetupError: pip install failed")
