"""Per-owner pacing of the task routes (``raytasks.server.throttle.Rate``), on a clock the
test moves, and the settings' extremes."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from raytasks.server.throttle import Rate, Turns
from raytasks.settings import ApiSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_quiet_owner_may_burst_then_is_held_to_its_rate() -> None:
    # Given 10 calls a second with 2 s of burst
    clock = Clock()
    rate = Rate(10.0, 2.0, clock=clock)
    # When bob calls 25 times at one instant
    waits = [rate.take("bob") for _ in range(25)]
    # Then the first 20 pass and the rest are told how long to wait (a tenth of a second)
    assert waits[:20] == [0.0] * 20
    assert all(w == pytest.approx(0.1) for w in waits[20:])
    # and alice, another key, still has her whole burst
    assert [rate.take("alice") for _ in range(20)] == [0.0] * 20
    # When a second passes, bob is owed 10 more calls, not more
    clock.now += 1.0
    assert [rate.take("bob") for _ in range(11)].count(0.0) == 10


def test_refused_calls_take_nothing_so_a_retrying_client_is_let_in_on_time() -> None:
    # Given an owner held at 1 call a second
    clock = Clock()
    rate = Rate(1.0, 1.0, clock=clock)
    assert rate.take("bob") == 0.0
    # When it retries 1,000 times within half a second
    clock.now += 0.5
    waits = [rate.take("bob") for _ in range(1000)]
    # Then it waits the other half, and is let in at the second
    assert waits[-1] == pytest.approx(0.5)
    clock.now += 0.5
    assert rate.take("bob") == 0.0


def test_no_limit_lets_everything_through_and_keys_are_bounded() -> None:
    assert all(Rate(None, 4.0).take("bob") == 0.0 for _ in range(10_000))
    rate = Rate(1.0, 1.0, max_keys=100)
    for i in range(1000):
        rate.take(f"owner-{i}")
    assert len(rate._by_key) == 100


@pytest.mark.parametrize("field", ["max_creates_per_s", "max_reads_per_s", "rate_burst_s"])
@pytest.mark.parametrize("value", [0, -1, 1e12])
def test_a_rate_of_zero_negative_or_absurd_is_refused(field: str, value: float) -> None:
    # 0 is not "off" (None is): a setting that refused every call would be a typo
    with pytest.raises(ValidationError, match=field):
        ApiSettings(**{field: value})


def test_none_turns_a_rate_off() -> None:
    api = ApiSettings(max_creates_per_s=None, max_reads_per_s=None)
    assert api.max_creates_per_s is None and api.max_reads_per_s is None


def test_an_owner_has_its_turns_in_order_and_never_more_than_its_limit_at_once() -> None:
    # Given one call in flight per owner, at most three waiting
    turns = Turns(1, max_waiting=3)
    running: list[str] = []
    most = {"bob": 0, "alice": 0}
    order: list[int] = []

    async def call(owner: str, i: int, release: asyncio.Event) -> bool:
        async with turns.turn(owner) as allowed:
            if not allowed:
                return False
            running.append(owner)
            most[owner] = max(most[owner], running.count(owner))
            order.append(i)
            await release.wait()
            running.remove(owner)
            return True

    async def main() -> tuple[list[bool], bool]:
        release = asyncio.Event()
        # When bob makes six calls at once and alice one
        bobs = [asyncio.create_task(call("bob", i, release)) for i in range(6)]
        alices = asyncio.create_task(call("alice", 99, release))
        await asyncio.sleep(0.01)
        # Then alice runs beside bob's first at once, not behind his others
        assert running == ["bob", "alice"] and order == [0, 99]
        release.set()
        return list(await asyncio.gather(*bobs)), await alices

    bob, alice = asyncio.run(main())
    # and bob's calls ran one at a time, in arrival order; past 1 + 3 he was refused
    assert bob == [True, True, True, True, False, False] and alice
    assert most == {"bob": 1, "alice": 1} and order == [0, 99, 1, 2, 3]
    # and an owner without calls is forgotten
    assert turns._by_key == {}


def test_no_gate_runs_every_call_at_once() -> None:
    turns = Turns(None)

    async def main() -> list[bool]:
        async def one() -> bool:
            async with turns.turn("bob") as allowed:
                await asyncio.sleep(0)
                return allowed
        return list(await asyncio.gather(*(one() for _ in range(50))))

    assert all(asyncio.run(main()))
    with pytest.raises(ValidationError):
        ApiSettings(max_calls_in_flight_per_owner=0)
