"""A job's view of its fleet: a fleet that is all down is a pause; endpoints benched are named.

When every endpoint of a call is down, the pool fails what is left at once with
:class:`~aurora_swarm.EndpointUnavailable` (see :mod:`._health`). A batch job does not write
those prompts as failures: it holds them back, probes the fleet's ``/health`` until an
endpoint answers, and sends them again. If none answers within ``fleet_wait`` seconds the job
ends with :class:`FleetDownError`, the unsent prompts not written at all, so a rerun sends them.
A call still waiting once every endpoint has been down for a few seconds (on a request a
vanished server never answers) is called off by the job, its unsettled prompts held likewise.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from ._endpoint import Endpoint
from ._exceptions import EndpointUnavailable, RequestError
from ._pool import VLLMPool

if TYPE_CHECKING:
    from ._jobs import JobSummary

__all__ = ["BenchWatch", "FleetDownError", "FleetGate", "is_fleet_failure", "probe"]

_PROBE_INTERVAL = 1.0  # seconds between rounds of probes while paused
_PROBE_CONCURRENCY = 256


class FleetDownError(EndpointUnavailable):
    """Every endpoint stayed down for longer than ``fleet_wait``: the job stopped sending.

    Raised by :func:`~aurora_swarm.jobs.run_job`. Every result settled before is in the results
    file; the prompts left unsent are not written at all, so running the same job again (when
    the fleet is back) sends exactly them.

    .. versionadded:: 0.1.0

    Attributes
    ----------
    sent:
        Items this run settled (answered or failed) and wrote.
    unsent:
        Items left unsent.
    waited:
        Seconds the job waited for the fleet before giving up.
    summary:
        The :class:`~aurora_swarm.jobs.JobSummary` of the run up to here.
    """

    def __init__(self, sent: int, unsent: int, waited: float, summary: JobSummary) -> None:
        self.sent = sent
        self.unsent = unsent
        self.waited = waited
        self.summary = summary
        super().__init__(
            f"every endpoint of the fleet has been down for {waited:.0f} s: {sent} sent, "
            f"{unsent} left unsent; rerun the same command to continue")


class FleetGate:
    """Holds a job's senders while the whole fleet is down; lets them go when it is back.

    Parameters
    ----------
    pool:
        The job's pool.
    wait:
        Seconds a pause may last before the job gives up.
    """

    def __init__(self, pool: VLLMPool, wait: float) -> None:
        self._pool = pool
        self._wait = wait
        self._round: anyio.Event | None = None
        self._up = True
        self.paused_since: float | None = None
        self.gave_up = False
        self.waited = 0.0
        self.pauses = 0
        self.paused_seconds = 0.0

    @property
    def enabled(self) -> bool:
        """Whether a down fleet pauses the job (``fleet_wait > 0``)."""
        return self._wait > 0

    async def fleet_is_back(self) -> bool:
        """Probe the fleet; while no endpoint answers, pause (probing again every second).

        Returns ``True`` when some endpoint answers (and the pool may use it again at once),
        ``False`` once a pause has lasted ``wait`` seconds (and every later call too).
        """
        while self._round is not None:  # another sender is probing: share its verdict
            await self._round.wait()
            if self._up or self.gave_up:
                return not self.gave_up
        if self.gave_up:
            return False
        self._round = anyio.Event()
        try:
            self._up = await self._probe_and_wait()
        finally:
            self._round.set()
            self._round = None
        return self._up

    async def _probe_and_wait(self) -> bool:
        start = time.monotonic()
        while True:
            if await self._revive():
                return True
            now = time.monotonic()
            if self.paused_since is None:
                self.paused_since = now
                self.pauses += 1
            if now - start >= self._wait:
                self.gave_up = True
                self.waited = now - start
                self._end_pause()
                return False
            await anyio.sleep(min(_PROBE_INTERVAL, self._wait - (now - start)))

    async def _revive(self) -> bool:
        """Probe every endpoint; mark those that answer healthy in the pool. Any answered?"""
        healthy = await probe(self._pool)
        if not healthy:
            return False
        records = self._pool._core.records
        policy = self._pool._core.settings.health
        for endpoint in healthy:
            records[endpoint].health.revived(policy)
        self._end_pause()
        return True

    def _end_pause(self) -> None:
        if self.paused_since is not None:
            self.paused_seconds += time.monotonic() - self.paused_since
            self.paused_since = None


async def probe(pool: VLLMPool) -> list[Endpoint]:
    """The endpoints of ``pool`` whose ``/health`` answers now, in pool order."""
    endpoints = pool.endpoints
    ok = [False] * len(endpoints)
    limiter = anyio.CapacityLimiter(_PROBE_CONCURRENCY)

    async def one(k: int) -> None:
        async with limiter:
            ok[k] = await pool._probe(endpoints[k])

    async with anyio.create_task_group() as group:
        for k in range(len(endpoints)):
            group.start_soon(one, k)
    return [e for e, good in zip(endpoints, ok, strict=True) if good]


def is_fleet_failure(exc: BaseException | None) -> bool:
    """Whether a failed prompt may be the fleet's fault rather than its own: no endpoint was
    left (:class:`~aurora_swarm.EndpointUnavailable`), or a failure that can succeed on retry
    (connection, timeout, 5xx)."""
    return isinstance(exc, EndpointUnavailable) or (
        isinstance(exc, RequestError) and exc.retryable)


class BenchWatch:
    """Which endpoints of a pool were benched while a job ran, with their last error.

    The job calls :meth:`look` a few times a second (a bench lasts at least the health
    policy's cooldown, seconds by default).
    """

    def __init__(self, pool: VLLMPool) -> None:
        self._pool = pool
        self.benched: dict[Endpoint, str] = {}

    def look(self) -> bool:
        """Note every endpoint benched now; return whether every endpoint is down."""
        records = self._pool._core.records
        all_down = True
        for endpoint in self._pool.endpoints:
            health = records[endpoint].health
            if health.benched:
                error = health.last_error
                self.benched[endpoint] = (error.cause if error is not None else "benched")
            all_down = all_down and health.benched and health.down
        return all_down
