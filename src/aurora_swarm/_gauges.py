"""What one batched call reads from the servers' ``/metrics``, and when.

Two kinds of reading, both optional (a server without ``/metrics`` is asked once, then never):

* **The past.** Before the first plan of a fresh pool, each server is asked how long its
  finished sequences ran (:attr:`~aurora_swarm._transport.ServerGauges.past_wave`) and how many
  it ran at once (:attr:`~aurora_swarm._transport.ServerGauges.past_running`): a fleet with one
  slow server is then split as if its speeds were known, instead of losing a wave to learn
  them (:class:`~aurora_swarm._server_model.FleetGuess`). The first plan waits
  :data:`HISTORY_WAIT` at most, and no new read starts after that: over thousands of servers,
  a read each would cost the client seconds. Concurrent calls share these reads
  (:attr:`EndpointRecord.history`); a server not read yet is asked by the next call.
* **The load.** While a call's requests wait on a server whose slots are not known, the running
  and waiting gauges tell them (:meth:`~aurora_swarm._server_model.ServerModel.note_reading`).
* **The progress.** A server that had served nothing when first read has no past to tell its
  speed; until its first answer, its engine's step count tells how fast it runs this pool's
  work (:meth:`~aurora_swarm._server_model.ServerModel.note_progress`).

A reading costs the client about what a request costs, so one call has at most
:data:`SCRAPES_AT_ONCE` load readings in flight: uncapped, a fresh call over 4,000 near-instant
servers read ``/metrics`` 2,120 times (the saturated client had not yet read answers already
sent) and spent a third of its CPU on it. Capped, reading is self-limiting: the busier the
client, the longer each reading takes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import anyio
import anyio.abc

from ._endpoint import Endpoint
from ._record import EndpointRecord
from ._transport import ServerGauges

__all__ = ["SCRAPES_AT_ONCE", "GaugeReader", "GaugeReads"]

_log = logging.getLogger("aurora_swarm.dispatch")

GaugeReader = Callable[[Endpoint], Awaitable["ServerGauges | None"]]

SCRAPES_AT_ONCE = 8
"""Load readings one call has in flight, at most (see the module docstring)."""
SCRAPE_AFTER = 0.05  # seconds a request must have waited before its server's gauges are read
SCRAPE_EVERY = 0.1  # seconds between gauge reads of one server, at the least
HISTORY_WAIT = 0.05  # seconds a fresh pool's first plan waits for the servers' past waves


class GaugeReads:
    """The ``/metrics`` readings of one call; ``notify`` wakes its decider when one tells
    something new."""

    def __init__(self, read: GaugeReader, notify: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._notify = notify
        self._clock = clock
        self._in_flight = 0

    async def read_history(self, records: Sequence[EndpointRecord],
                           group: anyio.abc.TaskGroup) -> None:
        """Read the past of every server whose wave is not measured yet, at most
        :data:`SCRAPES_AT_ONCE` at a time, waiting at most :data:`HISTORY_WAIT` (a server that
        answers later still informs the call's take-backs and backups)."""
        reads: list[anyio.Event] = []
        todo: list[EndpointRecord] = []
        for record in records:
            server = record.server
            if server.wave is not None or server.metrics is False:
                continue
            if record.history is None:
                record.history = anyio.Event()
                todo.append(record)
            if not record.history.is_set():
                reads.append(record.history)
        if not reads:
            return
        if todo:
            group.start_soon(self._read_pasts, todo, anyio.current_time() + HISTORY_WAIT)
        with anyio.move_on_after(HISTORY_WAIT):
            for read in reads:
                await read.wait()

    async def _read_pasts(self, todo: list[EndpointRecord], deadline: float) -> None:
        """Read the servers of ``todo`` in turn, a few at a time, starting none after
        ``deadline``: those left are for a later call to read."""
        slots = anyio.Semaphore(SCRAPES_AT_ONCE)
        started = 0
        try:
            async with anyio.create_task_group() as group:
                for record in todo:
                    await slots.acquire()
                    if anyio.current_time() >= deadline:
                        slots.release()
                        return
                    assert record.history is not None
                    group.start_soon(self._read_past, record, record.history, slots)
                    started += 1
        finally:
            for left in todo[started:]:  # not read (too late, or the call ended)
                event, left.history = left.history, None
                if event is not None:
                    event.set()

    def read_loads(self, waiting: Iterable[tuple[EndpointRecord, float]], now: float,
                   group: anyio.abc.TaskGroup, progress: bool = True) -> None:
        """Read the gauges of servers whose slots are not known yet, while the call's
        requests wait there (while any wait, the running count is the server's capacity), and,
        with ``progress``, of servers new to work until their first answer (their progress).
        ``waiting`` gives each server the call has requests on, with when its oldest was sent."""
        for record, oldest_sent in waiting:
            if self._in_flight >= SCRAPES_AT_ONCE:
                return
            server = record.server
            if (record.scraping or server.metrics is False
                    or now - server.scraped_at < SCRAPE_EVERY
                    or now - oldest_sent < SCRAPE_AFTER):
                continue
            wants_progress = progress and server.new_engine
            if server.knows_slots() and not wants_progress:
                continue
            holding = server.outstanding()
            if holding <= server.unqueued_hold and not wants_progress:
                continue
            record.scraping = True
            self._in_flight += 1
            server.scraped_at = now
            group.start_soon(self._read_load, record, holding, now)

    async def _read_past(self, record: EndpointRecord, done: anyio.Event,
                         slots: anyio.Semaphore) -> None:
        server = record.server
        try:
            gauges = await self._read(record.endpoint)
        except BaseException:
            record.history = None  # called off with its call: a later call asks again
            raise
        finally:
            slots.release()
            done.set()
        server.metrics = gauges is not None
        if gauges is not None and gauges.counts_steps and not (gauges.steps or gauges.runs):
            server.new_engine = True  # served nothing yet: its steps will be this pool's
        if gauges is not None and gauges.past_wave is not None:
            # How long the past sequences queued tells the slots only where a step's generated
            # tokens count its sequences (ServerModel.note_past).
            server.note_past(gauges.past_wave, gauges.past_running,
                             gauges.past_queue if gauges.decoding else None)
            _log.debug("%s ran a sequence in %.3f s on average before this pool, %s at once, "
                       "after %s s in the queue", record.endpoint, gauges.past_wave,
                       gauges.past_running, gauges.past_queue)
        self._notify()

    async def _read_load(self, record: EndpointRecord, holding: int, asked: float) -> None:
        """Learn the slots, and a new server's progress, from one reading asked for at
        ``asked`` while the call held ``holding`` prompts."""
        try:
            gauges = await self._read(record.endpoint)
        finally:
            record.scraping = False
            self._in_flight -= 1
        server = record.server
        if gauges is None:
            server.metrics = False
            return
        if server.new_engine:
            server.note_progress(gauges.tokens, gauges.steps, gauges.running, asked,
                                 self._clock())
            self._notify()
        if server.knows_slots():
            return
        if server.note_reading(gauges.running, gauges.waiting, holding):
            _log.info("%s runs %d sequences at once (from /metrics)", record.endpoint,
                      gauges.running)
        if server.knows_slots():
            self._notify()
