"""The one retry layer: what to retry, how long to wait, when to stop.

:class:`RetryPolicy` is a small frozen value. It builds tenacity strategies, and the same
strategies drive both retry paths:

* :meth:`VLLMPool.post <aurora_swarm.VLLMPool.post>` retries one request on its agent with
  :class:`tenacity.AsyncRetrying`;
* batched dispatch moves a failed chunk to another endpoint at once and rests the failing
  endpoint for :meth:`RetryPolicy.backoff` seconds, counting attempts per prompt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import tenacity

from ._exceptions import ConfigurationError, HTTPStatusError, RequestError

__all__ = ["RetryPolicy"]

T = TypeVar("T")


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ConfigurationError(f"RetryPolicy.{attr.name} must be >= 0, got {value}")


def _at_least_one(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ConfigurationError(f"RetryPolicy.{attr.name} must be >= 1, got {value}")


@attrs.frozen
class RetryPolicy:
    """How failed requests are retried.

    Only failures that can succeed on retry are retried: timeouts, connection errors, bad
    answers, and HTTP 408, 409, 429 and 5xx. Waits grow exponentially with full jitter, never
    below the server's ``Retry-After``, and are capped.

    Attributes
    ----------
    max_attempts:
        Requests that may carry one prompt, first try included.
    initial_backoff:
        Scale of the first wait, in seconds.
    max_backoff:
        Cap on one wait, in seconds (a longer ``Retry-After`` is still honoured, up to
        ``max_retry_after``).
    max_retry_after:
        The longest ``Retry-After`` honoured, in seconds.
    """

    max_attempts: int = attrs.field(default=5, validator=_at_least_one)
    initial_backoff: float = attrs.field(default=0.1, validator=_positive)
    max_backoff: float = attrs.field(default=10.0, validator=_positive)
    max_retry_after: float = attrs.field(default=60.0, validator=_positive)

    @staticmethod
    def is_retryable(exc: BaseException) -> bool:
        """Whether a request that failed with ``exc`` may succeed if sent again."""
        return isinstance(exc, RequestError) and exc.retryable

    def _jitter(self) -> tenacity.wait.wait_base:
        return tenacity.wait_random_exponential(multiplier=self.initial_backoff,
                                                max=self.max_backoff)

    def backoff(self, failures: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        state = tenacity.RetryCallState(self.retrying(), None, (), {})
        state.attempt_number = max(1, failures)
        wait = float(self._jitter()(state))
        if isinstance(exc, HTTPStatusError) and exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, self.max_retry_after))
        return wait

    def _wait(self, state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        return self.backoff(state.attempt_number, exc)

    def retrying(self) -> tenacity.AsyncRetrying:
        """A tenacity retrier for one request that keeps its endpoint."""
        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(self.is_retryable),
            wait=self._wait,
            stop=tenacity.stop_after_attempt(self.max_attempts),
            reraise=True,
        )

    async def call(self, fn: Callable[[int], Awaitable[T]]) -> T:
        """Run ``fn(attempt_number)`` under this policy; the last error is re-raised."""
        async for attempt in self.retrying():
            with attempt:
                return await fn(attempt.retry_state.attempt_number)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
