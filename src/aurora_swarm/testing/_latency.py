"""How long the fake server takes: :class:`LatencyModel` and the slot queue behind it."""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence

import anyio
import attrs

__all__ = ["Booking", "LatencyModel", "SlotSchedule"]


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class LatencyModel:
    """The time an endpoint takes to answer, modelled on a vLLM server.

    A request with ``n`` prompts (or conversations) waits ``request_overhead`` seconds, then each
    prompt needs one of the endpoint's ``max_concurrent_seqs`` sequence slots for
    ``(prompt_time + token_time * completion_tokens) * slowness`` seconds, where ``slowness`` is
    the endpoint's (:class:`~aurora_swarm.testing.EndpointBehavior`). The slots are shared by all
    requests in flight on the endpoint, like vLLM's ``--max-num-seqs``: one queue of prompts,
    first come, first served, across requests, in arrival order. A request is answered when its
    last prompt is done. The request overhead is not scaled by ``slowness`` and holds no slot.
    When a client goes away before its answer, the endpoint aborts the request as vLLM does: its
    running and waiting prompts free their slots at once, and every request queued behind it
    moves up (prompts already running elsewhere keep their times). Injected faults are answered
    at once, without taking slots. The endpoint's ``GET /metrics`` reports the prompts running
    and waiting in this queue.

    The default (all zero) answers at once. ``max_concurrent_seqs=0`` means unlimited slots.

    Parameters
    ----------
    request_overhead : float
        Seconds every request takes before its prompts start, in addition to their service time.
    prompt_time : float
        Seconds one prompt holds a slot on an endpoint of slowness 1.
    token_time : float
        Extra seconds per output token (its answer's words) on an endpoint of slowness 1.
    max_concurrent_seqs : int
        Sequence slots per endpoint; ``0`` for no limit.

    Examples
    --------
    64 prompts on 32 slots at 20 ms each take about 40 ms:

    >>> LatencyModel(prompt_time=0.02, max_concurrent_seqs=32)
    LatencyModel(request_overhead=0.0, prompt_time=0.02, token_time=0.0, max_concurrent_seqs=32)
    """

    request_overhead: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    prompt_time: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    token_time: float = attrs.field(default=0.0, converter=float, validator=_non_negative)
    max_concurrent_seqs: int = attrs.field(
        default=0, converter=int, validator=attrs.validators.ge(0)
    )

    @property
    def is_instant(self) -> bool:
        """Whether this model answers at once (every time is zero)."""
        return self.request_overhead == 0 and self.prompt_time == 0 and self.token_time == 0

    def service_time(self, completion_tokens: int, slowness: float = 1.0) -> float:
        """Return the seconds one prompt holds a slot.

        Parameters
        ----------
        completion_tokens : int
            The number of tokens of the prompt's answer.
        slowness : float
            The endpoint's slowness factor.

        Returns
        -------
        float
            ``(prompt_time + token_time * completion_tokens) * slowness``.
        """
        return (self.prompt_time + self.token_time * completion_tokens) * slowness


class Booking:
    """One request in an endpoint's queue: its prompts' service times and planned slot times.

    ``starts[i]``, ``ends[i]`` and ``befores[i]`` are when prompt ``i`` takes a slot, leaves it,
    and when that slot was free before it (to undo the booking). ``due`` is when the request is
    done; ``wake``, while its handler waits, is an event set when ``due`` changes.
    """

    __slots__ = ("_sorted_ends", "befores", "due", "ends", "ready", "services", "starts", "wake")

    def __init__(self, ready: float, services: Sequence[float]) -> None:
        self.ready = ready
        self.services = services
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.befores: list[float] = []
        self.due = ready
        self.wake: anyio.Event | None = None
        self._sorted_ends: list[float] | None = None

    def started(self, now: float) -> bool:
        """Whether every prompt has its slot by ``now``, so ``due`` can no longer move."""
        return not self.starts or self.starts[-1] <= now

    def counts(self, now: float) -> tuple[int, int]:
        """Return the prompts ``(running, waiting)`` at ``now``, as vLLM's gauges count them.

        Prompts still in the request overhead have not reached the queue and count in neither.
        """
        if self.ready > now:
            return 0, 0
        begun = bisect_right(self.starts, now)
        if self._sorted_ends is None:
            self._sorted_ends = sorted(self.ends)
        return begun - bisect_right(self._sorted_ends, now), len(self.starts) - begun


class SlotSchedule:
    """One endpoint's sequence slots and its first-come-first-served queue of requests.

    The slots are a heap of the times each becomes free. Booking a request's ``n`` prompts costs
    ``O(n log S)`` on ``S`` slots and no task: the handler sleeps until the booking's ``due``.
    Prompt start times never decrease along the queue, so the prompts still waiting at any time
    are its tail. Cancelling a request (:meth:`leave` before its ``due``) frees its running
    prompts' slots at ``now``, undoes the tail's bookings newest first and books the remaining
    waiting prompts again in queue order: ``O(S + w log S)`` for ``w`` waiting prompts. Handlers
    whose ``due`` moved are woken through their booking's ``wake`` event. ``slots=0`` means no
    limit: every prompt starts when its request is ready.
    """

    __slots__ = ("_busy_before", "_busy_from", "_busy_to", "_free", "_queue", "_ran", "_slots")

    def __init__(self, slots: int) -> None:
        self._slots = slots
        self._free: list[float] = [0.0] * slots
        self._queue: dict[Booking, None] = {}  # the requests in flight, in arrival order
        # What the slots did (see work): seconds of slot time of the prompts that left the
        # queue, and the busy periods as booked (the latest, and the total of those before).
        self._ran = 0.0
        self._busy_from = self._busy_to = self._busy_before = 0.0

    def book(self, ready: float, services: Sequence[float]) -> Booking:
        """Queue a request whose prompts may start at ``ready`` (its arrival plus overhead).

        Parameters
        ----------
        ready : float
            When the prompts may start, in loop time; never before an earlier booking's.
        services : Sequence of float
            Each prompt's service time, in seconds.

        Returns
        -------
        Booking
            The request's place in the queue; ``due`` is when its last prompt is done
            (``ready`` when there is none).
        """
        booking = Booking(ready, services)
        self._queue[booking] = None
        self._place(booking, ready, services)
        return booking

    def leave(self, booking: Booking, now: float) -> int:
        """Take a request out of the queue at ``now``: answered, or aborted before its ``due``.

        Returns
        -------
        int
            How many of its prompts were running or waiting, and are freed (0 once it is due).
        """
        if booking not in self._queue:
            return 0
        self._ran += _ran_by(booking, now)
        if booking.due <= now:
            del self._queue[booking]
            return 0
        freed = sum(1 for end in booking.ends if end > now)
        if self._slots:
            self._cancel(booking, now)
        else:
            del self._queue[booking]
            self._trim_busy(now)
        return freed

    def may_move(self, booking: Booking, now: float) -> bool:
        """Whether a cancel could still change ``booking.due``: some prompt waits for a slot."""
        return self._slots > 0 and not booking.started(now)

    def counts(self, now: float) -> tuple[int, int]:
        """Return the prompts ``(running, waiting)`` on the endpoint at ``now``."""
        running = waiting = 0
        for booking in self._queue:
            r, w = booking.counts(now)
            running += r
            waiting += w
        return running, waiting

    def work(self, now: float) -> tuple[float, float]:
        """Return ``(slot_seconds, busy_seconds)`` by ``now``: how long prompts held slots in
        all (the answered, the aborted and the running so far), and for how long any did.

        Their ratio is how many prompts ran at once on average while the endpoint was busy.
        Busy periods are counted as booked: a cancel that ends one early is counted from then
        on, so ``busy_seconds`` is exact up to a request overhead's worth around such moves.
        """
        ran = self._ran + sum(_ran_by(booking, now) for booking in self._queue)
        busy = self._busy_before + max(0.0, min(now, self._busy_to) - self._busy_from)
        return ran, busy

    def _trim_busy(self, now: float) -> None:
        """After an abort at ``now``: the busy period ends when the last prompt still holding
        a slot does."""
        kept = max(self._busy_from, min(self._busy_to, now))
        for booking in self._queue:
            first = bisect_right(booking.starts, now)
            if first:
                kept = max(kept, max(booking.ends[:first]))
        self._busy_to = kept

    def _note_busy(self, start: float, end: float) -> None:
        """Count a prompt holding a slot from ``start`` to ``end`` in the busy periods (starts
        come in queue order, never earlier than a start booked before)."""
        if start > self._busy_to:
            self._busy_before += self._busy_to - self._busy_from
            self._busy_from = start
        if end > self._busy_to:
            self._busy_to = end

    def _place(self, booking: Booking, earliest: float, services: Sequence[float]) -> None:
        starts, ends, befores = booking.starts, booking.ends, booking.befores
        booking._sorted_ends = None
        free = self._free
        due = booking.due
        if not self._slots:
            for service in services:
                end = earliest + service
                starts.append(earliest)
                ends.append(end)
                befores.append(earliest)
                self._note_busy(earliest, end)
                if end > due:
                    due = end
        else:
            for service in services:
                before = free[0]
                start = before if before > earliest else earliest
                end = start + service
                heapq.heapreplace(free, end)
                starts.append(start)
                ends.append(end)
                befores.append(before)
                self._note_busy(start, end)
                if end > due:
                    due = end
        booking.due = due

    def _cancel(self, gone: Booking, now: float) -> None:
        # The tail of prompts not started by now, newest request first, with where each starts.
        tail: list[tuple[Booking, int]] = []
        for booking in reversed(self._queue):
            first = bisect_right(booking.starts, now)
            if first < len(booking.starts):
                tail.append((booking, first))
            if first:
                break
        free = Counter(self._free)
        for booking, first in tail:  # undo the bookings newest first
            for k in range(len(booking.starts) - 1, first - 1, -1):
                _swap(free, booking.ends[k], booking.befores[k])
        kept = bisect_right(gone.starts, now)
        for k in range(kept):  # the cancelled request's running prompts leave their slots now
            if gone.ends[k] > now:
                _swap(free, gone.ends[k], now)
        del self._queue[gone]
        self._free = list(free.elements())
        heapq.heapify(self._free)
        self._trim_busy(now)  # the prompts booked again below extend it as they are placed
        for booking, first in reversed(tail):  # book the waiting prompts again, in queue order
            if booking is gone:
                continue
            del booking.starts[first:], booking.ends[first:], booking.befores[first:]
            was = booking.due
            booking.due = max(booking.ends, default=booking.ready)
            self._place(booking, max(now, booking.ready), booking.services[first:])
            if booking.due != was and booking.wake is not None:
                booking.wake.set()


def _ran_by(booking: Booking, now: float) -> float:
    """Seconds ``booking``'s prompts held slots by ``now``."""
    return sum(min(end, now) - start
               for start, end in zip(booking.starts, booking.ends, strict=True) if start < now)


def _swap(free: Counter[float], old: float, new: float) -> None:
    """Replace one slot free at ``old`` by one free at ``new`` in the multiset ``free``."""
    left = free[old] - 1
    if left:
        free[old] = left
    else:
        del free[old]
    free[new] += 1
