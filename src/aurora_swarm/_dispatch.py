"""Batched dispatch: every prompt over every endpoint, few requests, nothing lost.

A :class:`BatchJob` owns one call of ``send_all_batched``. Each endpoint runs
``Chunking.max_in_flight`` workers; a worker that has room pulls the next chunk (sized by
:mod:`aurora_swarm._schedule`), sends it as ONE request, and writes each answer straight into
its prompt's input slot. Whatever fails goes back to the front of the queue for any endpoint to
take, while the failing endpoint rests (:mod:`aurora_swarm._health`):

* a retryable failure of the whole request (timeout, connection, 408/409/429/5xx, bad answer)
  returns all its prompts; each prompt may be carried by at most ``RetryPolicy.max_attempts``
  requests;
* a choice missing from an otherwise good answer returns only that prompt;
* a non-retryable status (400, 413, 422, ...) on a chunk of several prompts splits the chunk in
  halves, so one bad prompt fails alone and its neighbours are still answered;
* when every endpoint of the call is down, what is left fails at once with
  :class:`~aurora_swarm.EndpointUnavailable`.

A prompt's slot is written once: the first answer wins, so no prompt is answered twice.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

import anyio
import attrs

from ._endpoint import Endpoint
from ._exceptions import (
    BadResponseError,
    EndpointUnavailable,
    HTTPStatusError,
    RequestError,
)
from ._health import Health, HealthPolicy
from ._response import Response
from ._retry import RetryPolicy
from ._schedule import Chunking, Load, admit, lead_time, water_level
from ._stats import Counters
from ._transport import BatchReply

__all__ = ["BatchJob", "EndpointRecord", "Timeouts"]

P = TypeVar("P")
K = TypeVar("K", bound=Hashable)
Sender = Callable[[Endpoint, list[P], K, float | None], Awaitable[BatchReply]]
Prober = Callable[[Endpoint], Awaitable[bool]]
ResultHook = Callable[[int, Response], None]


@attrs.define(eq=False)
class EndpointRecord:
    """Everything the pool tracks about one endpoint, shared by every call and sub-pool."""

    endpoint: Endpoint
    health: Health = attrs.field(factory=Health)
    load: Load = attrs.field(factory=Load)
    counters: Counters = attrs.field(factory=Counters)
    probing: bool = False


@attrs.frozen
class Timeouts:
    """Request time limits, in seconds.

    A batched request of ``n`` prompts may take ``request + n * per_prompt`` seconds.

    Attributes
    ----------
    connect:
        Time to open a connection.
    request:
        Time for a request of one prompt (``None``: no limit).
    per_prompt:
        Extra time per prompt of a batched request.
    """

    connect: float = 10.0
    request: float | None = 600.0
    per_prompt: float = 0.5

    def for_chunk(self, prompts: int) -> float | None:
        """The time limit of a request carrying ``prompts`` prompts."""
        return None if self.request is None else self.request + prompts * self.per_prompt


@attrs.frozen
class DispatchSettings:
    """The policies one batched call runs under."""

    chunking: Chunking
    retry: RetryPolicy
    health: HealthPolicy
    timeouts: Timeouts


_SPLIT_STATUSES = frozenset({400, 413, 422})
_INF = float("inf")
_MIN_BACKUP_SAVING = 0.01  # seconds a backup request must save to be worth sending
_STRAGGLER_TICK = 0.02  # seconds between looks for a straggler worth backing up
_BUSY_LAG = 0.005  # seconds late the straggler watch wakes up, on average, when the client is busy
_BUSY_CPU = 0.9  # share of wall time the process computes, on average, when the client is busy


def _worth_backing_up(finish: float, backup_finish: float, now: float) -> bool:
    """Whether a backup answered at ``backup_finish`` beats a request due at ``finish`` by
    enough to be worth a second request: a quarter of the wait, and at least
    ``_MIN_BACKUP_SAVING``."""
    return finish - backup_finish >= max(0.25 * (finish - now), _MIN_BACKUP_SAVING)


@attrs.define(eq=False)
class _Flight:
    """One request in flight: which endpoint, which prompts, and how to call it off."""

    position: int
    shape: Hashable
    chunk: list[int]
    started: float
    ahead: int  # prompts in flight on the endpoint before this request: it waits behind them
    scope: anyio.CancelScope
    backup: bool = False
    backed_up: bool = False


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
    ) -> None:
        self._records = records
        self._payloads = payloads
        self._shapes = shapes
        self._send = send
        self._probe = probe
        self._settings = settings
        self._limiter = limiter
        self._on_result = on_result
        self._split_refused = split_refused
        self._backups = backups and settings.chunking.adapt_to_speed and len(records) > 1
        count = len(payloads)
        self.results: list[Response | None] = [None] * count
        self._attempts = [0] * count
        self._carriers = [0] * count  # requests in flight that carry the prompt
        self._last_error: list[RequestError | None] = [None] * count
        # Work waits in queues keyed by (request shape, home endpoint). Without prefix affinity
        # every prompt's home is None: one queue per shape, shared by all endpoints.
        self._homes = homes
        self._pending: dict[tuple[K, int | None], deque[int]] = {}
        if homes is None:
            for index, shape in enumerate(shapes):
                self._pending.setdefault((shape, None), deque()).append(index)
        else:
            # A home's queue keeps each prefix group together: chunks carry whole groups, and
            # an idle endpoint stealing from the tail takes whole groups too.
            group = groups if groups is not None else homes
            for index in sorted(range(count), key=lambda i: (homes[i], group[i])):
                self._pending.setdefault((shapes[index], homes[index]), deque()).append(index)
        self._pending_count = count
        self._forced: deque[list[int]] = deque()
        self._due: deque[_Flight] = deque()  # stragglers waiting for a backup (see _take_due)
        self._remaining = count
        self._total = count
        self._flights: set[_Flight] = set()
        self._doubled: set[_Flight] = set()  # flights in flight twice: backups and originals
        self._slices: dict[_Flight, int] = {}  # straggler -> prompts per backup (_offer_slices)
        self._client_busy = False  # see _watch_stragglers
        # Workers with nothing to do wait here (event -> endpoint position), to be woken one
        # by one as work comes back; waking them all on every change costs O(endpoints) each.
        self._idle: dict[anyio.Event, int] = {}
        self._done = anyio.Event()
        self._floor = settings.chunking.floor(count, len(records))
        self._fleet_rate = 0.0
        self._mean_rate = 0.0  # of the usable endpoints whose speed is known
        self._fleet_floor = 0.0
        self._fleet_rate_at = -1.0
        self._level = _INF  # when the fleet would finish everything (see _fleet_rate_now)
        self.trace: list[tuple[int, float, float, int, str]] | None = None

    # -- public ---------------------------------------------------------------------------------

    async def run(self) -> list[Response]:
        """Dispatch every prompt; return one :class:`Response` per prompt, in input order."""
        if self._remaining:
            async with anyio.create_task_group() as group:
                # Every endpoint's first worker starts before any second one, so a small call
                # spreads over all endpoints instead of filling the first ones twice.
                for _ in range(self._settings.chunking.max_in_flight):
                    for position in range(len(self._records)):
                        group.start_soon(self._worker, position)
                if self._backups:
                    group.start_soon(self._watch_stragglers)
        return [r for r in self.results if r is not None]

    # -- workers --------------------------------------------------------------------------------

    async def _worker(self, position: int) -> None:
        record = self._records[position]
        health = record.health
        while self._remaining:
            now = time.monotonic()
            wait = health.wait_time(now)
            if wait > 0:
                if self._all_down():
                    self._fail_everything_left()
                    return
                await self._idle_wait(position, wait)
                continue
            if health.benched:
                await self._probe_once(position, record)
                continue
            work = self._take(position, now)
            if work is None:
                # Woken when work comes back or a straggler is worth backing up; the timeout
                # is only a safety net.
                await self._idle_wait(position, 1.0)
                continue
            await self._run_chunk(position, *work)

    async def _probe_once(self, position: int, record: EndpointRecord) -> None:
        if record.probing:
            await self._idle_wait(position, record.health.wait_time(time.monotonic()) or 0.05)
            return
        record.probing = True
        try:
            ok = await self._probe(record.endpoint)
        finally:
            record.probing = False
        record.health.probe_result(ok, self._settings.health)

    async def _idle_wait(self, position: int, timeout: float) -> None:
        event = anyio.Event()
        self._idle[event] = position
        try:
            with anyio.move_on_after(timeout):
                await event.wait()
        finally:
            self._idle.pop(event, None)

    def _wake(self, count: int) -> None:
        """Wake up to ``count`` idle workers whose endpoints may take work now."""
        now = time.monotonic()
        for event, position in list(self._idle.items()):
            if count <= 0:
                break
            if self._records[position].health.wait_time(now) == 0:
                del self._idle[event]
                event.set()
                count -= 1

    def _wake_all(self) -> None:
        for event in self._idle:
            event.set()
        self._idle.clear()
        if not self._remaining:
            self._done.set()

    async def _watch_stragglers(self) -> None:
        """Now and then, look for a request that holds up the call and have it backed up.

        While work is still queued, a request that should be answered well after the fleet could
        drain everything (an endpoint far slower than it looked, or stuck) goes to the front of
        the queue as a backup, so its prompts are redone inside the balanced schedule instead
        of forming a tail. With nothing left to hand out, idle endpoints, soonest first, are
        offered slices of the latest stragglers (see :meth:`_backup_candidate`).
        """
        lag = load = 0.0
        first = True
        while self._remaining:
            tick, cpu = time.monotonic(), time.process_time()
            with anyio.move_on_after(_STRAGGLER_TICK):
                await self._done.wait()
            now = time.monotonic()
            # A client that cannot keep up reads answers late, so every request looks slow,
            # and a backup would only add to its load: then nothing is backed up. Two signs:
            # this loop wakes up late, or the process spends nearly all its time computing.
            late = max(0.0, now - tick - _STRAGGLER_TICK)
            computing = (time.process_time() - cpu) / max(now - tick, 1e-6)
            # Averaged over the last few looks; the first one counts in full.
            lag = late if first else 0.7 * lag + 0.3 * late
            load = computing if first else 0.7 * load + 0.3 * computing
            first = False
            self._client_busy = lag > _BUSY_LAG or load > _BUSY_CPU
            if self._forced or not self._flights or self._client_busy:
                continue
            if self._pending_count:
                if not self._due:
                    self._find_straggler(now)
                continue
            self._offer_slices(now)

    def _offer_slices(self, now: float) -> None:
        """Share the stragglers' prompts among the idle endpoints, and wake those.

        Stragglers are requests, latest first, that the soonest-finishing idle endpoint would
        clearly beat with its slice; every idle endpoint gets an equal slice of the prompts
        they hold that no backup carries yet. A large chunk on a slow endpoint is so redone by
        several endpoints at once, each a short request, instead of moving whole to one.
        """
        if not self._idle:
            return
        wake: dict[int, anyio.Event] = {}  # one worker per idle endpoint that could help
        for event, position in self._idle.items():
            wake.setdefault(position, event)
        ready = {p: self._expected_finish(p, 1, now) for p in wake}  # one prompt done by
        best = min(ready, key=ready.__getitem__)
        best_load = self._records[best].load
        # An idle endpoint far slower than the best would not beat a straggler: not counted.
        wake = {p: e for p, e in wake.items() if ready[p] - now <= 2 * (ready[best] - now)}
        chosen: list[tuple[_Flight, int]] = []
        total = 0
        candidates = []
        for f in self._flights:
            finish = self._straggler_finish(f, now, best_load)
            if finish is not None:
                candidates.append((finish, f))
        for finish, flight in sorted(candidates, key=lambda item: -item[0]):
            uncovered = len(self._uncovered(flight))
            if not uncovered:
                continue
            helpers = len(wake) - (flight.position in wake)
            if helpers < 1:
                continue
            piece = math.ceil((total + uncovered) / helpers)
            mine = self._expected_finish(best, min(piece, uncovered), now)
            if not _worth_backing_up(finish, mine, now):
                break  # this one and every later one would not gain enough
            chosen.append((flight, uncovered))
            total += uncovered
        if not chosen:
            return
        piece = math.ceil(total / len(wake))
        for flight, _ in chosen:
            self._slices[flight] = piece
        for event in list(wake.values())[: math.ceil(total / piece)]:
            del self._idle[event]
            event.set()

    def _find_straggler(self, now: float) -> None:
        """Queue a backup of the request that would be answered latest, if it would be answered
        clearly after the fleet could drain all the work (queued and in flight)."""
        self._fleet_rate_now(now)
        drain = self._level
        if drain == _INF:
            return
        worst: _Flight | None = None
        worst_finish = drain
        for flight in self._flights:
            finish = self._straggler_finish(flight, now, None)
            if finish is not None and finish > worst_finish:
                worst, worst_finish = flight, finish
        if worst is not None and _worth_backing_up(worst_finish, drain, now):
            self._due.append(worst)
            self._wake(1)

    # -- taking work ----------------------------------------------------------------------------

    def _take(self, position: int, now: float) -> tuple[K, list[int], _Flight | None] | None:
        if self._forced:
            chunk = self._forced.popleft()
            return self._shapes[chunk[0]], chunk, None
        if self._due:
            due = self._take_due(position, now)
            if due is not None:
                return due
        if not self._pending_count:
            if not self._backups or self._client_busy:
                return None
            return self._backup_for(position, now)
        chunking = self._settings.chunking
        load = self._records[position].load
        rate = load.rate() if chunking.adapt_to_speed else None
        key, queue = self._queue_for(position)
        fleet_rate = self._fleet_rate_now(now) if rate is not None else 0.0
        weight = rate / fleet_rate if rate is not None and fleet_rate > 0 else None
        size = chunking.size(total=self._total, endpoints=len(self._records),
                             pending=self._pending_count, weight=weight)
        if chunking.adapt_to_speed and chunking.chunk_size is None:
            admitted = admit(size, load, rate, self._level, now, self._lead(rate),
                             least=max(1, self._floor // 4))
            if admitted == 0:
                size = min(size, self._pending_count)
                if not self._fastest_for(position, size, now):
                    return None  # a faster endpoint will take it
            else:
                size = admitted
        take = queue.popleft if key[1] in (None, position) else queue.pop  # steal from the tail
        chunk = [take() for _ in range(min(size, len(queue)))]
        self._pending_count -= len(chunk)
        if not queue:
            del self._pending[key]
        return key[0], chunk, None

    def _queue_for(self, position: int) -> tuple[tuple[K, int | None], deque[int]]:
        """This endpoint's own largest queue; with none left, the largest queue of all."""
        best: tuple[tuple[K, int | None], deque[int]] | None = None
        for key, queue in self._pending.items():
            if key[1] in (None, position) and (best is None or len(queue) > len(best[1])):
                best = (key, queue)
        if best is None:
            best = max(self._pending.items(), key=lambda item: len(item[1]))
        return best

    def _fleet_rate_now(self, now: float) -> float:
        """Summed speed of the usable endpoints; one not yet measured counts as the mean.

        Also refreshes ``_level``, when the fleet would finish everything (see
        :func:`~aurora_swarm._schedule.water_level`); taking work does not move it, since the
        work only moves from the queue to an endpoint.
        """
        # Summing over a thousand endpoints on every take would cost more than the take itself.
        # A sum that knows no speed yet is not kept, though: the straggler watch refreshes it
        # before the first answers, and the takes right after those would go without weights.
        if now - self._fleet_rate_at > 0.02 or self._fleet_rate <= 0:
            known = 0.0
            servers: list[tuple[float, float]] = []  # (free at, rate) of measured endpoints
            unmeasured: list[Load] = []
            floor = _INF
            for record in self._records:
                if record.health.benched:
                    continue
                load = record.load
                rate = load.rate()
                if rate is None:
                    unmeasured.append(load)
                    continue
                known += rate
                servers.append((load.free_at(now, rate), rate))
                if load.floor is not None and load.floor < floor:
                    floor = load.floor
            mean = self._mean_rate = known / len(servers) if servers else 0.0
            self._fleet_rate = known + len(unmeasured) * mean
            self._fleet_floor = 0.0 if floor == _INF else floor
            self._fleet_rate_at = now
            self._level = _INF
            if servers:
                # A slow endpoint keeps its lead: the level must not count on work it will
                # refuse, or that work is left over for whoever is idle at the end.
                servers = [(free + self._lead(rate), rate) for free, rate in servers]
                servers += [(load.free_at(now, mean), mean) for load in unmeasured]
                self._level = max(now + self._fleet_floor,
                                  water_level(servers, self._pending_count))
        return self._fleet_rate

    def _fastest_for(self, position: int, size: int, now: float) -> bool:
        """Whether no other usable endpoint would finish ``size`` more prompts sooner."""
        mine = self._expected_finish(position, size, now)
        return all(
            other == position or self._expected_finish(other, size, now) >= mine
            for other in range(len(self._records))
        )

    def _expected_finish(self, position: int, extra: int, now: float) -> float:
        record = self._records[position]
        if record.health.benched:
            return _INF
        rate = record.load.rate()
        if rate is None:
            return _INF
        start = now + record.health.wait_time(now)
        return record.load.finish_time(extra, start, rate) + self._lead(rate)

    def _lead(self, rate: float | None) -> float:
        """The margin an endpoint of ``rate`` keeps before the fleet's finish (lead_time)."""
        if rate is None or self._mean_rate <= 0:
            return 0.0
        return lead_time(self._floor, rate, self._mean_rate)

    def _backup_for(self, position: int, now: float) -> tuple[K, list[int], _Flight] | None:
        """Take the backup :meth:`_backup_candidate` offers this endpoint, if any."""
        found = self._backup_candidate(position, now)
        if found is None:
            return None
        flight, chunk = found
        self._cover(flight, chunk)
        return flight.shape, chunk, flight  # type: ignore[return-value]

    def _take_due(self, position: int, now: float) -> tuple[K, list[int], _Flight] | None:
        """Back up the straggler :meth:`_find_straggler` queued, if this endpoint beats it."""
        flight = self._due[0]
        if flight not in self._flights or flight.backed_up:
            self._due.popleft()  # answered, failed or backed up meanwhile
            return None
        if flight.position == position:
            return None
        chunk = self._slice(flight)
        finish = self._flight_finish(flight, now, self._records[position].load)
        mine = self._expected_finish(position, len(chunk), now)
        if not chunk or not _worth_backing_up(finish, mine, now):
            return None  # another endpoint may do better
        self._cover(flight, chunk)
        if flight.backed_up:
            self._due.popleft()
        return flight.shape, chunk, flight  # type: ignore[return-value]

    def _uncovered(self, flight: _Flight) -> list[int]:
        """The prompts of ``flight`` still unanswered that no backup carries yet."""
        results, carriers = self.results, self._carriers
        return [i for i in flight.chunk if results[i] is None and carriers[i] == 1]

    def _slice(self, flight: _Flight) -> list[int]:
        """The prompts of ``flight`` a backup should carry: the uncovered ones, at most the
        slice :meth:`_offer_slices` planned for it."""
        uncovered = self._uncovered(flight)
        most = self._slices.get(flight)
        return uncovered if most is None else uncovered[:most]

    def _cover(self, flight: _Flight, chunk: list[int]) -> None:
        """Note that a backup now carries ``chunk``; the flight is backed up once all is."""
        taken = set(chunk)
        results, carriers = self.results, self._carriers
        flight.backed_up = all(
            i in taken or results[i] is not None or carriers[i] > 1 for i in flight.chunk
        )

    def _backup_candidate(self, position: int, now: float) -> tuple[_Flight, list[int]] | None:
        """A slice of the planned straggler that would finish latest, if this endpoint beats it.

        With nothing left to hand out, an idle fast endpoint re-sends prompts a slow (or stuck)
        endpoint still holds (:meth:`_slice`); the first answer wins and the loser is called
        off once every prompt it carries is answered. This keeps a straggler from holding the
        whole call. Only stragglers :meth:`_offer_slices` planned are taken, so the first
        endpoint to go idle does not take a whole chunk that several could share.
        """
        worst: _Flight | None = None
        worst_finish = now
        load = self._records[position].load
        for flight in self._slices:
            if flight.position == position:
                continue
            finish = self._straggler_finish(flight, now, load)
            if finish is not None and finish > worst_finish:
                worst, worst_finish = flight, finish
        if worst is None:
            return None
        chunk = self._slice(worst)
        if not chunk:
            worst.backed_up = True  # answered or covered meanwhile
            return None
        if not _worth_backing_up(worst_finish, self._expected_finish(position, len(chunk), now),
                                 now):
            return None  # not worth a second request: the saving would be small
        return worst, chunk

    def _straggler_finish(self, flight: _Flight, now: float, mine: Load | None) -> float | None:
        """When ``flight`` should be answered, if it may be a straggler worth a backup.

        It may be one on an endpoint slower than the fleet's mean, or when it has run more than
        half again as long as it should have (a stuck endpoint, or one far slower than it
        looked).
        A request of an ordinary endpoint, a little late, is none: its estimate is only an
        average, and on a server that runs many sequences at once a backup would take as long
        as the request it copies.
        """
        if flight.backup or flight.backed_up:
            return None
        rate = self._records[flight.position].load.rate()
        if not (rate is not None and self._lead(rate) > 0):
            expected = self._flight_expected(flight, now, None)
            if expected is None or now - flight.started <= 1.5 * (expected - flight.started):
                return None
        return self._flight_finish(flight, now, mine)

    def _flight_expected(self, flight: _Flight, now: float, mine: Load | None) -> float | None:
        """When ``flight`` should be answered by the estimates; an endpoint not yet measured
        counts as average (``None`` while nothing is measured)."""
        load = self._records[flight.position].load
        rate = load.rate()
        if rate is None:
            fleet_rate = self._fleet_rate_now(now)
            if fleet_rate <= 0:
                return None
            rate = fleet_rate / len(self._records)
        size = len(flight.chunk)
        source = load if load.floor is not None or mine is None else mine
        # A server answers its requests about in turn: this one after those ahead of it.
        return flight.started + max(source.shortest(size), (flight.ahead + size) / rate)

    def _flight_finish(self, flight: _Flight, now: float, mine: Load | None) -> float:
        """When ``flight`` should be answered, as expected, or when overdue, having run this
        long, after as long again (the estimate was wrong: a slow or stuck endpoint)."""
        expected = self._flight_expected(flight, now, mine)
        if expected is None or now > expected:
            return now + (now - flight.started)
        return expected

    # -- one request ----------------------------------------------------------------------------

    async def _run_chunk(
        self, position: int, shape: K, chunk: list[int], original: _Flight | None
    ) -> None:
        record = self._records[position]
        counters = record.counters
        size = len(chunk)
        counters.requests += 1
        counters.batch_requests += 1
        counters.prompts += size
        attempts = self._attempts
        carriers = self._carriers
        if original is not None:
            counters.backups += 1
        for index in chunk:
            if attempts[index] and original is None:
                counters.retries += 1
            attempts[index] += 1
            carriers[index] += 1
        started = time.monotonic()
        flight = _Flight(position, shape, chunk, started, record.load.backlog,
                         anyio.CancelScope(), backup=original is not None)
        self._flights.add(flight)
        if original is not None:
            self._doubled.update((flight, original))
        record.load.started(size, started)
        reply: BatchReply | None = None
        error: RequestError | None = None
        try:
            with flight.scope:
                payloads = [self._payloads[i] for i in chunk]
                timeout = self._settings.timeouts.for_chunk(size)
                async with self._limiter:
                    reply = await self._send(record.endpoint, payloads, shape, timeout)
        except RequestError as exc:
            error = exc
        finally:
            self._flights.discard(flight)
            self._doubled.discard(flight)
            self._slices.pop(flight, None)
            for index in chunk:
                carriers[index] -= 1
            if reply is None:
                record.load.finished(size, 0, started, time.monotonic())
        if self.trace is not None:
            kind = ("backup" if original else "chunk") + (
                "" if reply is not None else " failed" if error is not None else " called off")
            self.trace.append((position, started, time.monotonic(), size, kind))
        if error is not None:
            counters.failures[error.cause] += 1
            record.health.record_failure(error, self._settings.health, self._settings.retry)
            self._return(chunk, error, position)
        elif reply is not None:
            self._accept(record, position, chunk, reply, started)
        else:
            # Called off: another request answered every prompt it carried first.
            record.load.outrun(flight.ahead + size, started, time.monotonic())
        if not self._remaining:
            self._wake_all()
        elif self._forced or self._pending_count:
            # Work came back (or waits while slow endpoints hold back): wake enough idle
            # endpoints to take it.
            self._wake(len(self._forced) + max(1, self._pending_count // self._floor))

    def _accept(
        self, record: EndpointRecord, position: int, chunk: list[int], reply: BatchReply,
        started: float,
    ) -> None:
        counters = record.counters
        latency = reply.latency
        counters.latencies.append(latency)
        if reply.usage is not None:
            counters.prompt_tokens += reply.usage.prompt_tokens
            counters.completion_tokens += reply.usage.completion_tokens
        results = self.results
        attempts = self._attempts
        endpoint = record.endpoint
        hook = self._on_result
        answered = 0
        missing: list[int] = []
        first_error: BadResponseError | None = None
        for index, choice in zip(chunk, reply.choices, strict=True):
            if isinstance(choice, BadResponseError):
                missing.append(index)
                self._last_error[index] = choice
                first_error = first_error or choice
                continue
            if results[index] is not None:
                continue  # answered already by a backup (first answer wins)
            response = Response(
                success=True, text=choice.text, agent_index=position,
                finish_reason=choice.finish_reason, latency=latency,
                attempts=attempts[index], endpoint=endpoint,
            )
            results[index] = response
            answered += 1
            if hook is not None:
                hook(index, response)
        record.load.finished(len(chunk), answered, started, time.monotonic())
        counters.answered += answered
        self._remaining -= answered
        if answered:
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
        for index in missing:
            self._return_one(index, self._last_error[index] or first_error, position)

    def _call_off_answered(self) -> None:
        """Cancel requests whose every prompt has been answered by another request."""
        results = self.results
        for flight in self._doubled:
            if all(results[i] is not None for i in flight.chunk):
                flight.scope.cancel()

    # -- failures -------------------------------------------------------------------------------

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
                    self._forced.append(part)
        else:
            for index in chunk:
                self._return_one(index, exc, position)

    def _return_one(self, index: int, exc: RequestError, position: int) -> None:
        self._last_error[index] = exc
        if self.results[index] is not None or self._carriers[index]:
            return  # answered, or another request still carries it
        if exc.retryable and self._attempts[index] < self._settings.retry.max_attempts:
            home = None if self._homes is None else self._homes[index]
            self._pending.setdefault((self._shapes[index], home), deque()).appendleft(index)
            self._pending_count += 1
            return
        self._fail(index, exc, position)

    def _fail(self, index: int, exc: RequestError, position: int) -> None:
        response = Response.failure(exc, agent_index=position, attempts=self._attempts[index])
        self.results[index] = response
        self._remaining -= 1
        if self._on_result is not None:
            self._on_result(index, response)

    def _all_down(self) -> bool:
        return not self._flights and all(
            r.health.benched and r.health.down for r in self._records
        )

    def _fail_everything_left(self) -> None:
        left = [i for queue in self._pending.values() for i in queue]
        left += [i for chunk in self._forced for i in chunk]
        self._pending.clear()
        self._forced.clear()
        self._pending_count = 0
        for index in left:
            if self.results[index] is not None:
                continue
            last = self._last_error[index]
            reason = f" (last error: {last})" if last is not None else ""
            exc = EndpointUnavailable(f"every endpoint is down{reason}")
            exc.__cause__ = last
            self._fail(index, exc, -1)
        self._wake_all()
