"""What one batched call reads from the servers' ``/metrics``, and when.

Two kinds of reading, both optional (a server without ``/metrics`` is asked once, then never):

* **The past.** Before the first plan of a fresh pool, each server whose slots are known (a pool
  option or hostfile tag) is asked how long its finished sequences ran
  (:attr:`~aurora_swarm._transport.ServerGauges.past_wave`): a fleet with one slow server is
  then split as if its speeds were known, instead of losing a wave to learn them. Concurrent
  calls share these reads (:attr:`EndpointRecord.history`).
* **The load.** While a call's requests wait on a server whose slots are not known, the running
  and waiting gauges tell them (:meth:`~aurora_swarm._server_model.ServerModel.note_reading`).

A reading costs the client about what a request costs, so one call has at most
:data:`SCRAPES_AT_ONCE` load readings in flight: uncapped, a fresh call over 4,000 near-instant
servers read ``/metrics`` 2,120 times (the saturated client had not yet read answers already
sent) and spent a third of its CPU on it. Capped, reading is self-limiting: the busier the
client, the longer each reading takes.
"""

from __future__ import annotations

import logging
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

    def __init__(self, read: GaugeReader, notify: Callable[[], None]) -> None:
        self._read = read
        self._notify = notify
        self._in_flight = 0

    async def read_history(self, records: Sequence[EndpointRecord],
                           group: anyio.abc.TaskGroup) -> None:
        """Read the past wave of every server whose slots are known and whose wave is not
        measured yet, waiting at most :data:`HISTORY_WAIT` (a server that answers later still
        informs the call's take-backs and backups)."""
        reads: list[anyio.Event] = []
        for record in records:
            server = record.server
            # A past wave is planned with only where the slots are known (FleetGuess).
            if server.wave is not None or server.metrics is False or not server.knows_slots():
                continue
            if record.history is None:
                record.history = anyio.Event()
                group.start_soon(self._read_past, record, record.history)
            if not record.history.is_set():
                reads.append(record.history)
        if reads:
            with anyio.move_on_after(HISTORY_WAIT):
                for read in reads:
                    await read.wait()

    def read_loads(self, waiting: Iterable[tuple[EndpointRecord, float]], now: float,
                   group: anyio.abc.TaskGroup) -> None:
        """Read the load gauges of servers whose slots are not known yet, while the call's
        requests wait there (while any wait, the running count is the server's capacity).
        ``waiting`` gives each server the call has requests on, with when its oldest was sent."""
        for record, oldest_sent in waiting:
            if self._in_flight >= SCRAPES_AT_ONCE:
                return
            server = record.server
            if (record.scraping or server.metrics is False or server.knows_slots()
                    or now - server.scraped_at < SCRAPE_EVERY
                    or now - oldest_sent < SCRAPE_AFTER):
                continue
            holding = server.outstanding()
            if holding <= server.unqueued_hold:
                continue
            record.scraping = True
            self._in_flight += 1
            server.scraped_at = now
            group.start_soon(self._read_load, record, holding)

    async def _read_past(self, record: EndpointRecord, done: anyio.Event) -> None:
        server = record.server
        try:
            gauges = await self._read(record.endpoint)
        except BaseException:
            record.history = None  # called off with its call: a later call asks again
            raise
        finally:
            done.set()
        server.metrics = gauges is not None
        if gauges is not None and gauges.past_wave is not None:
            server.past_wave = gauges.past_wave
            _log.debug("%s ran a sequence in %.3f s on average before this pool",
                       record.endpoint, gauges.past_wave)
        self._notify()

    async def _read_load(self, record: EndpointRecord, holding: int) -> None:
        """Learn the slots from one reading, taken while the call held ``holding`` prompts."""
        try:
            gauges = await self._read(record.endpoint)
        finally:
            record.scraping = False
            self._in_flight -= 1
        server = record.server
        if gauges is None:
            server.metrics = False
            return
        if server.note_reading(gauges.running, gauges.waiting, holding):
            _log.info("%s runs %d sequences at once (from /metrics)", record.endpoint,
                      gauges.running)
        if server.knows_slots():
            self._notify()
