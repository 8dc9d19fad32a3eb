"""The prompts of a batched call that no request carries: who takes which.

A call's unassigned prompts wait in queues keyed by (request shape, home endpoint): prompts of
different shapes (``max_tokens``, ...) cannot share a request, and with prefix affinity each
prompt has a home endpoint whose prefix cache likely holds its prefix. Without affinity every
home is ``None``: one queue per shape.

The dispatcher decides how many prompts each endpoint takes (:mod:`aurora_swarm._plan`);
:class:`Unassigned` decides which:

* without affinity, :meth:`Unassigned.deal` takes the first prompts and deals them out
  round-robin (:func:`~aurora_swarm._plan.deal`), so on alike endpoints prompt ``i`` goes to
  endpoint ``i % n``, as in the earlier system's split;
* with affinity, :meth:`Unassigned.take` gives an endpoint its own home's prompts first, whole
  prefix groups together, then the tail of the largest other queue.

Prompts come back (:meth:`Unassigned.put_back`) when their request failed or was taken back;
they go first. An index may sit in a queue after another request answered it: whoever takes
prompts skips those (``is_open``), so the count is an upper bound until they are taken.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from ._plan import deal

__all__ = ["Unassigned"]

K = TypeVar("K", bound=Hashable)

Take = list[tuple[K, list[int]]]
"""Prompts for one endpoint, grouped by request shape: ``[(shape, indices), ...]``."""


class Unassigned(Generic[K]):
    """The unassigned prompts of one call (see the module docstring)."""

    def __init__(
        self,
        shapes: Sequence[K],
        is_open: Callable[[int], bool],
        homes: Sequence[int] | None = None,
        groups: Sequence[int] | None = None,
    ) -> None:
        self._shapes = shapes
        self._is_open = is_open
        self._homes = homes
        self._queues: dict[tuple[K, int | None], deque[int]] = {}
        if homes is None:
            for index, shape in enumerate(shapes):
                self._queues.setdefault((shape, None), deque()).append(index)
        else:
            # A home's queue keeps each prefix group together, so requests carry whole groups.
            group = groups if groups is not None else homes
            for index in sorted(range(len(shapes)), key=lambda i: (homes[i], group[i])):
                self._queues.setdefault((shapes[index], homes[index]), deque()).append(index)
        self.count = len(shapes)
        """Prompts in the queues (some may have been answered meanwhile)."""

    def __bool__(self) -> bool:
        return self.count > 0

    def split(self, positions: Sequence[int], shares: Sequence[int]) -> list[Take[K]]:
        """``shares[k]`` prompts for endpoint ``positions[k]``, each grouped by shape."""
        if self._homes is None:
            return self.deal(shares)
        return [self.take(position, share)
                for position, share in zip(positions, shares, strict=True)]

    def deal(self, shares: Sequence[int]) -> list[Take[K]]:
        """Take ``sum(shares)`` prompts, first come first, and deal them round-robin into piles
        of ``shares``; each pile grouped by request shape."""
        want = sum(shares)
        items: list[int] = []
        shapes_seen: list[K] = []
        is_open = self._is_open
        while len(items) < want and self._queues:
            key, queue = next(iter(self._queues.items()))
            shapes_seen.append(key[0])
            while queue and len(items) < want:
                index = queue.popleft()
                self.count -= 1
                if is_open(index):
                    items.append(index)
            if not queue:
                del self._queues[key]
        piles = deal(items, shares)
        if len(shapes_seen) == 1:
            return [[(shapes_seen[0], pile)] if pile else [] for pile in piles]
        shapes = self._shapes
        grouped: list[Take[K]] = []
        for pile in piles:
            by_shape: dict[K, list[int]] = {}
            for index in pile:
                by_shape.setdefault(shapes[index], []).append(index)
            grouped.append(list(by_shape.items()))
        return grouped

    def take(self, position: int, count: int) -> Take[K]:
        """``count`` prompts for ``position``: its own home's first, then from the tail of the
        largest other queue; grouped by request shape."""
        taken: Take[K] = []
        is_open = self._is_open
        while count > 0 and self.count:
            key, queue = self._queue_for(position)
            own = key[1] in (None, position)
            chunk: list[int] = []
            while queue and len(chunk) < count:
                index = queue.popleft() if own else queue.pop()
                self.count -= 1
                if is_open(index):
                    chunk.append(index)
            if not queue:
                del self._queues[key]
            if chunk:
                taken.append((key[0], chunk))
                count -= len(chunk)
        return taken

    def _queue_for(self, position: int) -> tuple[tuple[K, int | None], deque[int]]:
        """This endpoint's own largest queue; with none left, the largest queue of all."""
        best: tuple[tuple[K, int | None], deque[int]] | None = None
        for key, queue in self._queues.items():
            if key[1] in (None, position) and (best is None or len(queue) > len(best[1])):
                best = (key, queue)
        if best is None:
            best = max(self._queues.items(), key=lambda item: len(item[1]))
        return best

    def put_back(self, index: int) -> None:
        """Return a prompt (its request failed or was taken back); it goes first."""
        home = None if self._homes is None else self._homes[index]
        self._queues.setdefault((self._shapes[index], home), deque()).appendleft(index)
        self.count += 1

    def drain(self) -> list[int]:
        """Every prompt left in the queues, which are then empty."""
        left = [index for queue in self._queues.values() for index in queue]
        self._queues.clear()
        self.count = 0
        return left
