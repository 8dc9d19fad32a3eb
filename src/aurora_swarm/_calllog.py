"""One log line per pool call: what it cost in requests, retries and failures.

Logged under ``aurora_swarm.pool``: INFO when something was retried or failed, DEBUG otherwise,
so a healthy notebook stays quiet at INFO and a retry storm shows up once per call, never once
per prompt. Requests and retries are counted on the call's endpoints while it ran, so calls
running at the same time on the same endpoints (a job's windows) count each other's too.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence

from ._record import EndpointRecord
from ._response import Response

__all__ = ["CallLog"]

_log = logging.getLogger("aurora_swarm.pool")


def _totals(records: Iterable[EndpointRecord]) -> tuple[int, int, Counter[str]]:
    requests = retries = 0
    failures: Counter[str] = Counter()
    for record in records:
        counters = record.counters
        requests += counters.requests
        retries += counters.retries
        failures.update(counters.failures)
    return requests, retries, failures


class CallLog:
    """Counters of a call's endpoints at its start, logged as a difference at its end."""

    def __init__(self, name: str, records: Sequence[EndpointRecord]) -> None:
        self._name = name
        self._records = list(dict.fromkeys(records))
        self._requests, self._retries, self._failures = _totals(self._records)
        self._start = time.monotonic()

    def done(self, responses: Sequence[Response]) -> None:
        """Log the call's summary."""
        if not _log.isEnabledFor(logging.INFO):
            return
        requests, retries, failures = _totals(self._records)
        failures.subtract(self._failures)
        failed_requests = {cause: n for cause, n in failures.items() if n > 0}
        failed = sum(1 for r in responses if not r.success)
        retries -= self._retries
        level = logging.INFO if failed or retries or failed_requests else logging.DEBUG
        causes = ", ".join(f"{cause}: {n}" for cause, n in
                           sorted(failed_requests.items(), key=lambda kv: -kv[1]))
        _log.log(level, "%s: %d prompts over %d endpoints in %.2f s: %d requests, "
                 "%d prompts failed, %d prompts retried%s", self._name, len(responses),
                 len(self._records), time.monotonic() - self._start,
                 requests - self._requests, failed, retries,
                 f"; failed requests by cause: {causes}" if causes else "")
