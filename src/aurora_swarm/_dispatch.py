"""Batched dispatch: every prompt over every endpoint, few requests, every slot busy, nothing lost.

A :class:`BatchJob` owns one call of ``send_all_batched``. One decider task plans; request tasks
only send, wait and record. The plan works in time, on what each server is
(:mod:`aurora_swarm._server_model`: slots, a queue, a wave time); how many prompts each endpoint
takes is decided by :mod:`aurora_swarm._plan`, which ones by :mod:`aurora_swarm._pending`, what
to take back or back up by :mod:`aurora_swarm._rebalance`; what is read from the servers'
``/metrics`` by :mod:`aurora_swarm._gauges`:

1. **Fill.** Unassigned prompts are spread by :func:`~aurora_swarm._plan.water_fill` over the
   usable endpoints, counting what every call of the pool already has queued there, and each
   endpoint's share goes out at once as a few requests (:func:`~aurora_swarm._plan.cut`). On a
   fleet with no known differences that is the equal split; the requests queue back to back on
   the server, so its slots stay full.
2. **Rebalance.** A request still waiting in a server's queue costs nothing to take back: vLLM
   aborts a request whose client goes away. When an endpoint turns out slower than planned (its
   answers, or the lack of them, tell: a server clearly late is expected as late again), its
   last waiting requests are called off and their prompts spread again over endpoints that
   will finish them sooner.
3. **Back up.** Work that is already running is not taken back; when nothing is left to hand
   out, a request that would finish clearly later is sent again in slices to endpoints with
   free slots (where it delays nothing of theirs); the first answer wins and the loser is
   called off.

Failures: a retryable failure of a request (timeout, connection, 408/409/429/5xx, bad answer)
returns its prompts for any endpoint to take, while the endpoint rests
(:mod:`aurora_swarm._health`); each prompt is carried by at most ``RetryPolicy.max_attempts``
requests. A choice missing from an otherwise good answer returns only that prompt. A
non-retryable status (400, 413, 422) on a request of several prompts splits it in halves, so one
bad prompt fails alone. When every endpoint of the call is down, what is left fails at once with
:class:`~aurora_swarm.EndpointUnavailable`.

A prompt's slot is written once: the first answer wins, so no prompt is answered twice.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import attrs

from ._config import Timeouts
from ._endpoint import Endpoint
from ._exceptions import (
    BadResponseError,
    ConnectError,
    EndpointUnavailable,
    HTTPStatusError,
    RequestError,
)
from ._gauges import GaugeReader, GaugeReads
from ._health import HealthPolicy
from ._pending import Unassigned
from ._plan import Lane, cut, water_fill
from ._rebalance import Candidate, back_up, take_back
from ._record import EndpointRecord
from ._response import Response
from ._retry import RetryPolicy
from ._schedule import Chunking
from ._server_model import FleetGuess, Held
from ._transport import BatchReply

__all__ = ["BatchJob", "DispatchSettings", "Timeouts"]

_log = logging.getLogger("aurora_swarm.dispatch")

P = TypeVar("P")
K = TypeVar("K", bound=Hashable)
Sender = Callable[[Endpoint, list[P], K, float | None], Awaitable[BatchReply]]
Prober = Callable[[Endpoint], Awaitable[bool]]
ResultHook = Callable[[int, Response], None]
Clock = Callable[[], float]


@attrs.frozen
class DispatchSettings:
    """The policies one batched call runs under."""

    chunking: Chunking
    retry: RetryPolicy
    health: HealthPolicy
    timeouts: Timeouts


_SPLIT_STATUSES = frozenset({400, 413, 422})
_MOVE_MARGIN = 0.2  # share of the wait a move must save (see _plan.worth_moving)
_BACKUP_MARGIN = 0.25  # the same for a backup, which adds work instead of moving it
_TICK = 0.02  # seconds between looks at the whole fleet, at the least
_TICK_PER_ENDPOINT = 1e-5  # and this much more per endpoint, so large fleets are looked at less
_STAGGER = 0.003  # seconds between the requests of one share, so the server queues them in order
_BUSY_LAG = 0.02  # seconds late the decider wakes up, on average, when the client is saturated
# Endpoints a move is weighed over (those that free up soonest): each candidate is spread by
# water_fill over them, so over every helper a look cost candidates x endpoints; a warm call
# over 1,000 near-instant endpoints spent 19 s of its 25 s of CPU in one look's backups.
_MOVE_TARGETS = 8


class _Lanes:
    """The usable endpoints' :class:`~aurora_swarm._plan.Lane` at one moment, each made when
    first asked for: a look over a large fleet often needs only a few of them."""

    def __init__(self, job: BatchJob[Any, Any], usable: list[int], now: float,
                 guess: FleetGuess) -> None:
        self._job = job
        self._usable = usable
        self._set = set(usable)
        self._now = now
        self._guess = guess
        self._made: dict[int, Lane] = {}

    def __iter__(self) -> Iterator[int]:
        return iter(self._usable)

    def __len__(self) -> int:
        return len(self._usable)

    def __contains__(self, position: object) -> bool:
        return position in self._set

    def __getitem__(self, position: int) -> Lane:
        lane = self._made.get(position)
        if lane is None:
            lane = self._made[position] = self._job._lane(position, self._now, self._guess)
        return lane

    def __setitem__(self, position: int, lane: Lane) -> None:
        self._made[position] = lane


@attrs.define(eq=False)
class _Flight:
    """One request of this call: where, which prompts, and how to call it off."""

    position: int
    shape: Any
    chunk: list[int]
    held: Held
    scope: anyio.CancelScope
    backup: bool = False
    backed_up: bool = False  # a backup carries its prompts
    taken_back: bool = False


class BatchJob(Generic[P, K]):
    """One batched call over a list of endpoints (see the module docstring)."""

    def __init__(
        self,
        records: Sequence[EndpointRecord],
        payloads: Sequence[P],
        shapes: Sequence[K],
        *,
        send: Sender[P, K],
        probe: Prober,
        settings: DispatchSettings,
        limiter: anyio.CapacityLimiter,
        on_result: ResultHook | None = None,
        split_refused: bool = True,
        backups: bool = True,
        homes: Sequence[int] | None = None,
        groups: Sequence[int] | None = None,
        gauges: GaugeReader | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._records = records
        self._payloads = payloads
        self._shapes = shapes
        self._send = send
        self._probe = probe
        self._gauges = None if gauges is None else GaugeReads(gauges, self._notify, clock)
        self._settings = settings
        self._limiter = limiter
        self._on_result = on_result
        self._split_refused = split_refused
        self._clock = clock
        chunking = settings.chunking
        self._adaptive = chunking.adapt_to_speed and chunking.chunk_size is None
        self._backups = backups and chunking.adapt_to_speed and len(records) > 1
        self._rebalance = self._adaptive and len(records) > 1
        # Requests an endpoint's share is cut into (see Chunking.fleet_in_flight).
        self._pieces = max(1, min(chunking.max_in_flight,
                                  chunking.fleet_in_flight // max(1, len(records))))
        count = len(payloads)
        self.results: list[Response | None] = [None] * count
        self._attempts = [0] * count
        self._carriers = [0] * count  # requests in flight that carry the prompt
        self._last_error: list[RequestError | None] = [None] * count
        self._unreached = [0] * count  # connection failures not counted as attempts
        results, carriers = self.results, self._carriers
        self._pending: Unassigned[K] = Unassigned(
            shapes, lambda i: results[i] is None and not carriers[i], homes, groups)
        self._forced: deque[tuple[list[int], int]] = deque()  # (chunk, failed on) after a split
        self._remaining = count
        self._mine: dict[int, list[_Flight]] = {}  # this call's requests per endpoint, in order
        self._doubled: set[_Flight] = set()  # requests whose prompts another also carries
        self._changed = anyio.Event()
        self._group: anyio.abc.TaskGroup | None = None
        self._lag = 0.0
        self._looked_at = -math.inf
        self.trace: list[tuple[int, float, float, int, str]] | None = None

    # -- public ---------------------------------------------------------------------------------

    async def run(self) -> list[Response]:
        """Dispatch every prompt; return one :class:`Response` per prompt, in input order."""
        if self._remaining:
            async with anyio.create_task_group() as group:
                self._group = group
                if self._gauges is not None and self._adaptive and len(self._records) > 1:
                    await self._gauges.read_history(self._records, group)
                await self._decide()
                group.cancel_scope.cancel()  # what is left is only called-off work
        return [r for r in self.results if r is not None]

    # -- the decider ----------------------------------------------------------------------------

    async def _decide(self) -> None:
        """Plan, then wait for something to change (an answer, a failure, a probe) or a tick."""
        while self._remaining:
            now = self._clock()
            wait = self._step(now)
            if not self._remaining:
                return
            self._changed = anyio.Event()
            start = self._clock()
            with anyio.move_on_after(wait) as timer:
                await self._changed.wait()
            if timer.cancelled_caught:
                # Only a wake-up by the timer tells how late the event loop runs; one by news
                # says nothing of it: counted as on time, wake-ups by answers hid a loop
                # kept 50 ms at a time by other work (the lag read 15 ms, under _BUSY_LAG).
                # It rises at once and falls slowly: backups are due a wave or so into a
                # straggler's silence, and averaged up from zero, a loop held 50 ms at a time
                # needed two late wake-ups to count as busy; it often had only one by then.
                late = max(0.0, self._clock() - start - wait)
                self._lag = max(late, 0.7 * self._lag + 0.3 * late)

    def _notify(self) -> None:
        self._changed.set()

    def _step(self, now: float) -> float:
        """Everything the decider does at ``now``; returns how long it may wait for news.

        Placing work happens whenever there is work to place; looking over the whole fleet
        (taking back, backups, reading gauges, probes) at most once a tick, so an answer costs
        the decider nothing when there is nothing to decide.
        """
        records = self._records
        tick = _TICK + _TICK_PER_ENDPOINT * len(records)
        look = now - self._looked_at >= tick
        if not (look or self._pending.count or self._forced):
            return tick - (now - self._looked_at)
        if look:
            self._looked_at = now
            self._probe_benched(now)
        # A resting endpoint (a failure's backoff) still counts: work planned for it is sent
        # when its rest ends, so failed work spreads over the fleet instead of piling onto
        # whichever endpoint happens to be free first.
        usable = [p for p, r in enumerate(records) if not r.health.benched]
        if not usable:
            if self._all_down():
                self._fail_everything_left()
                return 0.0
            # Nothing else can move this call on: probe whatever is due now, not at the next
            # look (a bench's first probe is due at once, and no answer is coming to wake us).
            self._probe_benched(now)
            return self._next_wake(now)
        guess = FleetGuess.of(r.server for r in records)
        lanes = _Lanes(self, usable, now, guess)
        if self._forced:
            self._place_forced(lanes, now)
        if self._pending.count:
            self._place_pending(lanes, now)
        if look:
            taken_from = self._take_back(lanes, now, guess) if self._rebalance else set()
            if taken_from:
                # Each move was weighed spread over the other endpoints (take_back): placed
                # over all of them, part of what was taken back from a server late by a
                # moment went straight back to it, as new requests.
                others = [p for p in usable if p not in taken_from] or usable
                self._place_pending(_Lanes(self, others, now, guess), now)
                lanes = _Lanes(self, usable, now, guess)
            if self._backups and not self._pending.count and self._lag < _BUSY_LAG:
                self._back_up(lanes, now, guess)
            if self._gauges is not None:
                assert self._group is not None
                # A client that wakes up late is saturated: it has no time for reads that only
                # refine its plan (over 4,000 near-instant servers, progress reads of servers
                # whose answers it had not yet read cost 15% more CPU a prompt).
                self._gauges.read_loads(self._waiting(), now, self._group,
                                        progress=self._lag < _BUSY_LAG)
        return min(tick, self._next_wake(now))

    def _next_wake(self, now: float) -> float:
        """Time until a resting endpoint may work again or a benched one is due a probe.

        A probe under way wakes the decider when it ends; with nothing to wait for, the decider
        sleeps until news comes (an answer, a failure), looking again once a second at most.
        """
        soonest = math.inf
        for record in self._records:
            if record.probing:
                continue
            wait = record.health.wait_time(now)
            if wait > 0 or record.health.benched:
                soonest = min(soonest, wait)
        return max(0.001, min(soonest, 1.0)) if soonest < math.inf else 1.0

    def _lane(self, position: int, now: float, guess: FleetGuess) -> Lane:
        server = self._records[position].server
        # Nothing measured anywhere and no history: all alike.
        wave = guess.wave_at(server, now) or 1.0
        if not server.held:
            rest = self._records[position].health.wait_time(now)
            return Lane(now + rest, 0, 0, server.capacity(), wave, server.room())
        origin = server.answered_at if server.done else server.busy_since
        # A server clearly late is planned as late as it is (see ServerModel.overdue): by its
        # growing silence bound alone, what it holds looked due now, and work taken back from
        # it was handed straight back.
        origin += server.overdue(now, guess.wave_for(server))
        return Lane(origin, server.done, server.queued, server.capacity(), wave, server.room())

    # -- filling --------------------------------------------------------------------------------

    def _place_pending(self, lanes: _Lanes, now: float) -> None:
        """Spread the unassigned prompts over ``lanes`` (water-filling in time) and send."""
        positions = list(lanes)
        if not self._adaptive:
            positions = self._plain_positions(positions)
            shares = self._plain_shares(positions)
        else:
            shares = water_fill([lanes[p] for p in positions], self._pending.count, now)
        chunking = self._settings.chunking
        takes = self._pending.split(positions, shares)
        for position, take in zip(positions, takes, strict=True):
            for shape, taken in take:
                if chunking.chunk_size is not None:
                    sizes = [chunking.chunk_size] * (len(taken) // chunking.chunk_size)
                    if len(taken) % chunking.chunk_size:
                        sizes.append(len(taken) % chunking.chunk_size)
                elif len(taken) <= max(chunking.whole_share, self._known_slots(position)):
                    # It all starts at once (one wave): nothing would wait to be taken back.
                    # Only where the slots are known: a share of 64 sent whole to servers of
                    # 16 slots thought to have vLLM's default 256 left nothing to take back
                    # from the two 3x slower ones (their three waves waited in one request).
                    sizes = cut(len(taken), pieces=1, smallest=1, largest=chunking.max_chunk)
                else:
                    # The pieces are there so that the tail waits in the server's queue in
                    # parts that can be taken back. Requests already queued there (this
                    # call's or others') are such parts already, so a server holds about
                    # ``max_in_flight`` requests whatever sends to it: cut anew behind its
                    # own pieces, work moved at the tail of a 4,096-prompt call over alike
                    # servers went out as 15 requests an endpoint, each move taken back
                    # and cut again.
                    holding = len(self._records[position].server.held)
                    sizes = cut(len(taken), pieces=max(1, self._pieces - holding),
                                smallest=chunking.min_chunk, largest=chunking.max_chunk)
                start = 0
                rest = self._records[position].health.wait_time(now)
                for k, size in enumerate(sizes):
                    # The server queues each request as it takes it in; a request sent a moment
                    # after the one before lands behind it, so the last ones are what waits.
                    self._launch(position, shape, taken[start:start + size], now,
                                 delay=rest + k * _STAGGER)
                    start += size
                # Later looks in this step (taking back, backups) see what was just queued.
                lanes[position] = lanes[position].with_extra(len(taken))

    def _known_slots(self, position: int) -> int:
        """The endpoint's slots if read or given, else 0."""
        server = self._records[position].server
        return server.capacity() if server.knows_slots() else 0

    def _plain_positions(self, positions: list[int]) -> list[int]:
        """Without speed adaptation: endpoints with fewer requests of this call first."""
        return sorted(positions, key=lambda p: len(self._mine.get(p, ())))

    def _plain_shares(self, positions: list[int]) -> list[int]:
        """Fixed-size requests (or an equal split), ``max_in_flight`` at most per endpoint."""
        chunking = self._settings.chunking
        pending = self._pending.count
        size = chunking.chunk_size or max(1, math.ceil(pending / len(positions)))
        shares = []
        for position in positions:
            room = max(0, chunking.max_in_flight - len(self._mine.get(position, ())))
            share = min(pending, room * size)
            shares.append(share)
            pending -= share
        return shares

    def _place_forced(self, lanes: _Lanes, now: float) -> None:
        """Send the halves of a refused request whole, each where it finishes soonest (not
        where it was refused, if there is another endpoint)."""
        while self._forced:
            chunk, failed_on = self._forced.popleft()
            chunk = [i for i in chunk if self.results[i] is None and not self._carriers[i]]
            if not chunk:
                continue
            choices = [p for p in lanes if p != failed_on] or list(lanes)
            position = min(choices, key=lambda p: (lanes[p].finish(len(chunk), now), p))
            self._launch(position, self._shapes[chunk[0]], chunk, now,
                         delay=self._records[position].health.wait_time(now))
            lanes[position] = lanes[position].with_extra(len(chunk))

    # -- rebalancing ----------------------------------------------------------------------------

    def _take_back(self, lanes: _Lanes, now: float, guess: FleetGuess) -> set[int]:
        """Call off waiting requests that other endpoints would clearly finish sooner.

        Only a request that should not have started yet (every slot busy with work queued
        before it) is taken back: the server frees it at no cost. The latest first, each
        against the endpoints that free up soonest.
        """
        candidates: list[tuple[Candidate, _Flight]] = []
        for position, flights in self._mine.items():
            if not flights or position not in lanes:
                continue
            server = self._records[position].server
            if flights[-1].held.ahead < server.capacity():
                continue  # all of it runs in the first wave: nothing waits
            wave = guess.wave_at(server, now)
            if wave is None:
                continue
            late = server.overdue(now, guess.wave_for(server))
            for flight in reversed(flights):
                if flight.backup or flight.taken_back:
                    continue
                if server.start_of(flight.held.ahead, now, wave) + late <= now + 0.1 * wave:
                    break  # running (or about to): this one and those before it stay
                stay = server.finish_of(flight.held.end, now, wave) + late
                candidates.append((Candidate(stay, position, len(flight.chunk)), flight))
        if not candidates:
            return set()
        # The few endpoints that free up soonest are where moved work would go.
        soonest = heapq.nsmallest(_MOVE_TARGETS, lanes, key=lambda p: lanes[p].finish(1, now))
        chosen = take_back([c for c, _ in candidates], lanes, soonest, now, _MOVE_MARGIN,
                           guess.noise)
        for k in chosen:
            self._call_back(candidates[k][1])
        return {candidates[k][0].position for k in chosen}

    def _call_back(self, flight: _Flight) -> None:
        """Take a waiting request back: cancel it and return its prompts, unblamed."""
        flight.taken_back = True
        flight.scope.cancel()
        record = self._records[flight.position]
        record.server.drop(flight.held)
        record.counters.taken_back += 1
        _log.debug("took back %d waiting prompts from %s", len(flight.chunk), record.endpoint)
        self._forget(flight)
        for index in flight.chunk:
            self._carriers[index] -= 1
            self._attempts[index] -= 1  # not the prompt's fault
            if self.results[index] is None and not self._carriers[index]:
                self._pending.put_back(index)

    def _back_up(self, lanes: _Lanes, now: float, guess: FleetGuess) -> None:
        """With nothing left to hand out, let endpoints with free slots redo slices of the
        requests that would be answered clearly later than they could do them."""
        # Helpers: endpoints with free slots now, whatever they hold. A backup there starts at
        # once beside the endpoint's own work and delays none of it; waiting for endpoints that
        # hold nothing of the call wasted the free slots of a two-wave call's last wave: a
        # server 8x slower was backed up only after the others' second wave, a wave late.
        # An endpoint outrun before (its wave only bounded) is no helper: likely slow itself;
        # nor one late with its own work: it is a straggler, however free its slots look.
        free = [p for p in lanes if self._records[p].health.wait_time(now) == 0
                and (server := self._records[p].server).free_slots() > 0
                and not server.wave_bounded and not server.late(now, guess.wave_for(server))]
        if not free:
            return
        if len(free) > _MOVE_TARGETS:
            free = heapq.nsmallest(_MOVE_TARGETS, free, key=lambda p: lanes[p].finish(1, now))
        stragglers: list[tuple[Candidate, _Flight, list[int]]] = []
        for position, flights in self._mine.items():
            server = self._records[position].server
            # At least as slow as its unanswered requests show (see ServerModel.wave_at).
            wave = guess.wave_at(server, now)
            if wave is None:
                continue
            late = server.overdue(now, guess.wave_for(server))
            for flight in flights:
                if flight.backup or flight.backed_up:
                    continue
                uncovered = [i for i in flight.chunk
                             if self.results[i] is None and self._carriers[i] == 1]
                if uncovered:
                    stay = server.finish_of(flight.held.end, now, wave) + late
                    stragglers.append((Candidate(stay, position, len(uncovered)), flight,
                                       uncovered))
        # The latest stragglers first, each spread over the other helpers so that its slices
        # finish soonest (free slots first), if that clearly beats leaving it.
        by_helper: dict[tuple[int, K], list[int]] = {}
        chosen = back_up([s for s, _, _ in stragglers], lanes, free, now, _BACKUP_MARGIN,
                         guess.noise)
        for k, slices in chosen:
            _, flight, uncovered = stragglers[k]
            flight.backed_up = True
            self._doubled.add(flight)
            start = 0
            for position, count in slices:
                by_helper.setdefault((position, flight.shape), []).extend(
                    uncovered[start:start + count])
                start += count
        # One request per helper and shape, carrying slices of every straggler chosen.
        for (position, shape), prompts in by_helper.items():
            self._launch(position, shape, prompts, now, backup=True)

    def _waiting(self) -> Iterator[tuple[EndpointRecord, float]]:
        """Each endpoint this call has requests on, with when the oldest was sent."""
        for position, flights in self._mine.items():
            if flights:
                yield self._records[position], flights[0].held.sent

    # -- health ---------------------------------------------------------------------------------

    def _probe_benched(self, now: float) -> None:
        group = self._group
        assert group is not None
        for record in self._records:
            health = record.health
            if health.benched and not record.probing and health.wait_time(now) == 0:
                record.probing = True
                group.start_soon(self._probe_once, record)

    async def _probe_once(self, record: EndpointRecord) -> None:
        try:
            ok = await self._probe(record.endpoint)
        finally:
            record.probing = False
        record.health.probe_result(ok, self._settings.health)
        self._notify()

    def _all_down(self) -> bool:
        return not any(self._mine.values()) and all(
            r.health.benched and r.health.down for r in self._records
        )

    # -- one request ----------------------------------------------------------------------------

    def _launch(self, position: int, shape: K, chunk: list[int], now: float,
                backup: bool = False, delay: float = 0.0) -> None:
        """Send ``chunk`` to ``position`` as one request (the server model counts it at once)."""
        record = self._records[position]
        held = record.server.send(len(chunk), now)
        flight = _Flight(position, shape, chunk, held, anyio.CancelScope(), backup=backup)
        self._mine.setdefault(position, []).append(flight)
        if backup:
            self._doubled.add(flight)
        attempts, carriers = self._attempts, self._carriers
        retries = 0
        for index in chunk:
            if attempts[index] and not backup:
                retries += 1
            attempts[index] += 1
            carriers[index] += 1
        group = self._group
        assert group is not None
        group.start_soon(self._fly, flight, delay, retries)

    def _count_sent(self, record: EndpointRecord, flight: _Flight, retries: int) -> None:
        """Count a request as it goes out (one called off before that was never sent)."""
        counters = record.counters
        counters.requests += 1
        counters.batch_requests += 1
        counters.prompts += len(flight.chunk)
        counters.retries += retries
        if flight.backup:
            counters.backups += 1

    async def _fly(self, flight: _Flight, delay: float = 0.0, retries: int = 0) -> None:
        """Send one request, wait, and record what came back."""
        record = self._records[flight.position]
        chunk = flight.chunk
        started = self._clock()
        reply: BatchReply | None = None
        error: RequestError | None = None
        settled = False
        try:
            with flight.scope:
                if delay:
                    await anyio.sleep(delay)
                payloads = [self._payloads[i] for i in chunk]
                timeout = self._settings.timeouts.for_chunk(len(chunk))
                async with self._limiter:
                    self._count_sent(record, flight, retries)
                    record.server.went_out(flight.held, self._clock())
                    reply = await self._send(record.endpoint, payloads, flight.shape, timeout)
        except RequestError as exc:
            error = exc
        finally:
            if reply is None and error is None and not flight.taken_back:
                # Called off (another request answered it all) or the call was cancelled:
                # either way the server aborted it.
                self._settle_unanswered(flight)
                settled = True
        now = self._clock()
        if self.trace is not None:
            kind = ("backup" if flight.backup else "chunk") + (
                "" if reply is not None else " failed" if error is not None
                else " taken back" if flight.taken_back else " called off")
            self.trace.append((flight.position, started, now, len(chunk), kind))
        if flight.taken_back:
            if reply is not None:  # answered just before it was called off
                self._accept(record, flight, reply, now, counted=False)
            self._notify()
            return
        if not settled:
            self._forget(flight)
            for index in chunk:
                self._carriers[index] -= 1
            if error is not None:
                record.server.drop(flight.held)
                record.counters.failures[error.cause] += 1
                record.health.record_failure(error, self._settings.health,
                                             self._settings.retry)
                if isinstance(error, ConnectError):
                    self._unblame(chunk)
                self._return(chunk, error, flight.position)
            elif reply is not None:
                self._accept(record, flight, reply, now, counted=True)
        if (not self._remaining or self._pending.count or self._forced or error is not None
                or (self._backups and not record.server.held)):
            self._notify()

    def _settle_unanswered(self, flight: _Flight) -> None:
        server = self._records[flight.position].server
        if flight.backed_up and all(self.results[i] is not None for i in flight.chunk):
            server.outrun(flight.held, self._clock())  # a backup beat it
        else:
            server.drop(flight.held)
        self._forget(flight)
        for index in flight.chunk:
            self._carriers[index] -= 1

    def _forget(self, flight: _Flight) -> None:
        flights = self._mine.get(flight.position)
        if flights is not None:
            with contextlib.suppress(ValueError):
                flights.remove(flight)
            if not flights:
                del self._mine[flight.position]
        self._doubled.discard(flight)

    def _accept(self, record: EndpointRecord, flight: _Flight, reply: BatchReply,
                now: float, *, counted: bool) -> None:
        counters = record.counters
        latency = reply.latency
        counters.latencies.append(latency)
        if reply.usage is not None:
            counters.prompt_tokens += reply.usage.prompt_tokens
            counters.completion_tokens += reply.usage.completion_tokens
        if counted:
            record.server.answered(flight.held, now)
        results = self.results
        attempts = self._attempts
        endpoint = record.endpoint
        position = flight.position
        hook = self._on_result
        answered = 0
        missing: list[int] = []
        first_error: BadResponseError | None = None
        for index, choice in zip(flight.chunk, reply.choices, strict=True):
            if isinstance(choice, BadResponseError):
                missing.append(index)
                self._last_error[index] = choice
                first_error = first_error or choice
                continue
            if results[index] is not None:
                continue  # answered already by another request (first answer wins)
            response = Response(
                success=True, text=choice.text, agent_index=position,
                finish_reason=choice.finish_reason, latency=latency,
                attempts=attempts[index], endpoint=endpoint,
            )
            results[index] = response
            answered += 1
            if hook is not None:
                hook(index, response)
        counters.answered += answered
        self._remaining -= answered
        if answered and self._doubled:
            self._call_off_answered()
        if first_error is None:
            record.health.record_success()
            return
        counters.failures[first_error.cause] += len(missing)
        if answered:
            record.health.record_success()
        else:
            record.health.record_failure(first_error, self._settings.health,
                                         self._settings.retry)
        if counted:
            for index in missing:
                self._return_one(index, self._last_error[index] or first_error, position)

    def _call_off_answered(self) -> None:
        """Cancel requests whose every prompt another request has answered."""
        results = self.results
        for flight in list(self._doubled):
            if all(results[i] is not None for i in flight.chunk):
                flight.scope.cancel()

    # -- failures -------------------------------------------------------------------------------

    def _unblame(self, chunk: list[int]) -> None:
        """A server that cannot be reached says nothing about the prompts: the first
        ``max_attempts`` such failures of a prompt do not use up its attempts. While the whole
        fleet is unreachable, the endpoints are benched and probed meanwhile, and the call ends
        with :class:`~aurora_swarm.EndpointUnavailable` rather than a prompt's last
        connection error; the bound on tries stays (twice ``max_attempts``)."""
        limit = self._settings.retry.max_attempts
        for index in chunk:
            if self._unreached[index] < limit:
                self._unreached[index] += 1
                self._attempts[index] -= 1

    def _return(self, chunk: list[int], exc: RequestError, position: int) -> None:
        if (
            self._split_refused
            and len(chunk) > 1
            and isinstance(exc, HTTPStatusError)
            and exc.status_code in _SPLIT_STATUSES
        ):
            # One bad prompt can make the server refuse the whole request: split to isolate it.
            half = len(chunk) // 2
            for part in (chunk[:half], chunk[half:]):
                part = [i for i in part if self.results[i] is None and not self._carriers[i]]
                for index in part:
                    self._attempts[index] -= 1  # a split is not the prompt's fault
                if part:
                    self._forced.append((part, position))
        else:
            for index in chunk:
                self._return_one(index, exc, position)

    def _return_one(self, index: int, exc: RequestError, position: int) -> None:
        self._last_error[index] = exc
        if self.results[index] is not None or self._carriers[index]:
            return  # answered, or another request still carries it
        if exc.retryable and self._attempts[index] < self._settings.retry.max_attempts:
            self._pending.put_back(index)
            return
        self._fail(index, exc, position)

    def _fail(self, index: int, exc: RequestError, position: int) -> None:
        response = Response.failure(exc, agent_index=position, attempts=self._attempts[index])
        self.results[index] = response
        self._remaining -= 1
        if self._on_result is not None:
            self._on_result(index, response)

    def _fail_everything_left(self) -> None:
        left = self._pending.drain()
        left += [i for chunk, _ in self._forced for i in chunk]
        self._forced.clear()
        for index in left:
            if self.results[index] is not None:
                continue
            last = self._last_error[index]
            reason = f" (last error: {last})" if last is not None else ""
            exc = EndpointUnavailable(f"every endpoint is down{reason}")
            exc.__cause__ = last
            self._fail(index, exc, -1)
