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

Speed: :class:`Load` measures each endpoint's throughput between answers (see there) and when
what it holds should be done (:meth:`Load.free_at`).

Admission: :func:`water_level` is when the fleet would finish the queue if every endpoint
finished together; :func:`admit` caps a chunk at what the endpoint can do by then, so the queue
is spread over the fleet in proportion to speed and the last answers come in together. An
endpoint slower than the mean plans to finish a little sooner (:func:`lead_time`): its estimate
errors land at the very end, where nobody can make up for them.
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
        Smallest adaptive chunk when an endpoint's share is cut into several. An endpoint
        whose speed is not known yet gets two such chunks first; on servers that run many
        more sequences at once (256 on a GPU vLLM server), shares of a few hundred prompts
        fill them better with 128.
    whole_share:
        An endpoint's fair share of a call up to this many prompts goes out as one request. A
        GPU vLLM server runs 256 sequences at once by default (``--max-num-seqs``): cutting
        such a share into chunks only adds requests, and with ``max_in_flight`` chunks at a
        time it leaves sequences idle (measured on 8 fake 256-slot servers with 200 prompts
        each: 3.1x the ideal time cut in chunks of 64, 1.6x whole). A whole share on a slow
        endpoint is rescued by backups: idle endpoints redo it in slices. Lower it for
        servers that run few sequences at once and differ in speed, or when the first
        answers of a streamed call should come sooner.
    """

    chunk_size: int | None = attrs.field(default=None, validator=_optional_positive)
    max_chunk: int = attrs.field(default=1024, validator=_positive)
    max_in_flight: int = attrs.field(default=2, validator=_positive)
    adapt_to_speed: bool = True
    min_chunk: int = attrs.field(default=64, validator=_positive)
    whole_share: int = attrs.field(default=256, validator=_positive)

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
    """Work and observed speed of one endpoint (internal, shared across calls).

    The endpoint is seen as a server with a latency floor and a throughput: a request takes at
    least the floor, and a busy server answers prompts at its throughput.

    Throughput is measured between answers. A request sent before the previous answer came in
    waited behind other work, so the time from that answer to its own is what the server spent
    on it. A request that had the server to itself measures less well: its latency also holds
    the fixed cost (parsing, scheduling, the first wave of sequences) that a server with work
    queued hides. Counted as throughput, that cost made fast servers look up to half as fast as
    they are and handed the slow ones the tail, so such answers count only until two of the
    first kind have come in. (A server that runs two requests side by side answers the second
    right after the first: that gap alone would overstate its speed, so one such measure is
    never used alone.)
    """

    in_flight: int = 0
    backlog: int = 0
    # Decayed sums of prompts answered and of the seconds the server spent on them: answers
    # that waited behind others ("queued"), and answers that had the server to themselves.
    done: float = 0.0
    busy: float = 0.0
    queued_answers: int = 0
    alone_done: float = 0.0
    alone_busy: float = 0.0
    answered_at: float | None = None  # when the last answer came in
    busy_since: float = 0.0  # when the work now in flight started to arrive
    # The latency of the smallest request answered so far, and its size: what a request costs
    # however little it carries (a GPU runs a few sequences no faster than many).
    floor: float | None = None
    floor_size: int = 0

    def started(self, prompts: int, now: float) -> None:
        if not self.in_flight:
            self.busy_since = now
        self.in_flight += 1
        self.backlog += prompts

    def finished(self, prompts: int, answered: int, started: float, now: float) -> None:
        """Count out a request sent at ``started`` that answered ``answered`` prompts."""
        self.in_flight -= 1
        self.backlog -= prompts
        if not answered:
            return
        latency = now - started
        last, self.answered_at = self.answered_at, now
        # Recent answers weigh more: a server's speed drifts with its load.
        if last is not None and last > started:
            self.done = self.done * 0.9 + answered
            self.busy = self.busy * 0.9 + (now - last)
            self.queued_answers += 1
        elif latency > 0:
            self.alone_done = self.alone_done * 0.9 + answered
            self.alone_busy = self.alone_busy * 0.9 + latency
        if (self.floor is None or prompts < self.floor_size
                or (prompts == self.floor_size and latency < self.floor)):
            self.floor, self.floor_size = latency, prompts

    def outrun(self, prompts: int, started: float, now: float) -> None:
        """A request, with ``prompts`` prompts in it and ahead of it, was called off unanswered
        at ``now`` because a backup answered first.

        For an endpoint that has never answered, this is all there is to know: it does at
        most ``prompts`` in the time it ran. Counted as such (its best case), so it is not
        taken for an endpoint of average speed and handed the same work again.
        """
        if self.rate() is None and now > started:
            self.alone_done += prompts
            self.alone_busy += now - started

    def shortest(self, prompts: int) -> float:
        """The least time a request of ``prompts`` prompts takes here, as far as seen.

        The smallest request seen sets it; a smaller one is assumed to scale down in
        proportion (the optimistic guess: backup requests catch it when it is wrong).
        """
        if self.floor is None:
            return 0.0
        return self.floor * min(1.0, prompts / self.floor_size)

    def rate(self) -> float | None:
        """Prompts per second while busy, or ``None`` before the first answer."""
        done, busy = self.done, self.busy
        if self.queued_answers < 2:
            done, busy = done + self.alone_done, busy + self.alone_busy
        if done <= 0 or busy <= 0:
            return None
        return done / busy

    def free_at(self, now: float, rate: float) -> float:
        """When this endpoint should have answered everything in flight.

        The server has worked through its backlog, in turn, since its last answer (or since the
        work arrived, if later); what it has not done yet takes ``backlog / rate`` from there.
        """
        if not self.in_flight:
            return now
        since = self.busy_since
        if self.answered_at is not None and self.answered_at > since:
            since = self.answered_at
        remaining = self.backlog - rate * (now - since)
        return now + remaining / rate if remaining > 0 else now

    def finish_time(self, extra: int, now: float, rate: float) -> float:
        """When this endpoint would finish what it has in flight plus ``extra`` prompts."""
        return max(now + self.shortest(extra), self.free_at(now, rate) + extra / rate)


def water_level(servers: Sequence[tuple[float, float]], pending: float) -> float:
    """When ``pending`` prompts would be done, spread so that every server finishes together.

    ``servers`` holds ``(free_at, rate)`` pairs: when each server is done with what it holds,
    and its prompts per second. Like water poured over steps, the work fills the servers that
    free up first; the level ``T`` solves ``sum(rate * max(0, T - free_at)) == pending``.
    A server freeing up after ``T`` takes none.
    """
    rate_sum = weighted = 0.0
    for free, rate in sorted(servers):
        if rate_sum > 0:
            level = (pending + weighted) / rate_sum
            if level <= free:
                return level
        rate_sum += rate
        weighted += rate * free
    return (pending + weighted) / rate_sum if rate_sum > 0 else math.inf


def admit(size: int, mine: Load, rate: float | None, level: float, now: float,
          lead: float = 0.0, least: int = 1) -> int:
    """Shrink ``size`` so this endpoint finishes by ``level``, the fleet's :func:`water_level`.

    An endpoint's share of what is left is what it can do by the time the whole fleet would
    finish; taking more would make it the last to finish. ``lead`` asks for that much time to
    spare (see :func:`lead_time`). A chunk cut below ``least`` prompts is not worth its
    request: returns 0 then, as when even one prompt would finish late here, and the
    endpoint's peers take the work.
    """
    if rate is None or level == math.inf:
        return size
    level -= lead
    if mine.finish_time(size, now, rate) <= level:
        return size
    if now + mine.shortest(1) > level:
        return 0
    fits = math.floor((level - mine.free_at(now, rate)) * rate + 1e-9)
    return min(size, fits) if fits >= min(size, least) else 0


def lead_time(chunk: int, rate: float, mean_rate: float) -> float:
    """How much sooner than the fleet an endpoint of ``rate`` should plan to finish.

    Finish-time estimates err by about a chunk's worth of work: a server with few sequence
    slots runs even a handful of prompts as a whole wave, and the estimates are averages. On a
    slow endpoint that error is long, and it lands at the very end of the call, where nobody
    can make up for it; leaving the same prompts to faster peers costs them only a moment. So
    an endpoint slower than the fleet's mean keeps the difference in the time a ``chunk``
    takes it and the mean endpoint as a margin; a mean or faster one keeps none.
    """
    return max(0.0, chunk / rate - chunk / mean_rate)


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
