"""Static splits for the dispatch grid: the equal split and the oracle split.

The oracle knows every endpoint's sequence slots and slowness, and the fleet's latency model: a
request of ``x`` prompts to endpoint ``i`` takes ``overhead + ceil(x / slots_i) * prompt_time *
slowness_i`` seconds when it is alone there. It gives each endpoint the share that minimises the
largest of those times, each share one request. The solver adds waves one at a time, always the
wave that would end first, until the waves hold every prompt: that is exact, since any split
that finishes by time ``T`` fits inside the waves that end by ``T``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence


def equal_split(n: int, endpoints: int) -> list[int]:
    """``n`` prompts in ``endpoints`` shares that differ by at most one, the larger first."""
    if n < 0 or endpoints < 1:
        raise ValueError(f"need n >= 0 and endpoints >= 1, got n={n}, endpoints={endpoints}")
    base, extra = divmod(n, endpoints)
    return [base + (1 if i < extra else 0) for i in range(endpoints)]


def split_time(shares: Sequence[int], slots: Sequence[int], slowness: Sequence[float],
               prompt_time: float, overhead: float) -> float:
    """The latency model's finish time of a split: the slowest endpoint's request."""
    _check_fleet(slots, slowness)
    if len(shares) != len(slots):
        raise ValueError(f"{len(shares)} shares for {len(slots)} endpoints")
    return max((overhead + math.ceil(x / s) * prompt_time * f
                for x, s, f in zip(shares, slots, slowness, strict=True) if x > 0), default=0.0)


def oracle_split(n: int, slots: Sequence[int], slowness: Sequence[float],
                 prompt_time: float, overhead: float) -> list[int]:
    """The split of ``n`` prompts that finishes first under the latency model.

    Among the splits that reach the smallest finish time, it is the one closest to
    proportional to each endpoint's capacity at that time (so no endpoint holds more than it
    must).

    Parameters
    ----------
    n:
        Prompts to split.
    slots:
        Sequence slots of each endpoint (at least 1).
    slowness:
        Each endpoint's slowness factor (its prompt takes ``prompt_time * slowness``).
    prompt_time, overhead:
        The latency model: seconds a prompt holds a slot, seconds a request waits first.

    Returns
    -------
    list[int]
        One share per endpoint, summing to ``n``.
    """
    _check_fleet(slots, slowness)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if prompt_time <= 0 or overhead < 0:
        raise ValueError(f"need prompt_time > 0 and overhead >= 0, got {prompt_time}, {overhead}")
    waves = [0] * len(slots)
    heap = [(overhead + prompt_time * f, i) for i, f in enumerate(slowness)]
    heapq.heapify(heap)
    capacity = 0
    while capacity < n:
        end, i = heapq.heappop(heap)
        waves[i] += 1
        capacity += slots[i]
        heapq.heappush(heap, (end + prompt_time * slowness[i], i))
    # Several waves may end at the same time as the last one added: they fit too.
    finish = max((overhead + w * prompt_time * f for w, f in zip(waves, slowness, strict=True)
                  if w), default=0.0)
    while heap and heap[0][0] <= finish * (1 + 1e-12):
        _, i = heapq.heappop(heap)
        waves[i] += 1
        capacity += slots[i]
    caps = [w * s for w, s in zip(waves, slots, strict=True)]
    if capacity == 0:
        return [0] * len(slots)
    shares = [n * c // capacity for c in caps]
    order = sorted(range(len(caps)), key=lambda i: shares[i] - caps[i])
    left = n - sum(shares)
    for i in order:
        if left == 0:
            break
        take = min(left, caps[i] - shares[i])
        shares[i] += take
        left -= take
    return shares


def _check_fleet(slots: Sequence[int], slowness: Sequence[float]) -> None:
    if not slots or len(slots) != len(slowness):
        raise ValueError(f"need one slowness per endpoint, got {len(slots)} slots and "
                         f"{len(slowness)} slowness factors")
    if any(s < 1 for s in slots) or any(f <= 0 for f in slowness):
        raise ValueError(f"slots must be >= 1 and slowness > 0, got {slots}, {slowness}")
