"""Counting what a source or an owner did lately: wrong tokens, dashboard sign-ins, and
each owner's calls on the task routes.

Tokens are long and random (``raytasks token create`` makes 256 bits), so guessing one
is hopeless; what a flood of wrong tokens can still do is load the server and hide in
the noise. Past ``api.max_wrong_tokens`` in a minute, a source's *wrong* tokens are
answered 429 after ``api.wrong_token_delay_s``; a valid token is always checked and let
through, so no one can lock a colleague out by guessing from the same gateway.

Sign-ins are counted per owner and per source (a valid token may sign in only so often:
each one writes a session to the store). Only sign-ins that were let in count, so one
owner's refused flood does not use up its source's room.

An owner's creates and reads of tasks are paced (:class:`Rate`): a script hammering
``POST /tasks`` or ``GET /tasks`` is answered 429 with ``Retry-After`` past
``api.max_creates_per_s`` / ``api.max_reads_per_s``, cheaply, before any call reaches the
manager, so another owner's calls keep their latency.

The counts live in the server process: behind a balancer, each server counts its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable

#: The window over which events are counted.
WINDOW_S = 60.0
#: Keys (sources, owners) remembered at once; the least recently seen go first.
MAX_KEYS = 10_000


class SlidingWindow:
    """Events per key over a sliding window: a key with ``limit`` events in the last
    ``window_s`` must wait until the oldest of them leaves it. Safe to share between the
    server's threads (sync dependencies run in a pool)."""

    def __init__(self, limit: int, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        self.limit, self.window_s, self.clock, self.max_keys = limit, window_s, clock, max_keys
        self._by_key: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait_s(self, key: str) -> float:
        """Seconds until ``key`` is below its limit again (0.0: it is now)."""
        with self._lock:
            recent = self._recent(key)
            if recent is None or len(recent) < self.limit:
                return 0.0
            return max(1e-3, recent[0] + self.window_s - self.clock())

    def add(self, key: str) -> None:
        with self._lock:
            recent = self._recent(key)
            if recent is None:
                recent = self._by_key[key] = deque(maxlen=self.limit)
                while len(self._by_key) > self.max_keys:
                    self._by_key.popitem(last=False)
            recent.append(self.clock())
            self._by_key.move_to_end(key)

    def _recent(self, key: str) -> deque[float] | None:
        recent = self._by_key.get(key)
        if recent is None:
            return None
        cutoff = self.clock() - self.window_s
        while recent and recent[0] <= cutoff:
            recent.popleft()
        if not recent:
            del self._by_key[key]
            return None
        return recent


class SignIns:
    """Dashboard sign-ins per owner and per source."""

    def __init__(self, per_owner: int, per_source: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.owners = SlidingWindow(per_owner, clock=clock)
        self.sources = SlidingWindow(per_source, clock=clock)

    def wait_s(self, owner: str, source: str) -> tuple[float, str]:
        """Seconds until ``owner`` may sign in from ``source``, and which limit holds it
        (``(0.0, "")``: it may now)."""
        for window, key, limit in ((self.owners, owner, "max_sign_ins_per_owner"),
                                   (self.sources, source, "max_sign_ins_per_source")):
            wait = window.wait_s(key)
            if wait > 0:
                return wait, limit
        return 0.0, ""

    def add(self, owner: str, source: str) -> None:
        self.owners.add(owner)
        self.sources.add(source)


class Holds:
    """How many refusals are being held back (slowed down) at once: past ``limit`` they
    are answered at once, so a flood of wrong tokens cannot pile up waiting requests."""

    def __init__(self, limit: int = 256) -> None:
        self.limit, self.held = limit, 0

    def take(self) -> bool:
        if self.held >= self.limit:
            return False
        self.held += 1
        return True

    def release(self) -> None:
        self.held -= 1


class Turns:
    """At most ``limit`` calls per key in progress at once; the others wait their turn in
    arrival order (awaiting, no CPU), at most ``max_waiting`` per key (past it, refused).

    One owner's many connections then load the server and the manager like ``limit``
    connections do, however many it opens: another owner's call waits behind at most
    ``limit`` of its calls, not behind a burst of them. ``limit`` None: no gate. Keys
    without calls are forgotten. One event loop's (not thread-safe).
    """

    def __init__(self, limit: int | None, max_waiting: int = 256) -> None:
        self.limit, self.max_waiting = limit, max_waiting
        self._by_key: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[bool]:
        """Hold one of ``key``'s turns for the block; yields False (holding nothing) when
        ``max_waiting`` calls of it wait already: the caller refuses the call."""
        if self.limit is None:
            yield True
            return
        gate, count = self._by_key.setdefault(key, (asyncio.Semaphore(self.limit), [0]))
        if count[0] >= self.limit + self.max_waiting:
            yield False
            return
        count[0] += 1
        try:
            async with gate:
                yield True
        finally:
            count[0] -= 1
            if count[0] == 0:
                self._by_key.pop(key, None)


class Rate:
    """Calls per key at a steady rate with bursts (a token bucket): a key may make
    ``per_s`` calls a second, and ``burst_s`` seconds' worth (at least one) at once after
    a quiet spell. ``per_s`` None: no limit. A refused call takes nothing, so a client that
    retries at full speed is let in as soon as it is owed a call, never starved.

    State is two floats per key, at most ``max_keys`` keys (the least recently seen go
    first: a forgotten key starts with a full bucket, a bound a flood of new keys cannot
    use, since keys here are owners that hold a valid token). Thread-safe.
    """

    def __init__(self, per_s: float | None, burst_s: float,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        self.per_s, self.clock, self.max_keys = per_s, clock, max_keys
        self.capacity = max(1.0, (per_s or 0.0) * burst_s)
        self._by_key: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Count one call of ``key`` if it may make one now (returns 0.0); else the
        seconds until it may (the call is not counted)."""
        if self.per_s is None:
            return 0.0
        with self._lock:
            now = self.clock()
            tokens, then = self._by_key.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.per_s)
            if tokens >= 1.0:
                self._by_key[key] = (tokens - 1.0, now)
                self._by_key.move_to_end(key)
                while len(self._by_key) > self.max_keys:
                    self._by_key.popitem(last=False)
                return 0.0
            return (1.0 - tokens) / self.per_s
