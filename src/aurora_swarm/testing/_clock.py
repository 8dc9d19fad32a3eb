"""The time the fake endpoints keep: :class:`RealClock` and :class:`FakeClock`."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from typing import Protocol

import anyio
import anyio.lowlevel

__all__ = ["Clock", "FakeClock", "RealClock"]


class Clock(Protocol):
    """What the fake endpoints need of a clock: the time, and a way to wait for it."""

    def now(self) -> float:
        """Return the current time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` seconds of this clock's time."""
        ...


class RealClock:
    """The event loop's own clock (:func:`anyio.current_time`, :func:`anyio.sleep`).

    Examples
    --------
    >>> import anyio
    >>> from aurora_swarm.testing import RealClock
    >>> async def demo():
    ...     clock = RealClock()
    ...     start = clock.now()
    ...     await clock.sleep(0.001)
    ...     return clock.now() > start
    >>> anyio.run(demo)
    True
    """

    def now(self) -> float:
        """Return the event loop's time in seconds."""
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` seconds of real time."""
        await anyio.sleep(seconds)

    def __repr__(self) -> str:
        return "RealClock()"


class _Sleeper:
    __slots__ = ("deadline", "done", "event")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.done = False
        self.event = anyio.Event()


class FakeClock:
    """Virtual time: sleeps end when the clock is moved on, not when real time passes.

    With ``autojump`` (the default) the clock moves itself: whenever every task of the event
    loop waits for something (a sleep on this clock, an event, a real timer), it jumps to the
    earliest deadline of its sleepers and wakes them. A fleet whose latency model says a
    request takes ten seconds then answers at once in real time, in the order the model says,
    and a request that hangs until its timeout times out at once. Without ``autojump`` only
    :meth:`advance` moves the clock.

    One clock serves one event loop at a time; it works on asyncio and trio.

    Parameters
    ----------
    start : float
        The time the clock shows at first.
    autojump : bool
        Move on by itself whenever the event loop has nothing else to run.

    Examples
    --------
    Three sleeps of an hour, a minute and a second end in that order's reverse, at once:

    >>> import anyio
    >>> from aurora_swarm.testing import FakeClock
    >>> async def demo():
    ...     clock, ended = FakeClock(), []
    ...     async def nap(seconds):
    ...         await clock.sleep(seconds)
    ...         ended.append((seconds, clock.now()))
    ...     async with anyio.create_task_group() as group:
    ...         for seconds in (3600, 60, 1):
    ...             group.start_soon(nap, seconds)
    ...     return ended
    >>> anyio.run(demo)
    [(1, 1.0), (60, 60.0), (3600, 3600.0)]
    """

    def __init__(self, start: float = 0.0, *, autojump: bool = True) -> None:
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite number, got {start!r}")
        self._now = float(start)
        self._autojump = autojump
        self._sleepers: list[tuple[float, int, _Sleeper]] = []
        self._order = itertools.count()
        self._jumper: _Sleeper | None = None

    def now(self) -> float:
        """Return the virtual time in seconds."""
        return self._now

    @property
    def autojump(self) -> bool:
        """Whether the clock moves on by itself when the event loop is idle."""
        return self._autojump

    @property
    def sleepers(self) -> int:
        """How many tasks sleep on this clock now."""
        return sum(1 for _, _, s in self._sleepers if not s.done)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:g}, autojump={self._autojump})"

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on and wake every sleep whose deadline has come.

        Raises
        ------
        ValueError
            If ``seconds`` is negative or not finite: time does not go back.
        """
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"a clock moves on by a finite number >= 0, got {seconds!r}")
        self._move_to(self._now + seconds)

    def _move_to(self, when: float) -> None:
        self._now = max(self._now, when)
        heap = self._sleepers
        while heap and (heap[0][2].done or heap[0][0] <= self._now):
            _, _, sleeper = heapq.heappop(heap)
            if not sleeper.done:
                sleeper.done = True
                sleeper.event.set()

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has moved ``seconds`` on (a checkpoint when ``seconds <= 0``)."""
        if not seconds > 0:
            await anyio.lowlevel.checkpoint()
            return
        sleeper = _Sleeper(self._now + seconds)
        heapq.heappush(self._sleepers, (sleeper.deadline, next(self._order), sleeper))
        try:
            while not sleeper.done:
                if self._autojump and self._jumper is None:
                    self._jumper = sleeper
                if self._jumper is sleeper:
                    await _idle()
                    if not sleeper.done and self._sleepers:
                        self._move_to(self._sleepers[0][0])
                    continue
                await sleeper.event.wait()
                if not sleeper.done:  # asked to take over the jumping
                    sleeper.event = anyio.Event()
        finally:
            sleeper.done = True  # a cancelled sleep leaves the heap lazily
            if self._jumper is sleeper:
                self._jumper = None
                self._hand_over()

    def _hand_over(self) -> None:
        """Wake the earliest sleeper left, to jump the clock from now on."""
        for _, _, other in sorted(self._sleepers):
            if not other.done:
                self._jumper = other
                other.event.set()
                return


async def _idle() -> None:
    """Return once no other task of the event loop can run now."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio): its own test helper is exact and cheap
        loop = None
    if loop is not None:
        # anyio's helper polls asyncio every 0.1 s; CPython's queue of runnable callbacks
        # says the same at once.
        ready = getattr(loop, "_ready", None)
        if ready is not None:
            while True:
                await anyio.lowlevel.checkpoint()
                if not ready:
                    return
    await anyio.wait_all_tasks_blocked()
