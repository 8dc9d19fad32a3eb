"""Dispatch decisions as plain functions: who takes how much, and what is worth taking back.

Everything here works on :class:`Lane` snapshots (one per endpoint: its slots, wave time and the
queue it holds) at an explicit ``now``, so it can be tested with tables of cases and Hypothesis,
without a server. :mod:`aurora_swarm._dispatch` applies the decisions.

* :func:`water_fill` spreads prompts so that every endpoint finishes as early as it can: like
  water poured over steps, each wave of slots that frees up soonest takes the next prompts. On a
  fleet with no known differences this is the equal split, by construction.
* :func:`cut` turns one endpoint's share into requests: few, but enough of them that the last
  ones wait in the server's queue, where they can be taken back for free if the endpoint turns
  out slower than planned.
* :func:`deal` hands the prompts of those shares out round-robin, so where the shares are
  equal prompt ``i`` goes to endpoint ``i % n`` (the earlier system's split), and prompts whose
  cost drifts along the list (growing documents, sorted inputs) spread evenly.
* :func:`worth_moving` says whether work is worth moving from where it waits to another
  endpoint: only when that clearly finishes it sooner, so noise never moves work on a fleet
  whose servers are alike.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import attrs

__all__ = ["Lane", "cut", "deal", "water_fill", "worth_moving"]

_MIN_SAVING = 0.005  # seconds a move must save at the least, whatever the margin says


@attrs.frozen
class Lane:
    """One endpoint as the planner sees it.

    Its queue, counted in prompt places since its busy period began: places up to ``done``
    were answered at ``origin``; ``queued`` is the end of what it holds. Each wave of ``slots``
    places takes ``wave`` seconds. ``cap``, if set, is the most prompts it may take now (see
    :meth:`~aurora_swarm._server_model.ServerModel.room`).
    """

    origin: float
    done: int
    queued: int
    slots: int
    wave: float
    cap: int | None = None

    def waves_done(self) -> int:
        """Waves over by ``origin``: the one holding place ``done`` ended then, and every
        prompt of a wave starts and ends together (one that ran beside the answered ones is
        done too, though its request may be answered a moment later)."""
        return -(-self.done // self.slots)

    def next_place(self) -> int:
        """The queue place a prompt sent now would take: after what the server holds, and not
        in a wave already over (the places left free in it are gone, not free)."""
        return max(self.queued, self.waves_done() * self.slots)

    def finish(self, extra: int, now: float) -> float:
        """When the server would be done with what it holds plus ``extra`` more prompts."""
        if extra <= 0:
            if self.queued <= self.done:
                return now
            end = self.queued
        else:
            end = self.next_place() + extra
        waves = math.ceil(end / self.slots) - self.waves_done()
        return max(now, self.origin + waves * self.wave)

    def step(self, k: int) -> tuple[float, int]:
        """The ``k``-th wave boundary (1-based) from ``origin``: its time, and how many more
        prompts than the server holds would be done by then."""
        base = self.waves_done()
        return self.origin + k * self.wave, (base + k) * self.slots - self.next_place()

    def first_step(self) -> int:
        """The first wave boundary by which the server could finish one more prompt."""
        base = self.waves_done()
        return max(1, self.next_place() // self.slots + 1 - base)

    def with_extra(self, extra: int) -> Lane:
        """The lane after ``extra`` more prompts were queued on it."""
        cap = None if self.cap is None else max(0, self.cap - extra)
        return attrs.evolve(self, queued=self.queued + extra, cap=cap)

    def takes(self, count: int) -> bool:
        """Whether ``count`` more prompts are within its cap."""
        return self.cap is None or count <= self.cap


def water_fill(lanes: Sequence[Lane], count: int, now: float) -> list[int]:
    """Shares of ``count`` prompts over ``lanes`` so that the last one finishes soonest.

    Waves that free up sooner take prompts first; the last wave needed is shared evenly among
    the lanes that finish it at about the same time (within a quarter of the shortest wave), so
    alike servers get alike shares. A lane takes no more than its ``cap``, unless the caps
    leave no room for all ``count`` (then they are ignored). Returns one share per lane,
    summing to ``count``.
    """
    shares = [0] * len(lanes)
    if count <= 0 or not lanes:
        return shares
    caps: list[float] = [math.inf if lane.cap is None else lane.cap for lane in lanes]
    if sum(caps) < count:
        caps = [math.inf] * len(lanes)
    heap: list[tuple[float, int, int]] = []
    for i, lane in enumerate(lanes):
        if caps[i] <= 0:
            continue
        k = lane.first_step()
        t, _ = lane.step(k)
        heap.append((max(t, now), i, k))
    heapq.heapify(heap)
    room = [0] * len(lanes)
    total = 0
    finish_time = now
    while total < count:
        t, i, k = heapq.heappop(heap)
        _, more = lanes[i].step(k)
        more = int(min(max(0, more), caps[i]))
        total += more - room[i]
        room[i] = more
        finish_time = t
        if more < caps[i]:
            t_next, _ = lanes[i].step(k + 1)
            heapq.heappush(heap, (max(t_next, now), i, k + 1))
    # Lanes whose wave ends about when the last one needed does share that last wave.
    tolerance = 0.25 * min(lane.wave for lane in lanes)
    while heap and heap[0][0] <= finish_time + tolerance:
        t, i, k = heapq.heappop(heap)
        _, more = lanes[i].step(k)
        room[i] = int(max(room[i], min(more, caps[i])))
        if room[i] < caps[i]:
            t_next, _ = lanes[i].step(k + 1)
            heapq.heappush(heap, (max(t_next, now), i, k + 1))
    # Every lane has ``room`` by about ``finish_time``: more than needed. Keep what each frees
    # up clearly sooner (before ``cutoff``), and share the rest evenly among the lanes whose
    # room is not all that early: those of the last wave. The waves before ``cutoff`` were all
    # taken before the last one needed, so what they free is less than ``count``.
    cutoff = finish_time - tolerance
    for i, lane in enumerate(lanes):
        shares[i] = min(room[i], _room_by(lane, cutoff, now))
    last = [i for i in range(len(lanes)) if shares[i] < room[i]]
    left = count - sum(shares)
    # Evenly over the last lanes, as far as each one's wave has room.
    order = sorted(last, key=lambda i: (room[i] - shares[i], i))
    for n, i in enumerate(order):
        give = min(room[i] - shares[i], math.ceil(left / (len(order) - n)))
        shares[i] += give
        left -= give
    return shares


def _room_by(lane: Lane, t: float, now: float) -> int:
    """The extra prompts ``lane`` has done strictly before ``t``: by its last wave boundary
    before then (a boundary already past, not yet answered, counts as due ``now``, as in
    :func:`water_fill`'s order)."""
    if t <= now:
        return 0
    k = max(0, math.ceil((t - lane.origin) / lane.wave) - 1)
    while lane.origin + (k + 1) * lane.wave < t:
        k += 1
    while k > 0 and lane.origin + k * lane.wave >= t:
        k -= 1
    if k < lane.first_step():
        return 0
    _, more = lane.step(k)
    return max(0, more)


def cut(share: int, *, pieces: int, smallest: int, largest: int) -> list[int]:
    """Request sizes for one endpoint's ``share``: at most ``pieces`` requests of about equal
    size, none below ``smallest`` (unless the share is) nor above ``largest``.

    Several requests queue back to back on the server, so they run as one would; only the last
    ones wait, and those can be taken back if the server falls behind.
    """
    if share <= 0:
        return []
    n = max(1, min(pieces, share // max(1, smallest)))
    n = max(n, math.ceil(share / largest))
    size, extra = divmod(share, n)
    return [size + 1] * extra + [size] * (n - extra)


def deal(items: Sequence[int], shares: Sequence[int]) -> list[list[int]]:
    """``items`` dealt round-robin into piles of the given ``shares``, in order.

    Pile ``j`` takes items ``j``, ``j + n``, ``j + 2n``... while every pile has room; a pile
    that is full drops out of the round and the others go on. Items beyond the shares' sum are
    left out; if there are fewer, the last piles come up short. Costs time in the number of
    items dealt, plus the piles times the number of distinct shares (never more than the items).
    """
    piles: list[list[int]] = [[] for _ in shares]
    active = [j for j, share in enumerate(shares) if share > 0]
    left = list(shares)
    base = 0
    end = min(len(items), sum(left))
    while active and base < end:
        rounds = min(left[j] for j in active)
        width = len(active)
        stop = min(base + rounds * width, end)
        for rank, j in enumerate(active):
            taken = items[base + rank:stop:width]
            piles[j].extend(taken)
            left[j] -= len(taken)
        base = stop
        active = [j for j in active if left[j] > 0]
    return piles


def worth_moving(stay: float, move: float, now: float, margin: float) -> bool:
    """Whether work due at ``stay`` where it is would gain from moving where it is due at
    ``move``: sooner by ``margin`` of the wait (and by a few milliseconds at least)."""
    return stay - move >= max(margin * (stay - now), _MIN_SAVING)
