"""How much work an endpoint takes next: chunk sizing from prompts, endpoints and speed.

Batched dispatch splits the prompts into chunks that endpoints pull when they have room, so fast
endpoints take more and slow ones less. This module is the policy, as plain functions over
plain numbers, so it can be tested with tables of cases; :mod:`aurora_swarm._dispatch` applies it.

Sizing (guided self-scheduling with factoring): an endpoint takes ``1 / (2 * max_in_flight)`` of
its speed-weighted share of what is left, so chunks start large (few requests) and shrink toward
the end (a small, balanced tail). A fair share of up to ``whole_share`` prompts goes in one
request. A larger one is cut, and chunks never go below an eighth of it nor below
``min_chunk`` (which bounds the request count: about 7 per endpoint on a uniform fleet); an
endpoint whose speed is not known yet gets such a smallest chunk as its first bet.

Admission: near the end, a slow endpoint that would finish a chunk after the rest of the fleet
could drain all remaining work gets a smaller chunk, or none; its prompts go to faster endpoints.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import attrs

from ._exceptions import ConfigurationError

__all__ = ["Chunking", "prefix_homes"]


def _optional_positive(_inst: object, attr: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigurationError(f"Chunking.{attr.name} must be >= 1, got {value}")


def _positive(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ConfigurationError(f"Chunking.{attr.name} must be >= 1, got {value}")


@attrs.frozen
class Chunking:
    """How batched work is cut into requests.

    Attributes
    ----------
    chunk_size:
        A fixed number of prompts per request; ``None`` (default) adapts the size to the number
        of prompts, endpoints and their observed speed.
    max_chunk:
        Most prompts in one request.
    max_in_flight:
        Requests one endpoint may have in flight at once. Two keep a server busy while the
        client reads the previous answer.
    adapt_to_speed:
        Weigh shares by each endpoint's observed throughput, keep slow endpoints from taking
        work they would finish after everyone else, and send backup requests for stragglers.
    min_chunk:
        Smallest adaptive chunk when an endpoint's share is cut into several.
    whole_share:
        An endpoint's fair share of a call up to this many prompts goes out as one request. A
        GPU vLLM server runs hundreds of sequences at once (``--max-num-seqs``, 256 by
        default), so cutting such a share finishes no sooner and only adds requests. Lower it
        for servers that run few sequences at once, or when the first answers of a streamed
        call should come sooner.
    """

    chunk_size: int | None = attrs.field(default=None, validator=_optional_positive)
    max_chunk: int = attrs.field(default=1024, validator=_positive)
    max_in_flight: int = attrs.field(default=2, validator=_positive)
    adapt_to_speed: bool = True
    min_chunk: int = attrs.field(default=64, validator=_positive)
    whole_share: int = attrs.field(default=128, validator=_positive)

    def floor(self, total: int, endpoints: int) -> int:
        """Smallest adaptive chunk for a call of ``total`` prompts over ``endpoints``.

        A fair share of up to ``whole_share`` prompts goes in one request (a server runs that
        many sequences at once, so splitting it would only add requests); a larger share is cut
        into chunks of an eighth of it, but not below ``min_chunk``.
        """
        share = math.ceil(total / max(1, endpoints))
        if share <= self.whole_share:
            return max(1, min(self.max_chunk, share))
        return max(1, min(self.max_chunk, max(math.ceil(share / 8), self.min_chunk)))

    def size(self, *, total: int, endpoints: int, pending: int, weight: float | None) -> int:
        """Prompts the next chunk should hold.

        Parameters
        ----------
        total:
            Prompts in the whole call.
        endpoints:
            Endpoints serving the call.
        pending:
            Prompts not yet assigned.
        weight:
            The endpoint's share of the fleet's speed (0..1), or ``None`` while unknown.
        """
        if self.chunk_size is not None:
            return min(self.chunk_size, pending)
        floor = self.floor(total, endpoints)
        if weight is None:
            size = floor  # a first, small bet while the endpoint's speed is unknown
        else:
            # Chunks of about equal time, not equal count: a slower endpoint's smallest chunk
            # shrinks with its speed, so it never holds the tail for long.
            relative = min(1.0, weight * endpoints)
            floor = max(1, math.ceil(floor * relative))
            size = max(floor, math.ceil(pending * weight / (2 * self.max_in_flight)))
        return max(1, min(size, self.max_chunk, pending))


@attrs.define
class Load:
    """Work and observed speed of one endpoint (internal, shared across calls)."""

    in_flight: int = 0
    backlog: int = 0
    busy_since: float = 0.0
    busy: float = 0.0
    done: float = 0.0
    # The latency of the smallest request answered so far, and its size: what a request costs
    # however little it carries (a GPU runs a few sequences no faster than many).
    floor: float | None = None
    floor_size: int = 0

    def started(self, prompts: int, now: float) -> None:
        if self.in_flight == 0:
            self.busy_since = now
        self.in_flight += 1
        self.backlog += prompts

    def finished(self, prompts: int, answered: int, latency: float, now: float) -> None:
        self.in_flight -= 1
        self.backlog -= prompts
        if self.in_flight == 0:
            self.busy += now - self.busy_since
        if answered:
            # Recent work weighs more: a server's speed drifts with its load.
            self.done = self.done * 0.9 + answered
            self.busy = self.busy * 0.9
            if (self.floor is None or prompts < self.floor_size
                    or (prompts == self.floor_size and latency < self.floor)):
                self.floor, self.floor_size = latency, prompts

    def shortest(self, prompts: int) -> float:
        """The least time a request of ``prompts`` prompts takes here, as far as seen.

        The smallest request seen sets it; a smaller one is assumed to scale down in
        proportion (the optimistic guess: backup requests catch it when it is wrong).
        """
        if self.floor is None:
            return 0.0
        return self.floor * min(1.0, prompts / self.floor_size)

    def rate(self, now: float) -> float | None:
        """Prompts per second while busy, or ``None`` before the first answer."""
        busy = self.busy + (now - self.busy_since if self.in_flight else 0.0)
        if self.done <= 0 or busy <= 0:
            return None
        return self.done / busy

    def finish_time(self, extra: int, now: float, rate: float) -> float:
        """When this endpoint would finish its backlog plus ``extra`` prompts."""
        return now + max(self.shortest(extra), (self.backlog + extra) / rate)


DRAIN_SLACK = 1.5


def admit(size: int, mine: Load, rate: float | None, fleet_rate: float, fleet_floor: float,
          pending: int, backlog: int, now: float) -> int:
    """Shrink ``size`` so this endpoint finishes no later than the fleet would drain everything.

    ``fleet_rate`` is the summed rate of the usable endpoints, ``fleet_floor`` the shortest
    request latency among them (no request finishes sooner, however small), ``backlog`` the
    prompts in flight in the call. Returns 0 when even one prompt would finish late here.
    """
    if rate is None or fleet_rate <= 0:
        return size
    # Half again the ideal drain time: endpoints nearly as fast as the best still take work
    # (their estimates are noisy); only clearly slower ones are held back.
    drain = now + DRAIN_SLACK * max(fleet_floor, (pending + backlog) / fleet_rate)
    if mine.finish_time(size, now, rate) <= drain:
        return size
    if now + mine.shortest(1) > drain:
        return 0
    fits = math.floor((drain - now) * rate) - mine.backlog
    return max(0, min(size, fits))


def prefix_homes(texts: Sequence[str], endpoints: int, chars: int) -> tuple[list[int], list[int]]:
    """A home endpoint for each prompt, so prompts that start alike share one; and group ids.

    Prompts whose first ``chars`` characters agree form a group; every group gets one home, so
    that server's prefix cache computes the shared part (a system prompt, a rubric) once. A
    group's home is the less loaded of two stable hash choices (CRC-32, the same in every call and
    process, so a later call mostly finds its prefixes cached where it left them): balanced load,
    stable homes.

    Returns ``(homes, groups)``: ``groups[i]`` numbers prompt i's group (in order of first
    appearance), so a queue can keep a group's prompts together.
    """
    group_of: dict[str, int] = {}
    groups = [group_of.setdefault(text[:chars], len(group_of)) for text in texts]
    sizes = [0] * len(group_of)
    for group in groups:
        sizes[group] += 1
    load = [0] * endpoints
    home_of = [0] * len(group_of)
    # Largest groups first, each to the less loaded of its two hash choices.
    for key, group in sorted(group_of.items(), key=lambda item: (-sizes[item[1]], item[0])):
        data = key.encode("utf-8")
        first = zlib.crc32(data) % endpoints
        second = zlib.crc32(data, 0x9E3779B9) % endpoints
        home = first if load[first] <= load[second] else second
        home_of[group] = home
        load[home] += sizes[group]
    return [home_of[g] for g in groups], groups
