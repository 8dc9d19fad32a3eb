"""Endpoint health: rest after a failure, bench after repeated failures, probe before return.

Each endpoint moves between three states:

.. code-block:: text

    healthy ──(threshold failures in a row)──> benched ──(probe ok after cooldown)──> healthy
                                                            │  ^
                                            (probe fails)   v  │ (cooldown over, probe again)
                                                           down

A single failure only *rests* the endpoint for the retry policy's backoff (or the server's
``Retry-After``). A failure no retry can cure (HTTP 400, 401, 404, 422, ...: the server answered,
and refused the request) neither rests nor benches it: its prompts fail at once anyway, and
resting a working server only kept the other prompts waiting (a server that refuses every
request once took minutes to fail a few dozen prompts). A benched endpoint gets no work until
its cooldown ends and a ``/health`` probe succeeds (``/v1/models`` on a server without
``/health``). An endpoint whose probe failed is *down*; when every endpoint of a call is down,
the call ends at once with a per-prompt :class:`~aurora_swarm.EndpointUnavailable` instead of
retrying forever. State lives in the pool, so later calls and sub-pools see it too.

Each change is logged under ``aurora_swarm.health`` (named by the endpoint, never its key):
a bench is a WARNING, the first failed probe of a bench and the return to work are INFO, later
failed probes and rests after one failure are DEBUG.
"""

from __future__ import annotations

import logging
import time

import attrs

from ._config import PROBES, HealthPolicy, RetryPolicy
from ._exceptions import RequestError

__all__ = ["PROBES", "HealthPolicy"]


_log = logging.getLogger("aurora_swarm.health")


@attrs.define
class Health:
    """The live health of one endpoint (internal)."""

    consecutive_failures: int = 0
    resting_until: float = 0.0
    benched: bool = False
    benched_until: float = 0.0
    probe_at: float = 0.0
    down: bool = False
    benches: int = 0
    last_error: RequestError | None = None
    name: str = "endpoint"  # how log lines name the endpoint (its host:port)
    benched_at: float = 0.0

    def record_success(self) -> None:
        """Record an answered request: the failure streak and the bench count start over."""
        self.consecutive_failures = 0
        self.benches = 0
        self.down = False

    def record_failure(
        self, exc: RequestError, health: HealthPolicy, retry: RetryPolicy,
        now: float | None = None,
    ) -> None:
        """Record a failed request: rest for the retry policy's backoff (or the server's
        ``Retry-After``), and bench after ``failure_threshold`` failures in a row.
        ``now`` is the ``time.monotonic()`` reading to use (default: the current one)."""
        now = time.monotonic() if now is None else now
        self.last_error = exc
        if not exc.retryable:
            return  # the server is up and answering: the request was at fault, not the server
        self.consecutive_failures += 1
        self.resting_until = max(self.resting_until,
                                 now + retry.backoff(self.consecutive_failures, exc))
        if not self.benched and self.consecutive_failures >= health.failure_threshold:
            self.benched_at = now
            self._bench(health, now, probe_now=True)
            _log.warning("%s benched after %d failed requests in a row (last: %s); probing "
                         "/health", self.name, self.consecutive_failures, exc.cause)
        else:
            _log.debug("%s failed (%s); resting %.2f s", self.name, exc.cause,
                       self.resting_until - now)

    def _bench(self, health: HealthPolicy, now: float, *, probe_now: bool) -> None:
        self.benched = True
        self.benches += 1
        cooldown = min(health.max_cooldown, health.cooldown * 2 ** (self.benches - 1))
        self.benched_until = now + cooldown
        # A fresh bench is probed at once, so a dead endpoint is known to be down quickly.
        self.probe_at = now if probe_now else self.benched_until

    def probe_result(self, ok: bool, health: HealthPolicy, now: float | None = None) -> None:
        """Record a ``/health`` probe of a benched endpoint (``now`` as in
        :meth:`record_failure`)."""
        now = time.monotonic() if now is None else now
        if not ok:
            first = not self.down
            self.down = True
            self._bench(health, now, probe_now=False)
            _log.log(logging.INFO if first else logging.DEBUG,
                     "%s is down: /health probe failed; next probe in %.1f s", self.name,
                     self.benched_until - now)
        elif now >= self.benched_until:
            # Half-open: back to work, but one more failure benches it again.
            self.benched = False
            self.down = False
            self.consecutive_failures = health.failure_threshold - 1
            _log.info("%s is back: /health probe ok after %.1f s benched", self.name,
                      now - self.benched_at)
        else:
            self.down = False
            self.probe_at = self.benched_until
            _log.debug("%s answers /health; back to work in %.1f s", self.name,
                       self.benched_until - now)

    def revived(self, health: HealthPolicy) -> None:
        """Record a ``/health`` probe made outside a call (a paused job) that found it healthy:
        back to work at once, half-open (one more failure benches it again)."""
        self.benched = False
        self.down = False
        self.resting_until = 0.0
        self.consecutive_failures = min(self.consecutive_failures, health.failure_threshold - 1)

    def available(self, now: float) -> bool:
        """Whether the endpoint may take work at ``now`` (neither resting nor benched)."""
        return not self.benched and self.wait_time(now) == 0

    def wait_time(self, now: float) -> float:
        """Seconds until this endpoint may take work or must be probed (0 = now)."""
        until = max(self.resting_until, self.probe_at) if self.benched else self.resting_until
        return max(0.0, until - now)
