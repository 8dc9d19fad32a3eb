"""What the fake endpoints saw: :class:`EndpointCounters` snapshots and the live counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TypeVar

import attrs

__all__ = ["EndpointCounters", "FleetGauge", "LiveCounters", "sum_counters"]

_K = TypeVar("_K")


@attrs.frozen(hash=False)
class EndpointCounters:
    """A snapshot of what one endpoint (or the whole fleet) has seen.

    The counts start at zero when the fleet starts and after
    :meth:`FakeFleet.reset_counters <aurora_swarm.testing.FakeFleet.reset_counters>`; later
    changes do not alter a snapshot. Inference requests are those to ``/v1/completions``,
    ``/v1/chat/completions`` and ``/v1/chat/completions/batch``.

    Attributes
    ----------
    requests : dict
        Requests by route (``"/v1/completions"``, ``"/health"``, ...; ``"other"`` for unknown
        routes), every request counted, faulty or not.
    completion_requests : int
        Requests to ``/v1/completions``.
    chat_requests : int
        Requests to ``/v1/chat/completions``.
    chat_batch_requests : int
        Requests to ``/v1/chat/completions/batch`` (only while the route is on).
    prompts_received : int
        Prompts (or conversations) in the inference requests whose body could be read, including
        those answered with an injected fault or an error.
    choices_returned : int
        Choices in the answers sent.
    faults : dict
        Injected actions other than ``"ok"``, by action (``"503"``, ``"shuffle"``, ...).
    abandoned : int
        Inference requests whose client closed the connection before the answer was ready (the
        endpoint stops working on them, as vLLM aborts them).
    rejected : int
        Inference requests answered with a 4xx because the request was wrong (unknown model,
        prompt too long, malformed body), not because of a fault.
    in_flight : int
        Inference requests being served now (a ``"hang"`` request stops counting once it is
        left hanging).
    max_in_flight : int
        The most inference requests in flight at one time; for fleet totals, on the whole fleet.
    add_special_tokens : dict
        How often each ``add_special_tokens`` value was sent (``True``, ``False``, or ``None``
        when the field was absent), over inference and ``/tokenize`` requests.
    aborted_prompts : int
        Prompts of abandoned (or killed) requests that were still running or waiting for a slot
        when the request ended; their slots went at once to the requests queued behind.

        .. versionadded:: 0.1.0
    """

    requests: dict[str, int]
    completion_requests: int
    chat_requests: int
    chat_batch_requests: int
    prompts_received: int
    choices_returned: int
    faults: dict[str, int]
    abandoned: int
    rejected: int
    in_flight: int
    max_in_flight: int
    add_special_tokens: dict[bool | None, int]
    aborted_prompts: int = 0

    @property
    def inference_requests(self) -> int:
        """Requests to the completion and chat routes."""
        return self.completion_requests + self.chat_requests + self.chat_batch_requests

    @property
    def total_faults(self) -> int:
        """All injected actions other than ``"ok"``."""
        return sum(self.faults.values())


class FleetGauge:
    """Inference requests in flight on a whole fleet, and the most seen at once."""

    __slots__ = ("in_flight", "max_in_flight")

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0


class LiveCounters:
    """The mutable counts of one endpoint; :meth:`snapshot` freezes them."""

    __slots__ = (
        "abandoned",
        "aborted_prompts",
        "add_special_tokens",
        "chat_batch_requests",
        "chat_requests",
        "choices_returned",
        "completion_requests",
        "faults",
        "gauge",
        "in_flight",
        "max_in_flight",
        "prompts_received",
        "rejected",
        "routes",
    )

    def __init__(self, gauge: FleetGauge) -> None:
        self.gauge = gauge
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Set every count to zero (requests in flight stay counted as in flight)."""
        self.routes: Counter[str] = Counter()
        self.completion_requests = 0
        self.chat_requests = 0
        self.chat_batch_requests = 0
        self.prompts_received = 0
        self.choices_returned = 0
        self.faults: Counter[str] = Counter()
        self.abandoned = 0
        self.aborted_prompts = 0
        self.rejected = 0
        self.max_in_flight = self.in_flight
        self.add_special_tokens: Counter[bool | None] = Counter()

    def enter(self) -> None:
        """Count an inference request starting."""
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        gauge = self.gauge
        gauge.in_flight += 1
        if gauge.in_flight > gauge.max_in_flight:
            gauge.max_in_flight = gauge.in_flight

    def leave(self) -> None:
        """Count an inference request ending (answered, failed or cancelled)."""
        self.in_flight -= 1
        self.gauge.in_flight -= 1

    def snapshot(self) -> EndpointCounters:
        """Return the counts as they are now."""
        return EndpointCounters(
            requests=dict(self.routes),
            completion_requests=self.completion_requests,
            chat_requests=self.chat_requests,
            chat_batch_requests=self.chat_batch_requests,
            prompts_received=self.prompts_received,
            choices_returned=self.choices_returned,
            faults=dict(self.faults),
            abandoned=self.abandoned,
            rejected=self.rejected,
            in_flight=self.in_flight,
            max_in_flight=self.max_in_flight,
            add_special_tokens=dict(self.add_special_tokens),
            aborted_prompts=self.aborted_prompts,
        )


def sum_counters(parts: Iterable[EndpointCounters], max_in_flight: int) -> EndpointCounters:
    """Add up snapshots; ``max_in_flight`` is the fleet's own peak, not a sum of peaks."""
    items = list(parts)
    return EndpointCounters(
        requests=_merge(c.requests for c in items),
        completion_requests=sum(c.completion_requests for c in items),
        chat_requests=sum(c.chat_requests for c in items),
        chat_batch_requests=sum(c.chat_batch_requests for c in items),
        prompts_received=sum(c.prompts_received for c in items),
        choices_returned=sum(c.choices_returned for c in items),
        faults=_merge(c.faults for c in items),
        abandoned=sum(c.abandoned for c in items),
        rejected=sum(c.rejected for c in items),
        in_flight=sum(c.in_flight for c in items),
        max_in_flight=max_in_flight,
        add_special_tokens=_merge(c.add_special_tokens for c in items),
        aborted_prompts=sum(c.aborted_prompts for c in items),
    )


def _merge(maps: Iterable[Mapping[_K, int]]) -> dict[_K, int]:
    total: Counter[_K] = Counter()
    for mapping in maps:
        total.update(mapping)
    return dict(total)
