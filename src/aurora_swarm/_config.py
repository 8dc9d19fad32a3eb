"""The public policy objects of a pool, and the marker of a per-call option left out.

:class:`RetryPolicy`, :class:`HealthPolicy`, :class:`Timeouts` and :class:`Chunking` are small
frozen values: made with keyword arguments only, checked when made (a bad value raises
:class:`~aurora_swarm.ConfigurationError` naming the field), changed with
``attrs.evolve(policy, field=value)``. :data:`POOL_DEFAULT` stands for a per-call option left
out, where ``None`` has a meaning of its own.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, final

import attrs
import tenacity

from ._exceptions import ConfigurationError, HTTPStatusError, RequestError

__all__ = [
    "POOL_DEFAULT",
    "PROBES",
    "Chunking",
    "HealthPolicy",
    "PoolDefault",
    "RetryPolicy",
    "Timeouts",
]

T = TypeVar("T")

PROBES = ("auto", "models", "completion")
"""The ways :class:`HealthPolicy` can probe a benched endpoint."""


@final
class PoolDefault:
    """The type of :data:`POOL_DEFAULT`; it has that one instance.

    Examples
    --------
    A wrapper passes an option on without knowing the pool's setting:

    >>> from aurora_swarm import POOL_DEFAULT
    >>> async def ask(pool, prompts, system_prompt=POOL_DEFAULT):
    ...     return await pool.send_all_batched(prompts, system_prompt=system_prompt)
    >>> POOL_DEFAULT
    POOL_DEFAULT
    """

    _instance: PoolDefault | None = None

    def __new__(cls) -> PoolDefault:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "POOL_DEFAULT"

    def __reduce__(self) -> str:
        return "POOL_DEFAULT"


POOL_DEFAULT: Final = PoolDefault()
"""A per-call option left out: the call uses the pool's own setting.

Per-call options whose ``None`` means something (``system_prompt=None`` sends no system
prompt, ``chat_template=None`` sends raw text) default to this marker instead, so a wrapper can
pass an option on without knowing the pool's setting (see :class:`PoolDefault`).
"""


def _owner(inst: object) -> str:
    return type(inst).__name__


def _count(inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{_owner(inst)}.{attr.name} must be an int >= 1, got {value!r}")


def _optional_count(inst: object, attr: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None:
        _count(inst, attr, value)  # type: ignore[arg-type]


def _seconds(inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise ConfigurationError(
            f"{_owner(inst)}.{attr.name} must be a finite number of seconds >= 0, got {value!r}")


def _positive_seconds(inst: object, attr: attrs.Attribute[float], value: float) -> None:
    _seconds(inst, attr, value)
    if value == 0:
        raise ConfigurationError(f"{_owner(inst)}.{attr.name} must be > 0 seconds, got {value!r}")


def _optional_positive_seconds(inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive_seconds(inst, attr, value)


def _flag(inst: object, attr: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{_owner(inst)}.{attr.name} must be True or False, got {value!r}")


@attrs.frozen(kw_only=True)
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

    max_attempts: int = attrs.field(default=5, validator=_count)
    initial_backoff: float = attrs.field(default=0.1, validator=_seconds)
    max_backoff: float = attrs.field(default=10.0, validator=_seconds)
    max_retry_after: float = attrs.field(default=60.0, validator=_seconds)

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


@attrs.frozen(kw_only=True)
class HealthPolicy:
    """When an endpoint is benched and how it comes back.

    Attributes
    ----------
    failure_threshold:
        Consecutive failed requests that bench an endpoint.
    cooldown:
        Seconds a benched endpoint waits before its next probe; doubles each time it is benched
        again without a success in between, up to ``max_cooldown``.
    max_cooldown:
        Cap on the cooldown, in seconds.
    probe_timeout:
        Seconds a ``/health`` probe may take.
    probe:
        How a benched endpoint is probed: ``"auto"`` (default) asks ``GET /health``, or
        ``GET /v1/models`` on a server without ``/health``; ``"models"`` always asks
        ``/v1/models``; ``"completion"`` asks for one generated token (``/v1/completions``,
        ``max_tokens=1``), the only probe that also sees a server whose routes answer while its
        generation is stuck (seen on vLLM), at the price of a little work on the server.

        .. versionadded:: 0.1.0
    """

    failure_threshold: int = attrs.field(default=3, validator=_count)
    cooldown: float = attrs.field(default=2.0, validator=_seconds)
    max_cooldown: float = attrs.field(default=60.0, validator=_seconds)
    probe_timeout: float = attrs.field(default=5.0, validator=_seconds)
    probe: str = attrs.field(default="auto")

    @probe.validator
    def _check_probe(self, _attr: attrs.Attribute[str], value: str) -> None:
        if value not in PROBES:
            raise ConfigurationError(
                f"HealthPolicy.probe must be one of {', '.join(map(repr, PROBES))}, got {value!r}")


@attrs.frozen(kw_only=True)
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

    connect: float = attrs.field(default=10.0, validator=_positive_seconds)
    request: float | None = attrs.field(default=600.0, validator=_optional_positive_seconds)
    per_prompt: float = attrs.field(default=0.5, validator=_seconds)

    def for_chunk(self, prompts: int) -> float | None:
        """The time limit of a request carrying ``prompts`` prompts."""
        return None if self.request is None else self.request + prompts * self.per_prompt


@attrs.frozen(kw_only=True)
class Chunking:
    """How batched work is cut into requests.

    Each endpoint's share of a call (planned in time from its slots and speed) goes out at
    once, as up to ``max_in_flight`` requests that queue back to back on the server: the server
    runs them as it would one request, and the ones still waiting there can be taken back for
    free when the endpoint falls behind (vLLM aborts a request whose client goes away).

    Attributes
    ----------
    chunk_size:
        A fixed number of prompts per request; ``None`` (default) plans shares from the
        endpoints' slots and speed and cuts each into a few requests.
    max_chunk:
        Most prompts in one request.
    max_in_flight:
        Requests one endpoint's share is cut into, at most (with ``chunk_size``: requests of
        the call one endpoint holds at once). More give finer rebalancing, fewer give fewer
        requests; on a uniform fleet a call uses about this many requests per endpoint (fewer
        over more than ``fleet_in_flight / max_in_flight`` endpoints). Requests of other calls
        queued on the endpoint count against it (one request at least).
    fleet_in_flight:
        Requests a call's shares are cut into over the whole fleet, at most, but one an endpoint
        at least: with more endpoints than ``fleet_in_flight / max_in_flight``, each share goes
        as ``fleet_in_flight // endpoints`` requests or one. Every request in flight costs the
        client about a millisecond of CPU and an open connection while it waits; over thousands
        of endpoints that, not the servers, is what a call waits for, and the finer rebalancing
        the pieces allow no longer pays for them (400,000 prompts over 4,000 endpoints: 3
        requests an endpoint used 54 µs of client CPU a prompt, one request 18-24 µs).
    adapt_to_speed:
        Plan from each endpoint's measured speed, take back waiting work from endpoints that
        fall behind, and back up stragglers. ``False``: an equal split, nothing moved.
    min_chunk:
        Smallest request when a share is cut into several. A request costs the client about
        as much CPU as 50 to 100 prompts do (0.7-1 ms against 12-15 µs a prompt), so smaller
        pieces would cost more than the finer rebalancing they allow.
    whole_share:
        A share of up to this many prompts goes as one request; so does a share that fits in
        one wave of the server's slots (it all starts at once, so nothing would wait in the
        queue to be taken back).
    """

    chunk_size: int | None = attrs.field(default=None, validator=_optional_count)
    max_chunk: int = attrs.field(default=1024, validator=_count)
    max_in_flight: int = attrs.field(default=4, validator=_count)
    fleet_in_flight: int = attrs.field(default=1024, validator=_count)
    adapt_to_speed: bool = attrs.field(default=True, validator=_flag)
    min_chunk: int = attrs.field(default=64, validator=_count)
    whole_share: int = attrs.field(default=32, validator=_count)
