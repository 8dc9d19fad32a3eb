"""How long the fake server takes: :class:`LatencyModel` and the slot schedule behind it."""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Sequence

import attrs

__all__ = ["LatencyModel", "SlotSchedule"]


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
    requests in flight on the endpoint, like vLLM's ``--max-num-seqs``; prompts take free slots
    first come, first served, across requests, in arrival order. A request is answered when its
    last prompt is done. The request overhead is not scaled by ``slowness``. A prompt keeps its
    slot until its time is up even when its client has gone away (the fake server never aborts
    work), and injected faults are answered at once, without taking slots.

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


class SlotSchedule:
    """The sequence slots of one endpoint, as a heap of the times each slot becomes free.

    Booking a request costs ``O(n log S)`` arithmetic for ``n`` prompts on ``S`` slots and no task:
    the caller sleeps once, until the time :meth:`book` returns. A request whose client goes away
    gives back the slot time it has not used yet (:meth:`release`) to requests that arrive later;
    requests booked already keep their times.
    """

    __slots__ = ("_free",)

    def __init__(self, slots: int) -> None:
        self._free: list[float] | None = [0.0] * slots if slots > 0 else None

    def book(
        self, ready: float, services: Sequence[float], booked: list[tuple[float, float]]
    ) -> float:
        """Give each service a slot from ``ready`` on, first come first served.

        Parameters
        ----------
        ready : float
            When the prompts may start (the request's arrival plus its overhead), in loop time.
        services : Sequence of float
            Each prompt's service time, in seconds.
        booked : list
            Receives ``(slot free before, slot free after)`` per prompt, for :meth:`release`.

        Returns
        -------
        float
            When the last prompt is done, in loop time (``ready`` when there is none).
        """
        free = self._free
        if free is None:
            return ready + max(services, default=0.0)
        last = ready
        for service in services:
            before = free[0]
            end = (before if before > ready else ready) + service
            heapq.heapreplace(free, end)
            booked.append((before, end))
            if end > last:
                last = end
        return last

    def release(self, booked: Sequence[tuple[float, float]], now: float) -> None:
        """Give back what is left at ``now`` of the slot time :meth:`book` booked."""
        free = self._free
        if free is None:
            return
        changed = False
        for before, end in reversed(booked):  # undo the request's own chain of slots last first
            if end > now:
                with contextlib.suppress(ValueError):  # the heap is a multiset of free times
                    free[free.index(end)] = before if before > now else now
                    changed = True
        if changed:
            heapq.heapify(free)
