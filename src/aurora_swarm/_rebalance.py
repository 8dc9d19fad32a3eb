"""Rebalancing decisions as plain functions: which work to move, and where it would go.

Two ways of moving work at the tail of a call, both judged on :class:`~aurora_swarm._plan.Lane`
snapshots at an explicit ``now`` (so they are tested as tables, without a server);
:mod:`aurora_swarm._dispatch` gathers the candidates from its requests in flight and applies
the choices:

* :func:`take_back`: requests still *waiting* in a server's queue, called off (vLLM aborts a
  request whose client goes away, at no cost) and spread again over the endpoints that finish
  them soonest;
* :func:`back_up`: requests already *running*, sent again in slices to endpoints with free
  slots; the first answer wins and the other request is called off.

Each candidate is weighed as its prompts would actually be spread (by
:func:`~aurora_swarm._plan.water_fill` over the endpoints that may take them), and moves only
when that clearly finishes it sooner (:func:`~aurora_swarm._plan.worth_moving`). The latest
candidates go first, and every choice counts against the lanes it loads, so later candidates
see the work already moved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from ._plan import Lane, water_fill, worth_moving

__all__ = ["Candidate", "Lanes", "back_up", "take_back"]


@attrs.frozen
class Candidate:
    """A request that might move: ``size`` prompts on endpoint ``position``, expected to be
    answered there at ``stay``."""

    stay: float
    position: int
    size: int


class Lanes(Protocol):
    """The lanes of a fleet by endpoint position, updated as work is moved onto them."""

    def __getitem__(self, position: int, /) -> Lane: ...

    def __setitem__(self, position: int, lane: Lane, /) -> None: ...


def spread(lanes: Lanes, targets: Sequence[int], size: int,
           now: float) -> tuple[list[tuple[int, int]], float]:
    """``size`` prompts spread over ``targets`` to finish soonest: the ``(position, count)``
    slices, and when the last would be done."""
    shares = water_fill([lanes[p] for p in targets], size, now)
    used = [(p, n) for p, n in zip(targets, shares, strict=True) if n]
    return used, max(lanes[p].finish(n, now) for p, n in used)


def take_back(candidates: Sequence[Candidate], lanes: Lanes, targets: Sequence[int],
              now: float, margin: float, noise: float = 0.0) -> list[int]:
    """The waiting requests worth calling off: indices into ``candidates``, latest first.

    Each is weighed spread over ``targets`` other than its own endpoint (32 prompts of a 3x
    slower server of 16 slots were worth moving over six endpoints, but not to any one of
    them), and moves when that saves ``margin`` of the wait, at least half a wave and twice
    ``noise`` (how far answers typically miss when they were expected): a server's own noise,
    or the client's, never moves work.
    """
    def worth(candidate: Candidate, used: list[tuple[int, int]], move: float) -> bool:
        wave = min(lanes[p].wave for p, _ in used)
        return worth_moving(candidate.stay, move, now, margin) and candidate.stay - move >= max(
            0.5 * min(wave, lanes[candidate.position].wave), 2 * noise)

    return [k for k, _ in _moves(candidates, lanes, targets, now, worth)]


def back_up(stragglers: Sequence[Candidate], lanes: Lanes, helpers: Sequence[int],
            now: float, margin: float, noise: float = 0.0,
            ) -> list[tuple[int, list[tuple[int, int]]]]:
    """The running requests worth sending again, latest first: for each, its index into
    ``stragglers`` and the ``(helper, count)`` slices of its prompts.

    Each is spread over ``helpers`` other than its own endpoint, free slots first (a backup
    there delays none of the helper's own work), and counts as done no sooner than a wave
    from now wherever it lands: a prompt sent into a wave under way still takes a whole one.
    It must save ``margin`` of the wait and twice ``noise``, as in :func:`take_back`.
    """
    def worth(straggler: Candidate, used: list[tuple[int, int]], move: float) -> bool:
        move = max(move, max(now + lanes[p].wave for p, _ in used))
        return (worth_moving(straggler.stay, move, now, margin)
                and straggler.stay - move >= 2 * noise)

    return _moves(stragglers, lanes, helpers, now, worth)


def _moves(candidates: Sequence[Candidate], lanes: Lanes, targets: Sequence[int], now: float,
           worth: Callable[[Candidate, list[tuple[int, int]], float], bool],
           ) -> list[tuple[int, list[tuple[int, int]]]]:
    """The candidates that ``worth`` accepts, latest first, each spread over ``targets``
    other than its own endpoint; each choice loads the lanes it uses."""
    chosen = []
    for k in sorted(range(len(candidates)), key=lambda k: -candidates[k].stay):
        candidate = candidates[k]
        others = [p for p in targets if p != candidate.position]
        if not others:
            continue
        used, move = spread(lanes, others, candidate.size, now)
        if not worth(candidate, used, move):
            continue
        for p, n in used:
            lanes[p] = lanes[p].with_extra(n)
        chosen.append((k, used))
    return chosen
