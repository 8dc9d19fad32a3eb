"""What a pool keeps about one endpoint, shared by every call and sub-pool of the pool."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import attrs

from ._config import HealthPolicy, RetryPolicy
from ._endpoint import Endpoint
from ._exceptions import RequestError
from ._health import Health
from ._response import Usage
from ._server_model import ServerModel
from ._stats import Counters

__all__ = ["EndpointRecord"]

T = TypeVar("T")


@attrs.define(eq=False)
class EndpointRecord:
    """Everything the pool tracks about one endpoint, shared by every call and sub-pool."""

    endpoint: Endpoint
    health: Health = attrs.field(factory=Health)
    server: ServerModel = attrs.field(factory=ServerModel)
    counters: Counters = attrs.field(factory=Counters)
    probing: bool = False
    scraping: bool = False  # a gauge reading of the server's load is under way
    history: anyio.Event | None = None  # set once /metrics was read for the server's past wave

    async def one_prompt_request(
        self,
        send: Callable[[], Awaitable[tuple[T, Usage | None, float]]],
        attempt: int,
        health: HealthPolicy,
        retry: RetryPolicy,
    ) -> tuple[T, Usage | None, float]:
        """One request of one prompt (attempt ``attempt``), counted in the endpoint's stats and
        health; what ``send`` returns: the answer, its usage and its latency."""
        counters = self.counters
        counters.sent(1, retry=attempt > 1)
        try:
            answered = await send()
        except RequestError as exc:
            counters.failed(exc.cause)
            self.health.record_failure(exc, health, retry)
            raise
        self.health.record_success()
        counters.answered_request(1, answered[2], answered[1])
        return answered
